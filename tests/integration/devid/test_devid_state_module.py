"""devid_state through ansible-playbook on swtpm with a real DevID: each of its parts equals what the module it
stands for returns for the same inputs in the same run (tpm_boot_state with baseline_copy_path, converged
state=check, tpm_devid_verify: the oracles), openssl agrees on the DevID certificate, the replay is skipped when not
converged, a failed replay (wrong DevID CA bundle, a DevID blob the TPM refuses) is verified:false with
tpm_devid_verify's message and does not fail the task, drift is reported and not failed, bad inputs fail cleanly, and
no transient handle or session is left in the TPM (tpm2-tools)."""

import json
import os

import pytest
from devid_testlib import FQCN, DevIDCA, assert_tpm_clean, ek_bundle, openssl

from support.swtpm import dead_socket_tcti

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the convergence record is root:root")

ANSIBLE_KEYS = ("changed", "invocation", "action", "exception", "failed", "msg")


def own(result, keep=()):
    """A task result without the keys Ansible adds (and without changed/failed/msg unless kept)."""
    return dict((k, v) for k, v in result.items()
                if not k.startswith("_ansible") and (k not in ANSIBLE_KEYS or k in keep))


class Host:
    """A host with an enrolled boot state (its baseline copy), a DevID issued by a local CA, and a convergence record
    of its DevID files."""

    def __init__(self, tpm, tmp_path, run_playbook):
        self.tpm, self.d = tpm, tmp_path
        self.ca = DevIDCA(tmp_path)
        ek_bundle(tpm, tmp_path / "ek.pem")
        self.copy_path = tmp_path / "boot-state" / "baseline.json"
        self.record = tmp_path / "converged" / "devid.json"
        store = tmp_path / "baselines"
        run_playbook(tasks=[
            {"name": "csr", FQCN + "devid_csr": {
                "tcti": tpm.tcti, "key_type": "rsa", "pub_path": str(tmp_path / "devid.pub"),
                "priv_path": str(tmp_path / "devid.priv"), "csr_path": str(tmp_path / "devid.csr"),
                "common_name": "node1.example.org"}},
            {"name": "measure", FQCN + "tpm_boot_state": {
                "tcti": tpm.tcti, "pcrs": [0, 7], "event_log_path": str(tmp_path / "no-event-log")},
             "register": "measure"},
            {"name": "enrol", FQCN + "boot_state_baseline": {
                "store_dir": str(store), "host": "node1", "boot_state": "{{ measure.boot_state }}",
                "reason": "initial enrolment"}, "delegate_to": "localhost"},
        ], expect_rc=0)
        self.leaf = self.ca.issue(tmp_path / "devid.csr", tmp_path / "devid.crt")
        doc = json.loads((store / "node1.json").read_text())["versions"][0]
        self.copy = {"schema": 1, "host": "node1", "written_by": "trustroot.spire_tpm.boot_state", "policy": "block",
                     "gate": "enforce", "enforce_on": ["drift"], "event_log_path": str(tmp_path / "no-event-log"),
                     "blocked": None, "baseline": doc}
        self.copy_path.parent.mkdir()
        self.copy_path.write_text(json.dumps(self.copy, indent=2, sort_keys=True) + "\n")
        self.paths = [str(tmp_path / n) for n in ("devid.crt", "devid.pub", "devid.priv", "devid-root.pem", "ek.pem")]
        run_playbook(tasks=[{"name": "record", FQCN + "converged": dict(self.convergence(), state="record")}],
                     expect_rc=0)

    def convergence(self, **kw):
        args = {"path": str(self.record), "inputs_digest": "d1", "paths": self.paths, "groups": ["root"]}
        args.update(kw)
        return args

    def verify(self, **kw):
        d = self.d
        args = {"devid_cert_path": str(d / "devid.crt"), "devid_pub_path": str(d / "devid.pub"),
                "devid_priv_path": str(d / "devid.priv"), "devid_ca_path": str(d / "devid-root.pem"),
                "endorsement_ca_path": str(d / "ek.pem"), "trust_domain": "example.org"}
        args.update(kw)
        return args

    def tasks(self, suffix="", convergence=None, verify=None, copy_path=None, **ds_extra):
        """The three modules, then devid_state with the same inputs (tasks named <module><suffix>)."""
        convergence = convergence or self.convergence()
        verify = verify or self.verify()
        copy_path = str(copy_path or self.copy_path)
        certificates = [{"path": str(self.d / "devid.crt")}]
        ds = {"tcti": self.tpm.tcti, "boot_state": {"baseline_copy_path": copy_path},
              "convergence": dict(convergence, certificates=certificates), "verify": verify}
        ds.update(ds_extra)
        return [
            {"name": "tbs" + suffix, FQCN + "tpm_boot_state": {"tcti": self.tpm.tcti, "baseline_copy_path": copy_path}},
            {"name": "conv" + suffix, FQCN + "converged": dict(convergence, state="check", certificates=certificates)},
            {"name": "tdv" + suffix, FQCN + "tpm_devid_verify": dict(verify, tcti=self.tpm.tcti),
             "ignore_errors": True},
            {"name": "ds" + suffix, FQCN + "devid_state": ds, "register": "ds" + suffix},
        ]


@pytest.fixture
def host(swtpm_factory, tmp_path, run_playbook):
    return Host(swtpm_factory(ek_certs=True), tmp_path, run_playbook)


def assert_parts_equal_the_modules(r, suffix=""):
    tbs, conv, tdv, ds = (r.task(n + suffix) for n in ("tbs", "conv", "tdv", "ds"))
    assert ds["changed"] is False and ds.get("failed") is not True, ds
    boot = own(tbs)
    assert ds["ansible_facts"] == boot.pop("ansible_facts")
    assert ds["boot_state"] == boot
    for key in ("converged", "reasons", "certificates", "inputs_digest"):
        assert ds[key] == conv[key], key
    return tbs, conv, tdv, ds


def test_parts_equal_the_three_modules_and_openssl(host, run_playbook):
    r = run_playbook(tasks=host.tasks(), expect_rc=0)
    tbs, conv, tdv, ds = assert_parts_equal_the_modules(r)
    assert ds["converged"] is True and ds["reasons"] == []
    assert tbs["report"]["status"] == "ok" and ds["boot_state"]["report"]["baseline_version"] == 1
    assert ds["boot_state"]["baseline_copy"] == dict((k, v) for k, v in host.copy.items() if k != "baseline")
    assert tdv.get("failed") is not True
    assert ds["verified"] is True and ds["verify"] == own(tdv)
    assert [c["name"] for c in ds["verify"]["checks"]] == ["devid_chain", "ek_matches_certificate", "ek_chain",
                                                           "ak_certifies_devid", "credential_activation",
                                                           "devid_signature"]
    # openssl reads the same certificate
    crt = str(host.d / "devid.crt")
    fp = openssl("x509", "-in", crt, "-noout", "-fingerprint", "-sha256").decode().strip().split("=", 1)[1]
    assert ds["verify"]["devid_certificate"]["sha256_fingerprint"] == fp.replace(":", "").lower()
    serial = openssl("x509", "-in", crt, "-noout", "-serial").decode().strip().split("=", 1)[1]
    assert int(ds["certificates"][0]["serial"]) == int(serial, 16)
    assert ds["verify"]["devid_certificate"]["serial"] == "%x" % int(serial, 16)

    # check mode: the same answer, nothing changed
    rc = run_playbook(tasks=host.tasks()[3:], check=True, expect_rc=0)
    dsc = rc.task("ds")
    assert dsc["changed"] is False and dsc["verified"] is True and dsc["converged"] is True
    assert dsc["boot_state"]["report"] == ds["boot_state"]["report"] and dsc["verify"]["agent_id"] == \
        ds["verify"]["agent_id"]
    assert_tpm_clean(host.tpm)


def test_not_converged_skips_the_replay(host, run_playbook):
    r = run_playbook(tasks=host.tasks(convergence=host.convergence(inputs_digest="d2")), expect_rc=0)
    tbs, conv, tdv, ds = assert_parts_equal_the_modules(r)
    assert ds["converged"] is False and ds["reasons"] == ["inputs changed since the record"]
    assert ds["verify"] == {"skipped": True, "msg": "not run: not converged"} and ds["verified"] is None
    assert ds["boot_state"]["report"]["status"] == "ok"
    # not converged and no baseline copy on the host: nothing measured, the TPM not even needed
    r = run_playbook(tasks=[{"name": "ds", FQCN + "devid_state": {
        "tcti": dead_socket_tcti(host.d), "boot_state": {"baseline_copy_path": str(host.d / "none.json")},
        "convergence": host.convergence(inputs_digest="d2"), "verify": host.verify()}}], expect_rc=0)
    ds = r.task("ds")
    assert ds["boot_state"] == {"baseline_copy": None} and "ansible_facts" not in ds and ds["verified"] is None
    assert_tpm_clean(host.tpm)


def test_failed_replay_is_a_result_with_tpm_devid_verifys_message(host, run_playbook):
    # a DevID private blob whose integrity HMAC no longer matches: the TPM refuses to load it (agent session)
    priv = (host.d / "devid.priv").read_bytes()
    (host.d / "flipped.priv").write_bytes(priv[:-1] + bytes([priv[-1] ^ 0x01]))
    r = run_playbook(tasks=host.tasks(verify=host.verify(devid_ca_path=str(host.d / "ek.pem")))
                     + host.tasks("_blob", verify=host.verify(devid_priv_path=str(host.d / "flipped.priv"))),
                     expect_rc=0)
    for suffix, failed_at in (("", ["devid_chain"]), ("_blob", [])):
        tbs, conv, tdv, ds = assert_parts_equal_the_modules(r, suffix)
        assert tdv["failed"] is True, tdv
        assert ds["converged"] is True and ds["verified"] is False
        assert ds["verify"] == own(tdv, keep=("failed", "msg"))
        assert ds["verify"]["failed"] is True and ds["verify"]["msg"] == tdv["msg"]
        assert [c["name"] for c in ds["verify"]["checks"] if not c["ok"]] == failed_at
    assert "would fail at check 'devid_chain'" in r.task("ds")["verify"]["msg"]
    assert "does not verify against devid_ca_path" in r.task("ds")["verify"]["msg"]
    assert "integrity check failed" in r.task("ds_blob")["verify"]["msg"]
    assert_tpm_clean(host.tpm)


def test_drift_is_reported_not_failed(host, run_playbook):
    host.tpm.tool("tpm2_pcrextend", "7:sha256=" + "ab" * 32)
    r = run_playbook(tasks=host.tasks(), expect_rc=0)
    tbs, conv, tdv, ds = assert_parts_equal_the_modules(r)
    report = ds["boot_state"]["report"]
    assert report["status"] == "drift" and report["findings"][0] == "drift"
    assert [(d["bank"], d["pcr"]) for d in report["pcr_drift"]] == [("sha256", 7)]
    # tpm2_pcrread is the oracle for the value measured
    out = host.tpm.tool("tpm2_pcrread", "sha256:7").stdout
    assert report["pcr_drift"][0]["current"] == out.split(":")[-1].strip().lower().replace("0x", "")
    assert ds["verified"] is True and ds["ansible_facts"]["tpm_boot_state"]["status"] == "drift"
    assert_tpm_clean(host.tpm)


def test_bad_inputs_fail_cleanly(host, run_playbook):
    garbage = host.d / "garbage.json"
    garbage.write_text("{not json")
    no_inputs_digest = host.convergence()
    del no_inputs_digest["inputs_digest"]

    def ds(name, **kw):
        args = {"tcti": host.tpm.tcti, "boot_state": {"baseline_copy_path": str(host.copy_path)},
                "convergence": host.convergence(), "verify": host.verify()}
        args.update(kw)
        return {"name": name, FQCN + "devid_state": args, "ignore_errors": True}

    r = run_playbook(tasks=[
        ds("garbage", boot_state={"baseline_copy_path": str(garbage)}),
        ds("no ca", verify=host.verify(devid_ca_path=str(host.d / "missing.pem"))),
        ds("dead tpm", tcti=dead_socket_tcti(host.d)),
        ds("no digest", convergence=no_inputs_digest),
        ds("relative path", convergence=host.convergence(paths=["relative/devid.crt"])),
        ds("bad td", verify=host.verify(trust_domain="Not A Domain")),
    ])
    for name, text in (("garbage", "is not JSON"), ("no ca", "devid_ca_path %s does not exist" % (host.d / "missing.pem")),
                       ("dead tpm", "nobody-serves-this.sock"),
                       ("no digest", "missing required arguments: inputs_digest"),
                       ("relative path", "relative/devid.crt"), ("bad td", "not a valid SPIFFE trust domain")):
        t = r.task(name)
        assert t["failed"] is True and text in t["msg"], (name, t["msg"])
        assert "Traceback" not in t["msg"], (name, t["msg"])
    assert_tpm_clean(host.tpm)
