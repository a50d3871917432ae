#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: file_tree
short_description: Directories and files of one host, checked and put right in one call
description:
  - Ensures a list of directories and a list of files (text content, or a copy of another file on the same host) with
    explicit owner, group and mode, in one round trip. A role that looped M(ansible.builtin.file) or
    M(ansible.builtin.copy) over ten paths paid ten round trips on every run, even when nothing changed.
  - Only what differs is touched. Files are written atomically (temporary file in the same directory, mode and owner
    set before any byte is visible, fsync, rename) and only when their bytes differ; otherwise only their attributes
    are set. Directories are made in the order given (missing parents as root 0755).
  - Every path, owner and group is checked before anything changes (a user that does not exist, a path that is a file
    where a directory is wanted, a missing copy source are errors that change nothing).
  - The diff lists each changed path with its attributes before and after (and a content digest); contents only for
    files with C(show_diff).
version_added: "0.2.0"
author:
  - trustroot.spire_tpm contributors (@trustroot)
options:
  directories:
    description:
      - Directories to ensure. Each item has C(path) (absolute), C(mode) (required, octal string), and optional
        C(owner) and C(group) (name or number; omitted = left as is, root for a new directory).
    type: list
    elements: dict
    default: []
  files:
    description:
      - Files to ensure. Each item has C(path) (absolute), C(mode) (required), optional C(owner)/C(group), and exactly
        one of C(content) (text) or C(copy_from) (absolute path of a file on the same host).
      - C(show_diff) (default false) puts a C(content) file's text before and after into the diff; leave it off for
        anything secret.
    type: list
    elements: dict
    default: []
attributes:
  check_mode:
    support: full
    description: Reports what would change (C(changes)) and changes nothing.
  diff_mode:
    support: full
    description: Each changed path with its kind, mode, owner, group (and content digest) before, and what changes after.
"""

EXAMPLES = r"""
- name: The agent's directories in one call
  trustroot.spire_tpm.file_tree:
    directories:
      - {path: /opt/spire, mode: "0755"}
      - {path: /etc/spire/agent, group: spire, mode: "0750"}
      - {path: /var/lib/spire/agent, owner: spire, group: spire, mode: "0700"}

- name: Keep copies of the verified DevID blobs
  trustroot.spire_tpm.file_tree:
    files:
      - {path: /etc/spire/agent/devid/devid.pub.previous, copy_from: /etc/spire/agent/devid/devid.pub,
         owner: root, group: spire, mode: "0640"}
"""

RETURN = r"""
changes:
  description: The paths that changed (or would, in check mode), and what changed in each.
  returned: always
  type: list
  elements: dict
  sample: [{"path": "/var/lib/spire/agent", "kind": "directory", "changes": ["created"]},
           {"path": "/etc/spire/agent/devid/trust/devid-ca.pem", "kind": "file", "changes": ["content"]}]
checked:
  description: How many paths were checked.
  returned: always
  type: int
  sample: 12
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError, fail_module

IMPORT_ERROR = None
try:
    from ansible_collections.trustroot.spire_tpm.plugins.module_utils.file_tree import FileTree
except ImportError:
    IMPORT_ERROR = traceback.format_exc()


def main():
    module = AnsibleModule(
        argument_spec=dict(
            directories=dict(type="list", elements="dict", default=[]),
            files=dict(type="list", elements="dict", default=[]),
        ),
        supports_check_mode=True,
    )
    if IMPORT_ERROR is not None:
        module.fail_json(msg="the collection's file_tree module_utils could not be imported", exception=IMPORT_ERROR)
    try:
        tree = FileTree(module.params["directories"], module.params["files"])
        diff = tree.diff() if module._diff else None
        changes = tree.apply(check_mode=module.check_mode)
    except SpireTpmError as err:
        fail_module(module, err)
    result = {"changed": bool(changes), "changes": changes, "checked": len(tree.entries)}
    if diff is not None and changes:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
