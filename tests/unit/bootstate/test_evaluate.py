"""evaluate.py: replay findings, drift against a baseline, the component named in the summary.

The events are small dicts in eventlog's shape; the PCR values they should produce are computed here with hashlib
(extend = H(old || digest)), not with eventlog.replay, so a wrong replay or a wrong comparison shows.
"""

import hashlib

import pytest

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.bootstate import evaluate
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError

BANKS = ("sha1", "sha256")
TYPES = {"EV_S_CRTM_VERSION": 0x08, "EV_SEPARATOR": 0x04, "EV_EFI_VARIABLE_DRIVER_CONFIG": 0x80000001,
         "EV_EFI_BOOT_SERVICES_APPLICATION": 0x80000003}
SELECTION = list(range(8))


def event(index, pcr, type_name, data, name=None):
    decoded = {"name": name, "guid": "d719b2cb-3d3a-4596-a3bc-dad00e67656f"} if name else {"text": data.decode()}
    return {"index": index, "pcr": pcr, "type": TYPES[type_name], "type_name": type_name,
            "digests": dict((b, hashlib.new(b, data).hexdigest()) for b in BANKS), "data_size": len(data),
            "data_sha256": hashlib.sha256(data).hexdigest(), "decoded": decoded}


def boot_events(db=b"db-v1"):
    evs = [event(0, 0, "EV_S_CRTM_VERSION", b"firmware 1.0"),
           event(1, 7, "EV_EFI_VARIABLE_DRIVER_CONFIG", b"SecureBoot=1", name="SecureBoot"),
           event(2, 7, "EV_EFI_VARIABLE_DRIVER_CONFIG", db, name="db"),
           event(3, 4, "EV_EFI_BOOT_SERVICES_APPLICATION", b"shimx64.efi")]
    for i in range(8):
        evs.append(event(4 + i, i, "EV_SEPARATOR", b"\x00\x00\x00\x00"))
    return evs


def pcrs_of(events, selection=SELECTION):
    """Independent replay: every selected PCR starts at zero, each event extends it."""
    out = {}
    for bank in BANKS:
        size = hashlib.new(bank).digest_size
        values = dict((p, b"\x00" * size) for p in selection)
        for ev in events:
            if ev["pcr"] in values:
                values[ev["pcr"]] = hashlib.new(bank, values[ev["pcr"]] + bytes.fromhex(ev["digests"][bank])).digest()
        out[bank] = dict((str(p), v.hex()) for p, v in values.items())
    return out


def log_of(events):
    return {"path": "/tmp/log", "sha256": "ab" * 32, "spec": {"algorithms": {"sha1": 20, "sha256": 32}},
            "events": events}


def doc_of(events, with_log=True, version=1):
    return {"schema": 1, "version": version, "host": "h1", "created": "2024-01-01T00:00:00Z", "by": "op",
            "reason": "enrol", "pcr_selection": SELECTION, "pcrs": pcrs_of(events),
            "event_log": log_of(events) if with_log else None}


def test_no_baseline_log_replays():
    evs = boot_events()
    r = evaluate.evaluate(pcrs_of(evs), log_of(evs), None)
    assert r["status"] == "no_baseline" and r["findings"] == ["no_baseline"]
    assert r["log_replays"] is True and r["replay_mismatch"] == [] and r["pcr_drift"] == []
    assert r["baseline_version"] is None and r["pcr_selection"] == SELECTION
    assert "no baseline enrolled" in r["summary"] and "PCR 0-7" in r["summary"]


def test_matching_baseline_is_ok():
    evs = boot_events()
    r = evaluate.evaluate(pcrs_of(evs), log_of(evs), doc_of(evs, version=3))
    assert r["status"] == "ok" and r["findings"] == [] and r["log_replays"] is True
    assert r["pcr_drift"] == [] and r["event_changes"] == [] and r["notes"] == []
    assert r["summary"] == "boot state matches baseline version 3 (PCR 0-7, banks sha1, sha256)"


def test_changed_db_is_drift_naming_db():
    base = boot_events()
    now = boot_events(db=b"db-v2 with a new certificate")
    r = evaluate.evaluate(pcrs_of(now), log_of(now), doc_of(base))
    assert r["status"] == "drift" and r["findings"] == ["drift"] and r["log_replays"] is True
    assert [(d["bank"], d["pcr"]) for d in r["pcr_drift"]] == [("sha1", 7), ("sha256", 7)]
    d = r["pcr_drift"][1]
    assert d["baseline"] == pcrs_of(base)["sha256"]["7"] and d["current"] == pcrs_of(now)["sha256"]["7"]
    assert len(r["event_changes"]) == 1
    change = r["event_changes"][0]
    assert change["pcr"] == 7 and change["change"] == "changed"
    assert change["type_name"] == "EV_EFI_VARIABLE_DRIVER_CONFIG"
    assert r["summary"] == "PCR 7 changed: EV_EFI_VARIABLE_DRIVER_CONFIG db"


def test_added_boot_application_named_as_added():
    base = boot_events()
    now = list(base)
    now.insert(4, event(99, 4, "EV_EFI_BOOT_SERVICES_APPLICATION", b"evil.efi"))
    r = evaluate.evaluate(pcrs_of(now), log_of(now), doc_of(base))
    assert r["status"] == "drift"
    assert sorted(set(d["pcr"] for d in r["pcr_drift"])) == [4]
    assert [c["change"] for c in r["event_changes"]] == ["added"]
    assert r["summary"].startswith("PCR 4 changed: EV_EFI_BOOT_SERVICES_APPLICATION") and "(added)" in r["summary"]


def test_log_that_does_not_replay_is_a_finding_without_drift():
    evs = boot_events()
    measured = pcrs_of(evs)
    edited = [dict(e) for e in evs]
    edited[2] = event(2, 7, "EV_EFI_VARIABLE_DRIVER_CONFIG", b"a db the TPM never saw", name="db")
    # PCRs equal the baseline, but the log now claims something else for PCR 7
    r = evaluate.evaluate(measured, log_of(edited), doc_of(evs))
    assert r["status"] == "log_does_not_replay" and r["findings"] == ["log_does_not_replay"]
    assert r["log_replays"] is False and r["pcr_drift"] == []
    assert [(m["bank"], m["pcr"]) for m in r["replay_mismatch"]] == [("sha1", 7), ("sha256", 7)]
    m = r["replay_mismatch"][1]
    assert m["tpm"] == measured["sha256"]["7"] and m["replayed"] == pcrs_of(edited)["sha256"]["7"]
    assert "does not replay to the TPM's PCR 7" in r["summary"]


def test_non_replaying_log_without_baseline_beats_no_baseline():
    evs = boot_events()
    r = evaluate.evaluate(pcrs_of(evs), log_of(evs[:-1]), None)
    assert r["status"] == "log_does_not_replay" and r["findings"] == ["log_does_not_replay", "no_baseline"]
    assert [m["pcr"] for m in r["replay_mismatch"]] == [7, 7]


def test_drift_wins_over_replay_finding():
    base, now = boot_events(), boot_events(db=b"other")
    r = evaluate.evaluate(pcrs_of(now), log_of(base), doc_of(base))
    assert r["status"] == "drift" and r["findings"] == ["drift", "log_does_not_replay"]


def test_baseline_without_log_host_with_log_and_vice_versa():
    evs = boot_events()
    r = evaluate.evaluate(pcrs_of(evs), log_of(evs), doc_of(evs, with_log=False))
    assert r["status"] == "ok" and "the host has an event log but the baseline has none" in r["notes"][0]
    now = boot_events(db=b"changed")
    r = evaluate.evaluate(pcrs_of(now), None, doc_of(evs))
    assert r["status"] == "drift" and r["log_replays"] is None and r["event_changes"] == []
    assert "the baseline has an event log but the host has none now" in r["notes"]
    assert "PCR 7 changed (sha1, sha256; no event log names the component)" in r["summary"]


def test_banks_on_one_side_are_noted_and_no_common_bank_is_drift():
    evs = boot_events()
    only256 = {"sha256": pcrs_of(evs)["sha256"]}
    r = evaluate.evaluate(only256, None, doc_of(evs, with_log=False))
    assert r["status"] == "ok" and r["notes"] == ["bank sha1 of the baseline was not measured"]
    assert "bank sha1 of the baseline was not measured" in r["summary"]
    doc = doc_of(evs, with_log=False)
    doc["pcrs"] = {"sha1": doc["pcrs"]["sha1"]}
    r = evaluate.evaluate(only256, None, doc)
    assert r["status"] == "drift" and "no PCR bank in common" in r["summary"]


def test_missing_pcr_in_measurement_is_drift():
    evs = boot_events()
    measured = pcrs_of(evs)
    del measured["sha256"]["5"]
    r = evaluate.evaluate(measured, None, doc_of(evs))
    assert r["status"] == "drift" and r["pcr_drift"] == [
        {"bank": "sha256", "pcr": 5, "baseline": pcrs_of(evs)["sha256"]["5"], "current": None}]


def test_bytes_and_int_keys_accepted():
    evs = boot_events()
    measured = dict((b, dict((int(k), bytes.fromhex(v)) for k, v in vals.items())) for b, vals in pcrs_of(evs).items())
    assert evaluate.evaluate(measured, log_of(evs), doc_of(evs))["status"] == "ok"
    with pytest.raises(SpireTpmError, match="no PCR values"):
        evaluate.evaluate({}, None, None)


def test_read_event_log_missing_required_empty_garbage(tmp_path):
    missing = str(tmp_path / "nope")
    assert evaluate.read_event_log(missing) is None
    with pytest.raises(SpireTpmError, match="does not exist.*Fix: mount securityfs"):
        evaluate.read_event_log(missing, required=True)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(SpireTpmError, match="is empty"):
        evaluate.read_event_log(str(empty))
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\xff\xfe not an event log at all" * 3)
    with pytest.raises(SpireTpmError) as err:
        evaluate.read_event_log(str(garbage))
    assert str(garbage) in err.value.message and "Fix:" in err.value.message
    with pytest.raises(SpireTpmError, match="cannot read the event log .*: Is a directory"):
        evaluate.read_event_log(str(tmp_path))
