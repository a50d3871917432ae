# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``local`` DevID backend: sign a CSR with a CA certificate and key held on the controller/host.

For labs and small fleets without step-ca. The issued leaf carries the CSR's subject and SANs, is not a CA, has
digitalSignature key usage and clientAuth/serverAuth extended key usage; the chain is the leaf followed by the
non-self-signed certificates of the CA file (the issuing CA and any intermediates, not the root).

Imports nothing from Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.files import read_bytes
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca.jwe import require_cryptography

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID
except ImportError:  # pragma: no cover - require_cryptography() reports it
    pass

BACKDATE = datetime.timedelta(minutes=1)   # as step-ca does, for hosts with a slightly slow clock


def load_ca(ca_cert_path, ca_key_path, ca_key_password=None):
    """→ (list of CA certificates from the file, private key). The first certificate must match the key."""
    require_cryptography()
    cert_data = read_bytes(ca_cert_path)
    if cert_data is None:
        raise SpireTpmError("the CA certificate %s does not exist" % ca_cert_path, "fix ca_cert_path")
    key_data = read_bytes(ca_key_path)
    if key_data is None:
        raise SpireTpmError("the CA key %s does not exist" % ca_key_path, "fix ca_key_path")
    try:
        certs = x509.load_pem_x509_certificates(cert_data)
    except ValueError as e:
        raise SpireTpmError("%s holds no PEM certificate (%s)" % (ca_cert_path, e), "fix ca_cert_path")
    pw = ca_key_password.encode("utf-8") if ca_key_password else None
    try:
        key = serialization.load_pem_private_key(key_data, password=pw)
    except TypeError as e:
        if pw is None:
            raise SpireTpmError("the CA key %s is encrypted" % ca_key_path, "set ca_key_password")
        raise SpireTpmError("the CA key %s is not encrypted but ca_key_password was given (%s)" % (ca_key_path, e),
                            "drop ca_key_password")
    except ValueError:
        raise SpireTpmError("cannot load the CA key %s: wrong ca_key_password or not a PEM private key"
                            % ca_key_path, "check ca_key_password and ca_key_path")
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if certs[0].public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise SpireTpmError("the CA key %s does not belong to the first certificate in %s"
                            % (ca_key_path, ca_cert_path),
                            "put the issuing CA's certificate first in ca_cert_path")
    return certs, key


def _is_self_signed(cert):
    return cert.issuer == cert.subject


def sign_csr(csr_pem, ca_certs, ca_key, validity_seconds, now=None):
    """Issue a DevID certificate for ``csr_pem``; return the chain (leaf first) as cryptography certificates."""
    require_cryptography()
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode("ascii") if isinstance(csr_pem, str) else csr_pem)
    except ValueError as e:
        raise SpireTpmError("the CSR is not a PEM certificate request (%s)" % e, "pass the devid_csr module's CSR")
    if not csr.is_signature_valid:
        raise SpireTpmError("the CSR's signature does not verify", "create the CSR again with the DevID key")
    issuer = ca_certs[0]
    now = now or datetime.datetime.now(datetime.timezone.utc)
    not_before = now - BACKDATE
    not_after = now + datetime.timedelta(seconds=int(validity_seconds))
    issuer_after = getattr(issuer, "not_valid_after_utc", None) or issuer.not_valid_after.replace(
        tzinfo=datetime.timezone.utc)
    if not_after > issuer_after:
        raise SpireTpmError("the CA certificate expires at %s, before the requested DevID lifetime ends (%s)"
                            % (issuer_after.isoformat(), not_after.isoformat()),
                            "lower validity or renew the CA certificate")
    builder = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(issuer.subject)
               .public_key(csr.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                            key_encipherment=isinstance(csr.public_key(), rsa.RSAPublicKey),
                                            data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH,
                                                     ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(csr.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False))
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        builder = builder.add_extension(san.value, critical=False)
    except x509.ExtensionNotFound:
        pass
    algorithm = None if not isinstance(ca_key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)) else hashes.SHA256()
    leaf = builder.sign(ca_key, algorithm)
    return [leaf] + [c for c in ca_certs if not _is_self_signed(c)]
