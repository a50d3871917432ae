# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one place that manufactures and serves software TPMs (swtpm), for the lab, the tests and the benchmarks.

* ``Manufacturer(ca_dir)``: a local "TPM manufacturer" CA (swtpm_localca: a root and an intermediate that issues
  the EK certificates), created on the first TPM manufactured with it; several TPMs may share one.
* ``manufacture(state_dir, manufacturer, ek_certs=True)``: ``swtpm_setup`` with an RSA-2048 EK (certificate at NV
  0x01c00002) and an ECC P-384 EK (0x01c00016) plus a platform certificate, or with no certificates at all
  (``ek_certs=False``: the real-world TPM that cannot do SPIRE's tpm_devid).
* ``start(state_dir, sock, ...)`` serves the TPM on a **unix socket** (``--server type=unixio``), the one transport
  both sides can use: SPIRE's agent (go-tpm) takes the socket as ``tpm_device_path``, tpm2-tss / tpm2-pytss /
  tpm2-tools reach it through the ``cmd`` TCTI, ``tcti(sock)`` = ``cmd:socat - UNIX-CONNECT:<sock>``.
  swtpm serves one connection at a time (a second client waits until the first closes).

Standard library only (lab/lab.py imports it; tests/support/swtpm.py wraps it).
"""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

SETUP_OPTIONS = "/etc/swtpm-localca.options"
# File names swtpm_localca gives the manufacturer's root and the intermediate that issues EK certificates.
ROOT_CA_FILE = "swtpm-localca-rootca-cert.pem"
INTERMEDIATE_CA_FILE = "issuercert.pem"


class SwtpmError(Exception):
    pass


def tcti(sock):
    """The TCTI string that reaches the swtpm serving ``sock`` (tpm2-tss's cmd TCTI through socat)."""
    return "cmd:socat - UNIX-CONNECT:%s" % sock


class Manufacturer:
    """A local manufacturer CA for swtpm_setup (swtpm_localca creates its root + intermediate on first use)."""

    def __init__(self, ca_dir):
        self.dir = Path(ca_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.setup_conf = self.dir / "swtpm_setup.conf"
        (self.dir / "localca.conf").write_text(
            "statedir = {d}\nsigningkey = {d}/signkey.pem\nissuercert = {d}/issuercert.pem\n"
            "certserial = {d}/certserial\n".format(d=self.dir))
        self.setup_conf.write_text(
            "create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = %s\n"
            "create_certs_tool_options = %s\nactive_pcr_banks = sha256,sha1\n" % (self.dir / "localca.conf",
                                                                                   SETUP_OPTIONS))

    @property
    def root_ca(self):
        """The manufacturer's root certificate (PEM path); exists once a TPM with EK certificates was made."""
        return self.dir / ROOT_CA_FILE

    @property
    def intermediate_ca(self):
        """The intermediate that issues the EK certificates (PEM path)."""
        return self.dir / INTERMEDIATE_CA_FILE

    def bundle(self, dest):
        """Root + intermediate in one PEM file (SPIRE's endorsement_ca_path has no intermediates pool)."""
        dest = Path(dest)
        dest.write_text(self.root_ca.read_text() + self.intermediate_ca.read_text())
        return dest


def manufacture(state_dir, manufacturer, ek_certs=True):
    """Create a TPM's state in ``state_dir`` (which must be empty or absent)."""
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    cmd = ["swtpm_setup", "--tpm2", "--tpmstate", str(state), "--config", str(manufacturer.setup_conf),
           "--overwrite", "--createek"]
    if ek_certs:
        cmd += ["--create-ek-cert", "--create-platform-cert"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SwtpmError("swtpm_setup failed (rc=%d): %s%s" % (out.returncode, out.stdout, out.stderr))


def read_pid(pidfile):
    try:
        return int(Path(pidfile).read_text().strip())
    except (OSError, ValueError):
        return None


def alive(pid):
    """True while ``pid`` runs. A zombie counts as dead (PID 1 may reap daemons late)."""
    if not pid:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def accepts(sock, timeout=0.3):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(sock))
        return True
    except OSError:
        return False
    finally:
        s.close()


def start(state_dir, sock, pidfile, logfile=None, netns=None, gid=None, mode="0660", timeout=10.0):
    """Serve the TPM in ``state_dir`` on the unix socket ``sock`` (daemonised; pid in ``pidfile``).

    ``gid``/``mode`` set the socket's group and permissions (like /dev/tpmrm0: root:tss 0660). ``netns`` runs
    swtpm inside that network namespace (so that the lab's ``down`` finds it with the host's processes).
    The socket is probed without sending a command: swtpm then serves the next client.
    """
    sock = Path(sock)
    if len(str(sock)) > 107:
        raise SwtpmError("unix socket path too long (%d > 107 bytes): %s" % (len(str(sock)), sock))
    sock.parent.mkdir(parents=True, exist_ok=True)
    if sock.exists() or sock.is_symlink():
        sock.unlink()
    server = "type=unixio,path=%s,mode=%s" % (sock, mode)
    if gid is not None:
        server += ",gid=%d" % gid
    cmd = ["swtpm", "socket", "--tpm2", "--tpmstate", "dir=%s" % state_dir, "--server", server,
           "--flags", "not-need-init,startup-clear", "--daemon", "--pid", "file=%s" % pidfile]
    if logfile:
        cmd += ["--log", "file=%s" % logfile]
    if netns:
        cmd = ["ip", "netns", "exec", netns] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SwtpmError("swtpm did not start (rc=%d): %s%s" % (out.returncode, out.stdout, out.stderr))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if accepts(sock):
            return
        time.sleep(0.02)
    raise SwtpmError("swtpm does not accept connections on %s%s" % (sock, " (log: %s)" % logfile if logfile else ""))


def stop(pidfile, timeout=3.0):
    """Stop the swtpm of ``pidfile`` (SIGTERM, then SIGKILL); idempotent."""
    pid = read_pid(pidfile)
    if alive(pid):
        try:
            cmdline = Path("/proc/%d/cmdline" % pid).read_bytes()
        except OSError:
            cmdline = b""
        if b"swtpm" in cmdline:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    try:
        Path(pidfile).unlink()
    except OSError:
        pass


def running(pidfile):
    pid = read_pid(pidfile)
    if not alive(pid):
        return False
    try:
        return b"swtpm" in Path("/proc/%d/cmdline" % pid).read_bytes()
    except OSError:
        return False
