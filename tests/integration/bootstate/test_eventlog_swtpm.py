"""bootstate/eventlog.py against two independent oracles: tpm2_eventlog (parsing and replay) and a software TPM
extended with the log's digests (tpm2_pcrextend, read back with tpm2_pcrread).

Known oracle limitation: tpm2-tools 5.4 (Debian bookworm) extends EV_NO_ACTION records into the PCRs and has no
StartupLocality support (both fixed upstream in 2023), so its PCR 0 is wrong for a log with a StartupLocality
event. For that case the oracle is a swtpm started at locality 3 (TPM2_Startup sent at locality 3 through the
control channel: PCR 0 then starts as 00…03, as on a platform with an H-CRTM / TXT start).
"""

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.bootstate import eventlog
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.bootstate import eventlog_compare
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import pcr as pcrmod
from support import eventlog_gen as gen

BANKS = ("sha1", "sha256")
PCRS = list(range(8))


def oracle(tmp_path, log_bytes, name="log.bin"):
    """tpm2_eventlog's reading of the log: (events without the Spec ID record, {bank: {pcr: hex}})."""
    path = tmp_path / name
    path.write_bytes(log_bytes)
    res = subprocess.run(["tpm2_eventlog", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    data = yaml.safe_load(res.stdout)
    events = data["events"]
    assert "SpecID" in events[0]
    pcrs = {}
    for bank, values in data["pcrs"].items():
        pcrs[bank] = dict((int(k), "%0*x" % (2 * pcrmod.DIGEST_SIZES[bank], v)) for k, v in values.items())
    return events[1:], pcrs


def pcrread(tcti, banks=BANKS, pcrs=PCRS):
    sel = "+".join("%s:%s" % (b, ",".join(str(p) for p in pcrs)) for b in banks)
    res = subprocess.run(["tpm2_pcrread", "-T", tcti, sel], capture_output=True, text=True,
                         env=dict(os.environ, TSS2_LOG="all+NONE"))
    assert res.returncode == 0, res.stderr
    out = {}
    for bank, values in yaml.safe_load(res.stdout).items():
        out[bank] = dict((int(k), "%0*x" % (2 * pcrmod.DIGEST_SIZES[bank], v)) for k, v in values.items())
    return out


@pytest.fixture(scope="module")
def specs():
    return gen.default_boot_events()


# ---------------------------------------------------------------------------------------------------------------
# (a) tpm2_eventlog
# ---------------------------------------------------------------------------------------------------------------
def test_events_and_replay_agree_with_tpm2_eventlog(tmp_path, specs):
    log = gen.build_log(specs)
    theirs, their_pcrs = oracle(tmp_path, log)
    ours = eventlog.parse_event_log(log)
    assert len(theirs) == len(ours.events) == len(specs)
    for mine, other in zip(ours.events, theirs):
        assert other["EventNum"] == mine["index"] + 1
        assert (mine["pcr"], mine["type_name"]) == (other["PCRIndex"], other["EventType"])
        assert mine["digests"] == dict((d["AlgorithmId"], str(d["Digest"])) for d in other["Digests"])
        assert mine["data_size"] == other["EventSize"]
        ev = other.get("Event")
        if isinstance(ev, dict) and "UnicodeName" in ev:  # UEFI_VARIABLE_DATA
            dec = mine["decoded"]
            assert (dec["guid"], dec["name"], dec["data_length"]) == \
                (ev["VariableName"], ev["UnicodeName"], ev["VariableDataLength"])
            if "VariableData" in ev:
                assert dec["data_sha256"] == hashlib.sha256(bytes.fromhex(str(ev["VariableData"]))).hexdigest()
        if isinstance(ev, dict) and "DevicePath" in ev:  # UEFI_IMAGE_LOAD_EVENT
            dec = mine["decoded"]
            assert (dec["image_location"], dec["image_length"]) == \
                (ev["ImageLocationInMemory"], ev["ImageLengthInMemory"])
            assert dec["file_path"].encode("utf-16-le").hex() in str(ev["DevicePath"])
    assert eventlog.replay(ours) == their_pcrs
    assert sorted(their_pcrs["sha256"]) == PCRS


def test_startup_locality_log_agrees_with_tpm2_eventlog_except_its_known_pcr0_bug(tmp_path, specs):
    log = gen.build_log(specs, startup_locality=3)
    theirs, their_pcrs = oracle(tmp_path, log)
    ours = eventlog.parse_event_log(log)
    assert [(e["pcr"], e["type_name"], e["digests"]) for e in ours.events] == \
        [(o["PCRIndex"], o["EventType"], dict((d["AlgorithmId"], str(d["Digest"])) for d in o["Digests"]))
         for o in theirs]
    mine = eventlog.replay(ours)
    for bank in BANKS:
        assert dict((p, v) for p, v in mine[bank].items() if p) == \
            dict((p, v) for p, v in their_pcrs[bank].items() if p)
    # tpm2-tools 5.4 extends the StartupLocality record's zero digest instead of starting PCR 0 at 00…03;
    # the locality-3 TPM below is the oracle for PCR 0.
    assert mine["sha256"][0] != their_pcrs["sha256"][0]


# ---------------------------------------------------------------------------------------------------------------
# (b) a TPM extended with the log's digests
# ---------------------------------------------------------------------------------------------------------------
def test_replay_equals_a_tpm_extended_with_the_log(swtpm_factory, specs):
    tpm = swtpm_factory(ek_certs=False)
    log = gen.build_log(specs)
    assert pcrread(tpm.tcti)["sha256"] == dict((p, "00" * 32) for p in PCRS)  # a fresh TPM
    assert gen.extend_tpm(tpm.tcti, log) == len(specs)
    ours = eventlog.replay(eventlog.parse_event_log(log), pcrs=PCRS)
    assert ours == pcrread(tpm.tcti)
    assert pcrmod.drift(ours, pcrread(tpm.tcti)) == []


def test_replay_with_startup_locality_equals_a_locality3_tpm(tmp_path, specs):
    tpm = Locality3SwTPM(tmp_path / "tpm3")
    try:
        assert pcrread(tpm.tcti, pcrs=[0])["sha256"][0] == "00" * 31 + "03"
        log = gen.build_log(specs, startup_locality=3)
        gen.extend_tpm(tpm.tcti, log)
        assert eventlog.replay(eventlog.parse_event_log(log), pcrs=PCRS) == pcrread(tpm.tcti)
        # without the StartupLocality record the same digests replay to another PCR 0: it really mattered
        assert eventlog.replay(eventlog.parse_event_log(gen.build_log(specs)), pcrs=[0])["sha256"][0] != \
            pcrread(tpm.tcti, pcrs=[0])["sha256"][0]
    finally:
        tpm.stop()


# ---------------------------------------------------------------------------------------------------------------
# (c) findings and a log that does not replay
# ---------------------------------------------------------------------------------------------------------------
def test_changed_db_is_one_finding_and_the_tpm_agrees(swtpm_factory, specs):
    tpm = swtpm_factory(ek_certs=False)
    db = [s for s in specs if s.get("variable") and s["variable"][1] == "db"][0]["variable"][2]
    changed = gen.with_changed_variable(specs, "db", db + gen.signature_list(gen.CERT_X509, [gen.fake_blob("x", 900)]))
    base, cur = eventlog.parse_event_log(gen.build_log(specs)), eventlog.parse_event_log(gen.build_log(changed))
    findings = eventlog_compare.compare_logs(base.events, cur.events)
    assert [(f["pcr"], f["change"]) for f in findings] == [(7, "changed")]
    assert " db (d719b2cb-3d3a-4596-a3bc-dad00e67656f): digest changed" in findings[0]["description"]
    gen.extend_tpm(tpm.tcti, gen.build_log(changed))
    actual = pcrread(tpm.tcti)
    assert eventlog.replay(cur, pcrs=PCRS) == actual
    assert [(d["bank"], d["pcr"]) for d in pcrmod.drift(eventlog.replay(base, pcrs=PCRS), actual)] == \
        [("sha1", 7), ("sha256", 7)]


def test_added_boot_application_is_an_added_finding(specs):
    cur = gen.with_added_event(specs, gen.image_event("\\EFI\\BOOT\\grubx64-unsigned.efi"))
    findings = eventlog_compare.compare_logs(eventlog.parse_event_log(gen.build_log(specs)),
                                     eventlog.parse_event_log(gen.build_log(cur)))
    assert [(f["pcr"], f["change"], f["type_name"]) for f in findings] == \
        [(4, "added", "EV_EFI_BOOT_SERVICES_APPLICATION")]
    assert "\\EFI\\BOOT\\grubx64-unsigned.efi" in findings[0]["description"]


def test_log_that_does_not_replay_is_a_mismatch_with_the_tpm(swtpm_factory, specs):
    tpm = swtpm_factory(ek_certs=False)
    gen.extend_tpm(tpm.tcti, specs)  # the TPM saw the real measurements
    shim = [i for i, s in enumerate(specs) if s.get("path", "").endswith("shimx64.efi")][0]
    forged = gen.build_log(gen.with_altered_digest(specs, shim, bank="sha256"))  # the log lies about shim
    actual = pcrread(tpm.tcti)
    assert pcrmod.drift(eventlog.replay(eventlog.parse_event_log(gen.build_log(specs)), pcrs=PCRS), actual) == []
    mismatch = pcrmod.drift(eventlog.replay(eventlog.parse_event_log(forged), pcrs=PCRS), actual)
    assert [(d["bank"], d["pcr"]) for d in mismatch] == [("sha256", 4)]
    assert mismatch[0]["actual"] == actual["sha256"][4]


def test_extend_tpm_from_foreign_bytes_reads_digests_with_tpm2_eventlog(swtpm_factory, specs):
    tpm = swtpm_factory(ek_certs=False)
    log = gen.build_log(specs)
    assert gen.extend_tpm(tpm.tcti, bytes(log)) == len(specs)  # plain bytes: digests via tpm2_eventlog
    assert eventlog.replay(eventlog.parse_event_log(log), pcrs=PCRS) == pcrread(tpm.tcti)


# ---------------------------------------------------------------------------------------------------------------
# a swtpm that starts at locality 3 (own process, ended by its pid)
# ---------------------------------------------------------------------------------------------------------------
class Locality3SwTPM:
    def __init__(self, base):
        self.base = Path(base).resolve()
        state = self.base / "state"
        state.mkdir(parents=True)
        self.sock, self.ctrl, self.pidfile = self.base / "tpm.sock", self.base / "ctrl.sock", self.base / "pid"
        subprocess.run(["swtpm_setup", "--tpm2", "--tpmstate", str(state), "--pcr-banks", ",".join(BANKS)],
                       check=True, capture_output=True)
        subprocess.run(["swtpm", "socket", "--tpm2", "--tpmstate", "dir=%s" % state, "--server",
                        "type=unixio,path=%s" % self.sock, "--ctrl", "type=unixio,path=%s" % self.ctrl,
                        "--daemon", "--pid", "file=%s" % self.pidfile, "--log", "file=%s" % (self.base / "log")],
                       check=True, capture_output=True)
        deadline = time.monotonic() + 10
        while not (self.sock.exists() and self.ctrl.exists() and self.pidfile.exists()):
            assert time.monotonic() < deadline, "swtpm did not start"
            time.sleep(0.05)
        self.ioctl("-i")
        self.ioctl("-l", "3")
        res = subprocess.run(["tpm2_startup", "-c", "-T", self.tcti], capture_output=True, text=True,
                             env=dict(os.environ, TSS2_LOG="all+NONE"))
        assert res.returncode == 0, res.stderr
        self.ioctl("-l", "0")

    @property
    def tcti(self):
        return "cmd:socat - UNIX-CONNECT:%s" % self.sock

    def ioctl(self, *args):
        subprocess.run(["swtpm_ioctl", "--unix", str(self.ctrl)] + list(args), check=True, capture_output=True)

    def stop(self):
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
