#!/usr/bin/env python3
"""Benchmark: declaring 10,000 registration entries — batched plan/apply vs one call per entry.

Scenario (against the spire-server simulator, tests/simulators; never the real SPIRE):
  * the server holds 10,000 entries under one node parent plus 500 under another parent (outside the purge scope);
  * 10,000 entries are declared: 5,000 unchanged, 2,500 with a changed field (update), 2,500 new (create);
  * the 2,500 undeclared entries under the node parent are purged (purge_scope: parent_id).

Batched: the collection's own code (module_utils/spire: SpireCli + entries.normalize_all/make_plan/apply_plan),
  i.e. exactly what the spire_entry module runs, timed in-process; spire-server invocations counted through the
  simulator's call log (SPIRE_SIM_CALL_LOG).
Naive: what a per-entry loop does (an `entry show -spiffeID X` per declared entry, then one `entry create` /
  `entry update` per changed entry, one `entry show` for purging and one `entry delete -entryID` per purged entry).
  Run on a sample of each kind of call against the same 10,000-entry server, then extrapolated (the full run would
  take far longer than 3 minutes); the output says so.

    python bench/entries.py [--sample 40] [--playbook]

Figures only — nothing here passes or fails on time.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(ROOT, ".build", "collections")
sys.path.insert(0, os.path.join(ROOT, "tests", "simulators"))
link = os.path.join(COLLECTIONS, "ansible_collections", "trustroot", "spire_tpm")
if not os.path.exists(link):
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.symlink(ROOT, link)
sys.path.insert(0, COLLECTIONS)

from spire_sim.testing import SERVER_BIN, SimServer  # noqa: E402

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire import entries as E  # noqa: E402
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire.cli import SpireCli  # noqa: E402

TD = "example.org"
NODE = "spiffe://example.org/node/bench"
OTHER = "spiffe://example.org/node/other"
N = 10000


def show_entry(i, parent_path="/node/bench", hint=""):
    return {
        "id": str(uuid.uuid4()), "spiffe_id": {"trust_domain": TD, "path": "/w/%d" % i},
        "parent_id": {"trust_domain": TD, "path": parent_path},
        "selectors": [{"type": "unix", "value": "uid:%d" % i}, {"type": "unix", "value": "gid:100"}],
        "x509_svid_ttl": 3600, "jwt_svid_ttl": 300, "federates_with": [], "hint": hint, "admin": False,
        "created_at": "1700000000", "downstream": False, "expires_at": "0", "dns_names": ["w%d.example.org" % i],
        "revision_number": "0", "store_svid": False,
        "additional_attributes": {"disable_x509_svid_prefetch": False, "jwt_svid_include_jti": False},
    }


def declared(i, hint=""):
    return {"spiffe_id": "spiffe://example.org/w/%d" % i, "parent_id": NODE,
            "selectors": ["unix:uid:%d" % i, "unix:gid:100"], "x509_svid_ttl": 3600, "jwt_svid_ttl": 300,
            "dns_names": ["w%d.example.org" % i], "hint": hint, "state": "present"}


def seed(sim):
    with sim.locked() as st:
        st["entries"] = {}
        for i in range(N):
            e = show_entry(i)
            st["entries"][e["id"]] = e
        for i in range(50000, 50500):
            e = show_entry(i, "/node/other")
            st["entries"][e["id"]] = e


def desired_specs():
    # 0..4999 unchanged, 5000..7499 updated (hint), 10000..12499 new; 7500..9999 undeclared → purged
    return ([declared(i) for i in range(0, 5000)] + [declared(i, hint="v2") for i in range(5000, 7500)]
            + [declared(i) for i in range(10000, 12500)])


class TimedRunner(object):
    def __init__(self, env):
        self.env = env
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, args, data=None, **_kw):
        t = time.perf_counter()
        p = subprocess.run(args, input=data, capture_output=True, text=True, env=self.env)
        self.seconds += time.perf_counter() - t
        self.calls += 1
        return p.returncode, p.stdout, p.stderr


def batched(sim, env):
    seed(sim)
    sim.reset_calls()
    runner = TimedRunner(env)
    cli = SpireCli(runner, SERVER_BIN, sim.socket_path)
    t0 = time.perf_counter()
    desired = E.normalize_all(desired_specs())
    current_raw = cli.entry_show()
    t1 = time.perf_counter()
    current = [E.normalize_current(e) for e in current_raw]
    plan = E.make_plan(desired, current, E.check_scope(True, {"parent_id": NODE}))
    t_plan = time.perf_counter() - t1
    done = E.apply_plan(cli, plan)
    wall = time.perf_counter() - t0
    calls = len(sim.calls())
    st = sim.state()
    # sanity of the outcome
    assert len(done["created"]) == 2500 and len(done["updated"]) == 2500 and len(done["deleted"]) == 2500
    assert len(st["entries"]) == N + 500, len(st["entries"])
    by_kind = {}
    for c in sim.calls():
        k = " ".join(c["argv"][:2])
        by_kind[k] = by_kind.get(k, 0) + 1
    return {"wall": wall, "cli_seconds": runner.seconds, "own_seconds": wall - runner.seconds, "plan_seconds": t_plan,
            "calls": calls, "by_kind": by_kind, "summary": plan.summary()}


def naive(sim, env, sample):
    """Time a sample of each per-entry call against the 10,000-entry server, extrapolate to the full workload."""
    seed(sim)
    sim.reset_calls()
    runner = TimedRunner(env)
    cli = SpireCli(runner, SERVER_BIN, sim.socket_path)

    def timed(fn, items):
        t = time.perf_counter()
        for it in items:
            fn(it)
        return (time.perf_counter() - t) / max(1, len(items))

    def lookup(i):
        cli.entry_show(spiffe_id="spiffe://example.org/w/%d" % i)

    def create_one(i):
        [want] = E.normalize_all([declared(i)])
        cli.entry_create([E.to_request(want)])

    def update_one(i):
        [have] = cli.entry_show(spiffe_id="spiffe://example.org/w/%d" % i)
        [want] = E.normalize_all([declared(i, hint="v2")])
        cli.entry_update([E.to_request(want, have["id"])])

    current = cli.entry_show(parent_id=NODE)
    purge_ids = [e["id"] for e in current if 7500 <= int(e["spiffe_id"]["path"].rsplit("/", 1)[1]) < 10000]

    def delete_one(entry_id):
        cli.entry_delete([entry_id])

    per_show = timed(lookup, list(range(0, sample)))
    per_create = timed(create_one, list(range(10000, 10000 + sample)))
    # update_one does its own show: subtract a lookup so that the figure is one update call
    per_update = timed(update_one, list(range(5000, 5000 + sample))) - per_show
    per_delete = timed(delete_one, purge_ids[:sample])
    t = time.perf_counter()
    cli.entry_show(parent_id=NODE)
    per_full_show = time.perf_counter() - t
    calls = N + 2500 + 2500 + 1 + 2500
    seconds = N * per_show + 2500 * per_create + 2500 * per_update + per_full_show + 2500 * per_delete
    return {"calls": calls, "seconds": seconds, "per_call": {"show -spiffeID": per_show, "create": per_create,
                                                            "update": per_update, "delete": per_delete},
            "sampled_calls": runner.calls}


def playbook(sim, env):
    """The spire_entry module itself through ansible-playbook (same scenario)."""
    import tempfile
    import yaml
    seed(sim)
    sim.reset_calls()
    specs = desired_specs()
    for s in specs:
        s.pop("state")
    d = tempfile.mkdtemp(prefix="bench-", dir=sim.dir)
    with open(os.path.join(d, "vars.json"), "w") as f:
        json.dump({"decl": specs}, f)
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": [
        {"name": "entries", "trustroot.spire_tpm.spire_entry": {
            "spire_server_bin": SERVER_BIN, "socket_path": sim.socket_path, "entries": "{{ decl }}",
            "purge": True, "purge_scope": {"parent_id": NODE}}, "register": "r"},
        {"name": "summary", "ansible.builtin.debug": {"var": "r.summary"}}]}]
    with open(os.path.join(d, "pb.yml"), "w") as f:
        yaml.safe_dump(play, f)
    penv = dict(env, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_LOCALHOST_WARNING="0",
                ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
    t = time.perf_counter()
    p = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
                        "-e", "ansible_python_interpreter=%s" % sys.executable, "-e", "@" + os.path.join(d, "vars.json"),
                        os.path.join(d, "pb.yml")], capture_output=True, text=True, env=penv)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        return {"error": p.stdout[-2000:] + p.stderr[-2000:]}
    return {"wall": wall, "calls": len(sim.calls()), "entries_after": len(sim.state()["entries"])}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sample", type=int, default=40, help="calls of each kind timed for the naive extrapolation")
    ap.add_argument("--playbook", action="store_true", help="also run the spire_entry module via ansible-playbook")
    args = ap.parse_args()
    sim = SimServer(TD)
    env = dict(os.environ, SPIRE_SIM_CALL_LOG=sim.call_log)
    try:
        b = batched(sim, env)
        n = naive(sim, env, args.sample)
        pb = playbook(sim, env) if args.playbook else None
    finally:
        sim.cleanup()
    print("Scenario: %d declared (5000 unchanged, 2500 update, 2500 create), 2500 purged in scope, "
          "500 out of scope; server holds %d entries" % (N, N + 500))
    print("Batched (module_utils, as spire_entry runs it):")
    print("  spire-server invocations : %d  %s" % (b["calls"], json.dumps(b["by_kind"], sort_keys=True)))
    print("  wall time                : %.2f s (simulator %.2f s, collection's own work %.2f s, of which "
          "normalise+plan %.3f s)" % (b["wall"], b["cli_seconds"], b["own_seconds"], b["plan_seconds"]))
    print("  plan                     : %s" % json.dumps(b["summary"], sort_keys=True))
    print("Naive (one call per entry) -- EXTRAPOLATED from %d timed calls of each kind against the same server, "
          "the full run would exceed 3 minutes:" % args.sample)
    print("  spire-server invocations : %d (10000 show -spiffeID + 2500 create + 2500 update + 1 show + 2500 delete)"
          % n["calls"])
    print("  per call                 : %s" % ", ".join("%s %.3f s" % (k, v) for k, v in n["per_call"].items()))
    print("  wall time (extrapolated) : %.0f s (%.1f min)" % (n["seconds"], n["seconds"] / 60))
    print("Ratio naive/batched        : %.0fx fewer invocations, %.0fx less wall time"
          % (n["calls"] / float(b["calls"]), n["seconds"] / b["wall"]))
    if pb is not None:
        if "error" in pb:
            print("spire_entry via ansible-playbook FAILED: %s" % pb["error"])
        else:
            print("spire_entry via ansible-playbook: %.2f s wall, %d spire-server invocations, %d entries after"
                  % (pb["wall"], pb["calls"], pb["entries_after"]))


if __name__ == "__main__":
    main()
