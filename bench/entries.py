#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: 10,000 registration entries on a REAL spire-server, batched plan/apply vs one call per entry.

Scenario (a real spire-server built from the Go module proxy, sqlite datastore, on loopback):
  * the server holds 10,000 entries under one node parent plus 500 under another parent (outside the purge scope);
  * 10,000 entries are declared: 5,000 unchanged, 2,500 with a changed field (update), 2,500 new (create);
  * the 2,500 undeclared entries under the node parent are purged (purge_scope: parent_id).

Batched: the collection's own code (module_utils/spire: SpireCli + entries.normalize_all/make_plan/apply_plan), i.e.
  exactly what the spire_entry module runs, timed in-process; every spire-server invocation counted and timed.
Naive: what a per-entry loop does (an `entry show -spiffeID X` per declared entry, then one `entry create` /
  `entry update` per changed entry, one `entry show -parentID` for purging and one `entry delete -entryID` per purged
  entry). At least 100 calls of each kind are timed against a server holding the same 10,500 entries, then the full
  run is EXTRAPOLATED (it would take about half an hour); the output says so.
--playbook: also the spire_entry module itself through ansible-playbook on a third freshly seeded server.

    python bench/entries.py [--sample 100] [--playbook] [--version 1.13.3]

Figures only -- nothing here passes or fails on time.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(ROOT, ".build", "collections")
link = os.path.join(COLLECTIONS, "ansible_collections", "trustroot", "spire_tpm")
if not os.path.exists(link):
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.symlink(ROOT, link)
sys.path.insert(0, COLLECTIONS)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from support import spire as spire_support  # noqa: E402

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire import entries as E  # noqa: E402
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire.cli import SpireCli  # noqa: E402

TD = "example.org"
NODE = "spiffe://example.org/node/bench"
OTHER = "spiffe://example.org/node/other"
N = 10000
MIN_SAMPLE = 100


def declared(i, parent=NODE, hint=""):
    return {"spiffe_id": "spiffe://example.org/w/%d" % i, "parent_id": parent,
            "selectors": ["unix:uid:%d" % i, "unix:gid:100"], "x509_svid_ttl": 3600, "jwt_svid_ttl": 300,
            "dns_names": ["w%d.example.org" % i], "hint": hint, "state": "present"}


def desired_specs():
    # 0..4999 unchanged, 5000..7499 updated (hint), 10000..12499 new; 7500..9999 undeclared -> purged
    return ([declared(i) for i in range(0, 5000)] + [declared(i, hint="v2") for i in range(5000, 7500)]
            + [declared(i) for i in range(10000, 12500)])


class TimedRunner(object):
    """A run_command that times and counts every spire-server invocation, per subcommand."""

    def __init__(self):
        self.seconds = 0.0
        self.calls = 0
        self.by_kind = {}

    def __call__(self, args, data=None, **_kw):
        t = time.perf_counter()
        p = subprocess.run(args, input=data, capture_output=True, text=True)
        self.seconds += time.perf_counter() - t
        self.calls += 1
        kind = " ".join(args[1:3])
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        return p.returncode, p.stdout, p.stderr


def start_server(base, version, name):
    srv = spire_support.SpireServer(os.path.join(base, name), version=version, log_level="WARN")
    srv.start()
    return srv


def seed(srv):
    """10,000 entries under NODE, 500 under OTHER, through the real CLI in batches; returns seconds taken."""
    cli = SpireCli(TimedRunner(), str(srv.bin), str(srv.socket_path))
    specs = [declared(i) for i in range(N)] + [declared(i, parent=OTHER) for i in range(50000, 50500)]
    t = time.perf_counter()
    for batch in E.chunks(E.normalize_all(specs), size=E._request_size):
        results = cli.entry_create([E.to_request(e) for e in batch])
        bad = [r for r in results if r["status"]["code"] != 0]
        if bad:
            raise SystemExit("seeding failed: %s" % bad[:3])
    took = time.perf_counter() - t
    count = cli.entry_count()
    if count != N + 500:
        raise SystemExit("seeding left %d entries, expected %d" % (count, N + 500))
    return took


def batched(srv):
    runner = TimedRunner()
    cli = SpireCli(runner, str(srv.bin), str(srv.socket_path))
    t0 = time.perf_counter()
    desired = E.normalize_all(desired_specs())
    current_raw = cli.entry_show()
    t1 = time.perf_counter()
    current = [E.normalize_current(e) for e in current_raw]
    plan = E.make_plan(desired, current, E.check_scope(True, {"parent_id": NODE}))
    t_plan = time.perf_counter() - t1
    done = E.apply_plan(cli, plan)
    wall = time.perf_counter() - t0
    assert len(done["created"]) == 2500 and len(done["updated"]) == 2500 and len(done["deleted"]) == 2500
    after = SpireCli(TimedRunner(), str(srv.bin), str(srv.socket_path)).entry_count()  # not counted
    assert after == N + 500, after
    return {"wall": wall, "cli_seconds": runner.seconds, "own_seconds": wall - runner.seconds, "plan_seconds": t_plan,
            "calls": runner.calls, "by_kind": runner.by_kind, "summary": plan.summary()}


def naive(srv, sample):
    """Time ``sample`` per-entry calls of each kind on the 10,500-entry server; extrapolate to the full workload."""
    runner = TimedRunner()
    cli = SpireCli(runner, str(srv.bin), str(srv.socket_path))

    def timed(fn, items):
        t = time.perf_counter()
        for it in items:
            fn(it)
        return (time.perf_counter() - t) / max(1, len(items))

    t = time.perf_counter()
    current = cli.entry_show(parent_id=NODE)  # what a naive purge starts with
    per_full_show = time.perf_counter() - t
    ids_by_n = dict((int(e["spiffe_id"]["path"].rsplit("/", 1)[1]), e["id"]) for e in current)

    def lookup(i):
        found = cli.entry_show(spiffe_id="spiffe://example.org/w/%d" % i)
        assert len(found) == 1

    def create_one(i):
        [want] = E.normalize_all([declared(i)])
        [res] = cli.entry_create([E.to_request(want)])
        assert res["status"]["code"] == 0, res

    def update_one(i):
        [want] = E.normalize_all([declared(i, hint="v2")])
        [res] = cli.entry_update([E.to_request(want, ids_by_n[i])])
        assert res["status"]["code"] == 0, res

    def delete_one(i):
        out = cli.run(["entry", "delete"], ["-entryID", ids_by_n[i]])
        assert out["results"][0]["status"]["code"] == 0, out

    per = {
        "show -spiffeID": timed(lookup, list(range(0, sample))),
        "create": timed(create_one, list(range(10000, 10000 + sample))),
        "update": timed(update_one, list(range(5000, 5000 + sample))),
        "delete -entryID": timed(delete_one, list(range(7500, 7500 + sample))),
    }
    counts = {"show -spiffeID": N, "create": 2500, "update": 2500, "delete -entryID": 2500}
    calls = sum(counts.values()) + 1
    seconds = sum(counts[k] * per[k] for k in per) + per_full_show
    return {"calls": calls, "seconds": seconds, "per_call": per, "per_full_show": per_full_show,
            "timed_calls": runner.calls}


def playbook(srv, base):
    """The spire_entry module itself through ansible-playbook (same scenario), invocations counted by a wrapper."""
    import yaml
    d = tempfile.mkdtemp(prefix="pb-", dir=base)
    log = os.path.join(d, "calls.log")
    wrapper = os.path.join(d, "spire-server")
    with open(wrapper, "w") as f:
        f.write("#!/bin/bash\necho \"$1 $2\" >> '%s'\nexec '%s' \"$@\"\n" % (log, srv.bin))
    os.chmod(wrapper, 0o755)
    specs = desired_specs()
    for s in specs:
        s.pop("state")
    with open(os.path.join(d, "vars.json"), "w") as f:
        json.dump({"decl": specs}, f)
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": [
        {"name": "entries", "trustroot.spire_tpm.spire_entry": {
            "spire_server_bin": wrapper, "socket_path": str(srv.socket_path), "entries": "{{ decl }}",
            "purge": True, "purge_scope": {"parent_id": NODE}}, "register": "r"},
        {"name": "summary", "ansible.builtin.debug": {"var": "r.summary"}}]}]
    with open(os.path.join(d, "pb.yml"), "w") as f:
        yaml.safe_dump(play, f)
    penv = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_LOCALHOST_WARNING="0",
                ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
    t = time.perf_counter()
    p = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
                        "-e", "ansible_python_interpreter=%s" % sys.executable,
                        "-e", "@" + os.path.join(d, "vars.json"),
                        os.path.join(d, "pb.yml")], capture_output=True, text=True, env=penv)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        return {"error": p.stdout[-2000:] + p.stderr[-2000:]}
    with open(log) as f:
        calls = [line.strip() for line in f if line.strip()]
    by_kind = {}
    for c in calls:
        by_kind[c] = by_kind.get(c, 0) + 1
    count = SpireCli(TimedRunner(), str(srv.bin), str(srv.socket_path)).entry_count()
    return {"wall": wall, "calls": len(calls), "by_kind": by_kind, "entries_after": count}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sample", type=int, default=MIN_SAMPLE,
                    help="per-entry calls of each kind timed for the naive extrapolation (at least %d)" % MIN_SAMPLE)
    ap.add_argument("--playbook", action="store_true", help="also run the spire_entry module via ansible-playbook")
    ap.add_argument("--version", default=spire_support.DEFAULT_VERSION, help="SPIRE version (built if needed)")
    args = ap.parse_args()
    sample = max(args.sample, MIN_SAMPLE)
    base = tempfile.mkdtemp(prefix="bench-entries-")
    servers = []
    try:
        srv = start_server(base, args.version, "batched")
        servers.append(srv)
        seed_s = seed(srv)
        b = batched(srv)
        srv.cleanup()
        srv = start_server(base, args.version, "naive")
        servers.append(srv)
        seed(srv)
        n = naive(srv, sample)
        srv.cleanup()
        pb = None
        if args.playbook:
            srv = start_server(base, args.version, "playbook")
            servers.append(srv)
            seed(srv)
            pb = playbook(srv, base)
    finally:
        for s in servers:
            s.cleanup()
        shutil.rmtree(base, ignore_errors=True)
    print("Real spire-server %s (sqlite datastore, loopback), %d CPU cores, load average %s at the end"
          % (args.version, os.cpu_count() or 0, " ".join("%.1f" % x for x in os.getloadavg())))
    print("Scenario: %d declared (5000 unchanged, 2500 update, 2500 create), 2500 purged in scope, "
          "500 out of scope; server holds %d entries (seeded through the CLI in %.1f s)" % (N, N + 500, seed_s))
    print("Batched (module_utils, as spire_entry runs it):")
    print("  spire-server invocations : %d  %s" % (b["calls"], json.dumps(b["by_kind"], sort_keys=True)))
    print("  wall time                : %.2f s (spire-server CLI %.2f s, collection's own work %.2f s, of which "
          "normalise+plan %.3f s)" % (b["wall"], b["cli_seconds"], b["own_seconds"], b["plan_seconds"]))
    print("  plan                     : %s" % json.dumps(b["summary"], sort_keys=True))
    print("Naive (one call per entry) -- EXTRAPOLATED from %d timed calls of each kind (%d in all) against a server "
          "holding the same %d entries; the full run was NOT made:" % (sample, n["timed_calls"], N + 500))
    print("  spire-server invocations : %d (10000 show -spiffeID + 2500 create + 2500 update + 1 show -parentID + "
          "2500 delete -entryID)" % n["calls"])
    print("  mean per call            : %s; show -parentID (%d entries) %.2f s"
          % (", ".join("%s %.3f s" % (k, v) for k, v in n["per_call"].items()), N, n["per_full_show"]))
    print("  wall time (extrapolated) : %.0f s (%.1f min)" % (n["seconds"], n["seconds"] / 60))
    print("Ratio naive/batched        : %.0fx fewer invocations, %.0fx less wall time (naive extrapolated)"
          % (n["calls"] / float(b["calls"]), n["seconds"] / b["wall"]))
    if pb is not None:
        if "error" in pb:
            print("spire_entry via ansible-playbook FAILED: %s" % pb["error"])
        else:
            print("spire_entry via ansible-playbook: %.2f s wall, %d spire-server invocations %s, %d entries after"
                  % (pb["wall"], pb["calls"], json.dumps(pb["by_kind"], sort_keys=True), pb["entries_after"]))


if __name__ == "__main__":
    main()
