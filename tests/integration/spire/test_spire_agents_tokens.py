"""spire_agent_info, spire_agent and spire_join_token through ansible-playbook against the simulator."""

import sys
import os

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "simulators"))

from spire_sim import state as sim_state  # noqa: E402

TD = "example.org"
DEVID = "spiffe://example.org/spire/agent/tpm_devid/" + "ab" * 20
JT = "spiffe://example.org/spire/agent/join_token/tok-1"


def seed_agents(sim):
    with sim.locked() as st:
        sim_state.register_agent(st, DEVID, "tpm_devid",
                                 ["tpm_devid:subject:cn:web1", "tpm_devid:issuer:cn:DevID CA"], True,
                                 serial="1234", expires_at=1900000000)
        sim_state.register_agent(st, JT, "join_token", [], False)


def test_agent_info_lists_and_filters(run_playbook, spire_sim, server_opts):
    seed_agents(spire_sim)
    tasks = [
        {"name": "all", "trustroot.spire_tpm.spire_agent_info": dict(server_opts)},
        {"name": "jt", "trustroot.spire_tpm.spire_agent_info": dict(server_opts, attestation_type="join_token")},
        {"name": "sel", "trustroot.spire_tpm.spire_agent_info": dict(server_opts,
                                                                   selectors=["tpm_devid:subject:cn:web1"])},
        {"name": "none", "trustroot.spire_tpm.spire_agent_info": dict(server_opts,
                                                                    selectors=["tpm_devid:subject:cn:other"])},
    ]
    res = run_playbook(tasks, env=spire_sim.env, check=True, expect_rc=0)
    all_ = res.task("all")
    assert all_["changed"] is False and all_["count"] == 2
    devid = [a for a in all_["agents"] if a["spiffe_id"] == DEVID][0]
    assert devid == {"spiffe_id": DEVID, "attestation_type": "tpm_devid",
                     "selectors": ["tpm_devid:subject:cn:web1", "tpm_devid:issuer:cn:DevID CA"],
                     "expires_at": 1900000000, "serial_number": "1234", "banned": False, "can_reattest": True,
                     "agent_version": ""}
    assert [a["spiffe_id"] for a in res.task("jt")["agents"]] == [JT]
    assert [a["spiffe_id"] for a in res.task("sel")["agents"]] == [DEVID]
    assert res.task("none")["agents"] == []
    assert [c["argv"][:2] for c in spire_sim.calls()] == [["agent", "list"]] * 4


def test_evict_and_ban(run_playbook, spire_sim, server_opts):
    seed_agents(spire_sim)
    ev = {"name": "evict", "trustroot.spire_tpm.spire_agent": dict(server_opts, spiffe_id=JT, state="evicted")}
    res = run_playbook([ev], env=spire_sim.env, check=True, expect_rc=0)
    assert res.task("evict")["changed"] is True
    assert JT in spire_sim.state()["agents"]  # check mode left it
    res = run_playbook([ev], env=spire_sim.env, expect_rc=0)
    r = res.task("evict")
    assert r["changed"] is True and r["agent"]["attestation_type"] == "join_token"
    st = spire_sim.state()
    assert JT not in st["agents"] and JT in st["evicted"]
    res = run_playbook([ev], env=spire_sim.env, expect_rc=0)
    assert res.task("evict")["changed"] is False and res.task("evict")["found"] is False

    ban = {"name": "ban", "trustroot.spire_tpm.spire_agent": dict(server_opts, spiffe_id=DEVID, state="banned")}
    res = run_playbook([ban], env=spire_sim.env, expect_rc=0)
    assert res.task("ban")["changed"] is True
    assert spire_sim.state()["agents"][DEVID]["banned"] is True
    res = run_playbook([ban], env=spire_sim.env, expect_rc=0)
    assert res.task("ban")["changed"] is False
    # a banned agent cannot attest again (the daemon's helper refuses it)
    with spire_sim.locked() as st:
        try:
            sim_state.register_agent(st, DEVID, "tpm_devid", [], True)
            raise AssertionError("banned agent re-attested")
        except ValueError as e:
            assert "banned" in str(e)


def test_agent_bad_id_fails_cleanly(run_playbook, spire_sim, server_opts):
    t = {"name": "bad", "trustroot.spire_tpm.spire_agent": dict(server_opts, spiffe_id="spiffe://example.org/a/")}
    res = run_playbook([t], env=spire_sim.env, expect_rc=2)
    assert "trailing slash" in res.task("bad")["msg"]
    assert spire_sim.calls() == []


def test_join_token(run_playbook, spire_sim, server_opts):
    sid = "spiffe://example.org/host/legacy1"
    tasks = [{"name": "token", "trustroot.spire_tpm.spire_join_token": dict(server_opts, spiffe_id=sid, ttl=900),
              "register": "jt", "no_log": True},
             {"name": "use", "ansible.builtin.debug": {"msg": "{{ jt.token | length }}"}}]
    res = run_playbook(tasks, env=spire_sim.env, expect_rc=0)
    st = spire_sim.state()
    [(token, rec)] = st["tokens"].items()
    assert rec["spiffe_id"] == sid and rec["used"] is False
    assert token not in res.stdout  # no_log hides it from the output
    assert res.task("token")["changed"] is True
    assert str(res.task("use")["msg"]) == str(len(token))
    # the alias entry SPIRE creates along with the token
    [entry] = st["entries"].values()
    agent = "spiffe://example.org/spire/agent/join_token/%s" % token
    assert entry["spiffe_id"] == {"trust_domain": TD, "path": "/host/legacy1"}
    assert entry["parent_id"] == {"trust_domain": TD, "path": "/spire/agent/join_token/%s" % token}
    assert entry["selectors"] == [{"type": "spiffe_id", "value": agent}]
    call = [c for c in spire_sim.calls() if c["argv"][:2] == ["token", "generate"]][0]["argv"]
    assert call[call.index("-ttl") + 1] == "900" and call[call.index("-spiffeID") + 1] == sid
    # the token is consumable exactly once
    with spire_sim.locked() as s:
        assert sim_state.consume_join_token(s, token) == agent
    with spire_sim.locked() as s:
        try:
            sim_state.consume_join_token(s, token)
            raise AssertionError("token used twice")
        except ValueError:
            pass


def test_join_token_returned_and_check_mode(run_playbook, spire_sim, server_opts):
    t = {"name": "token", "trustroot.spire_tpm.spire_join_token": dict(server_opts, spiffe_id="spiffe://example.org/h")}
    res = run_playbook([t], env=spire_sim.env, check=True, expect_rc=0)
    r = res.task("token")
    assert r["changed"] is True and r["token"] is None
    assert spire_sim.state()["tokens"] == {} and spire_sim.calls() == []
    res = run_playbook([t], env=spire_sim.env, expect_rc=0)
    r = res.task("token")
    token = r["token"]
    assert token in spire_sim.state()["tokens"]
    assert r["agent_id"] == "spiffe://example.org/spire/agent/join_token/%s" % token
    assert token not in r.get("msg", "")
    res = run_playbook([t], env=spire_sim.env, expect_rc=0)
    assert res.task("token")["token"] != token and len(spire_sim.state()["tokens"]) == 2
