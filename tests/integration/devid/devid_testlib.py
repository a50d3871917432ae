"""Helpers for the DevID integration tests: a local DevID CA (root + intermediate) minted with cryptography,
tpm2-tools / openssl oracles and the TPM-cleanliness assertion."""

import datetime
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

FQCN = "trustroot.spire_tpm."
SPIRE_SRK_ATTRS = "decrypt|restricted|fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda"


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class DevIDCA:
    """A two-level DevID CA: root → intermediate → DevID certificates issued from CSRs."""

    def __init__(self, base):
        self.base = base
        now = datetime.datetime.now(datetime.timezone.utc)
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.inter_key = ec.generate_private_key(ec.SECP256R1())
        self.root = self._mint(_name("Test DevID Root"), _name("Test DevID Root"), self.root_key.public_key(),
                               self.root_key, True, now - datetime.timedelta(days=1),
                               now + datetime.timedelta(days=365))
        self.inter = self._mint(_name("Test DevID Intermediate"), self.root.subject, self.inter_key.public_key(),
                                self.root_key, True, now - datetime.timedelta(days=1),
                                now + datetime.timedelta(days=365))
        self.root_path = base / "devid-root.pem"
        self.root_path.write_bytes(self.pem(self.root))

    @staticmethod
    def pem(cert):
        return cert.public_bytes(serialization.Encoding.PEM)

    @staticmethod
    def der(cert):
        return cert.public_bytes(serialization.Encoding.DER)

    @staticmethod
    def _mint(subject, issuer, pub, key, ca, nb, na):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(pub)
             .serial_number(x509.random_serial_number()).not_valid_before(nb).not_valid_after(na)
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                critical=True)
        return b.sign(key, hashes.SHA256())

    def issue(self, csr_path, out_path, expired=False, public_key_from=None):
        """Sign the CSR at csr_path (optionally for another CSR's key) and write leaf + intermediate PEM."""
        csr = x509.load_pem_x509_csr(csr_path.read_bytes())
        assert csr.is_signature_valid
        pub = csr.public_key()
        if public_key_from is not None:
            pub = x509.load_pem_x509_csr(public_key_from.read_bytes()).public_key()
        now = datetime.datetime.now(datetime.timezone.utc)
        if expired:
            nb, na = now - datetime.timedelta(days=10), now - datetime.timedelta(days=1)
        else:
            nb, na = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=30)
        leaf = self._mint(csr.subject, self.inter.subject, pub, self.inter_key, False, nb, na)
        out_path.write_bytes(self.pem(leaf) + self.pem(self.inter))
        return leaf


@pytest.fixture
def devid_ca(tmp_path):
    return DevIDCA(tmp_path)


def ek_bundle(swtpm, path, with_intermediate=True):
    data = swtpm.root_ca.read_bytes()
    if with_intermediate:
        data += swtpm.intermediate_ca.read_bytes()
    path.write_bytes(data)
    return path


def assert_tpm_clean(swtpm):
    """No transient object and no session left in the TPM (tpm2-tools is the oracle)."""
    for cap in ("handles-transient", "handles-loaded-session", "handles-saved-session"):
        out = swtpm.tool("tpm2_getcap", cap).stdout.strip()
        assert out == "", "%s not empty after the run: %s" % (cap, out)


def openssl(*args, input=None):
    out = subprocess.run(["openssl"] + list(args), capture_output=True, input=input)
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout


def csr_public_der(csr_path):
    """DER SubjectPublicKeyInfo of a CSR, extracted by openssl."""
    pem = openssl("req", "-in", str(csr_path), "-noout", "-pubkey")
    return openssl("pkey", "-pubin", "-outform", "DER", input=pem)


def spire_format_from_tools(pub_file, priv_file, out_pub, out_priv):
    """tpm2-tools writes TPM2B (2-byte size first); SPIRE wants the bare structure: strip the size."""
    for src, dst in ((pub_file, out_pub), (priv_file, out_priv)):
        data = src.read_bytes()
        assert int.from_bytes(data[:2], "big") == len(data) - 2
        dst.write_bytes(data[2:])


def tools_format_from_spire(pub_file, priv_file, out_pub, out_priv):
    for src, dst in ((pub_file, out_pub), (priv_file, out_priv)):
        data = src.read_bytes()
        dst.write_bytes(len(data).to_bytes(2, "big") + data)
