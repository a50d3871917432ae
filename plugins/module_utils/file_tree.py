# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Many directories, files and symbolic links of one host checked (and put right) in one call: the file_tree module's
backend.

A role that loops ``ansible.builtin.file``/``copy`` over ten paths pays ten round trips on every run, even when
nothing changes; ``FileTree`` looks at all of them at once and touches only what differs. Entries:

* directories: ``{path, owner, group, mode}`` — created (parents as root 0755, like ``file: state=directory``)
  or their attributes set;
* files: ``{path, owner, group, mode}`` plus either ``content`` (text) or ``copy_from`` (a file on the same host,
  e.g. a verified key blob kept as ``.previous``) — written atomically (files.atomic_write) only when the bytes
  differ; attributes set otherwise;
* links: ``{path, src, owner, group}`` — a symbolic link ``path`` -> ``src`` (taken as it is: relative to the link's
  directory when relative, and not required to exist). A missing or wrong link is made as a temporary link in the
  same directory and renamed over ``path``: a reader sees the old target or the new one, never no link. The link's
  own owner/group are set (lchown); a link has no mode. A file or directory where the link should be is refused.

Directories are applied first, then files, then links (in the order given). ``plan()`` says what would change
(check mode stops there), ``apply()`` does it; every entry is checked (owners, groups, kinds, copy sources) before
anything changes. The diff lists each changed path's attributes before and after (and a content digest, or a link's
target); file contents only for entries with ``show_diff`` (text the operator wants to see: a unit, a script, a
public bundle) — never the copies, which include TPM key blobs.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import binascii
import errno
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
    if stat.S_ISLNK(st.st_mode):
        return "link -> %s %d:%d" % (os.readlink(path), st.st_uid, st.st_gid)
    kind = "directory" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode) else "other"
    line = "%s %04o %d:%d" % (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    if kind == "file":
        data = files.read_bytes(path)
        line += " sha256:%s" % hashlib.sha256(data or b"").hexdigest()[:16]
    return line


def _kind_of(st):
    if stat.S_ISDIR(st.st_mode):
        return "a directory"
    if stat.S_ISREG(st.st_mode):
        return "a regular file"
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link"
    return "not a regular file, directory or link"


def replace_link(path, src, uid=-1, gid=-1):
    """Point the symbolic link ``path`` at ``src``: a temporary link in the same directory (owner set first), renamed
    over ``path``. rename() replaces a link, never follows it; a reader sees the old target or the new one."""
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise SpireTpmError("directory %s does not exist" % directory,
                            "create it first (list it under 'directories' of the same call) or choose another path")
    for _attempt in range(100):
        tmp = os.path.join(directory, ".%s.%s.tmp" % (os.path.basename(path),
                                                      binascii.hexlify(os.urandom(6)).decode("ascii")))
        try:
            os.symlink(src, tmp)
            break
        except OSError as err:
            if err.errno != errno.EEXIST:
                raise
    else:
        raise SpireTpmError("cannot find a free temporary name for the link %s" % path,
                            "remove stale .%s.*.tmp links from %s" % (os.path.basename(path), directory))
    with files.discard_on_failure(tmp):
        if uid != -1 or gid != -1:
            os.lchown(tmp, uid, gid)
        os.rename(tmp, path)


class Entry:
    def __init__(self, spec, kind):
        self.kind = kind
        self.path = spec.get("path")
        if not self.path or not isinstance(self.path, str) or not os.path.isabs(self.path):
            raise SpireTpmError("%s entry %r: path must be an absolute path" % (kind, self.path),
                                "give every entry an absolute 'path'")
        self.path = os.path.normpath(self.path)
        self.owner = spec.get("owner")
        self.group = spec.get("group")
        self.content = spec.get("content")
        self.copy_from = spec.get("copy_from")
        self.show_diff = bool(spec.get("show_diff", False))
        self.src = spec.get("src")
        if kind == "link":
            self.mode = None
            if spec.get("mode") is not None:
                raise SpireTpmError("link entry %s has a mode" % self.path,
                                    "drop 'mode': a symbolic link has no permissions of its own (its target's count)")
            if not self.src or not isinstance(self.src, str) or "\0" in self.src:
                raise SpireTpmError("link entry %s needs 'src', the path the link points to" % self.path,
                                    "give 'src' as text, e.g. 'versions/1.15.3' (relative to the link's directory) "
                                    "or an absolute path")
            for key in ("content", "copy_from", "show_diff"):
                if spec.get(key) is not None:
                    raise SpireTpmError("link entry %s has '%s'" % (self.path, key),
                                        "a link has only path, src, owner and group; list files under 'files'")
        else:
            self.mode = files.parse_mode(spec.get("mode"), None)
            if self.mode is None:
                raise SpireTpmError("%s entry %s has no mode" % (kind, self.path),
                                    "set an explicit 'mode' (e.g. '0750'): this module never guesses permissions")
            if self.src is not None:
                raise SpireTpmError("%s entry %s has 'src'" % (kind, self.path),
                                    "list symbolic links under 'links' (a file copied from another file: 'copy_from')")
        if self.content is not None and not isinstance(self.content, (str, bytes)):
            raise SpireTpmError("file entry %s: content is a %s, not text" % (self.path, type(self.content).__name__),
                                "render it to text first (e.g. '{{ data | to_nice_json }}')")
        if kind == "file" and (self.content is None) == (self.copy_from is None):
            raise SpireTpmError("file entry %s needs exactly one of content and copy_from" % self.path,
                                "give the file's text as 'content', or a file on the host to copy as 'copy_from'")
        self._data = None
        # Resolved now: a missing user or group is an error before anything changes.
        self.uid, self.gid = files.resolve_ids(self.owner, self.group)

    def signature(self):
        return (self.kind, self.uid, self.gid, self.mode, self.content, self.copy_from, self.src)

    def wanted_bytes(self):
        if self.content is not None:
            return self.content.encode("utf-8") if not isinstance(self.content, bytes) else self.content
        data = files.read_bytes(self.copy_from)
        if data is None:
            raise SpireTpmError("cannot copy %s to %s: the source does not exist" % (self.copy_from, self.path),
                                "create the source first (or drop the entry)")
        return data

    def what_changes(self):
        """The list of what differs: 'created', 'content', 'target', 'mode', 'owner', 'group' (empty: nothing)."""
        if self.kind == "file":
            self._data = self.wanted_bytes()  # a missing copy source fails here, before anything is changed
        try:
            st = os.lstat(self.path)
        except OSError:
            return ["created"]
        if self.kind == "directory" and not stat.S_ISDIR(st.st_mode):
            raise SpireTpmError("%s exists and is not a directory (it is %s)" % (self.path, _kind_of(st)),
                                "remove or move it, or choose another path")
        if self.kind == "file" and not stat.S_ISREG(st.st_mode):
            raise SpireTpmError("%s exists and is not a regular file (it is %s)" % (self.path, _kind_of(st)),
                                "remove or move it, or choose another path")
        if self.kind == "link" and not stat.S_ISLNK(st.st_mode):
            raise SpireTpmError("%s exists and is not a symbolic link (it is %s); it is not replaced by a link"
                                % (self.path, _kind_of(st)),
                                "move it away (it may be data: file_tree never deletes a file or directory), "
                                "or choose another path")
        out = []
        if self.kind == "file" and files.read_bytes(self.path) != self._data:
            out.append("content")
        if self.kind == "link":
            if os.readlink(self.path) != self.src:
                out.append("target")
        elif stat.S_IMODE(st.st_mode) != self.mode:
            out.append("mode")
        if self.uid != -1 and st.st_uid != self.uid:
            out.append("owner")
        if self.gid != -1 and st.st_gid != self.gid:
            out.append("group")
        return out

    def apply(self, changes):
        if self.kind == "link":
            if "created" in changes or "target" in changes:
                replace_link(self.path, self.src, self.uid, self.gid)
            else:
                os.lchown(self.path, self.uid, self.gid)
            return
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
    """The directories (made first, in the order given), files and links (last) of one call."""

    def __init__(self, directories, file_specs, links=None):
        entries = [Entry(d, "directory") for d in directories or []]
        entries += [Entry(f, "file") for f in file_specs or []]
        entries += [Entry(ln, "link") for ln in links or []]
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
                                    "give the path one kind, owner, group, mode and content (or link target)")
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
            if e.kind == "link":
                after.append("%s: link -> %s %s" % (e.path, e.src, ", ".join(changes)))
            else:
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
