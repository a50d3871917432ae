# -*- coding: utf-8 -*-
"""SPIRE's load-time rules as config.validate() applies them, secret masking, and ensure_config().

Pure functions here; that each rule is what the real SPIRE binaries do is proven row by row in
tests/integration/config/test_config_vs_spire.py (every verdict compared with ``spire-<kind> run``). Go's own
number and duration parsing is the oracle of go_parse_int / go_duration_seconds (tests/unit/config/go_parse_oracle).
"""

import copy
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire import config as C


def server():
    return {
        "server": {"trust_domain": "example.org", "bind_address": "0.0.0.0", "bind_port": 8081, "data_dir": "/d"},
        "plugins": {
            "DataStore": {"sql": {"plugin_data": {"database_type": "sqlite3", "connection_string": "/d/ds.sqlite3"}}},
            "KeyManager": {"disk": {"plugin_data": {"keys_path": "/d/keys.json"}}},
            "NodeAttestor": {"join_token": {"plugin_data": {}},
                             "tpm_devid": {"plugin_data": {"devid_ca_path": "/a", "endorsement_ca_path": "/b"}}},
        },
    }


def agent():
    return {
        "agent": {"trust_domain": "example.org", "server_address": "127.0.0.1", "server_port": 8081,
                  "data_dir": "/d", "trust_bundle_path": "/d/bundle.pem"},
        "plugins": {
            "KeyManager": {"memory": {"plugin_data": {}}},
            "NodeAttestor": {"tpm_devid": {"plugin_data": {"devid_cert_path": "/c", "devid_priv_path": "/p",
                                                           "devid_pub_path": "/u"}}},
            "WorkloadAttestor": {"unix": {"plugin_data": {}}},
        },
    }


def fails(kind, cfg, **kw):
    with pytest.raises(SpireTpmError) as e:
        C.validate(kind, cfg, **kw)
    return e.value


def test_valid_configs_pass():
    assert C.validate("server", server()) == []
    assert C.validate("agent", agent()) == []


def test_seed_error_tpm_without_plugin_cmd_is_explained():
    cfg = agent()
    cfg["plugins"]["NodeAttestor"] = {"tpm": {"plugin_data": {}}}
    err = fails("agent", cfg)
    assert 'no built-in plugin "tpm" for type "NodeAttestor"' in err.message
    assert ("tpm is the external spire-tpm-plugin: set plugin_cmd to the installed binary and plugin_checksum to "
            "its sha256, or use the built-in tpm_devid") == err.fix
    cfg = server()
    cfg["plugins"]["NodeAttestor"]["tpm"] = {"plugin_data": {"hash_path": "/h"}}
    assert 'no built-in plugin "tpm"' in fails("server", cfg).message


def test_external_tpm_with_plugin_cmd_is_accepted_and_missing_checksum_warns():
    cfg = agent()
    cfg["plugins"]["NodeAttestor"] = {"tpm": {"plugin_cmd": "/opt/spire/plugins/tpm_attestor_agent",
                                              "plugin_data": {}}}
    warnings = C.validate("agent", cfg)
    assert any("without plugin_checksum" in w for w in warnings)
    cfg["plugins"]["NodeAttestor"]["tpm"]["plugin_checksum"] = "0" * 64
    assert C.validate("agent", cfg) == []


@pytest.mark.parametrize("ptype,name", [("KeyManager", "dsik"), ("WorkloadAttestor", "unixx"),
                                        ("NodeAttestor", "tpm-devid")])
def test_unknown_builtin_names_per_type(ptype, name):
    cfg = agent()
    cfg["plugins"][ptype] = {name: {"plugin_data": {}}}
    err = fails("agent", cfg)
    assert 'no built-in plugin "%s" for type "%s"' % (name, ptype) in err.message
    assert "did you mean" in err.message


def test_server_only_plugin_names_are_refused_on_the_agent():
    cfg = agent()
    cfg["plugins"]["KeyManager"] = {"aws_kms": {"plugin_data": {}}}  # server-side only
    assert 'no built-in plugin "aws_kms" for type "KeyManager"' in fails("agent", cfg).message
    cfg = server()
    cfg["plugins"]["KeyManager"] = {"aws_kms": {"plugin_data": {"region": "x"}}}
    C.validate("server", cfg)


@pytest.mark.parametrize("checksum,expected", [("abc", "checksum is not a valid hex string"),
                                               ("a" * 63, "checksum is not a valid hex string"),
                                               ("a" * 62, "expected checksum of length 64; got 62"),
                                               ("a" * 66, "expected checksum of length 64; got 66"),
                                               ("g" * 64, "checksum is not a valid hex string")])
def test_checksum_rules(checksum, expected):
    cfg = agent()
    cfg["plugins"]["NodeAttestor"] = {"tpm": {"plugin_cmd": "/p", "plugin_checksum": checksum, "plugin_data": {}}}
    assert expected in fails("agent", cfg).message


def test_plugin_data_and_plugin_data_file_are_exclusive():
    cfg = agent()
    cfg["plugins"]["WorkloadAttestor"]["unix"]["plugin_data_file"] = "/etc/unix.conf"
    assert "only one of [plugin_data, plugin_data_file] can be used" in fails("agent", cfg).message


def test_agent_needs_exactly_one_node_attestor():
    cfg = agent()
    cfg["plugins"]["NodeAttestor"]["join_token"] = {"plugin_data": {}}
    err = fails("agent", cfg)
    assert 'plugin type "NodeAttestor" constraint not satisfied: expected exactly 1 but got 2' in err.message
    # a disabled second attestor does not count (SPIRE skips disabled plugins before counting)
    cfg["plugins"]["NodeAttestor"]["join_token"]["enabled"] = False
    C.validate("agent", cfg)
    cfg["plugins"]["NodeAttestor"] = {}
    assert "expected exactly 1 but got 0" in fails("agent", cfg).message


def test_server_node_attestors_keymanager_and_datastore():
    cfg = server()
    cfg["plugins"]["NodeAttestor"] = {}
    warnings = C.validate("server", cfg)  # SPIRE starts; join tokens work without the plugin
    assert any("no enabled NodeAttestor" in w for w in warnings)
    cfg = server()
    del cfg["plugins"]["KeyManager"]
    assert 'plugin type "KeyManager" constraint not satisfied: expected exactly 1' in fails("server", cfg).message
    cfg = server()
    del cfg["plugins"]["DataStore"]
    assert "expecting a DataStore plugin" in fails("server", cfg).message
    cfg = server()
    cfg["plugins"]["DataStore"] = {"postgres": {"plugin_data": {}}}
    assert "only the built-in DataStore" in fails("server", cfg).message
    # the DataStore is loaded whether enabled or not
    cfg = server()
    cfg["plugins"]["DataStore"]["sql"]["enabled"] = False
    C.validate("server", cfg)
    cfg["plugins"]["DataStore"]["sql"]["plugin_data"]["database_type"] = "sqlite"
    assert "unsupported database_type" in fails("server", cfg).message
    cfg["plugins"]["DataStore"]["sql"]["plugin_data"]["database_type"] = {"aws_postgres": {"region": "x"}}
    C.validate("server", cfg)
    cfg["plugins"]["DataStore"]["sql"]["plugin_data"]["database_type"] = {"aws_sqlite": {}}
    assert "unknown database type" in fails("server", cfg).message


def test_builtins_without_configuration_take_no_data():
    cfg = server()
    cfg["plugins"]["KeyManager"] = {"memory": {"plugin_data": {"x": 1}}}
    assert "no supported configuration interface found" in fails("server", cfg).message
    cfg["plugins"]["KeyManager"] = {"memory": {"plugin_data_file": "/etc/x"}}
    assert "plugin_data_file" in fails("server", cfg).message
    cfg["plugins"]["KeyManager"] = {"memory": {"plugin_data": {}}}
    C.validate("server", cfg)
    cfg = agent()
    cfg["plugins"]["NodeAttestor"] = {"join_token": {"plugin_data": {"a": "b"}}}
    assert "join_token" in fails("agent", cfg).message


def test_join_token_cannot_be_external():
    cfg = server()
    cfg["plugins"]["NodeAttestor"]["join_token"]["plugin_cmd"] = "/bin/true"
    assert "cannot be overridden by an external plugin" in fails("server", cfg).message
    cfg = agent()
    cfg["plugins"]["NodeAttestor"] = {"join_token": {"plugin_cmd": "/bin/true", "plugin_data": {}}}
    assert "cannot be overridden by an external plugin" in fails("agent", cfg).message


def test_enabled_must_be_bool_and_unknown_plugin_keys_are_a_policy():
    cfg = server()
    cfg["plugins"]["NodeAttestor"]["join_token"]["enabled"] = "yes"
    assert "not a boolean" in fails("server", cfg).message
    cfg = server()
    cfg["plugins"]["NodeAttestor"]["join_token"]["plugin_dat"] = {}
    err = fails("server", cfg)
    assert "unknown key(s) plugin_dat" in err.message and "allow_unknown_plugin_keys" in err.message
    warnings = C.validate("server", cfg, allow_unknown_plugin_keys=True)
    assert any("plugin_dat" in w for w in warnings)
    # rendered as written (SPIRE ignores it), so the round trip holds
    assert "plugin_dat {}" in C.render("server", cfg)


def test_unsupported_plugin_type():
    cfg = agent()
    cfg["plugins"]["Nodeattestor"] = {"x": {}}
    err = fails("agent", cfg)
    assert "unsupported plugin type" in err.message and "did you mean NodeAttestor" in err.message


@pytest.mark.parametrize("key", ["trust_domain", "data_dir"])
def test_server_required_settings(key):
    cfg = server()
    del cfg["server"][key]
    err = fails("server", cfg)
    assert key in err.message and err.fix


@pytest.mark.parametrize("key", ["bind_address", "bind_port"])
def test_server_bind_settings_have_spire_defaults(key):
    cfg = server()
    del cfg["server"][key]
    C.validate("server", cfg)


def test_server_types_as_hcl_v1_decodes_them():
    for port in ("8081", "0x1f91", 8081):
        cfg = server()
        cfg["server"]["bind_port"] = port
        C.validate("server", cfg)
    for port, what in (("80a", "not an integer"), (8081.0, "not an integer"), (True, "not an integer"),
                       (70000, "not a TCP port"), (-1, "not a TCP port")):
        cfg = server()
        cfg["server"]["bind_port"] = port
        err = fails("server", cfg)
        assert what is None or what in err.message, err.message
    cfg = server()
    cfg["server"]["bind_port"] = "0"  # zero is "unset" to SPIRE (mergo fills its default, 8081)
    assert any("default port 8081" in w for w in C.validate("server", cfg))
    cfg = server()
    cfg["server"]["jwt_issuer"] = 12345  # a number into a string setting: SPIRE reads "12345"
    C.validate("server", cfg)
    cfg["server"]["audit_log_enabled"] = "true"
    assert "not a boolean" in fails("server", cfg).message
    cfg = server()
    cfg["server"]["admin_ids"] = "spiffe://example.org/admin"
    assert "not a list of strings" in fails("server", cfg).message


def test_server_values():
    for key, value, expected in (("log_level", "verbose", "not a valid logrus Level"),
                                 ("log_format", "xml", "unknown logger format"),
                                 ("ca_ttl", "48 hours", "could not parse default CA ttl"),
                                 ("ca_key_type", "ed25519", "error parsing ca_key_type"),
                                 ("trust_domain", "Example.org", "could not parse trust_domain"),
                                 ("socket_path", "/tmp/" + "s" * 120, "cannot bind a unix socket path")):
        cfg = server()
        cfg["server"][key] = value
        assert expected in fails("server", cfg).message
    for key, value in (("log_level", "WARNING"), ("log_format", "JSON"), ("ca_ttl", "48h"),
                       ("ca_key_type", "EC-P384"), ("trust_domain", "spiffe://example.org"),
                       ("trust_domain", "spiffe://example.org/ignored/path")):
        cfg = server()
        cfg["server"][key] = value
        C.validate("server", cfg)
    cfg = server()
    cfg["server"]["experimental"] = {"event_timeout": "1m", "sql_transaction_timeout": "1m"}
    assert "only set event_timeout" in fails("server", cfg).message
    cfg = server()
    cfg["server"]["trust_domain"] = "spiffe://Example.org"
    assert "not a SPIFFE trust domain" in fails("server", cfg).message
    cfg = server()
    cfg["server"]["admin_ids"] = ["spiffe://example.org/admin", "example.org/admin"]
    assert "could not parse admin ID" in fails("server", cfg).message


def test_health_checks_and_telemetry_keys():
    cfg = server()
    cfg["health_checks"] = {"listener_enabled": True, "bind_address": "127.0.0.1", "bind_port": 8080}
    C.validate("server", cfg)
    cfg["health_checks"]["port"] = "1"
    assert "unknown key(s) in health_checks: port" in fails("server", cfg).message
    cfg = server()
    cfg["telemetry"] = {"Prometheus": {"host": "127.0.0.1", "port": 9988}, "MetricPrefix": "x"}
    C.validate("server", cfg)
    cfg["telemetry"]["Prometheus"]["hots"] = "x"
    assert "unknown key(s) in telemetry.Prometheus: hots" in fails("server", cfg).message


@pytest.mark.parametrize("key", ["trust_domain", "server_address", "server_port"])
def test_agent_required_settings(key):
    cfg = agent()
    del cfg["agent"][key]
    assert key in fails("agent", cfg).message


def test_agent_without_data_dir_only_warns():
    cfg = agent()
    del cfg["agent"]["data_dir"]
    assert any("data_dir is not set" in w for w in C.validate("agent", cfg))


def test_agent_values():
    for key, value, expected in (("rebootstrap_mode", "sometimes", "unknown rebootstrap mode"),
                                 ("availability_target", "1h", "below SPIRE's minimum of 24h"),
                                 ("availability_target", "a day", "not a Go duration"),
                                 ("x509_svid_cache_max_size", -1, "should not be negative"),
                                 ("authorized_delegates", ["spiffe://other.org/x"], "not in the agent's trust domain"),
                                 ("workload_x509_svid_key_type", "ed25519", "key type is unknown"),
                                 ("insecure_bootstrap", "true", "not a boolean"),
                                 ("admin_socket_path", "/tmp/spire-agent/public/admin.sock", "admin socket cannot")):
        cfg = agent()
        cfg["agent"][key] = value
        if key == "admin_socket_path":
            cfg["agent"]["socket_path"] = "/tmp/spire-agent/public/api.sock"
        assert expected in fails("agent", cfg).message, key
    cfg = agent()
    cfg["agent"]["server_port"] = "8081"
    cfg["agent"]["rebootstrap_mode"] = "auto"
    cfg["agent"]["availability_target"] = "24h"
    cfg["agent"]["admin_socket_path"] = "/run/spire/agent/private/admin.sock"
    C.validate("agent", cfg)
    cfg["agent"]["retry_bootstrap"] = True
    assert "you can not set retry_bootstrap" in fails("agent", cfg).message


def test_version_specific_names_keys_and_values():
    assert C.version_family("1.13.3") == "1.13" and C.version_family("v1.15.0") == "1.15"
    assert C.version_family("1.14.2") is None and C.version_family(None) is None
    cfg = agent()
    cfg["agent"]["retry_bootstrap"] = True
    C.validate("agent", cfg)
    C.validate("agent", cfg, version="1.13.3")
    err = fails("agent", cfg, version="1.15.3")
    assert "retry_bootstrap" in err.message and "SPIRE 1.15.3" in err.message
    cfg = agent()
    cfg["plugins"]["WorkloadAttestor"] = {"slurm": {"plugin_data": {}}}
    C.validate("agent", cfg, version="1.15.3")
    err = fails("agent", cfg, version="1.13.3")
    assert 'no built-in plugin "slurm"' in err.message and "a built-in of SPIRE 1.15.3" in err.message
    cfg = agent()
    cfg["agent"]["workload_x509_svid_key_type"] = "ec-p384"
    C.validate("agent", cfg, version="1.15.3")
    assert "key type is unknown" in fails("agent", cfg, version="1.13.3").message
    # a newer SPIRE than the tables know: unknown keys and names warn, its own validate decides
    cfg = agent()
    cfg["agent"]["some_future_key"] = "x"
    cfg["plugins"]["WorkloadAttestor"]["future_attestor"] = {"plugin_data": {}}
    warnings = C.validate("agent", cfg, version="1.17.0")
    assert len([w for w in warnings if "newer than the versions" in w]) == 2
    assert "some_future_key" in fails("agent", cfg).message


def test_agent_trust_bundle_source_rules():
    cfg = agent()
    del cfg["agent"]["trust_bundle_path"]
    assert "no trust bundle source" in fails("agent", cfg).message
    cfg["agent"]["insecure_bootstrap"] = True
    err = fails("agent", cfg)
    assert "insecure_bootstrap is true" in err.message and "allow_insecure_bootstrap" in err.message
    C.validate("agent", cfg, allow_insecure_bootstrap=True)
    cfg["agent"]["rebootstrap_mode"] = "always"
    assert "can not be used with rebootstrapping" in fails("agent", cfg, allow_insecure_bootstrap=True).message
    del cfg["agent"]["rebootstrap_mode"]
    cfg["agent"]["trust_bundle_path"] = "/b.pem"
    assert "insecure_bootstrap is true and trust_bundle_path" in fails("agent", cfg, allow_insecure_bootstrap=True).message
    cfg = agent()
    cfg["agent"]["trust_bundle_url"] = "https://x/bundle"
    assert "more than one trust bundle source" in fails("agent", cfg).message
    cfg = agent()
    del cfg["agent"]["trust_bundle_path"]
    cfg["agent"]["trust_bundle_url"] = "http://x/bundle"
    assert "does not start with https://" in fails("agent", cfg).message
    cfg["agent"]["trust_bundle_unix_socket"] = "/run/bundle.sock"
    C.validate("agent", cfg)
    cfg["agent"]["trust_bundle_url"] = "http://x/bundle?spire-x=1"
    assert "can not start with spiffe- or spire-" in fails("agent", cfg).message
    cfg["agent"]["trust_bundle_url"] = "https://x/bundle"
    assert "must start with http://" in fails("agent", cfg).message
    del cfg["agent"]["trust_bundle_unix_socket"]
    C.validate("agent", cfg)
    cfg = agent()
    cfg["agent"]["trust_bundle_unix_socket"] = "/run/bundle.sock"
    assert "so must be trust_bundle_url" in fails("agent", cfg).message
    cfg = agent()
    cfg["agent"]["trust_bundle_format"] = "der"
    assert "invalid value for trust_bundle_format" in fails("agent", cfg).message


def test_agent_join_token_rules_and_unknown_keys():
    cfg = agent()
    cfg["agent"]["join_token"] = "t"
    cfg["agent"]["join_token_file"] = "/t"
    assert "only one of join_token or join_token_file" in fails("agent", cfg).message
    cfg = agent()
    cfg["agent"]["trustdomain"] = "x"
    err = fails("agent", cfg)
    assert "unknown configuration detected" in err.message and "did you mean trust_domain" in err.message


def test_sections_must_match_kind():
    cfg = server()
    assert "use kind=server" in fails("agent", cfg).fix
    cfg = agent()
    cfg["plugins_extra"] = {}
    assert "unknown top-level section" in fails("agent", cfg).message
    assert "no 'plugins' section" in fails("agent", {"agent": agent()["agent"]}).message


def test_tpm_devid_required_plugin_data():
    cfg = server()
    del cfg["plugins"]["NodeAttestor"]["tpm_devid"]["plugin_data"]["endorsement_ca_path"]
    assert "endorsement_ca_path" in fails("server", cfg).message
    cfg = agent()
    cfg["plugins"]["NodeAttestor"]["tpm_devid"]["plugin_data"] = {"devid_cert_path": "/c"}
    err = fails("agent", cfg)
    assert "devid_priv_path, devid_pub_path" in err.message
    # plugin_data_file cannot be inspected: accepted
    cfg["plugins"]["NodeAttestor"]["tpm_devid"] = {"plugin_data_file": "/etc/spire/tpm_devid.conf"}
    C.validate("agent", cfg)


@pytest.mark.parametrize("kind,ptype,name,key", [("server", "DataStore", "sql", "connection_string"),
                                                  ("server", "DataStore", "sql", "database_type"),
                                                  ("server", "KeyManager", "disk", "keys_path"),
                                                  ("agent", "KeyManager", "disk", "directory")])
def test_required_plugin_data_of_builtins(kind, ptype, name, key):
    cfg = server() if kind == "server" else agent()
    data = {"database_type": "sqlite3", "connection_string": "/d/ds", "keys_path": "/d/k", "directory": "/d"}
    data = dict((k, v) for k, v in data.items() if k in C.REQUIRED_PLUGIN_DATA[(kind, ptype, name)] and k != key)
    cfg["plugins"][ptype] = {name: {"plugin_data": data}}
    err = fails(kind, cfg)
    assert key in err.message and '%s "%s"' % (ptype, name) in err.message


def test_node_attestors_lists_enabled_names():
    cfg = server()
    cfg["plugins"]["NodeAttestor"]["x509pop"] = {"plugin_data": {"ca_bundle_path": "/x"}, "enabled": False}
    assert C.node_attestors(cfg) == ["join_token", "tpm_devid"]


def test_secret_values_and_masking():
    cfg = agent()
    cfg["agent"]["join_token"] = "4a1bd7e2-tok"
    cfg["plugins"]["NodeAttestor"]["tpm_devid"]["plugin_data"]["devid_password"] = "s3cr\"et$"
    cfg["plugins"]["NodeAttestor"]["tpm_devid"]["plugin_data"]["owner_hierarchy_password"] = ""
    assert C.secret_values(cfg) == {"4a1bd7e2-tok", 's3cr"et$'}
    text = C.render("agent", cfg)
    masked = C.mask_text(text)
    assert "4a1bd7e2-tok" not in masked and "s3cr" not in masked
    assert 'join_token = "********"' in masked and 'devid_password = "********"' in masked
    assert masked.count("\n") == text.count("\n")
    assert 'devid_cert_path = "/c"' in masked


def test_ensure_config_writes_backs_up_and_is_idempotent(tmp_path):
    path = str(tmp_path / "server.conf")
    r = C.ensure_config(path, "server", server(), check_mode=True)
    assert r["changed"] and not os.path.exists(path)
    assert any("check mode" in w and "devid_ca_path /a" in w for w in r["warnings"])
    with pytest.raises(SpireTpmError) as e:
        C.ensure_config(path, "server", server())
    assert "devid_ca_path /a" in e.value.message and not os.path.exists(path)
    r = C.ensure_config(path, "server", server(), check_files=False)
    assert r["changed"] and r["backup_file"] is None and r["node_attestors"] == ["join_token", "tpm_devid"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert C.normalise(C.parse(open(path).read())) == C.normalise(server())
    r = C.ensure_config(path, "server", copy.deepcopy(server()), check_files=False)
    assert not r["changed"] and r["backup_file"] is None
    old = open(path).read()
    cfg = server()
    cfg["server"]["log_level"] = "DEBUG"
    r = C.ensure_config(path, "server", cfg, check_files=False)
    assert r["changed"] and open(r["backup_file"]).read() == old
    assert r["backup_file"].startswith(path + ".") and r["backup_file"].endswith(".bak")
    assert 'log_level = "DEBUG"' in open(path).read()
    assert "connection_string = \"********\"" in r["rendered"] and "/d/ds.sqlite3" not in r["rendered"]


def test_ensure_config_refuses_before_writing(tmp_path):
    path = tmp_path / "agent.conf"
    path.write_text("previous\n")
    cfg = agent()
    cfg["plugins"]["NodeAttestor"] = {"tpm": {"plugin_data": {}}}
    with pytest.raises(SpireTpmError):
        C.ensure_config(str(path), "agent", cfg)
    assert path.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.conf"]


def test_path_problems(tmp_path):
    cert = tmp_path / "devid.crt"
    cert.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    blob = tmp_path / "devid.pub"
    blob.write_bytes(b"\x00\x01")
    sock = tmp_path / "tpm.sock"
    sock.write_text("")
    cfg = agent()
    cfg["plugins"]["NodeAttestor"]["tpm_devid"]["plugin_data"] = {
        "devid_cert_path": str(cert), "devid_priv_path": str(blob), "devid_pub_path": str(blob),
        "tpm_device_path": str(sock)}
    assert C.path_problems("agent", cfg) == []
    cfg["plugins"]["NodeAttestor"]["tpm_devid"]["plugin_data"]["devid_priv_path"] = str(tmp_path / "none")
    cfg["plugins"]["NodeAttestor"]["tpm_devid"]["plugin_data"]["tpm_device_path"] = str(tmp_path / "no.sock")
    causes = [c for c, _f in C.path_problems("agent", cfg)]
    assert len(causes) == 2 and "devid_priv_path" in causes[0] and "tpm_device_path" in causes[1]
    # an external plugin: present, executable, and the checksum must match its content
    plugin = tmp_path / "plugin"
    plugin.write_text("#!/bin/sh\n")
    cfg = agent()
    cfg["plugins"]["NodeAttestor"] = {"tpm": {"plugin_cmd": str(plugin), "plugin_checksum": "0" * 64}}
    assert "not executable" in C.path_problems("agent", cfg)[0][0]
    plugin.chmod(0o755)
    assert "has sha256" in C.path_problems("agent", cfg)[0][0]
    import hashlib
    cfg["plugins"]["NodeAttestor"]["tpm"]["plugin_checksum"] = hashlib.sha256(plugin.read_bytes()).hexdigest()
    assert C.path_problems("agent", cfg) == []
    # disabled plugins are not loaded by SPIRE, so their files do not matter
    cfg["plugins"]["NodeAttestor"]["tpm"]["plugin_cmd"] = str(tmp_path / "absent")
    cfg["plugins"]["NodeAttestor"]["tpm"]["enabled"] = False
    assert C.path_problems("agent", cfg) == []


def test_tpm_autodetection_like_spire(tmp_path):
    assert C._tpm_autodetect(str(tmp_path))[1].startswith("not found")
    (tmp_path / "tpm0").write_text("")
    assert C._tpm_autodetect(str(tmp_path)) == (str(tmp_path / "tpm0"), None)
    (tmp_path / "tpmrm0").write_text("")
    assert C._tpm_autodetect(str(tmp_path)) == (str(tmp_path / "tpmrm0"), None)
    (tmp_path / "tpmrm1").write_text("")
    assert "more than one" in C._tpm_autodetect(str(tmp_path))[1]


GO_INPUTS = ["8081", "0x1f91", "0X1F91", "017", "08", "0", "-0", "+8081", "8_081", "_8081", "8081_", "8__081",
             "0x_1f", "0_17", "0b101", "0o17", "0b", "0x", " 1", "1 ", "", "1e3", "1.0", "9223372036854775807",
             "9223372036854775808", "-9223372036854775808", "1h30m", ".5s", "1.s", ".s", "1", "24h", "+5m",
             "-1.5h", "1us", u"1\u00b5s", u"1\u03bcs", "3h2m1.5s", "1H", "1d", "10ms5ns", "h", "1m1"]


@pytest.fixture(scope="module")
def go_oracle(tmp_path_factory):
    if not shutil.which("go"):
        pytest.skip("needs the Go toolchain to build the oracle")
    out = tmp_path_factory.mktemp("goparse") / "oracle"
    env = dict(os.environ, GOTOOLCHAIN="local", GOFLAGS="-mod=mod",
               GOCACHE=str(tmp_path_factory.mktemp("gocache")))
    subprocess.run(["go", "build", "-o", str(out), "."], cwd=str(Path(__file__).parent / "go_parse_oracle"),
                   env=env, check=True, capture_output=True)
    res = subprocess.run([str(out)], input=json.dumps(GO_INPUTS), capture_output=True, text=True, check=True)
    return dict(zip(GO_INPUTS, json.loads(res.stdout)))


@pytest.mark.parametrize("text", GO_INPUTS)
def test_go_parse_int_and_duration_match_go(go_oracle, text):
    assert C.go_parse_int(text) == go_oracle[text]["int"]
    got, want = C.go_duration_seconds(text), go_oracle[text]["duration"]
    assert (got is None) == (want is None) and (got is None or abs(got - want) < 1e-9)
