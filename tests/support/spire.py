# -*- coding: utf-8 -*-
"""Real SPIRE for tests and benchmarks: spire-server and spire-agent built from the Go module proxy
(lab/spire_build.py), run on loopback with their own configs, sockets and data directories.

* ``binaries(version)``: the built bin directory (built on first use, then cached under .build/spire/).
* ``SpireServer(workdir, version=..., trust_domain=..., node_attestors={...})``: ``start()`` waits for
  ``spire-server healthcheck``; ``cli(...)`` runs any spire-server command against its API socket (``-output json``
  parsed); ``bundle_pem()``; ``stop()``; ``log_text()``.
* ``SpireAgent(workdir, server, node_attestor=("join_token", token) | ("tpm_devid", {...}))``: ``start()`` waits
  for ``spire-agent healthcheck`` (or returns the failure), ``fetch_x509()`` asks the real Workload API.

The configs are written here as plain HCL text on purpose: the harness does not use the collection's renderer, so
a renderer bug cannot hide behind it. Sockets live in short directories under /tmp (unix socket paths are limited
to 107 bytes; pytest's tmp paths can be longer).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from support.labload import load

spire_build = load("spire_build")
DEFAULT_VERSION = spire_build.DEFAULT_VERSION
NEWEST_VERSION = spire_build.NEWEST_VERSION


def binaries(version=DEFAULT_VERSION):
    """Directory holding spire-server and spire-agent of ``version`` (built once, then reused)."""
    return Path(spire_build.ensure(version, quiet=True)["bin_dir"])


def release(version=DEFAULT_VERSION):
    """The release-shaped archive: dict with archive, checksum ("sha256:<hex>"), version."""
    return spire_build.ensure(version, quiet=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hcl_value(v, indent):
    pad = "  " * indent
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(hcl_value(x, indent) for x in v) + "]"
    if isinstance(v, dict):
        inner = "".join("%s  %s = %s\n" % (pad, k, hcl_value(x, indent + 1)) for k, x in v.items())
        return "{\n" + inner + pad + "}"
    return json.dumps(str(v))


def plugin_block(ptype, name, data, indent=1):
    pad = "  " * indent
    body = "".join("%s    %s = %s\n" % (pad, k, hcl_value(v, indent + 2)) for k, v in (data or {}).items())
    return '%s%s "%s" {\n%s  plugin_data {\n%s%s  }\n%s}\n' % (pad, ptype, name, pad, body, pad, pad)


class _Daemon:
    program = None

    def __init__(self, workdir, version):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.version = version
        self.bin = binaries(version) / self.program
        self.sockdir = Path(tempfile.mkdtemp(prefix="sp-", dir="/tmp"))
        self.config = self.dir / (self.program + ".conf")
        self.log = self.dir / (self.program + ".log")
        self.proc = None
        self.extra_args = []

    def log_text(self, tail=60):
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-tail:])
        except OSError:
            return ""

    def run(self, *args, check=False, input=None, timeout=60):
        return subprocess.run([str(self.bin)] + [str(a) for a in args], capture_output=True, text=True,
                              input=input, timeout=timeout)

    def _spawn(self):
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen([str(self.bin), "run", "-config", str(self.config)] + self.extra_args,
                                     stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        logf.close()

    def healthy(self):
        out = self.run("healthcheck", "-socketPath", self.socket_path, timeout=20)
        return out.returncode == 0

    def wait_healthy(self, timeout=60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return False
            if self.healthy():
                return True
            time.sleep(0.25)
        return False

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None

    def kill(self):
        self.stop(sig=signal.SIGKILL)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.sockdir, ignore_errors=True)


class SpireServer(_Daemon):
    program = "spire-server"

    def __init__(self, workdir, version=DEFAULT_VERSION, trust_domain="example.org", node_attestors=None,
                 server_extra="", plugins_extra="", key_manager="memory", log_level="DEBUG"):
        super().__init__(workdir, version)
        self.trust_domain = trust_domain
        self.port = free_port()
        self.socket_path = self.sockdir / "api.sock"
        self.node_attestors = {"join_token": {}} if node_attestors is None else node_attestors
        self.server_extra = server_extra
        self.plugins_extra = plugins_extra
        self.key_manager = key_manager
        self.log_level = log_level
        self.data_dir = self.dir / "data"

    @property
    def address(self):
        return "127.0.0.1"

    def write_config(self):
        self.data_dir.mkdir(parents=True, exist_ok=True)
        km = ({"keys_path": str(self.data_dir / "keys.json")} if self.key_manager == "disk" else {})
        plugins = plugin_block("DataStore", "sql", {"database_type": "sqlite3",
                                                    "connection_string": str(self.data_dir / "datastore.sqlite3")})
        plugins += plugin_block("KeyManager", self.key_manager, km)
        for name, data in self.node_attestors.items():
            plugins += plugin_block("NodeAttestor", name, data)
        self.config.write_text(
            "server {\n"
            '  bind_address = "127.0.0.1"\n'
            "  bind_port = %d\n"
            '  socket_path = "%s"\n'
            '  trust_domain = "%s"\n'
            '  data_dir = "%s"\n'
            '  log_level = "%s"\n'
            "%s"
            "}\n\nplugins {\n%s%s}\n"
            % (self.port, self.socket_path, self.trust_domain, self.data_dir, self.log_level, self.server_extra,
               plugins, self.plugins_extra))

    def start(self, timeout=60.0, check=True):
        self.write_config()
        self._spawn()
        ok = self.wait_healthy(timeout)
        if check and not ok:
            raise AssertionError("spire-server did not become healthy:\n%s" % self.log_text())
        return ok

    def cli(self, *args, input=None, expect_rc=0):
        """Run ``spire-server <args> -socketPath <sock> -output json``; return the parsed JSON (or the process)."""
        out = self.run(*(list(args) + ["-socketPath", self.socket_path, "-output", "json"]), input=input)
        if expect_rc is not None and out.returncode != expect_rc:
            raise AssertionError("spire-server %s: rc=%d, expected %d\n%s%s" % (
                " ".join(map(str, args)), out.returncode, expect_rc, out.stdout, out.stderr))
        try:
            return json.loads(out.stdout) if out.stdout.strip() else {}
        except ValueError:
            return out

    def bundle_pem(self):
        out = self.run("bundle", "show", "-socketPath", self.socket_path)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def token(self, spiffe_id=None, ttl=600):
        args = ["token", "generate", "-ttl", str(ttl)]
        if spiffe_id:
            args += ["-spiffeID", spiffe_id]
        return self.cli(*args)["value"]

    def agents(self, *args):
        return self.cli("agent", "list", *args).get("agents") or []

    def agent_ids(self, *args):
        return ["spiffe://%s%s" % (a["id"]["trust_domain"], a["id"]["path"]) for a in self.agents(*args)]

    def entries(self, *args):
        return self.cli("entry", "show", *args).get("entries") or []

    def create_entries(self, entries):
        """entry create -data - with the CLI's input shape; returns the results list."""
        return self.cli("entry", "create", "-data", "-", input=json.dumps({"entries": entries}))["results"]


class SpireAgent(_Daemon):
    program = "spire-agent"

    def __init__(self, workdir, server, node_attestor, version=None, agent_extra="", log_level="DEBUG",
                 workload_attestors=("unix",)):
        super().__init__(workdir, version or server.version)
        self.server = server
        self.node_attestor = node_attestor
        self.socket_path = self.sockdir / "api.sock"
        self.admin_socket_path = self.sockdir / "admin.sock"
        # Workloads of other uids (fetch_x509(uid=...)) must reach the Workload API socket: mkdtemp made it 0700.
        os.chmod(self.sockdir, 0o755)
        self.data_dir = self.dir / "data"
        self.bundle_path = self.dir / "bootstrap.crt"
        self.agent_extra = agent_extra
        self.log_level = log_level
        self.workload_attestors = workload_attestors

    def write_config(self):
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.bundle_path.exists():
            self.bundle_path.write_text(self.server.bundle_pem())
        name, data = self.node_attestor
        join = ""
        if name == "join_token":
            join = '  join_token = "%s"\n' % data
            plugins = plugin_block("NodeAttestor", "join_token", {})
        else:
            plugins = plugin_block("NodeAttestor", name, data)
        plugins += plugin_block("KeyManager", "disk", {"directory": str(self.data_dir)})
        for w in self.workload_attestors:
            plugins += plugin_block("WorkloadAttestor", w, {})
        self.config.write_text(
            "agent {\n"
            '  data_dir = "%s"\n'
            '  log_level = "%s"\n'
            '  server_address = "%s"\n'
            "  server_port = %d\n"
            '  socket_path = "%s"\n'
            '  trust_bundle_path = "%s"\n'
            '  trust_domain = "%s"\n'
            "%s%s"
            "}\n\nplugins {\n%s}\n"
            % (self.data_dir, self.log_level, self.server.address, self.server.port, self.socket_path,
               self.bundle_path, self.server.trust_domain, join, self.agent_extra, plugins))

    def start(self, timeout=60.0, check=True):
        self.write_config()
        self._spawn()
        ok = self.wait_healthy(timeout)
        if check and not ok:
            raise AssertionError("spire-agent did not become healthy:\n%s" % self.log_text())
        return ok

    def exited(self, timeout=30.0):
        """Wait for the agent process to exit (a failed attestation ends it); return its exit code or None."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def fetch_x509(self, timeout="10s", uid=None):
        """``spire-agent api fetch x509 -output json``: the SPIFFE IDs served (or [] when none)."""
        cmd = [str(self.bin), "api", "fetch", "x509", "-socketPath", str(self.socket_path), "-timeout", timeout,
               "-output", "json"]
        if uid is not None:
            cmd = ["setpriv", "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups"] + cmd
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            return []
        return [s["spiffe_id"] for s in json.loads(out.stdout).get("svids", [])]

    def agent_data(self):
        p = self.data_dir / "agent-data.json"
        return json.loads(p.read_text()) if p.exists() else None
