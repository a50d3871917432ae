"""JWE decryption, JWK thumbprints and JWS tokens, cross-checked with independent libraries (jwcrypto, PyJWT)."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca import jwe, token
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca.client import (
    format_duration, normalize_fingerprint, parse_duration)

try:
    from jwcrypto import jwk as jwcrypto_jwk
    HAS_JWCRYPTO = True
except ImportError:  # optional dev dependency (requirements-dev.txt); the other tests still run
    HAS_JWCRYPTO = False

needs_jwcrypto = pytest.mark.skipif(not HAS_JWCRYPTO, reason="jwcrypto (independent JOSE implementation) missing")


def _jwcrypto_encrypt(payload, password, p2c):
    """A PBES2 JWE made by jwcrypto (an independent implementation), as step-ca stores encryptedKey."""
    from jwcrypto import jwe as jj, jwk as jk
    from jwcrypto.common import json_encode
    key = jk.JWK.from_password(password)
    header = {"alg": "PBES2-HS256+A128KW", "enc": "A256GCM", "p2c": p2c, "cty": "jwk+json"}
    e = jj.JWE(payload, json_encode(header))
    e.add_recipient(key)
    return e.serialize(compact=True)


@needs_jwcrypto
def test_decrypts_a_jwcrypto_made_provisioner_key():
    k = jwcrypto_jwk.JWK.generate(kty="EC", crv="P-256")
    private = json.loads(k.export_private())
    token_jwe = _jwcrypto_encrypt(json.dumps(private).encode(), "s3cret pw", 10000)
    key, got = jwe.decrypt_provisioner_key(token_jwe, "s3cret pw")
    assert got == private
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.private_numbers().private_value == int.from_bytes(jwe.b64u_decode(private["d"]), "big")
    # our thumbprint equals jwcrypto's RFC 7638 thumbprint
    assert jwe.jwk_thumbprint(jwe.public_jwk(key)) == k.thumbprint()


@needs_jwcrypto
def test_wrong_password_and_tampering_are_clear_errors():
    k = jwcrypto_jwk.JWK.generate(kty="EC", crv="P-256")
    token_jwe = _jwcrypto_encrypt(k.export_private().encode(), "right", 5000)
    with pytest.raises(SpireTpmError, match="password does not decrypt"):
        jwe.decrypt_provisioner_key(token_jwe, "wrong")
    parts = token_jwe.split(".")
    tag = bytearray(jwe.b64u_decode(parts[4]))
    tag[0] ^= 1
    parts[4] = jwe.b64u_encode(bytes(tag))
    with pytest.raises(SpireTpmError, match="failed its integrity check"):
        jwe.decrypt_provisioner_key(".".join(parts), "right")
    with pytest.raises(SpireTpmError, match="not a compact JWE"):
        jwe.decrypt_provisioner_key("abc.def", "right")
    with pytest.raises(SpireTpmError, match="no provisioner password"):
        jwe.decrypt_provisioner_key(token_jwe, "")


@needs_jwcrypto
def test_our_jwe_is_readable_by_jwcrypto():
    from jwcrypto import jwe as jj, jwk as jk
    text = jwe.encrypt_pbes2_jwe(b'{"kty":"oct"}', "pw", p2c=4096)
    e = jj.JWE()
    e.deserialize(text, key=jk.JWK.from_password("pw"))
    assert e.payload == b'{"kty":"oct"}'


@needs_jwcrypto
def test_step_ca_strength_p2c_600000(monkeypatch):
    """step-ca's production count; jwcrypto refuses more than 16384 unless its limit is raised."""
    from jwcrypto import jwa
    monkeypatch.setattr(jwa, "default_max_pbkdf2_iterations", 600000)
    key = ec.generate_private_key(ec.SECP256R1())
    priv = jwe.private_jwk(key)
    text = _jwcrypto_encrypt(json.dumps(priv).encode(), "pw", 600000)
    header = json.loads(jwe.b64u_decode(text.split(".")[0]))
    assert header["p2c"] == 600000
    t0 = time.monotonic()
    got, _ = jwe.decrypt_provisioner_key(text, "pw")
    assert time.monotonic() - t0 < 10
    assert got.private_numbers() == key.private_numbers()


def test_thumbprint_rfc7638_example():
    # RFC 7638 section 3.1 example key and thumbprint
    jwk = {"kty": "RSA", "e": "AQAB",
           "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWK"
                "RXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAt"
                "aSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPks"
                "INHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"}
    assert jwe.jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_provisioner_token_verifies_with_pyjwt():
    key = ec.generate_private_key(ec.SECP256R1())
    tok = token.sign_token(key, "devid@x", "https://ca.test:9000", "node1", ["node1", "10.0.0.1"],
                           root_fingerprint="AB" * 32)
    header = jwt.get_unverified_header(tok)
    assert header["alg"] == "ES256" and header["kid"] == jwe.jwk_thumbprint(jwe.public_jwk(key))
    claims = jwt.decode(tok, key.public_key(), algorithms=["ES256"], audience="https://ca.test:9000/1.0/sign",
                        issuer="devid@x")
    assert claims["sub"] == "node1" and claims["sans"] == ["node1", "10.0.0.1"] and claims["sha"] == "ab" * 32
    assert claims["exp"] - claims["iat"] == 300 and claims["nbf"] == claims["iat"] and len(claims["jti"]) >= 16
    other = token.sign_token(key, "devid@x", "https://ca.test:9000", "node1")
    assert jwt.decode(other, key.public_key(), algorithms=["ES256"],
                      audience="https://ca.test:9000/1.0/sign")["jti"] != claims["jti"]
    rev = token.revoke_token(key, "devid@x", "https://ca.test:9000/", 1234567890123)
    rc = jwt.decode(rev, key.public_key(), algorithms=["ES256"], audience="https://ca.test:9000/1.0/revoke")
    assert rc["sub"] == "1234567890123"


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_hand_built_jws_verifies_with_pyjwt(kind):
    key = ec.generate_private_key(ec.SECP256R1()) if kind == "ec" else rsa.generate_private_key(65537, 2048)
    tok = token.sign_jws(key, {"kid": "k"}, {"sub": "x", "n": 1})
    alg = "ES256" if kind == "ec" else "RS256"
    assert jwt.get_unverified_header(tok)["alg"] == alg
    assert jwt.decode(tok, key.public_key(), algorithms=[alg]) == {"sub": "x", "n": 1}


def _self_signed(key, cn):
    import datetime
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(7).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))


def test_renew_token_shape():
    key = ec.generate_private_key(ec.SECP256R1())
    inter = _self_signed(ec.generate_private_key(ec.SECP256R1()), "inter")
    leaf = _self_signed(key, "node1.example")
    tok = token.renew_token(key, [leaf, inter], "https://ca.test:9000")
    header = jwt.get_unverified_header(tok)
    from cryptography.hazmat.primitives import serialization
    assert header["x5cInsecure"] == [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()
                                     for c in (leaf, inter)]
    claims = jwt.decode(tok, key.public_key(), algorithms=["ES256"], audience="https://ca.test:9000/1.0/renew",
                        issuer="step-ca-client/1.0")
    assert claims["sub"] == "node1.example"
    with pytest.raises(SpireTpmError, match="does not belong to the certificate"):
        token.renew_token(ec.generate_private_key(ec.SECP256R1()), [leaf], "https://ca.test:9000")


@pytest.mark.parametrize("text,seconds", [("2160h", 7776000), ("90d", 7776000), ("1h30m", 5400), ("3600", 3600),
                                          ("720h", 2592000), ("24h0m0s", 86400), ("2160h1m0s", 7776060)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_duration_errors_and_format():
    for bad in ("", "90 days", "h", "10x", "-5h"):
        with pytest.raises(SpireTpmError, match="is not a duration"):
            parse_duration(bad)
    assert format_duration(7776000) == "2160h"
    assert format_duration(5430) == "1h30m30s"
    assert parse_duration(format_duration(123457)) == 123457


def test_fingerprint_normalisation():
    assert normalize_fingerprint("AB:" * 31 + "AB") == "ab" * 32
    with pytest.raises(SpireTpmError, match="not a SHA-256 fingerprint"):
        normalize_fingerprint("abcd")


def test_shorter_certificate_than_asked_is_refused():
    import datetime
    from ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca.client import check_lifetime
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = _self_signed(key, "short")          # valid for one day
    now = datetime.datetime.now(datetime.timezone.utc)
    with pytest.raises(SpireTpmError, match="raise claims.maxTLSCertDuration .* at least 2160h"):
        check_lifetime(leaf, now, 2160 * 3600)
    assert check_lifetime(leaf, now, 86400 - 60) == leaf.not_valid_after_utc


def test_cap_message_names_what_to_configure():
    from ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca.client import StepCAClient
    c = StepCAClient("https://127.0.0.1:1", "ab" * 32)
    body = json.dumps({"status": 403, "message": "The request was forbidden by the certificate authority: requested "
                       "duration of 2160h1m0s is more than the authorized maximum certificate duration of "
                       "24h1m0s."}).encode()
    err = c._http_error(403, body, "sign")
    assert "caps certificates at 24h;" in err.message and "to at least 2160h," in err.message
    assert err.details["http_status"] == 403
