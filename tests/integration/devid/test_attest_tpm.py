"""attest.py's verifiers fed real TPM output from swtpm, then tampered with: each check must be able to fail.

(The module-level tests drive the happy path and operator-facing failures; here the cryptographic checks are
exercised directly: a Certify of another key, altered attestation data, a credential made for another Name, an EK
certificate from another TPM.)
"""

import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import attest, devid, ek
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm.context import TSS2_Exception, open_tpm

from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_SE, TPMA_SESSION
from tpm2_pytss.types import TPM2B_DATA, TPMT_SIG_SCHEME, TPMT_SYM_DEF
from tpm2_pytss.utils import make_credential


def _load_new_devid(tpm, kt="rsa"):
    blobs = devid.create_devid(tpm, kt)
    return devid.load_devid(tpm, blobs.pub_blob, blobs.priv_blob)


def test_certify_verification_catches_other_key_and_tampering(swtpm):
    with open_tpm(swtpm.tcti) as tpm:
        h1, pub1 = _load_new_devid(tpm, "rsa")
        ak, ak_pub = attest.create_ak(tpm)
        attest_data, sig = tpm.esapi.certify(h1, ak, TPM2B_DATA(), TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL))
        raw = bytes(attest_data)
        assert attest.verify_certify(ak_pub, pub1, raw, sig) is None
        # the same certification presented for another DevID public → Name mismatch
        tpm.flush(h1)
        h2, pub2 = _load_new_devid(tpm, "ecc")
        reason = attest.verify_certify(ak_pub, pub2, raw, sig)
        assert reason and "differs from the Name of the DevID public blob" in reason
        # one flipped bit in the attestation data → the AK signature no longer verifies
        tampered = bytearray(raw)
        tampered[-1] ^= 1
        assert "does not verify" in attest.verify_certify(ak_pub, pub1, bytes(tampered), sig)
        # an AK public that is not RSA (here the ECC DevID's) is refused as SPIRE does
        assert "only RSA keys are supported" in attest.verify_certify(pub2, pub1, raw, sig)
        tpm.flush(h2)
        tpm.flush(ak)
    assert swtpm.transient_handles() == []


def test_credential_activation_needs_the_right_ak_name(swtpm):
    with open_tpm(swtpm.tcti) as tpm:
        ak, ak_pub = attest.create_ak(tpm)
        ek_h, ek_pub = attest.create_spire_ek(tpm)
        nonce = os.urandom(32)

        def activate(name):
            blob, secret = make_credential(ek_pub, nonce, name)
            sess = tpm.track(tpm.esapi.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY,
                                                          TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256))
            tpm.esapi.trsess_set_attributes(sess, TPMA_SESSION.CONTINUESESSION)
            try:
                tpm.esapi.policy_secret(ESYS_TR.ENDORSEMENT, sess, b"", b"", b"", 0)
                return bytes(tpm.esapi.activate_credential(ak, ek_h, blob, secret, session2=sess))
            finally:
                tpm.flush(sess)

        assert activate(devid.object_name(ak_pub)) == nonce
        other_name = b"\x00\x0b" + b"\x42" * 32
        with pytest.raises(TSS2_Exception):
            activate(other_name)
    assert swtpm.transient_handles() == []
    assert swtpm.tool("tpm2_getcap", "handles-loaded-session").stdout.strip() == ""


def test_spire_ek_is_the_certified_ek_and_other_tpms_cert_is_not(swtpm, swtpm_factory, tmp_path):
    other = swtpm_factory(ek_certs=True)
    with open_tpm(other.tcti) as tpm:
        other_cert = x509.load_der_x509_certificate(ek.read_nv_certificate(tpm, 0x01C00002))
    with open_tpm(swtpm.tcti) as tpm:
        own_cert = x509.load_der_x509_certificate(ek.read_nv_certificate(tpm, 0x01C00002))
        _h, ek_pub = attest.create_spire_ek(tpm)
        assert attest.check_eks_match(own_cert, ek_pub).ok is True
        bad = attest.check_eks_match(other_cert, ek_pub)
        assert bad.ok is False and "differs from the EK regenerated" in bad.detail
        # the ECC P-384 EK certificate is not what SPIRE uses
        ecc_cert = x509.load_der_x509_certificate(ek.read_nv_certificate(tpm, 0x01C00016))
        bad = attest.check_eks_match(ecc_cert, ek_pub)
        assert bad.ok is False and "SPIRE requires RSA" in bad.detail
    # the SPIRE EK equals the persistent EK swtpm_setup made (tpm2-tools reads it independently)
    swtpm.tool("tpm2_readpublic", "-Q", "-c", "0x81010001", "-f", "der", "-o", str(tmp_path / "ek.der"))
    assert devid.public_key_of(ek_pub.publicArea).public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo) == (tmp_path / "ek.der").read_bytes()
    assert swtpm.transient_handles() == []
