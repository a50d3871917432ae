# -*- coding: utf-8 -*-
"""Software TPMs for tests and benchmarks: ``SwTPM`` wraps lab/swtpm.py (the one place that manufactures swtpm).

Each TPM gets its own manufacturer CA (root + intermediate) and is served on a unix socket, reached by our modules,
tpm2-tools and SPIRE's agent alike (``.tcti`` = ``cmd:socat - UNIX-CONNECT:<sock>``, ``.sock`` for
``tpm_device_path``). Importable as ``support.swtpm`` (tests/ is on sys.path via tests/conftest.py; bench scripts
add it themselves).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from support.labload import load

labswtpm = load("swtpm")


def dead_socket_tcti(base):
    """A TCTI pointing at a unix socket nobody serves (the 'TPM not running' case)."""
    return labswtpm.tcti(Path(base) / "nobody-serves-this.sock")


class SwTPM:
    """A manufactured and running swtpm instance on a unix socket."""

    def __init__(self, base, ek_certs=True, manufacturer=None):
        self.base = Path(base)
        self.state = self.base / "state"
        self.ek_certs = ek_certs
        self.manufacturer = manufacturer or labswtpm.Manufacturer(self.base / "localca")
        self.ca_dir = self.manufacturer.dir
        self.sock = self.base / "tpm.sock"
        self.proc_pidfile = self.base / "swtpm.pid"
        labswtpm.manufacture(self.state, self.manufacturer, ek_certs=ek_certs)
        self.start()

    @property
    def root_ca(self):
        """The local manufacturer root certificate (PEM path)."""
        return self.manufacturer.root_ca

    @property
    def intermediate_ca(self):
        """The intermediate that issues the EK certificates (PEM path)."""
        return self.manufacturer.intermediate_ca

    @property
    def tcti(self):
        return labswtpm.tcti(self.sock)

    @property
    def env(self):
        env = dict(os.environ)
        env["TPM2TOOLS_TCTI"] = self.tcti
        env["TSS2_LOG"] = "all+NONE"
        return env

    def start(self):
        labswtpm.start(self.state, self.sock, self.proc_pidfile, logfile=self.base / "swtpm.log")

    def stop(self):
        labswtpm.stop(self.proc_pidfile)

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
