#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab's service hosts (lab/lab.py ``--host NAME:postgres`` and ``--host NAME:haproxy``): HA SPIRE labs.

* ``postgres``: Debian's PostgreSQL (the newest /usr/lib/postgresql/<v>/bin) inside the host's network namespace,
  as the ``postgres`` OS user, listening on the host's lab address and 127.0.0.1, port 5432. It runs in a mount
  namespace of its own where the host's private ``<host>/root/var/lib/postgresql`` (cluster in ``data/``, log
  ``postgres.log``) and ``<host>/root/run/postgresql`` (unix socket) are bind-mounted over /var/lib/postgresql and
  /run/postgresql: the machine's own dirs are never touched, and the lab's state dir may sit below a directory the
  postgres user cannot traverse (pytest's 0700 tmp dirs). The host's sshd sees the same two dirs. The cluster is
  created once (scram-sha-256 for every TCP client of the lab subnet, peer for the local postgres user); role
  ``spire`` (password generated once, ``<host>/postgres-password``, 0600) owns database ``spire``.
* ``haproxy``: Debian's HAProxy in TCP mode on the host's lab address port 8081, balancing (leastconn) over port
  8081 of every ``server`` host of the lab with TCP health checks (``check inter 1s fall 2 rise 2``); timeouts for
  long-lived gRPC streams. Config, pid file, log and admin stats socket in ``<host>/haproxy/``.

Both are started inside the host's network namespace, so the lab's ``down`` finds them with the host's processes.
Python standard library only; errors are ServiceError (lab.py reports them like its own).
"""

import glob
import os
import pwd
import secrets
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

KINDS = ("postgres", "haproxy")

PG_PORT = 5432
PG_DB = "spire"
PG_USER = "spire"
PG_OS_USER = "postgres"
# Inside the postgres host (its own mount namespaces): bind mounts of the host's private directories.
PG_HOME = "/var/lib/postgresql"
PG_RUN = "/run/postgresql"
PG_DATA = PG_HOME + "/data"
PG_LOG = PG_HOME + "/postgres.log"

LB_PORT = 8081
SPIRE_SERVER_PORT = 8081

# Extra directories a service host gets privately (on top of lab.py's HOST_DIRS), in its sshd and in the service.
SERVICE_DIRS = {"postgres": (PG_HOME, PG_RUN), "haproxy": ()}


class ServiceError(Exception):
    pass


# --- helpers -------------------------------------------------------------------------------------------------


def _read_pid(pidfile):
    try:
        return int(Path(pidfile).read_text().split("\n", 1)[0].strip())
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid, comm):
    """True while ``pid`` runs (a zombie is dead) and its command line contains ``comm``."""
    if not pid:
        return False
    try:
        if Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
        return comm in Path("/proc/%d/cmdline" % pid).read_bytes().decode(errors="replace")
    except (OSError, IndexError):
        return False


def _in_netns(pid, netns):
    try:
        return os.stat("/proc/%d/ns/net" % pid).st_ino == os.stat(Path("/run/netns", netns)).st_ino
    except OSError:
        return False


def _stop_pid(pid, comm, sig=signal.SIGTERM, timeout=10.0):
    """Send ``sig`` and wait for the process to end; SIGKILL after ``timeout``. Idempotent."""
    if not _alive(pid, comm):
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid, comm):
            return
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 3
    while _alive(pid, comm) and time.monotonic() < deadline:
        time.sleep(0.02)


def _wait_tcp(netns, addr, port, timeout=10.0):
    probe = ("import socket,sys\ns=socket.socket();s.settimeout(0.3)\n"
             "sys.exit(0 if s.connect_ex((%r,%d))==0 else 1)" % (addr, port))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", probe],
                          capture_output=True).returncode == 0:
            return True
        time.sleep(0.05)
    return False


def _write_if_changed(path, text, mode=None, owner=None):
    path = Path(path)
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    path.write_text(text)
    if mode is not None:
        os.chmod(path, mode)
    if owner is not None:
        os.chown(path, *owner)
    return True


def _run(cmd, what, input=None, env=None, timeout=120):
    try:
        out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, input=input, env=env,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ServiceError("%s: no answer within %d s" % (what, timeout))
    if out.returncode != 0:
        raise ServiceError("%s failed (rc=%d): %s%s" % (what, out.returncode, out.stdout, out.stderr))
    return out


def check(kind):
    """Refuse early, with the package to install, when the service's software is missing."""
    if kind == "postgres":
        pg_bindir()
    elif kind == "haproxy":
        haproxy_bin()


# --- PostgreSQL ----------------------------------------------------------------------------------------------


def pg_bindir():
    """The bin dir of the newest PostgreSQL installed from Debian's packages (bookworm: 15)."""
    found = []
    for p in glob.glob("/usr/lib/postgresql/*/bin/postgres"):
        ver = Path(p).parent.parent.name
        if ver.isdigit():
            found.append((int(ver), Path(p).parent))
    if not found:
        raise ServiceError("PostgreSQL not found (no /usr/lib/postgresql/*/bin/postgres): "
                           "apt-get install postgresql-15 postgresql-client-15")
    ver, bindir = max(found)
    for tool, pkg in (("initdb", "postgresql-%d" % ver), ("pg_ctl", "postgresql-%d" % ver),
                      ("psql", "postgresql-client-%d" % ver)):
        if not (bindir / tool).exists():
            raise ServiceError("%s not found in %s: apt-get install %s" % (tool, bindir, pkg))
    try:
        pwd.getpwnam(PG_OS_USER)
    except KeyError:
        raise ServiceError("no %r OS user (the postgresql-%d package creates it): apt-get install --reinstall "
                           "postgresql-%d" % (PG_OS_USER, ver, ver))
    if not Path("/usr/sbin/runuser").exists() and not Path("/sbin/runuser").exists():
        raise ServiceError("runuser not found: apt-get install util-linux")
    return bindir


def pg_dirs(h):
    """Machine-side paths of the host's cluster home and socket dir."""
    return h.root_dir(PG_HOME), h.root_dir(PG_RUN)


def pg_data(h):
    return pg_dirs(h)[0] / "data"


def pg_password_file(h):
    return h.path("postgres-password")


def pg_password(h):
    """The ``spire`` role's password: generated once (hex: safe in a libpq key=value string), kept until --purge."""
    f = pg_password_file(h)
    try:
        pw = f.read_text().strip()
        if pw:
            return pw
    except OSError:
        pass
    h.dir.mkdir(parents=True, exist_ok=True)
    pw = secrets.token_hex(16)
    fd = os.open(str(f), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(pw + "\n")
    return pw


def pg_connection_string(h):
    """SPIRE's ``sql`` datastore (database_type "postgres") takes libpq's key=value form."""
    return "dbname=%s user=%s password=%s host=%s port=%d sslmode=disable" % (
        PG_DB, PG_USER, pg_password(h), h.address, PG_PORT)


def _postgres_ids():
    pw = pwd.getpwnam(PG_OS_USER)
    return pw.pw_uid, pw.pw_gid


def pg_prepare(h):
    """The host's private cluster home and socket dir (owned by postgres) and their mount points."""
    uid, gid = _postgres_ids()
    home, run_dir = pg_dirs(h)
    for d, mode in ((home, 0o755), (run_dir, 0o2775)):
        d.mkdir(parents=True, exist_ok=True)
        os.chown(d, uid, gid)
        os.chmod(d, mode)
    for target, mode in ((PG_HOME, 0o755), (PG_RUN, 0o2775)):
        t = Path(target)
        if not t.exists():  # an empty mount point on the machine, as Debian's package would have it
            t.mkdir(parents=True)
            os.chown(t, uid, gid)
            os.chmod(t, mode)


def _pg_exec(h, argv, what, input=None, timeout=120):
    """Run ``argv`` as postgres in the host's network namespace, its private PostgreSQL dirs mounted."""
    binds = "; ".join("mount --bind %s %s" % (shlex.quote(str(h.root_dir(t))), t) for t in SERVICE_DIRS["postgres"])
    script = 'set -e; %s; cd /; exec runuser -u %s -- "$@"' % (binds, PG_OS_USER)
    cmd = ["ip", "netns", "exec", h.netns, "unshare", "--mount", "--propagation", "private",
           "sh", "-c", script, "sh"] + [str(a) for a in argv]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LANG="C.UTF-8", LC_ALL="C.UTF-8", PGHOST=PG_RUN, PGPORT=str(PG_PORT))
    return _run(cmd, "%s on %s" % (what, h.name), input=input, env=env, timeout=timeout)


def pg_pid(h):
    """The pid of the host's postmaster, when it runs (from postmaster.pid: the process must really be a postgres
    working in this cluster: its cwd is the data dir, whatever the mount namespace it sees it in)."""
    data = pg_data(h)
    pid = _read_pid(data / "postmaster.pid")
    if not _alive(pid, "postgres"):
        return None
    try:
        a, b = os.stat("/proc/%d/cwd" % pid), os.stat(data)
    except OSError:
        return None
    return pid if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) else None


def pg_running(h):
    pid = pg_pid(h)
    return bool(pid and _in_netns(pid, h.netns))


def _pg_conf(h, subnet):
    return ("# lab host %(name)s (generated by lab/lab.py: re-run 'up' instead of editing)\n"
            "listen_addresses = '%(addr)s,127.0.0.1'\n"
            "port = %(port)d\n"
            "unix_socket_directories = '%(run)s'\n"
            "password_encryption = 'scram-sha-256'\n"
            "ssl = off\n"
            "max_connections = 100\n"
            "shared_buffers = 32MB\n"
            # A lab on one machine: commits need not wait for the disk (a crash loses the last commits, never
            # consistency); initdb --no-sync for the same reason.
            "synchronous_commit = off\n"
            "logging_collector = off\n"
            "log_line_prefix = '%%m [%%p] %%q%%u@%%d '\n"
            "log_timezone = 'UTC'\n"
            "timezone = 'UTC'\n"
            % {"name": h.name, "addr": h.address, "port": PG_PORT, "run": PG_RUN})


def _pg_hba(subnet):
    return ("# generated by lab/lab.py\n"
            "# TYPE  DATABASE  USER      ADDRESS          METHOD\n"
            "local   all       postgres                   peer\n"
            "local   all       all                        scram-sha-256\n"
            "host    all       all       127.0.0.1/32     scram-sha-256\n"
            "host    all       all       %-16s scram-sha-256\n" % subnet)


def _pg_clear_stale(h):
    """After a kill (``down`` kills every process of the host): no live postmaster may hold the cluster."""
    data = pg_data(h)
    pid = pg_pid(h)
    if pid and not _in_netns(pid, h.netns):
        _stop_pid(pid, "postgres", signal.SIGQUIT, timeout=5)  # a postmaster left in a deleted namespace
    if not pg_pid(h):
        for stale in (data / "postmaster.pid", pg_dirs(h)[1] / (".s.PGSQL.%d.lock" % PG_PORT)):
            try:
                stale.unlink()
            except OSError:
                pass


def pg_start(h, bindir=None):
    bindir = bindir or pg_bindir()
    if pg_running(h):
        return False
    _pg_clear_stale(h)
    _pg_exec(h, [bindir / "pg_ctl", "start", "-D", PG_DATA, "-l", PG_LOG, "-w", "-t", "60", "-s"],
             "starting PostgreSQL (log: %s)" % (pg_dirs(h)[0] / "postgres.log"))
    if not _wait_tcp(h.netns, h.address, PG_PORT):
        raise ServiceError("PostgreSQL of %s does not accept connections on %s:%d (log: %s)"
                           % (h.name, h.address, PG_PORT, pg_dirs(h)[0] / "postgres.log"))
    return True


def pg_stop(h, timeout=30.0):
    """Fast shutdown: SIGINT, what ``pg_ctl stop -m fast`` sends (clients are disconnected, then a checkpoint)."""
    pid = pg_pid(h)
    if pid:
        _stop_pid(pid, "postgres", signal.SIGINT, timeout=timeout)


def ensure_postgres(h, subnet):
    """Create the cluster once, (re)start it when down or reconfigured, ensure role and database ``spire``."""
    bindir = pg_bindir()
    pg_prepare(h)
    uid, gid = _postgres_ids()
    data = pg_data(h)
    marker = h.path("postgres.initialized")
    if not marker.exists():
        pg_stop(h)
        if data.exists():  # an initdb that did not finish
            subprocess.run(["rm", "-rf", str(data)], check=False)
        _pg_exec(h, [bindir / "initdb", "-D", PG_DATA, "-U", PG_OS_USER, "--auth-local=peer",
                     "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync",
                     "--no-instructions"], "initdb")
        with open(data / "postgresql.conf", "a") as f:
            f.write("\n# lab settings (lab/lab.py)\ninclude_if_exists = 'lab.conf'\n")
        marker.write_text("%s\n" % bindir)
    changed = _write_if_changed(data / "lab.conf", _pg_conf(h, subnet), 0o600, (uid, gid))
    changed |= _write_if_changed(data / "pg_hba.conf", _pg_hba(subnet), 0o600, (uid, gid))
    if changed and pg_running(h):
        pg_stop(h)
    pg_start(h, bindir)
    pw = pg_password(h)
    sql = ("SELECT 'CREATE ROLE %(u)s LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%(u)s')\\gexec\n"
           "ALTER ROLE %(u)s WITH LOGIN PASSWORD '%(pw)s';\n"
           "SELECT 'CREATE DATABASE %(db)s OWNER %(u)s' "
           "WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '%(db)s')\\gexec\n"
           % {"u": PG_USER, "db": PG_DB, "pw": pw})
    _pg_exec(h, [bindir / "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "postgres", "-f", "-"],
             "creating role and database %s" % PG_DB, input=sql)


# --- HAProxy -------------------------------------------------------------------------------------------------


def haproxy_bin():
    for cand in ("/usr/sbin/haproxy", "/usr/bin/haproxy"):
        if os.access(cand, os.X_OK):
            return cand
    raise ServiceError("HAProxy not found (/usr/sbin/haproxy): apt-get install haproxy")


def haproxy_dir(h):
    return h.path("haproxy")


def haproxy_files(h):
    d = haproxy_dir(h)
    return {"config": d / "haproxy.cfg", "pid": d / "haproxy.pid", "log": d / "haproxy.log",
            "stats": d / "admin.sock"}


def haproxy_config(h, servers):
    """TCP load balancing of SPIRE servers' gRPC port (agents keep long-lived streams: hour-long timeouts)."""
    f = haproxy_files(h)
    lines = ["# lab host %s (generated by lab/lab.py: re-run 'up' instead of editing)" % h.name,
             "global",
             "    maxconn 4096",
             "    stats socket %s mode 600 level admin" % f["stats"],
             "    stats timeout 30s",
             "",
             "defaults",
             "    mode tcp",
             "    timeout connect 5s",
             "    timeout client 1h",
             "    timeout server 1h",
             "    timeout check 1s",
             "    retries 2",
             "    option redispatch",
             "",
             "frontend spire_server",
             "    bind %s:%d" % (h.address, LB_PORT),
             "    default_backend spire_servers",
             "",
             "backend spire_servers",
             "    balance leastconn"]
    lines += ["    server %s %s:%d check inter 1s fall 2 rise 2" % (name, addr, SPIRE_SERVER_PORT)
              for name, addr in servers]
    return "\n".join(lines) + "\n"


def haproxy_running(h):
    f = haproxy_files(h)
    pid = _read_pid(f["pid"])
    return bool(_alive(pid, str(f["config"])) and _in_netns(pid, h.netns))


def haproxy_stop(h):
    f = haproxy_files(h)
    pid = _read_pid(f["pid"])
    if _alive(pid, str(f["config"])):  # this host's haproxy (its command line names this config)
        _stop_pid(pid, str(f["config"]), signal.SIGTERM, timeout=3)
    try:
        f["pid"].unlink()
    except OSError:
        pass


def haproxy_start(h):
    if haproxy_running(h):
        return False
    haproxy_stop(h)  # a stale pid file, or an haproxy left in a deleted namespace
    f = haproxy_files(h)
    if len(str(f["stats"])) > 107:
        raise ServiceError("HAProxy stats socket path too long (%d > 107 bytes): %s" % (len(str(f["stats"])),
                                                                                       f["stats"]))
    with open(f["log"], "a") as log:
        try:
            out = subprocess.run(["ip", "netns", "exec", h.netns, haproxy_bin(), "-D", "-p", str(f["pid"]),
                                  "-f", str(f["config"])], stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, timeout=30)
        except subprocess.TimeoutExpired:
            raise ServiceError("HAProxy of %s did not start within 30 s (log: %s)" % (h.name, f["log"]))
    if out.returncode != 0:
        raise ServiceError("HAProxy of %s did not start (rc=%d, log: %s): %s"
                           % (h.name, out.returncode, f["log"], f["log"].read_text()[-2000:]))
    if not _wait_tcp(h.netns, h.address, LB_PORT):
        raise ServiceError("HAProxy of %s does not accept connections on %s:%d (log: %s)"
                           % (h.name, h.address, LB_PORT, f["log"]))
    return True


def ensure_haproxy(h, servers):
    """Write the config (restart when it changed), start HAProxy when it is not running."""
    binary = haproxy_bin()
    f = haproxy_files(h)
    haproxy_dir(h).mkdir(parents=True, exist_ok=True)
    if _write_if_changed(f["config"], haproxy_config(h, servers), 0o644):
        _run([binary, "-c", "-q", "-f", f["config"]], "checking %s" % f["config"])
        haproxy_stop(h)
    haproxy_start(h)


# --- dispatch (lab.py) ---------------------------------------------------------------------------------------


def ensure(h, subnet, servers):
    if h.role == "postgres":
        ensure_postgres(h, subnet)
    elif h.role == "haproxy":
        ensure_haproxy(h, servers)


def running(h):
    return pg_running(h) if h.role == "postgres" else haproxy_running(h)


def start(h):
    if h.role == "postgres":
        if not h.path("postgres.initialized").exists():
            raise ServiceError("PostgreSQL of %s was never set up: run 'lab.py up' first" % h.name)
        pg_prepare(h)
        pg_start(h)
    else:
        if not haproxy_files(h)["config"].exists():
            raise ServiceError("HAProxy of %s was never set up: run 'lab.py up' first" % h.name)
        haproxy_start(h)


def stop(h):
    if h.role == "postgres":
        pg_stop(h)
    else:
        haproxy_stop(h)
