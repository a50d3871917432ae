# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Base64url helpers, JWK thumbprints and the step-ca provisioner key JWE (PBES2-HS256+A128KW / A256GCM).

step-ca keeps a JWK provisioner's private key as a compact JWE encrypted with the provisioner password:
key-wrapping key = PBKDF2-HMAC-SHA256(password, alg || 0x00 || p2s, p2c, 16 bytes); content key = AES key unwrap
(RFC 3394); plaintext = AES-256-GCM with the protected header's base64url text as AAD. Only ``cryptography`` is
needed (jwcrypto and joserfc cap ``p2c`` below step-ca's 600000).

Imports nothing from Ansible: the on-host renewal job uses it too.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import hashlib
import json

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
    from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None
except ImportError as _imp_err:  # pragma: no cover - the module reports missing_required_lib
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = _imp_err

PBES2_ALG = "PBES2-HS256+A128KW"
MAX_P2C = 10000000          # refuse absurd iteration counts (a hostile CA could stall the host)
EC_CURVES = {"P-256": (256, "secp256r1"), "P-384": (384, "secp384r1"), "P-521": (521, "secp521r1")}


def require_cryptography():
    if not HAS_CRYPTOGRAPHY:
        raise SpireTpmError("the Python library cryptography is not importable (%s)" % CRYPTOGRAPHY_IMPORT_ERROR,
                            "install python3-cryptography (or 'pip install cryptography') on this host")


def b64u_encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text):
    if isinstance(text, bytes):
        text = text.decode("ascii")
    text = text.strip()
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _int_to_b64u(value, length):
    return b64u_encode(value.to_bytes(length, "big"))


def _b64u_to_int(text):
    return int.from_bytes(b64u_decode(text), "big")


# --- JWK ----------------------------------------------------------------------------------------------------------

def public_jwk(key):
    """The public JWK (dict) of a cryptography EC or RSA key (public or private)."""
    require_cryptography()
    pub = key.public_key() if hasattr(key, "public_key") else key
    if isinstance(pub, ec.EllipticCurvePublicKey):
        for crv, (bits, name) in EC_CURVES.items():
            if pub.curve.name == name:
                n = pub.public_numbers()
                size = (bits + 7) // 8
                return {"kty": "EC", "crv": crv, "x": _int_to_b64u(n.x, size), "y": _int_to_b64u(n.y, size)}
        raise SpireTpmError("EC curve %s is not usable in a JWK" % pub.curve.name, "use P-256, P-384 or P-521")
    if isinstance(pub, rsa.RSAPublicKey):
        n = pub.public_numbers()
        return {"kty": "RSA", "n": _int_to_b64u(n.n, (n.n.bit_length() + 7) // 8),
                "e": _int_to_b64u(n.e, (n.e.bit_length() + 7) // 8)}
    raise SpireTpmError("key type %s is not supported for a JWK" % type(pub).__name__, "use an EC or RSA key")


def jwk_thumbprint(jwk):
    """RFC 7638 SHA-256 thumbprint (base64url) of a public JWK dict — step-ca's provisioner ``kid``."""
    if jwk.get("kty") == "EC":
        members = {"crv": jwk["crv"], "kty": "EC", "x": jwk["x"], "y": jwk["y"]}
    elif jwk.get("kty") == "RSA":
        members = {"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}
    elif jwk.get("kty") == "OKP":
        members = {"crv": jwk["crv"], "kty": "OKP", "x": jwk["x"]}
    else:
        raise SpireTpmError("JWK type %r is not supported" % jwk.get("kty"), "use an EC (P-256) provisioner key")
    canon = json.dumps(members, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return b64u_encode(hashlib.sha256(canon).digest())


def private_key_from_jwk(jwk):
    """A cryptography private key from a private JWK dict (EC with ``d``, or RSA with ``d``/``p``/``q``...)."""
    require_cryptography()
    kty = jwk.get("kty")
    if kty == "EC":
        if jwk.get("crv") not in EC_CURVES or "d" not in jwk:
            raise SpireTpmError("the provisioner JWK is not a private EC key on a supported curve",
                                "use a JWK provisioner with a P-256 key (step's default)")
        curve = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1, "P-521": ec.SECP521R1}[jwk["crv"]]()
        pubn = ec.EllipticCurvePublicNumbers(_b64u_to_int(jwk["x"]), _b64u_to_int(jwk["y"]), curve)
        return ec.EllipticCurvePrivateNumbers(_b64u_to_int(jwk["d"]), pubn).private_key()
    if kty == "RSA":
        try:
            pubn = rsa.RSAPublicNumbers(_b64u_to_int(jwk["e"]), _b64u_to_int(jwk["n"]))
            return rsa.RSAPrivateNumbers(
                _b64u_to_int(jwk["p"]), _b64u_to_int(jwk["q"]), _b64u_to_int(jwk["d"]), _b64u_to_int(jwk["dp"]),
                _b64u_to_int(jwk["dq"]), _b64u_to_int(jwk["qi"]), pubn).private_key()
        except KeyError as e:
            raise SpireTpmError("the provisioner RSA JWK lacks member %s" % e, "export the full private JWK")
    raise SpireTpmError("the provisioner JWK has unsupported type %r" % kty, "use a JWK provisioner with an EC key")


def private_jwk(key):
    """Private JWK dict of a cryptography EC key (used by the tests' CA set-up)."""
    jwk = public_jwk(key)
    if jwk["kty"] != "EC":
        raise SpireTpmError("only EC private JWKs are produced", "use an EC key")
    size = (key.curve.key_size + 7) // 8
    jwk["d"] = _int_to_b64u(key.private_numbers().private_value, size)
    return jwk


# --- PBES2 JWE ----------------------------------------------------------------------------------------------------

def _kek(password, p2s, p2c):
    salt = PBES2_ALG.encode("ascii") + b"\x00" + p2s
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=16, salt=salt, iterations=p2c)
    return kdf.derive(password)


def _password_bytes(password):
    if password is None or password == "":
        raise SpireTpmError("no provisioner password given",
                            "set provisioner_password to the JWK provisioner's password (or pass 'token' instead)")
    return password.encode("utf-8") if not isinstance(password, bytes) else password


def decrypt_pbes2_jwe(jwe, password):
    """Decrypt a compact PBES2-HS256+A128KW / A256GCM JWE; return the plaintext bytes."""
    require_cryptography()
    if isinstance(jwe, bytes):
        jwe = jwe.decode("ascii")
    parts = (jwe or "").strip().split(".")
    if len(parts) != 5:
        raise SpireTpmError("the provisioner encrypted key is not a compact JWE (expected 5 dot-separated parts, "
                            "got %d)" % len(parts),
                            "pass the 'encryptedKey' value of the provisioner from ca.json or "
                            "GET /provisioners unchanged")
    prot_b64, ek_b64, iv_b64, ct_b64, tag_b64 = parts
    try:
        header = json.loads(b64u_decode(prot_b64).decode("utf-8"))
        encrypted_key, iv, ciphertext, tag = (b64u_decode(p) for p in (ek_b64, iv_b64, ct_b64, tag_b64))
        p2s = b64u_decode(header.get("p2s", ""))
        p2c = int(header.get("p2c", 0))
    except (ValueError, TypeError, UnicodeDecodeError) as e:
        raise SpireTpmError("the provisioner encrypted key is not valid JWE (%s)" % e,
                            "pass the 'encryptedKey' value of the provisioner unchanged")
    if header.get("alg") != PBES2_ALG or header.get("enc") != "A256GCM":
        raise SpireTpmError("the provisioner encrypted key uses alg=%r enc=%r" % (header.get("alg"), header.get("enc")),
                            "only step-ca's PBES2-HS256+A128KW / A256GCM encryption is supported")
    if not (1 <= p2c <= MAX_P2C) or len(p2s) < 8:
        raise SpireTpmError("the provisioner encrypted key has unusable PBES2 parameters (p2c=%d, p2s %d bytes)"
                            % (p2c, len(p2s)), "re-create the provisioner with step's defaults")
    kek = _kek(_password_bytes(password), p2s, p2c)
    try:
        cek = aes_key_unwrap(kek, encrypted_key)
    except InvalidUnwrap:
        raise SpireTpmError("the provisioner password does not decrypt the provisioner's encrypted key "
                            "(AES key unwrap failed: wrong password)",
                            "set provisioner_password to the password given when the provisioner was created "
                            "(step ca provisioner add ... --password-file)")
    if len(cek) != 32:
        raise SpireTpmError("the provisioner encrypted key holds a %d-byte content key, A256GCM needs 32" % len(cek),
                            "re-create the provisioner with step's defaults")
    try:
        return AESGCM(cek).decrypt(iv, ciphertext + tag, prot_b64.encode("ascii"))
    except InvalidTag:
        raise SpireTpmError("the provisioner encrypted key failed its integrity check (AES-GCM tag mismatch)",
                            "the JWE was altered or truncated; copy 'encryptedKey' again from the CA")


def decrypt_provisioner_key(jwe, password):
    """Decrypt step-ca's ``encryptedKey`` with the provisioner password → (cryptography private key, jwk dict)."""
    plain = decrypt_pbes2_jwe(jwe, password)
    try:
        jwk = json.loads(plain.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise SpireTpmError("the decrypted provisioner key is not a JSON JWK",
                            "pass the 'encryptedKey' of a JWK provisioner")
    return private_key_from_jwk(jwk), jwk


def encrypt_pbes2_jwe(plaintext, password, p2c=600000, p2s=None, iv=None, cek=None, cty="jwk+json"):
    """The inverse of decrypt_pbes2_jwe (what ``step crypto jwk create`` writes). Used to set up test CAs."""
    import os
    require_cryptography()
    from cryptography.hazmat.primitives.keywrap import aes_key_wrap
    p2s = os.urandom(16) if p2s is None else p2s
    iv = os.urandom(12) if iv is None else iv
    cek = os.urandom(32) if cek is None else cek
    header = {"alg": PBES2_ALG, "enc": "A256GCM", "p2c": p2c, "p2s": b64u_encode(p2s), "cty": cty}
    prot_b64 = b64u_encode(json.dumps(header, separators=(",", ":")).encode("utf-8"))
    wrapped = aes_key_wrap(_kek(_password_bytes(password), p2s, p2c), cek)
    sealed = AESGCM(cek).encrypt(iv, plaintext, prot_b64.encode("ascii"))
    return ".".join([prot_b64, b64u_encode(wrapped), b64u_encode(iv), b64u_encode(sealed[:-16]),
                     b64u_encode(sealed[-16:])])
