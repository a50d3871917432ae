# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Many directories and files of one host checked (and put right) in one call: the file_tree module's backend.

A role that loops ``ansible.builtin.file``/``copy`` over ten paths pays ten round trips on every run, even when
nothing changes; ``FileTree`` looks at all of them at once and touches only what differs. Entries:

* directories: ``{path, owner, group, mode}`` — created (parents as root 0755, like ``file: state=directory``)
  or their attributes set;
* files: ``{path, owner, group, mode}`` plus either ``content`` (text) or ``copy_from`` (a file on the same host,
  e.g. a verified key blob kept as ``.previous``) — written atomically (files.atomic_write) only when the bytes
  differ; attributes set otherwise.

``plan()`` says what would change (check mode stops there), ``apply()`` does it. The diff lists each changed path's
attributes before and after (and a content digest); file contents only for entries with ``show_diff`` (text the
operator wants to see: a unit, a script, a public bundle) — never the copies, which include TPM key blobs.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import stat

from ansible_collections.trustroot.spire_tpm.plugins.module_utils import files
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError


def _describe(path):
    """One line of what is at ``path`` now (for the diff), or 'absent'."""
    try:
        st = os.lstat(path)
    except OSError:
        return "absent"
    kind = "directory" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode) else "other"
    line = "%s %04o %d:%d" % (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    if kind == "file":
        data = files.read_bytes(path)
        line += " sha256:%s" % hashlib.sha256(data or b"").hexdigest()[:16]
    return line


class Entry:
    def __init__(self, spec, kind):
        self.kind = kind
        self.path = spec.get("path")
        if not self.path or not os.path.isabs(self.path):
            raise SpireTpmError("%s entry %r: path must be an absolute path" % (kind, self.path),
                                "give every entry an absolute 'path'")
        self.path = os.path.normpath(self.path)
        self.owner = spec.get("owner")
        self.group = spec.get("group")
        self.mode = files.parse_mode(spec.get("mode"), None)
        if self.mode is None:
            raise SpireTpmError("%s entry %s has no mode" % (kind, self.path),
                                "set an explicit 'mode' (e.g. '0750'): this module never guesses permissions")
        self.content = spec.get("content")
        self.show_diff = bool(spec.get("show_diff", False))
        if self.content is not None and not isinstance(self.content, (str, bytes)):
            raise SpireTpmError("file entry %s: content is a %s, not text" % (self.path, type(self.content).__name__),
                                "render it to text first (e.g. '{{ data | to_nice_json }}')")
        self.copy_from = spec.get("copy_from")
        if kind == "file" and (self.content is None) == (self.copy_from is None):
            raise SpireTpmError("file entry %s needs exactly one of content and copy_from" % self.path,
                                "give the file's text as 'content', or a file on the host to copy as 'copy_from'")
        self._data = None
        # Resolved now: a missing user or group is an error before anything changes.
        self.uid, self.gid = files.resolve_ids(self.owner, self.group)

    def signature(self):
        return (self.kind, self.uid, self.gid, self.mode, self.content, self.copy_from)

    def wanted_bytes(self):
        if self.content is not None:
            return self.content.encode("utf-8") if not isinstance(self.content, bytes) else self.content
        data = files.read_bytes(self.copy_from)
        if data is None:
            raise SpireTpmError("cannot copy %s to %s: the source does not exist" % (self.copy_from, self.path),
                                "create the source first (or drop the entry)")
        return data

    def what_changes(self):
        """The list of what differs: 'created', 'content', 'mode', 'owner', 'group' (empty: nothing)."""
        if self.kind == "file":
            self._data = self.wanted_bytes()  # a missing copy source fails here, before anything is changed
        try:
            st = os.lstat(self.path)
        except OSError:
            return ["created"]
        if self.kind == "directory" and not stat.S_ISDIR(st.st_mode):
            raise SpireTpmError("%s exists and is not a directory" % self.path,
                                "remove or move it, or choose another path")
        if self.kind == "file" and not stat.S_ISREG(st.st_mode):
            raise SpireTpmError("%s exists and is not a regular file" % self.path,
                                "remove or move it, or choose another path")
        out = []
        if self.kind == "file" and files.read_bytes(self.path) != self._data:
            out.append("content")
        if stat.S_IMODE(st.st_mode) != self.mode:
            out.append("mode")
        if self.uid != -1 and st.st_uid != self.uid:
            out.append("owner")
        if self.gid != -1 and st.st_gid != self.gid:
            out.append("group")
        return out

    def apply(self, changes):
        if self.kind == "directory":
            if "created" in changes:
                parent = os.path.dirname(self.path)
                if not os.path.isdir(parent):
                    os.makedirs(parent, 0o755)
                os.mkdir(self.path, self.mode)
            os.chmod(self.path, self.mode)  # mkdir's mode passes through the umask
            if self.uid != -1 or self.gid != -1:
                os.chown(self.path, self.uid, self.gid)
            return
        if "created" in changes or "content" in changes:
            files.atomic_write(self.path, self._data, self.mode, self.owner, self.group)
            return
        os.chmod(self.path, self.mode)
        if self.uid != -1 or self.gid != -1:
            os.chown(self.path, self.uid, self.gid)


class FileTree:
    """The directories (made first, in the order given) and files of one call."""

    def __init__(self, directories, file_specs):
        entries = [Entry(d, "directory") for d in directories or []]
        entries += [Entry(f, "file") for f in file_specs or []]
        # A path may be listed twice when two settings point at it (a socket directory that is the run directory):
        # alike twice is once, two different wishes are an error.
        seen = {}
        self.entries = []
        for e in entries:
            other = seen.get(e.path)
            if other is None:
                seen[e.path] = e
                self.entries.append(e)
            elif e.signature() != other.signature():
                raise SpireTpmError("%s is listed twice with different settings" % e.path,
                                    "give the path one kind, owner, group, mode and content")
        self._plan = None

    def plan(self):
        """[(entry, [what changes])] for every entry that differs; computed once."""
        if self._plan is None:
            self._plan = [(e, c) for e, c in ((e, e.what_changes()) for e in self.entries) if c]
        return self._plan

    def diff(self):
        before, after = [], []
        for e, changes in self.plan():
            before.append("%s: %s" % (e.path, _describe(e.path)))
            after.append("%s: %s %s" % (e.path, e.kind, ", ".join(changes)))
            if e.show_diff and e.content is not None and ("content" in changes or "created" in changes):
                old = files.read_bytes(e.path)
                before.append(files.as_text(old) if old is not None else "")
                after.append(files.as_text(e._data))
        return {"before": "\n".join(before) + ("\n" if before else ""),
                "after": "\n".join(after) + ("\n" if after else ""),
                "before_header": "file_tree", "after_header": "file_tree"}

    def apply(self, check_mode=False):
        """Put right what differs; return [{path, kind, changes}] (what changed, or would in check mode)."""
        out = []
        for e, changes in self.plan():
            if not check_mode:
                try:
                    e.apply(changes)
                except OSError as err:
                    raise SpireTpmError("cannot set up %s: %s" % (e.path, err.strerror or err),
                                        "run the task with become, or check the parent directory")
            out.append({"path": e.path, "kind": e.kind, "changes": changes})
        return out
