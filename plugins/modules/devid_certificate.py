#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: devid_certificate
short_description: Issue, renew and revoke the DevID certificate of a TPM-resident DevID key (step-ca or a local CA)
version_added: "0.1.0"
description:
  - Gets the CSR written by M(trustroot.spire_tpm.devid_csr) signed and writes the certificate chain (leaf first,
    then the intermediate CA certificates) to O(cert_path), atomically.
  - With O(backend=step_ca) the module talks to step-ca over HTTPS. Trust is pinned by the root fingerprint
    (O(root_fingerprint)) exactly like C(step ca bootstrap); every call verifies TLS against that root. The CA's
    C(/health) is checked first, so an unreachable CA fails the task before anything on the host changes.
  - Issuing uses a JWK provisioner. The module decrypts the provisioner's key from its encrypted JWK with
    O(provisioner_password) (the encrypted key is read from the CA's C(/provisioners) list unless
    O(provisioner_encrypted_key) is given) and mints a one-time token, or it uses a token the operator minted
    (O(token), C(step ca token)).
  - Certificate lifetime is capped by the provisioner's claims (step-ca's default is 24 hours). A 90-day DevID needs
    C(claims.maxTLSCertDuration) and C(defaultTLSCertDuration) of at least C(2160h) on the DevID provisioner; the
    module fails with that explanation rather than accept a shorter certificate.
  - Renewal inside the renewal window uses step-ca's C(/1.0/renew) with a Bearer token signed by the DevID key inside
    the TPM (O(devid_pub_path), O(devid_priv_path)); the key stays the same and no provisioner secret is needed.
    Without those options a due certificate is replaced by a new one signed with the provisioner.
    step-ca renewal keeps the original certificate's lifetime; a changed O(validity) applies to the next issue.
  - A certificate for another key or another common name than the CSR's (with O(backend=local), another subject)
    is replaced by a newly issued one. An expired certificate is issued anew.
  - O(state=absent) revokes the certificate at step-ca (passive revocation, which stops renewal) and removes the
    file. With O(backend=local) the file is only removed.
  - With O(backend=local) the CSR is signed with a CA certificate and key on the managed host (labs, small fleets).
  - The same issuing and renewal code runs on the host without Ansible as the renewal job
    (C(python3 -m ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca.renew --help)).
extends_documentation_fragment:
  - trustroot.spire_tpm.tpm
options:
  backend:
    description: Who signs the certificate.
    type: str
    choices: [step_ca, local]
    default: step_ca
  state:
    description: C(present) issues or renews as needed; C(absent) revokes (step-ca) and removes the certificate.
    type: str
    choices: [present, absent]
    default: present
  csr_path:
    description: Path of the PEM CSR on the managed host (as written by M(trustroot.spire_tpm.devid_csr)).
    type: path
  csr:
    description: The PEM CSR itself, instead of O(csr_path).
    type: str
  cert_path:
    description:
      - Where the certificate chain is written, leaf first (SPIRE agent's C(devid_cert_path)); the certificate in
        place is read from it.
      - One of O(cert_path) and O(current_cert) is required; O(state=absent) needs O(cert_path).
    type: path
  current_cert:
    description:
      - The content of the current certificate chain file (PEM, leaf first), given instead of O(cert_path) when that
        file is on another host, for example on the managed host while the module runs on the controller with
        O(backend=local) (the role devid_provision reads it with one M(ansible.builtin.slurp)). An empty string
        means there is no certificate yet.
      - The module decides from it as from O(cert_path) (keep, renew or issue) and writes nothing. The chain to put
        in place is returned as RV(cert_pem), the current content unchanged when the certificate is kept.
      - Only with O(state=present); not with O(owner), O(group) or O(mode) (nothing is written).
    type: str
  validity:
    description:
      - Requested certificate lifetime as a duration, for example C(2160h) or C(90d).
    type: str
    default: 2160h
  renew_before:
    description:
      - Renew when the certificate expires within this duration (for example C(720h) or C(30d)).
      - Default one third of the certificate's lifetime (30 days for a 90-day certificate).
    type: str
  ca_url:
    description: Base URL of step-ca, for example C(https://ca.example.net:9000). Required with O(backend=step_ca).
    type: str
  root_fingerprint:
    description:
      - SHA-256 fingerprint (hex) of the step-ca root certificate, as printed by
        C(step certificate fingerprint root_ca.crt). Required with O(backend=step_ca).
    type: str
  provisioner_name:
    description: Name of the JWK provisioner used to issue and revoke (for example C(devid@example.net)).
    type: str
  provisioner_password:
    description: Password of the JWK provisioner; decrypts its encrypted key.
    type: str
  provisioner_encrypted_key:
    description:
      - The provisioner's C(encryptedKey) (compact JWE). When unset it is read from the CA's C(/provisioners) list.
    type: str
  token:
    description:
      - A one-time token minted by the operator (C(step ca token <cn>) for issuing, C(step ca token --revoke
        <serial>) for O(state=absent)), used instead of the provisioner password. Single use, valid minutes.
    type: str
  devid_pub_path:
    description: Public blob of the DevID key (SPIRE format); with O(devid_priv_path) enables TPM-signed renewal.
    type: path
  devid_priv_path:
    description: Private blob of the DevID key (SPIRE format).
    type: path
  devid_password:
    description: Authorization value of the DevID key, used to sign the renewal token.
    type: str
  owner_hierarchy_password:
    description: Owner hierarchy authorization, needed to re-create SPIRE's parent key when the hierarchy has one.
    type: str
  ca_cert_path:
    description:
      - With O(backend=local), the issuing CA certificate (PEM), optionally followed by its intermediates; self-signed
        certificates in the file are not copied into the chain.
    type: path
  ca_key_path:
    description: With O(backend=local), the issuing CA's private key (PEM).
    type: path
  ca_key_password:
    description: Password of O(ca_key_path) when it is encrypted.
    type: str
  owner:
    description: Owner of the certificate file (name or uid).
    type: str
  group:
    description: Group of the certificate file (name or gid).
    type: str
  mode:
    description: Mode of the certificate file, for example C('0644'). Default C(0644).
    type: raw
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Nothing is signed, renewed or revoked; the CA's health is still checked.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
notes:
  - The module does not renew through TLS client authentication; the Bearer token flow lets the TPM sign without a
    TPM TLS engine.
requirements:
  - cryptography on the managed host
  - PyJWT on the managed host (optional; the token is built with cryptography alone when it is missing)
author:
  - trustroot.spire_tpm contributors (@trustroot)
"""

EXAMPLES = r"""
- name: 90-day DevID certificate from step-ca, renewed with the TPM key
  trustroot.spire_tpm.devid_certificate:
    csr_path: /opt/spire/conf/agent/devid.csr
    cert_path: /opt/spire/conf/agent/devid.crt
    ca_url: https://ca.example.net:9000
    root_fingerprint: "{{ step_ca_root_fingerprint }}"
    provisioner_name: devid@example.net
    provisioner_password: "{{ vault_devid_provisioner_password }}"
    devid_pub_path: /opt/spire/conf/agent/devid.pub
    devid_priv_path: /opt/spire/conf/agent/devid.priv
    validity: 2160h
  register: devid_cert

- name: With a token minted offline by the operator
  trustroot.spire_tpm.devid_certificate:
    csr_path: /opt/spire/conf/agent/devid.csr
    cert_path: /opt/spire/conf/agent/devid.crt
    ca_url: https://ca.example.net:9000
    root_fingerprint: "{{ step_ca_root_fingerprint }}"
    token: "{{ lookup('file', 'tokens/' ~ inventory_hostname) }}"

- name: Lab CA on the host
  trustroot.spire_tpm.devid_certificate:
    backend: local
    csr_path: /var/lib/devid/devid.csr
    cert_path: /var/lib/devid/devid.crt
    ca_cert_path: /etc/lab-ca/ca.crt
    ca_key_path: /etc/lab-ca/ca.key
    validity: 720h

- name: Local CA on the controller for a certificate on the host (nothing written; the play installs cert_pem)
  trustroot.spire_tpm.devid_certificate:
    backend: local
    csr: "{{ devid_csr_result.csr }}"
    current_cert: "{{ current.content | default('') | b64decode }}"
    ca_cert_path: /etc/lab-ca/ca.crt
    ca_key_path: /etc/lab-ca/ca.key
  delegate_to: localhost
  register: devid_cert

- name: Decommission - revoke and remove
  trustroot.spire_tpm.devid_certificate:
    state: absent
    cert_path: /opt/spire/conf/agent/devid.crt
    ca_url: https://ca.example.net:9000
    root_fingerprint: "{{ step_ca_root_fingerprint }}"
    provisioner_name: devid@example.net
    provisioner_password: "{{ vault_devid_provisioner_password }}"
"""

RETURN = r"""
cert_action:
  description:
    - What was (or in check mode would be) done. (Not called C(action), which Ansible reserves in task results.)
  returned: success
  type: str
  choices: [issued, renewed, revoked, removed, none]
serial:
  description: Decimal serial number of the certificate now in place (the removed one for O(state=absent)).
  returned: success
  type: str
not_after:
  description: End of validity (ISO 8601, UTC) of that certificate.
  returned: success
  type: str
not_before:
  description: Start of validity (ISO 8601, UTC) of that certificate.
  returned: success
  type: str
chain:
  description: The PEM certificates written, leaf first.
  returned: success
  type: list
  elements: str
previous_serial:
  description: Serial of the certificate that was replaced.
  returned: when a certificate was replaced
  type: str
cert_path:
  description: Path of the certificate file (null with O(current_cert)).
  returned: success
  type: str
cert_pem:
  description:
    - The content of the certificate chain file now in place (with O(current_cert), to put in place), leaf first
      (public data).
    - The issued or renewed chain; when the certificate is kept, the current content byte for byte.
    - Null in check mode when a certificate would be issued or renewed.
  returned: with O(state=present)
  type: str
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError, fail_module

try:
    from ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca import certificate
    from ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca.jwe import (
        CRYPTOGRAPHY_IMPORT_ERROR, HAS_CRYPTOGRAPHY)
    IMPORT_ERROR = None
except ImportError:  # pragma: no cover
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = None
    IMPORT_ERROR = traceback.format_exc()


def main():
    module = AnsibleModule(
        argument_spec=dict(
            backend=dict(type="str", default="step_ca", choices=["step_ca", "local"]),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            csr_path=dict(type="path"),
            csr=dict(type="str"),
            cert_path=dict(type="path"),
            current_cert=dict(type="str"),
            validity=dict(type="str", default="2160h"),
            renew_before=dict(type="str"),
            ca_url=dict(type="str"),
            root_fingerprint=dict(type="str"),
            provisioner_name=dict(type="str"),
            provisioner_password=dict(type="str", no_log=True),
            provisioner_encrypted_key=dict(type="str", no_log=True),
            token=dict(type="str", no_log=True),
            tcti=dict(type="str"),
            devid_pub_path=dict(type="path"),
            devid_priv_path=dict(type="path"),
            devid_password=dict(type="str", no_log=True),
            owner_hierarchy_password=dict(type="str", no_log=True),
            ca_cert_path=dict(type="path"),
            ca_key_path=dict(type="path"),
            ca_key_password=dict(type="str", no_log=True),
            owner=dict(type="str"),
            group=dict(type="str"),
            mode=dict(type="raw"),
        ),
        mutually_exclusive=[("csr", "csr_path"), ("current_cert", "cert_path"), ("current_cert", "owner"),
                            ("current_cert", "group"), ("current_cert", "mode")],
        required_one_of=[("cert_path", "current_cert")],
        required_together=[("devid_pub_path", "devid_priv_path")],
        required_if=[("backend", "step_ca", ("ca_url", "root_fingerprint")),
                     ("backend", "local", ("ca_cert_path", "ca_key_path")),
                     ("state", "absent", ("cert_path",))],
        supports_check_mode=True,
    )
    if IMPORT_ERROR is not None or not HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"),
                         exception=IMPORT_ERROR or str(CRYPTOGRAPHY_IMPORT_ERROR))
    try:
        result = certificate.ensure_certificate(module.params, check_mode=module.check_mode)
    except SpireTpmError as err:
        fail_module(module, err, changed=False)
    diff = result.pop("diff", None)
    if module._diff and diff:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
