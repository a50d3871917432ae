#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: boot_state_baseline
short_description: Enrol, re-baseline and query hosts' boot-state baselines in a controller-side store
version_added: "0.2.0"
description:
  - Keeps one JSON file per host, C(<store_dir>/<host>.json), holding every baseline version of the host's boot
    state (PCR values of all measured banks and the parsed TCG event log), which version is current, and the
    enforcement state recorded by the policy.
  - Runs where the store is, normally the controller (C(delegate_to=localhost)).
  - O(state=present) enrols O(boot_state) (the C(boot_state) returned by M(trustroot.spire_tpm.tpm_boot_state)).
    The first enrolment writes version 1. Enrolling the same boot state again changes nothing. A different boot
    state is refused, naming what differs, unless O(rebaseline=true) with a O(reason) (a sanctioned change, such
    as a planned firmware update). Then a new version is appended and becomes current; earlier versions stay.
  - Two boot states are the same when their PCR selection, PCR values and the events of the selected PCRs are
    equal; the event log's path and events of other PCRs do not count.
  - O(state=query) returns the current baseline and the history without writing.
  - A store file that cannot be read (not UTF-8, not JSON, truncated, wrong schema, unknown bank, digest of the
    wrong length, PCRs that do not match its selection) fails the task and is never overwritten.
author:
  - trustroot.spire_tpm contributors (@trustroot)
options:
  store_dir:
    description:
      - Directory of the baseline store. Created (mode C(0750)) when missing.
    type: path
    required: true
  host:
    description:
      - The host the baseline belongs to, normally C(inventory_hostname).
      - It names the file, so it may hold letters, digits, dots, underscores, hyphens, colons and C(@), must not
        start with a dot and has no C(/).
    type: str
    required: true
  boot_state:
    description:
      - The measured boot state, the C(boot_state) return value of M(trustroot.spire_tpm.tpm_boot_state).
      - Required with O(state=present).
    type: dict
  state:
    description:
      - C(present) enrols O(boot_state); C(query) only reads the store.
    type: str
    choices: [present, query]
    default: present
  rebaseline:
    description:
      - Accept a boot state that differs from the current baseline and record it as a new version.
      - Needs O(reason).
    type: bool
    default: false
  reason:
    description:
      - Why the baseline is recorded, kept with the version (for example C(initial enrolment) or
        C(BIOS update to 1.22, change 4711)). Required with O(rebaseline=true).
    type: str
  by:
    description:
      - Who records the baseline, kept with the version. Defaults to the user running the module.
    type: str
  mode:
    description:
      - File mode of the store file, C(0640) or stricter (no access for others, no group write).
    type: raw
    default: "0640"
attributes:
  check_mode:
    support: full
    description: Reports what would be written and writes nothing (the store directory is not created either).
  diff_mode:
    support: full
    description: Shows the current version before and after, summarised as PCR values and the event count.
  platform:
    support: full
    description: Target OS/families that can be operated against.
    platforms: posix
seealso:
  - module: trustroot.spire_tpm.tpm_boot_state
"""

EXAMPLES = r"""
- name: Measure the boot state
  trustroot.spire_tpm.tpm_boot_state:
  become: true
  register: measured

- name: Enrol it
  trustroot.spire_tpm.boot_state_baseline:
    store_dir: "{{ playbook_dir }}/boot-baselines"
    host: "{{ inventory_hostname }}"
    boot_state: "{{ measured.boot_state }}"
    reason: initial enrolment
  delegate_to: localhost

- name: Sanctioned re-baseline after a planned firmware update
  trustroot.spire_tpm.boot_state_baseline:
    store_dir: "{{ playbook_dir }}/boot-baselines"
    host: "{{ inventory_hostname }}"
    boot_state: "{{ measured.boot_state }}"
    rebaseline: true
    reason: "{{ reason }}"
  delegate_to: localhost

- name: Read the current baseline to evaluate against
  trustroot.spire_tpm.boot_state_baseline:
    store_dir: "{{ playbook_dir }}/boot-baselines"
    host: "{{ inventory_hostname }}"
    state: query
  delegate_to: localhost
  register: enrolled
"""

RETURN = r"""
baseline:
  description:
    - The current baseline document (C(schema), C(version), C(host), C(created), C(by), C(reason), C(pcr_selection),
      C(pcrs), C(event_log)); null when none is enrolled (O(state=query)).
  returned: success
  type: dict
version:
  description: The current version number; null when none is enrolled.
  returned: success
  type: int
  sample: 2
history:
  description: Every version, oldest first.
  returned: success
  type: list
  elements: dict
  contains:
    version:
      description: The version number.
      type: int
    created:
      description: When it was recorded (UTC, ISO 8601).
      type: str
      sample: "2024-05-01T12:00:00Z"
    by:
      description: Who recorded it.
      type: str
    reason:
      description: Why it was recorded.
      type: str
baseline_action:
  description: C(created), C(unchanged), C(rebaselined) or C(query).
  returned: success
  type: str
  sample: created
enforcement:
  description: The enforcement state the policy recorded in the store (null when none); O(state=query) only.
  returned: when O(state=query)
  type: dict
path:
  description: The store file of the host.
  returned: success
  type: str
  sample: /srv/ansible/boot-baselines/node1.example.org.json
"""

import getpass
import json
import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError, fail_module

try:
    from ansible_collections.trustroot.spire_tpm.plugins.module_utils.bootstate import baseline as bs
    IMPORT_ERROR = None
except ImportError:  # pragma: no cover
    IMPORT_ERROR = traceback.format_exc()


def _default_user():
    # no login name: a container user without a passwd entry
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _diff_text(summary):
    if summary is None:
        return ""
    return json.dumps(summary, indent=2, sort_keys=True) + "\n"


def main():
    module = AnsibleModule(
        argument_spec=dict(
            store_dir=dict(type="path", required=True),
            host=dict(type="str", required=True),
            boot_state=dict(type="dict"),
            state=dict(type="str", choices=["present", "query"], default="present"),
            rebaseline=dict(type="bool", default=False),
            reason=dict(type="str"),
            by=dict(type="str"),
            mode=dict(type="raw", default="0640"),
        ),
        required_if=[("state", "present", ["boot_state"]), ("rebaseline", True, ["reason"])],
        supports_check_mode=True,
    )
    if IMPORT_ERROR is not None:
        module.fail_json(msg="the collection's bootstate module_utils could not be imported", exception=IMPORT_ERROR)
    p = module.params
    try:
        if p["state"] == "query":
            module.exit_json(**bs.query(p["store_dir"], p["host"]))
        result = bs.enrol(p["store_dir"], p["host"], p["boot_state"], by=p["by"] or _default_user(),
                          reason=p["reason"], rebaseline=p["rebaseline"], mode=p["mode"],
                          check_mode=module.check_mode)
    except SpireTpmError as err:
        fail_module(module, err)
    before, after = result.pop("before"), result.pop("after")
    if module._diff and result["changed"]:
        result["diff"] = {"before": _diff_text(before), "after": _diff_text(after),
                          "before_header": result["path"], "after_header": result["path"]}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
