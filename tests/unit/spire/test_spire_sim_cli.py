"""The spire-server simulator honours the CLI facts the modules rely on, and SpireCli reads it correctly."""

import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "simulators"))

from spire_sim.testing import AGENT_BIN, SERVER_BIN, SimServer  # noqa: E402

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError  # noqa: E402
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire.cli import (  # noqa: E402
    SpireCli, result_error, result_ok, subprocess_run_command)


@pytest.fixture
def sim():
    s = SimServer()
    yield s
    s.cleanup()


def run(sim, *args, data=None, output="json"):
    argv = [SERVER_BIN] + list(args)
    if output:
        argv += ["-output", output]
    argv += ["-socketPath", sim.socket_path]
    return subprocess.run(argv, input=data, capture_output=True, text=True,
                          env=dict(os.environ, SPIRE_SIM_CALL_LOG=sim.call_log))


def req(path, parent="/node", sel="unix:uid:1", **kw):
    t, v = sel.split(":", 1)
    r = {"spiffe_id": "spiffe://example.org" + path, "parent_id": "spiffe://example.org" + parent,
         "selectors": [{"type": t, "value": v}]}
    r.update(kw)
    return r


def test_not_running_error_shape(sim):
    sim.stop()
    p = run(sim, "entry", "show")
    assert p.returncode == 1
    assert p.stderr.startswith("Error: rpc error: code = Unavailable desc = connection error")
    assert "dial unix %s: connect: no such file or directory" % sim.socket_path in p.stderr


def test_create_results_in_order_and_exit_codes(sim):
    batch = {"entries": [req("/a", x509_svid_ttl=60, entryExpiry=123), req("/a"), req("/b", sel="nocolon:"),
                         {"spiffe_id": "spiffe://example.org/c", "parent_id": "spiffe://example.org/node",
                          "selectors": []}]}
    p = run(sim, "entry", "create", "-data", "-", data=json.dumps(batch))
    assert p.returncode == 0  # JSON mode: 0 even though items failed
    res = json.loads(p.stdout)["results"]
    assert [r["status"]["code"] for r in res] == [0, 6, 3, 3]
    assert res[1]["status"]["message"] == "similar entry already exists"
    assert res[0]["entry"]["expires_at"] == "123" and res[0]["entry"]["x509_svid_ttl"] == 60
    assert res[0]["entry"]["revision_number"] == "0" and isinstance(res[0]["entry"]["created_at"], str)
    assert res[1]["entry"]["id"] == ""  # echo of the request
    p = run(sim, "entry", "create", "-data", "-", data=json.dumps({"entries": [req("/a")]}), output="pretty")
    assert p.returncode == 1  # pretty mode: failure
    assert "similar entry already exists" in p.stdout


def test_update_replaces_all_fields_and_notfound(sim):
    p = run(sim, "entry", "create", "-data", "-", data=json.dumps({"entries": [req("/a", hint="h", admin=True)]}))
    eid = json.loads(p.stdout)["results"][0]["entry"]["id"]
    upd = {"entries": [dict(req("/a"), entry_id=eid), dict(req("/zz"), entry_id="nope")]}
    res = json.loads(run(sim, "entry", "update", "-data", "-", data=json.dumps(upd)).stdout)["results"]
    assert [r["status"]["code"] for r in res] == [0, 5]
    e = res[0]["entry"]
    assert e["hint"] == "" and e["admin"] is False and e["revision_number"] == "1"


def test_show_filters_and_delete_file(sim, tmp_path):
    batch = {"entries": [req("/a", sel="unix:uid:1"), req("/b", sel="unix:uid:2"),
                         dict(req("/c", parent="/other"), selectors=[{"type": "unix", "value": "uid:1"},
                                                                     {"type": "unix", "value": "gid:1"}])]}
    run(sim, "entry", "create", "-data", "-", data=json.dumps(batch))

    def paths(*args):
        out = json.loads(run(sim, "entry", "show", *args).stdout)
        assert out["next_page_token"] == ""
        return sorted(e["spiffe_id"]["path"] for e in out["entries"])

    assert paths() == ["/a", "/b", "/c"]
    assert paths("-parentID", "spiffe://example.org/node") == ["/a", "/b"]
    assert paths("-spiffeID", "spiffe://example.org/b") == ["/b"]
    assert paths("-selector", "unix:uid:1") == ["/a", "/c"]  # superset is the default
    assert paths("-selector", "unix:uid:1", "-matchSelectorsOn", "exact") == ["/a"]
    assert paths("-selector", "unix:uid:1", "-selector", "unix:uid:2", "-matchSelectorsOn", "any") == ["/a", "/b",
                                                                                                       "/c"]
    assert paths("-selector", "unix:uid:1", "-selector", "unix:gid:1", "-matchSelectorsOn", "subset") == ["/a", "/c"]
    ids = [e["id"] for e in json.loads(run(sim, "entry", "show", "-parentID", "spiffe://example.org/node").stdout)
           ["entries"]]
    f = tmp_path / "del.json"
    f.write_text(json.dumps({"Ids": ids + ["missing"]}))
    p = run(sim, "entry", "delete", "-file", str(f))
    assert p.returncode == 0
    res = json.loads(p.stdout)["results"]
    assert [r["status"]["code"] for r in res] == [0, 0, 5] and res[2]["id"] == "missing"
    assert res[2]["status"]["message"] == "entry not found"
    assert paths() == ["/c"]
    assert json.loads(run(sim, "entry", "count").stdout) == {"count": 1}


def test_unknown_flag_like_go(sim):
    p = run(sim, "entry", "show", "-bogus", "1")
    assert p.returncode == 1 and "flag provided but not defined: -bogus" in p.stderr


def test_bundle_show_is_a_ca(sim):
    from cryptography import x509
    p = run(sim, "bundle", "show", output=None)
    cert = x509.load_pem_x509_certificate(p.stdout.encode())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    again = run(sim, "bundle", "show", output=None).stdout
    assert again == p.stdout  # generated once per state


def test_agent_dispatch_to_daemon_commands(sim):
    p = subprocess.run([AGENT_BIN, "frobnicate"], capture_output=True, text=True)
    assert p.returncode != 0


def test_spirecli_against_simulator(sim):
    cli = SpireCli(subprocess_run_command, SERVER_BIN, sim.socket_path)
    res = cli.entry_create([req("/a"), req("/a")])
    assert result_ok(res[0]) and not result_ok(res[1])
    assert result_error(res[1]) == "AlreadyExists (6): similar entry already exists"
    [e] = cli.entry_show()
    assert e["spiffe_id"] == {"trust_domain": "example.org", "path": "/a"}
    assert cli.entry_count() == 1
    assert cli.agent_show("spiffe://example.org/spire/agent/x") is None
    assert cli.agent_evict("spiffe://example.org/spire/agent/x") is False
    tok = cli.token_generate(ttl=60)
    assert tok["value"] and int(tok["expires_at"]) > 0
    res = cli.entry_delete([e["id"]])
    assert result_ok(res[0])
    sim.stop()
    with pytest.raises(SpireTpmError) as err:
        cli.entry_show()
    assert "start the SPIRE server" in str(err.value) and err.value.details["grpc_code"] == "Unavailable"


def test_spirecli_missing_binary():
    cli = SpireCli(subprocess_run_command, "/nonexistent/spire-server", None)
    with pytest.raises(SpireTpmError, match="spire_server_bin"):
        cli.entry_show()


def test_spirecli_command_shape():
    seen = []

    def fake(argv, data=None):
        seen.append((argv, data))
        return 0, json.dumps({"results": [{"status": {"code": 0}, "entry": {"id": "x"}}]}), ""

    cli = SpireCli(fake, sys.executable, "/run/s.sock")
    cli.entry_create([{"spiffe_id": "spiffe://a/b"}])
    argv, data = seen[0]
    assert argv[1:] == ["entry", "create", "-data", "-", "-output", "json", "-socketPath", "/run/s.sock"]
    assert json.loads(data) == {"entries": [{"spiffe_id": "spiffe://a/b"}]}


def test_raise_for_results_lists_failures():
    from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire.cli import raise_for_results
    ok = {"status": {"code": 0, "message": "OK"}, "entry": {"id": "1"}}
    bad = {"status": {"code": 6, "message": "similar entry already exists"},
           "entry": {"spiffe_id": {"trust_domain": "example.org", "path": "/a"}}}
    gone = {"status": {"code": 5, "message": "entry not found"}, "id": "x9"}
    raise_for_results([ok], "create entries")
    with pytest.raises(SpireTpmError) as err:
        raise_for_results([ok, bad, gone], "apply entries")
    msg = str(err.value)
    assert "2 of 3 items failed" in msg
    assert "spiffe://example.org/a: AlreadyExists (6): similar entry already exists" in msg
    assert "x9: NotFound (5): entry not found" in msg
    assert len(err.value.details["failures"]) == 2
