# -*- coding: utf-8 -*-
"""The simulator's daemon side (spire_sim/daemon.py) as subprocesses: run, validate, healthcheck, api fetch x509.

Oracles: SPIRE's own messages (from spiffe/spire sources, quoted in /work/shared/facts/spire.md), openssl for
certificate fingerprints, the helper-3 CLI (agent list, token generate, entry create) for the server's view.
"""

import hashlib
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from spcfg_support import DevIDMaterial, connectable, free_port, pem


def _openssl_sha1(cert_pem):
    out = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha1"], input=cert_pem,
                         capture_output=True, check=True).stdout.decode()
    return out.strip().split("=", 1)[1].replace(":", "").lower()


# --- validate ---------------------------------------------------------------------------------------------------

def test_validate_accepts_valid_configs_with_spire_wording(sim):
    srv = sim.server_config()
    r = sim.cli("spire-server", "validate", "-config", sim.write("server", srv))
    assert (r.returncode, r.stdout) == (0, "SPIRE server configuration file is valid.\n"), r.stderr
    agt = sim.agent_config(srv)
    r = sim.cli("spire-agent", "validate", "-config", sim.write("agent", agt))
    assert (r.returncode, r.stdout) == (0, "SPIRE agent configuration file is valid.\n"), r.stderr


def test_server_validate_and_run_refuse_builtin_tpm(sim):
    conf = sim.path("server.conf")
    srv = sim.server_config()
    text = Path(sim.write("server", srv)).read_text()
    conf.write_text(text.replace('NodeAttestor "join_token"', 'NodeAttestor "tpm"'))
    r = sim.cli("spire-server", "validate", "-config", conf)
    assert r.returncode == 1
    assert r.stderr.startswith("Could not validate configuration file: ")
    assert 'failed to load plugin "tpm": no built-in plugin "tpm" for type "NodeAttestor"' in r.stderr
    d = sim.start("spire-server", conf, socket_path=srv["server"]["socket_path"], ready=False)
    assert d.wait_exit() == 1
    assert 'no built-in plugin \\"tpm\\" for type \\"NodeAttestor\\"' in d.log
    assert not os.path.exists(srv["server"]["socket_path"])


def test_agent_validate_does_not_check_plugin_names_but_run_does(sim):
    """SPIRE's spire-agent validate only loads the config (cmd/spire-agent/cli/validate): the seed error slips
    through it and only `run` fails — the reason spire_config checks plugin names itself."""
    srv = sim.server_config()
    sim.start_server(srv)
    agt = sim.agent_config(srv)
    conf = sim.path("agent.conf")
    conf.write_text(sim.write("agent", agt).read_text().replace('NodeAttestor "join_token"', 'NodeAttestor "tpm"'))
    r = sim.cli("spire-agent", "validate", "-config", conf)
    assert r.returncode == 0 and "valid" in r.stdout
    d = sim.start("spire-agent", conf, socket_path=agt["agent"]["socket_path"], ready=False)
    assert d.wait_exit() == 1
    assert 'no built-in plugin \\"tpm\\" for type \\"NodeAttestor\\"' in d.log


@pytest.mark.parametrize("mutate,expected", [
    (lambda t: t.replace("trust_domain", "trustdomain"), "unknown configuration detected"),
    (lambda t: t.replace('  trust_domain = "example.org"\n', ""), "trust_domain must be configured"),
    (lambda t: t.replace('  data_dir = ', '  log_level = "INFO"\n  #data_dir = '), "data_dir must be configured"),
    (lambda t: t.replace("plugin_data {}", 'plugin_data {}\n    plugin_data_file = "/x"'),
     "only one of [plugin_data, plugin_data_file] can be used"),
    (lambda t: t.replace('NodeAttestor "join_token" {\n    plugin_data {}',
                         'NodeAttestor "join_token" {\n    plugin_cmd = "/bin/true"\n    plugin_data {}'),
     "the built-in join_token node attestor cannot be overridden by an external plugin"),
    (lambda t: t.replace('KeyManager "memory"', 'Keymanager "memory"'), 'unsupported plugin type "Keymanager"'),
    (lambda t: t.replace('  KeyManager "memory" {', '  KeyManager "memory" {}\n  KeyManager "memory" {'),
     'plugin "KeyManager"/"memory" declared more than once'),
    (lambda t: t.replace('KeyManager "memory"', 'KeyManager "memory" {\n    enabled = false\n  }\n  KeyManager "m2"'),
     'failed to load plugin "m2": no built-in plugin "m2" for type "KeyManager"'),
    (lambda t: t.replace('KeyManager "memory" {', 'KeyManager "memory" {\n    enabled = false'),
     'constraint not satisfied: expected exactly 1 but got 0'),
    (lambda t: t.replace('database_type = "sqlite3"', 'database_type = "sqlite"'),
     "unsupported database_type: sqlite"),
    (lambda t: t.replace('KeyManager "memory"', 'KeyManager "disk"'), "keys_path is required"),
])
def test_server_validate_rejections(sim, mutate, expected):
    conf = sim.path("server.conf")
    conf.write_text(mutate(sim.write("server", sim.server_config()).read_text()))
    r = sim.cli("spire-server", "validate", "-config", conf)
    assert r.returncode == 1 and expected in r.stderr, r.stderr


def test_server_validate_reports_plugin_notes(sim):
    srv = sim.server_config(node_attestors={"tpm_devid": {"plugin_data": {"devid_ca_path": "/nonexistent.pem"}}})
    del srv["plugins"]["DataStore"]
    conf = sim.path("server.conf")
    conf.write_text(sim.write("server", srv).read_text())
    r = sim.cli("spire-server", "validate", "-config", conf)
    assert r.returncode == 1
    assert r.stderr.startswith("SPIRE server configuration file is invalid.\nValidation errors:\n")
    assert "\tDataStore \"sql\":\n\t\t'datastore' must be configured\n" in r.stderr
    assert "endorsement_ca_path is required" in r.stderr
    assert "unable to load DevID trust bundle" in r.stderr


def test_agent_constraints_and_checksum_at_run(sim, tmp_path):
    srv = sim.server_config()
    sim.start_server(srv)
    agt = sim.agent_config(srv)
    agt["plugins"]["NodeAttestor"]["x509pop"] = {"plugin_data": {"private_key_path": "/k", "certificate_path": "/c"}}
    d = sim.start_agent(agt, ready=False)
    assert d.wait_exit() == 1
    assert 'plugin type \\"NodeAttestor\\" constraint not satisfied: expected exactly 1 but got 2' in d.log
    plugin = sim.path("plugins", "tpm_attestor_agent")
    plugin.write_text("#!/bin/sh\nexit 0\n")
    plugin.chmod(0o755)
    good = hashlib.sha256(plugin.read_bytes()).hexdigest()
    for checksum, message in (("ab" * 31, "expected checksum of length 64; got 62"),
                              ("0" * 64, "checksums did not match")):
        agt = sim.agent_config(srv, node_attestor={"tpm": {"plugin_cmd": str(plugin), "plugin_checksum": checksum,
                                                           "plugin_data": {}}})
        d = sim.start_agent(agt, ready=False)
        assert d.wait_exit() == 1 and message in d.log, d.log
    agt = sim.agent_config(srv, node_attestor={"tpm": {"plugin_cmd": str(plugin) + ".missing",
                                                       "plugin_checksum": good, "plugin_data": {}}})
    d = sim.start_agent(agt, ready=False)
    assert d.wait_exit() == 1 and "no such file or directory" in d.log


def test_expand_env_follows_go_os_expand(sim):
    srv = sim.server_config()
    text = sim.write("server", srv).read_text().replace('"example.org"', '"${SIM_TD}"')
    conf = sim.path("server-env.conf")
    conf.write_text(text)
    r = sim.cli("spire-server", "validate", "-config", conf)
    assert r.returncode == 1 and "could not parse trust_domain" in r.stderr
    env = dict(sim.env, SIM_TD="env.example")
    d = sim.start("spire-server", conf, "-expandEnv", socket_path=srv["server"]["socket_path"], env=env)
    assert json.loads((sim.registry / ("%d.json" % srv["server"]["bind_port"])).read_text())["trust_domain"] == \
        "env.example"
    d.stop()


# --- server run / healthcheck -----------------------------------------------------------------------------------

def test_server_run_healthcheck_registry_and_clean_sigterm(sim):
    srv = sim.server_config()
    hport = free_port()
    srv["health_checks"] = {"listener_enabled": True, "bind_address": "127.0.0.1", "bind_port": str(hport),
                            "live_path": "/live", "ready_path": "/ready"}
    sock = srv["server"]["socket_path"]
    r = sim.cli("spire-server", "healthcheck", "-socketPath", sock)
    assert r.returncode == 1 and r.stderr == "Error: server is unhealthy: unable to determine health\n"
    d = sim.start_server(srv)
    r = sim.cli("spire-server", "healthcheck", "-socketPath", sock, "-verbose")
    assert r.returncode == 0 and r.stdout.endswith("Server is healthy.\n")
    reg = json.loads((sim.registry / ("%d.json" % srv["server"]["bind_port"])).read_text())
    assert reg["socket_path"] == sock and reg["pid"] == d.proc.pid and reg["trust_domain"] == "example.org"
    assert list(reg["node_attestors"]) == ["join_token"]
    with socket.create_connection(("127.0.0.1", srv["server"]["bind_port"]), timeout=2):
        pass
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                          "http://127.0.0.1:%d/ready" % hport], capture_output=True, text=True)
    assert out.stdout == "200"
    # the bundle the CLI serves is the CA the daemon created for this trust domain
    bundle = sim.server_cli(srv, "bundle", "show").stdout
    assert "BEGIN CERTIFICATE" in bundle
    # a second server on the same port fails like SPIRE
    d2 = sim.start_server(dict(srv, server=dict(srv["server"], socket_path=str(sim.path("srv2", "api.sock")))),
                          ready=False)
    assert d2.wait_exit() == 1 and "address already in use" in d2.log
    assert d.stop() == 0
    assert not os.path.exists(sock)
    assert not (sim.registry / ("%d.json" % srv["server"]["bind_port"])).exists()
    assert "Server stopped gracefully" in d.log
    r = sim.cli("spire-server", "healthcheck", "-socketPath", sock)
    assert r.returncode == 1


def test_agent_healthcheck_wording_and_http_listener(sim):
    r = sim.cli("spire-agent", "healthcheck", "-socketPath", str(sim.path("none.sock")))
    assert r.returncode == 1 and r.stderr == "Agent is unhealthy: unable to determine health\n"
    srv = sim.server_config()
    sim.start_server(srv)
    hport = free_port()
    agt = sim.agent_config(srv)
    agt["health_checks"] = {"listener_enabled": True, "bind_address": "127.0.0.1", "bind_port": str(hport),
                            "live_path": "/alive"}
    sim.write_bundle(srv, agt)
    a = sim.start_agent(agt, "-joinToken", sim.token(srv))
    codes = [subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                             "http://127.0.0.1:%d%s" % (hport, p)], capture_output=True, text=True).stdout
             for p in ("/alive", "/ready", "/live")]
    assert codes == ["200", "200", "404"]
    assert a.stop() == 0


# --- join token -------------------------------------------------------------------------------------------------

def test_join_token_attestation_is_consumed_and_cached(sim, devid):
    srv = sim.server_config(node_attestors={"join_token": {"plugin_data": {}},
                                            "tpm_devid": {"plugin_data": devid.server_plugin_data()}})
    sim.start_server(srv)
    agt = sim.agent_config(srv, node_attestor={"tpm_devid": {"plugin_data": devid.agent_plugin_data()}})
    sim.write_bundle(srv, agt)
    token = sim.token(srv, "spiffe://example.org/host/host1")
    # the join token wins over the configured NodeAttestor (tpm_devid)
    a = sim.start_agent(agt, "-joinToken", token)
    agent_id = "spiffe://example.org/spire/agent/join_token/%s" % token
    agents = sim.server_json(srv, "agent", "list")["agents"]
    assert [(x["attestation_type"], x["can_reattest"], x["id"]["path"]) for x in agents] == \
        [("join_token", False, "/spire/agent/join_token/%s" % token)]
    data = json.loads((Path(agt["agent"]["data_dir"]) / "agent-data.json").read_text())
    assert data["spiffe_id"] == agent_id and data["reattestable"] is False
    r = sim.cli("spire-agent", "healthcheck", "-socketPath", agt["agent"]["socket_path"])
    assert (r.returncode, r.stdout) == (0, "Agent is healthy.\n")
    assert a.stop() == 0 and not os.path.exists(agt["agent"]["socket_path"])
    # restart without the token: the cached SVID is used, no new attestation although tpm_devid is configured
    a = sim.start_agent(agt)
    assert "loaded from cache" in a.log
    agents = sim.server_json(srv, "agent", "list")["agents"]
    assert [x["attestation_type"] for x in agents] == ["join_token"]
    a.stop()
    # a used token cannot be used again (another agent, fresh data dir)
    agt2 = sim.agent_config(srv, name="agt2")
    sim.write_bundle(srv, agt2)
    b = sim.start_agent(agt2, "-joinToken", token, ready=False)
    assert b.wait_exit() == 1
    assert "join token does not exist or has already been used" in b.log


def test_join_token_from_config_and_wrong_bundle(sim):
    srv = sim.server_config()
    sim.start_server(srv)
    token = sim.token(srv)
    agt = sim.agent_config(srv, join_token=token)
    Path(agt["agent"]["trust_bundle_path"]).write_bytes(b"")
    a = sim.start_agent(agt, ready=False)
    assert a.wait_exit() == 1 and "could not parse trust bundle" in a.log
    other = sim.server_config(name="other", td="example.org")
    sim.start_server(other)
    sim.write_bundle(other, agt)  # a bundle from another server's CA
    a = sim.start_agent(agt, ready=False)
    assert a.wait_exit() == 1 and "certificate signed by unknown authority" in a.log
    sim.write_bundle(srv, agt)
    sim.start_agent(agt)
    assert sim.server_json(srv, "agent", "list")["agents"][0]["id"]["path"].endswith(token)


def test_agent_without_server_fails(sim):
    srv = sim.server_config()
    agt = sim.agent_config(srv, insecure_bootstrap=True, trust_bundle_path=None)
    a = sim.start_agent(agt, "-joinToken", "x", ready=False)
    assert a.wait_exit() == 1 and "connection refused" in a.log


def test_evicted_join_token_agent_drops_svid_and_exits(sim):
    srv = sim.server_config()
    sim.start_server(srv)
    agt = sim.agent_config(srv)
    sim.write_bundle(srv, agt)
    token = sim.token(srv)
    a = sim.start_agent(agt, "-joinToken", token)
    r = sim.server_cli(srv, "agent", "evict", "-spiffeID", "spiffe://example.org/spire/agent/join_token/" + token)
    assert r.returncode == 0, r.stderr
    assert a.wait_exit() == 1
    assert not (Path(agt["agent"]["data_dir"]) / "agent-data.json").exists()
    assert not connectable(agt["agent"]["socket_path"])


# --- tpm_devid --------------------------------------------------------------------------------------------------

def _devid_world(sim, devid, **agent_extra):
    srv = sim.server_config(node_attestors={"join_token": {"plugin_data": {}},
                                            "tpm_devid": {"plugin_data": devid.server_plugin_data()}})
    sim.start_server(srv)
    agt = sim.agent_config(srv, node_attestor={"tpm_devid": {"plugin_data": devid.agent_plugin_data(**agent_extra)}})
    sim.write_bundle(srv, agt)
    return srv, agt


def test_tpm_devid_agent_id_and_selectors_match_openssl(sim, devid):
    srv, agt = _devid_world(sim, devid)
    sim.start_agent(agt)
    leaf_fp = _openssl_sha1(pem(devid.leaf))
    inter_fp, root_fp = _openssl_sha1(pem(devid.inter)), _openssl_sha1(pem(devid.root))
    agents = sim.server_json(srv, "agent", "list")["agents"]
    assert len(agents) == 1
    a = agents[0]
    assert a["id"] == {"trust_domain": "example.org", "path": "/spire/agent/tpm_devid/%s" % leaf_fp}
    assert a["attestation_type"] == "tpm_devid" and a["can_reattest"] is True
    assert sorted("%s:%s" % (s["type"], s["value"]) for s in a["selectors"]) == sorted([
        "tpm_devid:subject:cn:host1.example.org", "tpm_devid:issuer:cn:Test DevID Issuing CA",
        "tpm_devid:ca:fingerprint:%s" % inter_fp, "tpm_devid:ca:fingerprint:%s" % root_fp])


def test_tpm_devid_failures(sim, devid):
    srv, agt = _devid_world(sim, devid)
    # pub blob with tpm2-tools' 2-byte size prefix
    good_pub = devid.pub_path.read_bytes()
    devid.pub_path.write_bytes(len(good_pub).to_bytes(2, "big") + good_pub)
    a = sim.start_agent(agt, ready=False)
    assert a.wait_exit() == 1 and "bare TPMT_PUBLIC" in a.log
    devid.pub_path.write_bytes(good_pub)
    # certificate not from the server's devid_ca_path
    stranger = DevIDMaterial(sim.path("stranger", "x").parent)
    stranger.tpm_device_path = devid.tpm_device_path
    agt2 = sim.agent_config(srv, name="a2", node_attestor={"tpm_devid": {
        "plugin_data": dict(devid.agent_plugin_data(), devid_cert_path=str(stranger.cert_path),
                            devid_pub_path=str(stranger.pub_path))}})
    sim.write_bundle(srv, agt2)
    a = sim.start_agent(agt2, ready=False)
    assert a.wait_exit() == 1 and "certificate signed by unknown authority" in a.log
    # certificate for another key than the blobs
    agt3 = sim.agent_config(srv, name="a3", node_attestor={"tpm_devid": {
        "plugin_data": dict(devid.agent_plugin_data(), devid_pub_path=str(stranger.pub_path))}})
    sim.write_bundle(srv, agt3)
    a = sim.start_agent(agt3, ready=False)
    assert a.wait_exit() == 1 and "not the key in devid_pub_path" in a.log
    # TPM socket that does not listen
    dead = sim.path("dead-tpm.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(dead))
    s.close()
    agt4 = sim.agent_config(srv, name="a4", node_attestor={"tpm_devid": {
        "plugin_data": devid.agent_plugin_data(tpm_device_path=str(dead))}})
    sim.write_bundle(srv, agt4)
    a = sim.start_agent(agt4, ready=False)
    assert a.wait_exit() == 1 and "cannot open TPM" in a.log
    assert sim.server_json(srv, "agent", "list")["agents"] == []


def test_tpm_devid_needs_the_attestor_on_the_server(sim, devid):
    srv = sim.server_config()  # join_token only
    sim.start_server(srv)
    agt = sim.agent_config(srv, node_attestor={"tpm_devid": {"plugin_data": devid.agent_plugin_data()}})
    sim.write_bundle(srv, agt)
    a = sim.start_agent(agt, ready=False)
    assert a.wait_exit() == 1
    assert 'could not find node attestor type \\"tpm_devid\\"' in a.log


def test_tpm_devid_agent_reattests_after_eviction_and_tpm_socket_is_used(sim, devid):
    tpm_sock = sim.path("swtpm.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tpm_sock))
    listener.listen(4)
    try:
        srv, agt = _devid_world(sim, devid, tpm_device_path=str(tpm_sock))
        a = sim.start_agent(agt)
        agent_id = "spiffe://example.org/spire/agent/tpm_devid/%s" % _openssl_sha1(pem(devid.leaf))
        r = sim.server_cli(srv, "agent", "evict", "-spiffeID", agent_id)
        assert r.returncode == 0
        deadline = time.time() + 10
        while time.time() < deadline:
            agents = sim.server_json(srv, "agent", "list")["agents"]
            if agents:
                break
            time.sleep(0.2)
        assert [x["attestation_type"] for x in agents] == ["tpm_devid"]
        assert a.proc.poll() is None and "re-attesting" in a.log
    finally:
        listener.close()


# --- migration: the cached SVID keeps the old identity until agent-data.json is removed -------------------------

def test_switching_attestor_needs_agent_data_removed(sim, devid):
    srv, agt = _devid_world(sim, devid)
    token = sim.token(srv)
    join_agt = json.loads(json.dumps(agt))
    join_agt["plugins"]["NodeAttestor"] = {"join_token": {"plugin_data": {}}}
    a = sim.start_agent(join_agt, "-joinToken", token)
    a.stop()
    # config switched to tpm_devid: still the join_token identity
    a = sim.start_agent(agt)
    types = sorted(x["attestation_type"] for x in sim.server_json(srv, "agent", "list")["agents"])
    assert types == ["join_token"]
    a.stop()
    (Path(agt["agent"]["data_dir"]) / "agent-data.json").unlink()
    a = sim.start_agent(agt)
    types = sorted(x["attestation_type"] for x in sim.server_json(srv, "agent", "list")["agents"])
    assert types == ["join_token", "tpm_devid"]


# --- api fetch x509 ---------------------------------------------------------------------------------------------

def _create_entries(sim, srv, entries):
    path = sim.path("entries-%d.json" % time.monotonic_ns())
    path.write_text(json.dumps({"entries": entries}))
    out = sim.server_json(srv, "entry", "create", "-data", path)
    assert all(r["status"]["code"] == 0 for r in out["results"]), out


def test_fetch_x509_resolves_entries_through_the_node_alias(sim, devid):
    srv, agt = _devid_world(sim, devid)
    sim.start_agent(agt)
    td = "example.org"
    agent_id = "spiffe://%s/spire/agent/tpm_devid/%s" % (td, _openssl_sha1(pem(devid.leaf)))
    _create_entries(sim, srv, [
        {"spiffe_id": "spiffe://%s/node/host1" % td, "parent_id": "spiffe://%s/spire/server" % td,
         "selectors": [{"type": "tpm_devid", "value": "subject:cn:host1.example.org"}]},
        {"spiffe_id": "spiffe://%s/node/other" % td, "parent_id": "spiffe://%s/spire/server" % td,
         "selectors": [{"type": "tpm_devid", "value": "subject:cn:other.example.org"}]},
        {"spiffe_id": "spiffe://%s/app/via-alias" % td, "parent_id": "spiffe://%s/node/host1" % td,
         "selectors": [{"type": "unix", "value": "uid:0"}]},
        {"spiffe_id": "spiffe://%s/app/direct" % td, "parent_id": agent_id,
         "selectors": [{"type": "unix", "value": "uid:0"}]},
        {"spiffe_id": "spiffe://%s/app/elsewhere" % td, "parent_id": "spiffe://%s/node/other" % td,
         "selectors": [{"type": "unix", "value": "uid:0"}]},
    ])
    r = sim.cli("spire-agent", "api", "fetch", "x509", "-socketPath", agt["agent"]["socket_path"], "-output", "json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert sorted(s["spiffe_id"] for s in out["svids"]) == ["spiffe://example.org/app/direct",
                                                           "spiffe://example.org/app/via-alias"]
    assert out["simulator_agent"]["spiffe_id"] == agent_id
    assert out["simulator_agent"]["alias_ids"] == ["spiffe://example.org/node/host1"]
    # the SVID is a real certificate for the entry's ID, issued by the bundle's CA (checked with openssl)
    import base64
    svid = out["svids"][0]
    d = sim.path("fetched")
    d.mkdir(exist_ok=True)
    (d / "svid.der").write_bytes(base64.b64decode(svid["x509_svid"]))
    (d / "ca.der").write_bytes(base64.b64decode(svid["bundle"]))
    for name in ("svid", "ca"):
        subprocess.run(["openssl", "x509", "-inform", "der", "-in", str(d / (name + ".der")), "-out",
                        str(d / (name + ".pem"))], check=True)
    v = subprocess.run(["openssl", "verify", "-CAfile", str(d / "ca.pem"), str(d / "svid.pem")],
                       capture_output=True, text=True)
    assert v.returncode == 0, v.stderr
    text = subprocess.run(["openssl", "x509", "-in", str(d / "svid.pem"), "-noout", "-ext", "subjectAltName"],
                          capture_output=True, text=True).stdout
    assert svid["spiffe_id"] in text


def test_fetch_x509_without_agent_or_identity(sim):
    r = sim.cli("spire-agent", "api", "fetch", "x509", "-socketPath", str(sim.path("nope.sock")))
    assert r.returncode == 1 and "connection error" in r.stderr
    srv = sim.server_config()
    sim.start_server(srv)
    agt = sim.agent_config(srv)
    sim.write_bundle(srv, agt)
    sim.start_agent(agt, "-joinToken", sim.token(srv))
    r = sim.cli("spire-agent", "api", "fetch", "x509", "-socketPath", agt["agent"]["socket_path"])
    assert r.returncode == 1 and "no identity issued" in r.stderr


def test_daemon_main_is_callable_directly(tmp_path, capsys):
    """daemon.main(program, argv) is the documented entry point (dispatch.py calls it)."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "simulators"))
    from spire_sim import daemon
    assert daemon.main("spire-agent", ["healthcheck", "-socketPath", str(tmp_path / "x.sock")]) == 1
    assert "Agent is unhealthy" in capsys.readouterr().err
    # Go's os.Expand with SPIRE's mapping gives exactly this (checked with go1.19)
    assert daemon.expand_env("a $$ ${X} $Y $ ${} ${", {"X": "1", "Y": "2"}) == "a $ 1 2 $  "


# --- external tpm (spire-tpm-plugin) against a real software TPM ------------------------------------------------

def test_external_tpm_attestation_uses_the_ek_pubhash(sim, swtpm):
    d = sim.path("ek")
    d.mkdir(exist_ok=True)
    swtpm.tool("tpm2_nvread", "0x01c00002", "-o", str(d / "ek.der"))
    spki = subprocess.run("openssl x509 -inform der -in %s -noout -pubkey | openssl pkey -pubin -outform der"
                          % (d / "ek.der"), shell=True, capture_output=True, check=True).stdout
    pubhash = hashlib.sha256(spki).hexdigest()
    plugin = sim.path("plugins", "tpm_attestor")
    plugin.write_text("#!/bin/sh\nexit 0\n")
    plugin.chmod(0o755)
    checksum = hashlib.sha256(plugin.read_bytes()).hexdigest()
    hashes = sim.path("hashes", "x").parent
    srv = sim.server_config(node_attestors={"tpm": {"plugin_cmd": str(plugin), "plugin_checksum": checksum,
                                                    "plugin_data": {"hash_path": str(hashes)}}})
    sim.start_server(srv)
    agt = sim.agent_config(srv, node_attestor={"tpm": {"plugin_cmd": str(plugin), "plugin_checksum": checksum,
                                                       "plugin_data": {}}})
    sim.write_bundle(srv, agt)
    env = dict(sim.env, SPIRE_SIM_TPM_TCTI=swtpm.tcti)
    a = sim.start_agent(agt, ready=False, env=env)
    assert a.wait_exit() == 1 and pubhash in a.log and "could not validate EK" in a.log
    (hashes / pubhash).write_text("")
    sim.start_agent(agt, env=env)
    agents = sim.server_json(srv, "agent", "list")["agents"]
    assert [(x["id"]["path"], x["attestation_type"], x["selectors"]) for x in agents] == [
        ("/spire/agent/tpm/%s" % pubhash, "tpm", [{"type": "tpm", "value": "pub_hash:%s" % pubhash}])]


def test_agent_needs_the_server_address_to_answer(sim):
    srv = sim.server_config()
    sim.start_server(srv)
    agt = sim.agent_config(srv, server_address="127.0.0.2")  # the server listens on 127.0.0.1 only
    sim.write_bundle(srv, agt)
    a = sim.start_agent(agt, "-joinToken", sim.token(srv), ready=False)
    assert a.wait_exit() == 1 and "failed to dial dns:///127.0.0.2" in a.log and "refused" in a.log
