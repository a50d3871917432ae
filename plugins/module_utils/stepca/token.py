# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tokens for step-ca.

* One-time tokens (``ott``) for ``/1.0/sign`` and ``/1.0/revoke``, signed with the JWK provisioner's key (PyJWT when
  available, else the same compact JWS built with ``cryptography``). Header ``kid`` = the provisioner key's RFC 7638
  thumbprint; claims iss/aud/sub/sans/nbf/iat/exp/jti/sha.
* The renewal Bearer token for ``/1.0/renew``, signed by the certificate's own key — any pyca private key object, in
  particular the TPM-resident DevID key from ``tpm/devid.py`` (its ``sign()`` runs inside the TPM). Header
  ``x5cInsecure`` carries the whole chain (leaf first) as base64 DER; claims iss ``step-ca-client/1.0``, sub = the
  certificate CN, aud = ``https://<ca>/1.0/renew``, nbf/iat/exp, jti. The JWS is assembled here (not with PyJWT,
  which insists on its own key classes).

Imports nothing from Ansible: the on-host renewal job uses it too.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import json
import os
import time

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca.jwe import (
    b64u_encode, jwk_thumbprint, public_jwk, require_cryptography)

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    from cryptography.x509.oid import NameOID
except ImportError:  # pragma: no cover - jwe.require_cryptography() reports it
    pass

try:
    import jwt as pyjwt
    HAS_PYJWT = True
except ImportError:  # pragma: no cover - the hand-built JWS below is used instead
    HAS_PYJWT = False

TOKEN_LIFETIME = 300            # step-ca's default maximum (5 minutes)
RENEW_ISSUER = "step-ca-client/1.0"
_EC_ALGS = {"secp256r1": ("ES256", "SHA256", 32), "secp384r1": ("ES384", "SHA384", 48),
            "secp521r1": ("ES512", "SHA512", 66)}


def new_jti():
    return b64u_encode(os.urandom(24))


def _alg_for(key):
    """(JWS alg, hash class, EC coordinate size or None) for a private key object (software or TPM)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        alg = _EC_ALGS.get(key.curve.name)
        if alg is None:
            raise SpireTpmError("EC curve %s cannot sign a JWS" % key.curve.name, "use a P-256 key")
        return alg[0], getattr(hashes, alg[1]), alg[2]
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256", hashes.SHA256, None
    raise SpireTpmError("key type %s cannot sign a step-ca token" % type(key).__name__,
                        "use an EC (P-256) or RSA key")


def sign_jws(key, header, claims):
    """Compact JWS over ``claims`` with ``key`` (any pyca EC/RSA private key, TPM-backed ones included)."""
    require_cryptography()
    alg, hash_cls, size = _alg_for(key)
    header = dict(header)
    header["alg"] = alg
    header.setdefault("typ", "JWT")
    signing_input = (b64u_encode(json.dumps(header, separators=(",", ":")).encode("utf-8")) + "." +
                     b64u_encode(json.dumps(claims, separators=(",", ":")).encode("utf-8"))).encode("ascii")
    if size is None:
        sig = key.sign(signing_input, padding.PKCS1v15(), hash_cls())
    else:
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hash_cls())))
        sig = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return signing_input.decode("ascii") + "." + b64u_encode(sig)


def _time_claims(now, lifetime):
    now = int(time.time() if now is None else now)
    return {"nbf": now, "iat": now, "exp": now + int(lifetime)}


def ca_endpoint(ca_url, path):
    return ca_url.rstrip("/") + path


def provisioner_token(key, provisioner_name, audience, subject, sans=None, root_fingerprint=None, kid=None,
                      now=None, lifetime=TOKEN_LIFETIME, jti=None):
    """A one-time token signed by the JWK provisioner's private key (``cryptography`` key object)."""
    require_cryptography()
    if not subject:
        raise SpireTpmError("the one-time token needs a subject", "the CSR must carry a common name")
    claims = {"iss": provisioner_name, "aud": audience, "sub": subject, "jti": jti or new_jti()}
    claims.update(_time_claims(now, lifetime))
    if sans is not None:
        claims["sans"] = list(sans)
    if root_fingerprint:
        claims["sha"] = root_fingerprint.lower()
    kid = kid or jwk_thumbprint(public_jwk(key))
    header = {"kid": kid, "typ": "JWT"}
    alg = _alg_for(key)[0]
    if HAS_PYJWT:
        return pyjwt.encode(claims, key, algorithm=alg, headers=header)
    return sign_jws(key, header, claims)


def sign_token(key, provisioner_name, ca_url, subject, sans=None, root_fingerprint=None, kid=None, now=None):
    return provisioner_token(key, provisioner_name, ca_endpoint(ca_url, "/1.0/sign"), subject, sans,
                             root_fingerprint, kid, now)


def revoke_token(key, provisioner_name, ca_url, serial, root_fingerprint=None, kid=None, now=None):
    """A revoke token: ``sub`` is the certificate's decimal serial."""
    return provisioner_token(key, provisioner_name, ca_endpoint(ca_url, "/1.0/revoke"), str(serial), None,
                             root_fingerprint, kid, now)


def common_name(cert_or_csr):
    attrs = cert_or_csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return attrs[0].value if attrs else ""


def renew_token(key, chain, ca_url, now=None, lifetime=TOKEN_LIFETIME, jti=None):
    """The Bearer token for /1.0/renew, signed by the certificate's own key (``key`` may live in the TPM).

    ``chain`` is a list of cryptography certificates, leaf first; step-ca needs the intermediate(s) too.
    """
    require_cryptography()
    if not chain:
        raise SpireTpmError("no certificate to renew", "issue the DevID certificate first")
    leaf = chain[0]
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(der, spki) != leaf.public_key().public_bytes(der, spki):
        raise SpireTpmError("the DevID key does not belong to the certificate being renewed",
                            "point devid_pub_path/devid_priv_path at the key the certificate was issued for, or "
                            "remove the certificate so that a new one is issued for the current key")
    header = {"typ": "JWT", "x5cInsecure": [base64.b64encode(c.public_bytes(der)).decode("ascii") for c in chain]}
    claims = {"iss": RENEW_ISSUER, "sub": common_name(leaf), "aud": ca_endpoint(ca_url, "/1.0/renew"),
              "jti": jti or new_jti()}
    claims.update(_time_claims(now, lifetime))
    return sign_jws(key, header, claims)


def decode_unverified(token):
    """(header, claims) of a compact JWS without verifying it — for messages and tests."""
    from ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca.jwe import b64u_decode
    parts = (token or "").split(".")
    if len(parts) != 3:
        raise SpireTpmError("the token is not a compact JWS (3 dot-separated parts)",
                            "pass the token printed by 'step ca token' unchanged")
    try:
        return json.loads(b64u_decode(parts[0])), json.loads(b64u_decode(parts[1]))
    except (ValueError, UnicodeDecodeError):
        raise SpireTpmError("the token is not a JWT", "pass the token printed by 'step ca token' unchanged")


def private_key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_pem_chain(data):
    """All certificates of a PEM bundle (bytes/str), in file order."""
    if isinstance(data, str):
        data = data.encode("ascii")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise SpireTpmError("not a PEM certificate bundle: %s" % e, "check the certificate file")
