#!/usr/bin/env python3
"""PCR read benchmark: in-process batched TPM2_PCR_Read (module_utils/tpm/pcr.py) vs one tpm2_pcrread process per PCR.

Starts its own swtpm (tests/support/swtpm.py's SwTPM: a unix socket reached with the cmd TCTI through socat),
reads every PCR of every allocated bank both ways, N times, and prints the medians and their ratio. A report, not
a pass/fail test; it checks only that both ways read the same values. Each tpm2_pcrread process starts its own
socat, as every client of a socket-served swtpm does.

    .build/venv/bin/python bench/pcr_read.py [-n 10] [--tcti 'cmd:socat - UNIX-CONNECT:/run/swtpm/tpm.sock']
    # --tcti: use a running TPM instead (no other client may hold it: swtpm serves one at a time)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("TSS2_LOG", "all+NONE")

from conftest import COLLECTIONS  # noqa: E402  (links the collection under .build/collections)
from support.swtpm import SwTPM  # noqa: E402

sys.path.insert(0, str(COLLECTIONS))
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import pcr  # noqa: E402
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm.context import open_tpm  # noqa: E402

DIGEST = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}


def in_process(tcti):
    with open_tpm(tcti) as tpm:
        banks = pcr.allocated_banks(tpm)
        return pcr.to_hex_facts(pcr.read_pcrs(tpm, banks))


def per_pcr_subprocess(tcti, banks):
    env = dict(os.environ, TPM2TOOLS_TCTI=tcti, TSS2_LOG="all+NONE")
    out = {}
    for bank, indices in banks.items():
        out[bank] = {}
        for i in indices:
            text = subprocess.run(["tpm2_pcrread", "%s:%d" % (bank, i)], env=env, capture_output=True, text=True,
                                  check=True).stdout
            value = text.strip().splitlines()[-1].split(":", 1)[1].strip()
            out[bank][str(i)] = value[2:].lower().rjust(2 * DIGEST[bank], "0")
    return out


def timed(fn, *args):
    t0 = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - t0, result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=10, help="repetitions (default 10)")
    ap.add_argument("--tcti", help="use this TPM instead of starting a swtpm")
    args = ap.parse_args()

    tmp = None
    swtpm = None
    tcti = args.tcti
    if not tcti:
        tmp = tempfile.TemporaryDirectory(prefix="bench-pcr-")
        swtpm = SwTPM(Path(tmp.name) / "tpm", ek_certs=False)
        tcti = swtpm.tcti
        # make the PCRs non-trivial
        for i in (0, 7, 16, 23):
            swtpm.tool("tpm2_pcrextend", "%d:sha256=%s,sha1=%s" % (i, "%02x" % i * 32, "%02x" % i * 20))
    try:
        with open_tpm(tcti) as tpm:
            banks = pcr.allocated_banks(tpm)
        n_pcrs = sum(len(v) for v in banks.values())
        fast, slow = [], []
        for _ in range(args.n):
            t, a = timed(in_process, tcti)
            fast.append(t)
            t, b = timed(per_pcr_subprocess, tcti, banks)
            slow.append(t)
            if a != b:
                raise SystemExit("MISMATCH between in-process and tpm2_pcrread values")
        mf, ms = statistics.median(fast), statistics.median(slow)
        print("TPM: %s  banks: %s  PCR values per read: %d  repetitions: %d"
              % (tcti, ",".join(sorted(banks)), n_pcrs, args.n))
        print("in-process batched TPM2_PCR_Read (open+read+close): median %.4f s  (min %.4f, max %.4f)"
              % (mf, min(fast), max(fast)))
        print("one tpm2_pcrread process per PCR:                    median %.4f s  (min %.4f, max %.4f)"
              % (ms, min(slow), max(slow)))
        print("ratio (subprocess / in-process): %.1fx" % (ms / mf))
    finally:
        if swtpm is not None:
            swtpm.stop()
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
