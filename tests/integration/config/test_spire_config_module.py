# -*- coding: utf-8 -*-
"""trustroot.spire_tpm.spire_config through ansible-playbook, with the simulator as the independent oracle."""

import json
import os
import stat
from pathlib import Path

from spcfg_support import SERVER_BIN, AGENT_BIN, pem

SECRET_TOKEN = "0f1e2d3c-join-token-never-printed"
SECRET_PASSWORD = "pa$$w\"ord-never-printed"


def _task(path, kind, config, **extra):
    args = {"path": str(path), "kind": kind, "config": config}
    args.update(extra)
    return {"name": "conf", "trustroot.spire_tpm.spire_config": args, "register": "out"}


def test_server_config_write_idempotence_check_and_diff(sim, devid, run_playbook):
    path = sim.path("conf", "server.conf")
    cfg = sim.server_config()
    cfg["plugins"]["NodeAttestor"]["tpm_devid"] = {"plugin_data": devid.server_plugin_data()}
    cfg["plugins"]["DataStore"]["sql"]["plugin_data"] = {"database_type": "postgres",
                                                         "connection_string": "dbname=spire password=%s"
                                                         % SECRET_PASSWORD}
    # check mode: reports the change, writes nothing
    r = run_playbook(tasks=[_task(path, "server", cfg)], check=True, expect_rc=0)
    res = r.task("conf")
    assert res["changed"] is True and not path.exists()
    # real run
    r = run_playbook(tasks=[_task(path, "server", cfg)], diff=True, expect_rc=0)
    res = r.task("conf")
    assert res["changed"] is True and res["backup_file"] is None
    assert res["node_attestors"] == ["join_token", "tpm_devid"]
    assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o640
    assert 'NodeAttestor "tpm_devid" {' in path.read_text()
    assert SECRET_PASSWORD.replace('"', '\\"').replace("$", "\\u0024") in path.read_text()
    # secrets: in the file, but nowhere in what Ansible printed (result, diff, invocation)
    assert "connection_string = \"********\"" in res["rendered"]
    assert "never-printed" not in r.stdout and "never-printed" not in r.stderr
    assert res["diff"]["after"].count("********") == 1 and res["diff"]["before"] == ""
    # the simulator (SPIRE's rules, independent code) accepts what the module wrote
    v = sim.cli("spire-server", "validate", "-config", path)
    assert v.returncode == 0, v.stderr
    # idempotent
    r = run_playbook(tasks=[_task(path, "server", cfg)], expect_rc=0)
    assert r.task("conf")["changed"] is False
    # a change makes a backup of the previous file
    before = path.read_text()
    cfg["server"]["log_level"] = "DEBUG"
    r = run_playbook(tasks=[_task(path, "server", cfg, mode="0600")], diff=True, expect_rc=0)
    res = r.task("conf")
    assert res["changed"] is True
    assert Path(res["backup_file"]).read_text() == before
    assert res["backup_file"].startswith(str(path) + ".") and res["backup_file"].endswith(".bak")
    assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o600
    assert '+  log_level = "DEBUG"' in r.stdout or 'log_level = \\"DEBUG\\"' in r.stdout


def test_seed_error_tpm_without_plugin_cmd(sim, run_playbook):
    path = sim.path("conf", "agent.conf")
    path.write_text("# previous\n")
    cfg = sim.agent_config(sim.server_config(), node_attestor={"tpm": {"plugin_data": {}}})
    r = run_playbook(tasks=[_task(path, "agent", cfg)])
    res = r.task("conf")
    assert r.rc != 0 and res["failed"] is True
    assert 'no built-in plugin "tpm" for type "NodeAttestor"' in res["msg"]
    assert ("tpm is the external spire-tpm-plugin: set plugin_cmd to the installed binary and plugin_checksum to "
            "its sha256, or use the built-in tpm_devid") in res["msg"]
    assert "Traceback" not in r.stdout
    assert path.read_text() == "# previous\n"


def test_validate_bin_runs_the_binary_and_reports_its_refusal(sim, run_playbook):
    path = sim.path("conf", "server.conf")
    cfg = sim.server_config()
    cfg["plugins"]["NodeAttestor"]["tpm"] = {"plugin_cmd": str(sim.path("plugins", "missing-tpm-plugin")),
                                             "plugin_checksum": "a" * 64, "plugin_data": {"hash_path": "/h"}}
    # our checks pass (the plugin binary is the target host's business); SPIRE's validate refuses to launch it
    r = run_playbook(tasks=[_task(path, "server", cfg, validate_bin=SERVER_BIN)])
    res = r.task("conf")
    assert r.rc != 0
    assert "validate rejected the configuration" in res["msg"]
    assert "failed to launch plugin: fork/exec" in res["msg"] and "no such file or directory" in res["msg"]
    assert not path.exists()
    del cfg["plugins"]["NodeAttestor"]["tpm"]
    r = run_playbook(tasks=[_task(path, "server", cfg, validate_bin=SERVER_BIN)], expect_rc=0)
    assert r.task("conf")["validated"] is True and path.exists()
    # an absent binary (first install) is skipped
    cfg["server"]["log_level"] = "WARN"
    r = run_playbook(tasks=[_task(path, "server", cfg, validate_bin=str(sim.path("no", "spire-server")))],
                     expect_rc=0)
    assert r.task("conf")["validated"] is False and r.task("conf")["changed"] is True


def test_agent_secrets_and_insecure_bootstrap(sim, run_playbook):
    path = sim.path("conf", "agent.conf")
    cfg = sim.agent_config(sim.server_config(), join_token=SECRET_TOKEN, trust_bundle_path=None,
                           insecure_bootstrap=True)
    r = run_playbook(tasks=[_task(path, "agent", cfg)])
    assert r.rc != 0 and "insecure_bootstrap is true" in r.task("conf")["msg"]
    assert SECRET_TOKEN not in r.stdout
    r = run_playbook(tasks=[_task(path, "agent", cfg, allow_insecure_bootstrap=True)], diff=True, expect_rc=0)
    res = r.task("conf")
    assert res["node_attestors"] == ["join_token"]
    assert 'join_token = "********"' in res["rendered"]
    assert SECRET_TOKEN not in r.stdout and SECRET_TOKEN in path.read_text()
    v = sim.cli("spire-agent", "validate", "-config", path)
    assert v.returncode == 0, v.stderr


def test_module_output_runs_on_the_simulator_end_to_end(sim, devid, run_playbook):
    """Server and agent configurations written by the module start the simulated daemons; the agent attests with
    tpm_devid and gets the ID SPIRE would give (leaf fingerprint computed here with openssl)."""
    import subprocess
    srv = sim.server_config(node_attestors={"join_token": {"plugin_data": {}},
                                            "tpm_devid": {"plugin_data": devid.server_plugin_data()}})
    agt = sim.agent_config(srv, node_attestor={"tpm_devid": {"plugin_data": devid.agent_plugin_data()}})
    spath, apath = sim.path("conf", "server.conf"), sim.path("conf", "agent.conf")
    r = run_playbook(tasks=[
        _task(spath, "server", srv, validate_bin=SERVER_BIN),
        dict(_task(apath, "agent", agt, validate_bin=AGENT_BIN), name="agent conf", register="aout"),
    ], expect_rc=0)
    assert r.task("conf")["validated"] and r.task("agent conf")["validated"]
    sim.start("spire-server", spath, socket_path=srv["server"]["socket_path"])
    sim.write_bundle(srv, agt)
    sim.start("spire-agent", apath, socket_path=agt["agent"]["socket_path"])
    fp = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha1"], input=pem(devid.leaf),
                        capture_output=True, check=True).stdout.decode().split("=", 1)[1].strip()
    agents = json.loads(sim.server_cli(srv, "agent", "list", "-output", "json").stdout)["agents"]
    assert [a["id"]["path"] for a in agents] == ["/spire/agent/tpm_devid/%s" % fp.replace(":", "").lower()]
