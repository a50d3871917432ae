#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A local lab of TPM-backed hosts on one Linux machine, without VMs or containers (run as root).

Each lab host is a network namespace with a veth pair into a bridge on a private /24 that the lab creates. Inside it:

* sshd, started under ``unshare --mount --uts`` so the host has its own hostname and its own bind-mounted
  /etc/spire, /opt/spire, /var/lib/spire, /run/spire, /etc/ansible/facts.d and /var/lib/trustroot (per-host
  directories under the lab's state dir): roles run with their real default paths on every host;
* a swtpm manufactured with EK certificates (RSA-2048 at NV 0x01c00002, ECC P-384 at 0x01c00016) issued by ONE
  shared local "manufacturer" CA (swtpm_localca, root + intermediate), served on the unix socket
  /run/swtpm/tpm.sock inside the host (group tss, mode 0660, like /dev/tpmrm0): the real SPIRE agent takes it as
  ``tpm_device_path``, the modules and tpm2-tools reach it with the TCTI ``cmd:socat - UNIX-CONNECT:/run/swtpm/tpm.sock``.
  Manufacturing and serving are lab/swtpm.py's (shared with the tests).

Default hosts: spire-server-1 (group spire_servers) and agent-1..3 (spire_agents); agent-3 is manufactured WITHOUT
an EK certificate (the real-world "no EK cert" failure path). ``--host NAME:notpm`` adds a host without any TPM.
``--host NAME:postgres`` and ``--host NAME:haproxy`` add service hosts without TPM for HA SPIRE labs (lab/services.py):
PostgreSQL with role and database ``spire``, HAProxy balancing TCP port 8081 over the lab's ``server`` hosts.

Usage::

    python3 lab/lab.py up [--name lab] [--subnet 10.213.0.0/24] [--host NAME[:server|agent|postgres|haproxy][:noek]
                          [:notpm] ...]
    python3 lab/lab.py status|inventory|down [--purge] [--name lab]
    python3 lab/lab.py service [--name lab] HOST start|stop|status  # the postgres/haproxy of a service host
    python3 lab/lab.py exec [--name lab] HOST -- tpm2_getcap properties-fixed   # inside the host (TCTI preset)

``up`` and ``down`` are idempotent: ``up`` repairs a half-up lab, ``down`` kills every process of the lab by its pid
file and every process left in its namespaces, then deletes the namespaces and the bridge. ``down --purge`` also
removes the state dir (TPM state, keys, per-host files).

This file is the command line, the lab's configuration (Host, Lab, its lab.json) and the up/down/status/service/exec
orchestration. lab/hosts.py does the work on the machine (namespaces and veths, keys, TPMs, per-host files, sshd,
service hosts, status probes); lab/inventory.py writes the Ansible inventory.

Settings from the environment: SPIRE_TPM_LAB_NAME, SPIRE_TPM_LAB_SUBNET, SPIRE_TPM_LAB_DIR (state root, default
<repo>/.build/lab), SPIRE_TPM_VENV (the lab hosts' ansible_python_interpreter is $SPIRE_TPM_VENV/bin/python).
Python standard library only.
"""

import argparse
import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import swtpm  # noqa: E402  (lab/swtpm.py: the one place that manufactures and serves software TPMs)
import services  # noqa: E402  (lab/services.py: the PostgreSQL and HAProxy hosts of HA labs)
# lab/hosts.py: the hosts on this machine (processes, namespaces, TPMs, sshd); lab/inventory.py: inventory.yml.
from hosts import (  # noqa: E402
    HOST_DIRS, TPM_SOCKET, TPM_TCTI, LabError, ensure_keys, ensure_manufacturer, ensure_network, ensure_service,
    ensure_sshd, ensure_swtpm, host_status, kill_pid, link_exists, manufacture, netns_exists, netns_pids,
    pid_alive, pid_in_netns, read_pid, run, write_ca_bundle, write_host_files)
from inventory import write_inventory  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HOSTS = ("spire-server-1:server", "agent-1:agent", "agent-2:agent", "agent-3:agent:noek")


def log(msg):
    print("lab: %s" % msg, flush=True)


# --- configuration -------------------------------------------------------------------------------------------


class Host:
    def __init__(self, lab, index, spec):
        parts = spec.split(":")
        self.name = parts[0]
        flags = set(parts[1:])
        kinds = flags & ({"server", "agent"} | set(services.KINDS))
        unknown = flags - kinds - {"noek", "notpm"}
        if unknown or not self.name or len(kinds) > 1:
            raise LabError("bad host spec %r (NAME[:server|agent|postgres|haproxy][:noek][:notpm])" % spec)
        self.role = kinds.pop() if kinds else "agent"
        # A service host (postgres, haproxy) has no TPM.
        self.service = self.role if self.role in services.KINDS else None
        if self.service and "noek" in flags:
            raise LabError("bad host spec %r: a %s host has no TPM (no 'noek')" % (spec, self.service))
        self.ek_certs = "noek" not in flags
        self.has_tpm = "notpm" not in flags and not self.service
        self.index = index
        self.lab = lab
        self.address = str(lab.network.network_address + 10 + index)
        self.netns = "spt-%s-%s" % (lab.name, self.name)
        self.veth_root = "%sh%d" % (lab.tag, index)
        self.veth_peer = "%sn%d" % (lab.tag, index)
        self.dir = lab.state / "hosts" / self.name

    @property
    def flags(self):
        f = [self.role]
        if not self.ek_certs:
            f.append("noek")
        if not self.has_tpm:
            f.append("notpm")
        return f

    @property
    def bind_dirs(self):
        """Directories private to the host (bind mounts of its own dirs inside its mount namespace)."""
        return HOST_DIRS + services.SERVICE_DIRS.get(self.service, ())

    def path(self, *parts):
        return self.dir.joinpath(*parts)

    @property
    def tpm_state(self):
        return self.path("tpm")

    @property
    def swtpm_pidfile(self):
        return self.path("swtpm.pid")

    @property
    def tpm_socket(self):
        """The machine-side path of the socket the host sees as TPM_SOCKET."""
        return self.root_dir(TPM_SOCKET)

    @property
    def sshd_pidfile(self):
        return self.path("sshd.pid")

    def root_dir(self, target):
        """The per-host directory bind-mounted over ``target`` inside the host."""
        return self.path("root", target.lstrip("/"))


class Lab:
    def __init__(self, name, subnet, state_root, host_specs, python):
        if not name or not all(c.isalnum() or c == "-" for c in name) or len(name) > 20:
            raise LabError("lab name %r: use up to 20 letters, digits and '-'" % name)
        self.name = name
        self.network = ipaddress.ip_network(subnet, strict=True)
        if self.network.prefixlen != 24 or not self.network.is_private or self.network.is_loopback:
            raise LabError("subnet %s must be a private /24 (e.g. 10.213.0.0/24)" % subnet)
        self.tag = "l" + hashlib.sha1(name.encode()).hexdigest()[:6]
        self.bridge = self.tag + "br"
        self.gateway = str(self.network.network_address + 1)
        self.state = Path(state_root) / name
        self.python = python
        self.hosts = [Host(self, i + 1, spec) for i, spec in enumerate(host_specs)]
        names = [h.name for h in self.hosts]
        if len(set(names)) != len(names):
            raise LabError("host names must be unique: %s" % names)
        if len(self.hosts) > 200:
            raise LabError("at most 200 hosts")

    # files shared by the whole lab
    @property
    def ssh_key(self):
        return self.state / "ssh" / "id_ed25519"

    @property
    def known_hosts(self):
        return self.state / "ssh" / "known_hosts"

    @property
    def inventory(self):
        return self.state / "inventory.yml"

    @property
    def ca_dir(self):
        return self.state / "manufacturer"

    @property
    def root_ca(self):
        return self.ca_dir / swtpm.ROOT_CA_FILE

    @property
    def intermediate_ca(self):
        return self.ca_dir / swtpm.INTERMEDIATE_CA_FILE

    @property
    def ca_bundle(self):
        return self.ca_dir / "endorsement-ca-bundle.pem"

    def save(self):
        data = {"name": self.name, "subnet": str(self.network), "python": self.python,
                "hosts": [":".join([h.name] + h.flags) for h in self.hosts]}
        (self.state / "lab.json").write_text(json.dumps(data, indent=2) + "\n")


def load_lab(args):
    state_root = Path(args.state_dir)
    saved = state_root / args.name / "lab.json"
    data = {}
    if saved.exists():
        data = json.loads(saved.read_text())
    hosts = args.host or data.get("hosts") or list(DEFAULT_HOSTS)
    subnet = args.subnet or data.get("subnet") or "10.213.0.0/24"
    python = args.python or default_python()
    return Lab(args.name, subnet, state_root, hosts, python)


def default_python():
    venv = os.environ.get("SPIRE_TPM_VENV")
    if venv:
        return str(Path(venv) / "bin" / "python")
    if sys.prefix != getattr(sys, "base_prefix", sys.prefix):
        return sys.executable  # lab.py runs from the project's venv: the hosts use the same one
    for cand in (ROOT / ".build" / "venv" / "bin" / "python", Path("/tmp/venv/bin/python")):
        if cand.exists():
            return str(cand)
    return "/usr/bin/python3"


# --- up ------------------------------------------------------------------------------------------------------


def up(lab):
    t0 = time.monotonic()
    for kind in sorted({h.service for h in lab.hosts if h.service}):
        services.check(kind)  # before touching anything: which package is missing
    lab.state.mkdir(parents=True, exist_ok=True)
    lab.save()
    ensure_network(lab)
    ensure_keys(lab)
    setup = ensure_manufacturer(lab)
    # The first TPM with EK certificates creates the manufacturer CA: do it alone, then the rest in parallel.
    todo = [h for h in lab.hosts if h.has_tpm]
    first = [h for h in todo if h.ek_certs][:1]
    for h in first:
        manufacture(h, setup)
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda h: manufacture(h, setup), [h for h in todo if h not in first]))
    write_ca_bundle(lab, setup)
    for h in lab.hosts:
        write_host_files(lab, h)

    def start(h):
        ensure_swtpm(h)
        ensure_sshd(lab, h)
        if h.service:
            ensure_service(lab, h)
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(start, lab.hosts))
    write_inventory(lab)
    log("up: %d hosts in %.1f s; inventory %s" % (len(lab.hosts), time.monotonic() - t0, lab.inventory))


# --- down / status -------------------------------------------------------------------------------------------


def down(lab, purge=False):
    t0 = time.monotonic()
    for h in lab.hosts:
        if h.service and h.dir.exists():
            try:
                services.stop(h)  # cleanly (PostgreSQL: fast shutdown); whatever is left is killed below
            except (OSError, services.ServiceError) as e:
                log("down: stopping %s of %s: %s" % (h.service, h.name, e))
        for pidfile, comm in ((h.sshd_pidfile, "sshd"), (h.swtpm_pidfile, "swtpm")):
            pid = read_pid(pidfile)
            if pid_alive(pid, comm):
                kill_pid(pid)
            try:
                pidfile.unlink()
            except OSError:
                pass
        if netns_exists(h.netns):
            # Whatever else runs in the host (SSH sessions, agents started by roles) was started by the lab too.
            for pid in netns_pids(h.netns):
                kill_pid(pid, timeout=1.0)
            run(["ip", "netns", "del", h.netns], check=False)
        if link_exists(h.veth_root):
            run(["ip", "link", "del", h.veth_root], check=False)
    if link_exists(lab.bridge):
        run(["ip", "link", "del", lab.bridge], check=False)
    if purge and lab.state.exists():
        shutil.rmtree(lab.state)
    log("down: %s%s in %.1f s" % (lab.name, " (purged)" if purge else "", time.monotonic() - t0))


def find_host(lab, name):
    hosts = {h.name: h for h in lab.hosts}
    if name not in hosts:
        raise LabError("no host %r in lab %s (hosts: %s)" % (name, lab.name, ", ".join(hosts)))
    return hosts[name]


def exec_in_host(lab, name, cmd):
    """Run ``cmd`` inside a lab host exactly as its SSH sessions see it: network, mounts and hostname of its sshd."""
    h = find_host(lab, name)
    pid = read_pid(h.sshd_pidfile)
    if not (pid_alive(pid, "sshd") and pid_in_netns(pid, h.netns)):
        raise LabError("host %s is not up: run 'lab.py up --name %s'" % (name, lab.name))
    env = dict(os.environ, TPM2TOOLS_TCTI=TPM_TCTI, TSS2_LOG="all+NONE")
    return subprocess.call(["nsenter", "-t", str(pid), "-n", "-m", "-u"] + list(cmd or ["sh"]), env=env)


def service(lab, name, action):
    """``service HOST start|stop|status``: the PostgreSQL or HAProxy of a service host (e.g. a database outage)."""
    h = find_host(lab, name)
    if not h.service:
        raise LabError("host %s runs no service (only NAME:postgres and NAME:haproxy hosts do)" % name)
    if action == "status":
        up_ = services.running(h)
        print("running" if up_ else "stopped")
        return 0 if up_ else 3
    t0 = time.monotonic()
    if action == "stop":
        services.stop(h)
    elif action == "start":
        if not netns_exists(h.netns):
            raise LabError("host %s is not up: run 'lab.py up --name %s'" % (name, lab.name))
        services.start(h)
    else:
        raise LabError("service %s: unknown action %r (start, stop, status)" % (name, action))
    log("service %s %s: %s in %.1f s" % (name, action, h.service, time.monotonic() - t0))
    return 0


def status(lab, as_json=False):
    rows = [host_status(lab, h) for h in lab.hosts]
    ok = all(r["ok"] for r in rows)
    if as_json:
        print(json.dumps({"lab": lab.name, "subnet": str(lab.network), "inventory": str(lab.inventory),
                          "ok": ok, "hosts": rows}, indent=2))
    else:
        print("lab %s  subnet %s  inventory %s" % (lab.name, lab.network, lab.inventory))
        for r in rows:
            svc = ""
            if r["service"]:
                svc = " %s=%s" % (r["service"], "running" if r["service_running"] else "stopped")
            print("  %-16s %-15s netns=%-5s sshd=%-5s swtpm=%-5s %s%s %s" % (
                r["name"], r["address"], r["netns"], r["sshd"], r["swtpm"], ",".join(r["flags"]), svc,
                "OK" if r["ok"] else "DOWN"))
    return 0 if ok else 1


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["up", "down", "status", "inventory", "exec", "service"])
    p.add_argument("target", nargs="?", help="exec: the lab host to run the command in (the command follows --); "
                   "service: the postgres or haproxy host")
    p.add_argument("action", nargs="?", choices=["start", "stop", "status"], help="service: what to do")
    p.add_argument("--name", default=os.environ.get("SPIRE_TPM_LAB_NAME", "lab"))
    p.add_argument("--subnet", default=os.environ.get("SPIRE_TPM_LAB_SUBNET"),
                   help="private /24 the lab creates (default 10.213.0.0/24, or what the lab was brought up with)")
    p.add_argument("--state-dir", default=os.environ.get("SPIRE_TPM_LAB_DIR", str(ROOT / ".build" / "lab")))
    p.add_argument("--host", action="append",
                   help="NAME[:server|agent|postgres|haproxy][:noek][:notpm], repeatable (default: %s)"
                   % " ".join(DEFAULT_HOSTS))
    p.add_argument("--python", help="ansible_python_interpreter for the hosts (default: $SPIRE_TPM_VENV/bin/python)")
    p.add_argument("--purge", action="store_true", help="down: also delete the state dir (TPM state, keys)")
    p.add_argument("--json", action="store_true", help="status: JSON output")
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = []
    if "--" in argv:
        cmd = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    args = p.parse_intermixed_args(argv)
    if os.geteuid() != 0:
        print("lab: must run as root (network namespaces, bind mounts)", file=sys.stderr)
        return 2
    try:
        lab = load_lab(args)
        if args.command == "up":
            up(lab)
        elif args.command == "down":
            down(lab, args.purge)
        elif args.command == "status":
            return status(lab, args.json)
        elif args.command == "inventory":
            if not lab.inventory.exists():
                raise LabError("no inventory yet: run 'lab.py up --name %s' first" % lab.name)
            print(lab.inventory)
        elif args.command == "exec":
            return exec_in_host(lab, args.target, cmd)
        elif args.command == "service":
            if not args.target or not args.action:
                raise LabError("usage: lab.py service [--name %s] HOST start|stop|status" % lab.name)
            return service(lab, args.target, args.action)
    except (LabError, services.ServiceError) as e:
        print("lab: error: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
