"""devid_csr through ansible-playbook on swtpm, cross-checked with tpm2-tools, openssl and raw tpm2-pytss."""

import hashlib
import os
import socket
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from devid_testlib import (FQCN, SPIRE_SRK_ATTRS, assert_tpm_clean, csr_public_der, openssl,
                           spire_format_from_tools, tools_format_from_spire)

from support.swtpm import dead_socket_tcti
from tpm2_pytss import ESAPI, TCTILdr
from tpm2_pytss.constants import ESYS_TR, TPMA_OBJECT
from tpm2_pytss.types import TPM2B_PRIVATE, TPM2B_PUBLIC, TPM2B_SENSITIVE_CREATE, TPMT_PUBLIC


def csr_args(swtpm, d, kt="rsa", **kw):
    args = {"tcti": swtpm.tcti, "key_type": kt, "pub_path": str(d / ("%s.pub" % kt)),
            "priv_path": str(d / ("%s.priv" % kt)), "csr_path": str(d / ("%s.csr" % kt)),
            "common_name": "node1.example.org", "subject": {"O": "Acme", "serialNumber": "SN-0001"},
            "subject_alt_names": ["DNS:node1.example.org", "IP:192.0.2.10"]}
    args.update(kw)
    return args


def task(name, args, **kw):
    t = {"name": name, FQCN + "devid_csr": args}
    t.update(kw)
    return t


def pytss_reload_public(swtpm, pub_blob, priv_blob, kt):
    """Load SPIRE-format blobs with raw tpm2-pytss under a primary built here from SPIRE's template."""
    name, conf = swtpm.tcti.split(":", 1)  # the cmd TCTI through socat to the swtpm socket
    tcti = TCTILdr(name, conf)
    ectx = ESAPI(tcti)
    try:
        attrs = TPMA_OBJECT.parse(SPIRE_SRK_ATTRS.replace("|", "|"))
        tmpl = TPM2B_PUBLIC.parse("rsa2048:aes128cfb" if kt == "rsa" else "ecc256:aes128cfb",
                                  objectAttributes=attrs, nameAlg="sha256")
        parent = ectx.create_primary(TPM2B_SENSITIVE_CREATE(), tmpl, ESYS_TR.OWNER)[0]
        try:
            pub, _ = TPMT_PUBLIC.unmarshal(pub_blob)
            h = ectx.load(parent, TPM2B_PRIVATE(buffer=priv_blob), TPM2B_PUBLIC(publicArea=pub))
            try:
                return bytes(ectx.read_public(h)[0].to_der())
            finally:
                ectx.flush_context(h)
        finally:
            ectx.flush_context(parent)
    finally:
        ectx.close()
        # ESAPI.close() leaves the cmd TCTI's socat running, and it holds swtpm's one connection: every later
        # client (tpm2-tools, the modules) would wait forever. Closing the TCTI ends socat.
        tcti.close()


@pytest.mark.parametrize("kt", ["rsa", "ecc"])
def test_creates_spire_format_key_and_tpm_signed_csr(swtpm, run_playbook, tmp_path, kt):
    res = run_playbook(tasks=[task("csr", csr_args(swtpm, tmp_path, kt))], expect_rc=0).task("csr")
    assert res["changed"] is True and res["key_created"] is True and res["key_type"] == kt
    pub, priv, csr = (tmp_path / ("%s.%s" % (kt, ext)) for ext in ("pub", "priv", "csr"))
    assert stat.S_IMODE(os.stat(priv).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(pub).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(csr).st_mode) == 0o644
    assert csr.read_text() == res["csr"]

    # openssl: the CSR's self-signature (made in the TPM) verifies
    openssl("req", "-in", str(csr), "-noout", "-verify")
    parsed = x509.load_pem_x509_csr(csr.read_bytes())
    assert parsed.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "node1.example.org"
    assert parsed.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Acme"
    assert parsed.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "SN-0001"
    sans = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["node1.example.org"]
    assert [str(i) for i in sans.get_values_for_type(x509.IPAddress)] == ["192.0.2.10"]

    spki = csr_public_der(csr)
    assert res["public_key_sha256"] == hashlib.sha256(spki).hexdigest()
    assert serialization.load_pem_public_key(res["public_key"].encode()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == spki

    # tpm2-tools reads the public file as a bare TPMT_PUBLIC with the DevID attributes
    printed = swtpm.tool("tpm2_print", "-t", "TPMT_PUBLIC", str(pub)).stdout
    assert "value: fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign" in printed
    assert ("value: rsassa" if kt == "rsa" else "value: ecdsa") in printed
    assert "restricted" not in printed

    # tpm2-tools: with the 2-byte sizes prepended, the blobs load under a primary with SPIRE's attributes ...
    tools_format_from_spire(pub, priv, tmp_path / "t.pub", tmp_path / "t.priv")
    alg = "rsa2048:null:aes128cfb" if kt == "rsa" else "ecc256:null:aes128cfb"
    swtpm.tool("tpm2_createprimary", "-Q", "-C", "o", "-g", "sha256", "-G", alg, "-a", SPIRE_SRK_ATTRS,
               "-c", str(tmp_path / "p.ctx"))
    swtpm.tool("tpm2_flushcontext", "-t")  # no resource manager in front of swtpm: tpm2-tools leaves objects
    swtpm.tool("tpm2_load", "-Q", "-C", str(tmp_path / "p.ctx"), "-u", str(tmp_path / "t.pub"), "-r",
               str(tmp_path / "t.priv"), "-c", str(tmp_path / "k.ctx"))
    swtpm.tool("tpm2_flushcontext", "-t")
    swtpm.tool("tpm2_readpublic", "-Q", "-c", str(tmp_path / "k.ctx"), "-f", "der", "-o", str(tmp_path / "k.der"))
    swtpm.tool("tpm2_flushcontext", "-t")
    assert (tmp_path / "k.der").read_bytes() == spki
    # ... and not under tpm2-tools' default primary (no noDA): SPIRE's parent is what they were made for
    swtpm.tool("tpm2_createprimary", "-Q", "-C", "o", "-c", str(tmp_path / "d.ctx"))
    swtpm.tool("tpm2_flushcontext", "-t")
    bad = swtpm.tool("tpm2_load", "-C", str(tmp_path / "d.ctx"), "-u", str(tmp_path / "t.pub"), "-r",
                     str(tmp_path / "t.priv"), "-c", str(tmp_path / "k2.ctx"), check=False)
    swtpm.tool("tpm2_flushcontext", "-t")
    assert bad.returncode != 0 and "integrity" in bad.stderr.lower()

    # raw tpm2-pytss under a SPIRE-template primary built in this test
    assert pytss_reload_public(swtpm, pub.read_bytes(), priv.read_bytes(), kt) == spki
    assert_tpm_clean(swtpm)


def test_idempotence_subject_change_force_and_key_type(swtpm, run_playbook, tmp_path):
    base = csr_args(swtpm, tmp_path)
    shared = {"pub_path": base["pub_path"], "priv_path": base["priv_path"], "csr_path": base["csr_path"]}
    r = run_playbook(tasks=[
        task("check fresh", base, check_mode=True),
        task("create", base),
        task("again", base),
        task("again check", base, check_mode=True),
        task("subject check", dict(base, common_name="node2.example.org"), check_mode=True, diff=True),
        task("subject", dict(base, common_name="node2.example.org")),
        task("subject again", dict(base, common_name="node2.example.org")),
        task("force", dict(base, common_name="node2.example.org", force=True)),
        task("to ecc", dict(csr_args(swtpm, tmp_path, "ecc", common_name="node2.example.org"), **shared)),
        task("ecc again", dict(csr_args(swtpm, tmp_path, "ecc", common_name="node2.example.org"), **shared)),
    ], expect_rc=0)
    fresh = r.task("check fresh")
    assert fresh["changed"] is True and fresh["key_created"] is True and fresh["csr"] is None
    create, again, again_check = r.task("create"), r.task("again"), r.task("again check")
    assert create["changed"] is True
    assert again["changed"] is False and again["key_created"] is False and again["written"] == []
    assert again_check["changed"] is False
    assert again["csr"] == create["csr"] and again["public_key_sha256"] == create["public_key_sha256"]

    sc = r.task("subject check")
    assert sc["changed"] is True and sc["written"] == [base["csr_path"]]
    after = x509.load_pem_x509_csr(sc["diff"][0]["after"].encode())
    assert after.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "node2.example.org"
    assert sc["diff"][0]["before"] == create["csr"]
    subj = r.task("subject")
    assert subj["changed"] is True and subj["key_created"] is False
    assert subj["public_key_sha256"] == create["public_key_sha256"]
    assert subj["written"] == [base["csr_path"]]
    assert r.task("subject again")["changed"] is False

    forced = r.task("force")
    assert forced["changed"] is True and forced["key_created"] is True
    assert forced["public_key_sha256"] != create["public_key_sha256"]
    ecc = r.task("to ecc")
    assert ecc["changed"] is True and ecc["key_created"] is True and ecc["key_type"] == "ecc"
    assert "BEGIN PUBLIC KEY" in ecc["public_key"]
    assert serialization.load_pem_public_key(ecc["public_key"].encode()).curve.name == "secp256r1"
    assert r.task("ecc again")["changed"] is False

    # what is on disk is the final ECC key and its CSR (openssl agrees with the reported hash)
    assert hashlib.sha256(csr_public_der(tmp_path / "rsa.csr")).hexdigest() == ecc["public_key_sha256"]
    # the check-mode task wrote nothing: the file's content is the final one
    assert (tmp_path / "rsa.csr").read_text() == ecc["csr"]
    assert_tpm_clean(swtpm)


def test_check_mode_writes_nothing_and_diff_hides_private_blob(swtpm, run_playbook, tmp_path):
    args = csr_args(swtpm, tmp_path)
    r = run_playbook(tasks=[task("csr", args)], check=True, diff=True, expect_rc=0)
    assert r.task("csr")["changed"] is True
    assert not any((tmp_path / n).exists() for n in ("rsa.pub", "rsa.priv", "rsa.csr"))
    r = run_playbook(tasks=[task("csr", args)], diff=True, expect_rc=0)
    diffs = r.task("csr")["diff"]
    priv_diff = [d for d in diffs if d["after_header"].endswith(".priv")][0]
    assert priv_diff["after"].startswith("<secret")
    priv = (tmp_path / "rsa.priv").read_bytes()
    assert priv.hex() not in r.stdout and priv[10:40].hex() not in r.stdout
    assert_tpm_clean(swtpm)


def test_owner_group_mode(swtpm, run_playbook, tmp_path):
    args = csr_args(swtpm, tmp_path, owner="nobody", group="nogroup", mode="0640")
    fqdn_args = csr_args(swtpm, tmp_path, "ecc")
    del fqdn_args["common_name"]
    r = run_playbook(tasks=[task("csr", args), task("csr again", args), task("fqdn", fqdn_args)], expect_rc=0)
    assert r.task("csr again")["changed"] is False
    # common_name defaults to the host's FQDN
    fq = x509.load_pem_x509_csr(r.task("fqdn")["csr"].encode())
    assert fq.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == socket.getfqdn()
    for ext in ("pub", "priv", "csr"):
        st = os.stat(tmp_path / ("rsa." + ext))
        assert stat.S_IMODE(st.st_mode) == 0o640
        assert st.st_uid == __import__("pwd").getpwnam("nobody").pw_uid
    r = run_playbook(tasks=[task("csr mode", dict(args, mode="0600"))], expect_rc=0)
    assert r.task("csr mode")["changed"] is True and r.task("csr mode")["key_created"] is False


def test_blobs_from_tpm2_tools_default_primary_are_refused(swtpm, run_playbook, tmp_path):
    """A DevID made with tpm2_createprimary/tpm2_create defaults (size prefixes stripped) does not load under
    SPIRE's parent: the module says so instead of silently replacing the key."""
    swtpm.tool("tpm2_createprimary", "-Q", "-C", "o", "-c", str(tmp_path / "prim.ctx"))
    swtpm.tool("tpm2_flushcontext", "-t")
    swtpm.tool("tpm2_create", "-Q", "-C", str(tmp_path / "prim.ctx"), "-G", "rsa2048:rsassa-sha256:null",
               "-a", "sign|fixedtpm|fixedparent|sensitivedataorigin|userwithauth",
               "-u", str(tmp_path / "tools.pub"), "-r", str(tmp_path / "tools.priv"))
    swtpm.tool("tpm2_flushcontext", "-t")
    spire_format_from_tools(tmp_path / "tools.pub", tmp_path / "tools.priv", tmp_path / "rsa.pub",
                            tmp_path / "rsa.priv")
    before = (tmp_path / "rsa.priv").read_bytes()
    r = run_playbook(tasks=[task("csr", csr_args(swtpm, tmp_path))], expect_rc=2)
    res = r.task("csr")
    assert res["failed"] is True
    assert "do not load under SPIRE's RSA parent" in res["msg"]
    assert "integrity check failed" in res["msg"]
    assert "tpm2-tools' default primary" in res["msg"]
    assert (tmp_path / "rsa.priv").read_bytes() == before
    # with the size prefixes still on (tpm2-tools' own format), the module names that instead
    (tmp_path / "rsa.pub").write_bytes((tmp_path / "tools.pub").read_bytes())
    res = run_playbook(tasks=[task("csr", csr_args(swtpm, tmp_path))], expect_rc=2).task("csr")
    assert "starts with a 2-byte size" in res["msg"] and "TPM2B_PUBLIC as tpm2-tools writes it" in res["msg"]
    # force: true replaces the foreign key by a SPIRE one
    res = run_playbook(tasks=[task("csr", csr_args(swtpm, tmp_path, force=True))], expect_rc=0).task("csr")
    assert res["key_created"] is True
    assert_tpm_clean(swtpm)


def test_errors_unwritable_path_no_tpm_wrong_password(swtpm_factory, run_playbook, tmp_path):
    tpm = swtpm_factory(ek_certs=False)
    good = csr_args(tpm, tmp_path, devid_password="s3cret-devid")
    missing_dir = dict(good, csr_path=str(tmp_path / "nope" / "x.csr"))
    no_tpm = dict(good, tcti=dead_socket_tcti(tmp_path))
    r = run_playbook(tasks=[
        task("missing dir", missing_dir, ignore_errors=True),
        task("no tpm", no_tpm, ignore_errors=True),
        task("create", good),
        task("wrong password", dict(good, common_name="other.example.org", devid_password="wrong"),
             ignore_errors=True),
    ])
    md = r.task("missing dir")
    assert md["failed"] and "csr_path" in md["msg"] and "does not exist" in md["msg"]
    assert "Fix:" in md["msg"]
    nt = r.task("no tpm")
    assert nt["failed"] and "the TPM socket %s/nobody-serves-this.sock" % tmp_path in nt["msg"]
    assert "does not exist" in nt["msg"] and "Fix: start the software TPM" in nt["msg"]
    assert r.task("create")["changed"] is True
    wp = r.task("wrong password")
    assert wp["failed"] and "rejected devid_password" in wp["msg"]
    assert "s3cret-devid" not in r.stdout
    # nothing was written by the failed run: the CSR is still the one for node1
    parsed = x509.load_pem_x509_csr((tmp_path / "rsa.csr").read_bytes())
    assert parsed.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "node1.example.org"
    assert_tpm_clean(tpm)
