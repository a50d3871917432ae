#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pack the SPIRE simulator into an archive shaped like a SPIRE release (test double only, never shipped).

A real release ``spire-<ver>-linux-<arch>-musl.tar.gz`` unpacks to ``spire-<ver>/bin/spire-server`` and
``spire-<ver>/bin/spire-agent`` (+ ``conf/``). This script builds the same layout around the simulator so the roles
install it exactly as they install SPIRE (through ``spire_archive_src`` + ``spire_archive_checksum``):

    spire-<ver>/bin/spire-server       launcher: reports <ver> for --version, runs spire_sim from ../lib
    spire-<ver>/bin/spire-agent
    spire-<ver>/lib/spire_sim/...      copy of tests/simulators/spire_sim
    spire-<ver>/lib/hcl/...            vendored pure-Python pyhcl (the service user may not reach the venv)
    spire-<ver>/lib/ansible_collections/trustroot/spire_tpm/plugins/module_utils/...  (for the daemon's validate)
    spire-<ver>/conf/README            a note that this is the simulator

The archive is reproducible (sorted members, fixed mtimes/owners, gzip mtime 0): the same inputs give the same sha256.
``--plugin DIR`` also writes stand-ins for spire-tpm-plugin's binaries (tpm_attestor_server/_agent) into DIR.

The launchers run ``--python`` (default /usr/bin/python3: the service user ``spire`` must be able to execute it)
with the packer's site-packages on the import path (cryptography >= 39 for the daemon).

Usage: make_release.py --version 1.15.3 --out DIR [--python /usr/bin/python3] [--arch amd64] [--plugin DIR]
Prints one JSON line: {"archive": path, "sha256": hex, "checksum": "sha256:hex", "version": ver, "plugins": {...}}
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIMULATORS = HERE.parent
ROOT = SIMULATORS.parent.parent
MTIME = 1700000000

LAUNCHER = """#!{python}
# SPIRE simulator packed as SPIRE {version} (tests/simulators/release/make_release.py). Test double only.
import os
import sys

LIB = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "lib")
sys.path[0:0] = [LIB] + [p for p in {site_packages!r} if os.path.isdir(p)]
VERSION = {version!r}

if len(sys.argv) > 1 and sys.argv[1] in ("--version", "-version"):
    sys.stdout.write(VERSION + "\\n")
    sys.exit(0)
os.environ["SPIRE_SIM_VERSION"] = VERSION
from spire_sim.dispatch import main  # noqa: E402

sys.exit(main({program!r}, sys.argv[1:]))
"""

PLUGIN = """#!/bin/sh
# Stand-in for spire-tpm-plugin's {name} (test double, packed by make_release.py; variant {variant}).
echo "{name}: the SPIRE simulator does not run external plugins" >&2
exit 1
"""


def _add(tar, name, data, mode):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar, name):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.mtime = MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    tar.addfile(info)


def _tree(src, prefix):
    """(archive name, bytes, mode) for every file below src, sorted; caches skipped."""
    out = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for fn in sorted(filenames):
            if fn.endswith((".pyc", ".pyo")):
                continue
            p = Path(dirpath) / fn
            rel = p.relative_to(src).as_posix()
            out.append(("%s/%s" % (prefix, rel), p.read_bytes(), 0o644))
    return out


def members(version, python, site_packages):
    top = "spire-%s" % version
    files = []
    for program in ("spire-server", "spire-agent"):
        files.append(("%s/bin/%s" % (top, program),
                      LAUNCHER.format(python=python, version=version, program=program,
                                      site_packages=list(site_packages)).encode(), 0o755))
    files += _tree(SIMULATORS / "spire_sim", "%s/lib/spire_sim" % top)
    import hcl  # pyhcl: pure Python, vendored so that any user's python3 can parse HCL
    files += _tree(Path(hcl.__file__).parent, "%s/lib/hcl" % top)
    coll = "%s/lib/ansible_collections/trustroot/spire_tpm" % top
    for pkg in ("", "/plugins"):
        files.append(("%s%s/__init__.py" % (coll, pkg), b"", 0o644))
    files.append(("lib/ansible_collections/__init__.py", b"", 0o644))
    files.append(("lib/ansible_collections/trustroot/__init__.py", b"", 0o644))
    files = [(n if not n.startswith("lib/") else "%s/%s" % (top, n), d, m) for n, d, m in files]
    files += _tree(ROOT / "plugins" / "module_utils", "%s/plugins/module_utils" % coll)
    files.append(("%s/conf/README" % top,
                  ("SPIRE simulator packed as release %s for the trustroot.spire_tpm tests. Not SPIRE.\n"
                   % version).encode(), 0o644))
    return sorted(files)


def build(version, out, python, arch, site_packages):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / ("spire-%s-linux-%s-musl.tar.gz" % (version, arch))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = set()
        for name, data, mode in members(version, python, site_packages):
            parts = name.split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    _add_dir(tar, d)
            _add(tar, name, data, mode)
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0, filename="") as g:
        g.write(raw.getvalue())
    data = gz.getvalue()
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return str(path), hashlib.sha256(data).hexdigest()


def plugins(directory, variant):
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    res = {}
    for name in ("tpm_attestor_server", "tpm_attestor_agent"):
        p = d / name
        body = PLUGIN.format(name=name, variant=variant).encode()
        p.write_bytes(body)
        os.chmod(p, 0o755)
        res[name] = {"path": str(p), "sha256": hashlib.sha256(body).hexdigest()}
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--version", required=True, help="SPIRE version the archive pretends to be, e.g. 1.15.3")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--python", default="/usr/bin/python3",
                    help="interpreter of the launchers (must be usable by the service user; default /usr/bin/python3)")
    ap.add_argument("--arch", default="amd64")
    ap.add_argument("--plugin", help="also write spire-tpm-plugin stand-ins into this directory")
    ap.add_argument("--plugin-variant", default="1", help="changes the stand-ins' content (and so their sha256)")
    ap.add_argument("--site-packages", action="append",
                    help="extra import path of the launchers (default: this interpreter's site-packages, for a "
                         "recent 'cryptography'; the venv's interpreter itself may not be executable by the service "
                         "user, its site-packages usually are)")
    a = ap.parse_args(argv)
    sp = a.site_packages
    if sp is None:
        import sysconfig
        sp = [sysconfig.get_paths()["purelib"]]
    path, digest = build(a.version, a.out, a.python, a.arch, sp)
    res = {"archive": path, "sha256": digest, "checksum": "sha256:" + digest, "version": a.version}
    if a.plugin:
        res["plugins"] = plugins(a.plugin, a.plugin_variant)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
