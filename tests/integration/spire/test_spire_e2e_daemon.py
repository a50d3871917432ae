"""End to end with the simulator's daemon: a running spire-server, a join_token agent attested with a token made by
spire_join_token, entries declared with spire_entry and served to the agent, the agent listed by spire_agent_info
and evicted by spire_agent (a join_token agent cannot re-attest: it exits)."""

import json
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "config"))

spcfg_support = pytest.importorskip("spcfg_support")


@pytest.fixture
def world():
    w = spcfg_support.SimWorld()
    yield w
    w.cleanup()


def test_join_token_agent_lifecycle(run_playbook, world):
    srv = world.server_config(td="example.org")
    world.start_server(srv)
    sock = srv["server"]["socket_path"]
    opts = {"spire_server_bin": spcfg_support.SERVER_BIN, "socket_path": sock}
    env = {"SPIRE_SIM_REGISTRY": world.env["SPIRE_SIM_REGISTRY"]}

    res = run_playbook([{"name": "token", "trustroot.spire_tpm.spire_join_token": dict(opts,
                                                                                      spiffe_id="spiffe://example.org/host/h1"),
                         "no_log": True, "register": "jt"},
                        {"name": "keep", "ansible.builtin.copy": {"content": "{{ jt.token }}",
                                                                   "dest": str(world.path("token.txt"))},
                         "no_log": True}], env=env, expect_rc=0)
    token = world.path("token.txt").read_text()
    agent_id = "spiffe://example.org/spire/agent/join_token/%s" % token
    assert token not in res.stdout

    agt = world.agent_config(srv)
    world.write_bundle(srv, agt)
    agent = world.start_agent(agt, "-joinToken", token)

    # a workload entry under the token's alias, declared with spire_entry
    wl = {"spiffe_id": "spiffe://example.org/app/web", "parent_id": "spiffe://example.org/host/h1",
          "selectors": ["unix:uid:1000"]}
    node = {"spiffe_id": "spiffe://example.org/node/legacy", "parent_id": agent_id, "selectors": ["unix:uid:0"]}
    res = run_playbook([{"name": "entries", "trustroot.spire_tpm.spire_entry": dict(opts, entries=[wl, node])},
                        {"name": "info", "trustroot.spire_tpm.spire_agent_info": dict(opts,
                                                                                     attestation_type="join_token")}],
                       env=env, expect_rc=0)
    assert len(res.task("entries")["created"]) == 2
    agents = res.task("info")["agents"]
    assert [(a["spiffe_id"], a["can_reattest"]) for a in agents] == [(agent_id, False)]

    # the agent is served the entry parented to its own ID
    fetch = world.cli("spire-agent", "api", "fetch", "x509", "-socketPath", agt["agent"]["socket_path"],
                      "-output", "json")
    assert fetch.returncode == 0, fetch.stderr
    assert "spiffe://example.org/node/legacy" in fetch.stdout

    res = run_playbook([{"name": "evict", "trustroot.spire_tpm.spire_agent": dict(opts, spiffe_id=agent_id)}],
                       env=env, expect_rc=0)
    assert res.task("evict")["changed"] is True
    assert agent.wait_exit(timeout=20) != 0  # not re-attestable: drops its SVID and exits
    res = run_playbook([{"name": "info", "trustroot.spire_tpm.spire_agent_info": dict(opts)}], env=env, expect_rc=0)
    assert res.task("info")["agents"] == []
    assert json.loads(world.server_cli(srv, "entry", "count", "-output", "json").stdout)["count"] == 3
