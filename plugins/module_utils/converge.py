# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The convergence record: what a role's last successful run produced, so that the next run can prove "nothing to do"
in one call (the converged module's backend).

A role records, at the end of a full run, the digest of its inputs and a snapshot of every path, account and group it
manages (``record``). On the next run it asks ``check`` first and skips its body only when the check says converged.
The check hides no drift, so it re-reads everything on every call:

* each path: its type (file, directory, link, missing, other), a file's sha256, a link's target (never followed),
  mode, uid, gid (``lstat``); a directory's listing is not part of it: the role names every path it manages;
* each user: uid, primary gid and the sorted names of the groups it is in (primary included, as ``id -nG``), from
  ``pwd``/``grp`` (NSS); each group: gid and its sorted members;
* the inputs digest, and the sets of paths, users and groups asked (a role that now manages one more path is not
  converged with a record that does not know it);
* certificates (not recorded): readable, and not due for renewal by the rule devid_certificate uses
  (``stepca.issuance.is_due``, one third of the lifetime by default);
* health commands (not recorded): each must exit 0 within its timeout. Commands are skipped when anything above
  already differs (the role runs its body anyway, and a failing health check may take its whole timeout); the reasons
  say so.

Everything is evaluated (the reasons name each difference), and anything that cannot be read or parsed, the record
itself included, is a reason, never a traceback: an unreadable record means "not converged", and the role's full run
writes a new one. The record is JSON with sorted keys and no timestamps (recording the same state twice changes
nothing); it holds digests, modes and ids, never file contents.

Imports nothing from Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import grp
import hashlib
import json
import os
import pwd
import signal
import stat
import subprocess

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.accounts import user_groups
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.files import ManagedFile, atomic_write
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca.client import format_duration, parse_duration
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca.issuance import (
    is_due, not_after_of, not_before_of, renew_before_seconds)
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.x509 import (
    not_after, parse_certificates, public_key_sha256)

SCHEMA = 1
MAX_REASONS = 20
RECORD_MODE = 0o600
DIR_MODE = 0o700
DEFAULT_TIMEOUT = 10
OUTPUT_CHARS = 200
PATH_TYPES = ("file", "directory", "link", "missing", "other")

# The converged module's options but state (inputs_digest is required with state=check), shared with devid_state's
# convergence option.
CHECK_OPTIONS = dict(
    path=dict(type="str", required=True),
    inputs_digest=dict(type="str"),
    paths=dict(type="list", elements="str", default=[]),
    users=dict(type="list", elements="str", default=[]),
    groups=dict(type="list", elements="str", default=[]),
    certificates=dict(type="list", elements="dict", default=[], options=dict(
        path=dict(type="str", required=True),
        renew_before=dict(type="str"),
    )),
    commands=dict(type="list", elements="dict", default=[], options=dict(
        name=dict(type="str", required=True),
        argv=dict(type="list", elements="str", required=True),
        timeout=dict(type="int", default=DEFAULT_TIMEOUT),
    )),
)
_OTHER_FORMATS = ((stat.S_ISSOCK, "socket"), (stat.S_ISFIFO, "fifo"), (stat.S_ISCHR, "character device"),
                  (stat.S_ISBLK, "block device"))


# --- input ------------------------------------------------------------------------------------------------------

def normalize_path(path, what="path"):
    """An absolute path without '.'/'..' components, duplicate or trailing slashes ('/etc/x/' names the link itself,
    never what it points to). Raises SpireTpmError for anything else."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise SpireTpmError("%s %r is not an absolute path" % (what, path), "give it as an absolute path, e.g. "
                            "/etc/spire/agent/agent.conf")
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts) or "\0" in path:
        raise SpireTpmError("%s %r has '.' or '..' components (or a NUL byte)" % (what, path),
                            "name the path as it is, without '.' or '..'")
    return "/" + "/".join(parts)


def normalize_names(names, kind):
    """Sorted unique account names; a name with whitespace, ':' or ',' (or an empty one) raises SpireTpmError."""
    out = set()
    for name in names or []:
        if not isinstance(name, str) or not name or any(c in name for c in ":, \t\n"):
            raise SpireTpmError("%s name %r is not an account name" % (kind, name),
                                "give the %s's name as the account database has it" % kind)
        out.add(name)
    return sorted(out)


def normalize_certificates(certificates):
    """[{path, renew_before}] with each path absolute and each renew_before a duration (or None)."""
    out = []
    for item in certificates or []:
        if not isinstance(item, dict) or "path" not in item:
            raise SpireTpmError("certificates entry %r has no path" % (item,), "give each as {path: ..., "
                                "renew_before: ...}")
        renew_before = item.get("renew_before")
        if renew_before in ("", None):
            renew_before = None
        else:
            parse_duration(renew_before, "renew_before of certificate %s" % item["path"])
        out.append({"path": normalize_path(item["path"], "certificate path"), "renew_before": renew_before})
    return out


def normalize_commands(commands):
    """[{name, argv, timeout}] with a name, a non-empty argv of strings and a positive timeout (default 10 s)."""
    out = []
    for item in commands or []:
        if not isinstance(item, dict):
            raise SpireTpmError("commands entry %r is not a dict" % (item,), "give each as {name: ..., argv: [...]}")
        name, argv = item.get("name"), item.get("argv")
        if not isinstance(name, str) or not name.strip():
            raise SpireTpmError("a command has no name (argv %r)" % (argv,), "give each command a short name: the "
                                "reasons use it")
        if not isinstance(argv, (list, tuple)) or not argv or not all(isinstance(a, str) for a in argv) \
                or not argv[0]:
            raise SpireTpmError("command %r has an empty or non-string argv (%r)" % (name, argv),
                                "give argv as a list of strings, the program first (it runs without a shell)")
        timeout = item.get("timeout")
        timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
            raise SpireTpmError("command %r has timeout %r" % (name, timeout), "give the timeout as a positive "
                                "number of seconds")
        out.append({"name": name, "argv": list(argv), "timeout": timeout})
    return out


# --- snapshots --------------------------------------------------------------------------------------------------

def _attrs(st):
    return {"mode": "%04o" % stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}


def _file_sha256(path, st):
    """sha256 of the regular file at ``path`` (opened without following a link); the attributes of what was opened."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NOCTTY", 0)
                 | getattr(os, "O_NONBLOCK", 0))
    try:
        fst = os.fstat(fd)
        if not stat.S_ISREG(fst.st_mode) or (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
            return None, fst     # replaced between lstat and open: the caller takes it again
        digest = hashlib.sha256()
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            digest.update(chunk)
        return digest.hexdigest(), fst
    finally:
        os.close(fd)


def snapshot_path(path):
    """What ``path`` is now, without following links: {type, sha256 | target | format, mode, uid, gid}; {type:
    missing} when it does not exist. Raises SpireTpmError when it cannot be read."""
    for _attempt in range(3):
        try:
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                return dict(_attrs(st), type="link", target=os.readlink(path))
            if stat.S_ISDIR(st.st_mode):
                return dict(_attrs(st), type="directory")
            if stat.S_ISREG(st.st_mode):
                digest, fst = _file_sha256(path, st)
                if digest is None:
                    continue
                return dict(_attrs(fst), type="file", sha256=digest)
            fmt = next((name for test, name in _OTHER_FORMATS if test(st.st_mode)), "unknown")
            return dict(_attrs(st), type="other", format=fmt)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                return {"type": "missing"}
            if e.errno == errno.ELOOP:      # turned into a link after lstat: take it again
                continue
            raise SpireTpmError("%s cannot be read (%s)" % (path, e.strerror),
                                "run the task with become (as root), or fix the permissions on the path")
    raise SpireTpmError("%s kept changing while it was read" % path, "run the task again once it has settled")


def snapshot_user(name):
    """{uid, gid, groups} of a user (groups: the sorted names of every group it is in, primary included), or
    {missing: true}."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        return {"missing": True}
    return {"uid": pw.pw_uid, "gid": pw.pw_gid, "groups": user_groups(name)}


def snapshot_group(name):
    """{gid, members} of a group (members sorted), or {missing: true}."""
    try:
        gr = grp.getgrnam(name)
    except KeyError:
        return {"missing": True}
    return {"gid": gr.gr_gid, "members": sorted(set(gr.gr_mem))}


# --- comparisons --------------------------------------------------------------------------------------------------

def _describe_type(snap):
    kind = snap.get("type", "unknown")
    if kind == "other":
        return "a %s" % snap.get("format", "special file")
    return {"missing": "missing", "directory": "a directory", "link": "a link", "file": "a file"}.get(kind, kind)


def compare_path(path, recorded, now):
    """Short reasons why snapshot ``now`` of ``path`` differs from ``recorded`` ([] when alike)."""
    if recorded.get("type") != now.get("type"):
        return ["%s: was %s, now %s" % (path, _describe_type(recorded), _describe_type(now))]
    reasons = []
    if recorded.get("sha256") != now.get("sha256"):
        reasons.append("%s: content differs from the record" % path)
    if recorded.get("target") != now.get("target"):
        reasons.append("%s: link target differs (recorded: %s; now: %s)"
                       % (path, recorded.get("target"), now.get("target")))
    if recorded.get("format") != now.get("format"):
        reasons.append("%s: was a %s, now a %s" % (path, recorded.get("format"), now.get("format")))
    for key, label, fmt in (("mode", "mode", "%s"), ("uid", "owner", "uid %s"), ("gid", "group", "gid %s")):
        if recorded.get(key) != now.get(key):
            reasons.append("%s: %s differs (recorded: %s; now: %s)"
                           % (path, label, fmt % recorded.get(key), fmt % now.get(key)))
    known = ("type", "sha256", "target", "format", "mode", "uid", "gid")
    for key in sorted(set(recorded) | set(now)):
        if key not in known and recorded.get(key) != now.get(key):
            reasons.append("%s: %s differs from the record" % (path, key))
    return reasons


def _ids(value):
    return ",".join(value) if isinstance(value, list) else str(value)


def compare_account(kind, name, recorded, now):
    """Reasons why user/group ``name`` differs from its record: missing, uid/gid, groups/members."""
    if recorded.get("missing") or now.get("missing"):
        if bool(recorded.get("missing")) == bool(now.get("missing")):
            return []
        return ["%s %s: %s" % (kind, name, "does not exist any more" if now.get("missing")
                               else "exists now (recorded as missing)")]
    labels = {"uid": "uid", "gid": "primary gid" if kind == "user" else "gid",
              "groups": "supplementary groups", "members": "members"}
    reasons = []
    for key in sorted(set(recorded) | set(now)):
        if recorded.get(key) != now.get(key):
            reasons.append("%s %s: %s differ%s (recorded: %s; now: %s)" % (
                kind, name, labels.get(key, key), "" if key in ("groups", "members") else "s",
                _ids(recorded.get(key)), _ids(now.get(key))))
    return reasons


def compare_sets(kind, asked, recorded):
    """A reason when the set of ``kind`` asked for differs from the set recorded ([] when equal)."""
    asked, recorded = set(asked), set(recorded)
    if asked == recorded:
        return []
    parts = []
    if asked - recorded:
        parts.append("not recorded: %s" % ", ".join(sorted(asked - recorded)))
    if recorded - asked:
        parts.append("recorded but not asked: %s" % ", ".join(sorted(recorded - asked)))
    return ["%s asked differ from the record (%s)" % (kind, "; ".join(parts))]


def cap_reasons(reasons, limit=MAX_REASONS):
    """At most ``limit`` reasons, the rest counted in a last '... and N more'."""
    if len(reasons) <= limit:
        return list(reasons)
    return list(reasons[:limit - 1]) + ["... and %d more" % (len(reasons) - limit + 1)]


# --- certificates and commands -------------------------------------------------------------------------------------

def certificate_reason(path, renew_before=None, now=None, data=None):
    """None when the certificate at ``path`` (PEM chain leaf first, or DER) is readable and not due for renewal by
    devid_certificate's rule; otherwise the reason. ``data`` replaces reading the file (tests)."""
    return inspect_certificate(path, renew_before, now=now, data=data)[0]


def leaf_facts(path, leaf):
    """What a role reports of a certificate it did not have to touch, in devid_certificate's formats (serial in
    decimal, dates ISO 8601) plus the SHA-256 of its public key (devid_csr's public_key_sha256)."""
    return {"path": path, "serial": str(leaf.serial_number), "not_before": not_before_of(leaf).isoformat(),
            "not_after": not_after_of(leaf).isoformat(), "public_key_sha256": public_key_sha256(leaf.public_key())}


def inspect_certificate(path, renew_before=None, now=None, data=None):
    """(reason, facts): reason as certificate_reason(); facts (leaf_facts) whenever the leaf could be read, else
    None."""
    try:
        if data is None:
            with open(path, "rb") as f:
                data = f.read()
        chain = parse_certificates(data, path)
    except (IOError, OSError) as e:
        if e.errno == errno.ENOENT:
            return "certificate %s: missing" % path, None
        return "certificate %s: cannot be read (%s)" % (path, e.strerror), None
    except SpireTpmError as e:
        return "certificate %s: %s" % (path, e.cause.replace(path + " ", "", 1)), None
    if not chain:
        return "certificate %s: holds no certificate" % path, None
    leaf = chain[0]
    facts = leaf_facts(path, leaf)
    if not is_due(leaf, renew_before, now=now):
        return None, facts
    rule = renew_before or "a third of its lifetime, %s" % format_duration(renew_before_seconds(leaf, None))
    return "certificate %s: due for renewal (not after %s, renew before %s)" % (
        path, not_after(leaf).strftime("%Y-%m-%dT%H:%M:%SZ"), rule), facts


def _first_line(*texts):
    for text in texts:
        for line in (text or b"").decode("utf-8", "replace").splitlines():
            if line.strip():
                line = line.strip()
                return line if len(line) <= OUTPUT_CHARS else line[:OUTPUT_CHARS] + "..."
    return "no output"


def command_reason(name, argv, timeout=DEFAULT_TIMEOUT):
    """None when ``argv`` (no shell, stdin closed) exits 0 within ``timeout`` seconds; otherwise the reason. A command
    that times out is killed with its whole process group."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
    except OSError as e:
        return "command '%s' cannot be started (%s: %s)" % (name, argv[0], e.strerror)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:   # a child outside the group holds the pipes: stop waiting for it
            pass
        return "command '%s' timed out after %d s" % (name, timeout)
    if proc.returncode == 0:
        return None
    if proc.returncode < 0:
        return "command '%s' was killed by signal %d" % (name, -proc.returncode)
    return "command '%s' exited %d: %s" % (name, proc.returncode, _first_line(err, out))


# --- the record file ------------------------------------------------------------------------------------------------

def record_bytes(record):
    """The record as stored: sorted JSON, one trailing newline."""
    return (json.dumps(record, indent=1, sort_keys=True) + "\n").encode("utf-8")


def validate_record(data):
    """None when ``data`` (parsed JSON) is a record of this schema; otherwise what is wrong with it."""
    if not isinstance(data, dict):
        return "is not a JSON object"
    if data.get("schema") != SCHEMA:
        return "has schema %r, this module reads schema %d" % (data.get("schema"), SCHEMA)
    missing = [k for k in ("inputs_digest", "paths", "users", "groups") if k not in data]
    if missing:
        return "lacks %s" % ", ".join(missing)
    if not isinstance(data["inputs_digest"], str):
        return "has a non-string inputs_digest"
    for key in ("paths", "users", "groups"):
        if not isinstance(data[key], dict) or not all(isinstance(v, dict) for v in data[key].values()):
            return "has %s that are not a mapping of snapshots" % key
    if not all(v.get("type") in PATH_TYPES for v in data["paths"].values()):
        return "has a path snapshot of an unknown type"
    return None


def parse_record(raw, path):
    """(record, None) or (None, reason) for the bytes ``raw`` read from ``path`` (None = no file)."""
    if raw is None:
        return None, "no record yet"
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        return None, "record %s is not valid JSON (%s)" % (path, e)
    problem = validate_record(data)
    if problem:
        return None, "record %s %s" % (path, problem)
    return data, None


def read_record_file(path):
    """(bytes, or None when missing or unreadable; [problems with the file itself]). A record that is not a regular
    root:root 0600 file is not trusted (whoever could write it could make a role skip its work)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return None, []
        if e.errno == errno.ELOOP:
            return None, ["record %s is a symbolic link, not a file" % path]
        return None, ["record %s cannot be read (%s)" % (path, e.strerror)]
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, ["record %s is not a regular file" % path]
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError as e:
        return None, ["record %s cannot be read (%s)" % (path, e.strerror)]
    finally:
        os.close(fd)
    problems = []
    if stat.S_IMODE(st.st_mode) != RECORD_MODE or st.st_uid != 0 or st.st_gid != 0:
        problems.append("record %s is not root:root 0600 (uid %d, gid %d, mode %04o)"
                        % (path, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)))
    return b"".join(chunks), problems


def _make_parents(path):
    """Create the record's missing parent directories, 0700 root:root (existing ones are left as they are)."""
    missing = []
    parent = os.path.dirname(path)
    while parent and not os.path.isdir(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    for d in reversed(missing):
        try:
            os.mkdir(d, DIR_MODE)
            os.chown(d, 0, 0)
            os.chmod(d, DIR_MODE)
        except OSError as e:
            raise SpireTpmError("cannot create %s (%s)" % (d, e.strerror), "run the task with become (as root), or "
                                "choose a path whose parent can be created")
    return missing


# --- the record ------------------------------------------------------------------------------------------------------

class ConvergenceRecord:
    """The record at ``path`` for a role: ``check()`` compares the host with it, ``record()`` writes it, ``remove()``
    deletes it. Every argument is validated here (SpireTpmError before anything is read or changed)."""

    def __init__(self, path, inputs_digest=None, paths=(), users=(), groups=(), certificates=(), commands=()):
        self.path = normalize_path(path, "record path")
        if inputs_digest is not None and not isinstance(inputs_digest, str):
            raise SpireTpmError("inputs_digest %r is not a string" % (inputs_digest,), "pass the digest as a string "
                                "(e.g. the controller's '| hash(\"sha256\")' of the role's inputs)")
        self.inputs_digest = inputs_digest
        self.paths = sorted(set(normalize_path(p) for p in paths or []))
        if self.path in self.paths:
            raise SpireTpmError("the record %s is among the paths it records" % self.path,
                                "leave the record's own path out of 'paths'")
        self.users = normalize_names(users, "user")
        self.groups = normalize_names(groups, "group")
        self.certificates = normalize_certificates(certificates)
        self.commands = normalize_commands(commands)

    def _need_digest(self):
        if not self.inputs_digest:
            raise SpireTpmError("inputs_digest is required to check or record", "pass the digest of the role's "
                                "inputs, computed on the controller")

    def snapshot(self):
        """The record of the host now (raises SpireTpmError when a path cannot be read)."""
        self._need_digest()
        return {"schema": SCHEMA, "inputs_digest": self.inputs_digest,
                "paths": dict((p, snapshot_path(p)) for p in self.paths),
                "users": dict((u, snapshot_user(u)) for u in self.users),
                "groups": dict((g, snapshot_group(g)) for g in self.groups)}

    def check(self, now=None):
        """{converged, reasons}: read-only. ``now`` (a UTC datetime) is for tests of the renewal rule."""
        self._need_digest()
        raw, reasons = read_record_file(self.path)
        record = None
        if raw is not None or not reasons:     # a file that could not be read says so once
            record, problem = parse_record(raw, self.path)
            if problem:
                reasons.append(problem)
        if record is not None:
            reasons.extend(self._compare(record))
        certificates = []
        for cert in self.certificates:
            reason, facts = inspect_certificate(cert["path"], cert["renew_before"], now=now)
            certificates.append(facts)
            if reason:
                reasons.append(reason)
        if reasons and self.commands:
            reasons.append("commands not run (%s): the state already differs from the record"
                           % ", ".join("'%s'" % c["name"] for c in self.commands))
        else:
            for cmd in self.commands:
                reason = command_reason(cmd["name"], cmd["argv"], cmd["timeout"])
                if reason:
                    reasons.append(reason)
        return {"converged": not reasons, "reasons": cap_reasons(reasons), "certificates": certificates,
                "inputs_digest": self.inputs_digest}

    def _compare(self, record):
        reasons = []
        if record["inputs_digest"] != self.inputs_digest:
            reasons.append("inputs changed since the record")
        reasons.extend(compare_sets("paths", self.paths, record["paths"]))
        reasons.extend(compare_sets("users", self.users, record["users"]))
        reasons.extend(compare_sets("groups", self.groups, record["groups"]))
        for p in self.paths:
            if p in record["paths"]:
                try:
                    reasons.extend(compare_path(p, record["paths"][p], snapshot_path(p)))
                except SpireTpmError as e:
                    reasons.append(e.cause)
        for kind, names, snap in (("user", self.users, snapshot_user), ("group", self.groups, snapshot_group)):
            recorded = record[kind + "s"]
            for name in names:
                if name in recorded:
                    reasons.extend(compare_account(kind, name, recorded[name], snap(name)))
        return reasons

    def record(self, check_mode=False, want_diff=False):
        """Write the record of the host now: (changed, record, diff or None). Only when its bytes or attributes
        differ from the file's; nothing is written (nor a directory made) in check mode."""
        record = self.snapshot()
        data = record_bytes(record)
        managed = ManagedFile(self.path, mode=RECORD_MODE, owner=0, group=0)
        # a link at the record's path is replaced by the file (the check does not trust a link)
        changed = os.path.islink(self.path) or managed.needs_write(data)
        diff = managed.diff(data) if want_diff and changed else None
        if changed and not check_mode:
            _make_parents(self.path)
            try:
                atomic_write(self.path, data, RECORD_MODE, 0, 0)
            except OSError as e:
                raise SpireTpmError("cannot write the record %s (%s)" % (self.path, e.strerror),
                                    "run the task with become (as root)")
        return changed, record, diff

    def remove(self, check_mode=False, want_diff=False):
        """Delete the record: (changed, diff or None); changed when it existed."""
        if not os.path.lexists(self.path):
            return False, None
        diff = None
        if want_diff:
            raw, _problems = read_record_file(self.path)
            diff = {"before": (raw or b"").decode("utf-8", "replace"), "after": "",
                    "before_header": self.path, "after_header": "%s (absent)" % self.path}
        if not check_mode:
            try:
                os.unlink(self.path)
            except OSError as e:
                raise SpireTpmError("cannot remove the record %s (%s)" % (self.path, e.strerror),
                                    "run the task with become (as root)")
        return True, diff
