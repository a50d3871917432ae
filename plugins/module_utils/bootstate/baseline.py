# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Boot-state baselines: the document, its checks, and the controller-side store (one versioned file per host).

A *measured boot state* is what ``tpm_boot_state`` reads on a host::

    {"pcr_selection": [0, ..., 7],
     "pcrs": {bank: {"<index>": hex}},                      # every allocated bank, exactly the selected PCRs
     "event_log": {"path", "sha256" (of the raw file), "spec", "events"} or null}

A *baseline document* is a measured boot state plus who/when/why::

    {"schema": 1, "version": n, "host", "created" (UTC ISO 8601), "by", "reason", "pcr_selection", "pcrs",
     "event_log"}

The *store* is ``<store_dir>/<host>.json``::

    {"schema": 1, "host": ..., "current": n, "versions": [doc 1, doc 2, ...], "enforcement": null}

Versions are only ever appended: a different boot state replaces the current one only when the operator asks for a
re-baseline with a reason, and the earlier versions stay in the file. ``enforcement`` belongs to the policy code
(block/evict/ban state); it is kept as found on every write.

Two boot states are *the same* when their PCR selection, PCR values and the events of the selected PCRs are equal
(whether a log exists is part of it). The log's path and the events of other PCRs (for example PCR 8/9 measured by
the boot loader for every new kernel) do not make a new baseline.

Imports nothing from Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import datetime
import json
import os
import re

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.bootstate import evaluate
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.files import ManagedFile, parse_mode, read_bytes
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm.pcr import DIGEST_SIZES, PCR_COUNT

SCHEMA = 1
DEFAULT_PCRS = list(range(8))
DEFAULT_MODE = 0o640
HOST_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@-]{0,252}$")
REBASELINE_FIX = ("if the change is sanctioned (a planned firmware or boot loader update), run "
                  "playbooks/rebaseline.yml for this host with a reason (boot_state_baseline rebaseline=true "
                  "reason=...); otherwise treat the host as compromised until the change is explained")
STORE_FIX = ("restore the file from the store's backup or version control; do not edit it by hand (the store is "
             "written by trustroot.spire_tpm.boot_state_baseline)")


# ---------------------------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------------------------
def check_host(host):
    """The host name as a file name: no path separators, no leading dot, no spaces."""
    if not isinstance(host, str) or not HOST_RE.match(host) or host in (".", ".."):
        raise SpireTpmError("host name %r cannot name a baseline file" % (host,),
                            "use the inventory hostname: letters, digits and . _ - : @, not starting with a dot, "
                            "no '/' or spaces")
    return host


def _bad(where, what, fix=STORE_FIX):
    raise SpireTpmError("%s: %s" % (where, what), fix)


def _check_selection(where, selection):
    if not isinstance(selection, list) or not selection:
        _bad(where, "pcr_selection must be a non-empty list of PCR indices, got %r" % (selection,))
    out = []
    for p in selection:
        if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < PCR_COUNT:
            _bad(where, "PCR index %r in pcr_selection is outside 0-23" % (p,))
        if p in out:
            _bad(where, "PCR %d appears twice in pcr_selection" % p)
        out.append(p)
    return sorted(out)


def _check_digest(where, bank, value):
    size = DIGEST_SIZES[bank]
    if not isinstance(value, str) or not re.match(r"^[0-9a-f]*$", value):
        _bad(where, "%r is not a lowercase hex %s digest" % (value, bank))
    if len(value) != 2 * size:
        _bad(where, "%d hex digits, a %s digest has %d" % (len(value), bank, 2 * size))
    return value


def _check_bank(where, bank):
    if bank not in DIGEST_SIZES:
        _bad(where, "unknown PCR bank %r (known: %s)" % (bank, ", ".join(sorted(DIGEST_SIZES))))
    return bank


def check_pcrs(where, pcrs, selection):
    """``{bank: {"<idx>": hex}}`` with every bank known, exactly the PCRs of ``selection``, right-sized digests."""
    if not isinstance(pcrs, dict) or not pcrs:
        _bad(where, "pcrs must be a non-empty mapping bank → {PCR index: hex digest}")
    out = {}
    for bank, values in pcrs.items():
        _check_bank(where, bank)
        if not isinstance(values, dict):
            _bad(where, "pcrs.%s must map PCR indices to digests" % bank)
        entries = {}
        for key, value in values.items():
            try:
                idx = int(key)
            except (TypeError, ValueError):
                idx = None
            if idx is None or isinstance(key, bool) or str(idx) != str(key).strip():
                _bad(where, "pcrs.%s: %r is not a PCR index" % (bank, key))
            if not 0 <= idx < PCR_COUNT:
                _bad(where, "pcrs.%s: PCR index %d is outside 0-23" % (bank, idx))
            entries[str(idx)] = _check_digest("%s, pcrs.%s PCR %d" % (where, bank, idx), bank, value)
        got = sorted(int(k) for k in entries)
        if got != selection:
            _bad(where, "pcrs.%s holds %d PCR(s) (%s) but pcr_selection is %s"
                 % (bank, len(got), ",".join(str(i) for i in got) or "none", ",".join(str(i) for i in selection)))
        out[bank] = entries
    return out


def check_event_log(where, log):
    """None, or ``{"path", "sha256", "spec", "events"}`` whose events carry known banks and right-sized digests."""
    if log is None:
        return None
    if not isinstance(log, dict):
        _bad(where, "event_log must be a mapping or null")
    missing = [k for k in ("path", "sha256", "spec", "events") if k not in log]
    if missing:
        _bad(where, "event_log lacks %s" % ", ".join(missing))
    if not isinstance(log["sha256"], str) or not re.match(r"^[0-9a-f]{64}$", log["sha256"]):
        _bad(where, "event_log.sha256 %r is not 64 lowercase hex digits" % (log["sha256"],))
    if not isinstance(log["spec"], dict) or not isinstance(log["events"], list):
        _bad(where, "event_log.spec must be a mapping and event_log.events a list")
    for i, ev in enumerate(log["events"]):
        at = "%s, event_log.events[%d]" % (where, i)
        if not isinstance(ev, dict):
            _bad(at, "an event must be a mapping")
        pcr = ev.get("pcr")
        if isinstance(pcr, bool) or not isinstance(pcr, int) or not 0 <= pcr < PCR_COUNT:
            _bad(at, "PCR index %r is outside 0-23" % (pcr,))
        digests = ev.get("digests")
        if not isinstance(digests, dict):
            _bad(at, "digests must be a mapping bank → hex")
        for bank, value in digests.items():
            _check_bank(at, bank)
            _check_digest("%s %s" % (at, bank), bank, value)
    return log


def check_measured(measured, where="boot_state"):
    """A measured boot state (see the module docstring) → a normalised copy; SpireTpmError naming the problem."""
    fix = "pass the boot_state returned by trustroot.spire_tpm.tpm_boot_state unchanged"
    if not isinstance(measured, dict):
        raise SpireTpmError("%s must be a mapping, got %s" % (where, type(measured).__name__), fix)
    try:
        selection = _check_selection(where, measured.get("pcr_selection"))
        return {"pcr_selection": selection,
                "pcrs": check_pcrs(where, measured.get("pcrs"), selection),
                "event_log": check_event_log(where, measured.get("event_log"))}
    except SpireTpmError as e:
        raise SpireTpmError(e.cause, fix)


def check_document(doc, where="baseline"):
    """A baseline document → itself, or SpireTpmError naming what is wrong."""
    if not isinstance(doc, dict):
        _bad(where, "a baseline document must be a mapping, got %s" % type(doc).__name__)
    if doc.get("schema") != SCHEMA:
        _bad(where, "schema %r is not %d (this collection reads schema %d only)" % (doc.get("schema"), SCHEMA, SCHEMA))
    for key in ("host", "created", "by", "reason"):
        if not isinstance(doc.get(key), str):
            _bad(where, "%s must be text, got %r" % (key, doc.get(key)))
    version = doc.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        _bad(where, "version %r is not a positive integer" % (version,))
    selection = _check_selection(where, doc.get("pcr_selection"))
    check_pcrs(where, doc.get("pcrs"), selection)
    if "event_log" not in doc:
        _bad(where, "event_log is missing (null when the host has no log)")
    check_event_log(where, doc["event_log"])
    return doc


def check_store(store, host, where):
    """A whole store file's data → itself (every version checked), or SpireTpmError."""
    if not isinstance(store, dict):
        _bad(where, "the store must be a JSON object, got %s" % type(store).__name__)
    if store.get("schema") != SCHEMA:
        _bad(where, "schema %r is not %d (this collection reads schema %d only)"
             % (store.get("schema"), SCHEMA, SCHEMA))
    if store.get("host") != host:
        _bad(where, "the file belongs to host %r, not %r" % (store.get("host"), host))
    versions = store.get("versions")
    if not isinstance(versions, list) or not versions:
        _bad(where, "versions must be a non-empty list")
    for n, doc in enumerate(versions, 1):
        check_document(doc, "%s version %d" % (where, n))
        if doc["version"] != n:
            _bad(where, "versions[%d] says version %r: versions must be numbered 1, 2, ... in order"
                 % (n - 1, doc["version"]))
        if doc["host"] != host:
            _bad(where, "version %d belongs to host %r" % (n, doc["host"]))
    if store.get("current") not in range(1, len(versions) + 1) or isinstance(store.get("current"), bool):
        _bad(where, "current %r names no stored version (1-%d)" % (store.get("current"), len(versions)))
    if "enforcement" not in store:
        _bad(where, "the enforcement key is missing (null when nothing is enforced)")
    return store


def current_document(data, where="baseline"):
    """The current baseline document of ``data``: a document itself, or a whole store (its current version)."""
    if isinstance(data, dict) and "versions" in data and "current" in data:
        check_store(data, data.get("host"), where)
        return data["versions"][data["current"] - 1]
    return check_document(data, where)


# ---------------------------------------------------------------------------------------------------------------
# comparing
# ---------------------------------------------------------------------------------------------------------------
def _selected_events(log, selection):
    if log is None:
        return None
    return [ev for ev in log["events"] if ev.get("pcr") in selection]


def fingerprint(state):
    """What decides whether two boot states are the same (see the module docstring)."""
    selection = list(state["pcr_selection"])
    return {"pcr_selection": selection, "pcrs": state["pcrs"],
            "events": _selected_events(state.get("event_log"), selection)}


def same_boot_state(a, b):
    return json.dumps(fingerprint(a), sort_keys=True) == json.dumps(fingerprint(b), sort_keys=True)


def differences(doc, measured):
    """Short phrases naming how ``measured`` differs from the baseline document ``doc``."""
    out = []
    if doc["pcr_selection"] != measured["pcr_selection"]:
        out.append("PCR selection %s → %s" % (doc["pcr_selection"], measured["pcr_selection"]))
    if sorted(doc["pcrs"]) != sorted(measured["pcrs"]):
        out.append("banks %s → %s" % (",".join(sorted(doc["pcrs"])), ",".join(sorted(measured["pcrs"]))))
    changed = {}
    for bank in sorted(set(doc["pcrs"]) & set(measured["pcrs"])):
        for idx, value in doc["pcrs"][bank].items():
            if measured["pcrs"][bank].get(idx, value) != value:
                changed.setdefault(int(idx), []).append(bank)
    old_log, new_log = doc.get("event_log"), measured.get("event_log")
    event_changes = []
    if (old_log is None) != (new_log is None):
        out.append("the baseline has %s event log, the host %s" % ("an" if old_log else "no",
                                                                   "has one now" if new_log else "has none now"))
    elif old_log is not None:
        a = _selected_events(old_log, doc["pcr_selection"])
        b = _selected_events(new_log, doc["pcr_selection"])
        if a != b:
            event_changes = evaluate.compare_events(a, b, doc["pcr_selection"])
    out.extend(evaluate.pcr_change_phrases(changed, event_changes, old_log is not None and new_log is not None))
    return out or ["the boot state differs from the baseline"]


def summary(doc):
    """The before/after summary of a version for diff mode: PCR values and the event count."""
    if doc is None:
        return None
    log = doc.get("event_log")
    return {"version": doc["version"], "pcr_selection": doc["pcr_selection"], "pcrs": doc["pcrs"],
            "event_log_events": None if log is None else len(log["events"])}


def history(store):
    if store is None:
        return []
    return [{"version": d["version"], "created": d["created"], "by": d["by"], "reason": d["reason"]}
            for d in store["versions"]]


# ---------------------------------------------------------------------------------------------------------------
# the host's copy
# ---------------------------------------------------------------------------------------------------------------
def read_host_copy(path):
    """The host's baseline copy (JSON written by the boot_state role: ``gate``, ``enforce_on``, ``blocked``,
    ``event_log_path``, ``baseline`` ...); None when ``path`` does not exist.

    Read by devid_provision's boot-state gate (tpm_boot_state baseline_copy_path) and by the on-host renewal job
    (stepca/renew.py --boot-state): both refuse on the same copy.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except (IOError, OSError) as e:
        if not os.path.exists(path):
            return None
        raise SpireTpmError("cannot read the boot-state baseline copy %s: %s" % (path, e.strerror or e),
                            "run the job as root, or write the copy again (playbooks/boot_state.yml)")
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError as e:
        raise SpireTpmError("the boot-state baseline copy %s is not JSON: %s" % (path, e),
                            "write it again with the boot_state role (playbooks/boot_state.yml or site.yml)")
    if not isinstance(data, dict) or "baseline" not in data:
        raise SpireTpmError("the boot-state baseline copy %s holds no baseline" % path,
                            "write it again with the boot_state role (playbooks/boot_state.yml or site.yml)")
    return data


# ---------------------------------------------------------------------------------------------------------------
# the store
# ---------------------------------------------------------------------------------------------------------------
def store_path(store_dir, host):
    return os.path.join(store_dir, "%s.json" % check_host(host))


def serialize(store):
    """The store's bytes: sorted keys, stable indentation, so identical content is byte-identical."""
    return (json.dumps(store, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def parse_store(raw, host, path):
    """Bytes of a store file → the checked store."""
    if not raw.strip():
        _bad(path, "the file is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        _bad(path, "not UTF-8 text (byte 0x%02x at offset %d)" % (raw[e.start], e.start))
    try:
        data = json.loads(text)
    except ValueError as e:
        _bad(path, "not valid JSON (%s): the file may be truncated" % e)
    return check_store(data, host, path)


def load(store_dir, host, missing_ok=False):
    """The checked store of ``host``; None when it has none and ``missing_ok``."""
    path = store_path(store_dir, host)
    raw = read_bytes(path)
    if raw is None:
        if missing_ok:
            return None
        raise SpireTpmError("no baseline is enrolled for host %s (%s does not exist)" % (host, path),
                            "enrol the host first (playbooks/enrol.yml, or boot_state_baseline state=present)")
    return parse_store(raw, host, path)


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_document(host, measured, version, by, reason, created=None):
    doc = {"schema": SCHEMA, "version": version, "host": host, "created": created or utc_now(), "by": by or "",
           "reason": reason or "", "pcr_selection": measured["pcr_selection"], "pcrs": measured["pcrs"],
           "event_log": measured["event_log"]}
    return check_document(doc, "new baseline for %s" % host)


def check_store_mode(mode):
    value = parse_mode(mode, DEFAULT_MODE)
    if value & 0o027 or value & 0o600 != 0o600:
        raise SpireTpmError("mode %s would let other users change or read the baseline store" % oct(value),
                            "use 0640 (owner read/write, group read) or 0600")
    return value


def enrol(store_dir, host, measured, by, reason, rebaseline=False, mode=None, check_mode=False, now=None):
    """Record ``measured`` as ``host``'s baseline.

    * no store yet → version 1;
    * an identical boot state is current → nothing written (``changed`` false);
    * a different one is current → SpireTpmError naming the differences, unless ``rebaseline`` with a reason:
      then version n+1 is appended and becomes current (the earlier versions stay).

    Returns ``{changed, baseline_action (created|unchanged|rebaselined), version, baseline, history, path,
    before, after}`` (``before``/``after``: summaries of the current version for diff mode).
    """
    check_host(host)
    measured = check_measured(measured)
    file_mode = check_store_mode(mode)
    if rebaseline and not (reason or "").strip():
        raise SpireTpmError("a re-baseline of %s needs a reason" % host,
                            "say why the boot state changed, e.g. reason='BIOS update to 1.22 (change 4711)'")
    if not os.path.isdir(store_dir):
        if os.path.exists(store_dir):
            raise SpireTpmError("store_dir %s is not a directory" % store_dir, "point store_dir at a directory")
        if not check_mode:
            try:
                os.makedirs(store_dir, 0o750)
                os.chmod(store_dir, 0o750)  # whatever the umask: the group reads the 0640 files
            except OSError as e:
                raise SpireTpmError("cannot create store_dir %s: %s" % (store_dir, e.strerror),
                                    "create it on the controller or choose a writable path")
    path = store_path(store_dir, host)
    store = load(store_dir, host, missing_ok=True) if os.path.isdir(store_dir) else None
    before_doc = None if store is None else store["versions"][store["current"] - 1]
    if store is None:
        store = {"schema": SCHEMA, "host": host, "current": 1, "versions": [], "enforcement": None}
        store["versions"].append(new_document(host, measured, 1, by, reason, now))
        action = "created"
    elif same_boot_state(before_doc, measured):
        action = "unchanged"
    elif not rebaseline:
        raise SpireTpmError(
            "the boot state of %s differs from its baseline (version %d, %s by %s): %s; the baseline was not changed"
            % (host, before_doc["version"], before_doc["created"], before_doc["by"] or "unknown",
               "; ".join(differences(before_doc, measured))),
            REBASELINE_FIX, differences=differences(before_doc, measured), version=before_doc["version"])
    else:
        store = copy.deepcopy(store)
        n = len(store["versions"]) + 1
        store["versions"].append(new_document(host, measured, n, by, reason, now))
        store["current"] = n
        action = "rebaselined"
    current = store["versions"][store["current"] - 1]
    changed = ManagedFile(path, mode=file_mode).write(serialize(store), check_mode=check_mode) \
        if os.path.isdir(store_dir) else True
    return {"changed": changed, "baseline_action": action, "version": current["version"], "baseline": current,
            "history": history(store), "path": path, "before": summary(before_doc), "after": summary(current)}


def query(store_dir, host):
    """``{baseline, version, history, path}`` of ``host``; baseline/version null when none is enrolled."""
    path = store_path(store_dir, host)
    store = load(store_dir, host, missing_ok=True)
    current = None if store is None else store["versions"][store["current"] - 1]
    return {"changed": False, "baseline_action": "query", "baseline": current,
            "version": None if current is None else current["version"], "history": history(store), "path": path,
            "enforcement": None if store is None else store["enforcement"]}
