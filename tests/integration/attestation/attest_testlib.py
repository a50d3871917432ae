"""Helpers for the attestation tests: our modules (devid_csr, devid_certificate, tpm_devid_verify) as playbook tasks,
the trust files SPIRE's tpm_devid server needs, and small waits on the real daemons' logs.

The SPIRE side is always the real binary (tests/support/spire.py); the TPM is swtpm on a unix socket, reached by our
modules through the cmd TCTI and by the agent as ``tpm_device_path``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from support import spire as spire_support

# Both versions the collection is proven on: the suite's default and the newest the Go module proxy serves.
SPIRE_VERSIONS = [spire_support.DEFAULT_VERSION, spire_support.NEWEST_VERSION]
FQCN = "trustroot.spire_tpm."
# TSS2 errors of the agent are retried (retry_bootstrap) — wait for the first one, then stop the agent.
AGENT_FAILURE_RE = re.compile(r'level=(?:warning|error) msg="(?:Failed to retrieve attestation result|'
                              r'Agent crashed)".*')


def csr_task(name, tpm, d, kt="rsa", cn=None, **kw):
    args = {"tcti": tpm.tcti, "key_type": kt, "pub_path": str(d / "devid.pub"), "priv_path": str(d / "devid.priv"),
            "csr_path": str(d / "devid.csr"), "common_name": cn or "%s-node.example.org" % kt}
    args.update(kw)
    return {"name": name, FQCN + "devid_csr": args}


def stepca_cert_task(name, ca, d, tpm=None, **kw):
    args = {"csr_path": str(d / "devid.csr"), "cert_path": str(d / "devid.crt"), "ca_url": ca.url,
            "root_fingerprint": ca.root_fingerprint, "provisioner_name": ca.provisioner_name,
            "provisioner_password": ca.provisioner_password}
    if tpm is not None:
        args.update(tcti=tpm.tcti, devid_pub_path=str(d / "devid.pub"), devid_priv_path=str(d / "devid.priv"))
    args.update(kw)
    return {"name": name, FQCN + "devid_certificate": args}


def verify_task(name, tpm, d, devid_ca, ek_ca, cert=None, pub=None, priv=None, trust_domain="example.org", **kw):
    args = {"tcti": tpm.tcti, "devid_cert_path": str(cert or d / "devid.crt"),
            "devid_pub_path": str(pub or d / "devid.pub"), "devid_priv_path": str(priv or d / "devid.priv"),
            "devid_ca_path": str(devid_ca), "endorsement_ca_path": str(ek_ca), "trust_domain": trust_domain}
    args.update(kw)
    return {"name": name, FQCN + "tpm_devid_verify": args}


def ek_bundle(tpm, path, with_intermediate=True):
    """The endorsement CA bundle of a swtpm's manufacturer: root (+ the intermediate that issued the EK cert)."""
    data = Path(tpm.root_ca).read_bytes()
    if with_intermediate:
        data += Path(tpm.intermediate_ca).read_bytes()
    Path(path).write_bytes(data)
    return Path(path)


def tpm_devid_server_data(devid_ca, ek_ca):
    return {"tpm_devid": {"devid_ca_path": str(devid_ca), "endorsement_ca_path": str(ek_ca)}}


def tpm_devid_agent_data(tpm, d, cert=None, pub=None, priv=None, **kw):
    data = {"tpm_device_path": str(tpm.sock), "devid_cert_path": str(cert or d / "devid.crt"),
            "devid_pub_path": str(pub or d / "devid.pub"), "devid_priv_path": str(priv or d / "devid.priv")}
    data.update(kw)
    return data


def spiffe_id(proto):
    return "spiffe://%s%s" % (proto["trust_domain"], proto["path"])


def selector_strings(agent):
    return {"%s:%s" % (s["type"], s["value"]) for s in agent.get("selectors") or []}


def wait_for(predicate, timeout, interval=0.25):
    """Poll ``predicate`` until it returns a truthy value; returns it (or None after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def log_lines(daemon, pattern):
    try:
        text = daemon.log.read_text(errors="replace")
    except OSError:
        return []
    rx = re.compile(pattern)
    return [line for line in text.splitlines() if rx.search(line)]


def failed_start(agent, timeout=45.0):
    """Start an agent that is expected to fail attestation: returns (healthy, first failure line of its log).

    The agent retries failed attestations (retry_bootstrap) for about a minute, or exits at once on PermissionDenied:
    stop waiting at the first failure line or at its exit, whichever comes first."""
    agent.write_config()
    agent._spawn()
    line = wait_for(lambda: (log_lines(agent, AGENT_FAILURE_RE.pattern) or [None])[0] or
                    (agent.proc.poll() is not None and "exited"), timeout)
    healthy = agent.healthy()
    if line == "exited":
        line = (log_lines(agent, r"level=(error|warning)") or ["(no error line)"])[-1]
    agent.stop()
    return healthy, line


def error_text(line):
    """The ``error=...`` field of a logrus line (what SPIRE says went wrong), or the whole line."""
    m = re.search(r'error="((?:[^"\\]|\\.)*)"', line or "")
    return m.group(1).replace('\\"', '"') if m else (line or "")


def server_errors(server, since=0):
    """The server's error/warning lines about node attestation (after byte offset ``since`` of its log)."""
    try:
        text = server.log.read_text(errors="replace")[since:]
    except OSError:
        return []
    return [line for line in text.splitlines()
            if re.search(r"level=(error|warning)", line) and ("attest" in line.lower() or "tpm_devid" in line)]


def assert_tpm_clean(tpm):
    """No transient object and no session left in the TPM (tpm2-tools is the oracle)."""
    for cap in ("handles-transient", "handles-loaded-session", "handles-saved-session"):
        out = tpm.tool("tpm2_getcap", cap).stdout.strip()
        assert out == "", "%s not empty after the run: %s" % (cap, out)


class WorkloadPoller:
    """Ask the agent's Workload API for the workload's X509-SVID over and over, in a thread (the real
    ``spire-agent api fetch x509`` as ``uid``), and keep every answer: (start, end, served)."""

    def __init__(self, agent, spiffe_id, uid, interval=0.1, timeout="2s"):
        import threading
        self.agent, self.spiffe_id, self.uid = agent, spiffe_id, uid
        self.interval, self.timeout = interval, timeout
        self.samples = []
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            start = time.monotonic()
            served = self.spiffe_id in self.agent.fetch_x509(timeout=self.timeout, uid=self.uid)
            self.samples.append((start - self.t0, time.monotonic() - self.t0, served))
            self._stop.wait(self.interval)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(30)

    def now(self):
        return time.monotonic() - self.t0

    def gaps(self):
        """[(from, seconds)]: from the start of the first failed fetch to the start of the next served one."""
        out, begin = [], None
        for start, _end, served in self.samples:
            if not served and begin is None:
                begin = start
            elif served and begin is not None:
                out.append((round(begin, 2), round(start - begin, 2)))
                begin = None
        if begin is not None:
            out.append((round(begin, 2), round(self.samples[-1][1] - begin, 2)))
        return out

    def summary(self):
        served = sum(1 for s in self.samples if s[2])
        return {"fetches": len(self.samples), "served": served, "gaps": self.gaps(),
                "slowest_fetch_s": round(max((e - s for s, e, _ in self.samples), default=0), 2)}


def agent_restart_script(path, agent, pidfile):
    """A restart command for tasks/stale_agents.yml that restarts the harness's agent process as a service manager
    would (TERM, wait for the exit, start again) and prints "restarted". The new process id goes to ``pidfile``
    (the test stops it at the end)."""
    pidfile.write_text("%d\n" % agent.proc.pid)
    path.write_text(
        "#!/bin/sh\n"
        "pid=$(cat %(pidfile)s)\n"
        "kill -TERM \"$pid\" 2>/dev/null\n"
        "while [ -e /proc/$pid ] && ! grep -q '^State:.*Z' /proc/$pid/status 2>/dev/null; do sleep 0.1; done\n"
        "setsid %(bin)s run -config %(conf)s >>%(log)s 2>&1 </dev/null &\n"
        "echo $! >%(pidfile)s\n"
        "echo restarted\n" % {"pidfile": pidfile, "bin": agent.bin, "conf": agent.config, "log": agent.log})
    path.chmod(0o755)
    return path


def stop_pid(pidfile):
    """Stop the agent a restart script started (our own process, by its id)."""
    import os
    import signal
    try:
        pid = int(Path(pidfile).read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(150):
        try:
            if "\nState:\tZ" in Path("/proc/%d/status" % pid).read_text():
                return
        except OSError:
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def after_next_reattestation(agent, timeout=60.0, tracked=True):
    """Wait for the running agent's next re-attestation to finish, then return: the agent leaves the TPM alone until
    its next SVID rotation (agent_ttl/2 later), so our own TPM work (the renewal job, tpm_devid_verify) does not
    overlap its TPM session.

    swtpm has no resource manager: two clients interleaving exhaust its 3 object slots ("out of memory for object
    contexts" on our side, "dial unix ...: resource temporarily unavailable" on go-tpm's side, and the agent may then
    leave its transient objects behind). A host with /dev/tpmrm0 does not have this problem. ``tracked=False``: the
    agent process was restarted outside the harness (same log file)."""
    if tracked and (agent.proc is None or agent.proc.poll() is not None):
        return True
    seen = len(log_lines(agent, r'msg="Successfully reattested node"'))
    return wait_for(lambda: len(log_lines(agent, r'msg="Successfully reattested node"')) > seen, timeout)
