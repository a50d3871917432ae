"""devid_certificate's logic (stepca/certificate.py) with the current certificate given as content (current_cert)
and the chain returned (cert_pem): the same decisions as with cert_path, nothing written. The local backend signs
with a CA made here; the CSRs carry software keys (the decision does not care where the key lives). Certificates are
read back with cryptography's parser, not with the module's helpers."""

from __future__ import annotations

import datetime
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca import certificate


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    d = tmp_path_factory.mktemp("ca")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name("Unit DevID CA")).issuer_name(_name("Unit DevID CA"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (d / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "ca.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    return d


def csr_pem(cn="node1.example.org", key=None):
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(_name(cn)).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii"), key


def params(ca, csr, **kw):
    p = {"backend": "local", "state": "present", "csr": csr, "validity": "720h",
         "ca_cert_path": str(ca / "ca.crt"), "ca_key_path": str(ca / "ca.key")}
    p.update(kw)
    return p


def leaf_of(pem):
    return x509.load_pem_x509_certificates(pem.encode("ascii"))[0]


def test_no_certificate_yet_is_issued_and_returned_not_written(ca, tmp_path):
    csr, key = csr_pem()
    before = sorted(os.listdir(str(tmp_path)))
    r = certificate.ensure_certificate(params(ca, csr, current_cert=""))
    assert r["changed"] is True and r["cert_action"] == "issued" and r["cert_path"] is None
    leaf = leaf_of(r["cert_pem"])
    assert leaf.public_key().public_numbers() == key.public_key().public_numbers()
    assert leaf.subject == _name("node1.example.org") and str(leaf.serial_number) == r["serial"]
    assert r["cert_pem"] == "".join(r["chain"])
    assert r["diff"]["before"] == "" and r["diff"]["after"] == r["cert_pem"]
    assert r["diff"]["before_header"] == "current_cert"
    assert "previous_serial" not in r
    assert sorted(os.listdir(str(tmp_path))) == before


def test_a_valid_certificate_is_kept_byte_for_byte(ca):
    csr, _key = csr_pem()
    issued = certificate.ensure_certificate(params(ca, csr, current_cert=""))["cert_pem"]
    # whatever the host's file holds around the PEM blocks is returned as it is (its file stays unchanged)
    current = "# installed by hand\n" + issued + "\n"
    for check_mode in (False, True):
        r = certificate.ensure_certificate(params(ca, csr, current_cert=current), check_mode=check_mode)
        assert r["changed"] is False and r["cert_action"] == "none" and r["diff"] is None
        assert r["cert_pem"] == current
        assert r["serial"] == str(leaf_of(issued).serial_number)


def test_another_key_or_subject_or_garbage_is_replaced(ca):
    csr, _key = csr_pem()
    issued = certificate.ensure_certificate(params(ca, csr, current_cert=""))["cert_pem"]
    other_key_csr, _ = csr_pem()
    r = certificate.ensure_certificate(params(ca, other_key_csr, current_cert=issued))
    assert r["cert_action"] == "issued" and r["previous_serial"] == str(leaf_of(issued).serial_number)
    assert r["cert_pem"] != issued and r["diff"]["before"] == issued
    other_cn_csr, _ = csr_pem("node2.example.org", key=_key)
    r = certificate.ensure_certificate(params(ca, other_cn_csr, current_cert=issued))
    assert r["cert_action"] == "issued" and leaf_of(r["cert_pem"]).subject == _name("node2.example.org")
    r = certificate.ensure_certificate(params(ca, csr, current_cert="not a certificate\n"))
    assert r["cert_action"] == "issued" and r["diff"]["before"] == "not a certificate\n"


def test_due_for_renewal(ca):
    csr, _key = csr_pem()
    issued = certificate.ensure_certificate(params(ca, csr, current_cert=""))["cert_pem"]
    r = certificate.ensure_certificate(params(ca, csr, current_cert=issued, renew_before="721h"))
    assert r["changed"] is True and r["cert_action"] == "renewed"
    assert r["previous_serial"] == str(leaf_of(issued).serial_number) != r["serial"]


def test_check_mode_predicts_and_returns_no_chain(ca):
    csr, _key = csr_pem()
    r = certificate.ensure_certificate(params(ca, csr, current_cert=""), check_mode=True)
    assert r["changed"] is True and r["cert_action"] == "issued" and r["cert_pem"] is None


def test_cert_path_mode_returns_the_file_content(ca, tmp_path):
    csr, _key = csr_pem()
    path = tmp_path / "devid.crt"
    r = certificate.ensure_certificate(params(ca, csr, cert_path=str(path)))
    assert r["cert_action"] == "issued" and r["cert_path"] == str(path)
    assert path.read_text() == r["cert_pem"]
    path.write_text(path.read_text() + "\n")
    r = certificate.ensure_certificate(params(ca, csr, cert_path=str(path)))
    assert r["changed"] is False and r["cert_action"] == "none" and r["cert_pem"] == path.read_text()


@pytest.mark.parametrize("extra, match", [
    ({"current_cert": "", "cert_path": "/x/devid.crt"}, "current_cert and cert_path are both set"),
    ({"current_cert": "", "state": "absent"}, "state=absent needs cert_path"),
    ({}, "neither cert_path nor current_cert is set"),
])
def test_bad_combinations(ca, extra, match):
    csr, _key = csr_pem()
    with pytest.raises(SpireTpmError, match=match) as err:
        certificate.ensure_certificate(params(ca, csr, **extra))
    assert err.value.fix
