# -*- coding: utf-8 -*-
"""Shared pytest fixtures for trustroot.spire_tpm.

* ``swtpm_factory`` manufactures real software TPMs (swtpm) with EK certificates issued by a private local
  "manufacturer" CA (swtpm_localca), or without any, and serves each on a free TCP port. Torn down after the test.
* ``swtpm`` is one such TPM with RSA + ECC EK certificates, shared per test module.
* ``tpm2_tool`` runs tpm2-tools against a TPM: the independent oracle for our TPM code.
* ``spire_version`` is the SPIRE version the suite runs on ($SPIRE_TPM_SPIRE_VERSION, default the pinned
  default of lab/spire_build.py); ``spire_server_factory`` / ``spire_agent_factory`` start REAL spire-server /
  spire-agent processes (tests/support/spire.py) and stop them after the test.
* ``run_playbook`` runs a playbook through ``ansible-playbook`` with the collection on the path and returns the
  parsed JSON callback output, so integration tests exercise modules exactly as users do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COLLECTIONS = ROOT / ".build" / "collections"


def _ensure_collection_link():
    link = COLLECTIONS / "ansible_collections" / "trustroot" / "spire_tpm"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(ROOT)


_ensure_collection_link()
# tests/ on sys.path: shared helpers live in the package ``support`` (never import from ``conftest``: several
# conftest.py files exist and the name is ambiguous under pytest-xdist).
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))
from support.swtpm import SwTPM  # noqa: E402
from support import spire as spire_support  # noqa: E402
# Unit tests import module_utils through the collection's package path, as Ansible does.
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))
os.environ.setdefault("TSS2_LOG", "all+NONE")


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


@pytest.fixture(scope="session")
def spire_version():
    """The SPIRE version under test (built from the Go module proxy on first use, then cached)."""
    return os.environ.get("SPIRE_TPM_SPIRE_VERSION", spire_support.DEFAULT_VERSION)


@pytest.fixture
def spire_server_factory(tmp_path_factory, spire_version):
    """Start real spire-server processes: ``make(version=None, **SpireServer kwargs)`` → a started server."""
    made = []

    def make(version=None, start=True, **kwargs):
        srv = spire_support.SpireServer(tmp_path_factory.mktemp("spire-server"), version=version or spire_version,
                                        **kwargs)
        made.append(srv)
        if start:
            srv.start()
        return srv

    yield make
    for srv in made:
        srv.cleanup()


@pytest.fixture
def spire_agent_factory(tmp_path_factory):
    """Start real spire-agent processes: ``make(server, node_attestor, start=True, **kwargs)``."""
    made = []

    def make(server, node_attestor, start=True, **kwargs):
        agent = spire_support.SpireAgent(tmp_path_factory.mktemp("spire-agent"), server, node_attestor, **kwargs)
        made.append(agent)
        if start:
            agent.start()
        return agent

    yield make
    for agent in made:
        agent.cleanup()


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
            # ansible-core has no JSON stdout callback: tests ship their own (tests/callback_plugins).
            "ANSIBLE_STDOUT_CALLBACK": "json_results",
            "ANSIBLE_CALLBACK_PLUGINS": str(ROOT / "tests" / "callback_plugins"),
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
