"""baseline.py: the store (enrol, idempotence, refusal, re-baseline with history), every kind of bad store file,
host names, and tpm_pcr_facts' baseline_file errors (pcr.load_baseline_file)."""

import hashlib
import json
import os
import stat

import pytest

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.bootstate import baseline as bs
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import pcr

SELECTION = list(range(8))


def event(index, pcr_index, data, name=None, type_name="EV_EFI_VARIABLE_DRIVER_CONFIG"):
    return {"index": index, "pcr": pcr_index, "type": 0x80000001, "type_name": type_name,
            "digests": {"sha1": hashlib.sha1(data).hexdigest(), "sha256": hashlib.sha256(data).hexdigest()},
            "data_size": len(data), "data_sha256": hashlib.sha256(data).hexdigest(),
            "decoded": {"name": name or "var", "guid": "d719b2cb-3d3a-4596-a3bc-dad00e67656f"}}


def measured(pcr7=b"\x07", db=b"db-1", extra_events=()):
    events = [event(0, 7, db, "db"), event(1, 7, b"sep", "separator")] + list(extra_events)
    pcrs = {}
    for bank, size in (("sha1", 20), ("sha256", 32)):
        pcrs[bank] = dict((str(i), ("%02x" % i) * size) for i in SELECTION)
        pcrs[bank]["7"] = hashlib.new(bank, pcr7).hexdigest()
    return {"pcr_selection": SELECTION, "pcrs": pcrs,
            "event_log": {"path": "/sys/kernel/security/tpm0/binary_bios_measurements", "sha256": "cd" * 32,
                          "spec": {"algorithms": {"sha1": 20, "sha256": 32}}, "events": events}}


def write_store(store_dir, host, data):
    path = os.path.join(str(store_dir), host + ".json")
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else json.dumps(data).encode())
    return path


def enrolled(tmp_path, host="node1"):
    bs.enrol(str(tmp_path), host, measured(), by="alice", reason="initial enrolment")
    with open(bs.store_path(str(tmp_path), host), "rb") as f:
        return json.loads(f.read())


# ---------------------------------------------------------------------------------------------------------------
# enrol / re-baseline
# ---------------------------------------------------------------------------------------------------------------
def test_first_enrolment_writes_version_one(tmp_path):
    store_dir = tmp_path / "store"   # created on first use
    r = bs.enrol(str(store_dir), "node1.example.org", measured(), by="alice", reason="initial enrolment",
                 now="2024-05-01T12:00:00Z")
    path = store_dir / "node1.example.org.json"
    assert r["changed"] is True and r["baseline_action"] == "created" and r["version"] == 1
    assert r["path"] == str(path) and r["before"] is None and r["after"]["event_log_events"] == 2
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert stat.S_IMODE(store_dir.stat().st_mode) == 0o750
    data = json.loads(path.read_text())
    assert sorted(data) == ["current", "enforcement", "host", "schema", "versions"]
    assert data["schema"] == 1 and data["host"] == "node1.example.org" and data["current"] == 1
    assert data["enforcement"] is None and len(data["versions"]) == 1
    doc = data["versions"][0]
    assert doc["version"] == 1 and doc["created"] == "2024-05-01T12:00:00Z" and doc["by"] == "alice"
    assert doc["reason"] == "initial enrolment" and doc["pcr_selection"] == SELECTION
    assert doc["pcrs"] == measured()["pcrs"] and doc["event_log"] == measured()["event_log"]
    assert r["baseline"] == doc
    assert r["history"] == [{"version": 1, "created": "2024-05-01T12:00:00Z", "by": "alice",
                             "reason": "initial enrolment"}]


def test_created_timestamp_is_utc_iso(tmp_path):
    r = bs.enrol(str(tmp_path), "n", measured(), by="a", reason="r")
    assert len(r["baseline"]["created"]) == 20 and r["baseline"]["created"].endswith("Z")
    assert r["baseline"]["created"][4] == "-" and r["baseline"]["created"][10] == "T"


def test_same_boot_state_again_changes_nothing(tmp_path):
    bs.enrol(str(tmp_path), "node1", measured(), by="alice", reason="initial")
    path = bs.store_path(str(tmp_path), "node1")
    before = open(path, "rb").read()
    st = os.stat(path)
    r = bs.enrol(str(tmp_path), "node1", measured(), by="bob", reason="again")
    assert r["changed"] is False and r["baseline_action"] == "unchanged" and r["version"] == 1
    assert r["baseline"]["by"] == "alice" and r["before"] == r["after"]
    assert open(path, "rb").read() == before and os.stat(path).st_mtime_ns == st.st_mtime_ns


def test_log_path_and_events_outside_the_selection_do_not_make_a_new_baseline(tmp_path):
    bs.enrol(str(tmp_path), "node1", measured(), by="alice", reason="initial")
    later = measured(extra_events=[event(2, 9, b"kernel 6.9 command line", "cmdline")])
    later["event_log"]["path"] = "/tmp/copy-of-the-log"
    later["event_log"]["sha256"] = "ef" * 32
    assert bs.enrol(str(tmp_path), "node1", later, by="a", reason="r")["changed"] is False


def test_different_boot_state_is_refused_and_the_file_kept(tmp_path):
    bs.enrol(str(tmp_path), "node1", measured(), by="alice", reason="initial")
    path = bs.store_path(str(tmp_path), "node1")
    before = open(path, "rb").read()
    with pytest.raises(SpireTpmError) as err:
        bs.enrol(str(tmp_path), "node1", measured(pcr7=b"new", db=b"db-2"), by="mallory", reason="sneaky")
    msg = err.value.message
    assert "differs from its baseline (version 1" in msg and "PCR 7 changed" in msg
    assert "PCR 7 changed: EV_EFI_VARIABLE_DRIVER_CONFIG db;" in msg
    assert "playbooks/rebaseline.yml" in msg and "reason" in err.value.fix
    assert err.value.details["version"] == 1
    assert err.value.details["differences"] == ["PCR 7 changed: EV_EFI_VARIABLE_DRIVER_CONFIG db"]
    assert open(path, "rb").read() == before


def test_rebaseline_needs_a_reason(tmp_path):
    bs.enrol(str(tmp_path), "node1", measured(), by="alice", reason="initial")
    for reason in (None, "", "   "):
        with pytest.raises(SpireTpmError, match="needs a reason"):
            bs.enrol(str(tmp_path), "node1", measured(pcr7=b"new"), by="a", reason=reason, rebaseline=True)


def test_rebaseline_appends_a_version_and_keeps_history_and_enforcement(tmp_path):
    data = enrolled(tmp_path)
    data["enforcement"] = {"state": "blocked", "since": "2024-05-02T00:00:00Z"}
    write_store(tmp_path, "node1", data)
    v1 = data["versions"][0]
    r = bs.enrol(str(tmp_path), "node1", measured(pcr7=b"new", db=b"db-2"), by="carol",
                 reason="BIOS 1.22 (change 4711)", rebaseline=True, now="2024-06-01T08:00:00Z")
    assert r["changed"] is True and r["baseline_action"] == "rebaselined" and r["version"] == 2
    assert r["before"]["version"] == 1 and r["after"]["version"] == 2
    assert r["before"]["pcrs"]["sha256"]["7"] != r["after"]["pcrs"]["sha256"]["7"]
    stored = json.loads(open(r["path"]).read())
    assert stored["current"] == 2 and stored["versions"][0] == v1
    assert stored["enforcement"] == {"state": "blocked", "since": "2024-05-02T00:00:00Z"}
    assert [h["version"] for h in r["history"]] == [1, 2]
    assert r["history"][1] == {"version": 2, "created": "2024-06-01T08:00:00Z", "by": "carol",
                               "reason": "BIOS 1.22 (change 4711)"}
    # the same new state again: nothing, and a re-baseline to an identical state is nothing too
    assert bs.enrol(str(tmp_path), "node1", measured(pcr7=b"new", db=b"db-2"), by="x", reason="y")["changed"] is False
    assert bs.enrol(str(tmp_path), "node1", measured(pcr7=b"new", db=b"db-2"), by="x", reason="y",
                    rebaseline=True)["changed"] is False
    assert len(bs.load(str(tmp_path), "node1")["versions"]) == 2


def test_check_mode_writes_nothing(tmp_path):
    store_dir = tmp_path / "store"
    r = bs.enrol(str(store_dir), "node1", measured(), by="a", reason="r", check_mode=True)
    assert r["changed"] is True and r["version"] == 1 and not store_dir.exists()
    bs.enrol(str(store_dir), "node1", measured(), by="a", reason="r")
    before = (store_dir / "node1.json").read_bytes()
    r = bs.enrol(str(store_dir), "node1", measured(pcr7=b"x"), by="a", reason="fw", rebaseline=True, check_mode=True)
    assert r["changed"] is True and r["version"] == 2 and (store_dir / "node1.json").read_bytes() == before


def test_modes(tmp_path):
    r = bs.enrol(str(tmp_path), "n", measured(), by="a", reason="r", mode="0600")
    assert stat.S_IMODE(os.stat(r["path"]).st_mode) == 0o600
    for bad in ("0644", "0660", "0400", "rw"):
        with pytest.raises(SpireTpmError):
            bs.enrol(str(tmp_path), "n", measured(), by="a", reason="r", mode=bad)


@pytest.mark.parametrize("host", ["../etc/passwd", "a/b", ".hidden", "..", "", "a b", "x\\y", None, "n\x00"])
def test_bad_host_names(tmp_path, host):
    with pytest.raises(SpireTpmError, match="cannot name a baseline file"):
        bs.enrol(str(tmp_path), host, measured(), by="a", reason="r")
    assert os.listdir(str(tmp_path)) == []


@pytest.mark.parametrize("host", ["node1", "node-1.example.org", "10.0.0.7", "fe80::1", "web_01", "user@box"])
def test_good_host_names(host):
    assert bs.check_host(host) == host


def test_query(tmp_path):
    r = bs.query(str(tmp_path), "node1")
    assert r["baseline"] is None and r["version"] is None and r["history"] == [] and r["changed"] is False
    enrolled(tmp_path)
    r = bs.query(str(tmp_path), "node1")
    assert r["version"] == 1 and r["baseline"]["reason"] == "initial enrolment" and r["enforcement"] is None


def test_current_document_of_a_store_or_a_document(tmp_path):
    data = enrolled(tmp_path)
    assert bs.current_document(data) == data["versions"][0]
    assert bs.current_document(data["versions"][0]) == data["versions"][0]


# ---------------------------------------------------------------------------------------------------------------
# bad store files: each a clear error, and enrol never overwrites them
# ---------------------------------------------------------------------------------------------------------------
def _mutations():
    def wrong_schema(d):
        d["schema"] = 2

    def unknown_bank(d):
        d["versions"][0]["pcrs"]["md5"] = d["versions"][0]["pcrs"].pop("sha1")

    def short_hex(d):
        d["versions"][0]["pcrs"]["sha256"]["3"] = "ab" * 20

    def not_hex(d):
        d["versions"][0]["pcrs"]["sha256"]["3"] = "zz" * 32

    def pcr_24(d):
        d["versions"][0]["pcrs"]["sha256"]["24"] = "00" * 32

    def missing_pcr(d):
        del d["versions"][0]["pcrs"]["sha1"]["5"]

    def selection_24(d):
        d["versions"][0]["pcr_selection"] = [0, 24]

    def other_host(d):
        d["host"] = "node2"

    def bad_current(d):
        d["current"] = 2

    def no_enforcement(d):
        del d["enforcement"]

    def event_bank(d):
        d["versions"][0]["event_log"]["events"][0]["digests"]["sha3_999"] = "00"

    def event_digest(d):
        d["versions"][0]["event_log"]["events"][0]["digests"]["sha1"] = "00" * 32

    def renumbered(d):
        d["versions"][0]["version"] = 2

    return [
        (wrong_schema, "schema 2 is not 1"),
        (unknown_bank, "unknown PCR bank 'md5'"),
        (short_hex, "40 hex digits, a sha256 digest has 64"),
        (not_hex, "not a lowercase hex sha256 digest"),
        (pcr_24, "PCR index 24 is outside 0-23"),
        (missing_pcr, r"pcrs.sha1 holds 7 PCR\(s\) \(0,1,2,3,4,6,7\) but pcr_selection is 0,1,2,3,4,5,6,7"),
        (selection_24, "PCR index 24 in pcr_selection is outside 0-23"),
        (other_host, "belongs to host 'node2', not 'node1'"),
        (bad_current, "current 2 names no stored version"),
        (no_enforcement, "enforcement key is missing"),
        (event_bank, "unknown PCR bank 'sha3_999'"),
        (event_digest, "64 hex digits, a sha1 digest has 40"),
        (renumbered, "must be numbered 1, 2"),
    ]


@pytest.mark.parametrize("mutate,match", _mutations(), ids=lambda x: getattr(x, "__name__", None))
def test_bad_store_content(tmp_path, mutate, match):
    data = enrolled(tmp_path)
    mutate(data)
    path = write_store(tmp_path, "node1", data)
    before = open(path, "rb").read()
    with pytest.raises(SpireTpmError, match=match) as err:
        bs.load(str(tmp_path), "node1")
    assert path in err.value.message and "Fix:" in err.value.message
    with pytest.raises(SpireTpmError, match=match):
        bs.enrol(str(tmp_path), "node1", measured(pcr7=b"new"), by="a", reason="fw", rebaseline=True)
    assert open(path, "rb").read() == before


@pytest.mark.parametrize("raw,match", [
    (b"", "the file is empty"),
    (b'{"schema": 1, "host": "node1", "current": 1, "vers', "not valid JSON .*truncated"),
    (b'{"schema": 1, "host": "caf\xe9"}', r"not UTF-8 text \(byte 0xe9 at offset 26\)"),
    (b"[1, 2]", "must be a JSON object, got list"),
])
def test_unreadable_store_files(tmp_path, raw, match):
    path = write_store(tmp_path, "node1", raw)
    with pytest.raises(SpireTpmError, match=match):
        bs.load(str(tmp_path), "node1")
    with pytest.raises(SpireTpmError, match=match):
        bs.enrol(str(tmp_path), "node1", measured(), by="a", reason="r")
    assert open(path, "rb").read() == raw


def test_truncated_real_store(tmp_path):
    enrolled(tmp_path)
    path = bs.store_path(str(tmp_path), "node1")
    raw = open(path, "rb").read()
    write_store(tmp_path, "node1", raw[:len(raw) // 2])
    with pytest.raises(SpireTpmError, match="not valid JSON"):
        bs.load(str(tmp_path), "node1")


def test_missing_store(tmp_path):
    with pytest.raises(SpireTpmError, match="no baseline is enrolled for host node1.*Fix: enrol the host"):
        bs.load(str(tmp_path), "node1")


@pytest.mark.parametrize("change,match", [
    (lambda m: m.update(pcr_selection=[0, 1]), r"holds 8 PCR\(s\)"),
    (lambda m: m.update(pcr_selection=[]), "non-empty list"),
    (lambda m: m["pcrs"].update(sha384={}), r"pcrs.sha384 holds 0 PCR\(s\) \(none\)"),
    (lambda m: m["pcrs"]["sha1"].update({"7": "00"}), "2 hex digits, a sha1 digest has 40"),
    (lambda m: m["event_log"].update(sha256="nope"), "is not 64 lowercase hex digits"),
    (lambda m: m["event_log"].pop("events"), "event_log lacks events"),
    (lambda m: m["event_log"]["events"][0].update(pcr=30), "PCR index 30 is outside 0-23"),
])
def test_bad_measured_boot_state(tmp_path, change, match):
    m = measured()
    change(m)
    with pytest.raises(SpireTpmError, match=match) as err:
        bs.enrol(str(tmp_path), "node1", m, by="a", reason="r")
    assert "tpm_boot_state" in err.value.fix
    assert os.listdir(str(tmp_path)) == []


# ---------------------------------------------------------------------------------------------------------------
# tpm_pcr_facts' baseline_file: every bad file a clear error (it used to be a bare UnicodeDecodeError)
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw,match", [
    (b"\x03\x00\x00\x00\xff\xfeSpec ID Event03", r"is not UTF-8 text \(byte 0xff at offset 4\)"),
    (b"sha256:\n  '0': caf\xe9\n", "is not UTF-8 text"),
    (b"", "is empty"),
    (b"   \n", "is empty"),
    (b"- a\n- b\n", "holds a list, not a mapping of PCR banks"),
    (b"just some words", "holds a str, not a mapping"),
    (b"sha256: [\n", "neither JSON nor YAML"),
    (b'{"sha256": {"0": "abc"}}', "baseline_file .*: baseline sha256 PCR 0: 'abc' is not hexadecimal"),
])
def test_pcr_baseline_file_errors(tmp_path, raw, match):
    f = tmp_path / "baseline.bin"
    f.write_bytes(raw)
    with pytest.raises(SpireTpmError, match=match) as err:
        pcr.load_baseline_file(str(f))
    assert str(f) in err.value.message and err.value.fix


def test_pcr_baseline_file_directory(tmp_path):
    with pytest.raises(SpireTpmError, match="cannot read baseline_file .*Is a directory"):
        pcr.load_baseline_file(str(tmp_path))


# ---------------------------------------------------------------------------------------------------------------
# the host's copy (devid_provision's gate via tpm_boot_state baseline_copy_path, and the renewal job)
# ---------------------------------------------------------------------------------------------------------------
def test_host_copy_missing_is_none(tmp_path):
    assert bs.read_host_copy(str(tmp_path / "baseline.json")) is None


def test_host_copy_is_read_as_written(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    copy = {"schema": 1, "host": "node1", "gate": "enforce", "enforce_on": ["drift"], "blocked": None,
            "event_log_path": "/sys/kernel/security/tpm0/binary_bios_measurements",
            "baseline": enrolled(store)["versions"][0]}
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(copy, indent=2, sort_keys=True) + "\n")
    assert bs.read_host_copy(str(path)) == copy
    assert bs.current_document(bs.read_host_copy(str(path))["baseline"])["version"] == 1


@pytest.mark.parametrize("raw, match", [
    (b"{not json", "is not JSON"),
    (b"\xff\xfe", "is not JSON"),
    (b'["baseline"]', "holds no baseline"),
    (b'{"gate": "enforce"}', "holds no baseline"),
])
def test_bad_host_copies(tmp_path, raw, match):
    path = tmp_path / "baseline.json"
    path.write_bytes(raw)
    with pytest.raises(SpireTpmError, match=match) as err:
        bs.read_host_copy(str(path))
    assert str(path) in str(err.value) and err.value.fix


def test_host_copy_that_is_a_directory(tmp_path):
    with pytest.raises(SpireTpmError, match="cannot read the boot-state baseline copy"):
        bs.read_host_copy(str(tmp_path))
