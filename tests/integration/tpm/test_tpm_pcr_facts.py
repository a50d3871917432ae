"""tpm_pcr_facts through ansible-playbook on swtpm; values cross-checked with tpm2_pcrread."""

import json

import yaml

EVENT_A = "a" * 64
EVENT_B = "b" * 64


def pcrread(tpm, selection):
    """{bank: {index: hex}} as tpm2_pcrread prints it (YAML; its 0x values read as ints)."""
    out = tpm.tool("tpm2_pcrread", selection).stdout
    data = yaml.safe_load(out)
    result = {}
    for bank, vals in data.items():
        size = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}[bank]
        result[bank] = dict((str(k), "%0*x" % (2 * size, v)) for k, v in (vals or {}).items())
    return result


def facts(task):
    return task["ansible_facts"]["tpm_pcrs"]


def test_all_banks_all_pcrs_match_tpm2_pcrread(swtpm, run_playbook):
    swtpm.tool("tpm2_pcrextend", "16:sha256=%s,sha1=%s" % (EVENT_A, "a" * 40))
    swtpm.tool("tpm2_pcrextend", "23:sha256=%s" % EVENT_B)
    res = run_playbook(tasks=[{"name": "pcrs", "trustroot.spire_tpm.tpm_pcr_facts": {"tcti": swtpm.tcti}},
                              {"name": "echo", "ansible.builtin.debug": {"var": "tpm_pcrs"}}], expect_rc=0)
    r = res.task("pcrs")
    assert r["changed"] is False
    got = facts(r)
    assert sorted(got) == ["sha1", "sha256"] == r["banks"] == r["allocated_banks"]
    expected = pcrread(swtpm, "sha1:all+sha256:all")
    assert got == expected
    assert len(got["sha256"]) == 24 and got["sha256"]["16"] != "00" * 32
    assert got["sha256"]["16"] == got["sha256"]["16"].lower()
    # the fact is set for later tasks
    assert res.task("echo")["tpm_pcrs"] == got
    assert r["drift"] == [] and r["matches_baseline"] is None
    assert swtpm.transient_handles() == []


def test_selected_bank_and_pcrs_check_mode(swtpm, run_playbook):
    res = run_playbook(tasks=[{"name": "pcrs", "trustroot.spire_tpm.tpm_pcr_facts": {
        "tcti": swtpm.tcti, "banks": ["sha256"], "pcrs": [23, 0, 16, 7]}}], check=True, expect_rc=0)
    r = res.task("pcrs")
    assert list(facts(r)) == ["sha256"] and sorted(facts(r)["sha256"], key=int) == ["0", "7", "16", "23"]
    assert facts(r) == pcrread(swtpm, "sha256:0,7,16,23")
    assert r["changed"] is False


def test_baseline_drift(swtpm, run_playbook, tmp_path):
    swtpm.tool("tpm2_pcrextend", "10:sha256=%s" % EVENT_A)
    first = run_playbook(tasks=[{"name": "pcrs", "trustroot.spire_tpm.tpm_pcr_facts": {"tcti": swtpm.tcti}}],
                         expect_rc=0).task("pcrs")
    baseline = facts(first)
    before10 = baseline["sha256"]["10"]
    swtpm.tool("tpm2_pcrextend", "10:sha256=%s" % EVENT_B)
    after10 = pcrread(swtpm, "sha256:10")["sha256"]["10"]
    assert after10 != before10

    bfile = tmp_path / "baseline.json"
    bfile.write_text(json.dumps(baseline))
    # tpm2_pcrread's own output is accepted as baseline file, it must match the current state
    current = tmp_path / "current.yaml"
    current.write_text(swtpm.tool("tpm2_pcrread", "sha256:0,10,16").stdout)
    tasks = [
        {"name": "inline", "trustroot.spire_tpm.tpm_pcr_facts": {"tcti": swtpm.tcti, "baseline": baseline}},
        {"name": "file", "trustroot.spire_tpm.tpm_pcr_facts": {"tcti": swtpm.tcti, "baseline_file": str(bfile),
                                                               "banks": ["sha256"], "pcrs": [0]}},
        {"name": "pcrread_file", "trustroot.spire_tpm.tpm_pcr_facts": {"tcti": swtpm.tcti,
                                                                       "baseline_file": str(current)}},
    ]
    res = run_playbook(tasks=tasks, expect_rc=0)
    for name in ("inline", "file"):
        r = res.task(name)
        assert r["matches_baseline"] is False
        # only the sha256 PCR 10 moved; sha1 10 was not extended
        assert r["drift"] == [{"bank": "sha256", "pcr": 10, "expected": before10, "actual": after10}]
    # baseline PCRs outside pcrs/banks are read for the comparison but not reported as facts
    assert list(facts(res.task("file"))) == ["sha256"] and list(facts(res.task("file"))["sha256"]) == ["0"]
    assert res.task("pcrread_file")["matches_baseline"] is True and res.task("pcrread_file")["drift"] == []
    assert swtpm.transient_handles() == []


def test_errors(swtpm, run_playbook, tmp_path):
    from support.swtpm import dead_socket_tcti
    dead = dead_socket_tcti(tmp_path)
    tasks = [
        {"name": "badpcr", "trustroot.spire_tpm.tpm_pcr_facts": {"tcti": swtpm.tcti, "pcrs": [3, 24]},
         "ignore_errors": True},
        {"name": "badbank", "trustroot.spire_tpm.tpm_pcr_facts": {"tcti": swtpm.tcti, "banks": ["sha384"]},
         "ignore_errors": True},
        {"name": "badbaselinebank", "trustroot.spire_tpm.tpm_pcr_facts": {
            "tcti": swtpm.tcti, "baseline": {"sha512": {"0": "00" * 64}}}, "ignore_errors": True},
        {"name": "badhex", "trustroot.spire_tpm.tpm_pcr_facts": {
            "tcti": swtpm.tcti, "baseline": {"sha256": {"0": "xyz"}}}, "ignore_errors": True},
        {"name": "both", "trustroot.spire_tpm.tpm_pcr_facts": {
            "tcti": swtpm.tcti, "baseline": {}, "baseline_file": "/nonexistent"}, "ignore_errors": True},
        {"name": "dead", "trustroot.spire_tpm.tpm_pcr_facts": {"tcti": dead},
         "ignore_errors": True},
        {"name": "notpm", "trustroot.spire_tpm.tpm_pcr_facts": {}, "ignore_errors": True},
    ]
    res = run_playbook(tasks=tasks, env={"TPM2TOOLS_TCTI": "", "TCTI": ""})
    assert "PCR index out of range: 24" in res.task("badpcr")["msg"] and "0 to 23" in res.task("badpcr")["msg"]
    m = res.task("badbank")["msg"]
    assert "'sha384' is not allocated" in m and "sha1, sha256" in m
    assert "'sha512' is not allocated" in res.task("badbaselinebank")["msg"]
    assert "not hexadecimal" in res.task("badhex")["msg"]
    assert "mutually exclusive" in res.task("both")["msg"]
    assert "nobody-serves-this.sock (TCTI %r) does not exist" % dead in res.task("dead")["msg"]
    assert "no TPM found" in res.task("notpm")["msg"]
    for name in ("badpcr", "badbank", "badbaselinebank", "badhex", "both", "dead", "notpm"):
        assert res.task(name)["failed"] is True
        assert "Traceback" not in res.task(name)["msg"]
    assert swtpm.transient_handles() == []


def test_environment_tcti_is_used(swtpm, run_playbook):
    """No tcti option: TPM2TOOLS_TCTI of the task environment selects the TPM (documented order)."""
    res = run_playbook(tasks=[{"name": "pcrs", "trustroot.spire_tpm.tpm_pcr_facts": {"pcrs": [0]},
                               "environment": {"TPM2TOOLS_TCTI": swtpm.tcti}}],
                       env={"TPM2TOOLS_TCTI": "", "TCTI": ""}, expect_rc=0)
    assert res.task("pcrs")["tcti"] == swtpm.tcti
