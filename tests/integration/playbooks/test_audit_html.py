# -*- coding: utf-8 -*-
"""playbooks/templates/audit.html.j2 rendered by Ansible's template module and opened in headless Chromium.

Checks what a reader sees: the DOM after the page's script ran holds one row per host, worst first (the script
sorts by the overall status on load), each check cell carries its red/amber/green class, an agent attested with
join_token is flagged (banner + its SPIRE cell) and no other; the screenshot is not blank and shows the three status
colours. The records are data here; molecule `audit` produces them from a real lab and real SPIRE.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
TEMPLATE = ROOT / "playbooks" / "templates" / "audit.html.j2"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")

COLOURS = {"red": (0xd6, 0x45, 0x45), "amber": (0xf2, 0xa9, 0x00), "green": (0x1f, 0x9d, 0x55)}


def record(host, overall, **statuses):
    checks = {}
    for k in ("tpm", "ek_cert", "devid", "pcr", "spire"):
        st = statuses.get(k, "green")
        checks[k] = {"status": st, "detail": "%s is %s <b>not html</b>" % (k, st)}
    return {"host": host, "overall": overall,
            "tpm": {"manufacturer": "IBM", "vendor": "SW   TPM", "firmware_version": "8217.4131.22.13878"},
            "checks": checks}


def join_token_record(host):
    """A host whose agent the server lists as join_token: audit_records.j2 flags it."""
    r = record(host, "red", ek_cert="red", devid="red", spire="red")
    r["checks"]["spire"].update({"flag": "join_token", "attestation_type": "join_token"})
    r["flags"] = ["join_token"]
    return r


RECORDS = [
    record("agent-1", "green"),
    record("agent-3", "red", ek_cert="red", devid="red", spire="red"),
    record("agent-2", "amber", pcr="amber"),
    record("spire-server-1", "green", devid="na", spire="na"),
    join_token_record("agent-4"),
]


def chromium(*args):
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--user-data-dir=%s" % profile] + list(args),
            capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def png_pixels(path):
    """Decode an 8-bit RGB/RGBA non-interlaced PNG (what Chromium writes) into (width, height, rows of bytes)."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", None
    while pos < len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if ctype == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
            bpp = 3 if colour == 2 else 4
        elif ctype == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xff
            elif f == 2:
                line[i] = (line[i] + b) & 0xff
            elif f == 3:
                line[i] = (line[i] + ((a + b) >> 1)) & 0xff
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xff
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


@pytest.fixture
def rendered(run_playbook, tmp_path):
    out = tmp_path / "audit.html"
    res = run_playbook(tasks=[{"name": "render", "ansible.builtin.template": {"src": str(TEMPLATE), "dest": str(out),
                                                                            "mode": "0644"}}],
                       extra_vars={"audit_records": RECORDS})
    assert res.rc == 0, res.stdout[-3000:]
    return out


def test_dom_has_every_host_worst_first(rendered):
    out = chromium("--dump-dom", rendered.as_uri())
    assert out.returncode == 0, out.stderr[-2000:]
    dom = out.stdout
    hosts = re.findall(r'<tr data-host="([^"]+)"', dom)
    assert sorted(hosts) == sorted(r["host"] for r in RECORDS)
    # The page's script sorted the rows by overall status, worst first (a stable sort: red rows keep their order).
    assert hosts[:3] == ["agent-3", "agent-4", "agent-2"], hosts
    assert 'aria-sort="descending"' in dom
    for k in ("tpm", "ek_cert", "devid", "pcr", "spire"):
        assert len(re.findall(r'data-check="%s"' % k, dom)) == len(RECORDS)
    assert re.search(r'class="status red" data-check="ek_cert"', dom)
    assert re.search(r'class="status amber" data-check="pcr"', dom)
    # Details are escaped, never interpreted.
    assert "&lt;b&gt;not html&lt;/b&gt;" in dom and "<b>not html</b>" not in dom
    assert 'id="count-red">2 red<' in dom
    # The join_token agent is flagged: a banner naming it, and a flag on its SPIRE cell only.
    banner = re.search(r'<p class="flags" id="flag-join-token">(.*?)</p>', dom, re.S)
    assert banner and "agent-4" in banner.group(1) and "agent-3" not in banner.group(1), dom[:2000]
    flagged = re.findall(r'<tr data-host="([^"]+)">(?:(?!</tr>).)*data-flag="join_token"', dom, re.S)
    assert flagged == ["agent-4"], flagged


def test_no_banner_without_join_token_agents(run_playbook, tmp_path):
    out = tmp_path / "audit.html"
    res = run_playbook(tasks=[{"name": "render", "ansible.builtin.template": {"src": str(TEMPLATE), "dest": str(out),
                                                                            "mode": "0644"}}],
                       extra_vars={"audit_records": RECORDS[:4]})
    assert res.rc == 0, res.stdout[-3000:]
    html = out.read_text()
    assert 'id="flag-join-token"' not in html and "data-flag=" not in html


def test_screenshot_shows_the_statuses(rendered, tmp_path):
    shot = tmp_path / "audit.png"
    out = chromium("--screenshot=%s" % shot, "--window-size=1280,700", "--hide-scrollbars", rendered.as_uri())
    assert shot.exists(), out.stderr[-2000:]
    width, height, bpp, rows = png_pixels(shot)
    assert (width, height) == (1280, 700)
    seen, distinct = set(), set()
    for row in rows[::2]:
        for x in range(0, width * bpp, bpp * 2):
            px = tuple(row[x:x + 3])
            distinct.add(px)
            for name, rgb in COLOURS.items():
                if px == rgb:
                    seen.add(name)
    assert len(distinct) > 20, "screenshot looks blank (%d colours)" % len(distinct)
    assert seen == set(COLOURS), "status colours visible: %s" % sorted(seen)
