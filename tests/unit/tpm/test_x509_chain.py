"""x509.py: loading PEM/DER files and directories, chain building and every rejection reason.

Certificates are minted here with cryptography; each failure case changes exactly one thing from a good chain.
The cross-check with openssl (`openssl verify`) keeps the 'good chain' cases honest.
"""

import datetime
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier

from ansible_collections.trustroot.spire_tpm.plugins.module_utils import x509 as xu
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError

NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]) if cn else x509.Name([])


def mint(subject, key, issuer=None, issuer_key=None, ca=True, path_length=None, not_before=None, not_after=None,
         key_usage=True, extra=(), basic_constraints=True, sign_key=None):
    issuer = issuer or subject
    issuer_key = issuer_key or key
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(not_before or NOW - DAY).not_valid_after(not_after or NOW + 365 * DAY))
    if basic_constraints:
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
    if ca and key_usage:
        b = b.add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                          data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                          crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
    for ext, crit in extra:
        b = b.add_extension(ext, critical=crit)
    return b.sign(sign_key or issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki():
    root_key = ec.generate_private_key(ec.SECP256R1())
    inter_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root = mint("Test Root", root_key)
    inter = mint("Test EK CA", inter_key, "Test Root", root_key, path_length=0)
    # an EK-like leaf: empty subject, critical SAN with a directoryName, EK certificate EKU
    san = x509.SubjectAlternativeName([x509.DirectoryName(x509.Name([
        x509.NameAttribute(ObjectIdentifier("2.23.133.2.1"), "id:49424D00"),
        x509.NameAttribute(ObjectIdentifier("2.23.133.2.2"), "swtpm"),
        x509.NameAttribute(ObjectIdentifier("2.23.133.2.3"), "id:20191023")]))])
    eku = x509.ExtendedKeyUsage([ObjectIdentifier("2.23.133.8.1")])
    leaf = mint("", leaf_key, "Test EK CA", inter_key, ca=False, extra=[(san, True), (eku, False)])
    return dict(root=root, root_key=root_key, inter=inter, inter_key=inter_key, leaf=leaf, leaf_key=leaf_key)


def _pem(*certs):
    return "".join(xu.to_pem(c) for c in certs).encode()


def test_good_chain_root_plus_intermediate_anchor_set(pki):
    assert xu.verify_chain(pki["leaf"], [pki["root"], pki["inter"]]) == (True, None)
    chain = xu.build_chain(pki["leaf"], [pki["root"]], [pki["inter"]])
    assert [c.subject for c in chain] == [pki["leaf"].subject, pki["inter"].subject, pki["root"].subject]


def test_good_chain_agrees_with_openssl(pki, tmp_path):
    (tmp_path / "root.pem").write_bytes(_pem(pki["root"]))
    (tmp_path / "inter.pem").write_bytes(_pem(pki["inter"]))
    (tmp_path / "leaf.pem").write_bytes(_pem(pki["leaf"]))
    out = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "root.pem"), "-untrusted",
                          str(tmp_path / "inter.pem"), "-purpose", "any", str(tmp_path / "leaf.pem")],
                         capture_output=True, text=True)
    # openssl refuses the critical SAN made only of a directoryName? it does not: it must agree with us
    assert out.returncode == 0, out.stderr + out.stdout
    assert xu.verify_chain(pki["leaf"], [pki["root"]], [pki["inter"]])[0] is True


def test_intermediate_missing_fails_like_spire(pki):
    ok, err = xu.verify_chain(pki["leaf"], [pki["root"]])
    assert not ok and "no trusted issuer" in err and "Test Root" in err


def test_intermediate_as_anchor_is_enough(pki):
    assert xu.verify_chain(pki["leaf"], [pki["inter"]]) == (True, None)


def test_same_names_other_keys_fail(pki):
    other_root_key = ec.generate_private_key(ec.SECP256R1())
    other_inter_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other_root = mint("Test Root", other_root_key)
    other_inter = mint("Test EK CA", other_inter_key, "Test Root", other_root_key)
    ok, err = xu.verify_chain(pki["leaf"], [other_root, other_inter])
    assert not ok and "no trusted issuer" in err
    # the genuine intermediate under a foreign root with the same name fails as well
    ok, err = xu.verify_chain(pki["leaf"], [other_root], [pki["inter"]])
    assert not ok


def test_expired_leaf(pki):
    leaf = mint("", pki["leaf_key"], "Test EK CA", pki["inter_key"], ca=False,
                not_before=NOW - 10 * DAY, not_after=NOW - DAY)
    ok, err = xu.verify_chain(leaf, [pki["root"], pki["inter"]])
    assert not ok and "expired" in err


def test_not_yet_valid_intermediate(pki):
    inter = mint("Test EK CA", pki["inter_key"], "Test Root", pki["root_key"], not_before=NOW + DAY)
    ok, err = xu.verify_chain(pki["leaf"], [pki["root"]], [inter])
    assert not ok and "not valid before" in err


def test_validity_uses_given_time(pki):
    future = NOW + 400 * DAY
    ok, err = xu.verify_chain(pki["leaf"], [pki["root"], pki["inter"]], now=future)
    assert not ok and "expired" in err


def test_issuer_not_a_ca(pki):
    inter = mint("Test EK CA", pki["inter_key"], "Test Root", pki["root_key"], ca=False)
    ok, err = xu.verify_chain(pki["leaf"], [pki["root"]], [inter])
    assert not ok and "not a CA" in err


def test_issuer_without_basic_constraints(pki):
    inter = mint("Test EK CA", pki["inter_key"], "Test Root", pki["root_key"], basic_constraints=False,
                 key_usage=False)
    ok, err = xu.verify_chain(pki["leaf"], [pki["root"]], [inter])
    assert not ok and "basicConstraints" in err


def test_issuer_without_keycertsign(pki):
    ku = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                       data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                       encipher_only=False, decipher_only=False)
    inter = mint("Test EK CA", pki["inter_key"], "Test Root", pki["root_key"], key_usage=False, extra=[(ku, True)])
    ok, err = xu.verify_chain(pki["leaf"], [pki["root"]], [inter])
    assert not ok and "keyCertSign" in err


def test_path_length_exceeded(pki):
    root = mint("PL Root", pki["root_key"], path_length=0)
    inter = mint("Test EK CA", pki["inter_key"], "PL Root", pki["root_key"])
    # leaf -> inter -> root(pathlen 0): one CA below the root → rejected
    ok, err = xu.verify_chain(pki["leaf"], [root], [inter])
    assert not ok and "allows 0" in err


def test_unhandled_critical_extension_rejected(pki):
    unknown = x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")
    leaf = mint("", pki["leaf_key"], "Test EK CA", pki["inter_key"], ca=False, extra=[(unknown, True)])
    ok, err = xu.verify_chain(leaf, [pki["root"], pki["inter"]])
    assert not ok and "1.3.6.1.4.1.99999.1" in err
    leaf_ok = mint("", pki["leaf_key"], "Test EK CA", pki["inter_key"], ca=False, extra=[(unknown, False)])
    assert xu.verify_chain(leaf_ok, [pki["root"], pki["inter"]])[0]


def test_bad_signature(pki):
    # right issuer name, signed by the wrong key
    leaf = mint("", pki["leaf_key"], "Test EK CA", pki["inter_key"], ca=False, sign_key=pki["root_key"])
    ok, err = xu.verify_chain(leaf, [pki["root"], pki["inter"]])
    assert not ok


def test_no_anchors(pki):
    ok, err = xu.verify_chain(pki["leaf"], [])
    assert not ok and "no trust anchors" in err


def test_load_dir_with_pem_bundle_der_and_junk(pki, tmp_path):
    (tmp_path / "bundle.pem").write_bytes(_pem(pki["root"], pki["inter"]))
    (tmp_path / "leaf.der").write_bytes(pki["leaf"].public_bytes(serialization.Encoding.DER))
    (tmp_path / ".hidden").write_text("not a cert")
    (tmp_path / "empty.pem").write_text("")
    certs = xu.load_certificates(tmp_path)
    assert sorted(c.serial_number for c in certs) == sorted(
        c.serial_number for c in (pki["root"], pki["inter"], pki["leaf"]))
    (tmp_path / "README").write_text("hello")
    with pytest.raises(SpireTpmError, match="README"):
        xu.load_certificates(tmp_path)
    assert len(xu.load_certificates(tmp_path, skip_invalid=True)) == 3


def test_load_single_files(pki, tmp_path):
    f = tmp_path / "one.der"
    f.write_bytes(pki["root"].public_bytes(serialization.Encoding.DER))
    assert xu.load_certificates(f)[0].serial_number == pki["root"].serial_number
    with pytest.raises(SpireTpmError, match="does not exist"):
        xu.load_certificates(tmp_path / "nope")
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(SpireTpmError, match="malformed PEM"):
        xu.load_certificates(bad)


def test_summary_fields(pki):
    s = xu.certificate_summary(pki["leaf"])
    assert s["subject"] == "" and s["issuer"] == "CN=Test EK CA"
    assert int(s["serial"], 16) == pki["leaf"].serial_number
    assert s["not_after"].endswith("Z")


def test_old_cryptography_fallbacks(pki, monkeypatch):
    """Without verify_directly_issued_by / load_pem_x509_certificates (cryptography < 40, e.g. Debian bookworm's
    python3-cryptography 38) the hand-written signature check and PEM splitting give the same answers."""
    monkeypatch.delattr(x509.Certificate, "verify_directly_issued_by", raising=False)
    monkeypatch.delattr(x509, "load_pem_x509_certificates", raising=False)
    assert not hasattr(pki["leaf"], "verify_directly_issued_by")
    assert xu.verify_chain(pki["leaf"], [pki["root"]], [pki["inter"]]) == (True, None)
    forged = mint("", pki["leaf_key"], "Test EK CA", pki["inter_key"], ca=False, sign_key=pki["root_key"])
    assert xu.verify_chain(forged, [pki["root"], pki["inter"]])[0] is False
    # an ECDSA-signed intermediate (the root key is P-256) takes the ECDSA path, the leaf the RSA path
    certs = xu.parse_certificates(_pem(pki["root"], pki["inter"], pki["leaf"]))
    assert [c.serial_number for c in certs] == [pki[k].serial_number for k in ("root", "inter", "leaf")]


def test_critical_name_constraints_rejected_like_unhandled(pki):
    nc = x509.NameConstraints(permitted_subtrees=[x509.DNSName("example.com")], excluded_subtrees=None)
    inter = mint("Test EK CA", pki["inter_key"], "Test Root", pki["root_key"], extra=[(nc, True)])
    ok, err = xu.verify_chain(pki["leaf"], [pki["root"]], [inter])
    assert not ok and "2.5.29.30" in err
