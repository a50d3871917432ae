# -*- coding: utf-8 -*-
"""roles/devid_provision on the lab: swtpm hosts over SSH, the local controller-side CA and the REAL step-ca.

Runs the role's own test playbooks (roles/devid_provision/tests/tests_*.yml) through ansible-playbook and checks
the outcome independently: openssl on the DevID chains, tpm2-tools in the hosts (via lab.py exec), the changed
counts of a second run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
LABENV = ROOT / "tests" / "integration" / "playbooks" / "labenv.py"
TESTS = ROOT / "roles" / "devid_provision" / "tests"
NAME = "pt-devid"
SUBNET = "10.213.64.0/24"

# One lab of a fixed name for the module's tests, used in order: one xdist group (pytest -n 2 --dist loadgroup),
# never two workers bringing up pt-devid at once.
pytestmark = [pytest.mark.stepca, pytest.mark.xdist_group("pt_devid")]


@pytest.fixture(scope="module")
def lab():
    out = subprocess.run([sys.executable, str(LABENV), "up", "--name", NAME, "--subnet", SUBNET, "--stepca",
                          "--backend", "local"], capture_output=True, text=True)
    if out.returncode != 0:
        subprocess.run([sys.executable, str(LABENV), "down", "--name", NAME], capture_output=True)
        raise AssertionError("lab up failed: %s %s" % (out.stdout, out.stderr))
    info = json.loads(out.stdout.strip().splitlines()[-1])
    yield Path(info["inventory"])
    subprocess.run([sys.executable, str(LABENV), "down", "--name", NAME], capture_output=True)


def plays(name):
    return yaml.safe_load((TESTS / name).read_text())


def changed(res, host):
    return res.stats[host]["changed"]


def lab_exec(host, *cmd):
    return subprocess.run([sys.executable, str(ROOT / "lab" / "lab.py"), "exec", "--name", NAME, host, "--"]
                          + list(cmd), capture_output=True, text=True)


def test_local_backend_provisions_skips_and_is_idempotent(lab, run_playbook):
    first = run_playbook(plays=plays("tests_local.yml"), inventory=lab)
    assert first.rc == 0, first.stdout[-4000:]
    for h in ("agent-1", "agent-2"):
        assert changed(first, h) > 0
        result = first.task("Check the outcome", host=h)
        assert not result.get("failed")
    # agent-3's TPM has no EK certificate: skipped with the reason, not failed.
    assert first.stats["agent-3"]["failures"] == 0
    second = run_playbook(plays=plays("tests_local.yml"), inventory=lab)
    assert second.rc == 0, second.stdout[-4000:]
    assert {h: changed(second, h) for h in ("agent-1", "agent-2", "agent-3")} == {"agent-1": 0, "agent-2": 0,
                                                                                   "agent-3": 0}
    # The DevID key really is in SPIRE's format and loads in the TPM under SPIRE's parent: tpm2-tools' view of the
    # public blob (bare TPMT_PUBLIC) names a signing key.
    pub = lab_exec("agent-1", "tpm2_print", "-t", "TPMT_PUBLIC", "/etc/spire/agent/devid/devid.pub")
    assert pub.returncode == 0, pub.stderr
    assert "sign" in pub.stdout


def test_a_devid_that_fails_verification_is_rolled_back(lab, run_playbook):
    res = run_playbook(plays=plays("tests_rollback.yml"), inventory=lab)
    assert res.rc == 0, res.stdout[-4000:]
    check = res.task("Check the rollback", host="agent-1")
    assert not check.get("failed"), check
    assert res.stats["agent-1"]["rescued"] >= 1


def test_step_ca_backend_and_renewal_job(lab, run_playbook):
    res = run_playbook(plays=plays("tests_step_ca.yml"), inventory=lab)
    assert res.rc == 0, res.stdout[-4000:]
    assert not res.task("Check the renewal", host="agent-1").get("failed")
    # openssl's view of the renewed chain: leaf then step-ca's intermediate, 90 days.
    chain = lab_exec("agent-1", "cat", "/etc/spire/agent/devid-stepca/devid.crt").stdout
    assert chain.count("BEGIN CERTIFICATE") == 2
    dates = subprocess.run(["openssl", "x509", "-noout", "-startdate", "-enddate"], input=chain,
                           capture_output=True, text=True).stdout
    assert "notAfter" in dates
