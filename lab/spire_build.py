#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build the REAL spire-server and spire-agent from the Go module proxy, pinned, cached, packed like a release.

The versions are pinned by the Go modules committed under ``lab/go/spire-v<version>/`` (go.mod + go.sum with
``tool`` directives for github.com/spiffe/spire/cmd/spire-{server,agent}). For each version this script

* builds both programs with cgo (the sqlite datastore needs it), ``-trimpath`` and the linker flags SPIRE's own
  Makefile uses for a release (``-s -w -X .../pkg/common/version.gittag=<version>``, so ``--version`` prints the
  plain version as a release binary does);
* caches them under ``.build/spire/<version>/<key>/bin/`` where the key hashes go.mod, go.sum, the Go toolchain and
  the build flags (a second run reuses them; Go's module and build caches live under ``.build/go/``);
* packs them into ``spire-<version>-linux-<arch>-glibc.tar.gz`` with the release layout
  (``spire-<version>/bin/spire-server``, ``spire-<version>/bin/spire-agent``, ``spire-<version>/conf/``), reproducibly,
  for the roles' air-gapped install path (``spire_archive_src`` + ``spire_archive_checksum``).

Usage::

    python3 lab/spire_build.py                      # the default version (what the whole suite runs on)
    python3 lab/spire_build.py --version 1.15.3     # one version; --all: every pinned version
    python3 lab/spire_build.py --json               # one JSON line per version (paths, checksum, seconds)

Concurrent callers (pytest -n 2, molecule) wait on a lock instead of building twice. Standard library only.
"""

import argparse
import fcntl
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = ROOT / "lab" / "go"
CACHE = Path(os.environ.get("SPIRE_TPM_BUILD_DIR", str(ROOT / ".build")))
# The version the whole suite runs on, and the newest one the Go module proxy serves (v1.16.0's .info/.mod are
# listed there but its source zip is refused: 403 on 2026-11-30).
DEFAULT_VERSION = "1.13.3"
NEWEST_VERSION = "1.15.3"
PROGRAMS = ("spire-server", "spire-agent")
PKG = "github.com/spiffe/spire/cmd/"
MTIME = 1700000000


class BuildError(Exception):
    pass


def log(msg):
    print("spire-build: %s" % msg, file=sys.stderr, flush=True)


def pinned_versions():
    """Every version with a pinned module under lab/go/spire-v<version>/."""
    out = []
    for d in sorted(MODULES.glob("spire-v*")):
        if (d / "go.mod").exists() and (d / "go.sum").exists():
            out.append(d.name[len("spire-v"):])
    return out


def module_dir(version):
    d = MODULES / ("spire-v" + version)
    if not (d / "go.mod").exists():
        raise BuildError("SPIRE %s is not pinned: no %s (pinned: %s)" % (version, d / "go.mod",
                                                                           ", ".join(pinned_versions())))
    gomod = (d / "go.mod").read_text()
    if not re.search(r"^\s*github\.com/spiffe/spire v%s\b" % re.escape(version), gomod, re.M):
        raise BuildError("%s does not require github.com/spiffe/spire v%s" % (d / "go.mod", version))
    return d


def toolchain(moddir):
    """GOTOOLCHAIN for a module: its 'toolchain' line if any (fetched from the module proxy), else the local Go."""
    m = re.search(r"^toolchain\s+(go\S+)", (moddir / "go.mod").read_text(), re.M)
    return m.group(1) if m else "local"


def _version_tuple(text):
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def go_binary(moddir):
    """The first Go toolchain new enough for the module's 'go' line: $SPIRE_TPM_GO, the machine's /usr/local/go,
    then whatever 'go' is on PATH (Debian's golang-go 1.19, installed for step-ca, is too old for SPIRE)."""
    m = re.search(r"^go\s+(\S+)", (moddir / "go.mod").read_text(), re.M)
    need = _version_tuple(m.group(1)) if m else (0,)
    seen = []
    for cand in (os.environ.get("SPIRE_TPM_GO"), "/usr/local/go/bin/go", shutil.which("go")):
        if not cand or not os.path.exists(cand) or cand in seen:
            continue
        seen.append(cand)
        out = subprocess.run([cand, "env", "GOVERSION"], capture_output=True, text=True,
                             env=dict(os.environ, GOTOOLCHAIN="local"))
        if out.returncode == 0 and _version_tuple(out.stdout) >= need:
            return cand
    raise BuildError("no Go toolchain >= %s found (tried %s); the polyglot machines have Go 1.26 in /usr/local/go"
                     % (".".join(map(str, need)), ", ".join(seen) or "none"))


def go_env(moddir):
    env = dict(os.environ)
    env.update({
        "GOMODCACHE": str(CACHE / "go" / "mod"),
        "GOCACHE": str(CACHE / "go" / "cache"),
        # readonly: a build never edits the pinned go.mod/go.sum; modcacherw: .build/ stays deletable.
        "GOFLAGS": "-mod=readonly -modcacherw",
        "GOTOOLCHAIN": toolchain(moddir),
        "CGO_ENABLED": "1",
    })
    return env


def go_version(go, env):
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise BuildError("the Go toolchain does not run: %s" % out.stderr.strip())
    return out.stdout.strip()


def ldflags(version):
    return "-s -w -X github.com/spiffe/spire/pkg/common/version.gittag=%s" % version


def cache_key(moddir, version, gover):
    h = hashlib.sha256()
    for part in ((moddir / "go.mod").read_bytes(), (moddir / "go.sum").read_bytes(), gover.encode(),
                 ldflags(version).encode(), b"-trimpath cgo"):
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def arch():
    m = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)


def _tar_add(tar, name, data=None, mode=0o644, is_dir=False):
    info = tarfile.TarInfo(name)
    info.mtime = MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    if is_dir:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tar.addfile(info)
        return
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def pack(version, bin_dir, dest, build_info):
    """The release-shaped archive, reproducible (fixed order, owners and mtimes; gzip without a timestamp)."""
    top = "spire-%s" % version
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in (top, top + "/bin", top + "/conf"):
            _tar_add(tar, d, is_dir=True)
        for prog in PROGRAMS:
            _tar_add(tar, "%s/bin/%s" % (top, prog), (bin_dir / prog).read_bytes(), 0o755)
        _tar_add(tar, top + "/conf/BUILDINFO", (json.dumps(build_info, indent=2, sort_keys=True) + "\n").encode())
    tmp = dest.with_name(dest.name + ".tmp")
    with open(tmp, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="", compresslevel=6) as g:
        g.write(raw.getvalue())
    os.replace(tmp, dest)
    return hashlib.sha256(dest.read_bytes()).hexdigest()


def ensure(version=DEFAULT_VERSION, quiet=False):
    """Build (or reuse) SPIRE ``version``; return a dict with bin_dir, archive, sha256, checksum, seconds."""
    moddir = module_dir(version)
    go = go_binary(moddir)
    if not shutil.which("gcc"):
        raise BuildError("gcc is missing: SPIRE's sqlite datastore needs cgo (apt-get install gcc)")
    env = go_env(moddir)
    gover = go_version(go, env)
    key = cache_key(moddir, version, gover)
    out = CACHE / "spire" / version / key
    info_file = out / "build.json"
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if info_file.exists():
            info = json.loads(info_file.read_text())
            if all(Path(info[k]).exists() for k in ("archive",)) and all(
                    (Path(info["bin_dir"]) / p).exists() for p in PROGRAMS):
                info["reused"] = True
                if not quiet:
                    log("v%s reused from %s (built in %.1f s)" % (version, out, info["build_seconds"]))
                return info
        bin_dir = out / "bin"
        tmp_bin = out / "bin.tmp"
        shutil.rmtree(tmp_bin, ignore_errors=True)
        tmp_bin.mkdir()
        go_cache_existed = (CACHE / "go" / "cache").exists()
        if not quiet:
            log("building SPIRE v%s with %s (GOTOOLCHAIN=%s)..." % (version, gover, env["GOTOOLCHAIN"]))
        t0 = time.monotonic()
        res = subprocess.run([go, "build", "-trimpath", "-ldflags", ldflags(version), "-o", str(tmp_bin) + "/"]
                             + [PKG + p for p in PROGRAMS], cwd=str(moddir), env=env, capture_output=True, text=True)
        seconds = time.monotonic() - t0
        if res.returncode != 0:
            raise BuildError("go build of SPIRE v%s failed after %.0f s:\n%s%s" % (version, seconds, res.stdout,
                                                                                   res.stderr[-6000:]))
        for prog in PROGRAMS:
            v = subprocess.run([str(tmp_bin / prog), "--version"], capture_output=True, text=True)
            said = (v.stdout + v.stderr).strip()
            if said != version:
                raise BuildError("the built %s reports version %r, expected %r" % (prog, said, version))
        shutil.rmtree(bin_dir, ignore_errors=True)
        os.replace(tmp_bin, bin_dir)
        build_info = {"spire_version": version, "go": gover, "go_mod_sha256": hashlib.sha256(
            (moddir / "go.sum").read_bytes()).hexdigest(), "cgo": True, "ldflags": ldflags(version),
            "module": str(moddir.relative_to(ROOT))}
        t1 = time.monotonic()
        archive = out / ("spire-%s-linux-%s-glibc.tar.gz" % (version, arch()))
        digest = pack(version, bin_dir, archive, build_info)
        info = {"version": version, "bin_dir": str(bin_dir), "archive": str(archive), "sha256": digest,
                "checksum": "sha256:" + digest, "build_seconds": round(seconds, 1),
                "pack_seconds": round(time.monotonic() - t1, 1), "go": gover, "go_cache_existed": go_cache_existed,
                "reused": False}
        info_file.write_text(json.dumps(info, indent=2) + "\n")
        if not quiet:
            log("v%s built in %.1f s, packed in %.1f s: %s" % (version, seconds, info["pack_seconds"], archive))
        return info


def bin_path(program, version=DEFAULT_VERSION):
    """Path of a built program (building it first when needed)."""
    return str(Path(ensure(version, quiet=True)["bin_dir"]) / program)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="append", help="SPIRE version to build (repeatable; default %s)"
                   % DEFAULT_VERSION)
    p.add_argument("--all", action="store_true", help="every pinned version (%s)" % ", ".join(pinned_versions()))
    p.add_argument("--json", action="store_true", help="print one JSON line per version")
    a = p.parse_args(argv)
    versions = pinned_versions() if a.all else (a.version or [DEFAULT_VERSION])
    try:
        for v in versions:
            info = ensure(v)
            if a.json:
                print(json.dumps(info))
            else:
                print("%s %s %s" % (v, info["archive"], info["checksum"]))
    except BuildError as e:
        print("spire-build: error: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
