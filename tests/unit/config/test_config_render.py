# -*- coding: utf-8 -*-
"""The HCL renderer, checked against hashicorp/hcl v1 itself (the Go library SPIRE decodes its config with).

The oracle is tests/unit/config/hcl_oracle/main.go, built here from Debian's golang-github-hashicorp-hcl-dev
(installed with step-ca's build dependencies). pyhcl is what the module uses at run time; Go's decoder is what
SPIRE uses, so every rendering is decoded by both.
"""

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire import config as C
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire import config_render

HERE = Path(__file__).resolve().parent
GOPATH_HCL = Path("/usr/share/gocode/src/github.com/hashicorp/hcl")


@pytest.fixture(scope="session")
def hcl_oracle(tmp_path_factory):
    if not shutil.which("go") or not GOPATH_HCL.is_dir():
        pytest.skip("needs golang-go and golang-github-hashicorp-hcl-dev (the Go hcl v1 library) to build the oracle")
    out = tmp_path_factory.mktemp("oracle") / "hcl_oracle"
    env = dict(os.environ, GOPATH="/usr/share/gocode", GO111MODULE="off",
               GOCACHE=str(tmp_path_factory.mktemp("gocache")))
    subprocess.run(["go", "build", "-o", str(out), "."], cwd=str(HERE / "hcl_oracle"), env=env, check=True,
                   capture_output=True)

    def decode(text, expand_env=None):
        path = out.parent / ("in-%d.hcl" % len(text))
        path.write_text(text)
        cmd = [str(out)] + (["-expandEnv"] if expand_env is not None else []) + [str(path)]
        run_env = dict(os.environ)
        run_env.update(expand_env or {})
        r = subprocess.run(cmd, capture_output=True, text=True, env=run_env)
        if r.returncode != 0:
            raise AssertionError("Go hcl v1 rejected the rendering: %s\n%s" % (r.stderr, text))
        return json.loads(r.stdout)

    return decode


NASTY = [
    'plain',
    'with "quotes" inside',
    'back\\slash',
    'two \\\\ backslashes',
    'ends with backslash\\',
    'backslash before quote \\"',
    '${HOME}',
    '${unbalanced',
    '$HOME and $1 and $$',
    'line1\nline2\ttab\rcr',
    'control \x01\x1f\x7f',
    'unicode é ü 日本 🙂',
    '\\u0024 literal escape text',
    '',
    '}{',
]


def server_config(extra_value="x"):
    return {
        "server": {"trust_domain": "example.org", "bind_address": "0.0.0.0", "bind_port": 8081,
                   "data_dir": "/opt/spire/data/server", "log_level": "DEBUG", "audit_log_enabled": True,
                   "admin_ids": ["spiffe://example.org/admin", extra_value],
                   "ca_subject": {"country": ["US"], "organization": ["SPIFFE"], "common_name": ""},
                   "ca_ttl": None},
        "plugins": {
            "DataStore": {"sql": {"plugin_data": {"database_type": "sqlite3",
                                                  "connection_string": "/opt/spire/data/server/ds.sqlite3"}}},
            "KeyManager": {"disk": {"plugin_data": {"keys_path": "/opt/spire/data/server/keys.json"}}},
            "NodeAttestor": {
                "join_token": {"plugin_data": {}},
                "tpm_devid": {"plugin_data": {"devid_ca_path": "/ca/devid.pem", "endorsement_ca_path": "/ca/ek.pem"}},
                "tpm": {"plugin_cmd": "/opt/spire/plugins/tpm_attestor_server", "plugin_checksum": "ab" * 32,
                        "plugin_args": ["-v", extra_value], "enabled": False,
                        "plugin_data": {"hash_path": "/opt/spire/hashes", "note": extra_value}},
            },
        },
        "health_checks": {"listener_enabled": True, "bind_address": "127.0.0.1", "bind_port": "8080",
                          "live_path": "/live", "ready_path": "/ready"},
        "telemetry": {"Prometheus": {"port": 9988}, "DogStatsd": [{"address": "localhost:8125"},
                                                                  {"address": "localhost:8126"}],
                      "AllowedLabels": [], "ratio": 0.25},
    }


@pytest.mark.parametrize("value", NASTY)
def test_strings_survive_go_hcl_and_pyhcl(hcl_oracle, value):
    cfg = server_config(value)
    text = C.render("server", cfg)  # includes the pyhcl round trip check
    go = hcl_oracle(text)
    assert C.normalise(go) == C.normalise(cfg)
    assert go["plugins"][0]["NodeAttestor"][1]["tpm"][0]["plugin_data"][0]["note"] == value
    assert go["server"][0]["admin_ids"][1] == value


@pytest.mark.parametrize("value", NASTY)
def test_expand_env_never_touches_rendered_values(hcl_oracle, value):
    cfg = server_config(value)
    text = C.render("server", cfg)
    go = hcl_oracle(text, expand_env={"HOME": "/EXPANDED", "X": "EXPANDED"})
    assert go["server"][0]["admin_ids"][1] == value


def test_go_decodes_types_and_structure(hcl_oracle):
    cfg = server_config()
    go = hcl_oracle(C.render("server", cfg))
    srv = go["server"][0]
    assert srv["bind_port"] == 8081 and isinstance(srv["bind_port"], int)
    assert srv["audit_log_enabled"] is True
    assert "ca_ttl" not in srv  # None is dropped
    assert go["telemetry"][0]["ratio"] == 0.25
    assert [b["address"] for b in go["telemetry"][0]["DogStatsd"]] == ["localhost:8125", "localhost:8126"]
    names = [list(d)[0] for d in go["plugins"][0]["NodeAttestor"]]
    assert names == ["join_token", "tpm", "tpm_devid"]
    tpm = go["plugins"][0]["NodeAttestor"][1]["tpm"][0]
    assert tpm["enabled"] is False and tpm["plugin_checksum"] == "ab" * 32


def test_keys_that_are_not_identifiers_are_quoted(hcl_oracle):
    cfg = {"server": {"trust_domain": "example.org", "bind_address": "0.0.0.0", "bind_port": 8081, "data_dir": "/d",
                      "federation": {"federates_with": {"1partner.example": {"bundle_endpoint_url": "https://p"},
                                                        "other.org": {"bundle_endpoint_url": "https://o"}}}}}
    text = C.render("server", cfg)
    assert '"1partner.example" {' in text
    assert C.normalise(hcl_oracle(text)) == C.normalise(cfg)


def test_rendering_is_deterministic_whatever_the_input_order():
    cfg = server_config()
    reordered = json.loads(json.dumps(cfg))
    reordered = dict(reversed(list(reordered.items())))
    reordered["plugins"] = dict(reversed(list(reordered["plugins"].items())))
    reordered["plugins"]["NodeAttestor"] = dict(reversed(list(reordered["plugins"]["NodeAttestor"].items())))
    reordered["server"] = dict(reversed(list(reordered["server"].items())))
    assert C.render("server", reordered) == C.render("server", cfg)


def test_rendered_layout_is_spire_style():
    text = C.render("server", server_config())
    assert text.startswith("server {\n")
    assert '  NodeAttestor "tpm_devid" {\n    plugin_data {\n      devid_ca_path = "/ca/devid.pem"' in text
    assert '  NodeAttestor "join_token" {\n    plugin_data {}\n  }' in text
    # plugin keys in SPIRE's documented order
    tpm = text[text.index('NodeAttestor "tpm" {'):]
    order = [tpm.index(k) for k in ("plugin_cmd", "plugin_args", "plugin_checksum", "enabled", "plugin_data {")]
    assert order == sorted(order)
    assert text.index("server {") < text.index("plugins {") < text.index("health_checks {") < text.index("telemetry {")


def test_round_trip_mismatch_is_reported_as_renderer_bug(monkeypatch):
    # Simulate a renderer bug: the quoting drops characters. The pyhcl round trip must catch it.
    monkeypatch.setattr(config_render, "_quote", lambda v: '"%s"' % v.replace("x", ""))
    with pytest.raises(SpireTpmError) as e:
        C.render("server", server_config("xyz"))
    assert "does not parse back" in e.value.cause and "bug" in e.value.fix


def test_unrenderable_values_are_refused():
    cfg = server_config()
    cfg["server"]["admin_ids"] = [["nested"]]
    with pytest.raises(SpireTpmError) as e:
        C.render("server", cfg)
    assert "server.admin_ids[0]" in e.value.cause
    cfg = server_config()
    cfg["server"]["log_level"] = object()
    with pytest.raises(SpireTpmError):
        C.render("server", cfg)
    cfg = server_config()
    cfg["server"]["ratio"] = float("nan")
    with pytest.raises(SpireTpmError):
        C.render("server", cfg)


def test_parse_decodes_unicode_escapes_and_reports_syntax_errors():
    assert C.parse('a = "x\\u0024{y}\\u005c"\n') == {"a": "x${y}\\"}
    with pytest.raises(SpireTpmError) as e:
        C.parse('server {\n  a = "unterminated\n')
    assert "does not parse" in e.value.cause


def test_input_is_not_modified():
    cfg = server_config("spiffe://example.org/ops")
    before = copy.deepcopy(cfg)
    C.validate("server", cfg)
    C.render("server", cfg)
    assert cfg == before
