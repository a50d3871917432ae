"""spire_join_token, spire_agent_info and spire_agent through ansible-playbook against a REAL spire-server with REAL
spire-agents (join_token, and tpm_devid on a swtpm). What the modules did is read back from the server's own
``agent list`` / ``entry show`` and from the agents' processes, logs and Workload API."""

import json
import time

from spire_testlib import DevID, by_spiffe, opts_for, sid, wait_for

TD = "example.org"


def jt_id(token):
    return "spiffe://example.org/spire/agent/join_token/%s" % token


def agents_by_id(server):
    return {sid(a["id"]): a for a in server.agents()}


def refused(agent, words, timeout=20.0):
    """Restart a stopped agent and check it does NOT come up, its log saying ``words`` (polled, not slept)."""
    agent.stop()
    ok = agent.start(timeout=2, check=False)
    seen = wait_for(lambda: words in agent.log_text(60), timeout)
    ok = ok or agent.healthy()
    agent.stop()
    return bool(seen) and not ok


def test_join_token_generate_secret_and_attest(run_playbook, spire_server, spire_agent_factory, tmp_path):
    opts = opts_for(spire_server)
    alias = "spiffe://example.org/host/legacy1"
    log = tmp_path / "ansible.log"
    env = {"ANSIBLE_LOG_PATH": str(log)}

    # check mode: no token, and no alias entry on the server
    r = run_playbook([{"name": "token", "trustroot.spire_tpm.spire_join_token": dict(opts, spiffe_id=alias)}],
                     check=True, env=env, expect_rc=0).task("token")
    assert r["changed"] is True and r["token"] is None and r["agent_id"] is None
    assert by_spiffe(spire_server) == {}

    # the token, registered under no_log, reaches a file the test reads; it appears nowhere in the output or log
    t0 = int(time.time())
    res = run_playbook([
        {"name": "token", "trustroot.spire_tpm.spire_join_token": dict(opts, spiffe_id=alias, ttl=900),
         "register": "jt", "no_log": True},
        {"name": "keep", "ansible.builtin.copy": {"content": "{{ jt | to_json }}", "dest": str(tmp_path / "jt.json")},
         "no_log": True},
    ], env=env, expect_rc=0)
    jt = json.loads((tmp_path / "jt.json").read_text())
    token = jt["token"]
    assert token and jt["changed"] is True
    for text in (res.stdout, res.stderr, log.read_text()):
        assert token not in text
    assert jt["agent_id"] == jt_id(token)
    assert t0 + 900 - 5 <= jt["expires_at"] <= int(time.time()) + 900 + 5
    assert "msg" not in jt or token not in jt["msg"]

    # the server's view: the -spiffeID alias entry, parented to the agent the token will attest
    [entry] = by_spiffe(spire_server)[alias]
    assert sid(entry["parent_id"]) == jt_id(token)
    assert entry["selectors"] == [{"type": "spiffe_id", "value": jt_id(token)}]

    # the token attests a real agent, which then gets the entries parented to its ID
    agent = spire_agent_factory(spire_server, ("join_token", token))
    assert list(agents_by_id(spire_server)) == [jt_id(token)]
    assert agents_by_id(spire_server)[jt_id(token)]["attestation_type"] == "join_token"
    r = run_playbook([{"name": "workload", "trustroot.spire_tpm.spire_entry": dict(
        opts, spiffe_id="spiffe://example.org/app/root", parent_id=jt_id(token), selectors=["unix:uid:0"])}],
        expect_rc=0).task("workload")
    assert r["changed"] is True
    assert wait_for(lambda: "spiffe://example.org/app/root" in agent.fetch_x509(), 30), agent.log_text()

    # one use only: a second agent with the same token is refused by the server
    second = spire_agent_factory(spire_server, ("join_token", token), start=False)
    assert refused(second, "join token does not exist or has already been used")

    # without no_log the token is returned under `token` only, never in a message; no -spiffeID → no agent_id
    r = run_playbook([{"name": "bare", "trustroot.spire_tpm.spire_join_token": dict(opts, ttl=60)}],
                     env=env, expect_rc=0).task("bare")
    assert r["token"] and r["token"] != token and r["agent_id"] is None
    assert r["token"] not in json.dumps({k: v for k, v in r.items() if k != "token"})
    assert sorted(by_spiffe(spire_server)) == sorted([alias, "spiffe://example.org/app/root"])  # no entry made

    before = spire_server.entries()
    res = run_playbook([
        {"name": "bad ttl", "trustroot.spire_tpm.spire_join_token": dict(opts, ttl=0), "ignore_errors": True},
        {"name": "reserved", "ignore_errors": True,
         "trustroot.spire_tpm.spire_join_token": dict(opts, spiffe_id="spiffe://example.org/spire/x")},
        {"name": "other td", "trustroot.spire_tpm.spire_join_token": dict(opts, spiffe_id="spiffe://other.org/x"),
         "ignore_errors": True},
    ], expect_rc=0)
    assert "ttl must be at least 1" in res.task("bad ttl")["msg"]
    assert "reserved namespace" in res.task("reserved")["msg"]
    # only the server knows its trust domain: its refusal reaches the operator, with no token made
    r = res.task("other td")
    assert r["failed"] is True and r["grpc_code"] == "InvalidArgument"
    assert 'is not a member of trust domain "example.org"' in r["msg"] and "token" not in r
    assert spire_server.entries() == before


def test_agent_info_evict_ban_join_token_agents(run_playbook, spire_server, spire_agent_factory):
    opts = opts_for(spire_server)
    tokens = [spire_server.token() for _ in range(3)]
    a, b, c = [spire_agent_factory(spire_server, ("join_token", t)) for t in tokens]
    ida, idb, idc = [jt_id(t) for t in tokens]
    raw = agents_by_id(spire_server)
    assert sorted(raw) == sorted([ida, idb, idc])

    info = "trustroot.spire_tpm.spire_agent_info"
    res = run_playbook([
        {"name": "all", info: opts},
        {"name": "jt", info: dict(opts, attestation_type="join_token")},
        {"name": "devid", info: dict(opts, attestation_type="tpm_devid")},
        {"name": "sel", info: dict(opts, selectors=["tpm_devid:subject:cn:web1"])},
        {"name": "bad sel", info: dict(opts, selectors=["nocolon"]), "ignore_errors": True},
        {"name": "evict", "trustroot.spire_tpm.spire_agent": dict(opts, spiffe_id=ida)},
        {"name": "ban", "trustroot.spire_tpm.spire_agent": dict(opts, spiffe_id=idb, state="banned")},
        {"name": "bad id", "trustroot.spire_tpm.spire_agent": dict(opts, spiffe_id="spiffe://example.org/a/"),
         "ignore_errors": True},
    ], check=True, expect_rc=0)
    r = res.task("all")
    assert r["changed"] is False and r["count"] == 3
    for view in r["agents"]:
        have = raw[view["spiffe_id"]]
        assert view == {"spiffe_id": sid(have["id"]), "attestation_type": "join_token", "selectors": [],
                        "expires_at": int(have["x509svid_expires_at"]),
                        "serial_number": have["x509svid_serial_number"], "banned": False, "can_reattest": False,
                        "agent_version": have.get("agent_version", "")}
        assert view["expires_at"] > time.time() and view["serial_number"]
    assert res.task("jt")["count"] == 3 and res.task("devid")["agents"] == []
    assert res.task("sel")["agents"] == []  # a join_token agent has no selectors (SPIRE 1.13)
    assert "has no ':'" in res.task("bad sel")["msg"]
    # check mode: reported, not done — the server still lists all three, none banned; the agents still run
    assert res.task("evict")["changed"] is True and res.task("ban")["changed"] is True
    assert "trailing slash" in res.task("bad id")["msg"]
    assert {k: v["banned"] for k, v in agents_by_id(spire_server).items()} == {ida: False, idb: False, idc: False}
    assert a.healthy() and b.healthy()

    res = run_playbook([
        {"name": "evict", "trustroot.spire_tpm.spire_agent": dict(opts, spiffe_id=ida)},
        {"name": "evict again", "trustroot.spire_tpm.spire_agent": dict(opts, spiffe_id=ida)},
        {"name": "ban", "trustroot.spire_tpm.spire_agent": dict(opts, spiffe_id=idb, state="banned")},
        {"name": "ban again", "trustroot.spire_tpm.spire_agent": dict(opts, spiffe_id=idb, state="banned")},
    ], expect_rc=0)
    r = res.task("evict")
    assert r["changed"] is True and r["found"] is True and r["agent"]["attestation_type"] == "join_token"
    assert r["agent"]["can_reattest"] is False
    assert res.task("evict again")["changed"] is False and res.task("evict again")["found"] is False
    assert res.task("ban")["changed"] is True and res.task("ban")["agent"]["banned"] is False
    assert res.task("ban again")["changed"] is False and res.task("ban again")["agent"]["banned"] is True
    now = agents_by_id(spire_server)
    assert sorted(now) == sorted([idb, idc])  # evicted: gone
    assert now[idb]["banned"] is True and now[idb]["x509svid_serial_number"] == ""
    assert now[idc] == raw[idc]  # the third agent untouched

    # what it does to the agents: both are refused on their next sync and exit; neither can come back
    for agent in (a, b):
        assert agent.exited(30) not in (None, 0), agent.log_text()
        assert "PermissionDenied" in agent.log_text(40)
    assert refused(a, "join token does not exist or has already been used")
    assert refused(b, "join token does not exist or has already been used")
    assert c.healthy()

    # evicting a banned agent removes its record (and so the ban)
    r = run_playbook([{"name": "evict", "trustroot.spire_tpm.spire_agent": dict(opts, spiffe_id=idb)}],
                     expect_rc=0).task("evict")
    assert r["changed"] is True and r["agent"]["banned"] is True
    assert list(agents_by_id(spire_server)) == [idc]


def test_tpm_devid_agent_alias_evict_ban(run_playbook, spire_server_factory, spire_agent_factory, swtpm, tmp_path):
    """A re-attestable agent (tpm_devid on swtpm): node aliases serve it, selectors filter it, eviction makes it
    re-attest, a ban refuses it until the ban is lifted by an eviction."""
    devid = DevID(swtpm, tmp_path / "devid", "web1.example.org")
    srv = spire_server_factory(node_attestors={"join_token": {}, "tpm_devid": devid.server_plugin_data()})
    agent = spire_agent_factory(srv, ("tpm_devid", devid.agent_plugin_data()))
    aid = devid.agent_id()
    assert list(agents_by_id(srv)) == [aid]
    opts = opts_for(srv)
    info = "trustroot.spire_tpm.spire_agent_info"
    alias = "spiffe://example.org/node/web1"
    res = run_playbook([
        {"name": "entries", "trustroot.spire_tpm.spire_entry": dict(opts, entries=[
            {"spiffe_id": alias, "node": True, "selectors": ["tpm_devid:subject:cn:web1.example.org"]},
            {"spiffe_id": "spiffe://example.org/app/web", "parent_id": alias, "selectors": ["unix:uid:0"]}])},
        {"name": "cn", info: dict(opts, selectors=["tpm_devid:subject:cn:web1.example.org"])},
        {"name": "other cn", info: dict(opts, selectors=["tpm_devid:subject:cn:web2.example.org"])},
        {"name": "any", info: dict(opts, match_selectors_on="any",
                                   selectors=["tpm_devid:subject:cn:web2.example.org",
                                              "tpm_devid:issuer:cn:Entry Test DevID Intermediate"])},
        {"name": "exact", info: dict(opts, match_selectors_on="exact",
                                     selectors=["tpm_devid:subject:cn:web1.example.org"])},
        # devid_provision's listing once for the play: every tpm_devid agent, each host taking those with its
        # subject selector (Jinja), must give what the server's superset filter gives
        {"name": "all", info: dict(opts, attestation_type="tpm_devid"), "register": "all_tpm_devid"},
        {"name": "filtered", "ansible.builtin.set_fact": {
            "web1": "{{ all_tpm_devid.agents | selectattr('selectors', 'contains', "
                    "'tpm_devid:subject:cn:web1.example.org') | list }}",
            "web2": "{{ all_tpm_devid.agents | selectattr('selectors', 'contains', "
                    "'tpm_devid:subject:cn:web2.example.org') | list }}",
            "web": "{{ all_tpm_devid.agents | selectattr('selectors', 'contains', "
                   "'tpm_devid:subject:cn:web') | list }}"}},
    ], expect_rc=0)
    filtered = res.task("filtered")["ansible_facts"]
    assert filtered["web1"] == res.task("cn")["agents"] and len(filtered["web1"]) == 1
    assert filtered["web2"] == res.task("other cn")["agents"] == [] and filtered["web"] == []
    [view] = res.task("cn")["agents"]
    have = agents_by_id(srv)[aid]
    assert view["spiffe_id"] == aid and view["attestation_type"] == "tpm_devid" and view["can_reattest"] is True
    assert sorted(view["selectors"]) == sorted("%s:%s" % (s["type"], s["value"]) for s in have["selectors"])
    assert "tpm_devid:subject:cn:web1.example.org" in view["selectors"]
    assert res.task("other cn")["agents"] == [] and res.task("exact")["agents"] == []
    assert [v["spiffe_id"] for v in res.task("any")["agents"]] == [aid]
    # the node alias works for real: the workload entry under it reaches the agent
    assert wait_for(lambda: "spiffe://example.org/app/web" in agent.fetch_x509(), 30), agent.log_text()

    # evict: the agent re-attests by itself (same DevID → same ID) and keeps running
    r = run_playbook([{"name": "evict", "trustroot.spire_tpm.spire_agent": dict(opts, spiffe_id=aid)}],
                     expect_rc=0).task("evict")
    assert r["changed"] is True and r["agent"]["can_reattest"] is True
    assert wait_for(lambda: "Successfully reattested node" in agent.log_text(200), 40), agent.log_text()
    assert list(agents_by_id(srv)) == [aid] and agent.proc.poll() is None

    # ban: refused on the next sync (the agent exits), refused again at attestation, until an eviction lifts it
    r = run_playbook([{"name": "ban", "trustroot.spire_tpm.spire_agent": dict(opts, spiffe_id=aid, state="banned")}],
                     expect_rc=0).task("ban")
    assert r["changed"] is True and agents_by_id(srv)[aid]["banned"] is True
    assert agent.exited(30) not in (None, 0), agent.log_text()
    assert refused(agent, "failed to attest: agent is banned")
    r = run_playbook([{"name": "evict", "trustroot.spire_tpm.spire_agent": dict(opts, spiffe_id=aid)}],
                     expect_rc=0).task("evict")
    assert r["changed"] is True and r["agent"]["banned"] is True
    assert aid not in agents_by_id(srv)
    agent.start()
    assert list(agents_by_id(srv)) == [aid] and agents_by_id(srv)[aid]["banned"] is False
