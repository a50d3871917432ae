# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Two TCG event logs compared (the boot-state drift report names what changed).

API (a contract of the boot-state gate)::

    compare_logs(baseline_events, current_events, pcrs=None) -> [{"pcr", "type_name", "change":
        "changed"|"added"|"removed", "baseline": {"digests", "decoded"} or None, "current": ... or None,
        "description": one line}]
    describe_event(event) -> "PCR 7 EV_EFI_VARIABLE_DRIVER_CONFIG db (d719b2cb-3d3a-4596-a3bc-dad00e67656f)"

Events are aligned per PCR on (type, digest) with difflib; a replaced block is paired by component (same variable or
image) first, then by type; the rest are removed/added. Imports nothing from Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import difflib

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.bootstate.eventlog import (
    IMAGE_TYPES, VARIABLE_TYPES, event_type_name, events_of)
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm.pcr import normalize_pcrs


def _component(ev):
    dec = ev.get("decoded") or {}
    name = ev.get("type_name") or event_type_name(ev.get("type", 0))
    if name in VARIABLE_TYPES and "name" in dec:
        return "%s (%s)" % (dec["name"], dec.get("guid"))
    if name in IMAGE_TYPES and dec.get("device_path") is not None:
        return dec.get("file_path") or dec.get("device_path") or "image at 0x%x" % dec.get("image_location", 0)
    if "signature" in dec:
        return dec["signature"] + (" %d" % dec["locality"] if "locality" in dec else "")
    if "text" in dec:
        text = dec["text"].replace("\n", " ").strip()
        return '"%s"' % (text if len(text) <= 60 else text[:57] + "...")
    if "hex" in dec and len(dec["hex"]) <= 16:
        return "0x" + dec["hex"]
    if "base" in dec:
        return "blob 0x%x+0x%x" % (dec["base"], dec["length"])
    return "data sha256 %s..." % (ev.get("data_sha256") or "?")[:16]


def describe_event(event):
    """Short human text: 'PCR 7 EV_EFI_VARIABLE_DRIVER_CONFIG db (d719b2cb-3d3a-4596-a3bc-dad00e67656f)'."""
    name = event.get("type_name") or event_type_name(event.get("type", 0))
    return "PCR %s %s %s" % (event.get("pcr"), name, _component(event))


def _identity(ev):
    dec = ev.get("decoded") or {}
    if ev.get("type_name") in VARIABLE_TYPES and "name" in dec:
        return (ev.get("type"), "var", dec.get("guid"), dec["name"])
    if ev.get("type_name") in IMAGE_TYPES and (dec.get("file_path") or dec.get("device_path")):
        return (ev.get("type"), "image", dec.get("file_path") or dec.get("device_path"))
    return (ev.get("type"), "any")


def _detail(old, new):
    a, b = old.get("decoded") or {}, new.get("decoded") or {}
    bits = []
    for key, label in (("enabled", "enabled"), ("entries", "entries"), ("description", "description"),
                       ("file_path", "path"), ("text", "text"), ("boot_order", "order")):
        if key in a and key in b and a[key] != b[key]:
            bits.append("%s %s -> %s" % (label, _show(a[key]), _show(b[key])))
    return " (%s)" % "; ".join(bits) if bits else ""


def _show(value):
    return ",".join(value) if isinstance(value, list) else str(value)


def _side(ev):
    return None if ev is None else {"digests": dict(ev.get("digests", {})), "decoded": ev.get("decoded")}


def _finding(change, old, new):
    ev = new if new is not None else old
    if change == "changed":
        text = "%s: digest changed%s" % (describe_event(new), _detail(old, new))
    else:
        digest = ev.get("digests", {}).get("sha256") or ev.get("data_sha256") or "?"
        text = "%s: %s (sha256 %s...)" % (describe_event(ev), change, digest[:16])
    return {"pcr": ev.get("pcr"), "type_name": ev.get("type_name") or event_type_name(ev.get("type", 0)),
            "change": change, "description": text, "baseline": _side(old), "current": _side(new)}


def _pair_block(olds, news):
    """Findings for a replaced block: same component first, then same type in order, the rest removed/added."""
    paired = {}  # index in olds → index in news
    for match in (_identity, lambda e: e.get("type")):
        for i, old in enumerate(olds):
            j = next((j for j, new in enumerate(news) if i not in paired and j not in paired.values()
                      and match(old) == match(new)), None)
            if j is not None:
                paired[i] = j
    out = [_finding("changed", old, news[paired[i]]) if i in paired else _finding("removed", old, None)
           for i, old in enumerate(olds)]
    return out + [_finding("added", None, new) for j, new in enumerate(news) if j not in paired.values()]


def _align_key(ev, bank):
    return ev.get("type"), ev.get("digests", {}).get(bank)


def compare_logs(baseline_events, current_events, pcrs=None):
    """Findings between two logs' events (EventLog or lists), aligned per PCR; identical events are no finding."""
    old_all, new_all = events_of(baseline_events), events_of(current_events)
    old_banks, new_banks = (set(b for ev in evs for b in ev.get("digests", {})) for evs in (old_all, new_all))
    common = old_banks & new_banks
    if (old_all and new_all) and not common:
        raise SpireTpmError("the two event logs share no digest bank (baseline: %s; current: %s)"
                            % (", ".join(sorted(old_banks)), ", ".join(sorted(new_banks))),
                            "record the baseline on the same platform with the same PCR banks enabled")
    bank = "sha256" if "sha256" in common else (sorted(common) or [None])[0]
    wanted = None if pcrs is None else set(normalize_pcrs(pcrs))
    findings = []
    for p in sorted(set(ev["pcr"] for ev in old_all + new_all)):
        if wanted is not None and p not in wanted:
            continue
        olds = [ev for ev in old_all if ev["pcr"] == p]
        news = [ev for ev in new_all if ev["pcr"] == p]
        sm = difflib.SequenceMatcher(None, [_align_key(e, bank) for e in olds], [_align_key(e, bank) for e in news],
                                     autojunk=False)
        for op, i1, i2, j1, j2 in sm.get_opcodes():
            if op != "equal":
                findings.extend(_pair_block(olds[i1:i2], news[j1:j2]))
    return findings
