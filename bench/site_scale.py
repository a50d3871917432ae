#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: playbooks/site.yml on a fleet-sized lab -- first run and no-op run, as the fleet grows.

For each size N (--sizes, default 4 8 16) a lab ``bench-scale-<N>`` is brought up with
tests/integration/playbooks/labenv.py (lab/lab.py netns hosts with sshd and one swtpm each, all with EK certificates;
the local DevID CA backend; the REAL SPIRE release archive): ``spire-server-1:server`` and ``agent-1..N:agent``.
``ansible-playbook -i <inventory> playbooks/site.yml`` then runs twice with forks = N + 2 (pipelining on, as the
molecule scenarios run it): the first run deploys everything, the second changes nothing (the "no-op run").
The lab is torn down after each size, also when something failed.

Measured per size:
  * wall time of each run, no-op/first, and the marginal seconds per added host against the previous size;
  * the changed count of the no-op run from its PLAY RECAP (it should be 0: reported as found, never hidden);
  * the controller's peak RSS: the largest resident set of ansible-playbook or any of its (forked) workers, from
    os.wait4's rusage of that run alone; and the peak SUM of the resident sets of its process tree (sampled every
    0.2 s; forked workers share pages, so this overstates what the machine really spends);
  * the controller's CPU time (utime + stime of ansible-playbook and every process it reaped: workers, ssh clients),
    and its marginal seconds per added host: on a real fleet each host runs its modules on its own CPU, so this is
    the cost a host adds to the run wherever the hosts' own CPUs are not shared (here every lab host's modules run
    on the controller's cores, so the wall figures include them);
  * the task results per host that ran (not skipped) and that were skipped: the number of module calls per host;
  * the SPIRE server's CPU time (utime + stime of the spire-server process, found through the pid file the role
    writes in the server host's /run/spire/server) after each run, and what the no-op run added to it;
  * per task (bench/callback_plugins/task_wall.py, an aggregate callback: the stdout stays Ansible's default): the
    task's elapsed wall time and its wall time summed over hosts; the tasks with the most no-op wall time are listed
    for the largest size, and the no-op time is split by kind (fact gathering, includes, delegated tasks, ...).

Each run's stdout goes to .build/bench/site_scale/<lab>-<run>.log and its per-task JSON beside it.

    sudo python3 bench/site_scale.py --sizes 4 8 [--json results.json] [--deadline 09:20]

(as root: the lab makes network namespaces; the lab tools and ansible-playbook run from .build/venv when it exists.)
--deadline HH:MM (UTC) skips a size, or its no-op run, whose estimated end (from the smaller sizes) is later.

Figures only -- these are reports, not tests: nothing here passes or fails on time. The machine's other load
(printed) moves them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".build" / "venv"
PYTHON = str(VENV / "bin" / "python") if (VENV / "bin" / "python").exists() else sys.executable
ANSIBLE_PLAYBOOK = str(VENV / "bin" / "ansible-playbook") if (VENV / "bin" / "ansible-playbook").exists() \
    else "ansible-playbook"
LABENV = ROOT / "tests" / "integration" / "playbooks" / "labenv.py"
LAB = ROOT / "lab" / "lab.py"
COLLECTIONS = ROOT / ".build" / "collections"
LOGS = ROOT / ".build" / "bench" / "site_scale"
CALLBACKS = ROOT / "bench" / "callback_plugins"
LAB_STATE = Path(os.environ.get("SPIRE_TPM_LAB_DIR", str(ROOT / ".build" / "lab")))
SERVER = "spire-server-1"
PAGE = os.sysconf("SC_PAGE_SIZE")
HZ = os.sysconf("SC_CLK_TCK")


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def ensure_collection_link():
    """The collection in place, as scripts/bootstrap.sh links it (never a galaxy install of the repo)."""
    link = COLLECTIONS / "ansible_collections" / "trustroot" / "spire_tpm"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            link.symlink_to(ROOT)
        except FileExistsError:
            pass


# --- lab --------------------------------------------------------------------------------------------------------


def lab_up(name, subnet, n):
    hosts = ["--host", SERVER + ":server"]
    for i in range(1, n + 1):
        hosts += ["--host", "agent-%d:agent" % i]
    t = time.monotonic()
    p = subprocess.run([PYTHON, str(LABENV), "up", "--name", name, "--subnet", subnet] + hosts,
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("labenv.py up failed (rc %d): %s%s" % (p.returncode, p.stdout[-3000:], p.stderr[-3000:]))
    info = json.loads(p.stdout.strip().splitlines()[-1])
    return info["inventory"], time.monotonic() - t


def lab_down(name):
    """labenv.py down, then lab.py down --purge (labenv's down skips lab.py when lab.json is already gone)."""
    errors = []
    for cmd in ([PYTHON, str(LABENV), "down", "--name", name], [PYTHON, str(LAB), "down", "--purge", "--name", name]):
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            errors.append("%s: rc %d %s%s" % (" ".join(cmd[1:3]), p.returncode, p.stdout[-500:], p.stderr[-500:]))
    return errors


# --- measurements -----------------------------------------------------------------------------------------------


def server_cpu(name):
    """(pid, utime+stime seconds) of the lab's spire-server process, or (None, None)."""
    pidfile = LAB_STATE / name / "hosts" / SERVER / "root" / "run" / "spire" / "server" / "spire-server.pid"
    try:
        pid = int(pidfile.read_text().strip())
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        if not comm.startswith("spire-server"):
            return None, None
        fields = stat[stat.rindex(")") + 2:].split()
        # fields[0] is field 3 (state): utime is field 14, stime field 15
        return pid, (int(fields[11]) + int(fields[12])) / HZ
    except (OSError, ValueError, IndexError):
        return None, None


def _tree_rss(root):
    """Sum of the resident sets (bytes) of ``root`` and all its descendants."""
    total, todo, seen = 0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            with open("/proc/%d/statm" % pid) as f:
                total += int(f.read().split()[1]) * PAGE
            for tid in os.listdir("/proc/%d/task" % pid):
                with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                    todo.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            pass
    return total


RECAP_RE = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)"
                      r"(?:\s+skipped=(\d+))?(?:\s+rescued=(\d+))?(?:\s+ignored=(\d+))?")


def parse_recap(text):
    recap, inside = {}, False
    for line in text.splitlines():
        if line.startswith("PLAY RECAP"):
            inside, recap = True, {}
            continue
        if inside:
            m = RECAP_RE.match(line.strip())
            if m:
                recap[m.group(1)] = {k: int(v or 0) for k, v in zip(
                    ("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored"), m.groups()[1:])}
    return recap


def run_site(name, inventory, forks, tag):
    """One ansible-playbook run of site.yml: wall s, rc, recap, peak RSS (process / tree), per-task timings."""
    ensure_collection_link()
    LOGS.mkdir(parents=True, exist_ok=True)
    log_path = LOGS / ("%s-%s.log" % (name, tag))
    timings_path = LOGS / ("%s-%s.tasks.json" % (name, tag))
    try:
        timings_path.unlink()
    except OSError:
        pass
    env = dict(os.environ)
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
        "TSS2_LOG": "all+NONE",
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_FORKS": str(forks),
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_CALLBACK_PLUGINS": str(CALLBACKS),
        "ANSIBLE_CALLBACKS_ENABLED": "task_wall",
        "TASK_WALL_FILE": str(timings_path),
        "PATH": str(VENV / "bin") + os.pathsep + env.get("PATH", ""),
    })
    env.pop("ANSIBLE_CONFIG", None)
    cmd = [ANSIBLE_PLAYBOOK, "-i", inventory, "--forks", str(forks), "playbooks/site.yml"]
    peak_tree = [0]
    with open(log_path, "w") as log:
        t = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=str(ROOT), env=env, stdout=log, stderr=subprocess.STDOUT)
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak_tree[0] = max(peak_tree[0], _tree_rss(proc.pid))
                stop.wait(0.2)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _pid, status, rusage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t
        stop.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    text = log_path.read_text(errors="replace")
    recap = parse_recap(text)
    try:
        timings = json.loads(timings_path.read_text())
    except (OSError, ValueError):
        timings = None
    return {"wall": wall, "rc": proc.returncode, "recap": recap,
            "changed": sum(h["changed"] for h in recap.values()) if recap else None,
            "failed": sum(h["failed"] + h["unreachable"] for h in recap.values()) if recap else None,
            "peak_rss_mb": rusage.ru_maxrss / 1024.0, "peak_tree_rss_mb": peak_tree[0] / 2.0 ** 20,
            "controller_cpu_s": rusage.ru_utime + rusage.ru_stime,
            "results_run": sum(t["hosts"] - t.get("skipped", 0) for t in (timings or {}).get("tasks", [])),
            "results_skipped": sum(t.get("skipped", 0) for t in (timings or {}).get("tasks", [])),
            "log": str(log_path), "timings": timings, "tail": None if proc.returncode == 0 else text[-2500:]}


# --- per-task analysis ------------------------------------------------------------------------------------------


def short_path(path):
    for prefix in (str(COLLECTIONS / "ansible_collections" / "trustroot" / "spire_tpm") + "/", str(ROOT) + "/"):
        if path.startswith(prefix):
            return path[len(prefix):]
    return path or "-"


def task_label(t):
    name = t["name"]
    if t.get("role") and not name.startswith(t["role"] + " : "):
        name = "%s : %s" % (t["role"], name)
    return name


def merged_tasks(timings):
    """Task records merged by (label, path): one line per task of the playbook, whatever include copied it."""
    out = {}
    for t in (timings or {}).get("tasks", []):
        key = (task_label(t), t.get("path") or "")
        m = out.setdefault(key, {"task": key[0], "path": key[1], "play": t.get("play"), "action": t.get("action"),
                                 "elapsed": 0.0, "host_seconds": 0.0, "host_results": 0, "changed": 0,
                                 "delegated": 0})
        m["elapsed"] += t["elapsed"]
        m["host_seconds"] += t["host_seconds"]
        m["host_results"] += t["hosts"]
        m["changed"] += t["changed"]
        m["delegated"] += t.get("delegated", 0)
    return sorted(out.values(), key=lambda m: -m["elapsed"])


def task_kind(t):
    a = (t.get("action") or "").split(".")[-1]
    if t.get("delegated"):
        return "delegated (delegate_to)"
    if a in ("gather_facts", "setup"):
        return "fact gathering"
    if a in ("include_role", "include_tasks", "import_role", "import_tasks"):
        return "include_role / include_tasks"
    if a in ("set_fact", "debug", "assert", "fail", "meta", "validate_argument_spec"):
        return "controller-only (set_fact/assert/debug/arg spec)"
    if a in ("stat", "slurp", "find"):
        return "stat / slurp / find"
    if a in ("file", "copy", "template", "lineinfile", "blockinfile", "unarchive", "get_url"):
        return "file / copy / template / unarchive"
    if a in ("command", "shell", "script", "raw"):
        return "command / shell"
    if a in ("user", "group", "cron", "service", "systemd", "package", "apt"):
        return "user / group / cron / service"
    return "collection modules (tpm_*, devid_*, spire_*)" if "spire_tpm" in (t.get("action") or "") or a.startswith(
        ("tpm_", "devid_", "spire_", "boot_state")) else "other: " + a


def by_kind(timings):
    out = {}
    for t in (timings or {}).get("tasks", []):
        k = task_kind(t)
        m = out.setdefault(k, {"kind": k, "elapsed": 0.0, "host_seconds": 0.0, "tasks": 0})
        m["elapsed"] += t["elapsed"]
        m["host_seconds"] += t["host_seconds"]
        m["tasks"] += 1
    return sorted(out.values(), key=lambda m: -m["elapsed"])


def by_play(timings):
    out = {}
    for t in (timings or {}).get("tasks", []):
        p = t.get("play") or "?"
        m = out.setdefault(p, {"play": p, "elapsed": 0.0, "host_seconds": 0.0, "tasks": 0})
        m["elapsed"] += t["elapsed"]
        m["host_seconds"] += t["host_seconds"]
        m["tasks"] += 1
    return list(out.values())


# --- main -------------------------------------------------------------------------------------------------------


def estimate(results, n, key):
    """Seconds for ``key`` at size n, linear in n through the two largest measured sizes (or proportional)."""
    pts = [(r["n"], r[key]) for r in results if r.get(key) is not None]
    if not pts:
        return None
    if len(pts) == 1:
        return pts[0][1] * n / float(pts[0][0])
    (n1, y1), (n2, y2) = pts[-2], pts[-1]
    slope = max((y2 - y1) / float(n2 - n1), 0.0)
    return y2 + slope * (n - n2)


def fmt(v, spec="%.1f"):
    return "-" if v is None else spec % v


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--subnet", default="10.213.72.0/24")
    p.add_argument("--prefix", default="bench-scale", help="lab names: <prefix>-<N>")
    p.add_argument("--json", help="write the results as JSON to this file")
    p.add_argument("--deadline", help="HH:MM UTC: skip what its estimate says would end later")
    p.add_argument("--top", type=int, default=10)
    a = p.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("run as root (the lab makes network namespaces)")
    deadline = None
    if a.deadline:
        hh, mm = (int(x) for x in a.deadline.split(":"))
        deadline = utcnow().replace(hour=hh, minute=mm, second=0, microsecond=0)

    def fits(seconds):
        """With a 20 % margin over the estimate (the machine's other load moves the figures)."""
        return deadline is None or seconds is None or utcnow() + datetime.timedelta(seconds=1.2 * seconds) <= deadline

    results = []
    print("site.yml scale bench: sizes %s, subnet %s, load average %.1f %.1f %.1f, %d CPUs, %s"
          % (a.sizes, a.subnet, *os.getloadavg(), os.cpu_count(), utcnow().strftime("%H:%M:%S UTC")), flush=True)
    for n in sorted(a.sizes):
        name = "%s-%d" % (a.prefix, n)
        r = {"n": n, "lab": name, "forks": n + 2, "errors": [], "started": utcnow().isoformat(timespec="seconds")}
        est_total = None
        if results:
            est_total = sum(estimate(results, n, k) or 0 for k in ("up_s", "first_s", "noop_s")) + 30
        if not fits(est_total):
            print("\n== N=%d skipped: estimated %.0f s (+20 %%) would end after the deadline %s"
                  % (n, est_total, a.deadline), flush=True)
            r["skipped"] = "estimated %.0f s would end after the deadline %s" % (est_total, a.deadline)
            results.append(r)
            continue
        print("\n== N=%d (lab %s, forks %d)%s" % (n, name, n + 2, "" if est_total is None else
                                                  ", estimated %.0f s" % est_total), flush=True)
        try:
            lab_down(name)  # a leftover of an interrupted run
            inventory, r["up_s"] = lab_up(name, a.subnet, n)
            print("  lab up: %.1f s" % r["up_s"], flush=True)
            for tag in ("first", "noop"):
                if tag == "noop" and not fits(estimate(results, n, "noop_s") or r["first_s"]):
                    r["errors"].append("no-op run skipped: it would end after the deadline")
                    print("  no-op run skipped (deadline)", flush=True)
                    break
                run = run_site(name, inventory, n + 2, tag)
                pid, cpu = server_cpu(name)
                run.update({"server_pid": pid, "server_cpu_s": cpu})
                r[tag] = run
                r[tag + "_s"] = run["wall"]
                print("  %-5s run: %6.1f s  rc=%d  changed=%s failed=%s  peak RSS %.0f MB (tree %.0f MB)  "
                      "controller CPU %.1f s  results run/skipped per host %.1f/%.1f  spire-server pid %s cpu %s s"
                      "  log %s"
                      % (tag, run["wall"], run["rc"], run["changed"], run["failed"], run["peak_rss_mb"],
                         run["peak_tree_rss_mb"], run["controller_cpu_s"], run["results_run"] / (n + 1.0),
                         run["results_skipped"] / (n + 1.0), pid, fmt(cpu, "%.2f"), run["log"]), flush=True)
                if run["rc"] != 0:
                    r["errors"].append("%s run: ansible-playbook rc %d (see %s)" % (tag, run["rc"], run["log"]))
                    print("  --- tail of the log ---\n" + run["tail"], flush=True)
                    if tag == "first":
                        break
        except Exception as e:  # noqa: BLE001 -- reported, then the lab still goes down
            r["errors"].append("%s: %s" % (type(e).__name__, e))
            print("  ERROR: %s" % e, flush=True)
        finally:
            t = time.monotonic()
            errs = lab_down(name)
            r["down_s"] = time.monotonic() - t
            r["errors"] += ["down: " + e for e in errs]
            left = [ns for ns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
                    .stdout.split() if ns.startswith("spt-" + name)]
            if left:
                r["errors"].append("namespaces left after down: %s" % left)
            print("  lab down: %.1f s%s" % (r["down_s"], (" ERRORS: %s" % errs) if errs else ""), flush=True)
        if "noop" in r and "first" in r:
            r["noop_cpu_s"] = (r["noop"]["server_cpu_s"] - r["first"]["server_cpu_s"]
                               if r["noop"]["server_pid"] == r["first"]["server_pid"]
                               and r["noop"]["server_cpu_s"] is not None and r["first"]["server_cpu_s"] is not None
                               else None)
        results.append(r)

    # --- table ---
    done = [r for r in results if r.get("first_s") is not None]
    print("\nN = agent hosts (+1 server); forks = N+2; marginal = (this - previous size) / added hosts")
    head = ("N", "first s", "no-op s", "no-op/first", "marg first s/host", "marg no-op s/host",
            "no-op ctl CPU s", "marg no-op ctl CPU s/host", "no-op tasks run/host",
            "peak RSS MB", "tree RSS MB", "server CPU s first", "server CPU s no-op", "no-op changed")
    print(" | ".join(head))
    prev = None
    for r in done:
        first, noop = r.get("first_s"), r.get("noop_s")
        mf = mn = mc = None
        ncpu = r["noop"]["controller_cpu_s"] if r.get("noop") else None
        if prev is not None:
            dn = float(r["n"] - prev["n"])
            mf = (first - prev["first_s"]) / dn
            if noop is not None and prev.get("noop_s") is not None:
                mn = (noop - prev["noop_s"]) / dn
                mc = (ncpu - prev["noop"]["controller_cpu_s"]) / dn
        r["marginal_first_s_per_host"], r["marginal_noop_s_per_host"] = mf, mn
        r["marginal_noop_controller_cpu_s_per_host"] = mc
        rss = max(x["peak_rss_mb"] for x in (r.get("first"), r.get("noop")) if x)
        tree = max(x["peak_tree_rss_mb"] for x in (r.get("first"), r.get("noop")) if x)
        r["peak_rss_mb"], r["peak_tree_rss_mb"] = rss, tree
        print(" | ".join([
            str(r["n"]), fmt(first), fmt(noop), fmt(noop / first if noop else None, "%.2f"), fmt(mf, "%.2f"),
            fmt(mn, "%.2f"), fmt(ncpu), fmt(mc, "%.2f"),
            fmt(r["noop"]["results_run"] / (r["n"] + 1.0) if r.get("noop") else None),
            "%.0f" % rss, "%.0f" % tree, fmt(r["first"].get("server_cpu_s"), "%.2f"),
            fmt(r.get("noop_cpu_s"), "%.2f"), str(r["noop"]["changed"]) if r.get("noop") else "-"]))
        prev = r
    for r in results:
        if r.get("skipped"):
            print("N=%d: skipped (%s)" % (r["n"], r["skipped"]))
        for e in r["errors"]:
            print("N=%d: %s" % (r["n"], e))
        if r.get("noop") and r["noop"]["changed"]:
            chg = [(t["task"], t["changed"]) for t in merged_tasks(r["noop"]["timings"]) if t["changed"]]
            print("N=%d: the no-op run CHANGED %d: %s" % (r["n"], r["noop"]["changed"], chg))

    with_noop = [r for r in done if r.get("noop") and r["noop"].get("timings")]
    if with_noop:
        big = with_noop[-1]
        tasks = merged_tasks(big["noop"]["timings"])
        total = big["noop"]["timings"]["elapsed"]
        print("\nTop %d tasks of the no-op run at N=%d by elapsed wall time (run %.1f s; host-s = summed over hosts)"
              % (a.top, big["n"], total))
        print("  elapsed s | % of run | host-s | results | task  (path)")
        for t in tasks[:a.top]:
            print("  %9.2f | %7.1f%% | %6.2f | %7d | %s  (%s)" % (
                t["elapsed"], 100.0 * t["elapsed"] / total, t["host_seconds"], t["host_results"], t["task"],
                short_path(t["path"])))
        print("\nNo-op run at N=%d by kind of task (delegated tasks counted once, under 'delegated')" % big["n"])
        print("  elapsed s | % of run | host-s | tasks | kind")
        for k in by_kind(big["noop"]["timings"]):
            print("  %9.2f | %7.1f%% | %6.2f | %5d | %s" % (k["elapsed"], 100.0 * k["elapsed"] / total,
                                                           k["host_seconds"], k["tasks"], k["kind"]))
        print("\nNo-op run by play (elapsed s per size)")
        plays = [p["play"] for p in by_play(big["noop"]["timings"])]
        print("  " + " | ".join(["N=%d" % r["n"] for r in with_noop]) + " | play")
        for play in plays:
            vals = []
            for r in with_noop:
                m = {p["play"]: p for p in by_play(r["noop"]["timings"])}.get(play)
                vals.append(fmt(m["elapsed"] if m else None, "%5.1f"))
            print("  " + " | ".join(vals) + " | " + play)
        big["noop_top_tasks"] = tasks[:a.top]
        big["noop_by_kind"] = by_kind(big["noop"]["timings"])
    print("\nload average at the end: %.1f %.1f %.1f" % os.getloadavg())

    if a.json:
        for r in results:
            for tag in ("first", "noop"):
                if r.get(tag):
                    tl = r[tag].pop("timings")
                    r[tag].update({"tasks": merged_tasks(tl), "by_kind": by_kind(tl), "by_play": by_play(tl)})
        Path(a.json).write_text(json.dumps({"sizes": a.sizes, "subnet": a.subnet, "results": results}, indent=1))
        print("JSON: %s" % a.json)
    return 0 if all(not r["errors"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
