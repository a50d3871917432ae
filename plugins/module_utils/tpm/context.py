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

Imports nothing from Ansible: the on-host renewal job uses it as well.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

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
        raise SpireTpmError("tcti is empty", "use a TCTI such as 'device:/dev/tpmrm0' or 'swtpm:port=2321'")
    name, sep, conf = tcti.partition(":")
    if not name or any(c in name for c in "/ ="):
        raise SpireTpmError("tcti %r is not of the form name[:config]" % tcti,
                            "use e.g. 'device:/dev/tpmrm0', 'swtpm:port=2321', 'mssim:host=127.0.0.1,port=2321' or "
                            "'tabrmd'")
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
        "tpm_tis or tpm_crb driver; for a software TPM set the 'tcti' option, e.g. 'swtpm:port=2321'")


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


def rc_of(exc):
    """The TPM/TSS response code of a TSS2_Exception with its layer bits, or None."""
    return getattr(exc, "rc", None)


def describe_tss_error(exc, action):
    """Turn a TSS2_Exception into a SpireTpmError naming cause and fix."""
    rc = rc_of(exc)
    base = getattr(exc, "error", rc)
    text = str(exc)
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


class TPM:
    """An open ESAPI connection that flushes every transient handle it was told about on close.

    ``track(handle)`` registers a transient handle; ``flush(handle)`` flushes one early. Closing (leaving the
    ``with`` block, also by exception) flushes the rest, then finalizes the ESAPI and TCTI.
    """

    def __init__(self, tcti=None, environ=None):
        require_pytss()
        self.tcti_name, self.tcti_conf, self.tcti_source = select_tcti(tcti, environ)
        if self.tcti_name == "device":
            _check_device(self.tcti_conf or "/dev/tpm0")
        self.tcti_string = self.tcti_name + (":" + self.tcti_conf if self.tcti_conf else "")
        self._transient = []
        self._tcti = None
        self.esapi = None
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
            try:
                self.esapi.flush_context(h)
            except TSS2_Exception:
                pass

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
            # Leave the translation to the caller that knows the action, unless nobody did.
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
