# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Local replay of SPIRE's ``tpm_devid`` node attestation: the agent's TPM session and every server check.

Agent side (pkg/agent/plugin/nodeattestor/tpmdevid/tpmutil/session.go), against this host's TPM:

1. load the DevID blobs under a fresh SPIRE parent (owner hierarchy, SRK template, empty unique);
2. create an AK (RSA-2048 restricted signing, RSASSA-SHA256) under the RSA SRK-template parent and load it;
3. regenerate the EK from the default TCG RSA template (go-tpm-tools ``DefaultEKTemplateRSA``: no NV template or
   nonce is consulted) in the endorsement hierarchy;
4. read the EK certificate from NV 0x01c00002 only.

Server side (pkg/server/plugin/nodeattestor/tpmdevid/devid.go), in SPIRE's order:

``devid_chain``            DevID leaf → ``devid_ca_path`` roots, intermediates = the other certs of the cert file
``ek_matches_certificate`` EK certificate key is RSA and equals the regenerated EK (modulus and exponent)
``ek_chain``               EK certificate → ``endorsement_ca_path`` roots with **no** intermediates pool
``ak_certifies_devid``     TPM2_Certify(DevID by AK): PKCS#1 v1.5 signature under the AK, certified Name = DevID Name
``credential_activation``  software MakeCredential(EK public, AK name, nonce) → TPM2_ActivateCredential round trip
``devid_signature``        the DevID signs a 32-byte nonce in the TPM; verified with the *certificate's* public key

Imports nothing from Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import re

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.files import read_bytes
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import devid as devid_mod
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import ek as ek_mod
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm.context import (
    TSS2_Exception, describe_tss_error, open_tpm, set_auth)
from ansible_collections.trustroot.spire_tpm.plugins.module_utils import x509 as x509u

try:
    from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_GENERATED, TPM2_RC, TPM2_SE, TPM2_ST, TPMA_SESSION
    from tpm2_pytss.types import (
        TPM2B_DATA, TPM2B_SENSITIVE_CREATE, TPML_PCR_SELECTION, TPMS_ATTEST, TPMT_SIG_SCHEME,
        TPMT_SYM_DEF)
    from tpm2_pytss.utils import NoSuchIndex, create_ek_template, make_credential
except ImportError:  # pragma: no cover - context.require_pytss() reports it
    NoSuchIndex = Exception

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.x509.oid import NameOID
except ImportError:  # pragma: no cover - devid.require_cryptography() reports it
    pass

EK_CERT_NV_INDEX_RSA = 0x01C00002
PLUGIN_NAME = "tpm_devid"
NONCE_SIZE = 32
CHECK_ORDER = ("devid_chain", "ek_matches_certificate", "ek_chain", "ak_certifies_devid", "credential_activation",
               "devid_signature")
_TD_RE = re.compile(r"^[a-z0-9._-]+$")

# The tpm_devid_verify module's options (its tcti aside), shared with devid_state's verify option.
VERIFY_OPTIONS = dict(
    devid_cert_path=dict(type="path", required=True),
    devid_pub_path=dict(type="path", required=True),
    devid_priv_path=dict(type="path", required=True),
    devid_password=dict(type="str", no_log=True),
    devid_ca_path=dict(type="path", required=True),
    endorsement_ca_path=dict(type="path", required=True),
    trust_domain=dict(type="str", required=True),
    owner_hierarchy_password=dict(type="str", no_log=True),
    endorsement_hierarchy_password=dict(type="str", no_log=True),
)


def sha1_hex(der):
    return hashlib.sha1(der).hexdigest()  # nosec - SPIRE's fingerprint is SHA-1 by specification


def normalize_trust_domain(td):
    td = (td or "").strip()
    if td.startswith("spiffe://"):
        td = td[len("spiffe://"):].rstrip("/")
    if not td or not _TD_RE.match(td):
        raise SpireTpmError("trust_domain %r is not a valid SPIFFE trust domain name" % (td,),
                            "use lowercase letters, digits, dots, dashes and underscores, e.g. 'example.org'")
    return td


def agent_id(trust_domain, leaf):
    return "spiffe://%s/spire/agent/%s/%s" % (normalize_trust_domain(trust_domain), PLUGIN_NAME,
                                              sha1_hex(x509u.to_der(leaf)))


def _last_cn(name):
    # Go's pkix.Name keeps the last CN attribute of the sequence as CommonName.
    cns = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return cns[-1].value if cns else ""


def selectors(leaf, chains):
    """SPIRE's tpm_devid selectors (with the type prefix) for a leaf and its verified chain(s)."""
    values = []
    cn = _last_cn(leaf.subject)
    if cn:
        values.append("subject:cn:" + cn)
    icn = _last_cn(leaf.issuer)
    if icn:
        values.append("issuer:cn:" + icn)
    seen = set()
    for chain in chains:
        for cert in chain[1:]:
            fp = sha1_hex(x509u.to_der(cert))
            if fp in seen:
                continue
            seen.add(fp)
            values.append("ca:fingerprint:" + fp)
    return ["%s:%s" % (PLUGIN_NAME, v) for v in values]


# --- agent side -------------------------------------------------------------------------------------------------

def spire_ek_template():
    """go-tpm-tools DefaultEKTemplateRSA: the TCG low-range RSA-2048 EK template, ignoring NV template/nonce."""
    def no_nv(_index):
        raise NoSuchIndex(_index)
    return create_ek_template("EK-RSA2048", no_nv)[1]


def create_spire_ek(tpm, endorsement_hierarchy_password=None):
    """Regenerate the EK exactly as SPIRE's agent does (tracked transient handle, TPM2B_PUBLIC)."""
    set_auth(tpm, ESYS_TR.ENDORSEMENT, endorsement_hierarchy_password)
    try:
        handle, public = tpm.esapi.create_primary(
            TPM2B_SENSITIVE_CREATE(), spire_ek_template(), ESYS_TR.ENDORSEMENT, TPM2B_DATA(),
            TPML_PCR_SELECTION())[:2]
    except TSS2_Exception as e:
        if getattr(e, "error", None) in (TPM2_RC.AUTH_FAIL, TPM2_RC.BAD_AUTH):
            raise SpireTpmError("regenerating the RSA EK failed: the endorsement hierarchy password was rejected "
                                "(%s)" % e,
                                "set endorsement_hierarchy_password to the TPM's endorsement authorization (the "
                                "SPIRE agent needs the same value)")
        raise describe_tss_error(e, "regenerating the RSA EK from the default template")
    tpm.track(handle)
    return handle, public


def create_ak(tpm, owner_hierarchy_password=None):
    """Create and load SPIRE's AK under the RSA SRK-template parent. Returns (tracked handle, TPMT_PUBLIC)."""
    parent = devid_mod.create_spire_parent(tpm, "rsa", owner_hierarchy_password)
    try:
        priv, pub = tpm.esapi.create(parent, TPM2B_SENSITIVE_CREATE(), devid_mod.ak_template(), TPM2B_DATA(),
                                     TPML_PCR_SELECTION())[:2]
        handle = tpm.esapi.load(parent, priv, pub)
    except TSS2_Exception as e:
        raise describe_tss_error(e, "creating the attestation key (AK) under SPIRE's parent")
    finally:
        tpm.flush(parent)
    tpm.track(handle)
    return handle, pub.publicArea


class Check:
    def __init__(self, name, ok, detail, fix=None):
        self.name, self.ok, self.detail, self.fix = name, ok, detail, fix

    def as_dict(self):
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def _pk_sha256(key):
    return x509u.public_key_sha256(key)


# --- server-side checks -----------------------------------------------------------------------------------------

_INSECURE_SIG_HASHES = ("sha1", "md5")


def insecure_signature(certs):
    """Go's crypto/x509 (SPIRE) refuses SHA-1 and MD5 signatures on every certificate whose signature it checks
    (all of a chain but its trust anchor). Returns a reason for the first such certificate of ``certs``, or None."""
    for cert in certs:
        try:
            algo = cert.signature_hash_algorithm
        except Exception:  # unsupported algorithm: cryptography could not verify it either
            continue
        if algo is not None and algo.name in _INSECURE_SIG_HASHES:
            return ("%s is signed with %s; SPIRE's Go crypto/x509 rejects %s signatures ('insecure algorithm')"
                    % (x509u.describe(cert), algo.name.upper(), algo.name.upper()))
    return None


def check_devid_chain(leaf, intermediates, roots, devid_ca_path, now=None):
    try:
        chain = x509u.build_chain(leaf, roots, intermediates, now)
    except x509u.ChainError as e:
        text = str(e)
        if "expired on" in text or "not valid before" in text:
            spire = "certificate has expired or is not yet valid"
            fix = ("renew the DevID certificate (SPIRE's server rejects certificates outside their validity period) "
                   "or fix the host clock")
        else:
            spire = "certificate signed by unknown authority"
            fix = ("make sure devid_ca_path holds the root CA that issued the DevID certificate, and that "
                   "devid_cert_path holds the leaf followed by every intermediate CA certificate (SPIRE's agent "
                   "sends those as intermediates)")
        weak = insecure_signature([leaf] + list(intermediates))
        if weak:
            text, fix = weak, "reissue the DevID certificate (and its CAs) with SHA-256 signatures"
            spire = ("certificate signed by unknown authority (possibly because of \"x509: cannot verify signature: "
                     "insecure algorithm ...\")")
        # SPIRE's server words a failed DevID chain as a signature failure (seen on 1.13.3 and 1.15.3).
        return Check("devid_chain", False, "the DevID certificate %s does not verify against devid_ca_path %s: %s "
                     "(SPIRE: 'unable to verify DevID signature: verification failed: x509: %s')"
                     % (x509u.describe(leaf), devid_ca_path, text, spire), fix), None
    weak = insecure_signature(chain[:-1])
    if weak:
        return Check("devid_chain", False, weak + " (SPIRE: 'unable to verify DevID signature: verification failed: "
                     "x509: certificate signed by unknown authority (possibly because of \"x509: cannot verify "
                     "signature: insecure algorithm ...\")')",
                     "reissue the DevID certificate (and its CAs) with SHA-256 signatures"), None
    return Check("devid_chain", True, "chain: %s" % _chain_text(chain)), chain


def check_eks_match(ek_cert, ek_public):
    cert_key = ek_cert.public_key()
    tpm_key = ek_mod.ek_public_key(ek_public)
    if not isinstance(cert_key, rsa.RSAPublicKey):
        return Check("ek_matches_certificate", False,
                     "the EK certificate at NV 0x%08x holds a %s key, SPIRE requires RSA"
                     % (EK_CERT_NV_INDEX_RSA, type(cert_key).__name__),
                     "SPIRE's tpm_devid only supports an RSA EK certificate at 0x01c00002")
    cn, tn = cert_key.public_numbers(), tpm_key.public_numbers()
    if cn.e != tn.e or cn.n != tn.n:
        return Check("ek_matches_certificate", False,
                     "the public key in the EK certificate (NV 0x%08x, sha256 %s) differs from the EK regenerated "
                     "from the default RSA template (sha256 %s) (SPIRE: 'public key in EK certificate differs from "
                     "public key created via EK template')"
                     % (EK_CERT_NV_INDEX_RSA, _pk_sha256(cert_key), _pk_sha256(tpm_key)),
                     "the TPM's EK certificate belongs to an EK made from another template (e.g. one with a "
                     "manufacturer nonce); SPIRE's tpm_devid cannot attest this TPM")
    return Check("ek_matches_certificate", True,
                 "EK certificate key equals the regenerated RSA EK (sha256 %s)" % _pk_sha256(tpm_key))


def check_ek_chain(ek_cert, roots, endorsement_ca_path, now=None):
    try:
        chain = x509u.build_chain(ek_cert, roots, (), now)
    except x509u.ChainError as e:
        issuer = x509u.name_text(ek_cert.issuer) or "(empty)"
        weak = insecure_signature([ek_cert])
        if weak:
            return Check("ek_chain", False, weak, "SPIRE's tpm_devid cannot accept this TPM's EK certificate")
        if not any(r.subject == ek_cert.issuer for r in roots):
            detail = ("endorsement_ca_path %s lacks the EK certificate's issuer `%s`; SPIRE verifies the EK "
                      "certificate with no intermediates pool, so every intermediate CA must be in that bundle (%s) "
                      "(SPIRE: 'endorsement certificate verification failed: x509: certificate signed by unknown "
                      "authority')" % (endorsement_ca_path, issuer, e))
            fix = "add the intermediate CA `%s` (and its issuers up to the root) to endorsement_ca_path" % issuer
        else:
            detail = ("the EK certificate does not verify against endorsement_ca_path %s: %s (SPIRE: 'endorsement "
                      "certificate verification failed')" % (endorsement_ca_path, e))
            fix = "put the manufacturer's root and intermediate CA certificates for this TPM in endorsement_ca_path"
        return Check("ek_chain", False, detail, fix)
    weak = insecure_signature(chain[:-1])
    if weak:
        return Check("ek_chain", False, weak, "SPIRE's tpm_devid cannot accept this TPM's EK certificate chain")
    return Check("ek_chain", True, "chain: %s" % _chain_text(chain))


def _chain_text(chain):
    return " -> ".join(x509u.name_text(c.subject) or "(empty)" for c in chain)


def verify_certify(ak_public, devid_public, attest_bytes, signature):
    """SPIRE's VerifyDevIDCertification: PKCS#1 v1.5 signature under the AK, certified Name = DevID Name.

    Returns None when fine, else the reason.
    """
    ak_key = devid_mod.public_key_of(ak_public)
    if not isinstance(ak_key, rsa.RSAPublicKey):
        return "the AK is not an RSA key (SPIRE: 'only RSA keys are supported')"
    if signature.sigAlg != TPM2_ALG.RSASSA:
        return "the certification signature is %s, not RSASSA" % TPM2_ALG(signature.sigAlg)
    sig = bytes(signature.signature.rsassa.sig)
    try:
        ak_key.verify(sig, attest_bytes, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return "the AK's signature over the certification data does not verify"
    attest, dummy = TPMS_ATTEST.unmarshal(attest_bytes)
    if attest.magic != TPM2_GENERATED.VALUE:
        return "the certification data was not generated by a TPM (bad magic)"
    if attest.type != TPM2_ST.ATTEST_CERTIFY:
        return "the certification data is not a TPM2_Certify result"
    certified = bytes(attest.attested.certify.name)
    expected = devid_mod.object_name(devid_public)
    if certified != expected:
        return ("the certified Name %s differs from the Name of the DevID public blob %s (SPIRE: 'certify failed')"
                % (certified.hex(), expected.hex()))
    return None


def verify_devid_signature(cert, nonce, signature):
    """SPIRE's VerifyDevIDChallenge: SHA256WithRSA (PKCS#1 v1.5) or ECDSAWithSHA256 with the certificate's key."""
    key = cert.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, nonce, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, nonce, ec.ECDSA(hashes.SHA256()))
        else:
            return "the DevID certificate holds an unsupported %s key" % type(key).__name__
    except InvalidSignature:
        return "signature verification failed"
    return None


# --- the whole replay ---------------------------------------------------------------------------------------------

_PEM_CERT_RE = re.compile(br"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----", re.S)


def load_spire_pem_file(path, option):
    """Certificates as SPIRE's util.LoadCertificates reads them: one PEM file, every CERTIFICATE block in order,
    other PEM blocks skipped; no directories, no DER."""
    if os.path.isdir(path):
        raise SpireTpmError("%s %s is a directory; SPIRE reads one PEM file there" % (option, path),
                            "concatenate the PEM certificates into one file and point %s at it" % option)
    data = read_bytes(path)
    if data is None:
        raise SpireTpmError("%s %s does not exist" % (option, path), "fix the path")
    blocks = _PEM_CERT_RE.findall(data)
    if not blocks:
        raise SpireTpmError("%s %s holds no PEM CERTIFICATE block (SPIRE: 'no certificates found in file')"
                            % (option, path),
                            "SPIRE reads PEM only: convert a DER certificate with 'openssl x509 -inform DER -in F "
                            "-out F.pem'")
    certs = []
    for i, block in enumerate(blocks):
        try:
            certs.extend(x509u.parse_certificates(block, "%s %s (block %d)" % (option, path, i)))
        except SpireTpmError as e:
            raise SpireTpmError("%s (SPIRE: 'unable to parse certificate in block %d')" % (e.cause, i), e.fix)
    return certs


def _read(path, option):
    data = read_bytes(path)
    if data is None:
        raise SpireTpmError("%s %s does not exist" % (option, path), "fix the path (SPIRE's agent would fail the "
                                                                     "same way: 'unable to load DevID files')")
    return data


def load_inputs(devid_cert_path=None, devid_pub_path=None, devid_priv_path=None, devid_ca_path=None,
                endorsement_ca_path=None, trust_domain=None):
    """What the replay reads before the TPM: the trust domain, the DevID chain, both CA bundles and the DevID
    blobs. SpireTpmError for a bad option or file (these stop SPIRE's agent or server before any attestation)."""
    devid_mod.require_cryptography()
    td = normalize_trust_domain(trust_domain)
    certs = load_spire_pem_file(devid_cert_path, "devid_cert_path")
    return {
        "trust_domain": td, "leaf": certs[0], "intermediates": certs[1:],
        "devid_roots": load_spire_pem_file(devid_ca_path, "devid_ca_path"),
        "ek_roots": load_spire_pem_file(endorsement_ca_path, "endorsement_ca_path"),
        "pub_blob": _read(devid_pub_path, "devid_pub_path"), "priv_blob": _read(devid_priv_path, "devid_priv_path"),
        "devid_ca_path": devid_ca_path, "endorsement_ca_path": endorsement_ca_path,
        "devid_pub_path": devid_pub_path, "devid_priv_path": devid_priv_path,
    }


def verify_devid(tcti=None, devid_cert_path=None, devid_pub_path=None, devid_priv_path=None, devid_password=None,
                 devid_ca_path=None, endorsement_ca_path=None, trust_domain=None, owner_hierarchy_password=None,
                 endorsement_hierarchy_password=None, now=None):
    """Run SPIRE's tpm_devid attestation locally, in a TPM context of its own. Returns a dict (see the
    tpm_devid_verify module's RETURN) with ``failed`` (the first broken Check in SPIRE's order, or None)."""
    inputs = load_inputs(devid_cert_path, devid_pub_path, devid_priv_path, devid_ca_path, endorsement_ca_path,
                         trust_domain)
    with open_tpm(tcti) as tpm:
        return replay(tpm, inputs, devid_password, owner_hierarchy_password, endorsement_hierarchy_password, now)


def failure_error(failed):
    """The error of the first broken Check (``verify_devid()``'s ``failed``): what tpm_devid_verify fails with."""
    return SpireTpmError("SPIRE's tpm_devid attestation would fail at check '%s': %s" % (failed.name, failed.detail),
                         failed.fix)


def replay(tpm, inputs, devid_password=None, owner_hierarchy_password=None, endorsement_hierarchy_password=None,
           now=None):
    """The agent's TPM session and the server's checks through the open ``tpm``, on ``load_inputs()``'s result.
    Returns ``verify_devid()``'s dict. A failure of the agent session (the DevID does not load, no EK certificate)
    is a SpireTpmError with the checks run so far in its ``checks`` detail. Every handle it makes is tracked: flushed
    before it returns, or when the context closes after a failure."""
    leaf, intermediates = inputs["leaf"], inputs["intermediates"]
    devid_pub_path, devid_priv_path = inputs["devid_pub_path"], inputs["devid_priv_path"]
    checks = {}

    # Server check 1 needs no TPM.
    checks["devid_chain"], chain = check_devid_chain(leaf, intermediates, inputs["devid_roots"],
                                                     inputs["devid_ca_path"], now)

    # Agent session (NewSession), in SPIRE's order: DevID, AK, EK; then the EK certificate. A failure here
    # stops SPIRE's agent before it sends anything: no server check runs.
    try:
        devid_handle, devid_public = devid_mod.load_devid(tpm, inputs["pub_blob"], inputs["priv_blob"],
                                                          devid_password, owner_hierarchy_password,
                                                          devid_pub_path, devid_priv_path)
        ak_handle, ak_public = create_ak(tpm, owner_hierarchy_password)
        ek_handle, ek_public = create_spire_ek(tpm, endorsement_hierarchy_password)
        ek_der = ek_mod.read_nv_certificate(tpm, EK_CERT_NV_INDEX_RSA)
    except SpireTpmError as e:
        e.details.setdefault("checks", [c.as_dict() for c in checks.values()])
        raise
    if ek_der is None:
        raise SpireTpmError(
            "this TPM has no RSA EK certificate at NV index 0x%08x; SPIRE's tpm_devid agent reads the EK "
            "certificate only from there ('unable to get endorsement certificate') and cannot attest this TPM"
            % EK_CERT_NV_INDEX_RSA,
            "use a TPM whose manufacturer provisioned an RSA EK certificate (tpm2_getekcertificate shows it), "
            "provision one at 0x01c00002 from your own endorsement CA, or use another node attestor",
            checks=[c.as_dict() for c in checks.values()])
    try:
        ek_cert = x509u.parse_certificates(ek_der, "the EK certificate at NV 0x%08x" % EK_CERT_NV_INDEX_RSA)[0]
    except SpireTpmError as e:
        raise SpireTpmError("cannot parse the EK certificate: %s" % e.cause, "the TPM's EK certificate is "
                            "malformed; SPIRE's server rejects it too ('cannot parse endorsement certificate')")

    checks["ek_matches_certificate"] = check_eks_match(ek_cert, ek_public)
    checks["ek_chain"] = check_ek_chain(ek_cert, inputs["ek_roots"], inputs["endorsement_ca_path"], now)

    # AK certifies the DevID (agent: CertifyDevIDKey; server: VerifyDevIDCertification)
    password_rejected = False
    try:
        scheme = TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL)
        attest, signature = tpm.esapi.certify(devid_handle, ak_handle, TPM2B_DATA(), scheme)
        reason = verify_certify(ak_public, devid_public, bytes(attest), signature)
        checks["ak_certifies_devid"] = Check(
            "ak_certifies_devid", reason is None,
            "TPM2_Certify by the AK over the DevID: " + (reason or "signature valid, certified Name equals the "
                                                                   "DevID public's Name"),
            None if reason is None else "the DevID key is not the key in devid_pub_path on this TPM")
    except TSS2_Exception as e:
        err = devid_mod.translate_sign_error(e, "TPM2_Certify of the DevID key by the AK")
        password_rejected = getattr(e, "error", None) in (TPM2_RC.AUTH_FAIL, TPM2_RC.BAD_AUTH)
        checks["ak_certifies_devid"] = Check("ak_certifies_devid", False, err.cause, err.fix)

    # Credential activation round trip: AK is in the same TPM as the EK.
    nonce = os.urandom(hashlib.sha256().digest_size)
    ak_name = devid_mod.object_name(ak_public)
    credblob, secret = make_credential(ek_public, nonce, ak_name)
    session = None
    try:
        session = tpm.track(tpm.esapi.start_auth_session(
            ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY, TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256))
        tpm.esapi.trsess_set_attributes(session, TPMA_SESSION.CONTINUESESSION)
        tpm.esapi.policy_secret(ESYS_TR.ENDORSEMENT, session, b"", b"", b"", 0)
        got = bytes(tpm.esapi.activate_credential(ak_handle, ek_handle, credblob, secret,
                                                  session1=ESYS_TR.PASSWORD, session2=session))
        ok = got == nonce
        checks["credential_activation"] = Check(
            "credential_activation", ok,
            "TPM2_ActivateCredential with the EK returned the nonce made for the AK's Name" if ok else
            "TPM2_ActivateCredential returned a different secret (SPIRE: 'nonces are different')",
            None if ok else "the AK and the EK are not in the same TPM")
    except TSS2_Exception as e:
        err = describe_tss_error(e, "credential activation (TPM2_ActivateCredential with the EK)")
        checks["credential_activation"] = Check("credential_activation", False, err.cause,
                                                err.fix or "check endorsement_hierarchy_password")
    finally:
        if session is not None:
            try:
                tpm.flush(session)
            except TSS2_Exception:
                pass

    # DevID proof of possession: sign a 32-byte nonce in the TPM, verify with the certificate's key.
    if password_rejected:
        checks["devid_signature"] = Check(
            "devid_signature", False, "not attempted: the DevID key rejected devid_password (another wrong try "
            "would count toward the TPM's dictionary-attack lockout)", "set the right devid_password")
    else:
        challenge = os.urandom(NONCE_SIZE)
        try:
            key = devid_mod.signing_key(tpm, devid_handle, devid_public)
            sig = devid_mod.tpm_sign(key, challenge)
            reason = verify_devid_signature(leaf, challenge, sig)
            if reason is None:
                checks["devid_signature"] = Check(
                    "devid_signature", True, "the DevID key signed a %d-byte nonce; it verifies with the "
                    "certificate's public key" % NONCE_SIZE)
            else:
                tpm_key = devid_mod.public_key_of(devid_public)
                cert_key = leaf.public_key()
                same = _pk_sha256(tpm_key) == _pk_sha256(cert_key)
                detail = "the DevID key's signature over the nonce does not verify with the certificate's key: "
                if not same:
                    detail += ("the DevID certificate is for a different key (certificate key sha256 %s, key in "
                               "devid_pub_path sha256 %s) (SPIRE: 'devID challenge verification failed')"
                               % (_pk_sha256(cert_key), _pk_sha256(tpm_key)))
                    fix = ("use the certificate issued for this DevID key's CSR (devid_csr returns "
                           "public_key_sha256), or point devid_pub_path/devid_priv_path at the key the "
                           "certificate was issued for")
                else:
                    detail += reason
                    fix = "the DevID key must sign RSASSA-SHA256 (PKCS#1 v1.5) or ECDSA-SHA256"
                checks["devid_signature"] = Check("devid_signature", False, detail, fix)
        except SpireTpmError as e:
            checks["devid_signature"] = Check("devid_signature", False, e.cause, e.fix)

    for h in (devid_handle, ak_handle, ek_handle):
        tpm.flush(h)

    ordered = [checks[n] for n in CHECK_ORDER if n in checks]
    failed = next((c for c in ordered if not c.ok), None)
    return {
        "checks": [c.as_dict() for c in ordered],
        "failed": failed,
        "agent_id": agent_id(inputs["trust_domain"], leaf),
        "selectors": selectors(leaf, [chain] if chain else []),
        "devid_certificate": x509u.certificate_summary(leaf),
        "ek_certificate": x509u.certificate_summary(ek_cert),
    }
