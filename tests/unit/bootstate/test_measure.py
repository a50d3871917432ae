"""bootstate/measure.py: tpm_boot_state's logic split in prepare() (no TPM) and measure(tpm, plan), shared with
devid_state. The PCR read itself is pcr.read_values (tests/unit/tpm); here a stand-in returns fixed values, and the
module through ansible-playbook on swtpm is checked against tpm2_pcrread in tests/integration/bootstate."""

import json

import pytest

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.bootstate import baseline as bs
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.bootstate import measure
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError

PCRS = {"sha256": {"0": "00" * 32, "7": "07" * 32}}


def baseline_doc(tmp_path):
    store = tmp_path / "store"
    bs.enrol(str(store), "node1", {"pcr_selection": [0, 7], "pcrs": PCRS, "event_log": None}, by="t", reason="r")
    return json.loads((store / "node1.json").read_text())["versions"][0]


def write_copy(tmp_path, event_log_path=None, **extra):
    copy = {"schema": 1, "host": "node1", "gate": "enforce", "enforce_on": ["drift"], "blocked": None,
            "event_log_path": event_log_path or str(tmp_path / "no-event-log"), "baseline": baseline_doc(tmp_path)}
    copy.update(extra)
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(copy))
    return path, copy


class FakeTPM:
    tcti_string = "cmd:fake"


@pytest.fixture
def pcr_values(monkeypatch):
    """measure()'s PCR read replaced: returns ``state["values"]`` and records what was asked."""
    state = {"values": json.loads(json.dumps(PCRS)), "asked": []}

    def read_values(tpm, banks, pcrs):
        state["asked"].append((tpm, banks, sorted(pcrs)))
        return state["values"], sorted(state["values"])
    monkeypatch.setattr(measure.pcr_utils, "read_values", read_values)
    return state


def test_prepare_without_a_copy_on_disk_is_none(tmp_path):
    assert measure.prepare(baseline_copy_path=str(tmp_path / "none.json")) is None


@pytest.mark.parametrize("raw, match", [(b"{not json", "is not JSON"), (b'{"gate": "enforce"}', "holds no baseline"),
                                        (b'{"baseline": {"version": 1}}', "baseline")])
def test_prepare_refuses_a_malformed_copy(tmp_path, raw, match):
    path = tmp_path / "baseline.json"
    path.write_bytes(raw)
    with pytest.raises(SpireTpmError, match=match):
        measure.prepare(baseline_copy_path=str(path))


def test_prepare_takes_selection_banks_and_event_log_from_the_copy(tmp_path):
    path, copy = write_copy(tmp_path)
    plan = measure.prepare(baseline_copy_path=str(path))
    assert plan["pcrs"] == [0, 7] and plan["banks"] == ["sha256"] and plan["event_log"] is None
    assert plan["baseline_doc"]["version"] == 1
    assert plan["baseline_copy"] == dict((k, v) for k, v in copy.items() if k != "baseline")
    # the copy's event_log_path is the one read (an empty log there is an error naming it)
    empty = tmp_path / "empty-log"
    empty.write_bytes(b"")
    path, _ = write_copy(tmp_path, event_log_path=str(empty))
    with pytest.raises(SpireTpmError, match="the event log %s is empty" % empty):
        measure.prepare(baseline_copy_path=str(path))


def test_prepare_with_explicit_options(tmp_path):
    plan = measure.prepare(event_log_path=str(tmp_path / "none"))
    assert plan["pcrs"] == list(range(8)) and plan["banks"] is None and plan["baseline_doc"] is None
    assert "baseline_copy" not in plan
    with pytest.raises(SpireTpmError, match="event log"):
        measure.prepare(event_log_path=str(tmp_path / "none"), event_log_required=True)
    with pytest.raises(SpireTpmError, match="24"):
        measure.prepare(pcrs=[24], event_log_path=str(tmp_path / "none"))


def test_measure_reports_ok_then_drift(tmp_path, pcr_values):
    path, copy = write_copy(tmp_path)
    plan = measure.prepare(baseline_copy_path=str(path))
    tpm = FakeTPM()
    res = measure.measure(tpm, plan)
    assert pcr_values["asked"] == [(tpm, ["sha256"], [0, 7])]
    assert sorted(res) == ["ansible_facts", "banks", "baseline_copy", "boot_state", "report", "tcti"]
    assert res["report"]["status"] == "ok" and res["report"]["baseline_version"] == 1
    assert res["boot_state"] == {"pcr_selection": [0, 7], "pcrs": PCRS, "event_log": None}
    assert res["tcti"] == "cmd:fake" and res["banks"] == ["sha256"]
    assert res["ansible_facts"]["tpm_boot_state"]["status"] == "ok"
    pcr_values["values"]["sha256"]["7"] = "08" * 32
    res = measure.measure(tpm, plan)
    assert res["report"]["status"] == "drift"
    assert res["report"]["pcr_drift"] == [{"bank": "sha256", "pcr": 7, "baseline": "07" * 32, "current": "08" * 32}]


def test_measure_returns_only_the_selection(tmp_path, pcr_values):
    pcr_values["values"] = {"sha256": {"0": "00" * 32, "1": "01" * 32, "7": "07" * 32}}
    plan = measure.prepare(pcrs=[0, 1], event_log_path=str(tmp_path / "none"))
    res = measure.measure(FakeTPM(), plan)
    assert res["boot_state"]["pcrs"] == {"sha256": {"0": "00" * 32, "1": "01" * 32}}
    assert res["report"]["status"] == "no_baseline" and "baseline_copy" not in res


def test_boot_state_without_a_copy_opens_no_tpm(tmp_path, monkeypatch):
    def no_tpm(tcti):
        raise AssertionError("the TPM was opened")
    monkeypatch.setattr(measure, "open_tpm", no_tpm)
    assert measure.boot_state(None, baseline_copy_path=str(tmp_path / "none.json")) == {"baseline_copy": None}
