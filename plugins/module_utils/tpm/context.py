# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way into the TPM: open a connection, translate failures, flush every transient handle.

Usage (one context per operation scope, as in tpm2-pytss's own tests)::

    with open_tpm(tcti) as tpm:
        handle = tpm.track(tpm.esapi.create_primary(...)[0])   # flushed on exit, also on error
        ...

Selection order for the TCTI: the ``tcti`` argument, then ``TPM2TOOLS_TCTI``, then ``TCTI`` from the
environment, then autodetect ``/dev/tpmrm0`` → ``/dev/tpm0`` → tpm2-abrmd.

Software TPMs (swtpm) are served on a unix socket and reached with tpm2-tss's ``cmd`` TCTI, which runs a command
(through ``/bin/sh -c``) and speaks the TPM protocol over its stdin/stdout:
``cmd:socat - UNIX-CONNECT:/run/swtpm/tpm.sock``. That TCTI cannot tell at open time whether the socket is served
(the first TPM command would fail with a bare "Response is malformed"), so ``open_tpm`` checks the command and the
socket first, and a connection lost mid-way (swtpm stopped) is translated as such.

Imports nothing from Ansible: the on-host renewal job uses it as well.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import grp
import os
import pwd
import shlex
import socket
import stat

# ESYS logs errors to stderr by itself; that noise would land in Ansible's output. Must be set before the
# tss2 libraries are loaded.
os.environ.setdefault("TSS2_LOG", "all+NONE")

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError  # noqa: E402

MIN_PYTSS = (2, 3, 0)  # tpm2_pytss.cryptography (TPM-backed pyca keys) arrived in 2.3.0

try:
    from tpm2_pytss import ESAPI, TCTILdr, TSS2_Exception
    from tpm2_pytss.constants import ESYS_TR, TPM2_RC
    HAS_PYTSS = True
    PYTSS_IMPORT_ERROR = None
except ImportError as _imp_err:  # pragma: no cover - exercised by the sanity import test
    HAS_PYTSS = False
    PYTSS_IMPORT_ERROR = _imp_err

    class TSS2_Exception(Exception):  # noqa: N801 - stands in for tpm2_pytss's class when it is missing
        """Never raised: lets ``except TSS2_Exception`` compile where tpm2-pytss is absent."""

DEVICE_CANDIDATES = ("/dev/tpmrm0", "/dev/tpm0")

# The TCTI a software TPM served on a unix socket is reached with (swtpm --server type=unixio,path=...).
SOCKET_TCTI_EXAMPLE = "cmd:socat - UNIX-CONNECT:/run/swtpm/tpm.sock"
TCTI_EXAMPLES = "'device:/dev/tpmrm0', '%s', 'tabrmd' or 'swtpm:port=2321'" % SOCKET_TCTI_EXAMPLE
# socat address types that connect to a unix socket (socat's keywords are case-insensitive; UNIX = UNIX-CLIENT).
SOCAT_UNIX_ADDRESSES = ("UNIX-CONNECT", "UNIX-CLIENT", "UNIX")
# How long the socket probe waits for the kernel to accept the connection (swtpm's backlog full: go on and wait).
SOCKET_PROBE_TIMEOUT = 2.0
# TCTI response codes that mean the transport broke (peer closed, command exited, short read).
LOST_CONNECTION_RCS = (0xA000A, 0xA0011, 0xA0008)  # TSS2_TCTI_RC_IO_ERROR, _MALFORMED_RESPONSE, _NO_CONNECTION
ESYS_BAD_SEQUENCE = 0x70007  # ESYS refuses every call after a transport failure

PYTSS_INSTALL_HINT = (
    "install tpm2-pytss >= %s on the managed host: 'apt-get install python3-tpm2-pytss' where the distribution "
    "ships it new enough, else 'pip install tpm2-pytss' (needs libtss2-dev and pkg-config); the tpm_host role does this"
    % ".".join(str(v) for v in MIN_PYTSS))


def pytss_version():
    try:
        from importlib.metadata import version
        return tuple(int(p) for p in version("tpm2-pytss").split(".")[:3] if p.isdigit())
    except Exception:  # metadata missing (distro build without dist-info): trust the import
        return MIN_PYTSS


def require_pytss():
    """Raise a SpireTpmError naming the fix when tpm2-pytss is missing or too old."""
    if not HAS_PYTSS:
        raise SpireTpmError("the Python library tpm2-pytss is not importable on this host (%s)" % PYTSS_IMPORT_ERROR,
                            PYTSS_INSTALL_HINT)
    if pytss_version() < MIN_PYTSS:
        raise SpireTpmError("tpm2-pytss %s is too old" % ".".join(str(v) for v in pytss_version()),
                            PYTSS_INSTALL_HINT)


def parse_tcti(tcti):
    """Split 'name:config' into (name, config or None). 'device:/dev/tpmrm0' → ('device', '/dev/tpmrm0')."""
    if tcti is None:
        return None, None
    tcti = tcti.strip()
    if not tcti:
        raise SpireTpmError("tcti is empty", "use a TCTI such as %s" % TCTI_EXAMPLES)
    name, sep, conf = tcti.partition(":")
    if not name or any(c in name for c in "/ ="):
        raise SpireTpmError("tcti %r is not of the form name[:config]" % tcti, "use e.g. %s" % TCTI_EXAMPLES)
    if name.startswith("libtss2-tcti-"):
        name = name[len("libtss2-tcti-"):].split(".so")[0]
    return name, (conf if sep else None)


def select_tcti(tcti=None, environ=None):
    """Return (name, config, source) after applying the documented selection order."""
    environ = os.environ if environ is None else environ
    if tcti:
        name, conf = parse_tcti(tcti)
        return name, conf, "the tcti option"
    for var in ("TPM2TOOLS_TCTI", "TCTI"):
        if environ.get(var):
            name, conf = parse_tcti(environ[var])
            return name, conf, "the %s environment variable" % var
    for dev in DEVICE_CANDIDATES:
        if os.path.exists(dev):
            return "device", dev, "autodetection"
    if _abrmd_running():
        return "tabrmd", None, "autodetection"
    raise SpireTpmError(
        "no TPM found: neither /dev/tpmrm0 nor /dev/tpm0 exists and no tpm2-abrmd is running",
        "enable the TPM (TPM 2.0 / PTT / fTPM / Security Chip) in the firmware setup and boot a kernel with the "
        "tpm_tis or tpm_crb driver; for a software TPM set the 'tcti' option, e.g. '%s'" % SOCKET_TCTI_EXAMPLE)


def _abrmd_running():
    try:
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open("/proc/%s/comm" % pid) as f:
                        if f.read().strip() == "tpm2-abrmd":
                            return True
                except IOError:
                    continue
    except OSError:
        pass
    return False


def _check_device(path):
    if not os.path.exists(path):
        raise SpireTpmError("TPM device %s does not exist" % path,
                            "enable the TPM in the firmware setup, or point 'tcti' at the device that exists "
                            "(ls /dev/tpm*)")
    if not os.access(path, os.R_OK | os.W_OK):
        raise SpireTpmError(
            "permission denied opening %s as uid %d" % (path, os.getuid()),
            "use /dev/tpmrm0 and add the user to the 'tss' group (usermod -aG tss USER; new login needed), "
            "or run the task with become")


def cmd_tcti_program(conf):
    """The program a cmd TCTI runs (first word of its shell command), or None when it cannot be told."""
    try:
        words = shlex.split(conf or "")
    except ValueError:
        return None
    if not words or "=" in words[0]:  # VAR=value prefixes and other shell forms: leave them to the shell
        return None
    return words[0]


def cmd_tcti_socket(conf):
    """The unix socket a cmd TCTI's command connects to, or None.

    Recognises socat's ``UNIX-CONNECT:<path>`` (and ``UNIX-CLIENT:`` / ``UNIX:``, any case) with optional socat
    address options after a comma: ``socat - UNIX-CONNECT:/run/swtpm/tpm.sock,retry=3`` → ``/run/swtpm/tpm.sock``.
    """
    try:
        words = shlex.split(conf or "")
    except ValueError:
        return None
    for word in words[1:]:
        kind, sep, rest = word.partition(":")
        if sep and kind.upper() in SOCAT_UNIX_ADDRESSES:
            path = rest.split(",", 1)[0]
            if path:
                return path
    return None


def _which(program):
    if os.sep in program:
        return program if os.path.isfile(program) and os.access(program, os.X_OK) else None
    for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
        cand = os.path.join(d or ".", program)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def _name_of(lookup, ident):
    try:
        return lookup(ident)[0]
    except (KeyError, OverflowError):
        return str(ident)


def _kind_of(mode):
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISREG, "a regular file"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISLNK, "a symlink")):
        if test(mode):
            return kind
    return "not a socket"


def _socket_owner(st):
    return "owner %s, group %s, mode %04o" % (_name_of(pwd.getpwuid, st.st_uid), _name_of(grp.getgrgid, st.st_gid),
                                              stat.S_IMODE(st.st_mode))


def _socket_start_hint(path):
    return ("start the software TPM serving it (swtpm socket --tpm2 --server type=unixio,path=%s "
            "--flags not-need-init,startup-clear ...; the lab: 'lab/lab.py up' repairs it), or correct the socket "
            "path in the TCTI" % path)


def check_socket(path, tcti_string=None):
    """Raise a SpireTpmError when nothing can be reached on the unix socket ``path``; return None when it accepts.

    Checks existence and type, then connects without sending anything (swtpm then serves its next client).
    """
    what = "the TPM socket %s" % path + (" (TCTI %r)" % tcti_string if tcti_string else "")
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise SpireTpmError("%s does not exist: no software TPM is serving it" % what, _socket_start_hint(path))
        if e.errno == errno.EACCES:
            raise SpireTpmError(
                "permission denied looking up %s as uid %d: a directory on the way is not searchable"
                % (what, os.getuid()),
                "give the user access to the socket's directory (%s) or run the task with become"
                % os.path.dirname(path))
        raise SpireTpmError("cannot look up %s: %s" % (what, e.strerror or e), _socket_start_hint(path))
    if not stat.S_ISSOCK(st.st_mode):
        raise SpireTpmError("%s is %s, not a unix socket" % (what, _kind_of(st.st_mode)),
                            "point UNIX-CONNECT at the socket swtpm serves (its --server type=unixio,path=...)")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(SOCKET_PROBE_TIMEOUT)
    try:
        sock.connect(path)
    except socket.timeout:
        return None  # backlog full: another client holds the TPM; the TCTI's command will wait its turn
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            group = _name_of(grp.getgrgid, st.st_gid)
            if st.st_gid == 0:
                fix = ("have swtpm serve the socket to a TPM group, as /dev/tpmrm0 is (swtpm socket --server "
                       "type=unixio,path=%s,mode=0660,gid=<gid of tss>), add the user to that group (usermod -aG tss "
                       "USER; new login needed), or run the task with become" % path)
            else:
                fix = ("add the user to the socket's group %s (usermod -aG %s USER; new login needed) and let the "
                       "group read and write it (swtpm --server ...,mode=0660), or run the task with become"
                       % (group, group))
            raise SpireTpmError(
                "permission denied connecting to %s as uid %d (%s)" % (what, os.getuid(), _socket_owner(st)), fix)
        if e.errno == errno.ECONNREFUSED:
            raise SpireTpmError(
                "%s refuses connections: the socket file is left over but no swtpm is serving it (it was killed "
                "or stopped)" % what, _socket_start_hint(path))
        raise SpireTpmError("cannot connect to %s: %s" % (what, e.strerror or e), _socket_start_hint(path))
    finally:
        sock.close()
    return None


def check_cmd_tcti(conf, tcti_string):
    """Before the cmd TCTI starts its command: the command must exist and its unix socket (if any) accept."""
    if not conf or not conf.strip():
        raise SpireTpmError("the cmd TCTI %r has no command" % tcti_string,
                            "give the command that reaches the TPM, e.g. '%s'" % SOCKET_TCTI_EXAMPLE)
    program = cmd_tcti_program(conf)
    if program and not _which(program):
        raise SpireTpmError(
            "the command %r of TCTI %r is not installed (not found in PATH)" % (program, tcti_string),
            "install socat on the host (apt-get install socat / dnf install socat; the tpm_host role does this "
            "for a cmd TCTI)" if os.path.basename(program) == "socat" else "install it or give its full path")
    path = cmd_tcti_socket(conf)
    if path:
        check_socket(path, tcti_string)


def rc_of(exc):
    """The TPM/TSS response code of a TSS2_Exception with its layer bits, or None."""
    return getattr(exc, "rc", None)


def _lost_connection(rc, action, text):
    """The SpireTpmError for a transport that broke mid-way, naming the TCTI of the last TPM opened."""
    tpm = _LAST_OPENED[0]
    through = " through TCTI %r" % tpm.tcti_string if tpm is not None else ""
    if tpm is not None:
        tpm.connection_lost = True
    path = cmd_tcti_socket(tpm.tcti_conf) if tpm is not None and tpm.tcti_name == "cmd" else None
    if path:
        try:
            check_socket(path)
            now = "the socket still accepts connections: the TCTI's command exited (see its stderr)"
        except SpireTpmError as e:
            now = e.cause
        return SpireTpmError(
            "%s failed: the connection to the software TPM%s was lost (%s); now %s" % (action, through, text, now),
            "the swtpm serving %s stopped while it was in use: restart it (the lab: 'lab/lab.py up') and run the "
            "task again; check the swtpm log if it stopped by itself" % path, tpm_rc=rc)
    return SpireTpmError(
        "%s failed: the connection to the TPM%s was lost (%s)" % (action, through, text),
        "check that the TPM (or swtpm / tpm2-abrmd) is still running and reachable, then run the task again",
        tpm_rc=rc)


def describe_tss_error(exc, action):
    """Turn a TSS2_Exception into a SpireTpmError naming cause and fix."""
    rc = rc_of(exc)
    base = getattr(exc, "error", rc)
    text = str(exc)
    if rc in LOST_CONNECTION_RCS or (rc == ESYS_BAD_SEQUENCE and _LAST_OPENED[0] is not None
                                     and _LAST_OPENED[0].connection_lost):
        return _lost_connection(rc, action, text)
    if HAS_PYTSS and base is not None:
        if base == TPM2_RC.LOCKOUT:
            return SpireTpmError(
                "%s failed: the TPM is in dictionary-attack lockout (%s)" % (action, text),
                "wait for the lockout to expire or reset it with the lockout authorization: "
                "'tpm2_dictionarylockout --clear-lockout' (tpm2_getcap properties-variable shows the counters)")
        if base in (TPM2_RC.AUTH_FAIL, TPM2_RC.BAD_AUTH):
            return SpireTpmError(
                "%s failed: authorization value rejected (%s)" % (action, text),
                "check the password given (devid_password / owner or endorsement hierarchy password); repeated "
                "failures count toward the TPM's dictionary-attack lockout")
        if base == TPM2_RC.OBJECT_MEMORY:
            return SpireTpmError(
                "%s failed: the TPM is out of object slots (%s)" % (action, text),
                "another program left transient objects loaded; run 'tpm2_flushcontext -t' or use /dev/tpmrm0 "
                "(kernel resource manager)")
        if base == TPM2_RC.INTEGRITY:
            return SpireTpmError(
                "%s failed: integrity check failed (%s)" % (action, text),
                "the key blob does not belong to this parent or this TPM")
        if base == TPM2_RC.HIERARCHY:
            return SpireTpmError("%s failed: the hierarchy is disabled (%s)" % (action, text),
                                 "enable the owner/endorsement hierarchy in the firmware setup")
    return SpireTpmError("%s failed: %s" % (action, text), None, tpm_rc=rc)


# The TPM opened last in this process: describe_tss_error names its TCTI when the transport breaks. Modules and the
# renewal job are single-threaded and open one TPM at a time.
_LAST_OPENED = [None]


class TPM:
    """An open ESAPI connection that flushes every transient handle it was told about on close.

    ``track(handle)`` registers a transient handle; ``flush(handle)`` flushes one early. Closing (leaving the
    ``with`` block, also by exception) flushes the rest, then finalizes the ESAPI and TCTI.
    """

    def __init__(self, tcti=None, environ=None):
        require_pytss()
        self.tcti_name, self.tcti_conf, self.tcti_source = select_tcti(tcti, environ)
        self.tcti_string = self.tcti_name + (":" + self.tcti_conf if self.tcti_conf else "")
        if self.tcti_name == "device":
            _check_device(self.tcti_conf or "/dev/tpm0")
        elif self.tcti_name == "cmd":
            check_cmd_tcti(self.tcti_conf, self.tcti_string)
        self._transient = []
        self._tcti = None
        self.esapi = None
        self.connection_lost = False
        try:
            self._tcti = TCTILdr(self.tcti_name, self.tcti_conf)
            self.esapi = ESAPI(self._tcti)
        except TSS2_Exception as e:
            self._close_quietly()
            raise SpireTpmError(
                "cannot open the TPM through TCTI %r (from %s): %s" % (self.tcti_string, self.tcti_source, e),
                "check that the TPM (or swtpm / tpm2-abrmd) is running and reachable, the TCTI string is right, "
                "and the user may open it (member of the 'tss' group for /dev/tpmrm0)")
        except (OSError, RuntimeError, ValueError) as e:
            self._close_quietly()
            raise SpireTpmError(
                "cannot load TCTI %r (from %s): %s" % (self.tcti_string, self.tcti_source, e),
                "install the tpm2-tss TCTI library for it (libtss2-tcti-%s0) or choose another TCTI"
                % self.tcti_name)
        _LAST_OPENED[0] = self

    # --- handles -------------------------------------------------------------------------------------------
    def track(self, handle):
        """Register a transient ESYS_TR to be flushed on close; returns it for chaining."""
        self._transient.append(handle)
        return handle

    def flush(self, handle):
        """Flush one tracked transient handle now."""
        if handle in self._transient:
            self._transient.remove(handle)
        self.esapi.flush_context(handle)

    def _flush_all(self):
        while self._transient:
            h = self._transient.pop()
            if self.connection_lost:
                continue  # nothing reaches the TPM any more (a restarted swtpm forgot its transient objects)
            try:
                self.esapi.flush_context(h)
            except TSS2_Exception as e:
                if rc_of(e) in LOST_CONNECTION_RCS or rc_of(e) == ESYS_BAD_SEQUENCE:
                    self.connection_lost = True

    # --- lifecycle ----------------------------------------------------------------------------------------
    def _close_quietly(self):
        if self.esapi is not None:
            try:
                self.esapi.close()
            except Exception:
                pass
            self.esapi = None
        if self._tcti is not None:
            try:
                self._tcti.close()
            except Exception:
                pass
            self._tcti = None

    def close(self):
        if self.esapi is not None:
            self._flush_all()
        self._close_quietly()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        if exc_type is not None and HAS_PYTSS and issubclass(exc_type, TSS2_Exception):
            # Leave the translation to the caller that knows the action; a broken transport is translated here
            # when no caller did (it is never the caller's fault).
            if rc_of(exc) in LOST_CONNECTION_RCS:
                raise describe_tss_error(exc, "a TPM command")
            return False
        return False


def open_tpm(tcti=None, environ=None):
    """Open the TPM selected by ``tcti``/environment/autodetection. Use as a context manager."""
    return TPM(tcti, environ)


def set_auth(tpm, handle, password):
    """Set an authorization value (str/bytes, may be empty) on an ESYS handle."""
    if password:
        tpm.esapi.tr_set_auth(handle, password.encode("utf-8") if isinstance(password, str) else password)


OWNER = ESYS_TR.OWNER if HAS_PYTSS else None
ENDORSEMENT = ESYS_TR.ENDORSEMENT if HAS_PYTSS else None
