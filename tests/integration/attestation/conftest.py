"""Fixtures of the attestation tests: the real step-ca (built once, cached) and the two SPIRE versions under test.

Everything here is real: swtpm on a unix socket, step-ca built from Debian's smallstep packages, spire-server and
spire-agent built from the Go module proxy (lab/spire_build.py; tests/support/spire.py runs them).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for _p in (HERE, HERE.parent / "devid"):           # attest_testlib, devid_testlib (DevIDCA, blob conversion)
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from support.stepca import StepCA, build_step_ca  # noqa: E402


@pytest.fixture(scope="session")
def step_ca_binary():
    return build_step_ca()


@pytest.fixture(scope="module")
def step_ca(step_ca_binary, tmp_path_factory):
    """A running step-ca whose JWK provisioner allows 90-day DevID certificates."""
    ca = StepCA(tmp_path_factory.mktemp("step-ca"), binary=step_ca_binary, max_duration="2160h", p2c=10000)
    ca.start()
    yield ca
    ca.stop()


@pytest.fixture
def uid():
    """The uid this test runs as: the workload the unix workload attestor sees when we call the Workload API."""
    return os.getuid()


def pytest_terminal_summary(terminalreporter):
    """The real SPIRE error next to our verdict, for every negative case that ran (user property ``verdicts``,
    which pytest-xdist carries back from its workers)."""
    rows = []
    for outcome in ("passed", "failed"):
        for rep in terminalreporter.stats.get(outcome, []):
            for name, value in getattr(rep, "user_properties", []):
                if name == "verdicts":
                    rows.append((outcome, value))
    if not rows:
        return
    tr = terminalreporter
    tr.section("tpm_devid verdicts: tpm_devid_verify vs the real SPIRE")
    for outcome, v in sorted(rows, key=lambda r: (r[1]["case"], r[1]["version"])):
        tr.write_line("%s [SPIRE %s, fails on the %s side]%s" % (v["case"], v["version"], v["side"],
                                                                 "" if outcome == "passed" else "  ** FAILED **"))
        tr.write_line("    ours : %s" % v["ours"])
        tr.write_line("    SPIRE: %s" % v["spire"])
