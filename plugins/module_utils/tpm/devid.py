# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""DevID keys exactly as SPIRE's tpm_devid agent loads them.

* The parent is a primary in the OWNER hierarchy made from go-tpm-tools' SRK template with an empty unique
  (SPIRE's ``SRKTemplateHighRSA``/``SRKTemplateHighECC``): an RSA DevID lives under the RSA-2048 SRK, an ECC DevID
  under the ECC P-256 SRK. Attributes decrypt|restricted|fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|noDA,
  AES-128-CFB, nameAlg SHA-256, no authPolicy. Any other parent (tpm2-tools' default primary lacks noDA and has a
  different symmetric/unique) yields blobs that fail ``TPM2_Load`` with an integrity error.
* The DevID: RSA-2048 RSASSA-SHA256 or ECC P-256 ECDSA-SHA256; sign|fixedTPM|fixedParent|sensitiveDataOrigin|
  userWithAuth, not restricted.
* Blob files in SPIRE's format: the public file is a bare TPMT_PUBLIC, the private file the TPM2B_PRIVATE buffer,
  both *without* the 2-byte size prefix tpm2-tools writes.
* ``load_devid_signing_key()`` returns a pyca-cryptography private key whose ``sign()`` runs in the TPM; CSRs
  (tpm/devid_csr.py) and renewal signatures are made with it.

Imports nothing from Ansible: the on-host renewal job uses it too.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import struct

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.files import read_bytes
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm.context import (
    TSS2_Exception, describe_tss_error, set_auth)

try:
    from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_ECC, TPM2_RC, TPMA_OBJECT
    from tpm2_pytss.types import (
        TPM2B_DATA, TPM2B_PRIVATE, TPM2B_PUBLIC, TPM2B_SENSITIVE_CREATE, TPML_PCR_SELECTION, TPMT_PUBLIC)
except ImportError:  # pragma: no cover - context.require_pytss() reports it
    pass

try:
    # pyca-cryptography key classes backed by the TPM (added in tpm2-pytss 2.3.0; needs cryptography as well)
    from tpm2_pytss.cryptography import tpm_ecc_private_key, tpm_rsa_private_key
    HAS_PYTSS_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover
    HAS_PYTSS_CRYPTOGRAPHY = False

try:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None
except ImportError as _imp_err:  # pragma: no cover
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = _imp_err

KEY_TYPES = ("rsa", "ecc")

PARENT_HINT = (
    "the DevID blobs must be created under SPIRE's parent: a primary in the owner hierarchy from the SRK template "
    "(decrypt|restricted|fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|noDA, AES-128-CFB, empty unique). "
    "Keys made with tpm2-tools' default primary (tpm2_createprimary without these attributes, e.g. without noDA) "
    "are the usual cause; recreate the key with the devid_csr module (force: true) and have the CSR signed again")


def require_cryptography():
    if not HAS_CRYPTOGRAPHY:
        raise SpireTpmError("the Python library cryptography is not importable on this host (%s)"
                            % CRYPTOGRAPHY_IMPORT_ERROR,
                            "install python3-cryptography (or 'pip install cryptography') on the managed host")


# --- templates --------------------------------------------------------------------------------------------------

def _srk_attributes():
    return (TPMA_OBJECT.DECRYPT | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT
            | TPMA_OBJECT.SENSITIVEDATAORIGIN | TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.NODA)


def _devid_attributes():
    return (TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT
            | TPMA_OBJECT.SENSITIVEDATAORIGIN | TPMA_OBJECT.USERWITHAUTH)


def srk_template(key_type):
    """SPIRE's parent template (go-tpm-tools SRKTemplateRSA/ECC with the unique emptied) as TPM2B_PUBLIC."""
    _check_key_type(key_type)
    pub = TPMT_PUBLIC()
    pub.nameAlg = TPM2_ALG.SHA256
    pub.objectAttributes = _srk_attributes()
    # authPolicy stays empty
    if key_type == "rsa":
        pub.type = TPM2_ALG.RSA
        d = pub.parameters.rsaDetail
        d.symmetric.algorithm = TPM2_ALG.AES
        d.symmetric.keyBits.aes = 128
        d.symmetric.mode.aes = TPM2_ALG.CFB
        d.scheme.scheme = TPM2_ALG.NULL
        d.keyBits = 2048
        d.exponent = 0
        # unique.rsa empty (SPIRE sets ModulusRaw = []byte{})
    else:
        pub.type = TPM2_ALG.ECC
        d = pub.parameters.eccDetail
        d.symmetric.algorithm = TPM2_ALG.AES
        d.symmetric.keyBits.aes = 128
        d.symmetric.mode.aes = TPM2_ALG.CFB
        d.scheme.scheme = TPM2_ALG.NULL
        d.curveID = TPM2_ECC.NIST_P256
        d.kdf.scheme = TPM2_ALG.NULL
        # unique.ecc x/y empty (SPIRE sets XRaw/YRaw = []byte{})
    return TPM2B_PUBLIC(publicArea=pub)


def devid_template(key_type):
    """The DevID key template: RSA-2048 RSASSA-SHA256 or ECC P-256 ECDSA-SHA256, signing, not restricted."""
    _check_key_type(key_type)
    pub = TPMT_PUBLIC()
    pub.nameAlg = TPM2_ALG.SHA256
    pub.objectAttributes = _devid_attributes()
    if key_type == "rsa":
        pub.type = TPM2_ALG.RSA
        d = pub.parameters.rsaDetail
        d.symmetric.algorithm = TPM2_ALG.NULL
        d.scheme.scheme = TPM2_ALG.RSASSA
        d.scheme.details.rsassa.hashAlg = TPM2_ALG.SHA256
        d.keyBits = 2048
        d.exponent = 0
    else:
        pub.type = TPM2_ALG.ECC
        d = pub.parameters.eccDetail
        d.symmetric.algorithm = TPM2_ALG.NULL
        d.scheme.scheme = TPM2_ALG.ECDSA
        d.scheme.details.ecdsa.hashAlg = TPM2_ALG.SHA256
        d.curveID = TPM2_ECC.NIST_P256
        d.kdf.scheme = TPM2_ALG.NULL
    return TPM2B_PUBLIC(publicArea=pub)


def ak_template():
    """SPIRE's AK template (go-tpm-tools AKTemplateRSA): RSA-2048 restricted signing key, RSASSA-SHA256."""
    pub = TPMT_PUBLIC()
    pub.type = TPM2_ALG.RSA
    pub.nameAlg = TPM2_ALG.SHA256
    pub.objectAttributes = (TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.FIXEDTPM
                            | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN | TPMA_OBJECT.USERWITHAUTH)
    d = pub.parameters.rsaDetail
    d.symmetric.algorithm = TPM2_ALG.NULL
    d.scheme.scheme = TPM2_ALG.RSASSA
    d.scheme.details.rsassa.hashAlg = TPM2_ALG.SHA256
    d.keyBits = 2048
    d.exponent = 0
    return TPM2B_PUBLIC(publicArea=pub)


def _check_key_type(key_type):
    if key_type not in KEY_TYPES:
        raise SpireTpmError("key_type %r is not supported" % (key_type,), "use 'rsa' or 'ecc'")


# --- blob formats -----------------------------------------------------------------------------------------------

def key_type_of(public):
    """'rsa' / 'ecc' for a TPMT_PUBLIC (None for anything else)."""
    if public.type == TPM2_ALG.RSA:
        return "rsa"
    if public.type == TPM2_ALG.ECC:
        return "ecc"
    return None


def marshal_public(public):
    """SPIRE's public blob: the bare TPMT_PUBLIC (no TPM2B size)."""
    if isinstance(public, TPM2B_PUBLIC):
        public = public.publicArea
    return bytes(public.marshal())


def marshal_private(private):
    """SPIRE's private blob: the TPM2B_PRIVATE buffer (no size)."""
    return bytes(private.buffer)


def _looks_size_prefixed(blob):
    return len(blob) >= 2 and struct.unpack(">H", blob[:2])[0] == len(blob) - 2


def parse_public_blob(blob, path="the public blob"):
    """Bytes of a SPIRE public blob → TPMT_PUBLIC. Explains the tpm2-tools (size-prefixed) format."""
    if not blob:
        raise SpireTpmError("%s is empty" % path, "recreate the DevID key with the devid_csr module")
    err = None
    try:
        public, used = TPMT_PUBLIC.unmarshal(blob)
    except Exception as e:  # malformed structure: TSS2 marshalling error or ValueError
        used, public = -1, None
        err = e
    if public is not None and used == len(blob):
        return public
    if _looks_size_prefixed(blob):
        raise SpireTpmError(
            "%s starts with a 2-byte size: it is a TPM2B_PUBLIC as tpm2-tools writes it, not the bare TPMT_PUBLIC "
            "SPIRE reads" % path,
            "strip the first two bytes (tail -c +3 FILE > NEW) or recreate the key with the devid_csr module")
    detail = ("%d trailing bytes" % (len(blob) - used)) if public is not None else str(err)
    raise SpireTpmError("%s is not a TPMT_PUBLIC (%s)" % (path, detail),
                        "point devid_pub_path/pub_path at the DevID public blob in SPIRE's format")


def parse_private_blob(blob, path="the private blob"):
    """Bytes of a SPIRE private blob → TPM2B_PRIVATE (checks the size-prefixed tpm2-tools format first)."""
    if not blob:
        raise SpireTpmError("%s is empty" % path, "recreate the DevID key with the devid_csr module")
    if _looks_size_prefixed(blob):
        # An integrity-protected private area starts with the 2-byte size of its HMAC (0x0020 for SHA-256).
        # A tpm2-tools file starts with the size of the whole buffer instead.
        if blob[:2] != b"\x00\x20":
            raise SpireTpmError(
                "%s starts with a 2-byte size: it is a TPM2B_PRIVATE as tpm2-tools writes it, not the bare buffer "
                "SPIRE reads" % path,
                "strip the first two bytes (tail -c +3 FILE > NEW) or recreate the key with the devid_csr module")
    return TPM2B_PRIVATE(buffer=blob)


def object_name(public):
    """The TPM Name of a public area: nameAlg (2 bytes) || H_nameAlg(TPMT_PUBLIC)."""
    if isinstance(public, TPM2B_PUBLIC):
        public = public.publicArea
    if public.nameAlg != TPM2_ALG.SHA256:
        return bytes(public.get_name())
    return struct.pack(">H", int(TPM2_ALG.SHA256)) + hashlib.sha256(marshal_public(public)).digest()


def public_key_of(public):
    """TPMT_PUBLIC → cryptography public key."""
    require_cryptography()
    if isinstance(public, TPM2B_PUBLIC):
        public = public.publicArea
    der = bytes(public.to_der())
    return serialization.load_der_public_key(der)


def public_key_pem(key):
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def check_devid_public(public, path="the DevID public blob"):
    """What SPIRE's agent requires of the DevID public area (plus the signing scheme its server verifies)."""
    if not public.objectAttributes & TPMA_OBJECT.SIGN_ENCRYPT:
        raise SpireTpmError("%s is not a signing key (SPIRE: 'not a signing key')" % path,
                            "create the DevID with the sign attribute (the devid_csr module does)")
    kt = key_type_of(public)
    if kt is None:
        raise SpireTpmError("%s is neither RSA nor ECC (SPIRE: 'bad key type')" % path,
                            "create an RSA-2048 or ECC P-256 DevID")
    scheme = public.parameters.rsaDetail.scheme if kt == "rsa" else public.parameters.eccDetail.scheme
    halg = scheme.details.anySig.hashAlg if scheme.scheme != TPM2_ALG.NULL else TPM2_ALG.NULL
    if halg == TPM2_ALG.NULL:
        raise SpireTpmError("%s has no signing scheme hash (SPIRE: 'signature hash algorithm is NULL')" % path,
                            "create the DevID with an RSASSA-SHA256 or ECDSA-SHA256 scheme")
    want = TPM2_ALG.RSASSA if kt == "rsa" else TPM2_ALG.ECDSA
    if scheme.scheme != want or halg != TPM2_ALG.SHA256:
        raise SpireTpmError(
            "%s signs with scheme %s/%s; SPIRE's server verifies the DevID's signature only as %s" % (
                path, TPM2_ALG(scheme.scheme), TPM2_ALG(halg), "RSASSA (PKCS#1 v1.5) with SHA-256" if kt == "rsa"
                else "ECDSA with SHA-256"),
            "recreate the DevID with the devid_csr module (force: true)")
    return kt


# --- TPM operations ---------------------------------------------------------------------------------------------

def create_spire_parent(tpm, key_type, owner_hierarchy_password=None):
    """Create SPIRE's transient parent (tracked by ``tpm``) and return its ESYS handle."""
    set_auth(tpm, ESYS_TR.OWNER, owner_hierarchy_password)
    try:
        handle = tpm.esapi.create_primary(
            TPM2B_SENSITIVE_CREATE(), srk_template(key_type), ESYS_TR.OWNER, TPM2B_DATA(), TPML_PCR_SELECTION())[0]
    except TSS2_Exception as e:
        if getattr(e, "error", None) in (TPM2_RC.AUTH_FAIL, TPM2_RC.BAD_AUTH):
            raise SpireTpmError(
                "creating SPIRE's parent key in the owner hierarchy failed: the owner hierarchy password was "
                "rejected (%s)" % e,
                "set owner_hierarchy_password to the TPM's owner authorization (empty on most machines)")
        raise describe_tss_error(e, "creating SPIRE's parent key (SRK template) in the owner hierarchy")
    return tpm.track(handle)


class DevIDBlobs:
    """A DevID key's blobs in SPIRE's format plus its parsed public area."""

    def __init__(self, public, private_blob):
        self.public = public                     # TPMT_PUBLIC
        self.pub_blob = marshal_public(public)   # bare TPMT_PUBLIC
        self.priv_blob = private_blob            # TPM2B_PRIVATE buffer

    @property
    def key_type(self):
        return key_type_of(self.public)

    @property
    def name(self):
        return object_name(self.public)

    def public_key(self):
        return public_key_of(self.public)


def _password_sensitive(password):
    sens = TPM2B_SENSITIVE_CREATE()
    if password:
        sens.sensitive.userAuth = password.encode("utf-8") if isinstance(password, str) else password
    return sens


def create_devid(tpm, key_type="rsa", devid_password=None, owner_hierarchy_password=None):
    """Create a DevID key under SPIRE's parent; return DevIDBlobs (nothing stays loaded)."""
    parent = create_spire_parent(tpm, key_type, owner_hierarchy_password)
    try:
        priv, pub = tpm.esapi.create(parent, _password_sensitive(devid_password), devid_template(key_type),
                                     TPM2B_DATA(), TPML_PCR_SELECTION())[:2]
    except TSS2_Exception as e:
        raise describe_tss_error(e, "creating the %s DevID key" % key_type.upper())
    finally:
        tpm.flush(parent)
    return DevIDBlobs(pub.publicArea, marshal_private(priv))


def load_devid(tpm, pub_blob, priv_blob, devid_password=None, owner_hierarchy_password=None,
               pub_path="the DevID public blob", priv_path="the DevID private blob"):
    """Load DevID blobs under a fresh SPIRE parent, exactly as SPIRE's agent does.

    Returns (handle tracked by tpm, TPMT_PUBLIC). The parent is flushed right after the load.
    """
    public = parse_public_blob(pub_blob, pub_path)
    private = parse_private_blob(priv_blob, priv_path)
    kt = check_devid_public(public, pub_path)
    parent = create_spire_parent(tpm, kt, owner_hierarchy_password)
    try:
        handle = tpm.esapi.load(parent, private, TPM2B_PUBLIC(publicArea=public))
    except TSS2_Exception as e:
        if getattr(e, "error", None) in (TPM2_RC.INTEGRITY, TPM2_RC.SIZE, TPM2_RC.KEY, TPM2_RC.BINDING,
                                         TPM2_RC.INSUFFICIENT):
            raise SpireTpmError(
                "the DevID blobs %s / %s do not load under SPIRE's %s parent on this TPM (SPIRE's agent fails "
                "the same way: 'tpm2.Load failed ... integrity check failed'; TPM said: %s)"
                % (pub_path, priv_path, kt.upper(), e),
                PARENT_HINT + "; blobs made on another TPM cannot load here either",
                tpm_rc=getattr(e, "rc", None))
        raise describe_tss_error(e, "loading the DevID key %s" % pub_path)
    finally:
        tpm.flush(parent)
    tpm.track(handle)
    set_auth(tpm, handle, devid_password)
    return handle, public


def signing_key(tpm, handle, public):
    """A pyca-cryptography private key for a loaded TPM signing key (sign() runs in the TPM)."""
    require_cryptography()
    if not HAS_PYTSS_CRYPTOGRAPHY:
        raise SpireTpmError("tpm2-pytss on this host has no tpm2_pytss.cryptography module (TPM-backed keys for "
                            "the cryptography library)",
                            "install tpm2-pytss >= 2.3 ('pip install tpm2-pytss'; needs libtss2-dev and pkg-config)")
    if public.type == TPM2_ALG.RSA:
        return tpm_rsa_private_key(tpm.esapi, handle)
    return tpm_ecc_private_key(tpm.esapi, handle)


def load_devid_signing_key(tpm, pub_path, priv_path, devid_password=None, owner_hierarchy_password=None):
    """Load the DevID key files (SPIRE's format) and return a cryptography private key that signs in the TPM.

    The loaded handle is tracked by ``tpm`` and flushed when it is closed. Wrong ``devid_password`` shows up at
    the first signature (use ``tpm_sign()`` for a translated error).
    """
    pub_blob = _read_required(pub_path, "public")
    priv_blob = _read_required(priv_path, "private")
    handle, public = load_devid(tpm, pub_blob, priv_blob, devid_password, owner_hierarchy_password,
                                pub_path, priv_path)
    return signing_key(tpm, handle, public)


def _read_required(path, what):
    data = read_bytes(path)
    if data is None:
        raise SpireTpmError("the DevID %s blob %s does not exist" % (what, path),
                            "create the DevID key first with the devid_csr module, or fix the path")
    return data


def tpm_sign(key, data):
    """Sign ``data`` with a TPM-backed DevID key as SPIRE's agent does (SHA-256; PKCS#1 v1.5 or ECDSA/DER)."""
    try:
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    except TSS2_Exception as e:
        raise translate_sign_error(e, "signing with the DevID key")


def translate_sign_error(exc, action):
    if getattr(exc, "error", None) in (TPM2_RC.AUTH_FAIL, TPM2_RC.BAD_AUTH):
        return SpireTpmError(
            "%s failed: the DevID key rejected devid_password (%s)" % (action, exc),
            "set devid_password to the password the DevID key was created with (the same value as the SPIRE "
            "agent's devid_password); each wrong try counts toward the TPM's dictionary-attack lockout")
    return describe_tss_error(exc, action)


# --- CSR ----------------------------------------------------------------------------------------------------------
