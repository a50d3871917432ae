"""tpm_devid_verify through ansible-playbook on swtpm: the full loop (devid_csr → local DevID CA → verify) for RSA
and ECC DevIDs, and each way SPIRE's tpm_devid attestation breaks, with the message the operator gets."""

import hashlib

from cryptography import x509
from devid_testlib import (FQCN, DevIDCA, assert_tpm_clean, ek_bundle, openssl, spire_format_from_tools)

CHECKS = ["devid_chain", "ek_matches_certificate", "ek_chain", "ak_certifies_devid", "credential_activation",
          "devid_signature"]


def csr_task(name, tpm, d, kt="rsa", **kw):
    args = {"tcti": tpm.tcti, "key_type": kt, "pub_path": str(d / ("%s.pub" % kt)),
            "priv_path": str(d / ("%s.priv" % kt)), "csr_path": str(d / ("%s.csr" % kt)),
            "common_name": "%s-node.example.org" % kt}
    args.update(kw)
    return {"name": name, FQCN + "devid_csr": args}


def verify_task(name, tpm, d, kt="rsa", cert=None, ek_ca=None, devid_ca=None, **kw):
    args = {"tcti": tpm.tcti, "devid_cert_path": str(cert or d / ("%s.crt" % kt)),
            "devid_pub_path": str(d / ("%s.pub" % kt)), "devid_priv_path": str(d / ("%s.priv" % kt)),
            "devid_ca_path": str(devid_ca or d / "devid-root.pem"), "endorsement_ca_path": str(ek_ca or d / "ek.pem"),
            "trust_domain": "example.org"}
    args.update(kw)
    t = {"name": name, FQCN + "tpm_devid_verify": args}
    return t


def test_full_loop_rsa_and_ecc(swtpm, run_playbook, tmp_path):
    ca = DevIDCA(tmp_path)
    ek_bundle(swtpm, tmp_path / "ek.pem")
    run_playbook(tasks=[csr_task("rsa", swtpm, tmp_path, "rsa"), csr_task("ecc", swtpm, tmp_path, "ecc")],
                 expect_rc=0)
    leaves = {kt: ca.issue(tmp_path / ("%s.csr" % kt), tmp_path / ("%s.crt" % kt)) for kt in ("rsa", "ecc")}
    # openssl agrees the DevID certificates chain to the DevID root through the intermediate in the cert file
    for kt in ("rsa", "ecc"):
        openssl("verify", "-CAfile", str(ca.root_path), "-untrusted", str(tmp_path / ("%s.crt" % kt)),
                str(tmp_path / ("%s.crt" % kt)))
    r = run_playbook(tasks=[verify_task("verify rsa", swtpm, tmp_path, "rsa"),
                            verify_task("verify ecc", swtpm, tmp_path, "ecc")], expect_rc=0)
    rc = run_playbook(tasks=[verify_task("verify rsa", swtpm, tmp_path, "rsa")], check=True, expect_rc=0)
    assert rc.task("verify rsa")["changed"] is False and rc.task("verify rsa")["agent_id"]
    for kt in ("rsa", "ecc"):
        res = r.task("verify " + kt)
        assert res["changed"] is False
        assert [c["name"] for c in res["checks"]] == CHECKS
        assert all(c["ok"] is True for c in res["checks"]), res["checks"]
        leaf = leaves[kt]
        leaf_der = ca.der(leaf)
        assert res["agent_id"] == "spiffe://example.org/spire/agent/tpm_devid/" + hashlib.sha1(leaf_der).hexdigest()
        assert res["selectors"] == [
            "tpm_devid:subject:cn:%s-node.example.org" % kt,
            "tpm_devid:issuer:cn:Test DevID Intermediate",
            "tpm_devid:ca:fingerprint:" + hashlib.sha1(ca.der(ca.inter)).hexdigest(),
            "tpm_devid:ca:fingerprint:" + hashlib.sha1(ca.der(ca.root)).hexdigest(),
        ]
        # the EK certificate reported is the one tpm2-tools reads from NV 0x01c00002
        swtpm.tool("tpm2_nvread", "-C", "o", "-o", str(tmp_path / "ek.der"), "0x01c00002")
        ek = x509.load_der_x509_certificate(_strip_der((tmp_path / "ek.der").read_bytes()))
        assert res["ek_certificate"]["serial"] == "%x" % ek.serial_number
    assert_tpm_clean(swtpm)


def _strip_der(data):
    # NV areas may carry padding after the DER certificate
    n = data[1]
    if n < 0x80:
        return data[:2 + n]
    k = n & 0x7F
    return data[:2 + k + int.from_bytes(data[2:2 + k], "big")]


def test_each_broken_check_is_explained(swtpm, run_playbook, tmp_path):
    ca = DevIDCA(tmp_path)
    ek_bundle(swtpm, tmp_path / "ek.pem")
    ek_bundle(swtpm, tmp_path / "ek-root-only.pem", with_intermediate=False)
    # a DevID made with tpm2-tools defaults (tpm2_createprimary/tpm2_create), size prefixes stripped
    swtpm.tool("tpm2_createprimary", "-Q", "-C", "o", "-c", str(tmp_path / "prim.ctx"))
    swtpm.tool("tpm2_flushcontext", "-t")
    swtpm.tool("tpm2_create", "-Q", "-C", str(tmp_path / "prim.ctx"), "-G", "rsa2048:rsassa-sha256:null",
               "-a", "sign|fixedtpm|fixedparent|sensitivedataorigin|userwithauth",
               "-u", str(tmp_path / "tools.pub"), "-r", str(tmp_path / "tools.priv"))
    swtpm.tool("tpm2_flushcontext", "-t")
    spire_format_from_tools(tmp_path / "tools.pub", tmp_path / "tools.priv", tmp_path / "tools2.pub",
                            tmp_path / "tools2.priv")

    run_playbook(tasks=[csr_task("a", swtpm, tmp_path, "rsa"), csr_task("b", swtpm, tmp_path, "ecc")], expect_rc=0)
    ca.issue(tmp_path / "rsa.csr", tmp_path / "rsa.crt")
    ca.issue(tmp_path / "rsa.csr", tmp_path / "other-key.crt", public_key_from=tmp_path / "ecc.csr")
    ca.issue(tmp_path / "rsa.csr", tmp_path / "expired.crt", expired=True)

    tools = dict(verify_task("tools key", swtpm, tmp_path, "rsa"), ignore_errors=True)
    tools[FQCN + "tpm_devid_verify"].update(devid_pub_path=str(tmp_path / "tools2.pub"),
                                            devid_priv_path=str(tmp_path / "tools2.priv"))
    r = run_playbook(tasks=[
        verify_task("good", swtpm, tmp_path, "rsa"),
        dict(verify_task("other key", swtpm, tmp_path, "rsa", cert=tmp_path / "other-key.crt"), ignore_errors=True),
        dict(verify_task("no intermediate", swtpm, tmp_path, "rsa", ek_ca=tmp_path / "ek-root-only.pem"),
             ignore_errors=True),
        dict(verify_task("expired", swtpm, tmp_path, "rsa", cert=tmp_path / "expired.crt"), ignore_errors=True),
        dict(verify_task("wrong devid ca", swtpm, tmp_path, "rsa", devid_ca=tmp_path / "ek.pem"), ignore_errors=True),
        tools,
    ])
    assert r.task("good").get("failed") is not True

    def failed_check(res):
        return [c["name"] for c in res["checks"] if not c["ok"]]

    other = r.task("other key")
    assert other["failed"] is True
    assert "would fail at check 'devid_signature'" in other["msg"]
    assert "the DevID certificate is for a different key" in other["msg"]
    assert failed_check(other) == ["devid_signature"]

    noint = r.task("no intermediate")
    assert noint["failed"] is True and failed_check(noint) == ["ek_chain"]
    assert "lacks the EK certificate's issuer `CN=swtpm-localca`" in noint["msg"]
    assert "no intermediates pool" in noint["msg"]
    assert "Fix: add the intermediate CA `CN=swtpm-localca`" in noint["msg"]
    # and openssl agrees: without the intermediate the EK certificate does not verify against the root alone
    swtpm.tool("tpm2_nvread", "-C", "o", "-o", str(tmp_path / "ek.der"), "0x01c00002")
    (tmp_path / "ek.der").write_bytes(_strip_der((tmp_path / "ek.der").read_bytes()))
    bad = __import__("subprocess").run(["openssl", "verify", "-CAfile", str(tmp_path / "ek-root-only.pem"),
                                        str(tmp_path / "ek.der")], capture_output=True)
    assert bad.returncode != 0

    exp = r.task("expired")
    assert exp["failed"] is True and failed_check(exp) == ["devid_chain"]
    assert "would fail at check 'devid_chain'" in exp["msg"] and "expired on" in exp["msg"]
    assert "renew the DevID certificate" in exp["msg"]

    wca = r.task("wrong devid ca")
    assert wca["failed"] is True and failed_check(wca) == ["devid_chain"]
    assert "does not verify against devid_ca_path" in wca["msg"]

    tk = r.task("tools key")
    assert tk["failed"] is True
    assert "do not load under SPIRE's RSA parent" in tk["msg"] and "integrity check failed" in tk["msg"]
    assert "tpm2-tools' default primary" in tk["msg"]
    assert_tpm_clean(swtpm)


def test_tpm_without_ek_certificate(swtpm_factory, run_playbook, tmp_path):
    tpm = swtpm_factory(ek_certs=False)
    ca = DevIDCA(tmp_path)
    (tmp_path / "ek.pem").write_bytes(ca.pem(ca.root))  # any bundle: the failure comes first
    run_playbook(tasks=[csr_task("csr", tpm, tmp_path)], expect_rc=0)
    ca.issue(tmp_path / "rsa.csr", tmp_path / "rsa.crt")
    res = run_playbook(tasks=[verify_task("verify", tpm, tmp_path)], expect_rc=2).task("verify")
    assert res["failed"] is True
    assert "no RSA EK certificate at NV index 0x01c00002" in res["msg"]
    assert "cannot attest this TPM" in res["msg"]
    # tpm2-tools agrees the index is absent
    assert tpm.tool("tpm2_nvreadpublic", "0x01c00002", check=False).returncode != 0
    assert_tpm_clean(tpm)


def test_wrong_devid_password(swtpm_factory, run_playbook, tmp_path):
    """Own TPM: the DevID has no noDA, so the wrong try counts toward this TPM's lockout only."""
    tpm = swtpm_factory(ek_certs=True)
    ca = DevIDCA(tmp_path)
    ek_bundle(tpm, tmp_path / "ek.pem")
    run_playbook(tasks=[csr_task("csr", tpm, tmp_path, devid_password="right-pw")], expect_rc=0)
    ca.issue(tmp_path / "rsa.csr", tmp_path / "rsa.crt")
    r = run_playbook(tasks=[
        dict(verify_task("wrong", tpm, tmp_path, devid_password="wrong-pw"), ignore_errors=True),
        verify_task("right", tpm, tmp_path, devid_password="right-pw"),
    ])
    wrong = r.task("wrong")
    assert wrong["failed"] is True
    assert "would fail at check 'ak_certifies_devid'" in wrong["msg"]
    assert "rejected devid_password" in wrong["msg"]
    sig = [c for c in wrong["checks"] if c["name"] == "devid_signature"][0]
    assert sig["ok"] is False and "not attempted" in sig["detail"]
    assert r.task("right").get("failed") is not True
    assert "right-pw" not in r.stdout and "wrong-pw" not in r.stdout
    assert_tpm_clean(tpm)


def test_owner_and_endorsement_hierarchy_passwords(swtpm_factory, run_playbook, tmp_path):
    tpm = swtpm_factory(ek_certs=True)
    tpm.tool("tpm2_changeauth", "-c", "o", "owner-pw")
    tpm.tool("tpm2_changeauth", "-c", "e", "endorse-pw")
    ca = DevIDCA(tmp_path)
    ek_bundle(tpm, tmp_path / "ek.pem")
    r = run_playbook(tasks=[
        dict(csr_task("no owner pw", tpm, tmp_path), ignore_errors=True),
        csr_task("csr", tpm, tmp_path, owner_hierarchy_password="owner-pw"),
    ])
    nop = r.task("no owner pw")
    assert nop["failed"] is True and "owner hierarchy password was rejected" in nop["msg"]
    assert "owner_hierarchy_password" in nop["msg"]
    assert r.task("csr")["changed"] is True
    ca.issue(tmp_path / "rsa.csr", tmp_path / "rsa.crt")
    r = run_playbook(tasks=[
        dict(verify_task("no endorsement pw", tpm, tmp_path, owner_hierarchy_password="owner-pw"),
             ignore_errors=True),
        verify_task("both", tpm, tmp_path, owner_hierarchy_password="owner-pw",
                    endorsement_hierarchy_password="endorse-pw"),
    ])
    nep = r.task("no endorsement pw")
    assert nep["failed"] is True and "endorsement hierarchy password was rejected" in nep["msg"]
    both = r.task("both")
    assert both.get("failed") is not True and all(c["ok"] for c in both["checks"])
    assert "owner-pw" not in r.stdout and "endorse-pw" not in r.stdout
    assert_tpm_clean(tpm)
