"""tpm_boot_state and boot_state_baseline through ansible-playbook on swtpm.

The event logs are written by tests/support/eventlog_gen.py and their digests extended into a fresh swtpm with
tpm2_pcrextend; a "reboot" is a swtpm restart (TPM2_Startup(CLEAR) resets PCRs 0-7). PCR values are cross-checked
with tpm2_pcrread, never with our own reading code.
"""

import hashlib
import json
import os
import stat

import yaml

from support import eventlog_gen as gen

FQCN = "trustroot.spire_tpm."
BOOT_PCRS = list(range(8))


def pcrread(tpm, selection="sha1:0,1,2,3,4,5,6,7+sha256:0,1,2,3,4,5,6,7"):
    """{bank: {"idx": hex}} from tpm2_pcrread -T <tcti> (YAML; its 0x values read as ints)."""
    out = tpm.tool("tpm2_pcrread", "-T", tpm.tcti, selection).stdout
    sizes = {"sha1": 20, "sha256": 32}
    return dict((bank, dict((str(k), "%0*x" % (2 * sizes[bank], v)) for k, v in vals.items()))
                for bank, vals in yaml.safe_load(out).items())


def boot(tpm, log_path, events):
    """Write the log of ``events`` and extend its digests into the TPM, as firmware does during a boot."""
    log = gen.build_log(events)
    log_path.write_bytes(bytes(log))
    assert gen.extend_tpm(tpm.tcti, log) == len(events)
    return log


def measure_task(tcti, log_path, name="measure", baseline=None, **kw):
    args = {"tcti": tcti, "event_log_path": str(log_path)}
    if baseline is not None:
        args["baseline"] = baseline
    args.update(kw)
    return {"name": name, FQCN + "tpm_boot_state": args, "register": name}


def baseline_task(store, name="enrol", boot_state="{{ measure.boot_state }}", **kw):
    args = {"store_dir": str(store), "host": "node1", "boot_state": boot_state}
    args.update(kw)
    return {"name": name, FQCN + "boot_state_baseline": args, "delegate_to": "localhost", "register": name}


def query_task(store):
    return {"name": "query", FQCN + "boot_state_baseline": {"store_dir": str(store), "host": "node1",
                                                            "state": "query"},
            "delegate_to": "localhost", "register": "query"}


def test_enrol_drift_rebaseline_cycle(swtpm_factory, run_playbook, tmp_path):
    tpm = swtpm_factory(ek_certs=False)
    log_path = tmp_path / "binary_bios_measurements"
    store = tmp_path / "baselines"
    store_file = store / "node1.json"
    events = gen.default_boot_events()
    assert pcrread(tpm)["sha256"]["7"] == "00" * 32
    log1 = boot(tpm, log_path, events)
    pcrs1 = pcrread(tpm)

    # measured, no baseline yet: the log replays to the TPM's values
    res = run_playbook(tasks=[measure_task(tpm.tcti, log_path),
                              {"name": "fact", "ansible.builtin.debug": {"var": "tpm_boot_state"}}], expect_rc=0)
    m = res.task("measure")
    assert m["changed"] is False and m["banks"] == ["sha1", "sha256"]
    state = m["boot_state"]
    assert state["pcr_selection"] == BOOT_PCRS and state["pcrs"] == pcrs1
    assert state["event_log"]["path"] == str(log_path)
    assert state["event_log"]["sha256"] == hashlib.sha256(bytes(log1)).hexdigest()
    assert len(state["event_log"]["events"]) == len(events)
    assert state["event_log"]["spec"]["algorithms"] == {"sha1": 20, "sha256": 32}
    rep = m["report"]
    assert rep["status"] == "no_baseline" and rep["log_replays"] is True and rep["replay_mismatch"] == []
    fact = res.task("fact")["tpm_boot_state"]
    assert fact["status"] == "no_baseline" and fact["pcrs"] == pcrs1 and "no baseline enrolled" in fact["summary"]

    # enrolment in check mode writes nothing
    res = run_playbook(tasks=[measure_task(tpm.tcti, log_path), baseline_task(store, reason="initial enrolment")],
                       check=True, diff=True, expect_rc=0)
    e = res.task("enrol")
    assert e["changed"] is True and e["baseline_action"] == "created" and e["version"] == 1
    assert e["baseline"]["pcrs"] == pcrs1 and not store.exists()
    after = json.loads(e["diff"]["after"])
    assert e["diff"]["before"] == "" and after["pcrs"] == pcrs1 and after["event_log_events"] == len(events)

    # for real, then again: the second run changes nothing
    res = run_playbook(tasks=[measure_task(tpm.tcti, log_path), baseline_task(store, reason="initial enrolment"),
                              baseline_task(store, name="again", reason="initial enrolment")], expect_rc=0)
    e, again = res.task("enrol"), res.task("again")
    assert e["changed"] is True and e["version"] == 1 and e["path"] == str(store_file)
    assert again["changed"] is False and again["baseline_action"] == "unchanged" and again["version"] == 1
    assert stat.S_IMODE(store_file.stat().st_mode) == 0o640
    stored = json.loads(store_file.read_text())
    assert stored["current"] == 1 and stored["enforcement"] is None and len(stored["versions"]) == 1
    assert stored["versions"][0]["pcrs"] == pcrs1 and stored["versions"][0]["reason"] == "initial enrolment"
    assert stored["versions"][0]["by"] and stored["versions"][0]["host"] == "node1"
    enrolled_bytes = store_file.read_bytes()

    # evaluated against the enrolled baseline: ok
    res = run_playbook(tasks=[query_task(store), measure_task(tpm.tcti, log_path, baseline="{{ query.baseline }}")],
                       expect_rc=0)
    assert res.task("query")["version"] == 1 and res.task("query")["changed"] is False
    rep = res.task("measure")["report"]
    assert rep["status"] == "ok" and rep["baseline_version"] == 1 and rep["pcr_drift"] == [], rep

    # "reboot" with a new db (a certificate added): PCR 7 differs, log and TPM agree
    tpm.restart()
    assert pcrread(tpm)["sha256"]["7"] == "00" * 32
    new_db = gen.signature_list(gen.CERT_X509, [gen.fake_blob("db cert 1", 1000), gen.fake_blob("db cert 3", 1000)])
    events2 = gen.with_changed_variable(events, "db", new_db)
    boot(tpm, log_path, events2)
    pcrs2 = pcrread(tpm)
    assert pcrs2["sha256"]["7"] != pcrs1["sha256"]["7"] and pcrs2["sha256"]["4"] == pcrs1["sha256"]["4"]
    res = run_playbook(tasks=[query_task(store), measure_task(tpm.tcti, log_path, baseline="{{ query.baseline }}"),
                              baseline_task(store, reason="nobody said so"), ])
    assert res.rc != 0
    rep = res.task("measure")["report"]
    assert rep["status"] == "drift" and rep["log_replays"] is True, rep
    assert rep["pcr_drift"] == [
        {"bank": "sha1", "pcr": 7, "baseline": pcrs1["sha1"]["7"], "current": pcrs2["sha1"]["7"]},
        {"bank": "sha256", "pcr": 7, "baseline": pcrs1["sha256"]["7"], "current": pcrs2["sha256"]["7"]}]
    assert [(c["pcr"], c["type_name"], c["change"]) for c in rep["event_changes"]] == [
        (7, "EV_EFI_VARIABLE_DRIVER_CONFIG", "changed")]
    assert rep["summary"] == "PCR 7 changed: EV_EFI_VARIABLE_DRIVER_CONFIG db"
    assert res.task("measure")["ansible_facts"]["tpm_boot_state"]["status"] == "drift"
    refused = res.task("enrol")
    assert refused["failed"] is True
    assert "PCR 7 changed: EV_EFI_VARIABLE_DRIVER_CONFIG db;" in refused["msg"]
    assert "playbooks/rebaseline.yml" in refused["msg"] and "reason" in refused["msg"]
    assert "Traceback" not in refused["msg"] and store_file.read_bytes() == enrolled_bytes

    # the sanctioned re-baseline: version 2, history of 2
    res = run_playbook(tasks=[measure_task(tpm.tcti, log_path),
                              baseline_task(store, rebaseline=True, reason="db update CHG-42", by="carol")],
                       diff=True, expect_rc=0)
    e = res.task("enrol")
    assert e["changed"] is True and e["baseline_action"] == "rebaselined" and e["version"] == 2
    assert [(h["version"], h["by"], h["reason"]) for h in e["history"]] == [
        (1, stored["versions"][0]["by"], "initial enrolment"), (2, "carol", "db update CHG-42")]
    assert json.loads(e["diff"]["before"])["pcrs"] == pcrs1 and json.loads(e["diff"]["after"])["pcrs"] == pcrs2
    stored2 = json.loads(store_file.read_text())
    assert stored2["current"] == 2 and stored2["versions"][0] == stored["versions"][0]
    assert stored2["versions"][1]["pcrs"] == pcrs2 and stat.S_IMODE(store_file.stat().st_mode) == 0o640

    res = run_playbook(tasks=[query_task(store), measure_task(tpm.tcti, log_path, baseline="{{ query.baseline }}")],
                       expect_rc=0)
    assert len(res.task("query")["history"]) == 2
    rep = res.task("measure")["report"]
    assert rep["status"] == "ok" and rep["baseline_version"] == 2, rep

    # a log edited after boot (dbx changed in the file only) no longer replays: a finding without drift
    edited = tmp_path / "edited.bin"
    edited.write_bytes(bytes(gen.build_log(gen.with_changed_variable(events2, "dbx", b"\x00" * 76))))
    res = run_playbook(tasks=[query_task(store), measure_task(tpm.tcti, edited, baseline="{{ query.baseline }}")],
                       expect_rc=0)
    rep = res.task("measure")["report"]
    assert rep["status"] == "log_does_not_replay" and rep["findings"] == ["log_does_not_replay"], rep
    assert rep["log_replays"] is False and rep["pcr_drift"] == []
    assert rep["replay_mismatch"] == [
        {"bank": "sha1", "pcr": 7, "replayed": rep["replay_mismatch"][0]["replayed"], "tpm": pcrs2["sha1"]["7"]},
        {"bank": "sha256", "pcr": 7, "replayed": rep["replay_mismatch"][1]["replayed"], "tpm": pcrs2["sha256"]["7"]}]
    assert rep["replay_mismatch"][1]["replayed"] != pcrs2["sha256"]["7"]
    assert "does not replay to the TPM's PCR 7" in rep["summary"]
    assert tpm.transient_handles() == []


def test_no_log_required_log_bad_log_and_bad_inputs(swtpm, run_playbook, tmp_path):
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\xde\xad\xbe\xef" * 10)
    truncated = tmp_path / "truncated.bin"
    log = gen.build_log()
    truncated.write_bytes(gen.truncated(log, 5))
    missing = tmp_path / "no-such-log"
    store = tmp_path / "store"
    store.mkdir()
    bad_store = store / "node1.json"
    bad_store.write_bytes(b'{"schema": 1, "host": "node1", "versions": [{"pcrs": {"sha256": {"0": "\xff"}}}')
    baseline_file = tmp_path / "pcrs.bin"
    baseline_file.write_bytes(b"\x00\x01\xfe\xff binary, not a baseline")
    tasks = [
        measure_task(swtpm.tcti, missing, name="nolog", pcrs=[0, 7], banks=["sha256"]),
        dict(measure_task(swtpm.tcti, missing, name="required", event_log_required=True), ignore_errors=True),
        dict(measure_task(swtpm.tcti, garbage, name="garbage"), ignore_errors=True),
        dict(measure_task(swtpm.tcti, truncated, name="truncated"), ignore_errors=True),
        dict(measure_task(swtpm.tcti, missing, name="pcr24", pcrs=[3, 24]), ignore_errors=True),
        dict(measure_task(swtpm.tcti, missing, name="badbaseline", baseline={"schema": 1, "pcrs": {}}),
             ignore_errors=True),
        dict(baseline_task(store, name="corrupt", boot_state="{{ nolog.boot_state }}", reason="r"),
             ignore_errors=True),
        dict(baseline_task(tmp_path / "s2", name="badhost", boot_state="{{ nolog.boot_state }}", reason="r"),
             ignore_errors=True),
        {"name": "pcrfacts", FQCN + "tpm_pcr_facts": {"tcti": swtpm.tcti, "baseline_file": str(baseline_file)},
         "ignore_errors": True},
    ]
    tasks[7][FQCN + "boot_state_baseline"]["host"] = "../../etc/x"
    res = run_playbook(tasks=tasks)
    nolog = res.task("nolog")
    assert nolog["boot_state"]["event_log"] is None and nolog["report"]["log_replays"] is None
    assert nolog["boot_state"]["pcrs"] == pcrread(swtpm, "sha256:0,7")
    assert nolog["report"]["status"] == "no_baseline"
    msgs = dict((n, res.task(n).get("msg", "")) for n in
                ("required", "garbage", "truncated", "pcr24", "badbaseline", "corrupt", "badhost", "pcrfacts"))
    for name, msg in msgs.items():
        assert res.task(name)["failed"] is True, name
        assert "Traceback" not in msg and "Fix:" in msg, (name, msg)
    assert "%s does not exist" % missing in msgs["required"]
    assert str(garbage) in msgs["garbage"]
    assert str(truncated) in msgs["truncated"] and "truncated" in msgs["truncated"]
    assert "PCR index out of range: 24" in msgs["pcr24"]
    assert "baseline: host must be text, got None" in msgs["badbaseline"]
    assert str(bad_store) in msgs["corrupt"] and "not UTF-8" in msgs["corrupt"]
    assert "cannot name a baseline file" in msgs["badhost"] and not (tmp_path / "s2").exists()
    assert "is not UTF-8 text" in msgs["pcrfacts"] and str(baseline_file) in msgs["pcrfacts"]
    assert "UnicodeDecodeError" not in msgs["pcrfacts"]
    assert os.listdir(str(store)) == ["node1.json"]
    assert swtpm.transient_handles() == []


def test_baseline_copy_path_reads_the_hosts_copy_and_evaluates_as_the_explicit_options(swtpm_factory, run_playbook,
                                                                                      tmp_path):
    """devid_provision's gate in one call: tpm_boot_state reads the host's baseline copy (as the boot_state role
    writes it) and gives the report the explicit options (the copy's baseline, PCR selection, banks and event log
    path) give; no copy: nothing measured."""
    tpm = swtpm_factory(ek_certs=False)
    log_path = tmp_path / "binary_bios_measurements"
    store = tmp_path / "baselines"
    events = gen.default_boot_events()
    boot(tpm, log_path, events)
    run_playbook(tasks=[measure_task(tpm.tcti, log_path), baseline_task(store, reason="initial enrolment")],
                 expect_rc=0)
    doc = json.loads((store / "node1.json").read_text())["versions"][0]
    copy_path = tmp_path / "boot-state" / "baseline.json"
    copy_path.parent.mkdir()
    host_copy = {"schema": 1, "host": "node1", "written_by": "trustroot.spire_tpm.boot_state", "policy": "block",
                 "gate": "enforce", "enforce_on": ["drift"], "event_log_path": str(log_path), "blocked": None,
                 "baseline": doc}
    copy_path.write_text(json.dumps(host_copy, indent=2, sort_keys=True) + "\n")
    missing = tmp_path / "boot-state" / "none.json"
    not_json = tmp_path / "boot-state" / "garbage.json"
    not_json.write_text("{not json")
    no_baseline = tmp_path / "boot-state" / "empty.json"
    no_baseline.write_text('{"gate": "enforce"}')

    def from_copy(name, path, **kw):
        return {"name": name, FQCN + "tpm_boot_state": dict({"tcti": tpm.tcti, "baseline_copy_path": str(path)}, **kw),
                "register": name}

    explicit = measure_task(tpm.tcti, log_path, name="explicit", baseline=doc, pcrs=doc["pcr_selection"],
                            banks=sorted(doc["pcrs"]))
    res = run_playbook(tasks=[from_copy("copy", copy_path), explicit, from_copy("nocopy", missing),
                              dict(from_copy("garbage", not_json), ignore_errors=True),
                              dict(from_copy("nobaseline", no_baseline), ignore_errors=True),
                              dict(from_copy("both", copy_path, pcrs=[0, 7]), ignore_errors=True)])
    c, e = res.task("copy"), res.task("explicit")
    assert c["changed"] is False and c["report"]["status"] == "ok" and c["report"]["baseline_version"] == 1
    assert c["report"] == e["report"] and c["boot_state"] == e["boot_state"] and c["banks"] == e["banks"]
    assert c["ansible_facts"]["tpm_boot_state"]["status"] == "ok"
    assert c["baseline_copy"] == dict((k, v) for k, v in host_copy.items() if k != "baseline")
    nocopy = res.task("nocopy")
    assert nocopy["changed"] is False and nocopy["baseline_copy"] is None
    assert "report" not in nocopy and "boot_state" not in nocopy and "ansible_facts" not in nocopy
    for name, text in (("garbage", "is not JSON"), ("nobaseline", "holds no baseline"),
                       ("both", "mutually exclusive")):
        t = res.task(name)
        assert t["failed"] is True and text in t["msg"] and "Traceback" not in t["msg"], (name, t["msg"])

    # a "reboot" with a new db: the copy's gate sees the drift, as the explicit options do
    tpm.restart()
    new_db = gen.signature_list(gen.CERT_X509, [gen.fake_blob("db cert 1", 1000), gen.fake_blob("db cert 3", 1000)])
    boot(tpm, log_path, gen.with_changed_variable(events, "db", new_db))
    res = run_playbook(tasks=[from_copy("copy", copy_path), explicit], expect_rc=0)
    c, e = res.task("copy"), res.task("explicit")
    assert c["report"]["status"] == "drift" and c["report"]["findings"][0] == "drift"
    assert c["report"] == e["report"]
    assert c["report"]["summary"] == "PCR 7 changed: EV_EFI_VARIABLE_DRIVER_CONFIG db"
    assert tpm.transient_handles() == []
