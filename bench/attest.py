#!/usr/bin/env python3
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Real SPIRE tpm_devid attestation time: spire-agent start -> attested (agent healthy AND the server lists a new
SVID for the agent's ID), for RSA and ECC DevIDs, on each SPIRE version. A join_token agent is the baseline.

Every start is a first start (fresh agent data directory), so each one performs a full tpm_devid attestation:
TPM session (DevID load under the SRK-template parent, AK, EK), certify, credential activation, DevID signature.
The TPM is a swtpm on a unix socket (go-tpm's tpm_device_path); the DevID is made by the collection's code and
signed by a local two-level CA. Prints medians, spreads and ratios; never pass/fail on time.

    .build/venv/bin/python bench/attest.py [--starts 5] [--versions 1.13.3 1.15.3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "integration" / "devid"))

import conftest  # noqa: E402,F401  (links the collection and puts it on sys.path)
from devid_testlib import DevIDCA  # noqa: E402
from support import spire as spire_support  # noqa: E402
from support.swtpm import SwTPM  # noqa: E402

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import devid_csr  # noqa: E402

os.environ.setdefault("TSS2_LOG", "all+NONE")


def healthy(agent):
    out = subprocess.run([str(agent.bin), "healthcheck", "-socketPath", str(agent.socket_path)],
                         capture_output=True, timeout=20)
    return out.returncode == 0


def serial_of(server, agent_id):
    out = server.run("agent", "show", "-spiffeID", agent_id, "-socketPath", server.socket_path, "-output", "json")
    if out.returncode != 0:
        return None
    return json.loads(out.stdout).get("x509svid_serial_number")


def one_start(server, workdir, node_attestor, agent_id=None):
    """Seconds from spawn to healthy, and to healthy + a new SVID listed for the agent (tpm_devid)."""
    agent = spire_support.SpireAgent(workdir, server, node_attestor)
    before = serial_of(server, agent_id) if agent_id else None
    try:
        agent.write_config()
        t0 = time.monotonic()
        agent._spawn()
        t_healthy = t_listed = None
        deadline = t0 + 60
        while time.monotonic() < deadline and (t_healthy is None or t_listed is None):
            if agent.proc.poll() is not None:
                raise RuntimeError("agent exited:\n" + agent.log_text())
            now = time.monotonic()
            if t_healthy is None and healthy(agent):
                t_healthy = time.monotonic() - t0
            if t_listed is None:
                if agent_id is None:
                    t_listed = t_healthy
                else:
                    s = serial_of(server, agent_id)
                    if s and s != before:
                        t_listed = time.monotonic() - t0
            if time.monotonic() - now < 0.05:
                time.sleep(0.05)
        if t_healthy is None or t_listed is None:
            raise RuntimeError("agent not attested within 60 s:\n" + agent.log_text())
        return t_healthy, max(t_healthy, t_listed)
    finally:
        agent.cleanup()


def fmt(values):
    return "median %.3f s  (min %.3f, max %.3f, n=%d)" % (statistics.median(values), min(values), max(values),
                                                          len(values))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--starts", type=int, default=5)
    ap.add_argument("--versions", nargs="+", default=[spire_support.DEFAULT_VERSION, spire_support.NEWEST_VERSION])
    a = ap.parse_args()
    medians = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tpm = SwTPM(tmp / "tpm")
        try:
            ca = DevIDCA(tmp)
            (tmp / "ek.pem").write_bytes(Path(tpm.root_ca).read_bytes() + Path(tpm.intermediate_ca).read_bytes())
            plugin = {}
            for kt in ("rsa", "ecc"):
                d = tmp / kt
                d.mkdir()
                devid_csr.ensure_devid_csr(tcti=tpm.tcti, key_type=kt, pub_path=str(d / "devid.pub"),
                                       priv_path=str(d / "devid.priv"), csr_path=str(d / "devid.csr"),
                                       common_name="bench-%s.example.org" % kt)
                leaf = ca.issue(d / "devid.csr", d / "devid.crt")
                plugin[kt] = ({"tpm_device_path": str(tpm.sock), "devid_cert_path": str(d / "devid.crt"),
                               "devid_pub_path": str(d / "devid.pub"), "devid_priv_path": str(d / "devid.priv")},
                              "spiffe://example.org/spire/agent/tpm_devid/" + hashlib.sha1(ca.der(leaf)).hexdigest())
            print("TPM: swtpm on %s; DevIDs: RSA-2048 and ECC P-256 under SPIRE's SRK template" % tpm.sock)
            print("load average at start: %.1f %.1f %.1f on %d CPUs (figures grow with it)"
                  % (os.getloadavg() + (os.cpu_count(),)))
            for version in a.versions:
                bindir = spire_support.binaries(version)
                server = spire_support.SpireServer(tmp / ("server-" + version), version=version, log_level="INFO",
                                                   node_attestors={"join_token": {}, "tpm_devid": {
                                                       "devid_ca_path": str(ca.root_path),
                                                       "endorsement_ca_path": str(tmp / "ek.pem")}})
                try:
                    server.start()
                    print("\nSPIRE %s (%s)" % (version, bindir))
                    for kind in ("rsa", "ecc", "join_token"):
                        healthy_s, attested_s = [], []
                        for i in range(a.starts):
                            wd = tmp / ("agent-%s-%s-%d" % (version, kind, i))
                            if kind == "join_token":
                                na, aid = ("join_token", server.token()), None
                            else:
                                na, aid = ("tpm_devid", plugin[kind][0]), plugin[kind][1]
                            h, t = one_start(server, wd, na, aid)
                            healthy_s.append(h)
                            attested_s.append(t)
                        medians[(version, kind)] = statistics.median(attested_s)
                        label = {"rsa": "tpm_devid RSA", "ecc": "tpm_devid ECC", "join_token": "join_token"}[kind]
                        print("  %-14s start -> healthy:           %s" % (label, fmt(healthy_s)))
                        print("  %-14s start -> healthy + listed:  %s" % (label, fmt(attested_s)))
                    print("  leftover transient handles in the TPM: %s" % (tpm.transient_handles() or "none"))
                finally:
                    server.cleanup()
        finally:
            tpm.stop()
    print("\nload average at the end: %.1f %.1f %.1f" % os.getloadavg())
    print("ratios (medians of start -> attested)")
    for version in a.versions:
        m = medians
        print("  SPIRE %s: ECC/RSA %.2f; RSA/join_token %.2f; ECC/join_token %.2f"
              % (version, m[(version, "ecc")] / m[(version, "rsa")], m[(version, "rsa")] / m[(version, "join_token")],
                 m[(version, "ecc")] / m[(version, "join_token")]))
    if len(a.versions) == 2:
        v1, v2 = a.versions
        for kind in ("rsa", "ecc", "join_token"):
            print("  %s: SPIRE %s / %s = %.2f" % (kind, v2, v1, medians[(v2, kind)] / medians[(v1, kind)]))


if __name__ == "__main__":
    main()
