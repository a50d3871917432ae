#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: tpm_boot_state
short_description: Measure a host's boot state (PCRs and TCG event log) and evaluate it against its baseline
version_added: "0.2.0"
description:
  - Reads the selected PCRs of every allocated bank (or of O(banks)) as one consistent snapshot and the host's TCG
    event log (the firmware's measurement log, C(/sys/kernel/security/tpm0/binary_bios_measurements) on Linux).
  - Replays the event log and compares the result with the TPM's PCRs. A log that does not replay is a finding
    (C(log_does_not_replay)) even when no PCR drifted.
  - With O(baseline), compares the PCRs with the baseline's values and the events with the baseline's log, and
    names the boot component(s) that changed.
  - Returns C(boot_state), ready to be enrolled with M(trustroot.spire_tpm.boot_state_baseline), and sets the
    C(ansible_facts.tpm_boot_state) fact.
  - Read-only.
author:
  - trustroot.spire_tpm contributors (@trustroot)
extends_documentation_fragment:
  - trustroot.spire_tpm.tpm
options:
  pcrs:
    description:
      - PCR indices to measure, from 0 to 23.
      - With O(baseline) the baseline's PCR selection is evaluated; PCRs it names outside O(pcrs) are read for the
        comparison only.
    type: list
    elements: int
    default: [0, 1, 2, 3, 4, 5, 6, 7]
  banks:
    description:
      - PCR banks to read, for example C(sha256). Defaults to every bank allocated on the TPM.
    type: list
    elements: str
  event_log_path:
    description:
      - The binary TCG event log. When the file does not exist the host is treated as having no event log
        (C(boot_state.event_log) is null) unless O(event_log_required=true).
      - Reading the kernel's copy needs root (C(become=true)).
    type: path
    default: /sys/kernel/security/tpm0/binary_bios_measurements
  event_log_required:
    description: Fail when O(event_log_path) does not exist.
    type: bool
    default: false
  baseline:
    description:
      - The host's baseline as stored by M(trustroot.spire_tpm.boot_state_baseline) on the controller, usually
        its C(baseline) return value (a whole store file's content is accepted too; its current version is used).
      - Without it the report's status is C(no_baseline) (or C(log_does_not_replay)).
    type: dict
  baseline_copy_path:
    description:
      - The host's own copy of its baseline, as the C(boot_state) role writes it on the host (JSON with C(baseline),
        C(event_log_path), C(gate), C(enforce_on), C(blocked)); the on-host DevID renewal job reads the same file.
      - When given, the module reads it on the host and evaluates against its baseline, with the baseline's PCR
        selection and banks and the copy's C(event_log_path) (O(baseline), O(pcrs), O(banks) and
        O(event_log_path) cannot be given with it). The copy without its baseline is returned as
        RV(baseline_copy).
      - When the file does not exist nothing is measured and RV(baseline_copy) is null (a host never enrolled).
        An unreadable or malformed copy is an error.
    type: path
attributes:
  check_mode:
    support: full
    description: The module never changes anything; it runs the same in check mode.
  diff_mode:
    support: none
    description: Nothing is changed, so there is no diff.
  facts:
    support: full
    description: Sets C(ansible_facts.tpm_boot_state).
  platform:
    support: full
    description: Target OS/families that can be operated against.
    platforms: posix
seealso:
  - module: trustroot.spire_tpm.boot_state_baseline
  - module: trustroot.spire_tpm.tpm_pcr_facts
"""

EXAMPLES = r"""
- name: Measure the boot state
  trustroot.spire_tpm.tpm_boot_state:
  become: true
  register: measured

- name: Enrol it on the controller
  trustroot.spire_tpm.boot_state_baseline:
    store_dir: "{{ playbook_dir }}/boot-baselines"
    host: "{{ inventory_hostname }}"
    boot_state: "{{ measured.boot_state }}"
    reason: initial enrolment
  delegate_to: localhost

- name: Evaluate against the enrolled baseline
  trustroot.spire_tpm.tpm_boot_state:
    baseline: "{{ enrolled.baseline }}"
  become: true
  register: boot
  failed_when: boot.report.status != 'ok'

- name: Evaluate against the host's own baseline copy, if it has one (one call)
  trustroot.spire_tpm.tpm_boot_state:
    baseline_copy_path: /var/lib/trustroot/boot-state/baseline.json
  become: true
  register: boot
  failed_when: >-
    boot.baseline_copy is not none and (boot.baseline_copy.blocked is not none
    or (boot.baseline_copy.gate == 'enforce'
        and boot.report.findings | intersect(boot.baseline_copy.enforce_on) | length > 0))
"""

RETURN = r"""
baseline_copy:
  description:
    - The host's baseline copy read from O(baseline_copy_path), without its C(baseline) (the report names the
      baseline's version, C(report.baseline_version)); null when the file does not exist, in which case nothing
      was measured and no other value is returned.
  returned: when O(baseline_copy_path) is given
  type: dict
  sample: {"schema": 1, "host": "node1", "policy": "block", "gate": "enforce", "enforce_on": ["drift"],
           "event_log_path": "/sys/kernel/security/tpm0/binary_bios_measurements", "blocked": null}
boot_state:
  description: What was measured, in the form M(trustroot.spire_tpm.boot_state_baseline) enrols.
  returned: success, unless O(baseline_copy_path) does not exist
  type: dict
  contains:
    pcr_selection:
      description: The PCR indices measured (O(pcrs)).
      type: list
      elements: int
      sample: [0, 1, 2, 3, 4, 5, 6, 7]
    pcrs:
      description: PCR values per bank, keyed by the PCR index as a string, lowercase hex.
      type: dict
      sample: {"sha256": {"7": "65caf8dd1e0ea7a6347b635d2b379c93b9a1351edc2afc3ecda700e534eb3068"}}
    event_log:
      description:
        - The parsed event log (C(path), C(sha256) of the raw file, C(spec) and C(events)); null when the host
          has none.
        - Each event has C(index), C(pcr), C(type), C(type_name), C(digests) (bank to hex), C(data_sha256) and
          C(decoded).
      type: dict
report:
  description: The evaluation.
  returned: success, unless O(baseline_copy_path) does not exist
  type: dict
  contains:
    status:
      description:
        - The most severe finding, C(drift), C(log_does_not_replay) or C(no_baseline); C(ok) when none applies.
      type: str
      sample: drift
    findings:
      description: Every finding that applies, most severe first.
      type: list
      elements: str
    log_replays:
      description: Whether the event log replays to the TPM's PCR values; null without a log.
      type: bool
    pcr_drift:
      description: The baseline PCRs whose value differs (C(bank), C(pcr), C(baseline), C(current)).
      type: list
      elements: dict
    replay_mismatch:
      description: The PCRs where the replayed log and the TPM differ (C(bank), C(pcr), C(replayed), C(tpm)).
      type: list
      elements: dict
    event_changes:
      description:
        - The events that differ from the baseline's log (C(pcr), C(type_name), C(change) C(changed), C(added) or
          C(removed), C(baseline), C(current), C(description)).
      type: list
      elements: dict
    notes:
      description: What could not be compared and why (a bank on one side only, an event log on one side only).
      type: list
      elements: str
    baseline_version:
      description: The version of the baseline compared with; null without a baseline.
      type: int
    pcr_selection:
      description: The PCRs evaluated.
      type: list
      elements: int
    summary:
      description: One line naming the changed component(s).
      type: str
      sample: "PCR 7 changed: EV_EFI_VARIABLE_DRIVER_CONFIG db"
ansible_facts:
  description: Facts set by the module.
  returned: success, unless O(baseline_copy_path) does not exist
  type: dict
  contains:
    tpm_boot_state:
      description: The compact form, C(pcrs), C(status), C(summary) and C(baseline_version).
      type: dict
banks:
  description: The banks that were read.
  returned: success, unless O(baseline_copy_path) does not exist
  type: list
  elements: str
  sample: [sha1, sha256]
tcti:
  description: The TCTI that was used.
  returned: success, unless O(baseline_copy_path) does not exist
  type: str
  sample: device:/dev/tpmrm0
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError, fail_module

try:
    from ansible_collections.trustroot.spire_tpm.plugins.module_utils.bootstate import measure
    from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm.context import HAS_PYTSS
    IMPORT_ERROR = None
except ImportError:  # pragma: no cover
    HAS_PYTSS = False
    IMPORT_ERROR = traceback.format_exc()


def main():
    module = AnsibleModule(
        argument_spec=dict(
            tcti=dict(type="str"),
            pcrs=dict(type="list", elements="int", default=list(range(8))),
            banks=dict(type="list", elements="str"),
            event_log_path=dict(type="path", default="/sys/kernel/security/tpm0/binary_bios_measurements"),
            event_log_required=dict(type="bool", default=False),
            baseline=dict(type="dict"),
            baseline_copy_path=dict(type="path"),
        ),
        mutually_exclusive=[("baseline_copy_path", other) for other in ("baseline", "pcrs", "banks", "event_log_path")],
        supports_check_mode=True,
    )
    if IMPORT_ERROR is not None or not HAS_PYTSS:
        module.fail_json(msg=missing_required_lib("tpm2-pytss"), exception=IMPORT_ERROR)
    p = module.params
    try:
        result = measure.boot_state(
            p["tcti"], pcrs=p["pcrs"], banks=p["banks"], event_log_path=p["event_log_path"],
            event_log_required=p["event_log_required"], baseline=p["baseline"],
            baseline_copy_path=p["baseline_copy_path"])
    except SpireTpmError as err:
        fail_module(module, err)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
