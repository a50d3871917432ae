#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: tpm_devid_verify
short_description: Replay SPIRE's tpm_devid node attestation locally against the host's TPM
version_added: "0.1.0"
description:
  - Performs, against this host's TPM, what SPIRE's C(tpm_devid) agent does (load the DevID under SPIRE's parent,
    create an AK, regenerate the RSA EK, read the EK certificate from NV index C(0x01c00002)) and every check
    SPIRE's C(tpm_devid) server performs, in the server's order.
  - C(devid_chain) - the DevID certificate verifies against O(devid_ca_path), with the other certificates of
    O(devid_cert_path) as intermediates.
  - C(ek_matches_certificate) - the EK certificate holds an RSA key equal to the EK regenerated from the default
    RSA template.
  - C(ek_chain) - the EK certificate verifies against O(endorsement_ca_path) B(without) an intermediates pool
    (every intermediate CA must be in that bundle).
  - C(ak_certifies_devid) - TPM2_Certify of the DevID by the AK; PKCS#1 v1.5 signature under the AK and certified
    Name equal to the Name of the DevID public blob.
  - C(credential_activation) - MakeCredential against the EK public key and the AK's Name, then
    TPM2_ActivateCredential in the TPM (policy session with PolicySecret on the endorsement hierarchy).
  - C(devid_signature) - the DevID key signs a 32-byte nonce in the TPM; the signature is verified with the
    B(certificate's) public key.
  - Fails with the first broken check, explained; returns the SPIFFE ID and the selectors SPIRE would give the agent.
  - Read-only. Every transient object and session it creates is flushed before it returns.
extends_documentation_fragment:
  - trustroot.spire_tpm.tpm
options:
  devid_cert_path:
    description:
      - The DevID certificate (PEM), followed by its intermediate CA certificates (SPIRE agent's C(devid_cert_path)).
    type: path
    required: true
  devid_pub_path:
    description: The DevID public blob in SPIRE's format (bare C(TPMT_PUBLIC)).
    type: path
    required: true
  devid_priv_path:
    description: The DevID private blob in SPIRE's format (C(TPM2B_PRIVATE) buffer without size).
    type: path
    required: true
  devid_password:
    description: Authorization value of the DevID key (SPIRE agent's C(devid_password)).
    type: str
  devid_ca_path:
    description: PEM bundle of DevID root CAs (SPIRE server's C(devid_ca_path)).
    type: path
    required: true
  endorsement_ca_path:
    description: PEM bundle of TPM manufacturer CAs, roots B(and) intermediates (SPIRE server's C(endorsement_ca_path)).
    type: path
    required: true
  trust_domain:
    description: SPIFFE trust domain of the SPIRE server, used for the returned agent ID.
    type: str
    required: true
  owner_hierarchy_password:
    description: Owner hierarchy authorization (SPIRE agent's C(owner_hierarchy_password)).
    type: str
  endorsement_hierarchy_password:
    description: Endorsement hierarchy authorization (SPIRE agent's C(endorsement_hierarchy_password)).
    type: str
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: The module never changes anything; it runs fully in check mode.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
notes:
  - The DevID key has no C(noDA) attribute, so a wrong O(devid_password) counts toward the TPM's dictionary-attack
    lockout; the module tries it once.
requirements:
  - tpm2-pytss >= 2.3 (its C(tpm2_pytss.cryptography) module signs the nonce in the TPM)
  - cryptography on the managed host
author:
  - trustroot.spire_tpm contributors (@trustroot)
"""

EXAMPLES = r"""
- name: Would SPIRE's tpm_devid attestor accept this host?
  trustroot.spire_tpm.tpm_devid_verify:
    devid_cert_path: /opt/spire/conf/agent/devid.crt
    devid_pub_path: /opt/spire/conf/agent/devid.pub
    devid_priv_path: /opt/spire/conf/agent/devid.priv
    devid_ca_path: /opt/spire/conf/server/devid-ca.pem
    endorsement_ca_path: /opt/spire/conf/server/endorsement-ca.pem
    trust_domain: example.org
  register: attestation

- name: Show the agent ID SPIRE will assign
  ansible.builtin.debug:
    msg: "{{ attestation.agent_id }} {{ attestation.selectors }}"
"""

RETURN = r"""
checks:
  description: Every check run, in SPIRE's order.
  returned: success, and on failure when the checks could run
  type: list
  elements: dict
  contains:
    name:
      description: >-
        C(devid_chain), C(ek_matches_certificate), C(ek_chain), C(ak_certifies_devid), C(credential_activation)
        or C(devid_signature).
      type: str
    ok:
      description: Whether the check passed.
      type: bool
    detail:
      description: What was checked and found.
      type: str
agent_id:
  description: The SPIFFE ID SPIRE gives the agent, C(spiffe://<td>/spire/agent/tpm_devid/<sha1 of the leaf DER>).
  returned: success
  type: str
  sample: spiffe://example.org/spire/agent/tpm_devid/b006eea07c04deb86aa76e19320ec7ee13039fca
selectors:
  description: The selectors SPIRE emits for the agent.
  returned: success
  type: list
  elements: str
  sample:
    - tpm_devid:subject:cn:node1.example.org
    - tpm_devid:issuer:cn:Example DevID Intermediate
    - tpm_devid:ca:fingerprint:d77dfe816a93813c1e13f197d636af04e68d91eb
devid_certificate:
  description: Subject, issuer, serial, validity and SHA-256 fingerprint of the DevID certificate.
  returned: success
  type: dict
ek_certificate:
  description: Subject, issuer, serial, validity and SHA-256 fingerprint of the EK certificate at 0x01c00002.
  returned: success
  type: dict
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError, fail_module
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm.attest import VERIFY_OPTIONS

try:
    from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import attest
    from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import devid
    from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm.context import HAS_PYTSS
    IMPORT_ERROR = None
except ImportError:  # pragma: no cover
    HAS_PYTSS = False
    IMPORT_ERROR = traceback.format_exc()


def main():
    module = AnsibleModule(
        argument_spec=dict(tcti=dict(type="str"), **VERIFY_OPTIONS),
        supports_check_mode=True,
    )
    if IMPORT_ERROR is not None or not HAS_PYTSS:
        module.fail_json(msg=missing_required_lib("tpm2-pytss"), exception=IMPORT_ERROR)
    if not devid.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=str(devid.CRYPTOGRAPHY_IMPORT_ERROR))
    p = module.params
    try:
        result = attest.verify_devid(tcti=p["tcti"], **dict((k, p[k]) for k in VERIFY_OPTIONS))
    except SpireTpmError as err:
        fail_module(module, err)
    failed = result.pop("failed")
    if failed is not None:
        fail_module(module, attest.failure_error(failed), **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
