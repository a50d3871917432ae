# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The DevID certificate request: subject and SANs, a CSR signed inside the TPM with the DevID key, and
``ensure_devid_csr()`` — the devid_csr module's logic (key blobs in SPIRE's format + a CSR that matches them).

The key itself (SPIRE's parent template, blob formats, TPM-backed signing) is tpm/devid.py's.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import os
import socket

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.files import ManagedFile, parse_mode
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm.context import TSS2_Exception, open_tpm
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm.devid import (
    DevIDBlobs, _check_key_type, create_devid, key_type_of, load_devid, parse_public_blob, public_key_pem,
    require_cryptography, signing_key, translate_sign_error)
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.x509 import public_key_sha256

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID
except ImportError:  # pragma: no cover - require_cryptography() reports it
    pass


SUBJECT_ATTRIBUTES = (
    # option key, OID — emitted in this order (CN goes after OU, serialNumber last)
    ("C", "COUNTRY_NAME"),
    ("ST", "STATE_OR_PROVINCE_NAME"),
    ("L", "LOCALITY_NAME"),
    ("O", "ORGANIZATION_NAME"),
    ("OU", "ORGANIZATIONAL_UNIT_NAME"),
    ("CN", "COMMON_NAME"),
    ("serialNumber", "SERIAL_NUMBER"),
)
SUBJECT_KEYS = tuple(k for k, dummy in SUBJECT_ATTRIBUTES if k != "CN")


def build_subject(common_name, subject=None):
    """x509.Name from common_name plus optional attributes {C, ST, L, O, OU, serialNumber} (OU may be a list)."""
    require_cryptography()
    subject = dict(subject or {})
    unknown = sorted(k for k in subject if k not in SUBJECT_KEYS)
    if unknown:
        raise SpireTpmError("subject has unsupported attribute(s) %s" % ", ".join(unknown),
                            "use only %s (the common name comes from common_name)" % ", ".join(SUBJECT_KEYS))
    values = dict(subject)
    if common_name:
        values["CN"] = common_name
    attrs = []
    for key, oid_name in SUBJECT_ATTRIBUTES:
        val = values.get(key)
        if val is None or val == "" or val == []:
            continue
        for v in (val if isinstance(val, (list, tuple)) else [val]):
            v = str(v)
            if key == "C" and len(v) != 2:
                raise SpireTpmError("subject C %r is not a two-letter country code" % v, "use e.g. 'DE' or 'US'")
            attrs.append(x509.NameAttribute(getattr(NameOID, oid_name), v))
    if not attrs:
        raise SpireTpmError("the CSR subject would be empty", "set common_name (or subject attributes)")
    return x509.Name(attrs)


def parse_sans(sans):
    """['DNS:a', 'IP:1.2.3.4', 'URI:spiffe://x/y', 'email:a@b'] → list of x509.GeneralName."""
    require_cryptography()
    out = []
    for s in sans or []:
        kind, sep, value = str(s).partition(":")
        k = kind.strip().lower()
        value = value.strip()
        if not sep or not value:
            raise SpireTpmError("subject_alt_names entry %r has no type prefix" % (s,),
                                "write it as DNS:name, IP:address, URI:uri or email:address")
        if k == "dns":
            out.append(x509.DNSName(value))
        elif k == "ip":
            try:
                out.append(x509.IPAddress(ipaddress.ip_address(value)))
            except ValueError:
                raise SpireTpmError("subject_alt_names entry %r is not an IP address" % (s,),
                                    "write e.g. IP:192.0.2.10 or IP:2001:db8::1")
        elif k == "uri":
            out.append(x509.UniformResourceIdentifier(value))
        elif k in ("email", "rfc822"):
            out.append(x509.RFC822Name(value))
        else:
            raise SpireTpmError("subject_alt_names entry %r has unknown type %r" % (s, kind),
                                "use one of the prefixes DNS:, IP:, URI:, email:")
    return out


def build_csr(key, name, sans=None):
    """Build and sign (in the TPM) a CSR; returns PEM text."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(name)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    try:
        csr = builder.sign(key, hashes.SHA256())
    except TSS2_Exception as e:
        raise translate_sign_error(e, "signing the CSR with the DevID key")
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _sans_of(csr):
    try:
        ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(ext.value)


def csr_matches(csr_pem, public_key, name, sans=None):
    """True when ``csr_pem`` is a valid CSR for exactly this key, subject and SAN set."""
    require_cryptography()
    if not csr_pem:
        return False
    try:
        csr = x509.load_pem_x509_csr(csr_pem if isinstance(csr_pem, bytes) else csr_pem.encode("ascii"))
    except ValueError:
        return False
    if not csr.is_signature_valid:
        return False
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if csr.public_key().public_bytes(der, spki) != public_key.public_bytes(der, spki):
        return False
    if csr.subject != name:
        return False
    return sorted(map(repr, _sans_of(csr))) == sorted(map(repr, sans or []))


# --- the devid_csr workflow ---------------------------------------------------------------------------------------

def _check_writable(path, what):
    directory = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(directory):
        raise SpireTpmError("the directory of %s (%s) does not exist" % (what, directory),
                            "create it first (e.g. with ansible.builtin.file state=directory) or choose another path")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise SpireTpmError("%s cannot be written: no write permission on %s for uid %d"
                            % (what, directory, os.getuid()),
                            "run the task with become, or choose a writable path")
    if os.path.isdir(path):
        raise SpireTpmError("%s %s is a directory" % (what, path), "give the path of a file")


def ensure_devid_csr(tcti=None, key_type="rsa", pub_path=None, priv_path=None, csr_path=None, common_name=None,
                     subject=None, subject_alt_names=None, devid_password=None, owner_hierarchy_password=None,
                     force=False, owner=None, group=None, mode=None, check_mode=False):
    """Make sure a DevID key (SPIRE format) and a CSR for it with the wanted subject exist.

    Returns a dict: changed, key_created, csr (PEM or None in check mode before the key exists), public_key,
    public_key_sha256, key_type, subject, pub_path, priv_path, csr_path, written (paths changed), diff (list).
    """
    require_cryptography()
    _check_key_type(key_type)
    if not common_name:
        common_name = socket.getfqdn()
    name = build_subject(common_name, subject)
    sans = parse_sans(subject_alt_names)
    file_mode = parse_mode(mode, None)
    for path, what in ((pub_path, "pub_path"), (priv_path, "priv_path"), (csr_path, "csr_path")):
        _check_writable(path, what)
    pub_file = ManagedFile(pub_path, 0o644 if file_mode is None else file_mode, owner, group)
    priv_file = ManagedFile(priv_path, 0o600 if file_mode is None else file_mode, owner, group, secret=True)
    csr_file = ManagedFile(csr_path, 0o644 if file_mode is None else file_mode, owner, group)

    result = {"key_type": key_type, "pub_path": pub_path, "priv_path": priv_path, "csr_path": csr_path,
              "subject": name.rfc4514_string({NameOID.SERIAL_NUMBER: "serialNumber"}), "key_created": False,
              "csr": None, "public_key": None,
              "public_key_sha256": None}
    blobs = None
    reason = None
    if force:
        reason = "force: true"
    elif pub_file.before is None or priv_file.before is None:
        reason = "no existing key blobs"
    else:
        existing = parse_public_blob(pub_file.before, pub_path)
        if key_type_of(existing) != key_type:
            reason = "key type changes from %s to %s" % (key_type_of(existing), key_type)
        else:
            blobs = DevIDBlobs(existing, priv_file.before)

    csr_pem = None
    with open_tpm(tcti) as tpm:
        if blobs is None:
            result["key_created"] = True
            result["key_reason"] = reason
            if not check_mode:
                blobs = create_devid(tpm, key_type, devid_password, owner_hierarchy_password)
        if blobs is not None:
            handle, public = load_devid(tpm, blobs.pub_blob, blobs.priv_blob, devid_password,
                                        owner_hierarchy_password, pub_path, priv_path)
            key = signing_key(tpm, handle, public)
            pubkey = key.public_key()
            result["public_key"] = public_key_pem(pubkey)
            result["public_key_sha256"] = public_key_sha256(pubkey)
            if not result["key_created"] and csr_matches(csr_file.before, pubkey, name, sans):
                csr_pem = csr_file.before.decode("utf-8", "replace")
            else:
                csr_pem = build_csr(key, name, sans)
            result["csr"] = csr_pem

    written, diffs = [], []
    if blobs is not None:
        plan = [(pub_file, blobs.pub_blob), (priv_file, blobs.priv_blob), (csr_file, csr_pem.encode("ascii"))]
    else:  # check mode, the key does not exist yet: everything would be written anew
        plan = [(pub_file, None), (priv_file, None), (csr_file, None)]
    for mf, data in plan:
        if data is None:
            written.append(mf.path)
            diffs.append({"before_header": mf.path, "after_header": mf.path,
                          "before": mf.diff(b"")["before"],
                          "after": "<new DevID %s, made in the TPM when not in check mode>\n" % (
                              "CSR" if mf is csr_file else "key blob")})
            continue
        if mf.needs_write(data):
            diffs.append(mf.diff(data))
            mf.write(data, check_mode)
            written.append(mf.path)
    result["written"] = written
    result["diff"] = diffs
    result["changed"] = bool(written)
    return result
