"""devid_state's logic (tpm/devid_state.py) with its three parts replaced by recorders: the order, what is read
before the TPM, one TPM context for the PCR snapshot and the replay, the replay only when converged, a failed replay
as a result. Also the pieces split out of the modules for it: attest.load_inputs / failure_error and
errors.error_result. The parts themselves against swtpm: tests/integration/devid/test_devid_state_module.py."""

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ansible_collections.trustroot.spire_tpm.plugins.module_utils import errors
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import attest
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import devid_state as ds

CONVERGENCE = {"path": "/var/lib/x/devid.json", "inputs_digest": "d1", "paths": [], "users": [], "groups": [],
               "certificates": [], "commands": []}
VERIFY = {"devid_cert_path": "/c.crt", "devid_pub_path": "/k.pub", "devid_priv_path": "/k.priv",
          "devid_password": "pw", "devid_ca_path": "/ca.pem", "endorsement_ca_path": "/ek.pem",
          "trust_domain": "example.org", "owner_hierarchy_password": None, "endorsement_hierarchy_password": None}
REPLAYED = {"checks": [{"name": "devid_chain", "ok": True, "detail": "chain: ..."}], "agent_id": "spiffe://x",
            "selectors": ["tpm_devid:subject:cn:n"], "devid_certificate": {"serial": "1"},
            "ek_certificate": {"serial": "2"}}


class Recorder:
    """Stands in for the parts devid_state composes, and writes down each call in order."""

    def __init__(self, monkeypatch, converged=True, plan="plan", replay=None):
        self.calls = []
        self.converged = converged
        self.plan = plan
        self.replay_result = replay if replay is not None else dict(REPLAYED, failed=None)
        rec = self

        class Record:
            def __init__(self, **kw):
                rec.calls.append(("record", kw))

            def check(self):
                rec.calls.append(("check",))
                return {"converged": rec.converged, "reasons": [] if rec.converged else ["inputs changed"],
                        "certificates": [], "inputs_digest": "d1"}

        class TPM:
            tcti_string = "cmd:fake"

            def __enter__(self):
                rec.calls.append(("tpm open",))
                return self

            def __exit__(self, *exc):
                rec.calls.append(("tpm close",))
                return False

        monkeypatch.setattr(ds.converge, "ConvergenceRecord", Record)
        monkeypatch.setattr(ds.context, "open_tpm", lambda tcti: (self.calls.append(("open_tpm", tcti)), TPM())[1])
        monkeypatch.setattr(ds.boot_measure, "prepare", self.prepare)
        monkeypatch.setattr(ds.boot_measure, "measure", self.measure)
        monkeypatch.setattr(ds.attest, "load_inputs", self.load_inputs)
        monkeypatch.setattr(ds.attest, "replay", self.replay)

    def prepare(self, baseline_copy_path):
        self.calls.append(("prepare", baseline_copy_path))
        return self.plan

    def measure(self, tpm, plan):
        self.calls.append(("measure", tpm.tcti_string, plan))
        return {"baseline_copy": {"gate": "enforce"}, "report": {"status": "drift"}, "boot_state": {},
                "banks": ["sha256"], "tcti": tpm.tcti_string, "ansible_facts": {"tpm_boot_state": {"status": "drift"}}}

    def load_inputs(self, **kw):
        self.calls.append(("load_inputs", sorted(kw)))
        return "inputs"

    def replay(self, tpm, inputs, devid_password, owner, endorsement):
        self.calls.append(("replay", tpm.tcti_string, inputs, devid_password))
        if isinstance(self.replay_result, Exception):
            raise self.replay_result
        return dict(self.replay_result)

    def names(self):
        return [c[0] for c in self.calls]


def run(**kw):
    args = {"tcti": "cmd:fake", "boot_state": {"baseline_copy_path": "/copy.json"}, "convergence": CONVERGENCE,
            "verify": VERIFY}
    args.update(kw)
    return ds.devid_state(**args)


def test_converged_all_three_in_one_tpm_context(monkeypatch):
    r = Recorder(monkeypatch)
    res = run()
    # everything without the TPM first, then one context for the snapshot and the replay
    assert r.names() == ["prepare", "record", "check", "load_inputs", "open_tpm", "tpm open", "measure", "replay",
                         "tpm close"]
    assert r.calls[1] == ("record", CONVERGENCE)
    assert r.calls[3] == ("load_inputs", sorted(ds.LOAD_OPTIONS))  # the passwords go to the replay only
    assert r.calls[7] == ("replay", "cmd:fake", "inputs", "pw")
    assert sorted(res) == ["ansible_facts", "boot_state", "certificates", "converged", "inputs_digest", "reasons",
                           "verified", "verify"]
    assert res["converged"] is True and res["verified"] is True and res["verify"] == REPLAYED
    assert res["boot_state"]["report"] == {"status": "drift"} and "ansible_facts" not in res["boot_state"]
    assert res["ansible_facts"] == {"tpm_boot_state": {"status": "drift"}}


def test_not_converged_skips_the_replay_and_reads_no_devid_file(monkeypatch):
    r = Recorder(monkeypatch, converged=False)
    res = run()
    assert r.names() == ["prepare", "record", "check", "open_tpm", "tpm open", "measure", "tpm close"]
    assert res["verify"] == {"skipped": True, "msg": "not run: not converged"} and res["verified"] is None
    assert res["converged"] is False and res["reasons"] == ["inputs changed"]
    assert res["boot_state"]["report"]["status"] == "drift"


def test_no_copy_and_not_converged_opens_no_tpm(monkeypatch):
    r = Recorder(monkeypatch, converged=False, plan=None)
    res = run()
    assert "open_tpm" not in r.names()
    assert res["boot_state"] == {"baseline_copy": None} and "ansible_facts" not in res


def test_without_the_optional_parts(monkeypatch):
    r = Recorder(monkeypatch)
    res = run(boot_state=None, verify=None)
    assert r.names() == ["record", "check"]
    assert res["boot_state"] is None and res["verify"] is None and res["verified"] is None
    res = run(boot_state=None)
    assert "prepare" not in r.names() and res["boot_state"] is None and res["verified"] is True


def test_a_failed_check_is_a_result_with_tpm_devid_verifys_message(monkeypatch):
    broken = attest.Check("devid_chain", False, "the DevID certificate does not verify", "fix the CA bundle")
    checks = [{"name": "devid_chain", "ok": False, "detail": "the DevID certificate does not verify"}]
    Recorder(monkeypatch, replay=dict(REPLAYED, checks=checks, failed=broken))
    res = run()
    assert res["verified"] is False and res["converged"] is True
    assert res["verify"] == dict(REPLAYED, checks=checks, failed=True, msg=attest.failure_error(broken).message)
    assert res["verify"]["msg"] == ("SPIRE's tpm_devid attestation would fail at check 'devid_chain': the DevID "
                                    "certificate does not verify. Fix: fix the CA bundle")


def test_an_agent_session_failure_is_a_result_too(monkeypatch):
    checks = [{"name": "devid_chain", "ok": True, "detail": "chain"}]
    err = SpireTpmError("the DevID blobs do not load under SPIRE's RSA parent", "issue a new DevID", checks=checks)
    r = Recorder(monkeypatch, replay=err)
    res = run()
    assert res["verified"] is False
    assert res["verify"] == {"failed": True, "msg": err.message, "checks": checks}
    assert r.names()[-1] == "tpm close"
    r.replay_result = SpireTpmError("no EK certificate")
    assert run()["verify"] == {"failed": True, "msg": "no EK certificate", "checks": []}


def test_bad_inputs_raise(monkeypatch):
    r = Recorder(monkeypatch)

    def bad_copy(baseline_copy_path):
        raise SpireTpmError("the boot-state baseline copy /copy.json is not JSON")
    monkeypatch.setattr(ds.boot_measure, "prepare", bad_copy)
    with pytest.raises(SpireTpmError, match="is not JSON"):
        run()
    assert r.names() == []  # before the record is read

    def missing(**kw):
        raise SpireTpmError("devid_ca_path /ca.pem does not exist", "fix the path")
    monkeypatch.setattr(ds.attest, "load_inputs", missing)
    with pytest.raises(SpireTpmError, match="does not exist"):
        run(boot_state=None)
    assert "open_tpm" not in r.names()
    with pytest.raises(SpireTpmError, match="convergence"):
        run(convergence=None)


def test_error_result_and_failure_error():
    err = SpireTpmError("it broke", "mend it", checks=[1], msg="not this one")
    assert errors.error_result(err, extra=2) == {"checks": [1], "extra": 2, "msg": "it broke. Fix: mend it"}
    check = attest.Check("ek_chain", False, "no intermediate", "add it")
    e = attest.failure_error(check)
    assert e.message == "SPIRE's tpm_devid attestation would fail at check 'ek_chain': no intermediate. Fix: add it"


def _cert_pem(cn):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def test_load_inputs(tmp_path):
    (tmp_path / "c.crt").write_bytes(_cert_pem("leaf") + _cert_pem("inter"))
    (tmp_path / "ca.pem").write_bytes(_cert_pem("root"))
    (tmp_path / "k.pub").write_bytes(b"pub")
    (tmp_path / "k.priv").write_bytes(b"priv")
    args = dict(devid_cert_path=str(tmp_path / "c.crt"), devid_pub_path=str(tmp_path / "k.pub"),
                devid_priv_path=str(tmp_path / "k.priv"), devid_ca_path=str(tmp_path / "ca.pem"),
                endorsement_ca_path=str(tmp_path / "ca.pem"), trust_domain="spiffe://Example.org")
    with pytest.raises(SpireTpmError, match="not a valid SPIFFE trust domain"):
        attest.load_inputs(**args)
    args["trust_domain"] = "spiffe://example.org"
    got = attest.load_inputs(**args)
    assert got["trust_domain"] == "example.org" and got["pub_blob"] == b"pub" and got["priv_blob"] == b"priv"
    assert got["leaf"].subject.rfc4514_string() == "CN=leaf" and len(got["intermediates"]) == 1
    assert [c.subject.rfc4514_string() for c in got["devid_roots"]] == ["CN=root"]
    for option, match in (("devid_priv_path", "devid_priv_path .* does not exist"),
                          ("endorsement_ca_path", "endorsement_ca_path .* does not exist")):
        with pytest.raises(SpireTpmError, match=match):
            attest.load_inputs(**dict(args, **{option: str(tmp_path / "missing")}))
