"""Real step-ca fixtures: the binary is built once per session (and cached across runs), servers per module/test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parents[3])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.support.stepca import StepCA, build_step_ca  # noqa: E402


@pytest.fixture(scope="session")
def step_ca_binary():
    return build_step_ca()


@pytest.fixture(scope="module")
def step_ca(step_ca_binary, tmp_path_factory):
    """A running step-ca whose JWK provisioner allows 90-day certificates (maxTLSCertDuration 2160h).

    The provisioner key is encrypted with step's production PBES2 count (p2c 600000)."""
    ca = StepCA(tmp_path_factory.mktemp("step-ca"), binary=step_ca_binary, max_duration="2160h")
    ca.start()
    yield ca
    ca.stop()


@pytest.fixture
def step_ca_factory(step_ca_binary, tmp_path_factory):
    """Make extra step-ca instances (other claims, to stop mid-test); all are stopped after the test."""
    made = []

    def make(start=True, **kwargs):
        kwargs.setdefault("p2c", 10000)
        ca = StepCA(tmp_path_factory.mktemp("step-ca"), binary=step_ca_binary, **kwargs)
        made.append(ca)
        if start:
            ca.start()
        return ca

    yield make
    for ca in made:
        ca.stop()
