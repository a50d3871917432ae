"""Fixtures for the SPIRE CLI modules against a REAL spire-server (helpers in spire_testlib.py).

* ``spire_server``: one started server of the suite's version (join_token node attestor), per test.
* ``server_opts``: the module options pointing at it (the real binary, its private API socket).
* ``recorder``: ``recorder(server, before_exec="")`` → a spire_testlib.Recorder (a logging wrapper of the real
  binary) whose ``.path`` is given as spire_server_bin.
"""

import pytest
from spire_testlib import Recorder, opts_for


@pytest.fixture
def spire_server(spire_server_factory):
    return spire_server_factory()


@pytest.fixture
def server_opts(spire_server):
    return opts_for(spire_server)


@pytest.fixture
def recorder(tmp_path):
    made = []

    def make(server, before_exec=""):
        rec = Recorder(tmp_path / ("bin-%d" % len(made)), server, before_exec)
        made.append(rec)
        return rec

    return make
