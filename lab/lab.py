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

Settings from the environment: SPIRE_TPM_LAB_NAME, SPIRE_TPM_LAB_SUBNET, SPIRE_TPM_LAB_DIR (state root, default
<repo>/.build/lab), SPIRE_TPM_VENV (the lab hosts' ansible_python_interpreter is $SPIRE_TPM_VENV/bin/python).
Python standard library only.
"""

import argparse
import grp
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import swtpm  # noqa: E402  (lab/swtpm.py: the one place that manufactures and serves software TPMs)
import services  # noqa: E402  (lab/services.py: the PostgreSQL and HAProxy hosts of HA labs)

ROOT = Path(__file__).resolve().parent.parent
# Where each host sees its TPM (a unix socket served by its own swtpm), and the TCTI that reaches it.
TPM_SOCKET = "/run/swtpm/tpm.sock"
TPM_TCTI = swtpm.tcti(TPM_SOCKET)
TPM_GROUP = "tss"
# Directories every lab host gets privately (bind mounts inside the host's mount namespace).
HOST_DIRS = ("/etc/spire", "/opt/spire", "/var/lib/spire", "/run/spire", "/etc/ansible/facts.d", "/var/lib/trustroot",
             "/run/swtpm")
ROOT_BASHRC = "/root/.bashrc"  # hidden inside each host by the host's own (see write_host_files)
DEFAULT_HOSTS = ("spire-server-1:server", "agent-1:agent", "agent-2:agent", "agent-3:agent:noek")


class LabError(Exception):
    pass


def log(msg):
    print("lab: %s" % msg, flush=True)


def run(cmd, check=True, netns=None, env=None, input=None):
    if netns:
        cmd = ["ip", "netns", "exec", netns] + list(cmd)
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, input=input)
    if check and out.returncode != 0:
        raise LabError("%s failed (rc=%d): %s%s" % (" ".join(str(c) for c in cmd), out.returncode, out.stdout,
                                                    out.stderr))
    return out


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


# --- process helpers -----------------------------------------------------------------------------------------


def read_pid(pidfile):
    try:
        return int(Path(pidfile).read_text().strip())
    except (OSError, ValueError):
        return None


def pid_alive(pid, comm=None):
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # A zombie is dead: PID 1 on some machines (containers, microVM inits) reaps daemons late or never.
        if Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    except (OSError, IndexError):
        return False
    if comm:
        try:
            return comm in Path("/proc/%d/cmdline" % pid).read_bytes().decode(errors="replace")
        except OSError:
            return False
    return True


def kill_pid(pid, timeout=3.0):
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def netns_inode(name):
    try:
        return os.stat(Path("/run/netns", name)).st_ino
    except OSError:
        return None


def pid_in_netns(pid, name):
    """True when process ``pid`` lives in network namespace ``name`` (not in an older one of the same name)."""
    try:
        return os.stat("/proc/%d/ns/net" % pid).st_ino == netns_inode(name)
    except OSError:
        return False


def ensure_stopped_if_stray(pid, comm, netns):
    """Return True when ``pid`` runs in ``netns``; kill it when it runs in a stale namespace of the same name."""
    if not pid_alive(pid, comm):
        return False
    if pid_in_netns(pid, netns):
        return True
    kill_pid(pid)
    return False


def netns_exists(name):
    return Path("/run/netns", name).exists()


def netns_pids(name):
    out = run(["ip", "netns", "pids", name], check=False)
    return [int(p) for p in out.stdout.split() if p.isdigit()]


def link_exists(name, netns=None):
    cmd = ["ip", "link", "show", name]
    if netns:
        cmd = ["ip", "-n", netns, "link", "show", name]
    return run(cmd, check=False).returncode == 0


def wait_tcp(netns, addr, port, timeout=10.0):
    """Wait until ``addr:port`` accepts connections inside ``netns`` (probed from inside the namespace)."""
    probe = ("import socket,sys\ns=socket.socket();s.settimeout(0.3)\n"
             "sys.exit(0 if s.connect_ex((%r,%d))==0 else 1)" % (addr, port))
    deadline = time.time() + timeout
    while time.time() < deadline:
        if run([sys.executable, "-c", probe], check=False, netns=netns).returncode == 0:
            return True
        time.sleep(0.05)
    return False


# --- up ------------------------------------------------------------------------------------------------------


def check_subnet_free(lab):
    """Refuse a subnet that some other interface already uses (only our own bridge may hold it)."""
    out = run(["ip", "-j", "-4", "addr", "show"])
    for iface in json.loads(out.stdout or "[]"):
        if iface.get("ifname") == lab.bridge:
            continue
        for a in iface.get("addr_info", []):
            net = ipaddress.ip_network("%s/%s" % (a["local"], a["prefixlen"]), strict=False)
            if net.overlaps(lab.network):
                raise LabError("subnet %s overlaps %s on %s: choose another with --subnet"
                               % (lab.network, net, iface.get("ifname")))


def ensure_network(lab):
    check_subnet_free(lab)
    if not link_exists(lab.bridge):
        run(["ip", "link", "add", lab.bridge, "type", "bridge"])
    addr = "%s/24" % lab.gateway
    if addr not in run(["ip", "-4", "addr", "show", "dev", lab.bridge]).stdout:
        run(["ip", "addr", "add", addr, "dev", lab.bridge])
    run(["ip", "link", "set", lab.bridge, "up"])
    for h in lab.hosts:
        if not netns_exists(h.netns):
            run(["ip", "netns", "add", h.netns])
        run(["ip", "-n", h.netns, "link", "set", "lo", "up"])
        if not link_exists("eth0", h.netns):
            if link_exists(h.veth_root):
                run(["ip", "link", "del", h.veth_root])
            run(["ip", "link", "add", h.veth_root, "type", "veth", "peer", "name", h.veth_peer])
            run(["ip", "link", "set", h.veth_peer, "netns", h.netns])
            run(["ip", "-n", h.netns, "link", "set", h.veth_peer, "name", "eth0"])
        run(["ip", "link", "set", h.veth_root, "master", lab.bridge])
        run(["ip", "link", "set", h.veth_root, "up"])
        if "%s/24" % h.address not in run(["ip", "-n", h.netns, "-4", "addr", "show", "dev", "eth0"]).stdout:
            run(["ip", "-n", h.netns, "addr", "add", "%s/24" % h.address, "dev", "eth0"])
        run(["ip", "-n", h.netns, "link", "set", "eth0", "up"])
        out = run(["ip", "-n", h.netns, "route", "show", "default"]).stdout
        if not out.strip():
            run(["ip", "-n", h.netns, "route", "add", "default", "via", lab.gateway])


def ensure_keys(lab):
    (lab.state / "ssh").mkdir(parents=True, exist_ok=True)
    os.chmod(lab.state / "ssh", 0o700)
    if not lab.ssh_key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lab-%s" % lab.name, "-f", lab.ssh_key])
    for h in lab.hosts:
        h.path("ssh").mkdir(parents=True, exist_ok=True)
        key = h.path("ssh", "ssh_host_ed25519_key")
        if not key.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", h.name, "-f", key])
    lines = []
    for h in lab.hosts:
        pub = h.path("ssh", "ssh_host_ed25519_key.pub").read_text().split()
        lines.append("%s,%s %s %s\n" % (h.address, h.name, pub[0], pub[1]))
    lab.known_hosts.write_text("".join(lines))


def ensure_manufacturer(lab):
    """The shared local "manufacturer" CA (swtpm_localca creates its root + intermediate on first use)."""
    return swtpm.Manufacturer(lab.ca_dir)


def manufacture(h, manufacturer):
    """Manufacture the host's TPM once (its EKs stay the same across down/up until --purge)."""
    if not h.has_tpm:
        return False
    marker = h.path("tpm", ".manufactured")
    if marker.exists():
        return False
    if h.tpm_state.exists():
        shutil.rmtree(h.tpm_state)
    try:
        swtpm.manufacture(h.tpm_state, manufacturer, ek_certs=h.ek_certs)
    except swtpm.SwtpmError as e:
        raise LabError("TPM of %s: %s" % (h.name, e))
    marker.write_text("ek_certs=%s\n" % h.ek_certs)
    return True


def tpm_gid():
    try:
        return grp.getgrnam(TPM_GROUP).gr_gid
    except KeyError:
        return None  # no tss group: the socket stays root's (0660 root:root)


def ensure_swtpm(h):
    if not h.has_tpm:
        return
    if ensure_stopped_if_stray(read_pid(h.swtpm_pidfile), "swtpm", h.netns) and swtpm.accepts(h.tpm_socket):
        return
    swtpm.stop(h.swtpm_pidfile)
    try:
        swtpm.start(h.tpm_state, h.tpm_socket, h.swtpm_pidfile, logfile=h.path("swtpm.log"), netns=h.netns,
                    gid=tpm_gid())
    except swtpm.SwtpmError as e:
        raise LabError("swtpm of %s: %s" % (h.name, e))


def write_host_files(lab, h):
    for target in HOST_DIRS:
        h.root_dir(target).mkdir(parents=True, exist_ok=True)
        Path(target).mkdir(parents=True, exist_ok=True)  # the mount point on the machine (stays empty)
    if h.service == "postgres":
        services.pg_prepare(h)  # its private cluster and socket dirs, owned by postgres
    etc = h.path("etc")
    etc.mkdir(exist_ok=True)
    (etc / "hostname").write_text(h.name + "\n")
    hosts = ["127.0.0.1 localhost", "127.0.1.1 %s" % h.name, "::1 localhost ip6-localhost ip6-loopback"]
    hosts += ["%s %s" % (o.address, o.name) for o in lab.hosts if o is not h]
    (etc / "hosts").write_text("\n".join(hosts) + "\n")
    # The host's own root shell rc: sshd runs every command through the login shell, and Debian's bash reads ~/.bashrc
    # for SSH commands too. The machine's (shared) /root/.bashrc may do slow things -- this one runs `pyenv init -`:
    # ~100 processes and 0.11 s per SSH session, i.e. per module call -- that no fleet host does.
    (etc / "root.bashrc").write_text("# lab host %s: root's shell rc (generated by lab/lab.py; the machine's is hidden)\n"
                                     % h.name)
    auth = h.path("ssh", "authorized_keys")
    auth.write_text(Path(str(lab.ssh_key) + ".pub").read_text())
    os.chmod(auth, 0o600)
    (h.path("ssh") / "sshd_config").write_text(
        "# lab host %(name)s (generated by lab/lab.py)\n"
        "ListenAddress %(addr)s:22\n"
        "HostKey %(hostkey)s\n"
        "PidFile %(pid)s\n"
        "AuthorizedKeysFile %(auth)s\n"
        "PermitRootLogin prohibit-password\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        "UseDNS no\n"
        # The state dir may live under /tmp (tests): sshd's StrictModes would refuse keys below a world-writable dir.
        "StrictModes no\n"
        "MaxStartups 64\n"
        "MaxSessions 64\n"
        "PrintMotd no\n"
        "AcceptEnv LANG LC_*\n"
        "Subsystem sftp internal-sftp\n"
        % {"name": h.name, "addr": h.address, "hostkey": h.path("ssh", "ssh_host_ed25519_key"),
           "pid": h.sshd_pidfile, "auth": auth})


def ensure_sshd(lab, h):
    if ensure_stopped_if_stray(read_pid(h.sshd_pidfile), "sshd", h.netns):
        return
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    mounts = ["mount --bind %s %s" % (h.root_dir(t), t) for t in h.bind_dirs]
    mounts += ["mount --bind %s /etc/hostname" % h.path("etc", "hostname"),
               "mount --bind %s /etc/hosts" % h.path("etc", "hosts")]
    if os.path.exists(ROOT_BASHRC):
        mounts.append("mount --bind %s %s" % (h.path("etc", "root.bashrc"), ROOT_BASHRC))
    script = "set -e; hostname %s; %s; exec /usr/sbin/sshd -f %s -E %s" % (
        h.name, "; ".join(mounts), h.path("ssh", "sshd_config"), h.path("sshd.log"))
    run(["unshare", "--mount", "--uts", "--propagation", "private", "sh", "-c", script], netns=h.netns)
    if not wait_tcp(h.netns, h.address, 22):
        raise LabError("sshd of %s did not start (see %s)" % (h.name, h.path("sshd.log")))


def yaml_scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return json.dumps(str(v))  # JSON strings are valid YAML double-quoted scalars


def write_inventory(lab):
    common = {
        "ansible_user": "root",
        "ansible_ssh_private_key_file": lab.ssh_key,
        "ansible_python_interpreter": lab.python,
        "ansible_ssh_common_args": "-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes" % lab.known_hosts,
        "ansible_ssh_pipelining": True,
        "tpm_tcti": TPM_TCTI,
        # The same TPM for SPIRE's agent (tpm_device_path) and the group that may open it (like /dev/tpmrm0).
        "lab_tpm_socket": TPM_SOCKET,
        "lab_tpm_group": TPM_GROUP,
        "tpm_host_install_packages": False,
        "lab_name": lab.name,
        "lab_state_dir": lab.state,
        "lab_manufacturer_root_ca": lab.root_ca,
        "lab_manufacturer_intermediate_ca": lab.intermediate_ca,
        # Root AND intermediate in one PEM bundle: SPIRE's tpm_devid server (endorsement_ca_path) verifies EK
        # certificates with no intermediates pool. Every host may read it (tpm_ek_info's chain check).
        "lab_endorsement_ca_bundle": lab.ca_bundle,
    }
    common.update(service_vars(lab))
    server_vars = {
        # The manufacturer CA as a directory of PEM files (spire-tpm-plugin's ca_path): root and intermediate.
        "lab_manufacturer_ca_dir": lab.ca_dir / "certs",
    }

    def hostblock(hosts, indent, with_vars):
        out = []
        for h in hosts:
            if not with_vars:
                out.append("%s%s: {}" % (" " * indent, h.name))
                continue
            out.append("%s%s:" % (" " * indent, h.name))
            hv = {"ansible_host": h.address, "lab_netns": h.netns, "lab_host_dir": h.dir,
                  "lab_ek_certs": h.ek_certs, "lab_has_tpm": h.has_tpm}
            if h.service:
                hv["lab_service"] = h.service
            for k, v in hv.items():
                out.append("%s%s: %s" % (" " * (indent + 2), k, yaml_scalar(v)))
        return out

    lines = ["# Generated by lab/lab.py up --name %s: do not edit, re-run 'up' instead." % lab.name,
             "all:", "  vars:"]
    lines += ["    %s: %s" % (k, yaml_scalar(v)) for k, v in common.items()]
    lines += ["  children:"]
    servers = [h for h in lab.hosts if h.role == "server"]
    agents = [h for h in lab.hosts if h.role == "agent"]
    # Host variables are written once (in spire_servers / spire_agents / the service groups); the other groups only
    # list members. Service hosts (postgres, haproxy) are in none of the SPIRE or TPM groups.
    groups = [("spire_servers", servers, server_vars, True), ("spire_agents", agents, None, True),
              ("tpm_hosts", [h for h in lab.hosts if h.has_tpm], None, False),
              ("lab_no_ek_cert", [h for h in lab.hosts if h.has_tpm and not h.ek_certs], None, False),
              ("lab_no_tpm", [h for h in lab.hosts if not h.has_tpm and not h.service], None, False)]
    for gname, kind in (("lab_postgres", "postgres"), ("lab_load_balancers", "haproxy")):
        members = service_hosts(lab, kind)
        if members:
            groups.append((gname, members, None, True))
    for gname, members, gvars, with_vars in groups:
        lines.append("    %s:" % gname)
        if gvars:
            lines.append("      vars:")
            lines += ["        %s: %s" % (k, yaml_scalar(v)) for k, v in gvars.items()]
        if members:
            lines.append("      hosts:")
            lines += hostblock(members, 8, with_vars)
        elif not gvars:
            lines[-1] += " {}"
    lab.inventory.write_text("\n".join(lines) + "\n")
    # It holds the database password when the lab has a postgres host.
    os.chmod(lab.inventory, 0o600 if "lab_postgres_password" in common else 0o644)


def service_hosts(lab, kind):
    """The lab's hosts running service ``kind`` (postgres, haproxy), in the lab's order."""
    return [h for h in lab.hosts if h.service == kind]


def service_vars(lab):
    """Variables of every host for HA labs: the (first) postgres host and the (first) load balancer."""
    out = {}
    pg = service_hosts(lab, "postgres")
    if pg:
        h = pg[0]
        out.update({
            "lab_postgres_host": h.address,
            "lab_postgres_port": services.PG_PORT,
            "lab_postgres_db": services.PG_DB,
            "lab_postgres_user": services.PG_USER,
            "lab_postgres_password": services.pg_password(h),
            # SPIRE's sql datastore (database_type "postgres") takes libpq's key=value form.
            "lab_spire_datastore_connection_string": services.pg_connection_string(h),
        })
    lb = service_hosts(lab, "haproxy")
    if lb:
        h = lb[0]
        out.update({
            "lab_spire_server_address": h.address,
            "lab_spire_server_port": services.LB_PORT,
            # HAProxy's admin socket on the machine ("show stat": which servers are UP).
            "lab_haproxy_stats_socket": services.haproxy_files(h)["stats"],
        })
    return out


def write_ca_bundle(lab, manufacturer):
    if lab.root_ca.exists() and lab.intermediate_ca.exists():
        manufacturer.bundle(lab.ca_bundle)
        certs = lab.ca_dir / "certs"
        certs.mkdir(exist_ok=True)
        (certs / "manufacturer-root.pem").write_text(lab.root_ca.read_text())
        (certs / "manufacturer-intermediate.pem").write_text(lab.intermediate_ca.read_text())


def ensure_service(lab, h):
    servers = [(o.name, o.address) for o in lab.hosts if o.role == "server"]
    services.ensure(h, str(lab.network), servers)


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


def _running(pidfile, comm, netns):
    pid = read_pid(pidfile)
    return bool(pid_alive(pid, comm) and pid_in_netns(pid, netns))


def host_status(lab, h):
    st = {"name": h.name, "address": h.address, "netns": netns_exists(h.netns), "flags": h.flags,
          "sshd": _running(h.sshd_pidfile, "sshd", h.netns)}
    st["swtpm"] = _running(h.swtpm_pidfile, "swtpm", h.netns) if h.has_tpm else None
    st["ssh_port"] = bool(st["netns"] and wait_tcp(h.netns, h.address, 22, timeout=0.5))
    st["service"] = h.service
    st["service_running"] = services.running(h) if h.service else None
    st["ok"] = bool(st["netns"] and st["sshd"] and st["ssh_port"] and st["swtpm"] in (True, None)
                    and st["service_running"] in (True, None))
    return st


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
