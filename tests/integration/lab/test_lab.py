# -*- coding: utf-8 -*-
"""The lab itself (lab/lab.py): hosts reachable over real SSH, each with its own hostname, its own SPIRE
directories and its own swtpm whose EK certificates chain to the one lab manufacturer CA — checked with
tpm2-tools inside each host (its network and mount namespaces, as its SSH sessions see it) and with openssl, not
with the lab's own code. Each host sees its TPM as the unix socket /run/swtpm/tpm.sock (group tss, mode 0660),
reached with the cmd TCTI through socat.

The test lab uses its own name, subnet and state dir, so it never clashes with a lab a developer has up.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
LAB = ROOT / "lab" / "lab.py"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (network namespaces)")

HOSTS = ["spire-server-1:server", "agent-1:agent", "agent-2:agent", "agent-3:agent:noek", "bare-1:agent:notpm"]
TPM_SOCKET = "/run/swtpm/tpm.sock"
TPM_TCTI = "cmd:socat - UNIX-CONNECT:%s" % TPM_SOCKET


def _free_subnet():
    """A /24 under 10.213.128.0/17 that no interface of this machine uses (developer labs use 10.213.0.0/24)."""
    used = []
    out = subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True, check=True)
    for iface in json.loads(out.stdout or "[]"):
        for a in iface.get("addr_info", []):
            used.append(ipaddress.ip_network("%s/%s" % (a["local"], a["prefixlen"]), strict=False))
    start = 128 + os.getpid() % 120
    for third in list(range(start, 250)) + list(range(128, start)):
        net = ipaddress.ip_network("10.213.%d.0/24" % third)
        if not any(net.overlaps(u) for u in used):
            return str(net)
    raise RuntimeError("no free /24 in 10.213.128.0/17")


class LabUnderTest:
    def __init__(self, state_dir):
        self.name = "t%x" % (os.getpid() % 0xFFFF)
        self.subnet = _free_subnet()
        self.state_dir = Path(state_dir)

    @property
    def dir(self):
        return self.state_dir / self.name

    def lab(self, *args, check=True):
        cmd = [sys.executable, str(LAB), args[0], "--name", self.name, "--state-dir", str(self.state_dir)]
        cmd += list(args[1:])
        out = subprocess.run(cmd, capture_output=True, text=True)
        if check:
            assert out.returncode == 0, "lab.py %s failed (%d): %s %s" % (args, out.returncode, out.stdout, out.stderr)
        return out

    def status(self):
        out = self.lab("status", "--json", check=False)
        return out.returncode, json.loads(out.stdout)

    @property
    def inventory(self):
        return self.dir / "inventory.yml"

    def netns(self, host):
        return "spt-%s-%s" % (self.name, host)

    def sshd_pid(self, host):
        return int((self.dir / "hosts" / host / "sshd.pid").read_text())

    def in_host(self, host, *cmd, check=True, text=True):
        """Run ``cmd`` in the host's network, mount and UTS namespaces (those of its sshd), TCTI of the inventory."""
        env = dict(os.environ, TPM2TOOLS_TCTI=TPM_TCTI, TSS2_LOG="all+NONE")
        out = subprocess.run(["nsenter", "-t", str(self.sshd_pid(host)), "-n", "-m", "-u"] + list(cmd),
                             capture_output=True, text=text, env=env)
        if check:
            assert out.returncode == 0, "%s in %s failed: %s" % (cmd, host, out.stderr)
        return out


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    t = LabUnderTest(tmp_path_factory.mktemp("lab"))
    args = ["up", "--subnet", t.subnet]
    for h in HOSTS:
        args += ["--host", h]
    t0 = time.monotonic()
    t.lab(*args)
    t.up_seconds = time.monotonic() - t0
    yield t
    t.lab("down", "--purge", check=False)


def test_up_reports_every_host_running(lab):
    rc, st = lab.status()
    assert rc == 0, st
    assert [h["name"] for h in st["hosts"]] == [h.split(":")[0] for h in HOSTS]
    assert all(h["ok"] for h in st["hosts"])
    bare = [h for h in st["hosts"] if h["name"] == "bare-1"][0]
    assert bare["swtpm"] is None and "notpm" in bare["flags"]
    print("lab up (5 hosts, fresh): %.1f s" % lab.up_seconds)


def _adhoc(lab, tmp_path, module, args=None, check=True):
    """Run an ad-hoc Ansible module on every lab host; return {host: result} (tree callback, one JSON per host)."""
    tree = tmp_path / ("tree-%d" % time.monotonic_ns())
    cmd = [str(Path(sys.executable).parent / "ansible"), "all", "-i", str(lab.inventory), "-m", module, "-t", str(tree)]
    if args:
        cmd += ["-a", args]
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_DEPRECATION_WARNINGS="0")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check:
        assert out.returncode == 0, "ansible %s failed (%d): %s %s" % (module, out.returncode, out.stdout, out.stderr)
    return {p.name: json.loads(p.read_text()) for p in tree.iterdir()}


def test_ansible_reaches_every_host_with_own_hostname_and_dirs(lab, tmp_path):
    names = [h.split(":")[0] for h in HOSTS]
    pings = _adhoc(lab, tmp_path, "ansible.builtin.ping")
    assert sorted(pings) == sorted(names)
    assert all(r["ping"] == "pong" for r in pings.values())
    hostnames = _adhoc(lab, tmp_path, "ansible.builtin.command", "hostname")
    assert {h: r["stdout"] for h, r in hostnames.items()} == {n: n for n in names}
    _adhoc(lab, tmp_path, "ansible.builtin.copy", "dest=/etc/spire/whoami content={{inventory_hostname}} mode=0644")
    listing = _adhoc(lab, tmp_path, "ansible.builtin.command", "ls /etc/spire /var/lib/spire /etc/ansible/facts.d")
    for name in names:
        assert listing[name]["stdout_lines"].count("whoami") == 1
        # Each host's /etc/spire is its own directory under the lab state dir...
        assert (lab.dir / "hosts" / name / "root" / "etc" / "spire" / "whoami").read_text() == name
    # ...and the machine's own /etc/spire stays untouched.
    assert not Path("/etc/spire/whoami").exists()


def test_inventory_groups(lab):
    out = subprocess.run([str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(lab.inventory), "--list"],
                         capture_output=True, text=True, check=True)
    inv = json.loads(out.stdout)
    assert inv["spire_servers"]["hosts"] == ["spire-server-1"]
    assert inv["spire_agents"]["hosts"] == ["agent-1", "agent-2", "agent-3", "bare-1"]
    assert inv["tpm_hosts"]["hosts"] == ["spire-server-1", "agent-1", "agent-2", "agent-3"]
    assert inv["lab_no_ek_cert"]["hosts"] == ["agent-3"]
    assert inv["lab_no_tpm"]["hosts"] == ["bare-1"]
    hv = inv["_meta"]["hostvars"]
    assert hv["agent-1"]["tpm_tcti"] == TPM_TCTI
    assert hv["agent-1"]["lab_tpm_socket"] == TPM_SOCKET and hv["agent-1"]["lab_tpm_group"] == "tss"
    assert hv["agent-1"]["ansible_user"] == "root"
    assert hv["agent-1"]["tpm_host_install_packages"] is False
    assert hv["agent-1"]["ansible_python_interpreter"]
    bundle = Path(hv["spire-server-1"]["lab_endorsement_ca_bundle"])
    assert bundle.read_text().count("BEGIN CERTIFICATE") == 2
    assert hv["agent-1"]["lab_endorsement_ca_bundle"] == str(bundle)
    ca_dir = Path(hv["spire-server-1"]["lab_manufacturer_ca_dir"])
    assert sorted(p.name for p in ca_dir.iterdir()) == ["manufacturer-intermediate.pem", "manufacturer-root.pem"]
    assert "lab_manufacturer_ca_dir" not in hv["agent-1"]


def _verify_chain(lab, der, tmp_path, label):
    """openssl (the oracle) verifies a DER EK certificate against the lab's manufacturer root + intermediate."""
    cert = tmp_path / ("%s.pem" % label)
    subprocess.run(["openssl", "x509", "-inform", "DER", "-in", str(der), "-out", str(cert)], check=True)
    ca = lab.dir / "manufacturer"
    out = subprocess.run(["openssl", "verify", "-CAfile", str(ca / "swtpm-localca-rootca-cert.pem"),
                          "-untrusted", str(ca / "issuercert.pem"), str(cert)], capture_output=True, text=True)
    return out, cert


def test_each_host_has_its_own_tpm_with_ek_certs_from_the_lab_ca(lab, tmp_path):
    fingerprints = set()
    for name in ("spire-server-1", "agent-1", "agent-2"):
        for nv, label in (("0x01c00002", "rsa"), ("0x01c00016", "ecc")):
            der = tmp_path / ("%s-%s.der" % (name, label))
            lab.in_host(name, "tpm2_nvread", "-C", "o", "-o", str(der), nv)
            out, pem = _verify_chain(lab, der, tmp_path, "%s-%s" % (name, label))
            assert out.returncode == 0 and ": OK" in out.stdout, (name, label, out.stdout, out.stderr)
            # Without the intermediate the chain must NOT verify: the bundle really is two-level.
            bad = subprocess.run(["openssl", "verify", "-CAfile",
                                  str(lab.dir / "manufacturer" / "swtpm-localca-rootca-cert.pem"), str(pem)],
                                 capture_output=True, text=True)
            assert bad.returncode != 0
            fp = subprocess.run(["openssl", "x509", "-in", str(pem), "-noout", "-fingerprint", "-sha256"],
                                capture_output=True, text=True, check=True).stdout
            fingerprints.add(fp)
    assert len(fingerprints) == 6, "every host must have its own EK certificates"


def test_no_ek_cert_host_and_no_tpm_host(lab):
    # agent-3: a working TPM without any EK certificate in NV.
    pub = lab.in_host("agent-3", "tpm2_nvreadpublic").stdout
    assert "0x1c00002" not in pub and "0x1c00016" not in pub
    assert lab.in_host("agent-3", "tpm2_getcap", "properties-fixed").stdout.count("TPM2_PT_FAMILY_INDICATOR") == 1
    res = lab.in_host("agent-3", "tpm2_nvread", "-C", "o", "0x01c00002", check=False, text=False)
    assert res.returncode != 0
    # bare-1: no TPM socket inside that host, so tpm2-tools gets nothing.
    assert lab.in_host("bare-1", "test", "-e", TPM_SOCKET, check=False).returncode != 0
    res = lab.in_host("bare-1", "tpm2_getcap", "properties-fixed", check=False)
    assert res.returncode != 0


def test_each_host_sees_its_own_tpm_socket_group_tss_0660(lab, tmp_path):
    """Inside every TPM host /run/swtpm/tpm.sock is a socket root:tss 0660 served by that host's own swtpm."""
    tss = subprocess.run(["getent", "group", "tss"], capture_output=True, text=True)
    group = "tss" if tss.returncode == 0 else "root"  # lab.py serves root:root when the machine has no tss group
    inodes = set()
    for name in ("spire-server-1", "agent-1", "agent-2", "agent-3"):
        st = lab.in_host(name, "stat", "-c", "%F|%U|%G|%a|%i", TPM_SOCKET).stdout.strip().split("|")
        assert st[:4] == ["socket", "root", group, "660"], (name, st)
        inodes.add(st[4])
        # the host's socket is the per-host file under the lab's state dir, not a shared one
        machine_side = lab.dir / "hosts" / name / "root" / TPM_SOCKET.lstrip("/")
        assert machine_side.is_socket() and str(machine_side.stat().st_ino) == st[4]
    assert len(inodes) == 4
    # the machine's own /run/swtpm is only the (empty) mount point
    assert not Path(TPM_SOCKET).exists()
    # Ansible over SSH: the inventory's tpm_tcti reaches each host's TPM with tpm2-tools inside the host
    res = _adhoc(lab, tmp_path, "ansible.builtin.shell",
                 "TPM2TOOLS_TCTI='{{ tpm_tcti }}' TSS2_LOG=all+NONE tpm2_getcap properties-fixed "
                 "| grep -c TPM2_PT_FAMILY_INDICATOR", check=False)
    for name in ("spire-server-1", "agent-1", "agent-2", "agent-3"):
        assert res[name].get("rc") == 0 and res[name]["stdout"] == "1", (name, res[name])
    assert res["bare-1"].get("rc") != 0


def test_hosts_reach_each_other_by_name(lab):
    """`lab.py exec` enters the host like its SSH sessions: own /etc/hosts (names of the other hosts), hostname."""
    probe = ("import socket; s=socket.create_connection(('spire-server-1', 22), 2); "
             "print(socket.gethostname(), s.recv(20).decode().strip())")
    out = lab.lab("exec", "agent-1", "--", sys.executable, "-c", probe)
    host, banner = out.stdout.split()
    assert host == "agent-1" and banner.startswith("SSH-2.0-")
    out = lab.lab("exec", "agent-2", "--", "tpm2_getcap", "properties-fixed")
    assert "TPM2_PT_MANUFACTURER" in out.stdout


def test_up_repairs_a_half_up_lab_and_is_idempotent(lab):
    ek_before = lab.in_host("agent-1", "tpm2_readpublic", "-c", "0x81010001").stdout
    ek2_before = lab.in_host("agent-2", "tpm2_readpublic", "-c", "0x81010001").stdout
    pid = int((lab.dir / "hosts" / "agent-1" / "sshd.pid").read_text())
    os.kill(pid, 15)
    # SIGKILL: swtpm cannot remove its socket; the left-over socket refuses connections until 'up' replaces it
    tpm_pid = int((lab.dir / "hosts" / "agent-2" / "swtpm.pid").read_text())
    os.kill(tpm_pid, 9)
    deadline = time.time() + 5
    while time.time() < deadline:
        rc, st = lab.status()
        if rc != 0:
            break
        time.sleep(0.05)
    assert rc != 0
    down = {h["name"] for h in st["hosts"] if not h["ok"]}
    assert down == {"agent-1", "agent-2"}, st
    assert lab.in_host("agent-2", "tpm2_getcap", "properties-fixed", check=False).returncode != 0
    t0 = time.monotonic()
    lab.lab("up")  # parameters come from the saved lab.json
    took = time.monotonic() - t0
    rc, st = lab.status()
    assert rc == 0, st
    # The TPMs are not re-manufactured: same EK after a repair.
    assert lab.in_host("agent-1", "tpm2_readpublic", "-c", "0x81010001").stdout == ek_before
    assert lab.in_host("agent-2", "tpm2_readpublic", "-c", "0x81010001").stdout == ek2_before
    print("lab up (repair): %.1f s" % took)


def test_down_is_complete_and_idempotent(tmp_path_factory):
    """A second, small lab: down removes namespaces, links and processes; down twice is fine; purge removes state."""
    t = LabUnderTest(tmp_path_factory.mktemp("lab2"))
    t.name += "b"
    t.subnet = _free_subnet()
    try:
        t.lab("up", "--subnet", t.subnet, "--host", "one:server", "--host", "two:agent:noek")
        pids = [int((t.dir / "hosts" / h / f).read_text()) for h in ("one", "two") for f in ("sshd.pid", "swtpm.pid")]
        t0 = time.monotonic()
        t.lab("down")
        took = time.monotonic() - t0
        t.lab("down")
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert t.netns("one") not in netns and t.netns("two") not in netns
        for pid in pids:
            stat = Path("/proc/%d/stat" % pid)
            assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
        addrs = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True).stdout
        assert t.subnet.rsplit(".", 1)[0] + ".1/24" not in addrs
        assert (t.dir / "hosts" / "one" / "tpm").is_dir()  # TPM state kept without --purge
        t.lab("down", "--purge")
        assert not t.dir.exists()
        print("lab down (2 hosts): %.2f s" % took)
    finally:
        t.lab("down", "--purge", check=False)


# --- HA labs: a PostgreSQL host and an HAProxy host (lab/services.py) ------------------------------------------

# The HA tests build on each other (one lab, in order): one xdist group (scripts/test.sh runs --dist loadgroup).
# Per process (pytest -n 2 may run these tests in two workers, each with its own module fixture): a name of its own
# and a free /24, like the other labs of this file.
HA_NAME = "th%x" % (os.getpid() % 0xFFFF)
HA_HOSTS = ["spire-server-1:server", "spire-server-2:server", "db-1:postgres", "lb-1:haproxy", "agent-1:agent"]
HA_SERVICE_HOSTS = ("db-1", "lb-1")

# A stand-in for a SPIRE server's gRPC port: answers each connection with its host's name, then closes it.
NAME_SERVER = ("import socket, sys\n"
               "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
               "s.bind((sys.argv[1], 8081)); s.listen(64); print('ready', flush=True)\n"
               "while True:\n"
               "    c, _ = s.accept()\n"
               # HAProxy's TCP health check connects and resets at once: the answer may find the peer gone.
               "    try:\n"
               "        c.sendall(sys.argv[2].encode() + b'\\n')\n"
               "    except OSError:\n"
               "        pass\n"
               "    c.close()\n")
# N connections to ADDR:PORT; prints what answered each (ERR: refused, EMPTY: closed by the balancer unanswered).
CLIENT = ("import socket, sys\n"
          "out = []\n"
          "for _ in range(int(sys.argv[3])):\n"
          "    try:\n"
          "        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), 2); s.settimeout(2)\n"
          "        out.append(s.recv(64).decode().strip() or 'EMPTY'); s.close()\n"
          "    except OSError:\n"
          "        out.append('ERR')\n"
          "print(' '.join(out))\n")


def _ha_host_args():
    return [a for h in HA_HOSTS for a in ("--host", h)]


@pytest.fixture(scope="module")
def ha_lab(tmp_path_factory):
    t = LabUnderTest(tmp_path_factory.mktemp("halab"))
    t.name = HA_NAME
    t.lab("down", "--purge", *_ha_host_args(), check=False)  # what an interrupted run may have left (same names)
    t0 = time.monotonic()
    t.lab("up", "--subnet", t.subnet, *_ha_host_args())
    t.up_seconds = time.monotonic() - t0
    inv = subprocess.run([str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(t.inventory), "--list"],
                         capture_output=True, text=True, check=True)
    t.inv = json.loads(inv.stdout)
    t.vars = t.inv["_meta"]["hostvars"]["agent-1"]
    yield t
    t.lab("down", "--purge", *_ha_host_args(), check=False)


def _psql(lab, sql, conn=None, check=True):
    """The real psql (postgresql-client) inside agent-1, with the inventory's connection string."""
    conn = (conn or lab.vars["lab_spire_datastore_connection_string"]) + " connect_timeout=5"
    return lab.in_host("agent-1", "psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", conn, "-c", sql, check=check)


def _haproxy_stat(lab):
    """{server: status} from HAProxy's admin socket (``show stat``)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(lab.vars["lab_haproxy_stats_socket"])
    s.sendall(b"show stat\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    rows = [line.split(",") for line in data.decode().splitlines() if line and not line.startswith("#")]
    return {r[1]: r[17] for r in rows if r[0] == "spire_servers" and r[1] != "BACKEND"}


def _wait(predicate, timeout, what):
    t0 = time.monotonic()
    last = None
    while time.monotonic() - t0 < timeout:
        ok, last = predicate()
        if ok:
            return time.monotonic() - t0
        time.sleep(0.2)
    raise AssertionError("%s: not within %d s (last: %r)" % (what, timeout, last))


@pytest.mark.xdist_group("ha_lab")
def test_ha_lab_hosts_inventory_and_status(ha_lab):
    rc, st = ha_lab.status()
    assert rc == 0, st
    svc = {h["name"]: (h["service"], h["service_running"], h["swtpm"]) for h in st["hosts"]}
    assert svc["db-1"] == ("postgres", True, None) and svc["lb-1"] == ("haproxy", True, None)
    assert svc["agent-1"] == (None, None, True)
    inv = ha_lab.inv
    assert inv["lab_postgres"]["hosts"] == ["db-1"]
    assert inv["lab_load_balancers"]["hosts"] == ["lb-1"]
    assert inv["spire_servers"]["hosts"] == ["spire-server-1", "spire-server-2"]
    assert inv["spire_agents"]["hosts"] == ["agent-1"]
    assert inv["tpm_hosts"]["hosts"] == ["spire-server-1", "spire-server-2", "agent-1"]
    assert "hosts" not in inv.get("lab_no_tpm", {})
    hv = inv["_meta"]["hostvars"]
    addr = {h: hv[h]["ansible_host"] for h in hv}
    pw = ha_lab.vars["lab_postgres_password"]
    for host in hv:  # the same variables on every host
        v = hv[host]
        assert v["lab_postgres_host"] == addr["db-1"] and v["lab_postgres_port"] == 5432
        assert (v["lab_postgres_db"], v["lab_postgres_user"], v["lab_postgres_password"]) == ("spire", "spire", pw)
        assert v["lab_spire_datastore_connection_string"] == (
            "dbname=spire user=spire password=%s host=%s port=5432 sslmode=disable" % (pw, addr["db-1"]))
        assert v["lab_spire_server_address"] == addr["lb-1"] and v["lab_spire_server_port"] == 8081
    assert len(pw) >= 16
    assert oct(ha_lab.inventory.stat().st_mode & 0o777) == "0o600"  # it holds the password
    # Both service hosts are real lab hosts: own hostname, reachable like the others.
    out = ha_lab.lab("exec", "db-1", "--", "hostname")
    assert out.stdout.strip() == "db-1"
    print("HA lab up (5 hosts incl. postgres + haproxy, fresh): %.1f s" % ha_lab.up_seconds)


@pytest.mark.xdist_group("ha_lab")
def test_ha_postgres_serves_the_lab_with_the_inventory_credentials(ha_lab):
    assert _psql(ha_lab, "SELECT current_user, current_database()").stdout.strip() == "spire|spire"
    _psql(ha_lab, "CREATE TABLE scratch (x int); INSERT INTO scratch VALUES (1); DROP TABLE scratch")
    _psql(ha_lab, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('survives')")
    bad = ha_lab.vars["lab_spire_datastore_connection_string"].replace("password=", "password=wrong")
    res = _psql(ha_lab, "SELECT 1", conn=bad, check=False)
    assert res.returncode != 0 and "password authentication failed" in res.stderr, res.stderr
    # Its unix socket is the host's own (under the lab's state dir), not in the machine's shared /run/postgresql.
    sock = ha_lab.dir / "hosts" / "db-1" / "root" / "run" / "postgresql" / ".s.PGSQL.5432"
    assert sock.is_socket()
    out = ha_lab.in_host("db-1", "runuser", "-u", "postgres", "--", "psql", "-X", "-At", "-c",
                         "SELECT datname FROM pg_database WHERE datdba = (SELECT oid FROM pg_roles "
                         "WHERE rolname = 'spire')")
    assert out.stdout.split() == ["spire"]


@pytest.mark.xdist_group("ha_lab")
def test_ha_haproxy_balances_and_fails_over_to_the_live_server(ha_lab):
    lb, port = ha_lab.vars["lab_spire_server_address"], str(ha_lab.vars["lab_spire_server_port"])
    hv = ha_lab.inv["_meta"]["hostvars"]
    procs = {}

    def serve(host):
        p = subprocess.Popen(["ip", "netns", "exec", ha_lab.netns(host), sys.executable, "-c", NAME_SERVER,
                              hv[host]["ansible_host"], host], stdout=subprocess.PIPE, text=True)
        procs[host] = p
        assert p.stdout.readline().strip() == "ready"

    def answers(n=6):
        return ha_lab.in_host("agent-1", sys.executable, "-c", CLIENT, lb, port, str(n)).stdout.split()

    def all_from(host):
        def check():
            got = answers()
            return all(a == host for a in got), got
        return check

    def checks_say(expected):
        def check():
            got = _haproxy_stat(ha_lab)
            return got == expected, got
        return check

    try:
        serve("spire-server-1")
        _wait(all_from("spire-server-1"), 10, "every connection to the balancer reaches spire-server-1")
        _wait(checks_say({"spire-server-1": "UP", "spire-server-2": "DOWN"}), 10, "health checks: 1 UP, 2 DOWN")
        # spire-server-1 goes away, spire-server-2 comes up: the balancer follows.
        procs.pop("spire-server-1").kill()
        serve("spire-server-2")
        took = _wait(all_from("spire-server-2"), 10, "every connection reaches spire-server-2 after the fail-over")
        _wait(checks_say({"spire-server-1": "DOWN", "spire-server-2": "UP"}), 10, "health checks: 1 DOWN, 2 UP")
        print("HAProxy fail-over to spire-server-2: %.1f s" % took)
    finally:
        for p in procs.values():
            p.kill()
            p.wait()


@pytest.mark.xdist_group("ha_lab")
def test_ha_service_stop_and_start_postgres(ha_lab):
    assert ha_lab.lab("service", "db-1", "status").stdout.strip() == "running"
    t0 = time.monotonic()
    ha_lab.lab("service", "db-1", "stop")
    stop_s = time.monotonic() - t0
    res = ha_lab.lab("service", "db-1", "status", check=False)
    assert res.returncode == 3 and res.stdout.strip() == "stopped"
    res = _psql(ha_lab, "SELECT 1", check=False)
    assert res.returncode != 0 and "Connection refused" in res.stderr, res.stderr
    rc, st = ha_lab.status()
    assert rc != 0 and [h["name"] for h in st["hosts"] if not h["ok"]] == ["db-1"]
    t0 = time.monotonic()
    ha_lab.lab("service", "db-1", "start")
    start_s = time.monotonic() - t0
    assert _psql(ha_lab, "SELECT v FROM kept").stdout.strip() == "survives"
    assert ha_lab.status()[0] == 0
    # The other service host and a host without a service.
    ha_lab.lab("service", "lb-1", "stop")
    assert ha_lab.lab("service", "lb-1", "status", check=False).returncode == 3
    ha_lab.lab("service", "lb-1", "start")
    res = ha_lab.lab("service", "agent-1", "status", check=False)
    assert res.returncode == 1 and "runs no service" in res.stderr and "Traceback" not in res.stderr
    print("service db-1 stop: %.2f s, start: %.2f s" % (stop_s, start_s))


def _service_pids(lab):
    pm = int((lab.dir / "hosts" / "db-1" / "root" / "var" / "lib" / "postgresql" / "data" / "postmaster.pid")
             .read_text().split()[0])
    return pm, int((lab.dir / "hosts" / "lb-1" / "haproxy" / "haproxy.pid").read_text())


@pytest.mark.xdist_group("ha_lab")
def test_ha_up_again_is_idempotent_and_repairs_a_killed_postgres(ha_lab):
    before = _service_pids(ha_lab)
    inventory = ha_lab.inventory.read_text()
    t0 = time.monotonic()
    ha_lab.lab("up")
    took = time.monotonic() - t0
    assert _service_pids(ha_lab) == before  # nothing restarted
    assert ha_lab.inventory.read_text() == inventory  # same password
    # A postmaster killed outright (its backends die with it): 'up' starts it again, crash recovery keeps the data.
    os.kill(before[0], 9)
    _wait(lambda: (ha_lab.lab("service", "db-1", "status", check=False).returncode == 3, None), 5, "postgres dead")
    ha_lab.lab("up")
    assert _service_pids(ha_lab)[0] != before[0]
    assert _psql(ha_lab, "SELECT v FROM kept").stdout.strip() == "survives"
    print("HA lab up (already up): %.2f s" % took)


def _netns_pids(netns):
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _dead(pid):
    stat = Path("/proc/%d/stat" % pid)
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.xdist_group("ha_lab")
def test_ha_down_then_up_keeps_the_database_and_purge_leaves_nothing(ha_lab):
    ha_lab.lab("down")
    for h in HA_SERVICE_HOSTS:
        assert not _netns_pids(ha_lab.netns(h))
    ha_lab.lab("up")
    assert _psql(ha_lab, "SELECT v FROM kept").stdout.strip() == "survives"
    pids = [p for h in HA_HOSTS for p in _netns_pids(ha_lab.netns(h.split(":")[0]))]
    assert len(pids) >= 6  # sshd everywhere, postgres processes, haproxy, swtpms
    ha_lab.lab("down", "--purge")
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "spt-%s-" % HA_NAME not in netns
    assert all(_dead(p) for p in pids), [p for p in pids if not _dead(p)]
    assert not ha_lab.dir.exists()
    addrs = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True).stdout
    assert ha_lab.subnet.rsplit(".", 1)[0] + ".1/24" not in addrs
