# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Evaluate a host's measured boot state: does its event log replay, does it match the enrolled baseline?

``evaluate(measured_pcrs, event_log, baseline_doc)`` returns a report::

    {"status": ok | drift | log_does_not_replay | no_baseline,
     "findings": [every status that applies, most severe first],
     "log_replays": true | false | null (no log),
     "pcr_drift": [{bank, pcr, baseline, current}],
     "replay_mismatch": [{bank, pcr, replayed, tpm}],
     "event_changes": [eventlog_compare.compare_logs() entries against the baseline's events],
     "notes": [what could not be compared and why],
     "baseline_version": n | null, "pcr_selection": [...], "summary": "PCR 7 changed: ..."}

``read_event_log(path, required)`` reads the host's log for it (None when the host has none).

``status`` is the most severe finding: ``drift`` (a baseline PCR differs: the TPM's word), then
``log_does_not_replay`` (the log's digests do not extend to the TPM's values: the log cannot be trusted to name
what changed, which is a finding by itself), then ``no_baseline``, else ``ok``.

Only the PCRs of the baseline's selection are compared (without a baseline: the measured ones). Banks present on
only one side are noted; with no bank in common the host is in drift (nothing can be verified).

Imports nothing from Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import hashlib

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.bootstate import eventlog
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.bootstate import eventlog_compare
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError

SEVERITY = ("drift", "log_does_not_replay", "no_baseline")
MAX_SUMMARY_ITEMS = 4


def _hex_pcrs(values):
    """{bank: {idx (int|str): hex|bytes}} → {bank: {int: lowercase hex}}."""
    out = {}
    for bank, entries in (values or {}).items():
        row = {}
        for idx, value in entries.items():
            if isinstance(value, (bytes, bytearray)):
                value = bytes(value).hex()
            row[int(idx)] = str(value).lower()
        out[bank] = row
    return out


def event_label(change):
    """'EV_EFI_VARIABLE_DRIVER_CONFIG db' for a compare_logs() entry: the event type and the component it measures."""
    side = change.get("current") or change.get("baseline") or {}
    decoded = side.get("decoded") or {}
    type_name = change.get("type_name") or "event"
    if isinstance(decoded, dict) and decoded.get("name"):
        return "%s %s" % (type_name, decoded["name"])
    text = eventlog_compare.describe_event({"pcr": change.get("pcr"), "type_name": type_name, "decoded": decoded})
    prefix = "PCR %s " % change.get("pcr")
    return text[len(prefix):] if text.startswith(prefix) else text


def _change_text(change):
    kind = change.get("change")
    label = event_label(change)
    return label if kind == "changed" else "%s (%s)" % (label, kind)


def compare_events(baseline_events, current_events, pcrs):
    """eventlog_compare.compare_logs() restricted to ``pcrs``."""
    return eventlog_compare.compare_logs(baseline_events, current_events, pcrs=pcrs)


def pcr_change_phrases(changed, event_changes, have_logs):
    """'PCR 7 changed: EV_EFI_VARIABLE_DRIVER_CONFIG db' per changed PCR (``changed``: {pcr: [banks]}), plus
    'PCR n events differ: ...' for event changes on PCRs whose values did not change."""
    by_pcr = {}
    for change in event_changes:
        by_pcr.setdefault(change.get("pcr"), []).append(_change_text(change))
    out = []
    for pcr in sorted(set(changed) | set(by_pcr)):
        names = by_pcr.get(pcr)
        if names:
            shown = names[:MAX_SUMMARY_ITEMS]
            more = " (+%d more)" % (len(names) - len(shown)) if len(names) > len(shown) else ""
            what = "changed" if pcr in changed else "events differ (values unchanged)"
            out.append("PCR %d %s: %s%s" % (pcr, what, ", ".join(shown), more))
        elif not have_logs:
            out.append("PCR %d changed (%s; no event log names the component)" % (pcr, ", ".join(changed[pcr])))
        else:
            out.append("PCR %d changed (%s; no differing event in the logs)" % (pcr, ", ".join(changed[pcr])))
    return out


def replay_check(measured, event_log, selection):
    """([{bank, pcr, replayed, tpm}], replayed banks) for the selected PCRs of the banks the log and TPM share."""
    events = event_log["events"]
    log_banks = set((event_log.get("spec") or {}).get("algorithms") or {})
    if not log_banks:
        for ev in events:
            log_banks.update(ev.get("digests") or {})
    banks = sorted(log_banks & set(measured))
    if not banks:
        return [], banks
    replayed = eventlog.replay(events, banks=banks, pcrs=selection)
    mismatch = []
    for bank in banks:
        got = replayed.get(bank) or {}
        for pcr in selection:
            tpm = measured[bank].get(pcr)
            if tpm is None:
                continue
            value = got.get(pcr)
            if value != tpm:
                mismatch.append({"bank": bank, "pcr": pcr, "replayed": value, "tpm": tpm})
    return mismatch, banks


def _summary(report, measured, have_logs):
    status = report["status"]
    parts = []
    if report["pcr_drift"]:
        changed = {}
        for d in report["pcr_drift"]:
            changed.setdefault(d["pcr"], []).append(d["bank"])
        drifted = [c for c in report["event_changes"] if c.get("pcr") in changed]
        parts.extend(pcr_change_phrases(changed, drifted, have_logs))
    elif status == "drift":
        parts.append("no PCR bank in common with the baseline")
    if report["replay_mismatch"]:
        pcrs = sorted(set(m["pcr"] for m in report["replay_mismatch"]))
        parts.append("the event log does not replay to the TPM's PCR %s" % ", ".join(str(p) for p in pcrs))
    if status == "no_baseline":
        parts.append("no baseline enrolled (PCR %s measured, banks %s)"
                     % (_ranges(report["pcr_selection"]), ", ".join(sorted(measured))))
    if status == "ok":
        parts.append("boot state matches baseline version %s (PCR %s, banks %s)"
                     % (report["baseline_version"], _ranges(report["pcr_selection"]),
                        ", ".join(sorted(set(measured)))))
    parts.extend(report["notes"])
    return "; ".join(parts)


def _ranges(pcrs):
    """[0, 1, 2, 3, 7] → '0-3,7'."""
    runs = []
    for p in sorted(pcrs):
        if runs and p == runs[-1][1] + 1:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    return ",".join(str(a) if a == b else "%d-%d" % (a, b) for a, b in runs)


def evaluate(measured_pcrs, event_log, baseline_doc, pcr_selection=None):
    """The report of the module docstring.

    ``measured_pcrs``: {bank: {idx: hex}} read from the TPM; ``event_log``: ``{"events", "spec", ...}`` of the
    host's log or None; ``baseline_doc``: the current baseline document (already checked) or None.
    ``pcr_selection`` applies without a baseline (default: every measured PCR).
    """
    measured = _hex_pcrs(measured_pcrs)
    if not measured:
        raise SpireTpmError("no PCR values to evaluate", "read at least one allocated bank")
    if baseline_doc is not None:
        selection = sorted(baseline_doc["pcr_selection"])
    elif pcr_selection is not None:
        selection = sorted(pcr_selection)
    else:
        selection = sorted(set(i for row in measured.values() for i in row))
    notes = []
    report = {"status": "ok", "findings": [], "log_replays": None, "pcr_drift": [], "replay_mismatch": [],
              "event_changes": [], "notes": notes, "pcr_selection": selection,
              "baseline_version": None if baseline_doc is None else baseline_doc["version"]}

    if event_log is not None:
        mismatch, replayed_banks = replay_check(measured, event_log, selection)
        report["replay_mismatch"] = mismatch
        report["log_replays"] = not mismatch
        if not replayed_banks:
            report["log_replays"] = False
            notes.append("the event log has no bank in common with the TPM's (%s): it cannot be replayed"
                         % ", ".join(sorted(measured)))
        if not report["log_replays"]:
            report["findings"].append("log_does_not_replay")

    if baseline_doc is None:
        report["findings"].append("no_baseline")
    else:
        base = _hex_pcrs(baseline_doc["pcrs"])
        common = sorted(set(base) & set(measured))
        for bank in sorted(set(base) - set(measured)):
            notes.append("bank %s of the baseline was not measured" % bank)
        for bank in sorted(set(measured) - set(base)):
            notes.append("bank %s is not in the baseline" % bank)
        for bank in common:
            for pcr in selection:
                expected, current = base[bank].get(pcr), measured[bank].get(pcr)
                if expected != current:
                    report["pcr_drift"].append({"bank": bank, "pcr": pcr, "baseline": expected, "current": current})
        base_log = baseline_doc.get("event_log")
        if base_log is not None and event_log is not None:
            report["event_changes"] = compare_events(base_log["events"], event_log["events"], selection)
        elif base_log is not None:
            notes.append("the baseline has an event log but the host has none now")
        elif event_log is not None:
            notes.append("the host has an event log but the baseline has none (the changed component cannot be "
                         "named from the baseline)")
        if report["pcr_drift"] or not common:
            report["findings"].insert(0, "drift")
    for status in SEVERITY:
        if status in report["findings"]:
            report["status"] = status
            break
    report["findings"] = [s for s in SEVERITY if s in report["findings"]]
    have_logs = event_log is not None and (baseline_doc or {}).get("event_log") is not None
    report["summary"] = _summary(report, measured, have_logs)
    return report


def read_event_log(path, required=False):
    """The host's event log as ``{"path", "sha256", "spec", "events"}``; None when ``path`` does not exist.

    A missing log is normal (no TPM-aware firmware, a VM without a vTPM log, a kernel without securityfs) unless
    ``required``; an unreadable or unparseable one is an error naming the file.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except (IOError, OSError) as e:
        if e.errno == errno.ENOENT and not required:
            return None
        if e.errno == errno.ENOENT:
            raise SpireTpmError("the event log %s does not exist" % path,
                                "mount securityfs (mount -t securityfs securityfs /sys/kernel/security), point "
                                "event_log_path at the host's log, or set event_log_required=false")
        if e.errno in (errno.EACCES, errno.EPERM):
            raise SpireTpmError("cannot read the event log %s: permission denied" % path,
                                "run the task with become: true (the kernel's copy is readable by root only)")
        raise SpireTpmError("cannot read the event log %s: %s" % (path, e.strerror or e),
                            "check event_log_path on the managed host")
    if not raw:
        raise SpireTpmError("the event log %s is empty" % path,
                            "point event_log_path at a TCG binary event log (binary_bios_measurements)")
    try:
        log = eventlog.parse_event_log(raw)
    except SpireTpmError as e:
        raise SpireTpmError("event log %s: %s" % (path, e.cause), e.fix, **e.details)
    return {"path": path, "sha256": hashlib.sha256(raw).hexdigest(), "spec": log.spec, "events": log.events}


def compact(report, measured_pcrs):
    """The fact form: ``{pcrs, status, summary, baseline_version}``."""
    return {"pcrs": measured_pcrs, "status": report["status"], "summary": report["summary"],
            "baseline_version": report["baseline_version"]}
