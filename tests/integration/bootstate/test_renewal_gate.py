"""The on-host DevID renewal job's boot-state gate (stepca/renew.py --boot-state), run as the job runs it, on swtpm.

The baseline is written from tpm2_pcrread's output (the independent oracle), not from our PCR code. Whether the job
asked the CA is observed, not assumed: --ca-url points at a local TCP listener that counts connections (the job's
first step towards the CA is its health check); a refusal must leave it untouched. The CA itself is not needed for
that proof (renewal against the real step-ca is proven in tests/integration/attestation/test_renewal.py and in the
boot_state molecule scenario)."""

import datetime
import json
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

COLLECTIONS = Path(__file__).resolve().parents[3] / ".build" / "collections"
RENEW_MODULE = "ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca.renew"
CRON_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "SHELL": "/bin/sh"}
SELECTION = list(range(8))


class Listener:
    """A TCP port that counts who connects (and hangs up on them)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.connections = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def url(self):
        return "https://127.0.0.1:%d" % self.sock.getsockname()[1]

    def _run(self):
        while not self._stop:
            try:
                conn, _addr = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self):
        self._stop = True
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def listener():
    lst = Listener()
    yield lst
    lst.close()


def pcrread(tpm):
    """{bank: {"<pcr>": hex}} for PCRs 0-7 of sha1 and sha256, parsed from tpm2_pcrread's text."""
    out = tpm.tool("tpm2_pcrread", "sha1:0,1,2,3,4,5,6,7+sha256:0,1,2,3,4,5,6,7").stdout
    values, bank = {}, None
    for line in out.splitlines():
        m = re.match(r"^\s*(sha1|sha256):\s*$", line)
        if m:
            bank = m.group(1)
            values[bank] = {}
            continue
        m = re.match(r"^\s*(\d+)\s*:\s*0x([0-9A-Fa-f]+)\s*$", line)
        if m and bank:
            values[bank][m.group(1)] = m.group(2).lower()
    assert set(values) == {"sha1", "sha256"} and all(len(v) == 8 for v in values.values()), out
    return values


def write_copy(path, pcrs, gate="enforce", blocked=None):
    doc = {"schema": 1, "version": 1, "host": "node1", "created": "2026-11-30T00:00:00Z", "by": "test",
           "reason": "enrolment", "pcr_selection": SELECTION, "pcrs": pcrs, "event_log": None}
    copy = {"schema": 1, "host": "node1", "written_by": "test", "policy": "block" if gate == "enforce" else "report",
            "gate": gate, "enforce_on": ["drift"], "event_log_path": str(path.parent / "no-event-log"),
            "blocked": blocked, "baseline": doc}
    path.write_text(json.dumps(copy))
    return path


def a_certificate(path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node1.example.org")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def run_job(tpm, d, ca_url, copy):
    env = dict(CRON_ENV, PYTHONPATH=str(COLLECTIONS), TSS2_LOG="all+NONE")
    return subprocess.run([sys.executable, "-m", RENEW_MODULE, "--cert", str(a_certificate(d / "devid.crt")),
                           "--ca-url", ca_url, "--root-fingerprint", "ab" * 32, "--devid-pub", str(d / "devid.pub"),
                           "--devid-priv", str(d / "devid.priv"), "--tcti", tpm.tcti, "--force",
                           "--boot-state", str(copy)], capture_output=True, text=True, env=env, timeout=120)


def extend_pcr7(tpm):
    tpm.tool("tpm2_pcrextend", "7:sha1=%s,sha256=%s" % ("11" * 20, "22" * 32))


def test_the_gate_refuses_on_drift_before_asking_the_ca(swtpm_factory, listener, tmp_path):
    tpm = swtpm_factory(ek_certs=False)
    baseline = pcrread(tpm)
    copy = write_copy(tmp_path / "baseline.json", baseline)

    # Boot state as enrolled: the gate lets the job through, and the job does go to the CA.
    out = run_job(tpm, tmp_path, listener.url, copy)
    assert out.returncode == 1 and "REFUSED" not in out.stderr, out.stdout + out.stderr
    assert listener.connections >= 1, "the job never reached the CA although the boot state matched"

    # PCR 7 drifts (what a secure-boot db update measures): refused with exit 3, the CA is not asked.
    extend_pcr7(tpm)
    assert pcrread(tpm)["sha256"]["7"] != baseline["sha256"]["7"]
    before = listener.connections
    out = run_job(tpm, tmp_path, listener.url, copy)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "devid-renew: REFUSED" in out.stderr and "nothing was asked of the CA" in out.stderr
    assert re.search(r"drift: sha256 PCR 7: %s -> %s" % (baseline["sha256"]["7"], pcrread(tpm)["sha256"]["7"]),
                     out.stderr), out.stderr
    drift_lines = [line for line in out.stderr.splitlines() if "devid-renew: drift:" in line]
    assert len(drift_lines) == 2 and all(" PCR 7: " in line for line in drift_lines), out.stderr  # sha1 + sha256
    assert listener.connections == before, "a refused job talked to the CA"

    # gate "report" (policy report): the drift is logged, the job goes on to the CA.
    write_copy(copy, baseline, gate="report")
    out = run_job(tpm, tmp_path, listener.url, copy)
    assert out.returncode == 1 and "gate lets it through" in out.stdout, out.stdout + out.stderr
    assert listener.connections > before


def test_a_blocked_copy_refuses_whatever_the_pcrs_say(swtpm_factory, listener, tmp_path):
    tpm = swtpm_factory(ek_certs=False)
    blocked = {"policy": "ban", "applied_at": "2026-11-30T01:02:03Z", "summary": "PCR 7 changed: db",
               "baseline_version": 1, "status": "drift"}
    copy = write_copy(tmp_path / "baseline.json", pcrread(tpm), blocked=blocked)
    out = run_job(tpm, tmp_path, listener.url, copy)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "blocked by boot_state policy ban since 2026-11-30T01:02:03Z" in out.stderr
    assert listener.connections == 0


def test_a_broken_copy_is_an_error_not_a_pass(swtpm_factory, listener, tmp_path):
    tpm = swtpm_factory(ek_certs=False)
    copy = tmp_path / "baseline.json"
    copy.write_bytes(b"\xff\xfe not json")
    out = run_job(tpm, tmp_path, listener.url, copy)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "boot-state gate" in out.stderr and "baseline.json" in out.stderr and "Traceback" not in out.stderr
    assert listener.connections == 0
