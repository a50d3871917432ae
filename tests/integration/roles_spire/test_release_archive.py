# -*- coding: utf-8 -*-
"""The release-shaped simulator archive the spire_roles molecule scenario installs (tests/simulators/release)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
MAKE = ROOT / "tests" / "simulators" / "release" / "make_release.py"


def build(tmp_path, version, sub, *extra):
    out = subprocess.run([sys.executable, str(MAKE), "--version", version, "--out", str(tmp_path / sub)] + list(extra),
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def test_layout_checksum_and_launcher(tmp_path):
    res = build(tmp_path, "1.16.0", "a", "--plugin", str(tmp_path / "plugins"))
    archive = Path(res["archive"])
    assert archive.name == "spire-1.16.0-linux-amd64-musl.tar.gz"
    # The reported checksum is the file's sha256 (computed here independently).
    assert res["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert res["checksum"] == "sha256:" + res["sha256"]
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        assert all(n == "spire-1.16.0" or n.startswith("spire-1.16.0/") for n in names)
        for prog in ("spire-server", "spire-agent"):
            info = tar.getmember("spire-1.16.0/bin/%s" % prog)
            assert info.mode & 0o111 and info.uid == 0
        tar.extractall(tmp_path / "x")
    # The launcher reports the packed version and reaches the simulator from its own lib/ (via a symlink, as
    # /opt/spire/bin -> current/bin does).
    link = tmp_path / "bin"
    os.symlink(tmp_path / "x" / "spire-1.16.0" / "bin", link)
    out = subprocess.run([str(link / "spire-server"), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1.16.0"
    out = subprocess.run([str(link / "spire-server"), "healthcheck", "-socketPath", str(tmp_path / "none.sock")],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "unhealthy" in (out.stdout + out.stderr)
    plug = res["plugins"]["tpm_attestor_server"]
    assert plug["sha256"] == hashlib.sha256(Path(plug["path"]).read_bytes()).hexdigest()


def test_reproducible_and_versions_differ(tmp_path):
    a = build(tmp_path, "1.15.3", "a")
    b = build(tmp_path, "1.15.3", "b")
    c = build(tmp_path, "1.16.0", "c")
    assert a["sha256"] == b["sha256"]
    assert c["sha256"] != a["sha256"]
