#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: devid_csr
short_description: Create a TPM-resident DevID key SPIRE's tpm_devid attestor can load, and a CSR for it
version_added: "0.1.0"
description:
  - Creates (or reuses) a DevID signing key inside the TPM under exactly the parent SPIRE's C(tpm_devid) agent
    re-creates on every attestation (a primary in the owner hierarchy from the SRK template, empty unique;
    RSA DevIDs under the RSA-2048 SRK, ECC DevIDs under the ECC P-256 SRK).
  - Writes the key blobs in SPIRE's format (public = bare C(TPMT_PUBLIC), private = C(TPM2B_PRIVATE) buffer, both
    without the 2-byte size prefix tpm2-tools writes), atomically.
  - Writes a PEM CSR signed inside the TPM with the DevID key (RSASSA-SHA256 or ECDSA-SHA256).
  - Idempotent. Existing blobs that load under SPIRE's parent and an existing CSR for the same key, subject and
    subject alternative names leave everything unchanged. A changed subject gives a new CSR for the same key.
    O(force=true) or a different O(key_type) creates a new key.
  - O(devid_password) is checked by the TPM whenever a CSR is signed; when nothing needs signing it is not used.
extends_documentation_fragment:
  - trustroot.spire_tpm.tpm
options:
  key_type:
    description:
      - C(rsa) for an RSA-2048 RSASSA-SHA256 key, C(ecc) for an ECC NIST P-256 ECDSA-SHA256 key.
      - Changing it on an existing key creates a new key.
    type: str
    choices: [rsa, ecc]
    default: rsa
  pub_path:
    description: Public blob of the DevID key (SPIRE's C(devid_pub_path)).
    type: path
    required: true
  priv_path:
    description: Private blob of the DevID key (SPIRE's C(devid_priv_path)).
    type: path
    required: true
  csr_path:
    description: Where the PEM certificate signing request is written.
    type: path
    required: true
  common_name:
    description: Subject common name of the CSR. Defaults to the managed host's fully qualified domain name.
    type: str
  subject:
    description:
      - Further subject attributes, as in IEEE 802.1AR DevID certificates.
      - Keys C(C), C(ST), C(L), C(O), C(OU) (a string or a list) and C(serialNumber); the common name comes from
        O(common_name).
    type: dict
    default: {}
  subject_alt_names:
    description:
      - Subject alternative names, each with a type prefix C(DNS:), C(IP:), C(URI:) or C(email:).
    type: list
    elements: str
    default: []
  devid_password:
    description:
      - Authorization value of the DevID key (SPIRE agent's C(devid_password)). Empty means none.
      - Set when the key is created; a wrong value makes signing fail (and counts toward the TPM's
        dictionary-attack lockout).
    type: str
  owner_hierarchy_password:
    description: Owner hierarchy authorization, needed to create SPIRE's parent key when the owner hierarchy has one.
    type: str
  force:
    description: Create a new key (and CSR) even when a usable key exists.
    type: bool
    default: false
  owner:
    description: Owner of the three files written (name or uid). Unset keeps the current or default owner.
    type: str
  group:
    description: Group of the three files written (name or gid).
    type: str
  mode:
    description:
      - File mode for all three files, e.g. C('0640').
      - When unset the private blob gets C(0600) and the public blob and CSR C(0644).
    type: raw
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: In check mode no key is created; an existing key may still sign a CSR to report its exact content.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: The private blob is never shown.
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
requirements:
  - tpm2-pytss >= 2.3 (its C(tpm2_pytss.cryptography) module signs the CSR in the TPM)
  - cryptography on the managed host
author:
  - trustroot.spire_tpm contributors (@trustroot)
"""

EXAMPLES = r"""
- name: DevID key and CSR for SPIRE's tpm_devid attestor
  trustroot.spire_tpm.devid_csr:
    pub_path: /opt/spire/conf/agent/devid.pub
    priv_path: /opt/spire/conf/agent/devid.priv
    csr_path: /opt/spire/conf/agent/devid.csr
    subject:
      O: Example Corp
      OU: Platform
      serialNumber: "{{ ansible_product_serial }}"
    subject_alt_names:
      - "DNS:{{ ansible_fqdn }}"
    owner: spire
    group: spire
  register: devid

- name: ECC DevID on a software TPM (swtpm serving a unix socket)
  trustroot.spire_tpm.devid_csr:
    tcti: "cmd:socat - UNIX-CONNECT:/run/swtpm/tpm.sock"
    key_type: ecc
    pub_path: /var/lib/devid/devid.pub
    priv_path: /var/lib/devid/devid.priv
    csr_path: /var/lib/devid/devid.csr
    common_name: node1.example.org
    devid_password: "{{ vault_devid_password }}"
"""

RETURN = r"""
csr:
  description:
    - The PEM CSR, byte for byte what O(csr_path) holds. It is public data; a play can hand it to
      O(trustroot.spire_tpm.devid_certificate#module:csr) without reading the file back.
    - In check mode the CSR that would be written; null when the key does not exist yet.
  returned: success
  type: str
public_key:
  description: PEM SubjectPublicKeyInfo of the DevID key (null in check mode when the key does not exist yet).
  returned: success
  type: str
public_key_sha256:
  description: Lowercase hex SHA-256 of the DER SubjectPublicKeyInfo of the DevID key.
  returned: success
  type: str
  sample: 3bee08c44c5f0bf0923c75f40216ae15d2655e869a2b50e4e4749398758ec898
key_created:
  description: Whether a new key was (or, in check mode, would be) created.
  returned: success
  type: bool
key_type:
  description: C(rsa) or C(ecc).
  returned: success
  type: str
subject:
  description: The CSR subject in RFC 4514 form.
  returned: success
  type: str
  sample: CN=node1.example.org,O=Example Corp
pub_path:
  description: Path of the public blob.
  returned: success
  type: str
priv_path:
  description: Path of the private blob.
  returned: success
  type: str
csr_path:
  description: Path of the CSR.
  returned: success
  type: str
written:
  description: Paths that were (or, in check mode, would be) written or had their attributes changed.
  returned: success
  type: list
  elements: str
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError, fail_module

try:
    from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import devid, devid_csr
    from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm.context import HAS_PYTSS
    IMPORT_ERROR = None
except ImportError:  # pragma: no cover
    HAS_PYTSS = False
    IMPORT_ERROR = traceback.format_exc()


def main():
    module = AnsibleModule(
        argument_spec=dict(
            tcti=dict(type="str"),
            key_type=dict(type="str", default="rsa", choices=["rsa", "ecc"]),
            pub_path=dict(type="path", required=True),
            priv_path=dict(type="path", required=True),
            csr_path=dict(type="path", required=True),
            common_name=dict(type="str"),
            subject=dict(type="dict", default={}),
            subject_alt_names=dict(type="list", elements="str", default=[]),
            devid_password=dict(type="str", no_log=True),
            owner_hierarchy_password=dict(type="str", no_log=True),
            force=dict(type="bool", default=False),
            owner=dict(type="str"),
            group=dict(type="str"),
            mode=dict(type="raw"),
        ),
        supports_check_mode=True,
    )
    if IMPORT_ERROR is not None or not HAS_PYTSS:
        module.fail_json(msg=missing_required_lib("tpm2-pytss"), exception=IMPORT_ERROR)
    if not devid.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=str(devid.CRYPTOGRAPHY_IMPORT_ERROR))
    p = module.params
    try:
        result = devid_csr.ensure_devid_csr(
            tcti=p["tcti"], key_type=p["key_type"], pub_path=p["pub_path"], priv_path=p["priv_path"],
            csr_path=p["csr_path"], common_name=p["common_name"], subject=p["subject"],
            subject_alt_names=p["subject_alt_names"], devid_password=p["devid_password"],
            owner_hierarchy_password=p["owner_hierarchy_password"], force=p["force"], owner=p["owner"],
            group=p["group"], mode=p["mode"], check_mode=module.check_mode)
    except SpireTpmError as err:
        fail_module(module, err)
    diff = result.pop("diff")
    result.pop("key_reason", None)
    if module._diff and diff:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
