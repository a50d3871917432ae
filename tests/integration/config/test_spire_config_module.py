# -*- coding: utf-8 -*-
"""trustroot.spire_tpm.spire_config through ansible-playbook, with the real SPIRE binaries as validate_bin and as the
judge of what the module wrote (the file is started with ``spire-<kind> run``)."""

import os
import stat
from pathlib import Path

import pytest

import realspire as R
from support import spire as spire_support

DEFAULT = spire_support.DEFAULT_VERSION
NEWEST = spire_support.NEWEST_VERSION
SECRET_TOKEN = "0f1e2d3c-join-token-never-printed"
SECRET_PASSWORD = "pa$$w\"ord-never-printed"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = R.World(tmp_path_factory.mktemp("module"))
    yield w
    w.cleanup()


def _task(path, kind, config, name="conf", **extra):
    args = {"path": str(path), "kind": kind, "config": config}
    args.update(extra)
    return {"name": name, "trustroot.spire_tpm.spire_config": args, "register": "out"}


def _listing(d):
    return sorted(p.name for p in Path(d).iterdir())


def test_server_config_written_idempotent_check_diff_and_started(world, run_playbook):
    workdir = world.workdir("module-server")
    path = workdir / "conf" / "server.conf"
    path.parent.mkdir()
    cfg = world.server_config(workdir)
    cfg["server"]["bind_port"] = str(cfg["server"]["bind_port"])  # as Jinja gives it; SPIRE accepts it
    vbin = R.binary("server", DEFAULT)
    # check mode: the change is reported, nothing is written
    r = run_playbook(tasks=[_task(path, "server", cfg, validate_bin=vbin)], check=True, expect_rc=0)
    res = r.task("conf")
    assert res["changed"] is True and not path.exists() and res["spire_version"] == DEFAULT
    r = run_playbook(tasks=[_task(path, "server", cfg, validate_bin=vbin)], diff=True, expect_rc=0)
    res = r.task("conf")
    assert res["changed"] is True and res["validated"] is True and res["backup_file"] is None
    assert res["node_attestors"] == ["join_token"]
    assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o640
    assert res["diff"]["before"] == "" and 'bind_port = "%s"' % cfg["server"]["bind_port"] in res["diff"]["after"]
    assert _listing(path.parent) == ["server.conf"]
    # the real server runs what the module wrote
    out = R.run_text("server", path.read_text(), DEFAULT, cfg["server"]["socket_path"], workdir / "run1")
    assert out.accepted, out
    # idempotent; a change keeps a backup of the previous file
    r = run_playbook(tasks=[_task(path, "server", cfg, validate_bin=vbin)], expect_rc=0)
    assert r.task("conf")["changed"] is False and r.task("conf")["validated"] is False
    before = path.read_text()
    cfg["server"]["log_level"] = "WARN"
    r = run_playbook(tasks=[_task(path, "server", cfg, validate_bin=vbin, mode="0600")], diff=True, expect_rc=0)
    res = r.task("conf")
    assert res["changed"] is True and res["validated"] is True
    assert Path(res["backup_file"]).read_text() == before
    assert res["backup_file"].startswith(str(path) + ".") and res["backup_file"].endswith(".bak")
    assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o600
    assert 'log_level = "WARN"' in res["diff"]["after"] and 'log_level = "DEBUG"' in res["diff"]["before"]
    out = R.run_text("server", path.read_text(), DEFAULT, cfg["server"]["socket_path"], workdir / "run2")
    assert out.accepted, out


@pytest.mark.parametrize("version", [DEFAULT, NEWEST])
def test_validate_bin_refusal_is_reported_and_nothing_written(world, run_playbook, version):
    """A setting only the binary can judge (log_file opened by SPIRE's own validate): the module fails with
    SPIRE's words, the previous file stays as it was, no backup, no temporary file."""
    workdir = world.workdir("module-validate")
    path = workdir / "conf" / "server.conf"
    path.parent.mkdir()
    path.write_text("# previous\n")
    cfg = world.server_config(workdir)
    cfg["server"]["log_file"] = "/nonexistent-dir/spire/server.log"
    ours, _why, _w = R.our_verdict("server", cfg, version=version)
    assert ours, "spire_config's own checks do not open log_file"
    r = run_playbook(tasks=[_task(path, "server", cfg, validate_bin=R.binary("server", version))])
    res = r.task("conf")
    assert r.rc != 0 and res["failed"] is True
    assert "validate rejected the configuration (exit 1)" in res["msg"]
    assert "SPIRE server configuration file is invalid" in res["msg"]
    assert "/nonexistent-dir/spire/server.log" in res["msg"] and "no such file or directory" in res["msg"]
    assert ".spire-config-validate." not in res["msg"]
    assert "Traceback" not in r.stdout
    assert path.read_text() == "# previous\n"
    assert _listing(path.parent) == ["server.conf"]
    # SPIRE agrees at run time
    run = R.run_verdict("server", cfg, version, workdir / "run")
    assert not run.accepted and "/nonexistent-dir/spire/server.log" in run.log, run


def test_newest_server_validate_refuses_plugin_data_it_can_check(world, run_playbook):
    """SPIRE 1.15's server validate also validates plugins: a missing x509pop CA bundle (a file spire_config does
    not check) is reported with SPIRE's plugin notes."""
    workdir = world.workdir("module-validate-plugins")
    path = workdir / "server.conf"
    cfg = world.server_config(workdir)
    cfg["plugins"]["NodeAttestor"]["x509pop"] = {"plugin_data": {"ca_bundle_path": "/nonexistent/ca.pem"}}
    r = run_playbook(tasks=[_task(path, "server", cfg, validate_bin=R.binary("server", NEWEST))])
    res = r.task("conf")
    assert r.rc != 0 and "validate rejected the configuration" in res["msg"], res
    assert "x509pop" in res["msg"] and "/nonexistent/ca.pem" in res["msg"]
    assert not path.exists()
    # 1.13's validate does not look at plugins: the binary is judged by run
    r = run_playbook(tasks=[_task(path, "server", cfg, validate_bin=R.binary("server", DEFAULT))], expect_rc=0)
    assert r.task("conf")["validated"] is True
    assert not R.run_text("server", path.read_text(), DEFAULT, cfg["server"]["socket_path"],
                          workdir / "run").accepted


def test_version_of_validate_bin_selects_the_rules(world, run_playbook):
    """disable_jwt_svids is a SPIRE 1.15 key: refused for a 1.13 binary (before its validate runs), accepted for
    1.15 and without a binary (the union of the known versions)."""
    workdir = world.workdir("module-version")
    path = workdir / "server.conf"
    cfg = world.server_config(workdir)
    cfg["server"]["disable_jwt_svids"] = False
    r = run_playbook(tasks=[_task(path, "server", cfg, validate_bin=R.binary("server", DEFAULT))])
    res = r.task("conf")
    assert r.rc != 0 and "disable_jwt_svids" in res["msg"] and "SPIRE %s" % DEFAULT in res["msg"]
    assert "unknown configuration detected" in res["msg"] and not path.exists()
    r = run_playbook(tasks=[_task(path, "server", cfg, validate_bin=R.binary("server", NEWEST))], expect_rc=0)
    assert r.task("conf")["spire_version"] == NEWEST and r.task("conf")["validated"] is True
    path.unlink()
    r = run_playbook(tasks=[_task(path, "server", cfg, validate_bin=str(workdir / "no" / "spire-server"))],
                     expect_rc=0)
    assert r.task("conf")["spire_version"] is None and r.task("conf")["validated"] is False


def test_seed_error_tpm_without_plugin_cmd(world, run_playbook):
    workdir = world.workdir("module-seed")
    path = workdir / "agent.conf"
    path.write_text("# previous\n")
    cfg = world.agent_config(DEFAULT, workdir)
    cfg["plugins"]["NodeAttestor"] = {"tpm": {"plugin_data": {}}}
    r = run_playbook(tasks=[_task(path, "agent", cfg, validate_bin=R.binary("agent", DEFAULT))])
    res = r.task("conf")
    assert r.rc != 0 and res["failed"] is True
    assert 'no built-in plugin "tpm" for type "NodeAttestor"' in res["msg"]
    assert ("tpm is the external spire-tpm-plugin: set plugin_cmd to the installed binary and plugin_checksum to "
            "its sha256, or use the built-in tpm_devid") in res["msg"]
    assert "Traceback" not in r.stdout
    assert path.read_text() == "# previous\n"
    # SPIRE's agent validate lets it through; only run says no
    ok, _out = R.validate_verdict("agent", cfg, DEFAULT, workdir)
    assert ok
    run = R.run_verdict("agent", cfg, DEFAULT, workdir / "run")
    assert not run.accepted and 'no built-in plugin \\"tpm\\" for type \\"NodeAttestor\\"' in run.log


def test_agent_secrets_insecure_bootstrap_and_the_written_file_attests(world, run_playbook):
    workdir = world.workdir("module-agent")
    path = workdir / "agent.conf"
    cfg = world.agent_config(DEFAULT, workdir)
    token = cfg["agent"]["join_token"]
    cfg["agent"].pop("trust_bundle_path")
    cfg["agent"]["insecure_bootstrap"] = True
    vbin = R.binary("agent", DEFAULT)
    r = run_playbook(tasks=[_task(path, "agent", cfg, validate_bin=vbin)])
    assert r.rc != 0 and "insecure_bootstrap is true" in r.task("conf")["msg"]
    assert "allow_insecure_bootstrap" in r.task("conf")["msg"] and token not in r.stdout
    r = run_playbook(tasks=[_task(path, "agent", cfg, validate_bin=vbin, allow_insecure_bootstrap=True)], diff=True,
                     expect_rc=0)
    res = r.task("conf")
    assert res["node_attestors"] == ["join_token"] and res["validated"] is True
    assert 'join_token = "********"' in res["rendered"] and 'join_token = "********"' in res["diff"]["after"]
    assert token not in r.stdout and token not in r.stderr and token in path.read_text()
    run = R.run_text("agent", path.read_text(), DEFAULT, cfg["agent"]["socket_path"], workdir / "run")
    assert run.accepted, run
    assert R.agent_svid_id(cfg, workdir) == "spiffe://%s/spire/agent/join_token/%s" % (R.TD, token)


def test_secret_in_the_datastore_connection_string_is_masked(world, run_playbook):
    workdir = world.workdir("module-secret")
    path = workdir / "server.conf"
    cfg = world.server_config(workdir)
    cfg["plugins"]["DataStore"]["sql"]["plugin_data"] = {
        "database_type": "postgres", "connection_string": "dbname=spire password=%s" % SECRET_PASSWORD}
    r = run_playbook(tasks=[_task(path, "server", cfg)], diff=True, expect_rc=0)
    res = r.task("conf")
    assert 'connection_string = "********"' in res["rendered"] and res["diff"]["after"].count("********") == 1
    assert "never-printed" not in r.stdout and "never-printed" not in r.stderr
    assert SECRET_PASSWORD.replace('"', '\\"').replace("$", "\\u0024") in path.read_text()


def test_unknown_plugin_key_policy_and_override(world, run_playbook):
    workdir = world.workdir("module-plugin-key")
    path = workdir / "server.conf"
    cfg = world.server_config(workdir)
    cfg["plugins"]["KeyManager"]["memory"]["plugin_checksun"] = "00"
    r = run_playbook(tasks=[_task(path, "server", cfg)])
    msg = r.task("conf")["msg"]
    assert r.rc != 0 and "plugin_checksun" in msg and "SPIRE ignores them silently" in msg
    assert "allow_unknown_plugin_keys" in msg and not path.exists()
    r = run_playbook(tasks=[_task(path, "server", cfg, allow_unknown_plugin_keys=True,
                                  validate_bin=R.binary("server", DEFAULT))], expect_rc=0)
    assert any("plugin_checksun" in w for w in r.task("conf").get("warnings", []))
    assert R.run_text("server", path.read_text(), DEFAULT, cfg["server"]["socket_path"], workdir / "run").accepted


def test_check_files_refuses_missing_devid_files_warns_in_check_mode_and_can_be_off(world, run_playbook):
    workdir = world.workdir("module-files")
    path = workdir / "agent.conf"
    cfg = world.agent_config(DEFAULT, workdir)
    cfg["agent"].pop("join_token")
    cfg["plugins"]["NodeAttestor"] = {"tpm_devid": {"plugin_data": {
        "devid_cert_path": str(workdir / "devid.crt"), "devid_priv_path": str(workdir / "devid.priv"),
        "devid_pub_path": str(workdir / "devid.pub"), "tpm_device_path": str(workdir / "tpm.sock")}}}
    r = run_playbook(tasks=[_task(path, "agent", cfg)])
    msg = r.task("conf")["msg"]
    assert r.rc != 0 and "devid_cert_path %s" % (workdir / "devid.crt") in msg and "check_files: false" in msg
    assert not path.exists()
    r = run_playbook(tasks=[_task(path, "agent", cfg)], check=True, expect_rc=0)
    assert r.task("conf")["changed"] is True
    assert any("check mode" in w and "devid.crt" in w for w in r.task("conf")["warnings"])
    r = run_playbook(tasks=[_task(path, "agent", cfg, check_files=False)], expect_rc=0)
    assert r.task("conf")["changed"] is True and path.exists()
    # and SPIRE refuses to start on it, as spire_config said
    assert not R.run_text("agent", path.read_text(), DEFAULT, cfg["agent"]["socket_path"], workdir / "run").accepted
