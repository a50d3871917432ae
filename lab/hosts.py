# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab's hosts on this machine (lab/lab.py's machinery): set them up, probe them.

* process helpers: pid files, liveness (zombies are dead), killing, which network namespace a process lives in;
* the network: one bridge on the lab's private /24, one network namespace per host with a veth pair into the
  bridge (``eth0`` inside, default route via the bridge);
* SSH keys (the lab's client key, each host's host key, the known_hosts file Ansible checks against);
* the TPMs: the shared "manufacturer" CA and each host's swtpm (manufacturing and serving are lab/swtpm.py's);
* each host's private files (hostname, /etc/hosts, root's shell rc, authorized_keys, sshd_config) and its sshd,
  started under ``unshare --mount --uts`` with the host's own directories bind-mounted over HOST_DIRS (and over a
  service host's service directories);
* the PostgreSQL / HAProxy of service hosts (lab/services.py) and ``host_status`` (what ``lab.py status`` shows).

Every ``ensure_*`` step is idempotent: ``lab.py up`` runs them all and repairs a half-up lab. ``h`` is a lab.py
``Host``, ``lab`` a lab.py ``Lab``. Python standard library only; errors are LabError (services.ServiceError from
``ensure_service``).
"""

import grp
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import swtpm  # noqa: E402  (lab/swtpm.py: the one place that manufactures and serves software TPMs)
import services  # noqa: E402  (lab/services.py: the PostgreSQL and HAProxy hosts of HA labs)

# Where each host sees its TPM (a unix socket served by its own swtpm), and the TCTI that reaches it.
TPM_SOCKET = "/run/swtpm/tpm.sock"
TPM_TCTI = swtpm.tcti(TPM_SOCKET)
TPM_GROUP = "tss"
# Directories every lab host gets privately (bind mounts inside the host's mount namespace).
HOST_DIRS = ("/etc/spire", "/opt/spire", "/var/lib/spire", "/run/spire", "/etc/ansible/facts.d", "/var/lib/trustroot",
             "/run/swtpm")
ROOT_BASHRC = "/root/.bashrc"  # hidden inside each host by the host's own (see write_host_files)


class LabError(Exception):
    pass


def run(cmd, check=True, netns=None, env=None, input=None):
    if netns:
        cmd = ["ip", "netns", "exec", netns] + list(cmd)
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, input=input)
    if check and out.returncode != 0:
        raise LabError("%s failed (rc=%d): %s%s" % (" ".join(str(c) for c in cmd), out.returncode, out.stdout,
                                                    out.stderr))
    return out


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


# --- up: network, keys, TPMs, per-host files and daemons -----------------------------------------------------


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


def write_ca_bundle(lab, manufacturer):
    if lab.root_ca.exists() and lab.intermediate_ca.exists():
        manufacturer.bundle(lab.ca_bundle)
        certs = lab.ca_dir / "certs"
        certs.mkdir(exist_ok=True)
        (certs / "manufacturer-root.pem").write_text(lab.root_ca.read_text())
        (certs / "manufacturer-intermediate.pem").write_text(lab.intermediate_ca.read_text())


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


def ensure_service(lab, h):
    servers = [(o.name, o.address) for o in lab.hosts if o.role == "server"]
    services.ensure(h, str(lab.network), servers)


# --- status --------------------------------------------------------------------------------------------------


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

