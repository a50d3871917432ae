# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Atomic file writes with owner/group/mode, check mode and diff support — written once for every module.

Two layers:

* ``atomic_write()`` is plain Python (no Ansible import) so the on-host renewal job shares it: it writes to a
  temporary file in the target directory, sets mode/owner before any byte is visible, fsyncs, then renames.
  A reader never sees a half-written key or certificate.
* ``ManagedFile`` wraps it for modules: compares content and attributes, honours check mode, records a diff
  once (``before``/``after``), and returns whether anything changed.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import errno
import grp
import os
import pwd
import stat
import tempfile

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError


def read_bytes(path):
    """Return the file's bytes, or None when it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except IOError as e:
        if e.errno == errno.ENOENT:
            return None
        raise SpireTpmError("cannot read %s: %s" % (path, e.strerror),
                            "check the path and that the user running the task may read it")


def resolve_ids(owner, group):
    """(uid, gid) of an owner and a group given by name or number; -1 for None (= leave as is).

    A name that does not exist raises SpireTpmError with the detail ``missing_owner`` or ``missing_group`` (the
    modules return it: the operator, or a playbook, reads which account is missing)."""
    uid = gid = -1
    if owner is not None:
        try:
            uid = int(owner) if str(owner).isdigit() else pwd.getpwnam(owner).pw_uid
        except KeyError:
            raise SpireTpmError("owner %r does not exist on this host" % owner, "create the user first or fix 'owner'",
                                missing_owner=owner)
    if group is not None:
        try:
            gid = int(group) if str(group).isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise SpireTpmError("group %r does not exist on this host" % group, "create the group first or fix 'group'",
                                missing_group=group)
    return uid, gid


def parse_mode(mode, default):
    """Accept 0o600, '0600', '600' or None (→ default); return an int."""
    if mode is None:
        return default
    if isinstance(mode, int):
        return mode
    try:
        return int(str(mode), 8)
    except ValueError:
        raise SpireTpmError("mode %r is not an octal file mode" % (mode,), "quote it as a string, e.g. '0600'")


def attributes_differ(path, mode=None, owner=None, group=None):
    """True when the existing file's mode/owner/group differ from what is asked (None = don't care)."""
    st = os.stat(path)
    uid, gid = resolve_ids(owner, group)
    if mode is not None and stat.S_IMODE(st.st_mode) != mode:
        return True
    if uid != -1 and st.st_uid != uid:
        return True
    if gid != -1 and st.st_gid != gid:
        return True
    return False


def atomic_write(path, data, mode=0o600, owner=None, group=None):
    """Write ``data`` (bytes) to ``path`` atomically with the given mode/owner/group."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(directory):
        raise SpireTpmError("directory %s does not exist" % directory,
                            "create it first (the roles do) or choose another path")
    uid, gid = resolve_ids(owner, group)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=directory)
    except OSError as e:
        raise SpireTpmError("cannot write in %s: %s" % (directory, e.strerror),
                            "run the task with become, or choose a writable path")
    with discard_on_failure(tmp):
        os.fchmod(fd, mode)
        if uid != -1 or gid != -1:
            os.fchown(fd, uid, gid)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    return True


@contextlib.contextmanager
def discard_on_failure(tmp):
    """Around the steps that prepare a temporary ``tmp`` and rename it into place: when any of them fails, ``tmp`` is
    removed (the original error is raised); a renamed ``tmp`` is no longer there to remove."""
    try:
        yield
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def as_text(data):
    """Bytes as text for a diff (a placeholder for binary data)."""
    if data is None:
        return ""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "<%d bytes of binary data>\n" % len(data)


class ManagedFile:
    """One file a module manages: content plus attributes, with check mode and a single diff record.

    ``secret=True`` keeps the content out of the diff (private key blobs, tokens).
    """

    def __init__(self, path, mode=0o644, owner=None, group=None, secret=False):
        self.path = path
        self.mode = mode
        self.owner = owner
        self.group = group
        self.secret = secret
        self.before = read_bytes(path)

    def needs_write(self, data):
        if self.before is None or self.before != data:
            return True
        return attributes_differ(self.path, self.mode, self.owner, self.group)

    def diff(self, data):
        if self.secret:
            before = "<secret, %s>\n" % ("absent" if self.before is None else "present")
            after = "<secret, %s>\n" % ("unchanged" if self.before == data else "new content")
        else:
            before, after = as_text(self.before), as_text(data)
        return {"before": before, "after": after, "before_header": self.path, "after_header": self.path}

    def write(self, data, check_mode=False):
        """Write when needed; return True when the file changed (or would, in check mode)."""
        if not self.needs_write(data):
            return False
        if not check_mode:
            atomic_write(self.path, data, self.mode, self.owner, self.group)
        return True
