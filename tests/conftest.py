# -*- coding: utf-8 -*-
"""Shared pytest fixtures for trustroot.spire_tpm.

* ``swtpm_factory`` manufactures real software TPMs (swtpm) with EK certificates issued by a private local
  "manufacturer" CA (swtpm_localca), or without any, and serves each on a free TCP port. Torn down after the test.
* ``swtpm`` is one such TPM with RSA + ECC EK certificates, shared per test module.
* ``tpm2_tool`` runs tpm2-tools against a TPM: the independent oracle for our TPM code.
* ``run_playbook`` runs a playbook through ``ansible-playbook`` with the collection on the path and returns the
  parsed JSON callback output, so integration tests exercise modules exactly as users do.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COLLECTIONS = ROOT / ".build" / "collections"
SIMULATORS = ROOT / "tests" / "simulators"


def _ensure_collection_link():
    link = COLLECTIONS / "ansible_collections" / "trustroot" / "spire_tpm"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(ROOT)


_ensure_collection_link()
# Unit tests import module_utils through the collection's package path, as Ansible does.
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))
os.environ.setdefault("TSS2_LOG", "all+NONE")


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
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
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


@pytest.fixture
def swtpm_factory(tmp_path_factory):
    made = []

    def make(ek_certs=True):
        tpm = SwTPM(tmp_path_factory.mktemp("swtpm"), ek_certs=ek_certs)
        made.append(tpm)
        return tpm

    yield make
    for tpm in made:
        tpm.stop()


@pytest.fixture(scope="module")
def swtpm(tmp_path_factory):
    """One TPM with RSA-2048 and ECC P-384 EKs and their certificates, shared by a test module."""
    tpm = SwTPM(tmp_path_factory.mktemp("swtpm"), ek_certs=True)
    yield tpm
    tpm.stop()


def _json_callback_results(stdout):
    data = json.loads(stdout[stdout.index("{"):])
    return data


class PlaybookResult:
    def __init__(self, rc, data, stdout, stderr):
        self.rc = rc
        self.data = data
        self.stdout = stdout
        self.stderr = stderr

    def task(self, name, host="localhost"):
        """The result of the task called ``name`` on ``host`` (the last one of that name)."""
        found = None
        for play in self.data.get("plays", []):
            for task in play.get("tasks", []):
                if task["task"]["name"] == name and host in task["hosts"]:
                    found = task["hosts"][host]
        if found is None:
            raise KeyError("no task %r for host %r in the playbook output" % (name, host))
        return found

    @property
    def stats(self):
        return self.data.get("stats", {})


@pytest.fixture
def run_playbook(tmp_path):
    """Run ``tasks`` (a list of task dicts) or a whole playbook (list of plays) through ansible-playbook.

    Returns a PlaybookResult. ``check=True`` adds --check, ``diff=True`` adds --diff.
    """

    def run(tasks=None, plays=None, extra_vars=None, check=False, diff=False, env=None, inventory=None,
            expect_rc=None):
        if plays is None:
            plays = [{"hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": tasks}]
        pb = tmp_path / ("playbook-%d.yml" % time.monotonic_ns())
        pb.write_text(yaml.safe_dump(plays, sort_keys=False))
        cmd = [str(Path(sys.executable).parent / "ansible-playbook"), str(pb),
               "-e", "ansible_python_interpreter=%s" % sys.executable]
        if inventory:
            cmd += ["-i", str(inventory)]
        else:
            cmd += ["-i", "localhost,"]
        if extra_vars:
            evf = tmp_path / ("vars-%d.json" % time.monotonic_ns())
            evf.write_text(json.dumps(extra_vars))
            cmd += ["-e", "@%s" % evf]
        if check:
            cmd.append("--check")
        if diff:
            cmd.append("--diff")
        full_env = dict(os.environ)
        full_env.update({
            "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
            "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
            "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_HOST_KEY_CHECKING": "0",
            "ANSIBLE_LOCALHOST_WARNING": "0",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
            "TSS2_LOG": "all+NONE",
            "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
        })
        if env:
            full_env.update(env)
        out = subprocess.run(cmd, capture_output=True, text=True, env=full_env)
        try:
            data = _json_callback_results(out.stdout)
        except (ValueError, json.JSONDecodeError):
            raise AssertionError("ansible-playbook gave no JSON (rc=%d):\n%s\n%s" % (out.returncode, out.stdout,
                                                                                      out.stderr))
        result = PlaybookResult(out.returncode, data, out.stdout, out.stderr)
        if expect_rc is not None:
            assert out.returncode == expect_rc, "rc=%d, expected %d\n%s\n%s" % (out.returncode, expect_rc,
                                                                                out.stdout[-4000:], out.stderr[-2000:])
        return result

    return run
