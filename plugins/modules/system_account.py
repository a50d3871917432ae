#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: system_account
short_description: System groups, a service user and its supplementary groups, in one call
description:
  - Ensures system groups exist and, optionally, that a service user exists (created only with O(create_user)) and
    is a member of O(member_of). One round trip replaces the group / getent / user task triples the roles ran on
    every play.
  - Groups are created as system groups (C(groupadd --system)) and never removed. Memberships are only added
    (C(usermod --append --groups)), never removed.
  - An existing user is never modified except for the supplementary groups asked for; its shell, home and primary
    group stay as they are (a SPIRE server and agent on one host share the user, and C(usermod) refuses some
    changes while the user runs processes).
  - A missing user is created only when O(create_user) is true (C(useradd --system --no-create-home), with its
    primary group O(user_group) made as a system group when missing); otherwise nothing is done for it and
    RV(user_exists) is false.
  - Every name is checked before anything changes; a group in O(member_of) that neither exists nor is listed in
    O(groups) is an error that changes nothing.
version_added: "0.2.0"
author:
  - trustroot.spire_tpm contributors (@trustroot)
options:
  groups:
    description: System groups to ensure.
    type: list
    elements: str
    default: []
  user:
    description: The service user. Without it only O(groups) are ensured.
    type: str
  member_of:
    description: Supplementary groups O(user) must be a member of (added, never removed).
    type: list
    elements: str
    default: []
  create_user:
    description: Create O(user) when it does not exist (a system user). When false a missing user is left missing.
    type: bool
    default: false
  user_group:
    description:
      - Primary group of a user this module creates (default the user's name). Created with the user, as a system
        group, when it does not exist.
    type: str
  user_home:
    description: Home directory recorded for a user this module creates (the directory itself is not created).
    type: path
    default: /nonexistent
  user_shell:
    description: Login shell of a user this module creates.
    type: path
    default: /usr/sbin/nologin
attributes:
  check_mode:
    support: full
    description: Reports the steps that would run (RV(changes)) and runs none.
  diff_mode:
    support: full
    description: The groups and the user (with its groups) before, and after the steps.
"""

EXAMPLES = r"""
- name: The SPIRE agent's group and user, and its access to the TPM
  trustroot.spire_tpm.system_account:
    groups: [spire, tss]
    user: spire
    create_user: true
    user_group: spire
    user_home: /var/lib/spire
    member_of: [tss]

- name: Let an existing SPIRE agent user open the TPM (a missing one is left to the spire_agent role)
  trustroot.spire_tpm.system_account:
    groups: [tss]
    user: spire
    member_of: [tss]
"""

RETURN = r"""
changes:
  description: The steps that ran (or would, in check mode).
  returned: always
  type: list
  elements: str
  sample: ["group tss created (system group)", "user spire added to tss"]
user_exists:
  description: Whether O(user) exists after the call (in check mode, whether it would). Null without O(user).
  returned: always
  type: bool
  sample: true
user:
  description: The user as the account database has it after the call (null when it does not exist).
  returned: when O(user) is given
  type: dict
  sample: {"name": "spire", "uid": 999, "gid": 999, "home": "/var/lib/spire", "shell": "/usr/sbin/nologin",
           "groups": ["spire", "tss"]}
"""

import json

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.accounts import Accounts
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError, fail_module


def main():
    module = AnsibleModule(
        argument_spec=dict(
            groups=dict(type="list", elements="str", default=[]),
            user=dict(type="str"),
            member_of=dict(type="list", elements="str", default=[]),
            create_user=dict(type="bool", default=False),
            user_group=dict(type="str"),
            user_home=dict(type="path", default="/nonexistent"),
            user_shell=dict(type="path", default="/usr/sbin/nologin"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        accounts = Accounts(groups=p["groups"], user=p["user"], member_of=p["member_of"],
                            create_user=p["create_user"], user_group=p["user_group"], user_home=p["user_home"],
                            user_shell=p["user_shell"])
        before = accounts.state()
        changes = accounts.apply(module.run_command, check_mode=module.check_mode)
    except SpireTpmError as err:
        fail_module(module, err)
    after = accounts.state()
    result = {"changed": bool(changes), "changes": changes}
    if p["user"]:
        exists = after["user"] is not None or (module.check_mode and any(c.startswith("user %s created" % p["user"])
                                                                         for c in changes))
        result.update(user_exists=exists, user=after["user"])
    else:
        result["user_exists"] = None
    if module._diff and changes:
        result["diff"] = {"before": json.dumps(before, indent=1, sort_keys=True) + "\n",
                          "after": (json.dumps(after, indent=1, sort_keys=True) + "\n") if not module.check_mode
                          else "\n".join(changes) + "\n"}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
