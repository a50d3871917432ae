"""module_utils/spire (SpireCli, entries) against a REAL spire-server, without Ansible.

The JSON every assertion reads is what the real CLI printed in this run (nothing hand-written): per-item statuses and
their codes, the shape of ``entry show`` the comparison code consumes, exit codes, error texts. One server per
module (the suite's version, $SPIRE_TPM_SPIRE_VERSION), emptied between tests.
"""

import json
import os
import sys
from pathlib import Path

import pytest

from support import spire as spire_support

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire import entries as E
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire import ids
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire.cli import (
    SpireCli, raise_for_results, result_error, result_ok, subprocess_run_command)

NODE = "spiffe://example.org/node/a"

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "integration" / "spire"))
from spire_testlib import bundle_set  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    version = os.environ.get("SPIRE_TPM_SPIRE_VERSION", spire_support.DEFAULT_VERSION)
    srv = spire_support.SpireServer(tmp_path_factory.mktemp("spire-server"), version=version)
    srv.start()
    bundle_set(srv, "partner.org", tmp_path_factory.mktemp("bundle"))
    yield srv
    srv.cleanup()


class Counting(object):
    """subprocess_run_command, counting invocations per subcommand."""

    def __init__(self):
        self.words = []

    def __call__(self, args, data=None, **kw):
        self.words.append(args[1:3])
        return subprocess_run_command(args, data=data, **kw)


@pytest.fixture
def cli(server):
    for e in server.entries():
        server.cli("entry", "delete", "-entryID", e["id"])
    c = SpireCli(Counting(), str(server.bin), str(server.socket_path))
    return c


def spec(n, **kw):
    d = {"spiffe_id": "spiffe://example.org/w/%d" % n, "parent_id": NODE, "selectors": ["unix:uid:%d" % n]}
    d.update(kw)
    return d


def test_every_field_round_trips_through_the_real_server(cli):
    """What to_request sends and what normalize_current reads back of the real ``entry show`` compare equal: the
    basis of idempotency (a difference here would make every run an update)."""
    declared = E.normalize_all([
        spec(1),
        spec(2, selectors=["unix:uid:2", "unix:gid:2", "unix:user:x:y"], x509_svid_ttl=3600, jwt_svid_ttl=60,
             dns_names=["z.example.org", "a.example.org", "*.w.example.org"], federates_with=["spiffe://partner.org"],
             admin=True, downstream=True, hint="h2", store_svid=True, entry_expiry=4102444800),
        {"spiffe_id": "spiffe://example.org/node/web1", "node": True, "selectors": ["tpm_devid:subject:cn:web1"]},
    ])
    results = cli.entry_create([E.to_request(e) for e in declared])
    assert [result_error(r) for r in results if not result_ok(r)] == []
    shown = cli.entry_show()
    current = {E.identity(c): c for c in (E.normalize_current(e) for e in shown)}
    for want in declared:
        have = current[E.identity(want)]
        assert E.differences(want, have) == [], (want, have)
    plan = E.make_plan(declared, list(current.values()))
    assert plan.summary() == {"create": 0, "update": 0, "delete": 0, "unchanged": 3}
    # the real JSON's shape: int64 fields as strings, TTLs as numbers, no additional_attributes
    raw = [e for e in shown if e["spiffe_id"]["path"] == "/w/2"][0]
    assert isinstance(raw["created_at"], str) and raw["expires_at"] == "4102444800"
    assert raw["revision_number"] == "0" and raw["x509_svid_ttl"] == 3600
    assert raw["federates_with"] == ["partner.org"] and raw["dns_names"] == ["z.example.org", "a.example.org",
                                                                            "*.w.example.org"]


def test_update_replaces_every_field(cli):
    [full] = E.normalize_all([spec(1, hint="h", admin=True, x509_svid_ttl=60, entry_expiry=4102444800)])
    [res] = cli.entry_create([E.to_request(full)])
    entry_id = res["entry"]["id"]
    [bare] = E.normalize_all([spec(1)])
    [res] = cli.entry_update([E.to_request(bare, entry_id)])
    assert result_ok(res)
    [shown] = cli.entry_show(entry_id=entry_id)
    assert E.differences(bare, E.normalize_current(shown)) == []
    assert shown["revision_number"] == "1" and shown["hint"] == "" and shown["expires_at"] == "0"


def test_per_item_statuses_in_json_mode(cli):
    """JSON mode exits 0 when items fail; each result carries its own status (read, never the exit code)."""
    [ok] = E.normalize_all([spec(1)])
    reqs = [E.to_request(ok), E.to_request(ok),
            E.to_request(E.normalize_all([spec(2, federates_with=["nobundle.org"])])[0]),
            dict(E.to_request(ok), spiffe_id="spiffe://other.org/w/1", parent_id="spiffe://other.org/n"),
            dict(E.to_request(ok), spiffe_id="spiffe://example.org/w/3", selectors=[{"type": "unix", "value": ""}]),
            dict(E.to_request(ok), spiffe_id="spiffe://example.org/w/4", store_svid=True,
                 selectors=[{"type": "unix", "value": "uid:4"}, {"type": "k8s", "value": "ns:x"}])]
    results = cli.entry_create(reqs)  # did not raise: exit code 0
    assert [(r["status"]["code"]) for r in results] == [0, 6, 13, 3, 3, 3]
    assert "selector types must be the same when store SVID is enabled" in result_error(results[5])
    # our validation refuses that one before any call
    with pytest.raises(SpireTpmError, match="same type"):
        E.normalize_all([spec(4, store_svid=True, selectors=["unix:uid:4", "k8s:ns:x"])])
    assert result_error(results[1]) == "AlreadyExists (6): similar entry already exists"
    assert result_error(results[2]) == ('Internal (13): failed to create entry: unable to find federated bundle '
                                        '"spiffe://nobundle.org"')
    assert result_error(results[3]).startswith("InvalidArgument (3): failed to convert entry: invalid parent ID")
    assert result_error(results[4]) == "InvalidArgument (3): failed to convert entry: missing selector value"
    assert results[1]["entry"]["id"] == ""  # a failed item echoes the request
    assert results[0]["entry"]["id"] and results[0]["entry"]["revision_number"] == "0"

    [res] = cli.entry_update([E.to_request(ok, "no-such-id")])
    assert result_error(res) == "NotFound (5): failed to update entry"
    res = cli.entry_delete([results[0]["entry"]["id"], "no-such-id"])
    assert [(r["id"], r["status"]["code"]) for r in res] == [(results[0]["entry"]["id"], 0), ("no-such-id", 5)]
    assert result_error(res[1]) == "NotFound (5): entry not found"
    with pytest.raises(SpireTpmError) as err:
        raise_for_results(res, "delete entries")
    assert "1 of 2 items failed to delete entries: no-such-id: NotFound (5): entry not found" in str(err.value)
    assert cli.entry_count() == 0
    # the pretty mode of the same CLI exits 1 on such a batch: the reason we never trust json-mode exit codes alone
    out = cli._run_command([cli.binary, "entry", "delete", "-entryID", "no-such-id", "-socketPath", cli.socket_path])
    assert out[0] == 1 and "entry not found" in out[2]


def test_apply_plan_chunks_and_skips_deletes_after_a_real_failure(cli):
    current_specs = [spec(n) for n in range(20, 27)]
    cli.entry_create([E.to_request(e) for e in E.normalize_all(current_specs)])
    current = [E.normalize_current(e) for e in cli.entry_show()]
    desired = E.normalize_all([spec(n) for n in range(1, 8)] + [spec(n, hint="h") for n in range(20, 24)] +
                              [spec(8, federates_with=["nobundle.org"])])
    plan = E.make_plan(desired, current, E.check_scope(True, {"parent_id": NODE}))
    assert plan.summary() == {"create": 8, "update": 4, "delete": 3, "unchanged": 0}
    cli._run_command.words[:] = []
    with pytest.raises(SpireTpmError) as err:
        E.apply_plan(cli, plan, max_entries=3)
    d = err.value.details
    assert [(f["action"], f["spiffe_id"]) for f in d["failures"]] == [("create", "spiffe://example.org/w/8")]
    assert len(d["created"]) == 7 and len(d["updated"]) == 4 and d["deleted"] == []
    assert sorted(s["spiffe_id"] for s in d["skipped_deletes"]) == ["spiffe://example.org/w/%d" % n
                                                                    for n in (24, 25, 26)]
    assert cli._run_command.words == [["entry", "create"]] * 3 + [["entry", "update"]] * 2  # 3+3+2, 3+1; no delete
    assert "unable to find federated bundle" in str(err.value)
    assert cli.entry_count() == 7 + 7

    # without the failing entry the same plan converges, chunked the same way, deletes included
    desired = [e for e in desired if e["spiffe_id"] != "spiffe://example.org/w/8"]
    plan = E.make_plan(desired, [E.normalize_current(e) for e in cli.entry_show()],
                       E.check_scope(True, {"parent_id": NODE}))
    assert plan.summary() == {"create": 0, "update": 0, "delete": 3, "unchanged": 11}
    cli._run_command.words[:] = []
    done = E.apply_plan(cli, plan, max_entries=2)
    assert len(done["deleted"]) == 3 and cli._run_command.words == [["entry", "delete"]] * 2
    assert cli.entry_count() == 11


DNS_NAMES = ["example.org", "*.example.org", "UPPER.example.org", "bad_name!", "x y", "a-b.example.org",
             "a-b.example.org.", "a..b", "a.*.b", "*.*.example.org", "*", "*.", "-a.example", "a-.example",
             "ab--c.example", "xn--bcher-kva.example", "a" * 63 + ".org", "a" * 64 + ".org",
             ".".join(["a" * 63] * 4), "\u00e9t\u00e9.example", " ", "trailing-space.example "]


def test_dns_name_rules_are_the_servers(cli):
    """ids.dns_name_problem refuses exactly the DNS names the real server refuses (one entry per name)."""
    reqs = [{"spiffe_id": "spiffe://example.org/dns/%d" % i, "parent_id": NODE,
             "selectors": [{"type": "unix", "value": "uid:%d" % i}], "dns_names": [name]}
            for i, name in enumerate(DNS_NAMES)]
    results = cli.entry_create(reqs)
    server = dict((name, result_ok(r)) for name, r in zip(DNS_NAMES, results))
    ours = dict((name, ids.dns_name_problem(name) is None) for name in DNS_NAMES)
    assert ours == server, [(n, result_error(r)) for n, r in zip(DNS_NAMES, results) if ours[n] != server[n]]


def test_agents_and_tokens(cli, server):
    assert cli.agent_list() == []
    assert cli.agent_show("spiffe://example.org/spire/agent/join_token/x") is None
    assert cli.agent_evict("spiffe://example.org/spire/agent/join_token/x") is False
    assert cli.agent_ban("spiffe://example.org/spire/agent/join_token/x") is False
    tok = cli.token_generate(spiffe_id="spiffe://example.org/host/h", ttl=60)
    assert tok["value"] and int(tok["expires_at"]) > 0
    [alias] = cli.entry_show(spiffe_id="spiffe://example.org/host/h")
    assert alias["parent_id"]["path"] == "/spire/agent/join_token/" + tok["value"]


def test_unavailable_and_wrong_binary(server, tmp_path):
    cli = SpireCli(subprocess_run_command, str(server.bin), str(tmp_path / "no.sock"))
    with pytest.raises(SpireTpmError) as err:
        cli.entry_show()
    assert err.value.details["grpc_code"] == "Unavailable"
    assert "connect: no such file or directory" in str(err.value) and "start the SPIRE server" in str(err.value)
    cli = SpireCli(subprocess_run_command, str(tmp_path / "spire-server"), None)
    with pytest.raises(SpireTpmError, match="spire_server_bin"):
        cli.entry_show()
    (tmp_path / "not-spire").write_text("#!/bin/sh\necho hello\n")
    (tmp_path / "not-spire").chmod(0o755)
    cli = SpireCli(subprocess_run_command, str(tmp_path / "not-spire"), None)
    with pytest.raises(SpireTpmError, match="did not print JSON"):
        cli.entry_show()


def test_command_shape():
    seen = []

    def fake(argv, data=None):
        seen.append((argv, data))
        return 0, json.dumps({"results": [{"status": {"code": 0}, "entry": {"id": "x"}}]}), ""

    cli = SpireCli(fake, sys.executable, "/run/s.sock")
    cli.entry_create([{"spiffe_id": "spiffe://a/b"}])
    argv, data = seen[0]
    assert argv[1:] == ["entry", "create", "-data", "-", "-output", "json", "-socketPath", "/run/s.sock"]
    assert json.loads(data) == {"entries": [{"spiffe_id": "spiffe://a/b"}]}
