#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: tpm_ek_info
short_description: Report the TPM's endorsement keys, EK certificates and SPIRE readiness
version_added: "0.1.0"
description:
  - Reads the EK certificates from the NV indices of the TCG EK Credential Profile (low range C(0x01c00002) RSA-2048
    and C(0x01c0000a) ECC P-256, high range C(0x01c00012) to C(0x01c0001e)), the persistent EKs in
    C(0x81010000)-C(0x810100ff), and regenerates the RSA EK from the default TCG template as SPIRE does
    (reusing the persistent EK at C(0x81010001) when it was made from that template, as go-tpm-tools does).
  - Reports for each EK its key, SHA-256 public key hash (C(pubhash)), certificate fields and, with O(ca_path),
    whether the certificate chains to the manufacturer CAs.
  - Computes C(ek_pubhash), the hash spire-tpm-plugin names agents and C(hash_path) files by, and whether the TPM
    can use SPIRE's C(tpm_devid) node attestor (C(spire_tpm_devid_ready)).
  - Read-only; the transient EK it creates is flushed before the module returns.
author:
  - trustroot.spire_tpm contributors (@trustroot)
extends_documentation_fragment:
  - trustroot.spire_tpm.tpm
options:
  ca_path:
    description:
      - Manufacturer CA certificates to verify the EK certificates against, as SPIRE's C(endorsement_ca_path) and
        spire-tpm-plugin's C(ca_path) use them, on the managed host.
      - A directory (every file in it, PEM or DER, hidden files skipped) or one PEM bundle / DER file.
      - Every certificate found is a trust anchor, as in SPIRE (which uses no intermediates pool), so put the
        intermediate CAs that issue EK certificates here too.
      - When not set, no chain check is made and C(chain_verified) is null.
    type: path
  endorsement_hierarchy_password:
    description:
      - Authorization of the endorsement hierarchy, needed to regenerate the EK when it was set
        (C(tpm2_changeauth -c e)). Empty by default on nearly every TPM.
    type: str
attributes:
  check_mode:
    support: full
    description: The module never changes anything; it runs the same in check mode.
notes:
  - SPIRE's C(tpm_devid) attestor reads the EK certificate only from C(0x01c00002) (RSA) and compares its key with
    the EK it regenerates from the default RSA template; C(spire_tpm_devid_ready) applies the same rules and, with
    O(ca_path), the chain check.
  - Some firmware TPMs (Intel PTT, AMD fTPM) keep no EK certificate in NV; the vendor serves it online
    (C(tpm2_getekcertificate)). Such a TPM reports C(spire_tpm_devid_ready=false) since SPIRE reads only the NV index.
  - An NV index that is defined but never written counts as no certificate.
seealso:
  - module: trustroot.spire_tpm.tpm_pcr_facts
"""

EXAMPLES = r"""
- name: Read the EKs and check them against the manufacturer CAs
  trustroot.spire_tpm.tpm_ek_info:
    ca_path: /opt/spire/.data/certs
  register: ek

- name: Register the agent's EK hash for spire-tpm-plugin (hash_path on the server)
  ansible.builtin.file:
    path: "/opt/spire/.data/hashes/{{ ek.ek_pubhash }}"
    state: touch
    modification_time: preserve
    access_time: preserve
  delegate_to: spire-server

- name: A software TPM (swtpm serving a unix socket)
  trustroot.spire_tpm.tpm_ek_info:
    tcti: "cmd:socat - UNIX-CONNECT:/run/swtpm/tpm.sock"
"""

RETURN = r"""
eks:
  description: Every endorsement key found, certified ones first (in NV index order).
  returned: success
  type: list
  elements: dict
  contains:
    key_type:
      description: C(rsa) or C(ecc).
      type: str
      sample: rsa
    key_size:
      description: RSA modulus size in bits; null for ECC.
      type: int
      sample: 2048
    curve:
      description: ECC curve (C(P-256), C(P-384), C(P-521)); null for RSA.
      type: str
      sample: P-384
    nv_index:
      description: NV index the certificate was read from; null when the EK has no certificate.
      type: str
      sample: "0x01c00002"
    persistent_handle:
      description: Persistent handle holding this EK; null when it is not persisted.
      type: str
      sample: "0x81010001"
    source:
      description:
        - Where the EK was found; C(nv_certificate), C(persistent) (no certificate) or C(default_template)
          (regenerated from the default RSA template, neither certified nor persisted).
      type: str
      sample: nv_certificate
    certificate:
      description: The EK certificate (PEM), trailing NV padding removed; null when there is none.
      type: str
    public_key:
      description: The EK public key (PEM SubjectPublicKeyInfo).
      type: str
    pubhash:
      description: Lowercase hex SHA-256 of the DER SubjectPublicKeyInfo.
      type: str
      sample: 89b35467526999db9ad92a55ce769d2b73370a06f8ffcb406045e1e5fb93c8af
    subject:
      description: Certificate subject (RFC 4514; often empty on EK certificates); null without certificate.
      type: str
    issuer:
      description: Certificate issuer (RFC 4514); null without certificate.
      type: str
    serial:
      description: Certificate serial number in lowercase hex; null without certificate.
      type: str
    not_before:
      description: Start of validity (UTC, ISO 8601); null without certificate.
      type: str
    not_after:
      description: End of validity (UTC, ISO 8601); null without certificate.
      type: str
    chain_verified:
      description: Whether the certificate chains to O(ca_path); null without certificate or without O(ca_path).
      type: bool
    chain_error:
      description: Why the chain check failed; null when it passed or was not made.
      type: str
ek_pubhash:
  description:
    - Hash of the RSA EK as spire-tpm-plugin computes it (agent ID C(spiffe://<td>/spire/agent/tpm/<hash>),
      C(hash_path) file name); the key of the EK certificate at C(0x01c00002) if present, else of the RSA EK
      regenerated from the default template.
  returned: success
  type: str
  sample: 89b35467526999db9ad92a55ce769d2b73370a06f8ffcb406045e1e5fb93c8af
spire_tpm_devid_ready:
  description: Whether SPIRE's C(tpm_devid) attestor can use this TPM's EK (see the notes).
  returned: success
  type: bool
spire_tpm_devid_reason:
  description: Why C(spire_tpm_devid_ready) is false; null when it is true.
  returned: success
  type: str
  sample: no EK certificate at NV index 0x01c00002 (the RSA EK certificate SPIRE's tpm_devid attestor reads)
tpm:
  description: Fixed properties of the TPM.
  returned: success
  type: dict
  contains:
    manufacturer:
      description: The 4-character manufacturer ID (C(IFX), C(INTC), C(NTC), C(STM), C(AMD), C(MSFT), C(IBM) ...).
      type: str
      sample: IFX
    manufacturer_id:
      description: The manufacturer ID as a 32-bit hex number.
      type: str
      sample: "0x49465800"
    vendor:
      description: Vendor strings 1-4 concatenated.
      type: str
      sample: SLB9670
    firmware_version:
      description: Firmware version 1 and 2 as four dotted 16-bit numbers.
      type: str
      sample: 7.85.4555.0
    spec:
      description: Specification family, level, revision, year and day of year.
      type: dict
      sample: {family: "2.0", level: 0, revision: "1.38", year: 2019, day_of_year: 137}
tcti:
  description: The TCTI that was used.
  returned: success
  type: str
  sample: device:/dev/tpmrm0
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError, fail_module
from ansible_collections.trustroot.spire_tpm.plugins.module_utils import x509 as x509_utils
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import ek as ek_utils
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import info as info_utils
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm.context import (
    HAS_PYTSS, PYTSS_IMPORT_ERROR, open_tpm)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            tcti=dict(type="str"),
            ca_path=dict(type="path"),
            endorsement_hierarchy_password=dict(type="str", no_log=True),
        ),
        supports_check_mode=True,
    )
    if not HAS_PYTSS:
        module.fail_json(msg=missing_required_lib("tpm2-pytss"), exception=str(PYTSS_IMPORT_ERROR))
    if not x509_utils.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=str(x509_utils.CRYPTOGRAPHY_IMPORT_ERROR))

    try:
        anchors = None
        if module.params["ca_path"]:
            anchors = x509_utils.load_certificates(module.params["ca_path"])
            if not anchors:
                raise SpireTpmError("no certificate found in ca_path %s" % module.params["ca_path"],
                                    "put the TPM manufacturer's root and intermediate CA certificates (PEM or DER) "
                                    "there")
        with open_tpm(module.params["tcti"]) as tpm:
            tpm_props = info_utils.tpm_info(tpm)
            report = ek_utils.ek_report(tpm, anchors,
                                        endorsement_hierarchy_password=module.params["endorsement_hierarchy_password"])
            tcti = tpm.tcti_string
    except SpireTpmError as err:
        fail_module(module, err)

    module.exit_json(changed=False, eks=report["eks"], ek_pubhash=report["ek_pubhash"],
                     spire_tpm_devid_ready=report["spire_tpm_devid_ready"],
                     spire_tpm_devid_reason=report["spire_tpm_devid_reason"], tpm=tpm_props, tcti=tcti)


if __name__ == "__main__":
    main()
