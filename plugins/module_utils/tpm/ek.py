# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Endorsement keys: the TCG EK credential NV indices, EK certificates, EK templates, persistent EKs, pubhash.

Numbering follows the TCG EK Credential Profile for TPM Family 2.0 (section 2.2.1.4/2.2.1.5), the same
numbering tpm2-pytss's EK templates carry (``tpm2_pytss.internal.templates``):

* low range: 0x01c00002 RSA-2048 certificate (+1 nonce, +2 template), 0x01c0000a ECC NIST P-256 (+1 nonce, +2 template)
* high range (certificate at the even index, template at +1): 0x01c00012 RSA-2048, 0x01c00014 ECC P-256,
  0x01c00016 ECC P-384, 0x01c00018 ECC P-521, 0x01c0001a ECC SM2-P256, 0x01c0001c RSA-3072, 0x01c0001e RSA-4096.

Imports nothing from Ansible: the on-host jobs use it as well.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm.context import (
    HAS_PYTSS, TSS2_Exception, describe_tss_error, set_auth)

try:
    from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_CAP, TPM2_ECC, TPMA_NV, TPMA_OBJECT
    from tpm2_pytss.constants import TPM2_PT_NV
    from tpm2_pytss.types import TPM2B_SENSITIVE_CREATE
    from tpm2_pytss.utils import NoSuchIndex, create_ek_template
except ImportError:  # pragma: no cover - HAS_PYTSS covers it; require_pytss() names the fix
    NoSuchIndex = Exception

try:
    from cryptography.hazmat.primitives import serialization
    HAS_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover
    HAS_CRYPTOGRAPHY = False

# nv_index -> (key_type, key size in bits or curve name)
EK_NV_INDICES = {
    0x01C00002: ("rsa", 2048),
    0x01C0000A: ("ecc", "P-256"),
    0x01C00012: ("rsa", 2048),
    0x01C00014: ("ecc", "P-256"),
    0x01C00016: ("ecc", "P-384"),
    0x01C00018: ("ecc", "P-521"),
    0x01C0001A: ("ecc", "SM2-P256"),
    0x01C0001C: ("rsa", 3072),
    0x01C0001E: ("rsa", 4096),
}

# nv_index -> name of the tpm2-pytss EK template belonging to that certificate
EK_TEMPLATE_NAMES = {
    0x01C00002: "EK-RSA2048",
    0x01C0000A: "EK-ECC256",
    0x01C00012: "EK-HIGH-RSA2048",
    0x01C00014: "EK-HIGH-ECC256",
    0x01C00016: "EK-HIGH-ECC384",
    0x01C00018: "EK-HIGH-ECC521",
    0x01C0001A: "EK-HIGH-ECCSM2P256",
    0x01C0001C: "EK-HIGH-RSA3072",
    0x01C0001E: "EK-HIGH-RSA4096",
}

TEMPLATE_NV_INDEX = dict((name, idx) for idx, name in EK_TEMPLATE_NAMES.items())
# The short names of the EK credential profile (L-1, H-3, ...) tpm2-pytss accepts too.
_SHORT_NAMES = {"L-1": "EK-RSA2048", "L-2": "EK-ECC256", "H-1": "EK-HIGH-RSA2048", "H-2": "EK-HIGH-ECC256",
                "H-3": "EK-HIGH-ECC384", "H-4": "EK-HIGH-ECC521", "H-5": "EK-HIGH-ECCSM2P256",
                "H-6": "EK-HIGH-RSA3072", "H-7": "EK-HIGH-RSA4096"}

PERSISTENT_EK_FIRST = 0x81010000
PERSISTENT_EK_LAST = 0x810100FF

# Authorization policies of the EK templates of the credential profile (PolicySecret(TPM_RH_ENDORSEMENT) for the
# low range; PolicyOR of PolicySecret/PolicyAuthorizeNV for the high range in SHA-256/384/512/SM3).
EK_POLICIES = frozenset(bytes.fromhex(h) for h in (
    "837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa",
    "ca3d0a99a2b93906f7a3342414efcfb3a385d44cd1fd459089d19b5071c0b7a0",
    "b26e7d28d11a50bc53d882bcf5fd3a1a074148bb35d3b4e4cb1c0ad9bde419cacb47ba09699646150f9fc000f3f80e12",
    "b8221ca69e8550a4914de3faa6a18c072cc01208073a928d5d66d59ef79e49a429c41a6b269571d57edb25fbdb1838425608b413cd6"
    "16a5f6db5b6071af99bea",
    "167860a35f2c5c3567f9c927ac56c032f3b3a6462f8d037998e7a10f77fa454a",
))

_HANDLE_NOT_DEFINED = (0x18B, 0x28B, 0x184)  # TPM_RC_HANDLE (param 1 / handle 1 / plain)
_DEFAULT_NV_BUFFER_MAX = 512
_CURVE_NAMES = {}
if HAS_PYTSS:
    _CURVE_NAMES = {TPM2_ECC.NIST_P256: "P-256", TPM2_ECC.NIST_P384: "P-384", TPM2_ECC.NIST_P521: "P-521",
                    TPM2_ECC.SM2_P256: "SM2-P256"}


def _is_handle_error(exc):
    rc = getattr(exc, "rc", None)
    return rc is not None and (rc & 0xFFF) in _HANDLE_NOT_DEFINED


def nv_buffer_max(tpm):
    """The TPM's TPM_PT_NV_BUFFER_MAX (largest NV read in one command), cached on the connection."""
    cached = getattr(tpm, "_spire_tpm_nv_buffer_max", None)
    if cached:
        return cached
    value = _DEFAULT_NV_BUFFER_MAX
    try:
        _more, data = tpm.esapi.get_capability(TPM2_CAP.TPM_PROPERTIES, TPM2_PT_NV.BUFFER_MAX, 1)
        for prop in data.data.tpmProperties:
            if prop.property == TPM2_PT_NV.BUFFER_MAX and prop.value:
                value = int(prop.value)
    except TSS2_Exception as e:
        raise describe_tss_error(e, "reading the TPM's NV buffer size (TPM2_GetCapability)")
    try:
        tpm._spire_tpm_nv_buffer_max = value
    except AttributeError:  # pragma: no cover
        pass
    return value


def read_nv_raw(tpm, nv_index):
    """All bytes of an NV index, read in chunks of the TPM's NV buffer size.

    Raises NoSuchIndex when the index is not defined, or defined but never written (TPMA_NV_WRITTEN clear: reading
    it would fail with TPM_RC_NV_UNINITIALIZED): either way there is no data.
    """
    esapi = tpm.esapi
    try:
        nvh = esapi.tr_from_tpmpublic(int(nv_index))
    except TSS2_Exception as e:
        if _is_handle_error(e):
            raise NoSuchIndex(int(nv_index))
        raise describe_tss_error(e, "opening NV index 0x%08x" % int(nv_index))
    try:
        nvpub, _name = esapi.nv_read_public(nvh)
        attrs = int(nvpub.nvPublic.attributes)
        size = int(nvpub.nvPublic.dataSize)
        if not attrs & int(TPMA_NV.WRITTEN):
            raise NoSuchIndex(int(nv_index))
        # EK credential indices are readable with the (empty) index auth or with owner auth (empty by default).
        if attrs & int(TPMA_NV.AUTHREAD):
            auth = nvh
        elif attrs & int(TPMA_NV.OWNERREAD):
            auth = ESYS_TR.OWNER
        elif attrs & int(TPMA_NV.PPREAD):
            auth = ESYS_TR.PLATFORM
        else:
            auth = nvh
        chunk = nv_buffer_max(tpm)
        data = b""
        while len(data) < size:
            part = bytes(esapi.nv_read(nvh, min(chunk, size - len(data)), len(data), auth_handle=auth))
            if not part:
                break
            data += part
        return data
    except TSS2_Exception as e:
        raise describe_tss_error(e, "reading NV index 0x%08x" % int(nv_index))
    finally:
        try:
            esapi.tr_close(nvh)
        except TSS2_Exception:  # pragma: no cover
            pass


def der_length(data):
    """Length of the DER TLV at the start of ``data`` (SEQUENCE), or None when it is not DER."""
    if len(data) < 2 or data[0] != 0x30:
        return None
    first = data[1]
    if first < 0x80:
        return 2 + first
    n = first & 0x7F
    if n == 0 or n > 4 or len(data) < 2 + n:
        return None
    length = int.from_bytes(data[2:2 + n], "big")
    return 2 + n + length


def strip_der_padding(data):
    """Cut trailing bytes (0x00/0xff padding some vendors write after the certificate) off a DER blob."""
    total = der_length(data)
    if total is None or total > len(data):
        return data
    return data[:total]


def read_nv_certificate(tpm, nv_index):
    """The DER certificate stored at ``nv_index``, or None when the index is not defined (or empty)."""
    try:
        raw = read_nv_raw(tpm, nv_index)
    except NoSuchIndex:
        return None
    if not raw or not raw.strip(b"\x00\xff"):
        return None
    return strip_der_padding(raw)


def _nv_read_cb(tpm):
    def cb(index):
        return read_nv_raw(tpm, int(index))
    return cb


def normalize_template(template):
    name = _SHORT_NAMES.get(template, template)
    if name not in TEMPLATE_NV_INDEX:
        raise SpireTpmError("unknown EK template %r" % (template,),
                            "use one of %s" % ", ".join(sorted(TEMPLATE_NV_INDEX)))
    return name


def _no_nv(index):
    raise NoSuchIndex(int(index))


def ek_template(tpm, template="EK-RSA2048", nv_template=True):
    """(certificate DER or None, TPM2B_PUBLIC template) for the named TCG EK template.

    With ``nv_template`` the NV template and nonce indices the manufacturer may have provisioned are honoured
    (as tpm2_createek does); without, the plain default template is used (as go-tpm-tools' DefaultEKTemplateRSA,
    which SPIRE regenerates) and no certificate is read.
    """
    name = normalize_template(template)
    if not nv_template:
        if name not in ("EK-RSA2048", "EK-ECC256"):
            raise SpireTpmError("EK template %s needs the NV indices (nv_template=False given)" % name,
                                "use nv_template=True for high-range templates")
        _cert, pub = create_ek_template(name, _no_nv)
        return None, pub
    try:
        cert, pub = create_ek_template(name, _nv_read_cb(tpm))
    except ValueError as e:
        raise SpireTpmError(
            "cannot build EK template %s: %s" % (name, e),
            "high-range EK templates (EK-HIGH-*) are only defined when the manufacturer provisioned their "
            "certificate; use EK-RSA2048 or EK-ECC256, or a persistent EK (tpm2_getcap handles-persistent)")
    except TSS2_Exception as e:
        raise describe_tss_error(e, "reading the EK template indices for %s" % name)
    if cert is not None:
        cert = strip_der_padding(cert)
    return cert, pub


def create_ek(tpm, template="EK-RSA2048", endorsement_hierarchy_password=None, nv_template=True):
    """Create the EK from the TCG template in the endorsement hierarchy (``nv_template``: see ``ek_template``).

    Returns (esys_handle, TPM2B_PUBLIC). The handle is tracked (``tpm.track``) so it is flushed when the
    connection closes; flush it earlier with ``tpm.flush(handle)``.
    """
    name = normalize_template(template)
    _cert, in_public = ek_template(tpm, name, nv_template)
    set_auth(tpm, ESYS_TR.ENDORSEMENT, endorsement_hierarchy_password)
    try:
        handle, out_public, _cd, _dg, _tk = tpm.esapi.create_primary(
            TPM2B_SENSITIVE_CREATE(), in_public, primary_handle=ESYS_TR.ENDORSEMENT)
    except TSS2_Exception as e:
        raise describe_tss_error(e, "creating the %s endorsement key (TPM2_CreatePrimary in the endorsement "
                                    "hierarchy)" % name)
    tpm.track(handle)
    return handle, out_public


def ek_public_key(tpm2b_public):
    """The pyca/cryptography public key of a TPM2B_PUBLIC (or TPMT_PUBLIC)."""
    area = getattr(tpm2b_public, "publicArea", tpm2b_public)
    try:
        der = area.to_der()
    except (ValueError, TypeError) as e:
        raise SpireTpmError("cannot convert the TPM public key to a standard key: %s" % e,
                            "only RSA and NIST P-256/P-384/P-521 keys are supported")
    return serialization.load_der_public_key(der)


def public_key_der(public_key):
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_key_pem(public_key):
    return public_key.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def pubhash(public_key):
    """Lowercase hex SHA-256 of the DER SubjectPublicKeyInfo (spire-tpm-plugin's hash_path file name)."""
    return hashlib.sha256(public_key_der(public_key)).hexdigest()


def key_description(tpm2b_public):
    """('rsa', bits) or ('ecc', curve name) of a TPM2B_PUBLIC/TPMT_PUBLIC."""
    area = getattr(tpm2b_public, "publicArea", tpm2b_public)
    if area.type == TPM2_ALG.RSA:
        return "rsa", int(area.parameters.rsaDetail.keyBits)
    if area.type == TPM2_ALG.ECC:
        curve = area.parameters.eccDetail.curveID
        return "ecc", _CURVE_NAMES.get(curve, "curve-0x%04x" % int(curve))
    return "alg-0x%04x" % int(area.type), None


def is_ek_public(tpm2b_public):
    """True when the public area has the shape of a TCG EK: restricted decryption storage key, fixedTPM,
    sensitiveDataOrigin, adminWithPolicy and one of the credential profile's EK policies."""
    area = getattr(tpm2b_public, "publicArea", tpm2b_public)
    attrs = int(area.objectAttributes)
    need = (int(TPMA_OBJECT.FIXEDTPM) | int(TPMA_OBJECT.FIXEDPARENT) | int(TPMA_OBJECT.SENSITIVEDATAORIGIN)
            | int(TPMA_OBJECT.ADMINWITHPOLICY) | int(TPMA_OBJECT.RESTRICTED) | int(TPMA_OBJECT.DECRYPT))
    if attrs & need != need or attrs & int(TPMA_OBJECT.SIGN_ENCRYPT):
        return False
    if area.type not in (TPM2_ALG.RSA, TPM2_ALG.ECC):
        return False
    return bytes(area.authPolicy) in EK_POLICIES


def persistent_handles(tpm, first=PERSISTENT_EK_FIRST, last=PERSISTENT_EK_LAST):
    """Persistent handles (ints) in [first, last]."""
    found = []
    start = first
    try:
        while True:
            more, data = tpm.esapi.get_capability(TPM2_CAP.HANDLES, start, 64)
            handles = [int(h) for h in data.data.handles]
            for h in handles:
                if h > last:
                    return found
                if h >= first:
                    found.append(h)
            if not more or not handles:
                return found
            start = handles[-1] + 1
    except TSS2_Exception as e:
        raise describe_tss_error(e, "listing persistent handles (TPM2_GetCapability)")


def read_persistent_public(tpm, handle):
    """TPM2B_PUBLIC of a persistent object (int handle)."""
    esapi = tpm.esapi
    try:
        tr = esapi.tr_from_tpmpublic(int(handle))
    except TSS2_Exception as e:
        raise describe_tss_error(e, "opening persistent handle 0x%08x" % int(handle))
    try:
        pub, _name, _qname = esapi.read_public(tr)
        return pub
    except TSS2_Exception as e:
        raise describe_tss_error(e, "reading the public area of 0x%08x" % int(handle))
    finally:
        try:
            esapi.tr_close(tr)  # an ESYS resource only: persistent objects are never flushed
        except TSS2_Exception:  # pragma: no cover
            pass


def persistent_eks(tpm):
    """[(handle_int, TPM2B_PUBLIC)] for the persistent objects in 0x81010000-0x810100FF that are EKs."""
    out = []
    for h in persistent_handles(tpm):
        pub = read_persistent_public(tpm, h)
        if is_ek_public(pub):
            out.append((h, pub))
    return out


def template_name_for(key_type, size_or_curve, high_range=False):
    """The EK template name for ('rsa', 2048) / ('ecc', 'P-256') ..., low range preferred."""
    candidates = [idx for idx, kt in EK_NV_INDICES.items() if kt == (key_type, size_or_curve)]
    if not candidates:
        return None
    candidates.sort()
    if high_range:
        candidates.reverse()
    return EK_TEMPLATE_NAMES[candidates[0]]


# ---------------------------------------------------------------------------------------------------------------
# the EK inventory tpm_ek_info reports
# ---------------------------------------------------------------------------------------------------------------
SPIRE_EK_NV_INDEX = 0x01C00002
_EC_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


def describe_public_key(public_key):
    """('rsa', bits, None) / ('ecc', None, 'P-384') of a cryptography public key."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    if isinstance(public_key, rsa.RSAPublicKey):
        return "rsa", public_key.key_size, None
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return "ecc", None, _EC_CURVES.get(public_key.curve.name, public_key.curve.name)
    return type(public_key).__name__, None, None


def _entry(key_type, key_size, curve, nv_index, handle, public_key, source):
    return {
        "key_type": key_type, "key_size": key_size, "curve": curve,
        "nv_index": ("0x%08x" % nv_index) if nv_index is not None else None,
        "persistent_handle": ("0x%08x" % handle) if handle is not None else None,
        "source": source,
        "certificate": None, "public_key": public_key_pem(public_key), "pubhash": pubhash(public_key),
        "subject": None, "issuer": None, "serial": None, "not_before": None, "not_after": None,
        "chain_verified": None, "chain_error": None,
    }


def matches_template(public, template):
    """True when ``public`` was made from ``template``: every field equal except ``unique`` (the key itself).

    The same rule go-tpm-tools applies before reusing a cached (persistent) key for a template.
    """
    a = getattr(public, "publicArea", public)
    t = getattr(template, "publicArea", template)
    try:
        a_copy, dummy = type(a).unmarshal(a.marshal())
        t_copy, dummy = type(t).unmarshal(t.marshal())
        if a_copy.type != t_copy.type:
            return False
        if a_copy.type == TPM2_ALG.RSA:
            a_copy.unique.rsa = b""
            t_copy.unique.rsa = b""
        elif a_copy.type == TPM2_ALG.ECC:
            a_copy.unique.ecc.x = b""
            a_copy.unique.ecc.y = b""
            t_copy.unique.ecc.x = b""
            t_copy.unique.ecc.y = b""
        return a_copy.marshal() == t_copy.marshal()
    except (TypeError, ValueError, AttributeError):  # pragma: no cover - malformed public area
        return False


RSA_EK_RESERVED_HANDLE = 0x81010001


def default_rsa_ek(tpm, endorsement_hierarchy_password=None):
    """The RSA EK of the default TCG template (what SPIRE regenerates) without leaving anything loaded.

    Reuses the persistent EK at 0x81010001 when its public area matches the template (RSA primaries take seconds
    on hardware TPMs; go-tpm-tools reuses it the same way); otherwise creates it and flushes it again.
    Returns (source, persistent handle int or None, TPM2B_PUBLIC), source 'persistent' or 'created'.
    """
    _cert, template = ek_template(tpm, "EK-RSA2048", nv_template=False)
    if RSA_EK_RESERVED_HANDLE in persistent_handles(tpm, RSA_EK_RESERVED_HANDLE, RSA_EK_RESERVED_HANDLE):
        pub = read_persistent_public(tpm, RSA_EK_RESERVED_HANDLE)
        if matches_template(pub, template):
            return "persistent", RSA_EK_RESERVED_HANDLE, pub
    handle, pub = create_ek(tpm, "EK-RSA2048", endorsement_hierarchy_password, nv_template=False)
    tpm.flush(handle)
    return "created", None, pub


def ek_report(tpm, trust_anchors=None, intermediates=(), endorsement_hierarchy_password=None):
    """Every EK of the TPM with its certificate (if any), persistent handle (if any) and chain check.

    Returns a dict: ``eks`` (list of entries, see tpm_ek_info's RETURN), ``ek_pubhash`` (SPIRE/spire-tpm-plugin's
    hash: the key of the EK certificate at 0x01c00002 if present, else of the default-template RSA EK),
    ``spire_tpm_devid_ready`` and ``spire_tpm_devid_reason``. ``trust_anchors`` (list of cryptography
    certificates, every one an anchor as in SPIRE's endorsement_ca_path) enables the chain check; None skips it.
    """
    from ansible_collections.trustroot.spire_tpm.plugins.module_utils import x509 as x509u
    from cryptography import x509

    persistent = []
    for handle, pub in persistent_eks(tpm):
        try:
            persistent.append((handle, ek_public_key(pub)))
        except SpireTpmError:  # e.g. an SM2 EK cryptography cannot represent
            continue
    by_hash = dict((pubhash(k), h) for h, k in persistent)

    eks = []
    spire_cert = None
    for nv_index in sorted(EK_NV_INDICES):
        der = read_nv_certificate(tpm, nv_index)
        if der is None:
            continue
        try:
            cert = x509.load_der_x509_certificate(der)
            key = cert.public_key()
        except (ValueError, TypeError) as e:
            raise SpireTpmError("the EK certificate at NV index 0x%08x is not a valid DER certificate: %s"
                                % (nv_index, e),
                                "the TPM's EK certificate is damaged; ask the vendor, or provision the EK "
                                "certificate again (tpm2_nvread 0x%08x shows the raw bytes)" % nv_index)
        key_type, key_size, curve = describe_public_key(key)
        ph = pubhash(key)
        entry = _entry(key_type, key_size, curve, nv_index, by_hash.get(ph), key, "nv_certificate")
        entry.update(x509u.certificate_summary(cert))
        entry.pop("sha256_fingerprint", None)
        entry["certificate"] = x509u.to_pem(cert)
        if trust_anchors is not None:
            entry["chain_verified"], entry["chain_error"] = x509u.verify_chain(cert, trust_anchors, intermediates)
        eks.append(entry)
        if nv_index == SPIRE_EK_NV_INDEX:
            spire_cert = (cert, key, entry)

    seen = set(e["pubhash"] for e in eks)
    for handle, key in persistent:
        if pubhash(key) in seen:
            continue
        key_type, key_size, curve = describe_public_key(key)
        eks.append(_entry(key_type, key_size, curve, None, handle, key, "persistent"))
        seen.add(pubhash(key))

    # The RSA EK SPIRE regenerates: go-tpm-tools DefaultEKTemplateRSA (plain TCG template, no NV template/nonce).
    _src, _handle, pub = default_rsa_ek(tpm, endorsement_hierarchy_password)
    default_key = ek_public_key(pub)
    default_hash = pubhash(default_key)
    if default_hash not in seen:
        eks.append(_entry("rsa", default_key.key_size, None, None, None, default_key, "default_template"))

    if spire_cert is None:
        ek_pubhash = default_hash
        ready, reason = False, ("no EK certificate at NV index 0x%08x (the RSA EK certificate SPIRE's tpm_devid "
                                "attestor reads)" % SPIRE_EK_NV_INDEX)
    else:
        cert, key, entry = spire_cert
        ek_pubhash = entry["pubhash"]
        if entry["key_type"] != "rsa":
            ready, reason = False, "the EK certificate at 0x%08x holds a %s key; SPIRE needs RSA" % (
                SPIRE_EK_NV_INDEX, entry["key_type"])
        elif entry["pubhash"] != default_hash:
            ready, reason = False, ("the key of the EK certificate at 0x%08x differs from the EK regenerated from "
                                    "the default RSA template, which SPIRE compares it with" % SPIRE_EK_NV_INDEX)
        elif trust_anchors is not None and not entry["chain_verified"]:
            ready, reason = False, "the EK certificate does not verify against ca_path: %s" % entry["chain_error"]
        else:
            ready, reason = True, None
    return {"eks": eks, "ek_pubhash": ek_pubhash, "spire_tpm_devid_ready": ready, "spire_tpm_devid_reason": reason}
