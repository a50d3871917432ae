#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: tpm_pcr_facts
short_description: Read TPM PCR values as facts and compare them with a baseline
version_added: "0.1.0"
description:
  - Reads the selected PCRs of the selected banks in as few C(TPM2_PCR_Read) calls as the TPM allows (at most
    8 digests per call), as one consistent snapshot (the read restarts when a PCR is extended meanwhile).
  - Sets C(ansible_facts.tpm_pcrs), a mapping of bank name to a mapping of PCR index (as a string) to the
    lowercase hex value.
  - With O(baseline) or O(baseline_file) reports every PCR whose value differs (C(drift)) and whether all match.
  - Read-only.
author:
  - trustroot.spire_tpm contributors (@trustroot)
extends_documentation_fragment:
  - trustroot.spire_tpm.tpm
options:
  banks:
    description:
      - PCR banks (hash algorithms) to read, for example C(sha256), C(sha1), C(sha384).
      - Defaults to every bank allocated on the TPM. A bank that is not allocated fails the task with the list of
        allocated banks.
    type: list
    elements: str
  pcrs:
    description:
      - PCR indices to read, from 0 to 23.
    type: list
    elements: int
    default: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23]
  baseline:
    description:
      - Expected values as a mapping of bank name to a mapping of PCR index to hex digest, for example a former
        C(ansible_facts.tpm_pcrs).
      - Hex may be upper or lower case with or without C(0x). PCRs of the baseline outside O(banks)/O(pcrs) are read
        as well, for the comparison only.
      - Mutually exclusive with O(baseline_file).
    type: dict
  baseline_file:
    description:
      - A JSON or YAML file on the managed host holding a baseline in the format of O(baseline).
      - The output of C(tpm2_pcrread) saved to a file is accepted too.
      - Mutually exclusive with O(baseline).
    type: path
attributes:
  check_mode:
    support: full
    description: The module never changes anything; it runs the same in check mode.
  facts:
    support: full
    description: Sets C(ansible_facts.tpm_pcrs).
seealso:
  - module: trustroot.spire_tpm.tpm_ek_info
"""

EXAMPLES = r"""
- name: Read all PCRs of all allocated banks
  trustroot.spire_tpm.tpm_pcr_facts:

- name: Check the boot PCRs against a recorded baseline
  trustroot.spire_tpm.tpm_pcr_facts:
    banks: [sha256]
    pcrs: [0, 2, 4, 7]
    baseline_file: /etc/spire/pcr-baseline.json
  register: pcr
  failed_when: not pcr.matches_baseline

- name: Inline baseline
  trustroot.spire_tpm.tpm_pcr_facts:
    pcrs: [7]
    baseline:
      sha256:
        "7": "{{ expected_pcr7 }}"
"""

RETURN = r"""
ansible_facts:
  description: Facts set by the module.
  returned: success
  type: dict
  contains:
    tpm_pcrs:
      description: PCR values per bank, keyed by the PCR index as a string, lowercase hex.
      type: dict
      sample: {"sha256": {"0": "0000000000000000000000000000000000000000000000000000000000000000"}}
banks:
  description: The banks that were read.
  returned: success
  type: list
  elements: str
  sample: [sha1, sha256]
allocated_banks:
  description: Every bank allocated on the TPM.
  returned: success
  type: list
  elements: str
  sample: [sha1, sha256]
drift:
  description: The baseline entries whose PCR value differs; empty without a baseline.
  returned: success
  type: list
  elements: dict
  contains:
    bank:
      description: The bank.
      type: str
      sample: sha256
    pcr:
      description: The PCR index.
      type: int
      sample: 7
    expected:
      description: The baseline value (lowercase hex).
      type: str
    actual:
      description: The value read (lowercase hex).
      type: str
matches_baseline:
  description: Whether every baseline entry matched; null when no baseline was given.
  returned: success
  type: bool
tcti:
  description: The TCTI that was used.
  returned: success
  type: str
  sample: device:/dev/tpmrm0
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError, fail_module
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import pcr as pcr_utils
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm.context import (
    HAS_PYTSS, PYTSS_IMPORT_ERROR, open_tpm)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            tcti=dict(type="str"),
            banks=dict(type="list", elements="str"),
            pcrs=dict(type="list", elements="int", default=list(range(24))),
            baseline=dict(type="dict"),
            baseline_file=dict(type="path"),
        ),
        mutually_exclusive=[("baseline", "baseline_file")],
        supports_check_mode=True,
    )
    if not HAS_PYTSS:
        module.fail_json(msg=missing_required_lib("tpm2-pytss"), exception=str(PYTSS_IMPORT_ERROR))
    p = module.params
    try:
        pcrs = pcr_utils.normalize_pcrs(p["pcrs"])
        baseline = None
        if p["baseline"] is not None:
            baseline = pcr_utils.normalize_baseline(p["baseline"])
        elif p["baseline_file"]:
            baseline = pcr_utils.load_baseline_file(p["baseline_file"])
        with open_tpm(p["tcti"]) as tpm:
            report = pcr_utils.pcr_report(tpm, p["banks"], pcrs, baseline)
            tcti = tpm.tcti_string
    except SpireTpmError as err:
        fail_module(module, err)

    module.exit_json(
        changed=False,
        ansible_facts={"tpm_pcrs": report["values"]},
        banks=report["banks"],
        allocated_banks=report["allocated_banks"],
        drift=report["drift"],
        matches_baseline=report["matches_baseline"],
        tcti=tcti,
    )


if __name__ == "__main__":
    main()
