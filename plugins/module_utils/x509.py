# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Certificate loading and chain verification, kept generic (EK certificates, DevID certificates, CA bundles).

* ``load_certificates(path)``: a directory (every regular file in it, PEM bundle or DER) or one file.
* ``verify_chain(leaf, trust_anchors, intermediates=(), now=None)`` → ``(ok, error_text)``;
  ``build_chain(...)`` returns the verified path ``[leaf, ..., anchor]`` or raises ``ChainError``.

Why not ``cryptography.x509.verification``: its policies are Web PKI/RFC 5280 profiles (SAN and EKU rules for the
leaf, AKI/key usage rules for CAs). TPM EK certificates routinely break those: empty subject with a critical SAN made
of a directoryName (TPM manufacturer/model/version), the EK-certificate EKU 2.23.133.8.1, and vendor CAs with odd
extensions. SPIRE (Go crypto/x509) tolerates a critical SAN. So the path is built and checked here, on the
primitives cryptography gives: ``Certificate.verify_directly_issued_by`` (issuer name + signature), validity
period, basicConstraints/keyUsage/pathLen of every CA in the path, and no unknown critical extension.

Semantics follow Go's crypto/x509 (what SPIRE uses): every certificate in ``trust_anchors`` is an anchor (it
need not be self-signed: an intermediate placed in the roots bundle ends the path), anchors' own validity and
constraints are checked too.

Imports nothing from Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import hashlib
import os

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtensionOID
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None
except ImportError as _imp_err:  # pragma: no cover - sanity import test
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = _imp_err

PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
MAX_PATH_LENGTH = 10

# Critical extensions that do not make a certificate unusable: the set Go's crypto/x509 handles (what SPIRE
# verifies with) minus nameConstraints (not enforced here, so rejected when critical): basicConstraints, keyUsage,
# extendedKeyUsage, subjectAltName (critical on EK certificates, which SPIRE tolerates explicitly), AKI/SKI,
# certificatePolicies, CRL distribution points, authorityInfoAccess. Anything else critical fails the chain, as it
# does in SPIRE.
if HAS_CRYPTOGRAPHY:
    HANDLED_CRITICAL = frozenset([
        ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE, ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME, ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER, ExtensionOID.CERTIFICATE_POLICIES,
        ExtensionOID.CRL_DISTRIBUTION_POINTS, ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
    ])
else:  # pragma: no cover
    HANDLED_CRITICAL = frozenset()


class ChainError(Exception):
    """A certificate path could not be built or failed a check; the message says which and why."""


def require_cryptography():
    if not HAS_CRYPTOGRAPHY:
        raise SpireTpmError("the Python library cryptography is not importable on this host (%s)"
                            % CRYPTOGRAPHY_IMPORT_ERROR,
                            "install python3-cryptography (apt) or 'pip install cryptography' on the managed host")


# ---------------------------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------------------------
def parse_certificates(data, source="<data>"):
    """All certificates in ``data``: a PEM bundle (any number of CERTIFICATE blocks) or a single DER certificate."""
    require_cryptography()
    if isinstance(data, str):
        data = data.encode("utf-8")
    if PEM_BEGIN in data:
        try:
            return _load_pem_bundle(data)
        except ValueError as e:
            raise SpireTpmError("%s holds a malformed PEM certificate: %s" % (source, e),
                                "replace it with a valid PEM or DER certificate (openssl x509 -in FILE -noout "
                                "-text shows what is wrong)")
    try:
        return [x509.load_der_x509_certificate(data)]
    except ValueError as e:
        raise SpireTpmError("%s is neither a PEM bundle nor a DER certificate: %s" % (source, e),
                            "put only certificates (PEM or DER) there")


def _load_pem_bundle(data):
    if hasattr(x509, "load_pem_x509_certificates"):  # cryptography >= 39
        return list(x509.load_pem_x509_certificates(data))
    certs = []  # older cryptography (e.g. Debian bookworm's 38): one block at a time
    end = b"-----END CERTIFICATE-----"
    pos = data.find(PEM_BEGIN)
    while pos != -1:
        stop = data.find(end, pos)
        if stop == -1:
            raise ValueError("unterminated PEM block")
        certs.append(x509.load_pem_x509_certificate(data[pos:stop + len(end)]))
        pos = data.find(PEM_BEGIN, stop)
    return certs


def load_certificates(path, skip_invalid=False):
    """Certificates from a file (PEM bundle or DER) or from every regular file of a directory (sorted by name).

    Hidden files are skipped in directories. With ``skip_invalid`` files that are not certificates are ignored
    (a CA directory may hold a README); otherwise they raise SpireTpmError.
    """
    require_cryptography()
    path = os.path.expanduser(str(path))
    if os.path.isdir(path):
        files = [os.path.join(path, n) for n in sorted(os.listdir(path)) if not n.startswith(".")]
        files = [f for f in files if os.path.isfile(f)]
    elif os.path.isfile(path):
        files = [path]
    else:
        raise SpireTpmError("certificate path %s does not exist" % path,
                            "point it at a PEM/DER certificate file or a directory of them")
    certs = []
    for f in files:
        try:
            with open(f, "rb") as fh:
                data = fh.read()
        except (IOError, OSError) as e:
            raise SpireTpmError("cannot read %s: %s" % (f, e), "check the path and its permissions")
        if not data.strip():
            continue
        try:
            certs.extend(parse_certificates(data, f))
        except SpireTpmError:
            if not skip_invalid:
                raise
    return certs


def to_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def to_der(cert):
    return cert.public_bytes(serialization.Encoding.DER)


def fingerprint(cert, algorithm="sha256"):
    algo = {"sha1": hashes.SHA1(), "sha256": hashes.SHA256()}[algorithm]
    return cert.fingerprint(algo).hex()


def public_key_sha256(key):
    """Lowercase hex SHA-256 of a public key's DER SubjectPublicKeyInfo (a DevID's key and its certificate's match)."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def name_text(name):
    """RFC 4514 text of a Name ('' for an empty subject, as on most EK certificates)."""
    return name.rfc4514_string()


def _utc(dt):
    if dt.tzinfo is None:
        return dt.replace(tzinfo=datetime.timezone.utc)
    return dt


def not_before(cert):
    return getattr(cert, "not_valid_before_utc", None) or _utc(cert.not_valid_before)


def not_after(cert):
    return getattr(cert, "not_valid_after_utc", None) or _utc(cert.not_valid_after)


def describe(cert):
    """Short human identification of a certificate for error messages."""
    subj = name_text(cert.subject) or "(empty subject)"
    return "%s [serial %x]" % (subj, cert.serial_number)


def certificate_summary(cert):
    """The fields modules report for a certificate."""
    return {
        "subject": name_text(cert.subject),
        "issuer": name_text(cert.issuer),
        "serial": "%x" % cert.serial_number,
        "not_before": not_before(cert).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "not_after": not_after(cert).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "sha256_fingerprint": fingerprint(cert),
    }


# ---------------------------------------------------------------------------------------------------------------
# path building and verification
# ---------------------------------------------------------------------------------------------------------------
def _ext(cert, oid):
    try:
        return cert.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return None


def _ski(cert):
    ext = _ext(cert, ExtensionOID.SUBJECT_KEY_IDENTIFIER)
    return ext.value.digest if ext is not None else None


def _aki(cert):
    ext = _ext(cert, ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
    return ext.value.key_identifier if ext is not None else None


def _is_issued_by(cert, issuer):
    """True when ``issuer``'s subject equals ``cert``'s issuer and its key verifies ``cert``'s signature."""
    if cert.issuer != issuer.subject:
        return False
    aki, ski = _aki(cert), _ski(issuer)
    if aki is not None and ski is not None and aki != ski:
        return False
    try:
        _verify_signature(cert, issuer)
        return True
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False


def _verify_signature(cert, issuer):
    """Raise unless ``issuer``'s key made ``cert``'s signature (InvalidSignature / ValueError / TypeError)."""
    if hasattr(cert, "verify_directly_issued_by"):  # cryptography >= 40
        cert.verify_directly_issued_by(issuer)
        return
    # older cryptography: RSA PKCS#1 v1.5, ECDSA, Ed25519/Ed448 by hand (RSA-PSS needs cryptography >= 40)
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
    key = issuer.public_key()
    if cert.signature_algorithm_oid.dotted_string == "1.2.840.113549.1.1.10":
        raise ValueError("RSA-PSS signatures need cryptography >= 40")
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    elif isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        key.verify(cert.signature, cert.tbs_certificate_bytes)
    else:
        raise TypeError("unsupported issuer key type %s" % type(key).__name__)


def _check_validity(cert, now, role):
    if now < not_before(cert):
        raise ChainError("%s %s is not valid before %s" % (role, describe(cert), not_before(cert).isoformat()))
    if now > not_after(cert):
        raise ChainError("%s %s expired on %s" % (role, describe(cert), not_after(cert).isoformat()))


def _check_critical(cert, role):
    for ext in cert.extensions:
        if ext.critical and ext.oid not in HANDLED_CRITICAL:
            raise ChainError("%s %s has an unhandled critical extension %s" % (role, describe(cert),
                                                                               ext.oid.dotted_string))


def _check_ca(cert, below, role):
    """``cert`` issues another certificate with ``below`` CA certificates beneath it (excluding the leaf)."""
    bc = _ext(cert, ExtensionOID.BASIC_CONSTRAINTS)
    if bc is None:
        # Go accepts a v1 certificate without basicConstraints as a CA only as a trust anchor; so do we.
        if role != "trust anchor" or cert.version != x509.Version.v1:
            raise ChainError("%s %s has no basicConstraints extension, so it may not issue certificates"
                             % (role, describe(cert)))
        return
    if not bc.value.ca:
        raise ChainError("%s %s is not a CA (basicConstraints CA:FALSE)" % (role, describe(cert)))
    if bc.value.path_length is not None and below > bc.value.path_length:
        raise ChainError("%s %s allows %d intermediate CA(s) below it, the path has %d"
                         % (role, describe(cert), bc.value.path_length, below))
    ku = _ext(cert, ExtensionOID.KEY_USAGE)
    if ku is not None and not ku.value.key_cert_sign:
        raise ChainError("%s %s has keyUsage without keyCertSign" % (role, describe(cert)))


def build_chain(leaf, trust_anchors, intermediates=(), now=None):
    """Build and verify ``[leaf, intermediate..., anchor]``; raise ChainError with the reason when impossible.

    Depth-first over candidate issuers, so a bundle with several CAs of the same name (cross-signed, renewed)
    still finds the path that verifies. The leaf's own extensions (EKU, SAN) are not judged beyond the
    critical-extension rule: that is policy for the caller.
    """
    require_cryptography()
    now = now or datetime.datetime.now(datetime.timezone.utc)
    now = _utc(now)
    anchors = list(trust_anchors)
    pool = list(intermediates)
    if not anchors:
        raise ChainError("no trust anchors (CA certificates) given")
    _check_validity(leaf, now, "certificate")
    _check_critical(leaf, "certificate")
    # the leaf itself is a trust anchor (pinned certificate)
    if any(to_der(a) == to_der(leaf) for a in anchors):
        return [leaf]

    errors = []

    def extend(path):
        cur = path[-1]
        if len(path) > MAX_PATH_LENGTH:
            errors.append("path longer than %d certificates" % MAX_PATH_LENGTH)
            return None
        seen = set(to_der(c) for c in path)
        below = len(path) - 1  # CA certificates already under the next issuer (excluding the leaf)
        for anchor in anchors:
            if _is_issued_by(cur, anchor):
                try:
                    _check_validity(anchor, now, "trust anchor")
                    _check_ca(anchor, below, "trust anchor")
                except ChainError as e:
                    errors.append(str(e))
                    continue
                return path + [anchor]
        for inter in pool:
            if to_der(inter) in seen or not _is_issued_by(cur, inter):
                continue
            try:
                _check_validity(inter, now, "intermediate CA")
                _check_ca(inter, below, "intermediate CA")
                _check_critical(inter, "intermediate CA")
            except ChainError as e:
                errors.append(str(e))
                continue
            found = extend(path + [inter])
            if found:
                return found
        return None

    chain = extend([leaf])
    if chain:
        return chain
    if errors:
        raise ChainError("; ".join(dict.fromkeys(errors)))
    names = sorted(set(name_text(c.subject) or "(empty)" for c in anchors + pool))
    raise ChainError("no trusted issuer found for %s (issuer %s); the trust anchors/intermediates given are: %s"
                     % (describe(leaf), name_text(leaf.issuer) or "(empty)", ", ".join(names)))


def verify_chain(leaf, trust_anchors, intermediates=(), now=None):
    """``(True, None)`` when ``leaf`` chains to one of ``trust_anchors``, else ``(False, reason)``."""
    try:
        build_chain(leaf, trust_anchors, intermediates, now)
        return True, None
    except ChainError as e:
        return False, str(e)
