# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""DevID certificate life cycle shared by the devid_certificate module and the on-host renewal job.

* What is on disk: the chain file (leaf first), whether it belongs to the CSR's key and name, when it is due.
* Issue through step-ca with a JWK provisioner (key decrypted from its ``encryptedKey`` with the provisioner
  password, or an operator-supplied one-time token), renew with a Bearer token signed by the DevID key in the TPM,
  revoke with a revoke token.

Imports nothing from Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import datetime

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.files import read_bytes
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca import token as tokens
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca.client import (
    not_after_of, not_before_of, parse_duration)
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca.jwe import (
    decrypt_provisioner_key, jwk_thumbprint, public_jwk, require_cryptography)

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
except ImportError:  # pragma: no cover - require_cryptography() reports it
    pass

STEP_CA_BACKDATE = 60      # step-ca backdates notBefore by one minute


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc)


# --- files and matching -------------------------------------------------------------------------------------------

def load_chain(data):
    """The certificates in the PEM bytes ``data`` (leaf first); None without data."""
    require_cryptography()
    if data is None:
        return None
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        return []       # unreadable content: treated as "no certificate" and replaced


def load_chain_file(path):
    """The certificates in ``path`` (leaf first), or None when the file does not exist."""
    require_cryptography()
    return load_chain(read_bytes(path))


def chain_pem(chain):
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)


def describe(chain):
    leaf = chain[0]
    return {"serial": str(leaf.serial_number), "not_after": not_after_of(leaf).isoformat(),
            "not_before": not_before_of(leaf).isoformat(),
            "chain": [c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in chain]}


def load_csr(csr_pem):
    require_cryptography()
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode("ascii") if isinstance(csr_pem, str) else csr_pem)
    except ValueError as e:
        raise SpireTpmError("the CSR is not a PEM certificate request (%s)" % e,
                            "pass the CSR the devid_csr module wrote (csr_path) or its content (csr)")
    if not csr.is_signature_valid:
        raise SpireTpmError("the CSR's signature does not verify", "create the CSR again with the DevID key")
    return csr


def csr_sans(csr):
    """The CSR's SANs as the strings step-ca's token ``sans`` uses."""
    try:
        ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    out = []
    for gn in ext:
        out.append(str(gn.value))
    return out


def _spki(key):
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def matches_csr(leaf, csr, full_subject=False):
    """True when the certificate is for the CSR's key and name (CN; the whole subject with ``full_subject``)."""
    if _spki(leaf.public_key()) != _spki(csr.public_key()):
        return False
    if full_subject:
        return leaf.subject == csr.subject
    return tokens.common_name(leaf) == tokens.common_name(csr)


def lifetime_seconds(leaf):
    return int((not_after_of(leaf) - not_before_of(leaf)).total_seconds())


def renew_before_seconds(leaf, renew_before=None):
    """``renew_before`` as seconds; None → one third of the certificate's lifetime."""
    if renew_before in (None, ""):
        return lifetime_seconds(leaf) // 3
    return parse_duration(renew_before, "renew_before")


def is_due(leaf, renew_before=None, now=None):
    now = now or now_utc()
    return not_after_of(leaf) - datetime.timedelta(seconds=renew_before_seconds(leaf, renew_before)) <= now


def is_expired(leaf, now=None):
    return not_after_of(leaf) <= (now or now_utc())


# --- step-ca ------------------------------------------------------------------------------------------------------

class Provisioner:
    """The JWK provisioner's signing key, decrypted on first use (fetched from the CA when not given)."""

    def __init__(self, client, name, password=None, encrypted_key=None):
        self.client = client
        self.name = name
        self.password = password
        self.encrypted_key = encrypted_key
        self._key = None
        self._kid = None

    @property
    def usable(self):
        return bool(self.name and self.password)

    def key(self):
        if self._key is None:
            if not self.name:
                raise SpireTpmError("no provisioner_name given", "set provisioner_name (or pass 'token')")
            if not self.password:
                raise SpireTpmError("no provisioner_password given",
                                    "set provisioner_password (or pass a one-time 'token' minted with "
                                    "'step ca token')")
            encrypted = self.encrypted_key
            listed = None
            if not encrypted:
                listed = self.client.provisioner(self.name)
                encrypted = listed.get("encryptedKey")
                if not encrypted:
                    raise SpireTpmError("the CA does not publish an encrypted key for provisioner %r" % self.name,
                                        "pass provisioner_encrypted_key, or mint tokens offline and pass 'token'")
            self._key, dummy = decrypt_provisioner_key(encrypted, self.password)
            self._kid = jwk_thumbprint(public_jwk(self._key))
            if listed is not None and listed.get("key", {}).get("kid") not in (None, self._kid):
                raise SpireTpmError("the decrypted key of provisioner %r does not match its published key id" %
                                    self.name, "the CA configuration is inconsistent; re-create the provisioner")
        return self._key

    def sign_token(self, csr):
        cn = tokens.common_name(csr)
        sans = csr_sans(csr) or ([cn] if cn else [])
        return tokens.sign_token(self.key(), self.name, self.client.url, cn, sans, self.client.fingerprint,
                                 kid=self._kid)

    def revoke_token(self, serial):
        key = self.key()
        return tokens.revoke_token(key, self.name, self.client.url, serial, self.client.fingerprint, kid=self._kid)


def issue_step_ca(client, csr_pem, validity_seconds, provisioner=None, ott=None):
    """Sign the CSR at step-ca; return the chain (leaf first). ``ott`` (operator token) wins over the provisioner."""
    csr = load_csr(csr_pem)
    if not ott:
        if provisioner is None:
            raise SpireTpmError("no way to authorize the certificate request",
                                "set provisioner_name and provisioner_password, or pass a one-time 'token'")
        ott = provisioner.sign_token(csr)
    chain = client.sign(csr_pem if isinstance(csr_pem, str) else csr_pem.decode("ascii"), ott, validity_seconds)
    if _spki(chain[0].public_key()) != _spki(csr.public_key()):
        raise SpireTpmError("step-ca returned a certificate for another key than the CSR's",
                            "see the CA's log; nothing was written")
    return chain


def renew_step_ca(client, chain, signing_key):
    """Renew through /1.0/renew with a Bearer token signed by ``signing_key`` (the DevID key, e.g. in the TPM)."""
    bearer = tokens.renew_token(signing_key, chain, client.url)
    expected = max(lifetime_seconds(chain[0]) - STEP_CA_BACKDATE, 0)
    new = client.renew(bearer, expected_seconds=expected)
    if _spki(new[0].public_key()) != _spki(chain[0].public_key()):
        raise SpireTpmError("step-ca renewed the certificate with another key", "see the CA's log")
    return new


def revoke_step_ca(client, leaf, provisioner=None, ott=None, reason="DevID certificate removed"):
    if not ott:
        if provisioner is None or not provisioner.usable:
            raise SpireTpmError("revoking needs the provisioner (or a revoke token)",
                                "set provisioner_name and provisioner_password, or pass a revoke 'token' "
                                "('step ca token --revoke <serial>')")
        ott = provisioner.revoke_token(leaf.serial_number)
    try:
        return client.revoke(leaf.serial_number, ott, reason=reason)
    except SpireTpmError as e:
        if "already been revoked" in (e.details.get("ca_message") or ""):
            return False
        raise


# --- TPM signer --------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def tpm_signer(tcti, devid_pub_path, devid_priv_path, devid_password=None, owner_hierarchy_password=None):
    """Context manager yielding the DevID key (signs in the TPM); every handle is flushed on exit."""
    from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm.context import TSS2_Exception, open_tpm
    from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import devid
    with open_tpm(tcti) as tpm:
        key = devid.load_devid_signing_key(tpm, devid_pub_path, devid_priv_path, devid_password,
                                           owner_hierarchy_password)
        try:
            yield key
        except TSS2_Exception as e:
            raise devid.translate_sign_error(e, "signing the renewal token with the DevID key")


@contextlib.contextmanager
def software_signer(key):
    """The same interface for a key held in memory (tests, non-TPM hosts)."""
    yield key
