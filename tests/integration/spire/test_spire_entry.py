"""spire_entry through ansible-playbook against the spire-server simulator."""

import json

import pytest

TD = "example.org"
NODE = "spiffe://example.org/node/web1"


def entry(n, parent=NODE, **kw):
    e = {"spiffe_id": "spiffe://example.org/web/w%d" % n, "parent_id": parent, "selectors": ["unix:uid:%d" % n]}
    e.update(kw)
    return e


def task(name, opts, **kw):
    t = {"name": name, "trustroot.spire_tpm.spire_entry": opts}
    t.update(kw)
    return t


def by_spiffe(sim):
    out = {}
    for e in sim.entries():
        sid = "spiffe://%s%s" % (e["spiffe_id"]["trust_domain"], e["spiffe_id"]["path"])
        out.setdefault(sid, []).append(e)
    return out


def server_calls(sim, *words):
    return [c for c in sim.calls() if c["program"] == "spire-server" and c["argv"][:len(words)] == list(words)]


def test_create_then_noop_then_update(run_playbook, spire_sim, server_opts):
    opts = dict(server_opts, entries=[entry(1, x509_svid_ttl=3600, dns_names=["w1.example.org"]), entry(2),
                                      {"spiffe_id": NODE, "node": True, "selectors": ["tpm_devid:subject:cn:web1"]}])
    res = run_playbook([task("create", opts)], env=spire_sim.env, expect_rc=0)
    r = res.task("create")
    assert r["changed"] is True
    assert len(r["created"]) == 3 and all(c["id"] for c in r["created"])
    have = by_spiffe(spire_sim)
    assert set(have) == {NODE, "spiffe://example.org/web/w1", "spiffe://example.org/web/w2"}
    w1 = have["spiffe://example.org/web/w1"][0]
    assert w1["x509_svid_ttl"] == 3600 and w1["dns_names"] == ["w1.example.org"]
    assert have[NODE][0]["parent_id"] == {"trust_domain": TD, "path": "/spire/server"}
    assert have[NODE][0]["selectors"] == [{"type": "tpm_devid", "value": "subject:cn:web1"}]
    # one show + one create batch
    assert len(server_calls(spire_sim, "entry", "show")) == 1
    assert len(server_calls(spire_sim, "entry", "create")) == 1
    ids_before = sorted(e["id"] for e in spire_sim.entries())

    spire_sim.reset_calls()
    before = spire_sim.state_bytes()
    res = run_playbook([task("again", opts)], env=spire_sim.env, expect_rc=0)
    r = res.task("again")
    assert r["changed"] is False
    assert r["summary"] == {"create": 0, "update": 0, "delete": 0, "unchanged": 3}
    assert spire_sim.state_bytes() == before
    assert [c["argv"][:2] for c in spire_sim.calls()] == [["entry", "show"]]
    assert sorted(e["id"] for e in r["entries"]) == ids_before

    opts["entries"][0]["x509_svid_ttl"] = 7200
    opts["entries"][1]["hint"] = "second"
    res = run_playbook([task("update", opts)], env=spire_sim.env, expect_rc=0, diff=True)
    r = res.task("update")
    assert r["changed"] is True
    assert sorted(u["spiffe_id"] for u in r["updated"]) == ["spiffe://example.org/web/w1",
                                                            "spiffe://example.org/web/w2"]
    have = by_spiffe(spire_sim)
    assert have["spiffe://example.org/web/w1"][0]["x509_svid_ttl"] == 7200
    assert have["spiffe://example.org/web/w1"][0]["revision_number"] == "1"
    assert have["spiffe://example.org/web/w2"][0]["hint"] == "second"
    assert sorted(e["id"] for e in spire_sim.entries()) == ids_before  # updated in place
    assert "7200" in r["diff"]["after"] and "3600" in r["diff"]["before"]


def test_single_entry_absent(run_playbook, spire_sim, server_opts):
    opts = dict(server_opts, spiffe_id="spiffe://example.org/db", parent_id=NODE, selectors=["unix:uid:5"])
    run_playbook([task("create", opts)], env=spire_sim.env, expect_rc=0)
    assert len(spire_sim.entries()) == 1
    res = run_playbook([task("remove", dict(opts, state="absent"))], env=spire_sim.env, expect_rc=0)
    assert res.task("remove")["changed"] is True and spire_sim.entries() == []
    res = run_playbook([task("remove", dict(opts, state="absent"))], env=spire_sim.env, expect_rc=0)
    assert res.task("remove")["changed"] is False


def test_purge_only_in_scope(run_playbook, spire_sim, server_opts):
    other = "spiffe://example.org/node/db1"
    seed = [entry(i) for i in range(1, 6)] + [entry(i, parent=other) for i in range(10, 13)] + \
        [{"spiffe_id": "spiffe://example.org/batch/j1", "parent_id": NODE, "selectors": ["unix:uid:77"]}]
    run_playbook([task("seed", dict(server_opts, entries=seed))], env=spire_sim.env, expect_rc=0)
    assert len(spire_sim.entries()) == 9
    keep = [entry(1), entry(2)]
    opts = dict(server_opts, entries=keep, purge=True, purge_scope={"parent_id": NODE,
                                                                    "spiffe_id_prefix": "spiffe://example.org/web/"})
    res = run_playbook([task("purge", opts)], env=spire_sim.env, expect_rc=0)
    r = res.task("purge")
    assert sorted(d["spiffe_id"] for d in r["deleted"]) == ["spiffe://example.org/web/w%d" % i for i in (3, 4, 5)]
    left = by_spiffe(spire_sim)
    # declared ones, the other parent's and the out-of-prefix entry stay
    assert sorted(left) == sorted(["spiffe://example.org/web/w1", "spiffe://example.org/web/w2",
                                   "spiffe://example.org/batch/j1"] +
                                  ["spiffe://example.org/web/w%d" % i for i in (10, 11, 12)])
    res = run_playbook([task("purge", opts)], env=spire_sim.env, expect_rc=0)
    assert res.task("purge")["changed"] is False


def test_purge_everything_in_scope_with_empty_list(run_playbook, spire_sim, server_opts):
    other = "spiffe://example.org/node/db1"
    run_playbook([task("seed", dict(server_opts, entries=[entry(1), entry(2), entry(3, parent=other)]))],
                 env=spire_sim.env, expect_rc=0)
    res = run_playbook([task("empty", dict(server_opts, entries=[], purge=True, purge_scope={"parent_id": NODE}))],
                       env=spire_sim.env, expect_rc=0)
    assert len(res.task("empty")["deleted"]) == 2
    assert list(by_spiffe(spire_sim)) == ["spiffe://example.org/web/w3"]


def test_purge_without_scope_refused(run_playbook, spire_sim, server_opts):
    run_playbook([task("seed", dict(server_opts, entries=[entry(1), entry(2)]))], env=spire_sim.env, expect_rc=0)
    before = spire_sim.state_bytes()
    spire_sim.reset_calls()
    res = run_playbook([task("purge", dict(server_opts, entries=[entry(1)], purge=True))], env=spire_sim.env,
                       expect_rc=2)
    r = res.task("purge")
    assert r["failed"] is True and "purge_scope" in r["msg"]
    assert spire_sim.state_bytes() == before
    assert spire_sim.calls() == []


@pytest.mark.parametrize("bad, words", [
    ({"spiffe_id": "spiffe://Example.org/x"}, "trust domain characters"),
    ({"spiffe_id": "spiffe://example.org/a//b"}, "empty segments"),
    ({"spiffe_id": "spiffe://example.org/a/"}, "trailing slash"),
    ({"spiffe_id": "http://example.org/a"}, "scheme"),
    ({"parent_id": "spiffe://other.org/node"}, "different trust domain" if False else "trust domain other.org"),
    ({"selectors": ["nocolon"]}, "no ':'"),
    ({"selectors": [":value"]}, "empty type"),
    ({"x509_svid_ttl": -5}, "must not be negative"),
    ({"dns_names": ["bad_name!.example.org"]}, "invalid label"),
])
def test_invalid_inputs_change_nothing(run_playbook, spire_sim, server_opts, bad, words):
    run_playbook([task("seed", dict(server_opts, entries=[entry(1)]))], env=spire_sim.env, expect_rc=0)
    before = spire_sim.state_bytes()
    spire_sim.reset_calls()
    good = entry(2)
    broken = dict(entry(3), **bad)
    res = run_playbook([task("bad", dict(server_opts, entries=[good, broken]))], env=spire_sim.env, expect_rc=2)
    r = res.task("bad")
    assert r["failed"] is True
    assert words in r["msg"], r["msg"]
    assert "nothing was changed" in r["msg"]
    assert spire_sim.state_bytes() == before
    assert spire_sim.calls() == []  # rejected before any call


def test_federated_parent_allowed(run_playbook, spire_sim, server_opts):
    e = entry(1, parent="spiffe://partner.org/node/x", federates_with=["spiffe://partner.org"])
    res = run_playbook([task("fed", dict(server_opts, entries=[e]))], env=spire_sim.env, expect_rc=0)
    assert res.task("fed")["changed"] is True
    assert spire_sim.entries()[0]["federates_with"] == ["partner.org"]
    res = run_playbook([task("fed", dict(server_opts, entries=[e]))], env=spire_sim.env, expect_rc=0)
    assert res.task("fed")["changed"] is False


def test_check_mode_changes_nothing(run_playbook, spire_sim, server_opts):
    run_playbook([task("seed", dict(server_opts, entries=[entry(1), entry(2), entry(3)]))], env=spire_sim.env,
                 expect_rc=0)
    before = spire_sim.state_bytes()
    spire_sim.reset_calls()
    opts = dict(server_opts, entries=[entry(1, hint="x"), entry(4)], purge=True,
                purge_scope={"parent_id": NODE})
    res = run_playbook([task("plan", opts)], env=spire_sim.env, check=True, diff=True, expect_rc=0)
    r = res.task("plan")
    assert r["changed"] is True
    assert r["summary"] == {"create": 1, "update": 1, "delete": 2, "unchanged": 0}
    assert [c["id"] for c in r["created"]] == [None]
    assert spire_sim.state_bytes() == before
    assert [c["argv"][:2] for c in spire_sim.calls()] == [["entry", "show"]]
    assert "w4" in r["diff"]["after"]


def test_partial_failure_reports_and_skips_deletes(run_playbook, spire_sim, server_opts):
    run_playbook([task("seed", dict(server_opts, entries=[entry(1), entry(9)]))], env=spire_sim.env, expect_rc=0)
    env = dict(spire_sim.env, SPIRE_SIM_TEST_RACE_CREATE="spiffe://example.org/web/w3")
    opts = dict(server_opts, entries=[entry(1), entry(2), entry(3), entry(4)], purge=True,
                purge_scope={"parent_id": NODE})
    res = run_playbook([task("race", opts)], env=env, expect_rc=2)
    r = res.task("race")
    assert r["failed"] is True
    assert "create spiffe://example.org/web/w3: AlreadyExists (6): similar entry already exists" in r["msg"]
    assert sorted(c["spiffe_id"] for c in r["created"]) == ["spiffe://example.org/web/w2",
                                                            "spiffe://example.org/web/w4"]
    assert [f["spiffe_id"] for f in r["failures"]] == ["spiffe://example.org/web/w3"]
    assert [s["spiffe_id"] for s in r["skipped_deletes"]] == ["spiffe://example.org/web/w9"]
    assert r["changed"] is True
    have = by_spiffe(spire_sim)
    assert "spiffe://example.org/web/w9" in have  # the delete was not attempted
    assert len(have["spiffe://example.org/web/w3"]) == 1  # only the racing client's entry
    # a second run converges: w3 now exists (similar), w9 is purged
    res = run_playbook([task("race", opts)], env=env, expect_rc=0)
    r = res.task("race")
    assert [d["spiffe_id"] for d in r["deleted"]] == ["spiffe://example.org/web/w9"]
    assert [u["spiffe_id"] for u in r["updated"]] == ["spiffe://example.org/web/w3"]  # its hint is reset


def test_chunking(run_playbook, spire_sim, server_opts):
    many = [entry(i) for i in range(1, 1202)]
    res = run_playbook([task("many", dict(server_opts, entries=many))], extra_vars=None, env=spire_sim.env,
                       expect_rc=0)
    r = res.task("many")
    assert len(r["created"]) == 1201
    creates = server_calls(spire_sim, "entry", "create")
    assert len(creates) == 3  # 500 + 500 + 201
    assert len(spire_sim.entries()) == 1201
    for c in creates:
        assert "-data" in c["argv"] and c["argv"][c["argv"].index("-data") + 1] == "-"
    spire_sim.reset_calls()
    changed = [entry(i, hint="h") for i in range(1, 1202)]
    res = run_playbook([task("many", dict(server_opts, entries=changed[:600], purge=True,
                                           purge_scope={"parent_id": NODE}))], env=spire_sim.env, expect_rc=0)
    r = res.task("many")
    assert len(r["updated"]) == 600 and len(r["deleted"]) == 601
    assert len(server_calls(spire_sim, "entry", "update")) == 2
    assert len(server_calls(spire_sim, "entry", "delete")) == 2
    assert len(spire_sim.entries()) == 600


def test_server_not_running(run_playbook, spire_sim, server_opts):
    spire_sim.stop()
    res = run_playbook([task("down", dict(server_opts, entries=[entry(1)]))], env=spire_sim.env, expect_rc=2)
    r = res.task("down")
    assert "connect: no such file or directory" in r["msg"]
    assert "start the SPIRE server" in r["msg"]
    assert "Traceback" not in json.dumps(r)
