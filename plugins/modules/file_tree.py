#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: file_tree
short_description: Directories, files and symbolic links of one host, checked and put right in one call
description:
  - Ensures a list of directories, a list of files (text content, or a copy of another file on the same host) with
    explicit owner, group and mode, and a list of symbolic links, in one round trip. A role that looped
    M(ansible.builtin.file) or M(ansible.builtin.copy) over ten paths paid ten round trips on every run, even when
    nothing changed.
  - Only what differs is touched. Files are written atomically (temporary file in the same directory, mode and owner
    set before any byte is visible, fsync, rename) and only when their bytes differ; otherwise only their attributes
    are set. Directories are made in the order given (missing parents as root 0755).
  - A missing or wrong link is made as a temporary link in the same directory (owner and group set first) and renamed
    over the path, so a reader sees the old target or the new one, never no link. A link that points right only has
    its own owner and group set.
  - Directories are put right first, then files, then links, each list in the order given.
  - Every path, owner and group is checked before anything changes (a user that does not exist, a path that is a file
    where a directory is wanted, a file or directory where a link is wanted, a missing copy source are errors that
    change nothing). A file or directory is never replaced by a link.
  - The diff lists each changed path with its attributes before and after (and a content digest, or a link's
    target); contents only for files with C(show_diff).
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
  links:
    description:
      - Symbolic links to ensure. Each item has C(path) (absolute; the link itself), C(src) (what the link points to,
        kept as given, so a relative C(src) is relative to the link's directory; it need not exist yet), and optional
        C(owner) and C(group) of the link itself (name or number; omitted = left as is, the task's user for a new
        link).
      - A link has no C(mode). When C(path) is a regular file or a directory, the task fails and changes nothing.
    type: list
    elements: dict
    default: []
attributes:
  check_mode:
    support: full
    description: Reports what would change (C(changes)) and changes nothing.
  diff_mode:
    support: full
    description:
      - Each changed path with its kind, mode, owner, group (and content digest, or a link's target) before, and what
        changes after.
"""

EXAMPLES = r"""
- name: The agent's directories in one call
  trustroot.spire_tpm.file_tree:
    directories:
      - {path: /opt/spire, mode: "0755"}
      - {path: /etc/spire/agent, group: spire, mode: "0750"}
      - {path: /var/lib/spire/agent, owner: spire, group: spire, mode: "0700"}

- name: The service files and the switch to the new version, in one call
  trustroot.spire_tpm.file_tree:
    files:
      - {path: /etc/spire/agent/spire-agent.env, content: "SPIRE_LOG=1\n", owner: root, group: root, mode: "0600"}
    links:
      - {path: /opt/spire/current, src: versions/1.15.3, owner: root, group: root}
      - {path: /opt/spire/bin, src: current/bin, owner: root, group: root}

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
           {"path": "/etc/spire/agent/devid/trust/devid-ca.pem", "kind": "file", "changes": ["content"]},
           {"path": "/opt/spire/current", "kind": "link", "changes": ["target"]}]
checked:
  description: How many paths were checked.
  returned: always
  type: int
  sample: 12
missing_owner:
  description:
    - The owner name that does not exist on the host, when that is why the task failed (nothing was changed).
  returned: on failure, when an owner does not exist
  type: str
  sample: spire
missing_group:
  description:
    - The group name that does not exist on the host, when that is why the task failed (nothing was changed).
  returned: on failure, when a group does not exist
  type: str
  sample: spire
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
            links=dict(type="list", elements="dict", default=[]),
        ),
        supports_check_mode=True,
    )
    if IMPORT_ERROR is not None:
        module.fail_json(msg="the collection's file_tree module_utils could not be imported", exception=IMPORT_ERROR)
    try:
        tree = FileTree(module.params["directories"], module.params["files"], module.params["links"])
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
