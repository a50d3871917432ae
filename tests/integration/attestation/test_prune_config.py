"""spire_server's spire_server_prune_attested_nodes_expired_for, rendered by the role and run by the real server.

The role's own config task (tasks_from: config.yml: defaults + vars/main.yml → spire_config → the real
``spire-server validate``) writes server.conf; the real server is started from it and must announce its periodic
prune with the configured window. What the prune then does (deletes the stale record of a renewed DevID once its
SVID expired longer ago than the window) takes SPIRE 45 to 75 minutes per round (not configurable): that was
observed once by hand on both versions (see the report of issue 11), not here; test_renewal.py proves the prompt
clean-up (the devid_provision role's eviction).
"""

from __future__ import annotations

import grp
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from attest_testlib import FQCN, SPIRE_VERSIONS, wait_for
from support import spire as spire_support

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "config"))
import realspire as R  # noqa: E402


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="sppr-", dir="/tmp")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


def server_vars(base, version, sock, **extra):
    root = base / "opt-spire"
    bindir = root / "versions" / version / "bin"
    bindir.mkdir(parents=True)
    (bindir / "spire-server").symlink_to(spire_support.binaries(version) / "spire-server")
    for d in ("etc-server", "server-data"):
        (base / d).mkdir()
    v = {"spire_version": version, "spire_server_install_root": str(root),
         "spire_server_config_dir": str(base / "etc-server"), "spire_server_data_dir": str(base / "server-data"),
         "spire_server_socket_path": str(sock), "spire_server_bind_address": "127.0.0.1",
         "spire_server_bind_port": spire_support.free_port(), "spire_server_group": grp.getgrgid(os.getgid()).gr_name,
         "spire_server_node_attestors": ["join_token"],
         # the handler the config task notifies is a no-op here (no service is installed)
         "spire_server__use_systemd": False, "spire_server_supervisor_path": "/bin/true"}
    v.update(extra)
    return v


def render(run_playbook, variables):
    r = run_playbook(tasks=[{"name": "config", "ansible.builtin.include_role": {
        "name": FQCN + "spire_server", "tasks_from": "config.yml"}, "vars": variables}])
    assert r.rc == 0, r.stdout[-3000:]
    return (Path(variables["spire_server_config_dir"]) / "server.conf").read_text()


@pytest.mark.parametrize("version", SPIRE_VERSIONS)
def test_default_window_is_rendered_and_the_real_server_prunes_with_it(version, tmp_path, run_playbook, sockdir):
    v = server_vars(tmp_path, version, sockdir / "api.sock")
    text = render(run_playbook, v)
    assert re.search(r'(?m)^\s*prune_attested_nodes_expired_for = "24h"$', text), text
    run = R.Run("server", Path(v["spire_server_config_dir"]) / "server.conf", version, v["spire_server_socket_path"],
                tmp_path / "run")
    try:
        assert run.wait(60) is True, run.log[-3000:]
        line = wait_for(lambda: [ln for ln in run.log.splitlines() if "Periodic prune of expired nodes started" in ln],
                        20)
        assert line and "expired_for=24h0m0s" in line[0] and "include_tofu=false" in line[0], run.log[-3000:]
        interval = re.search(r"retry_interval=(\d+)h(\d+)m|retry_interval=(\d+)m", line[0])
        assert interval, line[0]
        minutes = int(interval.group(1) or 0) * 60 + int(interval.group(2) or interval.group(3) or 0)
        assert 45 <= minutes <= 75, line[0]       # SPIRE's prune round: an hour ± 15 min jitter, not configurable
    finally:
        run.stop()


def test_empty_window_renders_no_pruning(spire_version, tmp_path, run_playbook, sockdir):
    v = server_vars(tmp_path, spire_version, sockdir / "api.sock", spire_server_prune_attested_nodes_expired_for="")
    text = render(run_playbook, v)
    assert "prune_attested_nodes_expired_for" not in text
    run = R.Run("server", Path(v["spire_server_config_dir"]) / "server.conf", spire_version,
                v["spire_server_socket_path"], tmp_path / "run")
    try:
        assert run.wait(60) is True, run.log[-3000:]
        assert "Periodic prune of expired nodes started" not in run.log
    finally:
        run.stop()
