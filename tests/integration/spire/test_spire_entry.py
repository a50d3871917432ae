"""spire_entry through ansible-playbook against a REAL spire-server (built from the Go module proxy).

Every outcome is read back from the server itself (``entry show -output json`` through the test harness), never from
the module's own result alone. CLI invocations are counted with a logging wrapper that execs the real binary.
"""

import json
import time

import pytest
from spire_testlib import by_spiffe, bundle_set, opts_for, raw_show, request, seed, sid

from support import spire as spire_support

TD = "example.org"
NODE = "spiffe://example.org/node/web1"
OTHER = "spiffe://example.org/node/db1"
ALIAS = "spiffe://example.org/node/web1-alias"
W = "spiffe://example.org/web/w%d"


def entry(n, parent=NODE, **kw):
    e = {"spiffe_id": W % n, "parent_id": parent, "selectors": ["unix:uid:%d" % n]}
    e.update(kw)
    return e


def task(name, opts, **kw):
    t = {"name": name, "trustroot.spire_tpm.spire_entry": opts}
    t.update(kw)
    return t


def only(view, spiffe_id):
    [e] = view[spiffe_id]
    return e


@pytest.mark.parametrize("version", [spire_support.DEFAULT_VERSION, spire_support.NEWEST_VERSION])
def test_core_lifecycle(run_playbook, spire_server_factory, recorder, version):
    srv = spire_server_factory(version=version)
    out = srv.run("--version")
    assert (out.stdout + out.stderr).strip().startswith(version)  # the binary under test is that version
    rec = recorder(srv)
    opts = opts_for(srv, rec.path)
    # entries this task does not own, made through the real CLI: another parent, and another prefix under NODE
    seed(srv, [request(W % 10, OTHER, "unix:uid:10"),
               request("spiffe://example.org/batch/j1", NODE, "unix:uid:77")])
    foreign = {k: v for k, v in by_spiffe(srv).items()}

    decl = [entry(1, x509_svid_ttl=3600, dns_names=["w1.example.org", "alt.example.org"]),
            # store_svid: the agent hands the entry to the SVIDStore its selector type names, so an SVIDStore's type
            entry(2, jwt_svid_ttl=120, admin=True, downstream=True, store_svid=True, entry_expiry=4102444800,
                  selectors=["aws_secretsmanager:secretname:w2"]),
            {"spiffe_id": ALIAS, "node": True, "selectors": ["tpm_devid:subject:cn:web1.example.org"]}]

    # 1. create: one read, one batched create
    r = run_playbook([task("create", dict(opts, entries=decl))], expect_rc=0).task("create")
    assert r["changed"] is True and r["summary"] == {"create": 3, "update": 0, "delete": 0, "unchanged": 0}
    assert rec.words() == [["entry", "show"], ["entry", "create"]]
    view = by_spiffe(srv)
    w1, w2, alias = only(view, W % 1), only(view, W % 2), only(view, ALIAS)
    assert sid(w1["parent_id"]) == NODE and w1["selectors"] == [{"type": "unix", "value": "uid:1"}]
    assert w1["x509_svid_ttl"] == 3600 and w1["dns_names"] == ["w1.example.org", "alt.example.org"]
    assert (w2["jwt_svid_ttl"], w2["admin"], w2["downstream"], w2["store_svid"], w2["expires_at"]) == \
        (120, True, True, True, "4102444800")
    assert sid(alias["parent_id"]) == "spiffe://example.org/spire/server"  # node: true → parented to the server
    assert alias["selectors"] == [{"type": "tpm_devid", "value": "subject:cn:web1.example.org"}]
    assert w2["selectors"] == [{"type": "aws_secretsmanager", "value": "secretname:w2"}]
    assert sorted(c["id"] for c in r["created"]) == sorted(e["id"] for e in (w1, w2, alias))
    assert sorted(e["id"] for e in r["entries"]) == sorted(e["id"] for e in (w1, w2, alias))

    # 2. no-op rerun: nothing written, the server's JSON byte-identical (revision numbers included)
    before = raw_show(srv)
    rec.reset()
    r = run_playbook([task("again", dict(opts, entries=decl))], expect_rc=0).task("again")
    assert r["changed"] is False and r["summary"] == {"create": 0, "update": 0, "delete": 0, "unchanged": 3}
    assert raw_show(srv) == before
    assert rec.words() == [["entry", "show"]]

    # 3. update in place (diff mode): same IDs, revision 1 for the changed ones only
    decl[0]["x509_svid_ttl"] = 7200
    decl[1]["hint"] = "second"
    rec.reset()
    r = run_playbook([task("update", dict(opts, entries=decl))], diff=True, expect_rc=0).task("update")
    assert r["changed"] is True
    assert sorted(u["spiffe_id"] for u in r["updated"]) == [W % 1, W % 2]
    assert [u["changed_fields"] for u in sorted(r["updated"], key=lambda u: u["spiffe_id"])] == \
        [["x509_svid_ttl"], ["hint"]]
    assert rec.words() == [["entry", "show"], ["entry", "update"]]
    view = by_spiffe(srv)
    assert (only(view, W % 1)["id"], only(view, W % 1)["x509_svid_ttl"], only(view, W % 1)["revision_number"]) == \
        (w1["id"], 7200, "1")
    assert only(view, W % 1)["dns_names"] == ["w1.example.org", "alt.example.org"]
    new_w2 = only(view, W % 2)
    assert (new_w2["id"], new_w2["hint"], new_w2["revision_number"]) == (w2["id"], "second", "1")
    assert (new_w2["admin"], new_w2["downstream"], new_w2["store_svid"], new_w2["jwt_svid_ttl"]) == (True, True, True,
                                                                                                     120)
    assert only(view, ALIAS) == alias  # untouched, revision 0
    assert '"x509_svid_ttl": 7200' in r["diff"]["after"] and '"x509_svid_ttl": 3600' in r["diff"]["before"]
    for k, v in foreign.items():
        assert view[k] == v

    # 4. purge inside the scope only: two undeclared entries under NODE/web/ go; the rest stays byte-identical
    seed(srv, [request(W % 3, NODE, "unix:uid:3"), request(W % 4, NODE, "unix:uid:4", "unix:gid:4")])
    kept = {k: v for k, v in by_spiffe(srv).items() if k not in (W % 3, W % 4)}
    scope = {"parent_id": NODE, "spiffe_id_prefix": "spiffe://example.org/web/"}
    rec.reset()
    r = run_playbook([task("purge", dict(opts, entries=decl, purge=True, purge_scope=scope))],
                     expect_rc=0).task("purge")
    assert r["changed"] is True and sorted(d["spiffe_id"] for d in r["deleted"]) == [W % 3, W % 4]
    assert rec.words() == [["entry", "show"], ["entry", "delete"]]
    assert by_spiffe(srv) == kept  # declared ones, the other parent's entry, /batch/j1 and the alias untouched

    before = raw_show(srv)
    r = run_playbook([task("purge", dict(opts, entries=decl, purge=True, purge_scope=scope))],
                     expect_rc=0).task("purge")
    assert r["changed"] is False and raw_show(srv) == before



def test_single_entry_present_then_absent(run_playbook, spire_server, server_opts):
    opts = dict(server_opts, spiffe_id="spiffe://example.org/db", parent_id=NODE, selectors=["unix:uid:5"],
                hint="db")
    r = run_playbook([task("create", opts)], expect_rc=0).task("create")
    db = only(by_spiffe(spire_server), "spiffe://example.org/db")
    assert r["changed"] is True and r["entries"][0]["id"] == db["id"] and db["hint"] == "db"
    res = run_playbook([task("remove", dict(opts, state="absent")), task("remove again", dict(opts, state="absent"))],
                       expect_rc=0)
    assert res.task("remove")["changed"] is True
    assert [d["id"] for d in res.task("remove")["deleted"]] == [db["id"]]
    assert res.task("remove again")["changed"] is False
    assert by_spiffe(spire_server) == {}


def test_purge_refused_without_scope_and_empty_declaration(run_playbook, spire_server, recorder):
    seed(spire_server, [request(W % 1, NODE, "unix:uid:1"), request(W % 2, NODE, "unix:uid:2"),
                        request(W % 3, OTHER, "unix:uid:3")])
    rec = recorder(spire_server)
    opts = opts_for(spire_server, rec.path)
    before = raw_show(spire_server)
    res = run_playbook([task("no scope", dict(opts, entries=[entry(1)], purge=True), ignore_errors=True),
                        task("scope without purge", dict(opts, entries=[entry(1)], purge_scope={"parent_id": NODE}),
                             ignore_errors=True)], expect_rc=0)
    r = res.task("no scope")
    assert r["failed"] is True and "needs a purge_scope" in r["msg"] and "Fix:" in r["msg"]
    r = res.task("scope without purge")
    assert r["failed"] is True and "purge is false" in r["msg"]
    assert raw_show(spire_server) == before
    assert rec.calls() == []  # refused before any call

    r = run_playbook([task("empty", dict(opts, entries=[], purge=True, purge_scope={"parent_id": NODE}))],
                     expect_rc=0).task("empty")
    assert sorted(d["spiffe_id"] for d in r["deleted"]) == [W % 1, W % 2]
    assert list(by_spiffe(spire_server)) == [W % 3]


# (declared entry overrides, words expected in the message, the same input as a request the REAL server refuses)
INVALID = [
    ({"spiffe_id": "spiffe://Example.org/x"}, "trust domain characters", True),
    ({"spiffe_id": "spiffe://example.org/a//b"}, "empty segments", True),
    ({"spiffe_id": "spiffe://example.org/a/"}, "trailing slash", True),
    ({"spiffe_id": "http://example.org/a"}, "scheme", True),
    ({"spiffe_id": "spiffe://example.org"}, "needs a path", True),
    ({"spiffe_id": "spiffe://example.org/spire/x"}, "reserved namespace", True),
    ({"parent_id": "spiffe://other.org/node"}, "trust domain other.org", True),
    ({"parent_id": "spiffe://partner.org/node", "federates_with": ["partner.org"]}, "trust domain partner.org", True),
    ({"selectors": [":value"]}, "empty type", True),
    ({"selectors": ["nocolon"]}, "no ':'", None),
    ({"x509_svid_ttl": -5}, "must not be negative", True),
    ({"dns_names": ["a..b.example.org"]}, "invalid label", True),
    ({"dns_names": ["w3.example.org."]}, "ends with a dot", True),
    ({"store_svid": True, "selectors": ["unix:uid:3", "k8s:ns:x"]}, "same type", True),
    ({"dns_names": ["-w3.example.org"]}, "hyphen", True),
]


def _as_request(spec):
    req = {"spiffe_id": spec["spiffe_id"], "parent_id": spec.get("parent_id", NODE),
           "selectors": [dict(zip(("type", "value"), s.split(":", 1))) for s in spec["selectors"]]}
    for k in ("x509_svid_ttl", "dns_names", "federates_with", "store_svid"):
        if k in spec:
            req[k] = spec[k]
    return req


def test_invalid_inputs_change_nothing(run_playbook, spire_server, recorder):
    seed(spire_server, [request(W % 1, NODE, "unix:uid:1")])
    rec = recorder(spire_server)
    opts = opts_for(spire_server, rec.path)
    before = raw_show(spire_server)
    tasks = []
    for i, (bad, _words, _server) in enumerate(INVALID):
        tasks.append(task("bad%d" % i, dict(opts, entries=[entry(2), dict(entry(3), **bad)]), ignore_errors=True))
    tasks.append(task("dup", dict(opts, entries=[entry(2), entry(2, hint="x")]), ignore_errors=True))
    tasks.append(task("node and parent", dict(opts, entries=[dict(entry(2), node=True)]), ignore_errors=True))
    res = run_playbook(tasks, expect_rc=0)
    for i, (bad, words, _server) in enumerate(INVALID):
        r = res.task("bad%d" % i)
        assert r["failed"] is True and words in r["msg"], (bad, r["msg"])
        assert "nothing was changed" in r["msg"] and "Traceback" not in json.dumps(r)
    assert "declare the same entry" in res.task("dup")["msg"]
    assert "mutually exclusive" in res.task("node and parent")["msg"]
    assert raw_show(spire_server) == before
    assert rec.calls() == []  # every one rejected before the first spire-server call

    # our rules are the server's: the same inputs sent straight to the real server are refused too
    for bad, words, server_refuses in INVALID:
        if server_refuses is None:
            continue
        payload = json.dumps({"entries": [_as_request(dict(entry(3), **bad))]})
        out = spire_server.run("entry", "create", "-data", "-", "-socketPath", spire_server.socket_path, "-output",
                               "json", input=payload)
        refused = out.returncode != 0 or json.loads(out.stdout)["results"][0]["status"]["code"] != 0
        assert refused is server_refuses, (bad, out.stdout, out.stderr)
    assert raw_show(spire_server) == before


def entry_count(server):
    """The real server's ``entry count``."""
    out = server.run("entry", "count", "-socketPath", server.socket_path, "-output", "json")
    assert out.returncode == 0, out.stderr
    return int(json.loads(out.stdout).get("count", 0))


PCR = "tpm:pcr:0:" + "3d" * 32
# (name, declared entries, words the message must hold): each refused before anything reaches the server
CANNOT_MATCH = [
    ("pcr workload", [entry(2, selectors=["unix:uid:2", PCR])],
     ["entries[0] (%s): selector %r can never match" % (W % 2, PCR), "no SPIRE attestor emits PCR",
      "playbooks/boot_state.yml", "boot_state_policy"]),
    ("pcr alias", [{"spiffe_id": ALIAS, "node": True, "selectors": [PCR]}], ["no SPIRE attestor emits PCR"]),
    ("unknown type", [entry(2), entry(3, selectors=["my_attestor:queue:nightly"])],
     ["entries[1] (%s): selector 'my_attestor:queue:nightly' has type 'my_attestor'" % (W % 3),
      "workloads: docker, k8s", "add 'my_attestor' to allow_selector_types"]),
    ("node selector on a workload", [entry(2, selectors=["tpm_devid:subject:cn:web1.example.org"])],
     ["is a node selector", "node: true"]),
    ("workload selector on an alias", [{"spiffe_id": ALIAS, "node": True, "selectors": ["unix:uid:0"]}],
     ["is a workload selector", "node alias"]),
    ("store_svid with unix", [entry(2, store_svid=True)], ["store_svid: true", "SVIDStore"]),
    ("tpm_devid value", [{"spiffe_id": ALIAS, "node": True, "selectors": ["tpm_devid:fingerprint:" + "ab" * 20]}],
     ["subject:cn:, issuer:cn:, ca:fingerprint:"]),
]


def test_selectors_that_cannot_match_are_refused(run_playbook, spire_server, recorder):
    seed(spire_server, [request(W % 1, NODE, "unix:uid:1"),
                        # an entry that never matched, made straight through the CLI (the server takes anything)
                        request(W % 9, NODE, "unix:uid:9", PCR)])
    rec = recorder(spire_server)
    opts = opts_for(spire_server, rec.path)
    before, count = raw_show(spire_server), entry_count(spire_server)
    assert count == 2
    tasks = []
    for name, decl, _words in CANNOT_MATCH:
        tasks.append(task(name, dict(opts, entries=decl), ignore_errors=True))
        tasks.append(task(name + " (check)", dict(opts, entries=decl), ignore_errors=True, check_mode=True))
    tasks.append(task("single", dict(opts, spiffe_id=W % 5, parent_id=NODE, selectors=[PCR]), ignore_errors=True))
    tasks.append(task("allowed elsewhere", dict(opts, entries=CANNOT_MATCH[2][1],
                                                allow_selector_types=["other_attestor"]), ignore_errors=True))
    tasks.append(task("bad allow", dict(opts, entries=[entry(2)], allow_selector_types=["tpm:pcr"]),
                      ignore_errors=True))
    res = run_playbook(tasks, expect_rc=0)
    for name, _decl, words in CANNOT_MATCH:
        for tname in (name, name + " (check)"):
            r = res.task(tname)
            assert r["failed"] is True and r["changed"] is False, (tname, r)
            assert "invalid registration entries, nothing was changed" in r["msg"], r["msg"]
            for w in words:
                assert w in r["msg"], (tname, w, r["msg"])
    r = res.task("single")
    assert r["failed"] is True and "(%s): selector %r can never match" % (W % 5, PCR) in r["msg"]
    assert "my_attestor" in res.task("allowed elsewhere")["msg"]
    assert "not a selector type" in res.task("bad allow")["msg"]
    assert "Traceback" not in res.stdout
    assert rec.calls() == []  # nothing was sent to the server (not even an entry show)
    assert entry_count(spire_server) == count and raw_show(spire_server) == before

    # a custom plugin's type goes through with allow_selector_types (check mode first: planned, nothing written)
    custom = dict(opts, entries=[entry(1), entry(3, selectors=["my_attestor:queue:nightly"])],
                  allow_selector_types=["my_attestor"])
    r = run_playbook([task("plan", custom)], check=True, expect_rc=0).task("plan")
    assert r["changed"] is True and r["summary"]["create"] == 1 and entry_count(spire_server) == count
    r = run_playbook([task("custom", custom)], expect_rc=0).task("custom")
    assert r["changed"] is True and [c["spiffe_id"] for c in r["created"]] == [W % 3]
    assert entry_count(spire_server) == count + 1
    assert only(by_spiffe(spire_server), W % 3)["selectors"] == [{"type": "my_attestor", "value": "queue:nightly"}]

    # the entry that never matched can still be deleted (entries to be absent are not checked)
    r = run_playbook([task("delete", dict(opts, spiffe_id=W % 9, parent_id=NODE, selectors=["unix:uid:9", PCR],
                                          state="absent"))], expect_rc=0).task("delete")
    assert r["changed"] is True and [d["spiffe_id"] for d in r["deleted"]] == [W % 9]
    assert entry_count(spire_server) == count and W % 9 not in by_spiffe(spire_server)


@pytest.mark.parametrize("version", [spire_support.DEFAULT_VERSION, spire_support.NEWEST_VERSION])
def test_spiffe_id_node_selector_depends_on_the_version(run_playbook, spire_server_factory, recorder, version):
    """A node alias selecting agents by spiffe_id:<agent ID> can match only from SPIRE 1.15 (with
    agent_spiffe_id_as_selector); the module asks the binary for its version only then. The token generate
    entry shape (parent the agent ID, selector spiffe_id:<agent ID>) is accepted on every version."""
    srv = spire_server_factory(version=version)
    rec = recorder(srv)
    opts = opts_for(srv, rec.path)
    agent = "spiffe://example.org/spire/agent/join_token/0f1e2d3c-0000-4000-8000-000000000000"
    token_alias = {"spiffe_id": "spiffe://example.org/host/a3", "parent_id": agent, "selectors": ["spiffe_id:" + agent]}
    by_id = {"spiffe_id": ALIAS, "node": True, "selectors": ["spiffe_id:" + agent]}
    r = run_playbook([task("token alias", dict(opts, entries=[token_alias]))], expect_rc=0).task("token alias")
    assert r["changed"] is True
    assert rec.words() == [["entry", "show"], ["entry", "create"]]  # no version asked: every version accepts it
    rec.reset()
    count = entry_count(srv)
    old_line = version.startswith("1.13.")
    r = run_playbook([task("alias", dict(opts, entries=[by_id]))], expect_rc=2 if old_line else 0).task("alias")
    if old_line:
        assert r["failed"] is True and "can never match on a node alias with SPIRE %s" % version in r["msg"]
        assert "agent_spiffe_id_as_selector" in r["msg"]
        assert rec.calls() == [["--version"]]  # the binary's version, nothing sent to the server
        assert entry_count(srv) == count
    else:
        assert r["changed"] is True
        assert rec.words()[0] == ["--version"] and rec.words()[1:] == [["entry", "show"], ["entry", "create"]]
        assert entry_count(srv) == count + 1


def test_check_and_diff_mode_change_nothing(run_playbook, spire_server, recorder):
    seed(spire_server, [request(W % n, NODE, "unix:uid:%d" % n) for n in (1, 2, 3)])
    rec = recorder(spire_server)
    opts = opts_for(spire_server, rec.path)
    before = raw_show(spire_server)
    decl = dict(opts, entries=[entry(1, hint="x"), entry(4)], purge=True, purge_scope={"parent_id": NODE})
    r = run_playbook([task("plan", decl)], check=True, diff=True, expect_rc=0).task("plan")
    assert r["changed"] is True
    assert r["summary"] == {"create": 1, "update": 1, "delete": 2, "unchanged": 0}
    assert [c["id"] for c in r["created"]] == [None]
    assert sorted(d["spiffe_id"] for d in r["deleted"]) == [W % 2, W % 3]
    assert '"hint": "x"' in r["diff"]["after"] and W % 4 in r["diff"]["after"] and W % 3 in r["diff"]["before"]
    assert raw_show(spire_server) == before
    assert rec.words() == [["entry", "show"]]


def test_real_partial_failure_reports_and_deletes_nothing(run_playbook, spire_server, recorder, tmp_path):
    """Inputs our validation accepts but the real server refuses per item: federates_with a trust domain the server
    has no bundle for (v1.13.3: code 13 "unable to find federated bundle"), and an entry of a trust domain that is
    not the server's (code 3). The rest of the batch is created; no delete runs."""
    seed(spire_server, [request(W % 1, NODE, "unix:uid:1"), request(W % 9, NODE, "unix:uid:9")])
    rec = recorder(spire_server)
    opts = opts_for(spire_server, rec.path)
    fed = entry(3, federates_with=["spiffe://partner.org"])
    foreign_td = {"spiffe_id": "spiffe://other.org/web/w5", "parent_id": "spiffe://other.org/node/web1",
                  "selectors": ["unix:uid:5"]}
    decl = [entry(1), entry(2), fed, entry(4), foreign_td]
    scope = {"parent_id": NODE}
    r = run_playbook([task("batch", dict(opts, entries=decl, purge=True, purge_scope=scope))],
                     expect_rc=2).task("batch")
    assert r["failed"] is True and r["changed"] is True
    fails = {f["spiffe_id"]: f for f in r["failures"]}
    assert set(fails) == {W % 3, "spiffe://other.org/web/w5"}
    assert fails[W % 3]["action"] == "create"
    assert fails[W % 3]["error"].startswith("Internal (13): failed to create entry: unable to find federated bundle")
    assert fails["spiffe://other.org/web/w5"]["error"].startswith("InvalidArgument (3): failed to convert entry: "
                                                                  "invalid parent ID")
    assert "unable to find federated bundle" in r["msg"] and "Already applied: 2 created" in r["msg"]
    assert sorted(c["spiffe_id"] for c in r["created"]) == [W % 2, W % 4]
    assert [s["spiffe_id"] for s in r["skipped_deletes"]] == [W % 9]
    assert rec.words() == [["entry", "show"], ["entry", "create"]]  # no delete call at all
    view = by_spiffe(spire_server)
    assert sorted(view) == [W % 1, W % 2, W % 4, W % 9]
    assert sorted(c["id"] for c in r["created"]) == sorted(view[s][0]["id"] for s in (W % 2, W % 4))

    # the cause was real: give the server partner.org's bundle and the same declaration (minus the foreign one)
    # converges — w3 created with its federation, w9 purged
    bundle_set(spire_server, "partner.org", tmp_path)
    decl.pop()
    r = run_playbook([task("batch", dict(opts, entries=decl, purge=True, purge_scope=scope))],
                     expect_rc=0).task("batch")
    assert [c["spiffe_id"] for c in r["created"]] == [W % 3] and [d["spiffe_id"] for d in r["deleted"]] == [W % 9]
    view = by_spiffe(spire_server)
    assert sorted(view) == [W % 1, W % 2, W % 3, W % 4]
    assert only(view, W % 3)["federates_with"] == ["partner.org"]
    before = raw_show(spire_server)
    r = run_playbook([task("batch", dict(opts, entries=decl, purge=True, purge_scope=scope))],
                     expect_rc=0).task("batch")
    assert r["changed"] is False and raw_show(spire_server) == before


def test_already_exists_race(run_playbook, spire_server, recorder, tmp_path):
    """Another client creates a similar entry between our ``entry show`` and our ``entry create``.

    The server is real and so is the conflict; only the timing is staged: the spire_server_bin wrapper, on the first
    ``entry create``, first creates the conflicting entry through the real CLI, then execs the real binary."""
    seed(spire_server, [request(W % 1, NODE, "unix:uid:1"), request(W % 9, NODE, "unix:uid:9")])
    conflict = tmp_path / "conflict.json"
    conflict.write_text(json.dumps({"entries": [request(W % 3, NODE, "unix:uid:3", hint="racer")]}))
    marker = tmp_path / "raced"
    rec = recorder(spire_server, before_exec=(
        "if [ \"$1 $2\" = 'entry create' ] && [ ! -e '%s' ]; then\n"
        "  : > '%s'\n"
        "  '%s' entry create -data '%s' -socketPath '%s' -output json > '%s.out' || exit 99\n"
        "fi\n" % (marker, marker, spire_server.bin, conflict, spire_server.socket_path, marker)))
    opts = opts_for(spire_server, rec.path)
    decl = dict(opts, entries=[entry(1), entry(2), entry(3), entry(4)], purge=True, purge_scope={"parent_id": NODE})
    r = run_playbook([task("race", decl)], expect_rc=2).task("race")
    racer = json.loads((tmp_path / "raced.out").read_text())["results"][0]
    assert racer["status"]["code"] == 0  # the other client's create went through first
    assert r["failed"] is True and r["changed"] is True
    assert "create %s: AlreadyExists (6): similar entry already exists" % (W % 3) in r["msg"]
    assert [(f["action"], f["spiffe_id"]) for f in r["failures"]] == [("create", W % 3)]
    assert sorted(c["spiffe_id"] for c in r["created"]) == [W % 2, W % 4]
    assert [s["spiffe_id"] for s in r["skipped_deletes"]] == [W % 9]
    view = by_spiffe(spire_server)
    assert W % 9 in view  # no delete was attempted
    assert [(e["id"], e["hint"]) for e in view[W % 3]] == [(racer["entry"]["id"], "racer")]  # only the racer's
    assert rec.words() == [["entry", "show"], ["entry", "create"]]

    # a second run converges: the racer's entry is similar to ours, so it is updated in place; w9 is purged
    r = run_playbook([task("race", decl)], expect_rc=0).task("race")
    assert [u["spiffe_id"] for u in r["updated"]] == [W % 3] and [d["spiffe_id"] for d in r["deleted"]] == [W % 9]
    view = by_spiffe(spire_server)
    assert sorted(view) == [W % n for n in (1, 2, 3, 4)]
    assert [(e["id"], e["hint"], e["revision_number"]) for e in view[W % 3]] == [(racer["entry"]["id"], "", "1")]


def test_large_batch_is_chunked(run_playbook, spire_server, recorder):
    rec = recorder(spire_server)
    opts = opts_for(spire_server, rec.path)
    many = [entry(i) for i in range(1, 1202)]
    t = time.monotonic()
    r = run_playbook([task("many", dict(opts, entries="{{ decl }}"))], extra_vars={"decl": many},
                     expect_rc=0).task("many")
    created_in = time.monotonic() - t
    assert len(r["created"]) == 1201
    assert rec.words() == [["entry", "show"]] + [["entry", "create"]] * 3  # 500 + 500 + 201
    assert all(c[2:4] == ["-data", "-"] for c in rec.calls()[1:])
    view = by_spiffe(spire_server)
    assert sorted(view) == sorted(W % i for i in range(1, 1202))
    assert sorted(c["id"] for c in r["created"]) == sorted(v[0]["id"] for v in view.values())

    rec.reset()
    changed = [entry(i, hint="h") for i in range(1, 601)]
    r = run_playbook([task("many", dict(opts, entries="{{ decl }}", purge=True, purge_scope={"parent_id": NODE}))],
                     extra_vars={"decl": changed}, expect_rc=0).task("many")
    assert len(r["updated"]) == 600 and len(r["deleted"]) == 601
    assert rec.words() == [["entry", "show"]] + [["entry", "update"]] * 2 + [["entry", "delete"]] * 2
    view = by_spiffe(spire_server)
    assert sorted(view) == sorted(W % i for i in range(1, 601))
    assert {v[0]["hint"] for v in view.values()} == {"h"}
    assert {v[0]["revision_number"] for v in view.values()} == {"1"}
    print("1,201 entries created through the module in %.1f s" % created_in)


def test_server_down_wrong_socket_missing_binary(run_playbook, spire_server, spire_agent_factory, tmp_path):
    agent = spire_agent_factory(spire_server, ("join_token", spire_server.token()))
    spire_server.stop()
    base = {"spiffe_id": W % 1, "parent_id": NODE, "selectors": ["unix:uid:1"]}
    down = opts_for(spire_server)
    tasks = [
        task("down", dict(down, **base), ignore_errors=True),
        task("agent socket", dict(down, socket_path=str(agent.socket_path), **base), ignore_errors=True),
        task("no binary", dict(down, spire_server_bin=str(tmp_path / "nope" / "spire-server"), **base),
             ignore_errors=True),
        {"name": "info down", "trustroot.spire_tpm.spire_agent_info": down, "ignore_errors": True},
        {"name": "token down", "trustroot.spire_tpm.spire_join_token": down, "ignore_errors": True},
        {"name": "evict down", "trustroot.spire_tpm.spire_agent": dict(down, spiffe_id=NODE), "ignore_errors": True},
    ]
    res = run_playbook(tasks, expect_rc=0)
    for name in ("down", "info down", "token down", "evict down"):
        r = res.task(name)
        assert r["failed"] is True
        assert "code = Unavailable" in r["msg"] and "connect: no such file or directory" in r["msg"], r["msg"]
        assert "Fix: start the SPIRE server" in r["msg"] and r["grpc_code"] == "Unavailable"
    r = res.task("agent socket")
    assert "unknown service spire.api.server.entry.v1.Entry" in r["msg"]
    assert "not a SPIRE server's private API socket" in r["msg"]
    r = res.task("no binary")
    assert "does not exist or is not executable" in r["msg"] and "spire_server_bin" in r["msg"]
    assert "Traceback" not in res.stdout
