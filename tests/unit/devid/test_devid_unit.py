"""devid.py / attest.py pure parts: templates byte for byte, blob formats, subjects, SANs, CSR matching, selectors.

The expected template bytes are written out by hand from the TPM 2.0 spec (Part 2 TPMT_PUBLIC layout) and the
SPIRE / go-tpm-tools templates (spire.md), not produced by our code.
"""

import datetime
import hashlib
import struct
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import attest, devid, devid_csr

# TPMA_OBJECT bits (TPM 2.0 Part 2, 8.3)
FIXEDTPM, FIXEDPARENT, SDO, USERWITHAUTH, NODA = 0x2, 0x10, 0x20, 0x40, 0x400
RESTRICTED, DECRYPT, SIGN = 0x10000, 0x20000, 0x40000
TPM_ALG = dict(RSA=0x0001, SHA256=0x000B, AES=0x0006, CFB=0x0043, NULL=0x0010, RSASSA=0x0014, ECDSA=0x0018,
               ECC=0x0023)
P256 = 0x0003


def u16(*vals):
    return b"".join(struct.pack(">H", v) for v in vals)


def u32(v):
    return struct.pack(">I", v)


SRK_ATTRS = FIXEDTPM | FIXEDPARENT | SDO | USERWITHAUTH | NODA | RESTRICTED | DECRYPT
DEVID_ATTRS = FIXEDTPM | FIXEDPARENT | SDO | USERWITHAUTH | SIGN

EXPECTED = {
    # type, nameAlg, attributes, authPolicy(empty), symmetric AES-128-CFB, scheme NULL, keyBits, exponent 0, unique ""
    "srk-rsa": u16(TPM_ALG["RSA"], TPM_ALG["SHA256"]) + u32(SRK_ATTRS) + u16(0)
    + u16(TPM_ALG["AES"], 128, TPM_ALG["CFB"]) + u16(TPM_ALG["NULL"]) + u16(2048) + u32(0) + u16(0),
    # ECC: symmetric, scheme NULL, curve P-256, kdf NULL, unique x="" y=""
    "srk-ecc": u16(TPM_ALG["ECC"], TPM_ALG["SHA256"]) + u32(SRK_ATTRS) + u16(0)
    + u16(TPM_ALG["AES"], 128, TPM_ALG["CFB"]) + u16(TPM_ALG["NULL"]) + u16(P256) + u16(TPM_ALG["NULL"]) + u16(0, 0),
    "devid-rsa": u16(TPM_ALG["RSA"], TPM_ALG["SHA256"]) + u32(DEVID_ATTRS) + u16(0)
    + u16(TPM_ALG["NULL"]) + u16(TPM_ALG["RSASSA"], TPM_ALG["SHA256"]) + u16(2048) + u32(0) + u16(0),
    "devid-ecc": u16(TPM_ALG["ECC"], TPM_ALG["SHA256"]) + u32(DEVID_ATTRS) + u16(0)
    + u16(TPM_ALG["NULL"]) + u16(TPM_ALG["ECDSA"], TPM_ALG["SHA256"]) + u16(P256) + u16(TPM_ALG["NULL"]) + u16(0, 0),
    "ak": u16(TPM_ALG["RSA"], TPM_ALG["SHA256"]) + u32(FIXEDTPM | FIXEDPARENT | SDO | USERWITHAUTH | SIGN | RESTRICTED)
    + u16(0) + u16(TPM_ALG["NULL"]) + u16(TPM_ALG["RSASSA"], TPM_ALG["SHA256"]) + u16(2048) + u32(0) + u16(0),
}


@pytest.mark.parametrize("kt", ["rsa", "ecc"])
def test_srk_template_is_spires_byte_for_byte(kt):
    assert devid.marshal_public(devid.srk_template(kt)) == EXPECTED["srk-" + kt]


@pytest.mark.parametrize("kt", ["rsa", "ecc"])
def test_devid_template_bytes(kt):
    assert devid.marshal_public(devid.devid_template(kt)) == EXPECTED["devid-" + kt]


def test_ak_template_bytes():
    assert devid.marshal_public(devid.ak_template()) == EXPECTED["ak"]


def test_unknown_key_type():
    with pytest.raises(SpireTpmError, match="use 'rsa' or 'ecc'"):
        devid.srk_template("dsa")


def test_object_name_is_namealg_and_sha256_of_public():
    blob = EXPECTED["devid-rsa"]
    pub = devid.parse_public_blob(blob)
    assert devid.object_name(pub) == b"\x00\x0b" + hashlib.sha256(blob).digest()


def test_public_blob_round_trip_and_size_prefix_rejected():
    blob = EXPECTED["devid-ecc"]
    assert devid.marshal_public(devid.parse_public_blob(blob)) == blob
    with pytest.raises(SpireTpmError, match="2-byte size.*tpm2-tools"):
        devid.parse_public_blob(struct.pack(">H", len(blob)) + blob, "/x/devid.pub")
    with pytest.raises(SpireTpmError, match="trailing bytes"):
        devid.parse_public_blob(blob + b"\x00\x01\x02", "/x/devid.pub")
    with pytest.raises(SpireTpmError, match="is empty"):
        devid.parse_public_blob(b"", "/x/devid.pub")


def test_private_blob_size_prefix_rejected():
    inner = b"\x00\x20" + b"\x11" * 32 + b"\x22" * 100   # HMAC size 32 first, as a real private area
    assert bytes(devid.parse_private_blob(inner).buffer) == inner
    with pytest.raises(SpireTpmError, match="2-byte size"):
        devid.parse_private_blob(struct.pack(">H", len(inner)) + inner)


def test_check_devid_public_rejects_what_spire_rejects():
    assert devid.check_devid_public(devid.parse_public_blob(EXPECTED["devid-rsa"])) == "rsa"
    with pytest.raises(SpireTpmError, match="not a signing key"):
        devid.check_devid_public(devid.parse_public_blob(EXPECTED["srk-rsa"]))
    nohash = bytearray(EXPECTED["devid-rsa"])
    # scheme RSASSA → NULL (drop the hash field)
    i = 10 + 2
    nohash = bytes(nohash[:i]) + u16(TPM_ALG["NULL"]) + bytes(nohash[i + 4:])
    with pytest.raises(SpireTpmError, match="hash algorithm is NULL"):
        devid.check_devid_public(devid.parse_public_blob(nohash))


def test_subject_order_and_attributes():
    name = devid_csr.build_subject("node1.example.org", {"O": "Acme", "OU": ["Ops", "Edge"], "serialNumber": "SN42",
                                                     "C": "DE"})
    oids = [a.oid for a in name]
    assert oids == [NameOID.COUNTRY_NAME, NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME,
                    NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.COMMON_NAME, NameOID.SERIAL_NUMBER]
    assert name.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "SN42"
    with pytest.raises(SpireTpmError, match="unsupported attribute"):
        devid_csr.build_subject("x", {"CN": "y"})
    with pytest.raises(SpireTpmError, match="two-letter"):
        devid_csr.build_subject("x", {"C": "Germany"})


def test_sans():
    sans = devid_csr.parse_sans(["DNS:a.example", "IP:192.0.2.1", "ip:2001:db8::1", "URI:spiffe://td/x", "email:a@b.c"])
    assert [type(s).__name__ for s in sans] == ["DNSName", "IPAddress", "IPAddress", "UniformResourceIdentifier",
                                                "RFC822Name"]
    assert str(sans[2].value) == "2001:db8::1"
    for bad, msg in (("a.example", "no type prefix"), ("IP:notanip", "not an IP"), ("X400:foo", "unknown type")):
        with pytest.raises(SpireTpmError, match=msg):
            devid_csr.parse_sans([bad])


def _csr(key, name, sans=()):
    b = x509.CertificateSigningRequestBuilder().subject_name(name)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_csr_matches_key_subject_and_sans():
    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    name = devid_csr.build_subject("n1", {"O": "Acme"})
    sans = devid_csr.parse_sans(["DNS:n1", "IP:127.0.0.1"])
    pem = _csr(key, name, sans)
    assert devid_csr.csr_matches(pem, key.public_key(), name, list(reversed(sans)))
    assert not devid_csr.csr_matches(pem, other.public_key(), name, sans)
    assert not devid_csr.csr_matches(pem, key.public_key(), devid_csr.build_subject("n2", {"O": "Acme"}), sans)
    assert not devid_csr.csr_matches(pem, key.public_key(), name, sans[:1])
    assert not devid_csr.csr_matches(b"garbage", key.public_key(), name, sans)
    assert not devid_csr.csr_matches(None, key.public_key(), name, sans)


def test_trust_domain_and_agent_id():
    assert attest.normalize_trust_domain("spiffe://example.org/") == "example.org"
    for bad in ("", "Example.org", "a b", "td/x"):
        with pytest.raises(SpireTpmError, match="not a valid SPIFFE trust domain"):
            attest.normalize_trust_domain(bad)


NOW = datetime.datetime.now(datetime.timezone.utc)


def _cert(subject, issuer, key, issuer_key, ca):
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(NOW - datetime.timedelta(days=1))
            .not_valid_after(NOW + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(issuer_key, hashes.SHA256()))


def _n(cn=None, o=None):
    attrs = []
    if o:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o))
    if cn:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def test_selectors_and_agent_id_follow_spire():
    rk, ik, lk = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _cert(_n("Root"), _n("Root"), rk, rk, True)
    inter = _cert(_n("Inter"), _n("Root"), ik, rk, True)
    leaf = _cert(_n("node1"), _n("Inter"), lk, ik, False)
    der = lambda c: c.public_bytes(serialization.Encoding.DER)  # noqa: E731
    sel = attest.selectors(leaf, [[leaf, inter, root]])
    assert sel == ["tpm_devid:subject:cn:node1", "tpm_devid:issuer:cn:Inter",
                   "tpm_devid:ca:fingerprint:" + hashlib.sha1(der(inter)).hexdigest(),
                   "tpm_devid:ca:fingerprint:" + hashlib.sha1(der(root)).hexdigest()]
    assert attest.agent_id("example.org", leaf) == (
        "spiffe://example.org/spire/agent/tpm_devid/" + hashlib.sha1(der(leaf)).hexdigest())
    # empty CN → no subject selector (SPIRE emits subject:cn only when non-empty); duplicates collapse
    nocn = _cert(_n(o="Acme"), _n("Root"), lk, rk, False)
    assert attest.selectors(nocn, [[nocn, root], [nocn, root]]) == [
        "tpm_devid:issuer:cn:Root", "tpm_devid:ca:fingerprint:" + hashlib.sha1(der(root)).hexdigest()]


def test_devid_signature_verification_rsa_and_ecc():
    nonce = b"\x07" * 32
    keys = (rsa.generate_private_key(public_exponent=65537, key_size=2048), ec.generate_private_key(ec.SECP256R1()))
    for key in keys:
        cert = _cert(_n("x"), _n("x"), key, key, False)
        if isinstance(key, rsa.RSAPrivateKey):
            good = key.sign(nonce, padding.PKCS1v15(), hashes.SHA256())
            pss = key.sign(nonce, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
            assert attest.verify_devid_signature(cert, nonce, pss) == "signature verification failed"
        else:
            good = key.sign(nonce, ec.ECDSA(hashes.SHA256()))
        assert attest.verify_devid_signature(cert, nonce, good) is None
        assert attest.verify_devid_signature(cert, b"\x08" * 32, good) == "signature verification failed"


def test_sha1_signed_certificates_are_refused_like_go(tmp_path):
    """cryptography 50 cannot even make SHA-1 signatures: openssl mints the SHA-1 signed leaf."""
    def run(*args):
        subprocess.run(["openssl"] + list(args), check=True, capture_output=True, cwd=tmp_path)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "rk.pem", "-out", "r.pem", "-subj", "/CN=Root",
        "-days", "2", "-sha256")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "lk.pem", "-out",
        "l.csr", "-subj", "/CN=node")
    run("x509", "-req", "-in", "l.csr", "-CA", "r.pem", "-CAkey", "rk.pem", "-set_serial", "5", "-days", "1",
        "-sha1", "-out", "l1.pem")
    run("x509", "-req", "-in", "l.csr", "-CA", "r.pem", "-CAkey", "rk.pem", "-set_serial", "6", "-days", "1",
        "-sha256", "-out", "l256.pem")
    root = x509.load_pem_x509_certificate((tmp_path / "r.pem").read_bytes())
    weak = x509.load_pem_x509_certificate((tmp_path / "l1.pem").read_bytes())
    good = x509.load_pem_x509_certificate((tmp_path / "l256.pem").read_bytes())
    check, chain = attest.check_devid_chain(weak, [], [root], "/ca.pem")
    assert check.ok is False and chain is None
    assert "signed with SHA1" in check.detail and "insecure algorithm" in check.detail
    assert "SHA-256" in check.fix
    check, chain = attest.check_devid_chain(good, [], [root], "/ca.pem")
    assert check.ok is True and len(chain) == 2
    ek = attest.check_ek_chain(weak, [root], "/ek.pem")
    assert ek.ok is False and "insecure algorithm" in ek.detail


def test_pem_files_are_read_as_spire_reads_them(tmp_path):
    k = ec.generate_private_key(ec.SECP256R1())
    a, b = _cert(_n("A"), _n("A"), k, k, True), _cert(_n("B"), _n("B"), k, k, True)
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM)  # noqa: E731
    key_pem = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    f = tmp_path / "bundle.pem"
    f.write_bytes(b"# comment\n" + pem(a) + key_pem + pem(b))
    assert [c.subject for c in attest.load_spire_pem_file(str(f), "devid_ca_path")] == [a.subject, b.subject]
    der = tmp_path / "a.der"
    der.write_bytes(a.public_bytes(serialization.Encoding.DER))
    with pytest.raises(SpireTpmError, match="no PEM CERTIFICATE block.*SPIRE reads PEM only"):
        attest.load_spire_pem_file(str(der), "devid_ca_path")
    with pytest.raises(SpireTpmError, match="is a directory"):
        attest.load_spire_pem_file(str(tmp_path), "endorsement_ca_path")
    with pytest.raises(SpireTpmError, match="does not exist"):
        attest.load_spire_pem_file(str(tmp_path / "nope.pem"), "devid_cert_path")
