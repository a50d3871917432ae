# -*- coding: utf-8 -*-
"""SPIRE's load-time rules as config.validate() applies them, secret masking, and ensure_config()."""

import copy
import os
import stat
import sys

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


def test_server_needs_a_node_attestor_keymanager_and_datastore():
    cfg = server()
    cfg["plugins"]["NodeAttestor"] = {}
    assert "expected at least 1 but got 0" in fails("server", cfg).message
    cfg = server()
    del cfg["plugins"]["KeyManager"]
    assert 'plugin type "KeyManager" constraint not satisfied: expected exactly 1' in fails("server", cfg).message
    cfg = server()
    del cfg["plugins"]["DataStore"]
    assert '"DataStore" constraint not satisfied' in fails("server", cfg).message
    cfg = server()
    cfg["plugins"]["DataStore"] = {"postgres": {"plugin_data": {}}}
    assert "only the built-in DataStore" in fails("server", cfg).message


def test_join_token_cannot_be_external():
    cfg = server()
    cfg["plugins"]["NodeAttestor"]["join_token"]["plugin_cmd"] = "/bin/true"
    assert "cannot be overridden by an external plugin" in fails("server", cfg).message


def test_enabled_must_be_bool_and_unknown_plugin_keys_are_refused():
    cfg = server()
    cfg["plugins"]["NodeAttestor"]["join_token"]["enabled"] = "yes"
    assert "not a boolean" in fails("server", cfg).message
    cfg = server()
    cfg["plugins"]["NodeAttestor"]["join_token"]["plugin_dat"] = {}
    assert "unknown key(s) plugin_dat" in fails("server", cfg).message


def test_unsupported_plugin_type():
    cfg = agent()
    cfg["plugins"]["Nodeattestor"] = {"x": {}}
    err = fails("agent", cfg)
    assert "unsupported plugin type" in err.message and "did you mean NodeAttestor" in err.message


@pytest.mark.parametrize("key", ["trust_domain", "bind_address", "bind_port", "data_dir"])
def test_server_required_settings(key):
    cfg = server()
    del cfg["server"][key]
    err = fails("server", cfg)
    assert key in err.message and err.fix


def test_server_port_and_trust_domain_shape():
    cfg = server()
    cfg["server"]["bind_port"] = "8081"
    assert "not a TCP port" in fails("server", cfg).message
    cfg = server()
    cfg["server"]["trust_domain"] = "spiffe://Example.org"
    assert "not a SPIFFE trust domain" in fails("server", cfg).message
    cfg = server()
    cfg["server"]["admin_ids"] = ["spiffe://example.org/admin", "example.org/admin"]
    assert "could not parse admin ID" in fails("server", cfg).message


@pytest.mark.parametrize("key", ["trust_domain", "server_address", "server_port", "data_dir"])
def test_agent_required_settings(key):
    cfg = agent()
    del cfg["agent"][key]
    assert key in fails("agent", cfg).message


def test_agent_trust_bundle_source_rules():
    cfg = agent()
    del cfg["agent"]["trust_bundle_path"]
    assert "no trust bundle source" in fails("agent", cfg).message
    cfg["agent"]["insecure_bootstrap"] = True
    err = fails("agent", cfg)
    assert "insecure_bootstrap is true" in err.message
    C.validate("agent", cfg, allow_insecure_bootstrap=True)
    cfg["agent"]["trust_bundle_path"] = "/b.pem"
    assert "insecure_bootstrap is true and trust_bundle_path" in fails("agent", cfg, allow_insecure_bootstrap=True).message
    cfg = agent()
    cfg["agent"]["trust_bundle_url"] = "https://x/bundle"
    assert "more than one trust bundle source" in fails("agent", cfg).message
    cfg = agent()
    del cfg["agent"]["trust_bundle_path"]
    cfg["agent"]["trust_bundle_url"] = "http://x/bundle"
    assert "must start with https://" in fails("agent", cfg).message
    cfg["agent"]["trust_bundle_url"] = "https://x/bundle"
    C.validate("agent", cfg)


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
    r = C.ensure_config(path, "server", server())
    assert r["changed"] and r["backup_file"] is None and r["node_attestors"] == ["join_token", "tpm_devid"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert C.normalise(C.parse(open(path).read())) == C.normalise(server())
    r = C.ensure_config(path, "server", copy.deepcopy(server()))
    assert not r["changed"] and r["backup_file"] is None
    old = open(path).read()
    cfg = server()
    cfg["server"]["log_level"] = "DEBUG"
    r = C.ensure_config(path, "server", cfg)
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


def test_validate_bin_rejection_is_reported_with_its_output(tmp_path):
    fake = tmp_path / "spire-server"
    fake.write_text("#!%s\nimport sys\ntext = open(sys.argv[3]).read()\n"
                    "if 'DEBUG' in text:\n    sys.stderr.write('SPIRE server configuration file is invalid: nope\\n')\n"
                    "    sys.exit(1)\nprint('SPIRE server configuration file is valid.')\n" % sys.executable)
    fake.chmod(0o755)
    path = str(tmp_path / "server.conf")
    r = C.ensure_config(path, "server", server(), validate_bin=str(fake))
    assert r["validated"] and r["changed"]
    cfg = server()
    cfg["server"]["log_level"] = "DEBUG"
    with pytest.raises(SpireTpmError) as e:
        C.ensure_config(path, "server", cfg, validate_bin=str(fake))
    assert "configuration file is invalid: nope" in e.value.message
    assert "DEBUG" not in open(path).read()
    assert not [p for p in os.listdir(str(tmp_path)) if "validate" in p]
    # a missing validate_bin (first install) is skipped
    r = C.ensure_config(path, "server", cfg, validate_bin=str(tmp_path / "absent"))
    assert r["changed"] and not r["validated"]
