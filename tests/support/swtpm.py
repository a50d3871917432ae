# -*- coding: utf-8 -*-
"""Software TPMs for tests, benchmarks and the lab: manufacture (swtpm_setup + swtpm_localca) and serve swtpm.

Importable as ``support.swtpm`` (tests/ is on sys.path via tests/conftest.py; bench scripts add it themselves).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path


def _alive(pid):
    """True while ``pid`` runs. A zombie counts as dead: PID 1 here may reap daemons late."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def free_port_pair():
    """Two consecutive free TCP ports on loopback (swtpm uses P for commands and P+1 for control)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        try:
            with socket.socket() as s2:
                s2.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no pair of free ports found")


class SwTPM:
    """A manufactured and running swtpm instance."""

    def __init__(self, base, ek_certs=True):
        self.base = Path(base)
        self.state = self.base / "state"
        self.ca_dir = self.base / "localca"
        self.state.mkdir(parents=True)
        self.ca_dir.mkdir()
        self.ek_certs = ek_certs
        self.port = None
        self.proc_pidfile = self.base / "swtpm.pid"
        self._manufacture()
        self.start()

    def _manufacture(self):
        (self.ca_dir / "localca.conf").write_text(
            "statedir = {d}\nsigningkey = {d}/signkey.pem\nissuercert = {d}/issuercert.pem\n"
            "certserial = {d}/certserial\n".format(d=self.ca_dir))
        (self.base / "setup.conf").write_text(
            "create_certs_tool = /usr/bin/swtpm_localca\n"
            "create_certs_tool_config = {c}\n"
            "create_certs_tool_options = /etc/swtpm-localca.options\n"
            "active_pcr_banks = sha256,sha1\n".format(c=self.ca_dir / "localca.conf"))
        cmd = ["swtpm_setup", "--tpm2", "--tpmstate", str(self.state), "--config", str(self.base / "setup.conf"),
               "--overwrite", "--createek"]
        if self.ek_certs:
            cmd += ["--create-ek-cert", "--create-platform-cert"]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError("swtpm_setup failed: %s %s" % (out.stdout, out.stderr))

    @property
    def root_ca(self):
        """The local manufacturer root certificate (PEM path)."""
        return self.ca_dir / "swtpm-localca-rootca-cert.pem"

    @property
    def intermediate_ca(self):
        """The intermediate that issues the EK certificates (PEM path)."""
        return self.ca_dir / "issuercert.pem"

    @property
    def tcti(self):
        return "swtpm:port=%d" % self.port

    @property
    def env(self):
        env = dict(os.environ)
        env["TPM2TOOLS_TCTI"] = self.tcti
        env["TSS2_LOG"] = "all+NONE"
        return env

    def start(self):
        self.port = free_port_pair()
        subprocess.run(
            ["swtpm", "socket", "--tpm2", "--tpmstate", "dir=%s" % self.state,
             "--server", "type=tcp,port=%d,bindaddr=127.0.0.1" % self.port,
             "--ctrl", "type=tcp,port=%d,bindaddr=127.0.0.1" % (self.port + 1),
             "--flags", "not-need-init,startup-clear", "--daemon", "--pid", "file=%s" % self.proc_pidfile],
            check=True, capture_output=True)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("swtpm did not start on port %d" % self.port)

    def stop(self):
        try:
            pid = int(self.proc_pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            return
        for _ in range(100):
            if not _alive(pid):
                return
            time.sleep(0.02)

    def restart(self):
        self.stop()
        self.start()

    def tool(self, *args, check=True, text=True):
        """Run a tpm2-tools command against this TPM (the independent oracle)."""
        out = subprocess.run(list(args), env=self.env, capture_output=True, text=text)
        if check and out.returncode != 0:
            raise AssertionError("%s failed (%d): %s" % (args, out.returncode, out.stderr))
        return out

    def transient_handles(self):
        out = self.tool("tpm2_getcap", "handles-transient").stdout
        return [line.strip("- ").strip() for line in out.splitlines() if line.strip()]
