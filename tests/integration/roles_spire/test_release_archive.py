# -*- coding: utf-8 -*-
"""The release-shaped archive lab/spire_build.py packs from the real SPIRE binaries (what the roles install through
spire_archive_src + spire_archive_checksum): layout, checksum, reproducibility, and binaries that say their version.

Oracles: hashlib and tarfile here (not the packer's own numbers), the extracted binaries themselves."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from support import spire as spire_support
from support.labload import load

ROOT = Path(__file__).resolve().parents[3]
spire_build = load("spire_build")
VERSIONS = [spire_support.DEFAULT_VERSION, spire_support.NEWEST_VERSION]


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.mark.parametrize("version", VERSIONS)
def test_layout_checksum_and_version(version, tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "lab" / "spire_build.py"), "--version", version, "--json"],
                         capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    archive = Path(info["archive"])
    assert archive.name == "spire-%s-linux-%s-glibc.tar.gz" % (version, spire_build.arch())
    # the reported checksum is the file's sha256, in the roles' "sha256:<hex>" form
    assert info["sha256"] == sha256(archive) and info["checksum"] == "sha256:" + sha256(archive)
    top = "spire-%s" % version
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        assert all(n == top or n.startswith(top + "/") for n in names), names
        assert {top + "/bin/spire-server", top + "/bin/spire-agent"} <= set(names)
        for prog in ("spire-server", "spire-agent"):
            m = tar.getmember("%s/bin/%s" % (top, prog))
            assert m.isfile() and m.mode & 0o111 and m.uid == 0 and m.gid == 0
            # the packed binaries are the built ones, byte for byte
            assert hashlib.sha256(tar.extractfile(m).read()).hexdigest() == sha256(Path(info["bin_dir"]) / prog)
        tar.extractall(tmp_path)
    for prog in ("spire-server", "spire-agent"):
        v = subprocess.run([str(tmp_path / top / "bin" / prog), "--version"], capture_output=True, text=True,
                           timeout=60)
        assert v.returncode == 0 and (v.stdout + v.stderr).strip() == version


def test_two_packs_of_the_same_binaries_are_identical(tmp_path):
    version = spire_support.DEFAULT_VERSION
    info = spire_support.release(version)
    with tarfile.open(info["archive"]) as tar:
        build_info = json.loads(tar.extractfile("spire-%s/conf/BUILDINFO" % version).read())
    a = spire_build.pack(version, Path(info["bin_dir"]), tmp_path / "a.tar.gz", build_info)
    b = spire_build.pack(version, Path(info["bin_dir"]), tmp_path / "b.tar.gz", build_info)
    assert a == b == sha256(tmp_path / "a.tar.gz") == sha256(tmp_path / "b.tar.gz")
    # and identical to the cached archive the roles are given
    assert a == info["sha256"]
    # another version's archive differs
    assert spire_support.release(spire_support.NEWEST_VERSION)["sha256"] != a
