#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: converged
short_description: The record that lets a role prove "nothing to do" in one call
description:
  - A role records, at the end of a successful full run, the state it produced (O(state=record)). On the next run it
    calls O(state=check) first and skips its whole body when RV(converged) is true.
  - The check hides no drift. It re-reads everything on every call. For each path in O(paths), it reads the type
    (file, directory, link, missing or other), the sha256 of a file's content, a link's target (links are never
    followed), the mode, the uid and the gid. For each user in O(users), it reads the uid, the primary gid and the
    groups the user is in. For each group in O(groups), it reads the gid and the members. It compares O(inputs_digest)
    and the sets of paths, users and groups asked for with the record. It also checks O(certificates) (readable, not
    due for renewal) and O(commands) (each exits 0).
  - A directory's listing is not part of its snapshot. Name every path the role manages.
  - Everything is evaluated and every difference is named in RV(reasons). O(commands) are not run when anything else
    already differs, because the role runs its body anyway; RV(reasons) says so.
  - No record, a record that cannot be read, is not valid JSON or has another schema, or a record file that is not a
    regular root:root 0600 file, means not converged, with the reason. It is never an error.
  - The record is sorted JSON without timestamps (C(schema), C(inputs_digest), C(paths), C(users), C(groups)). It holds
    digests, modes and ids, never file contents. Recording the same state twice changes nothing.
version_added: "0.3.0"
author:
  - trustroot.spire_tpm contributors (@trustroot)
options:
  path:
    description:
      - The record file (absolute). It is written root:root 0600 and its missing parent directories are created
        root:root 0700.
    type: str
    required: true
  state:
    description:
      - V(check) compares the host with the record (read-only, never a change).
      - V(record) writes the record of the host now.
      - V(absent) removes the record (roles call this when they uninstall).
    type: str
    choices: [check, record, absent]
    default: check
  inputs_digest:
    description:
      - An opaque digest of the role's inputs, computed on the controller. A different digest means not converged.
      - Required with O(state=check) and O(state=record).
    type: str
  paths:
    description:
      - Absolute paths whose snapshot is recorded (O(state=record)) or compared (O(state=check)). A missing path is a
        valid snapshot, so an optional file may be recorded.
      - Order does not matter and duplicates collapse. Trailing slashes are dropped; C(.) and C(..) are refused.
      - A path that cannot be read fails O(state=record) and is a reason with O(state=check).
    type: list
    elements: str
    default: []
  users:
    description: Users whose uid, primary gid and groups (from the account database, NSS) are recorded or compared.
    type: list
    elements: str
    default: []
  groups:
    description: Groups whose gid and members are recorded or compared.
    type: list
    elements: str
    default: []
  certificates:
    description:
      - Certificates checked with O(state=check) (not recorded, ignored otherwise). Not converged when one is
        missing, unreadable or due for renewal.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: A PEM certificate or chain (leaf first), or a DER certificate.
        type: str
        required: true
      renew_before:
        description:
          - How long before the leaf's notAfter it is due, as a duration (V(720h), V(30d)). The rule is the one
            M(trustroot.spire_tpm.devid_certificate) uses; without it, one third of the certificate's lifetime.
        type: str
  commands:
    description:
      - Health commands run with O(state=check) (ignored otherwise), without a shell and with stdin closed. Converged
        only when every command exits 0 within its timeout.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: A short name, used in RV(reasons).
        type: str
        required: true
      argv:
        description: The program and its arguments.
        type: list
        elements: str
        required: true
      timeout:
        description: Seconds before the command (and its process group) is killed, which counts as a failure.
        type: int
        default: 10
attributes:
  check_mode:
    support: full
    description: O(state=check) runs the same as always. O(state=record) and O(state=absent) report whether they
      would change the record, and write or remove nothing.
  diff_mode:
    support: full
    description: The record file before and after, for O(state=record) and O(state=absent).
  platform:
    support: full
    description: POSIX hosts with Python 3 (the record's owner is root).
    platforms: posix
notes:
  - Needs the Python library C(cryptography) on the host only when O(certificates) are given.
"""

EXAMPLES = r"""
- name: Is the SPIRE agent as the last run left it?
  trustroot.spire_tpm.converged:
    path: /var/lib/trustroot-spire-tpm/converged/spire_agent.json
    inputs_digest: "{{ spire_agent_inputs | to_json | hash('sha256') }}"
    paths: [/etc/spire/agent/agent.conf, /opt/spire/current, /etc/systemd/system/spire-agent.service]
    users: [spire]
    groups: [tss]
    certificates:
      - {path: /etc/spire/devid/devid.crt, renew_before: 720h}
    commands:
      - name: agent health
        argv: [/opt/spire/bin/spire-agent, healthcheck, -socketPath, /run/spire/agent/public/api.sock]
  register: spire_agent_converged

- name: Record the state this run produced
  trustroot.spire_tpm.converged:
    path: /var/lib/trustroot-spire-tpm/converged/spire_agent.json
    state: record
    inputs_digest: "{{ spire_agent_inputs | to_json | hash('sha256') }}"
    paths: [/etc/spire/agent/agent.conf, /opt/spire/current, /etc/systemd/system/spire-agent.service]
    users: [spire]
    groups: [tss]

- name: Forget it on uninstall
  trustroot.spire_tpm.converged:
    path: /var/lib/trustroot-spire-tpm/converged/spire_agent.json
    state: absent
"""

RETURN = r"""
converged:
  description: Whether the host is as recorded (every snapshot, the inputs, the certificates and the commands).
  returned: when O(state=check)
  type: bool
  sample: false
reasons:
  description:
    - Each difference found, in a short sentence (at most 20, the rest counted in a last C(... and N more)). Empty
      when converged.
  returned: when O(state=check)
  type: list
  elements: str
  sample: ["inputs changed since the record", "/etc/spire/agent/agent.conf: content differs from the record",
           "user spire: supplementary groups differ (recorded: spire,tss; now: spire)"]
certificates:
  description:
    - For each of O(certificates), in order, what its leaf says (whether or not it is due), so that a role that skips
      its certificate step can still report it; C(null) for one that could not be read.
  returned: when O(state=check)
  type: list
  elements: dict
  contains:
    path:
      description: The certificate's path.
      type: str
    serial:
      description: The leaf's serial number, in decimal (as M(trustroot.spire_tpm.devid_certificate) returns it).
      type: str
    not_before:
      description: Start of validity, ISO 8601 UTC.
      type: str
    not_after:
      description: End of validity, ISO 8601 UTC.
      type: str
    public_key_sha256:
      description: SHA-256 of the leaf's DER SubjectPublicKeyInfo (as M(trustroot.spire_tpm.devid_csr) returns it).
      type: str
  sample: [{"path": "/etc/spire/agent/devid/devid.crt", "serial": "3116...", "not_before": "2026-11-30T10:00:00+00:00",
            "not_after": "2027-02-28T10:00:00+00:00", "public_key_sha256": "1e0c..."}]
inputs_digest:
  description:
    - The O(inputs_digest) the check compared, as given. A role records this one at the end of the run the check
      started, so that inputs resolved differently later in that run (facts gathered on the way) do not key the record.
  returned: when O(state=check)
  type: str
record:
  description: The record of the host now (what was written, or would be in check mode). No file contents.
  returned: when O(state=record)
  type: dict
  sample: {"schema": 1, "inputs_digest": "9f2c...", "paths": {"/etc/spire/agent/agent.conf": {
           "type": "file", "sha256": "5d41...", "mode": "0640", "uid": 0, "gid": 999}},
           "users": {"spire": {"uid": 999, "gid": 999, "groups": ["spire", "tss"]}},
           "groups": {"tss": {"gid": 998, "members": ["spire"]}}}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.converge import CHECK_OPTIONS, ConvergenceRecord
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError, fail_module


def main():
    module = AnsibleModule(
        argument_spec=dict(state=dict(type="str", choices=["check", "record", "absent"], default="check"),
                           **CHECK_OPTIONS),
        required_if=[("state", "check", ["inputs_digest"]), ("state", "record", ["inputs_digest"])],
        supports_check_mode=True,
    )
    p = module.params
    result = {"changed": False}
    diff = None
    try:
        rec = ConvergenceRecord(**dict((k, p[k]) for k in CHECK_OPTIONS))
        if p["state"] == "check":
            result.update(rec.check())
        elif p["state"] == "record":
            changed, record, diff = rec.record(check_mode=module.check_mode, want_diff=module._diff)
            result.update(changed=changed, record=record)
        else:
            changed, diff = rec.remove(check_mode=module.check_mode, want_diff=module._diff)
            result["changed"] = changed
    except SpireTpmError as err:
        fail_module(module, err)
    if diff is not None:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
