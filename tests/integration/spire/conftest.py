import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "simulators"))

from spire_sim.testing import SERVER_BIN, SimServer  # noqa: E402


@pytest.fixture
def spire_sim():
    sim = SimServer()
    yield sim
    sim.cleanup()


@pytest.fixture
def server_opts(spire_sim):
    """Module options pointing at the simulator."""
    return {"spire_server_bin": SERVER_BIN, "socket_path": spire_sim.socket_path}
