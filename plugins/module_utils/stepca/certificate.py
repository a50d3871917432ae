# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The devid_certificate module's logic: decide issue / renew / nothing / revoke, then do it.

Imports nothing from Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.files import ManagedFile, parse_mode, read_bytes
from ansible_collections.trustroot.spire_tpm.plugins.module_utils import localca
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca import issuance
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca.client import StepCAClient, parse_duration

BACKENDS = ("step_ca", "local")


def _required(params, names, why):
    missing = [n for n in names if not params.get(n)]
    if missing:
        raise SpireTpmError("%s needs %s" % (why, ", ".join(missing)), "set %s" % ", ".join(missing))


def _csr_text(params):
    if params.get("csr"):
        return params["csr"]
    if not params.get("csr_path"):
        raise SpireTpmError("neither csr nor csr_path is set", "point csr_path at the devid_csr module's CSR")
    data = read_bytes(params["csr_path"])
    if data is None:
        raise SpireTpmError("the CSR %s does not exist" % params["csr_path"],
                            "create it first with the devid_csr module, or fix csr_path")
    return data.decode("ascii", "replace")


def _client(params):
    _required(params, ["ca_url", "root_fingerprint"], "backend=step_ca")
    return StepCAClient(params["ca_url"], params["root_fingerprint"])


def _provisioner(params, client):
    return issuance.Provisioner(client, params.get("provisioner_name"), params.get("provisioner_password"),
                                params.get("provisioner_encrypted_key"))


def _tpm_renewal_configured(params):
    return bool(params.get("devid_pub_path") and params.get("devid_priv_path"))


def _diff(mf, before, after):
    header = mf.path or "current_cert"
    return {"before": before, "after": after, "before_header": header, "after_header": header}


class _GivenCertificate(object):
    """The current certificate given as content (``current_cert``) instead of a file: decided on like
    ``cert_path``'s file, never written; ``path`` is None and the result's cert_pem is what to put in place."""

    path = None

    def __init__(self, text):
        self.before = text.encode("utf-8", "surrogateescape") if text else None

    def write(self, data, check_mode=False):
        return False


def ensure_certificate(params, check_mode=False):
    """Bring ``params['cert_path']`` (or the certificate given as ``params['current_cert']``) to the requested
    state. Returns the module result (with 'diff')."""
    backend = params.get("backend") or "step_ca"
    if backend not in BACKENDS:
        raise SpireTpmError("backend %r is unknown" % backend, "use step_ca or local")
    given = params.get("current_cert")
    if given is not None:
        if params.get("cert_path"):
            raise SpireTpmError("current_cert and cert_path are both set",
                                "give the current certificate either as a file (cert_path) or as content")
        if params.get("state") == "absent":
            raise SpireTpmError("state=absent needs cert_path (the file to revoke and remove), not current_cert",
                                "set cert_path")
        mf = _GivenCertificate(given)
        existing = issuance.load_chain(mf.before)
    elif params.get("cert_path"):
        mode = parse_mode(params.get("mode"), 0o644)
        mf = ManagedFile(params["cert_path"], mode, params.get("owner"), params.get("group"))
        existing = issuance.load_chain_file(params["cert_path"])
    else:
        raise SpireTpmError("neither cert_path nor current_cert is set",
                            "point cert_path at the certificate file, or give its content as current_cert")
    before_text = mf.before.decode("ascii", "replace") if mf.before is not None else ""
    if params.get("state") == "absent":
        return _absent(params, backend, mf, existing, before_text, check_mode)

    csr_pem = _csr_text(params)
    csr = issuance.load_csr(csr_pem)
    validity = parse_duration(params.get("validity") or "2160h", "validity")
    client = _client(params) if backend == "step_ca" else None
    if client is not None:
        client.health()

    leaf = existing[0] if existing else None
    if leaf is None or not issuance.matches_csr(leaf, csr, full_subject=(backend == "local")):
        action = "issued"
    elif issuance.is_due(leaf, params.get("renew_before")):
        action = "issued" if issuance.is_expired(leaf) else "renewed"
    else:
        action = "none"

    if action == "none":
        result = issuance.describe(existing)
        changed = mf.write(mf.before, check_mode)     # attributes only
        result.update(changed=changed, cert_action="none", cert_path=mf.path, diff=None,
                      cert_pem=given if given is not None else mf.before.decode("ascii", "replace"))
        return result

    if check_mode:
        result = issuance.describe(existing) if existing else {"serial": None, "not_after": None,
                                                               "not_before": None, "chain": []}
        result.update(changed=True, cert_action=action, cert_path=mf.path, cert_pem=None,
                      diff=_diff(mf, before_text, "<certificate to be %s by the %s backend>\n" % (action, backend)))
        return result

    if backend == "local":
        _required(params, ["ca_cert_path", "ca_key_path"], "backend=local")
        ca_certs, ca_key = localca.load_ca(params["ca_cert_path"], params["ca_key_path"],
                                           params.get("ca_key_password"))
        chain = localca.sign_csr(csr_pem, ca_certs, ca_key, validity)
    elif action == "renewed" and _tpm_renewal_configured(params):
        with issuance.tpm_signer(params.get("tcti"), params["devid_pub_path"], params["devid_priv_path"],
                                 params.get("devid_password"), params.get("owner_hierarchy_password")) as key:
            chain = issuance.renew_step_ca(client, existing, key)
    else:
        if action == "renewed" and not (params.get("token") or params.get("provisioner_password")):
            raise SpireTpmError(
                "the DevID certificate %s is due for renewal but no way to renew it is configured" % mf.path,
                "set devid_pub_path and devid_priv_path (renewal signed by the DevID key in the TPM), or "
                "provisioner_name/provisioner_password (a new certificate for the same CSR)")
        chain = issuance.issue_step_ca(client, csr_pem, validity, _provisioner(params, client), params.get("token"))
    data = issuance.chain_pem(chain)
    mf.write(data, check_mode=False)
    result = issuance.describe(chain)
    if existing:
        result["previous_serial"] = str(existing[0].serial_number)
    result.update(changed=True, cert_action=action, cert_path=mf.path, cert_pem=data.decode("ascii"),
                  diff=_diff(mf, before_text, data.decode("ascii")))
    return result


def _absent(params, backend, mf, existing, before_text, check_mode):
    if mf.before is None:
        return {"changed": False, "cert_action": "none", "cert_path": mf.path, "serial": None, "not_after": None,
                "not_before": None, "chain": [], "diff": None}
    result = issuance.describe(existing) if existing else {"serial": None, "not_after": None, "not_before": None,
                                                           "chain": []}
    action = "removed"
    if backend == "step_ca" and existing and not issuance.is_expired(existing[0]):
        client = _client(params)
        client.health()
        action = "revoked"
        if not check_mode:
            issuance.revoke_step_ca(client, existing[0], _provisioner(params, client), params.get("token"))
    if not check_mode:
        try:
            os.unlink(mf.path)
        except OSError as e:
            raise SpireTpmError("cannot remove %s: %s" % (mf.path, e.strerror),
                                "run the task with become, or remove the file by hand")
    result.update(changed=True, cert_action=action, cert_path=mf.path, diff=_diff(mf, before_text, ""))
    return result
