#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""SPIRE build time from the Go module proxy: cold (empty module and build caches, as on a fresh CI machine),
then cached (lab/spire_build.py finds its build and reuses it), then a rebuild with warm Go caches (the pinned
go.mod changed nothing but the binaries were removed). A report, never a pass/fail test.

    python bench/spire_build.py [--version 1.13.3] [--keep]

Cold runs download every module (GOMODCACHE) and compile everything (GOCACHE) into a fresh temporary build dir;
they take minutes on 2 cores. ``--keep`` leaves that dir for inspection.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "lab" / "spire_build.py"


def run_build(version, build_dir):
    env = dict(os.environ, SPIRE_TPM_BUILD_DIR=str(build_dir))
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, str(BUILD), "--version", version, "--json"], env=env,
                         capture_output=True, text=True)
    wall = time.monotonic() - t0
    if out.returncode != 0:
        raise SystemExit("build failed:\n%s%s" % (out.stdout, out.stderr))
    return wall, json.loads(out.stdout.strip().splitlines()[-1])


def du(path):
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--version", default="1.13.3")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="spire-build-bench-"))
    try:
        cold_wall, cold = run_build(a.version, tmp)
        cached_wall, cached = run_build(a.version, tmp)
        shutil.rmtree(Path(cached["bin_dir"]).parent)
        warm_wall, warm = run_build(a.version, tmp)
        print("SPIRE v%s built from the Go module proxy on %d cores (%s)" % (a.version, os.cpu_count(), cold["go"]))
        print("  cold (empty module + build cache): %7.1f s wall (go build %.1f s, pack %.1f s)"
              % (cold_wall, cold["build_seconds"], cold["pack_seconds"]))
        print("  cached (build reused):             %7.1f s wall" % cached_wall)
        print("  warm Go caches, binaries rebuilt:  %7.1f s wall (go build %.1f s)" % (warm_wall,
                                                                                        warm["build_seconds"]))
        print("  ratios: cold/cached %.0fx, cold/warm-rebuild %.1fx" % (cold_wall / max(cached_wall, 1e-3),
                                                                         cold_wall / max(warm_wall, 1e-3)))
        print("  module cache %.0f MiB, build cache %.0f MiB, archive %.0f MiB" % (
            du(tmp / "go" / "mod") / 2 ** 20, du(tmp / "go" / "cache") / 2 ** 20,
            os.path.getsize(warm["archive"]) / 2 ** 20))
    finally:
        if a.keep:
            print("kept", tmp)
        else:
            subprocess.run(["chmod", "-R", "u+w", str(tmp)], check=False)
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
