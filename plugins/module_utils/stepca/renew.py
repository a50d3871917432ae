# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""On-host DevID certificate renewal: renew through step-ca with the TPM-resident DevID key when due.

Library use: ``renew_if_due(cert_path, signer_factory, client, renew_before)``. The new chain replaces the file
atomically with the old file's mode/owner/group; on any failure the old certificate stays in place.

Command line (what the role's timer/cron job runs; logs go to stdout/stderr, i.e. the journal under systemd)::

    python3 -m ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca.renew \\
        --cert /etc/spire/agent/devid.crt --ca-url https://ca.example.net:9000 --root-fingerprint <sha256> \\
        --devid-pub /etc/spire/agent/devid.pub --devid-priv /etc/spire/agent/devid.priv \\
        [--tcti device:/dev/tpmrm0] [--devid-password-file F] [--owner-hierarchy-password-file F] \\
        [--renew-before 30d] [--force]

Exit status: 0 renewed or not yet due, 1 failure (the message names cause and fix), 2 usage error.
Imports nothing from Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import os
import stat
import sys

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.files import atomic_write
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca import issuance
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca.client import StepCAClient


def renew_if_due(cert_path, signer_factory, client, renew_before=None, now=None, force=False):
    """Renew ``cert_path`` when inside its renewal window (or ``force``). Returns a dict with ``action``.

    ``signer_factory()`` returns a context manager yielding the certificate's private key object (the TPM key).
    """
    chain = issuance.load_chain_file(cert_path)
    if not chain:
        raise SpireTpmError("%s holds no certificate to renew" % cert_path,
                            "issue the DevID certificate first (devid_certificate module)")
    leaf = chain[0]
    info = issuance.describe(chain)
    if not force and not issuance.is_due(leaf, renew_before, now):
        info.update(action="none", changed=False,
                    renew_after=(issuance.not_after_of(leaf) - _td(issuance.renew_before_seconds(
                        leaf, renew_before))).isoformat())
        return info
    if issuance.is_expired(leaf, now):
        raise SpireTpmError("the DevID certificate in %s expired at %s" % (cert_path, info["not_after"]),
                            "step-ca renews expired certificates only when the provisioner allows it "
                            "(allowRenewalAfterExpiry); otherwise issue a new one with the devid_certificate module")
    client.health()
    with signer_factory() as key:
        new_chain = issuance.renew_step_ca(client, chain, key)
    st = os.stat(cert_path)
    atomic_write(cert_path, issuance.chain_pem(new_chain), mode=stat.S_IMODE(st.st_mode), owner=st.st_uid,
                 group=st.st_gid)
    out = issuance.describe(new_chain)
    out.update(action="renewed", changed=True, previous_serial=info["serial"])
    return out


def _td(seconds):
    import datetime
    return datetime.timedelta(seconds=seconds)


def _read_secret(path):
    if not path:
        return None
    with open(path) as f:
        return f.read().rstrip("\r\n")


def main(argv=None):
    p = argparse.ArgumentParser(prog="devid-renew", description="Renew the DevID certificate through step-ca with "
                                "the TPM-resident DevID key when it is due.")
    p.add_argument("--cert", required=True, help="certificate chain file (leaf first)")
    p.add_argument("--ca-url", required=True)
    p.add_argument("--root-fingerprint", required=True)
    p.add_argument("--devid-pub", required=True, help="DevID public blob (SPIRE format)")
    p.add_argument("--devid-priv", required=True, help="DevID private blob (SPIRE format)")
    p.add_argument("--tcti", default=None, help="TCTI, default: autodetect (/dev/tpmrm0)")
    p.add_argument("--devid-password-file", default=None)
    p.add_argument("--owner-hierarchy-password-file", default=None)
    p.add_argument("--renew-before", default=None, help="e.g. 30d or 720h; default one third of the lifetime")
    p.add_argument("--force", action="store_true", help="renew now even when not due")
    args = p.parse_args(argv)
    try:
        devid_password = _read_secret(args.devid_password_file) or os.environ.get("DEVID_PASSWORD")
        owner_password = (_read_secret(args.owner_hierarchy_password_file) or
                          os.environ.get("OWNER_HIERARCHY_PASSWORD"))
        client = StepCAClient(args.ca_url, args.root_fingerprint)

        def factory():
            return issuance.tpm_signer(args.tcti, args.devid_pub, args.devid_priv, devid_password, owner_password)

        result = renew_if_due(args.cert, factory, client, args.renew_before, force=args.force)
    except SpireTpmError as e:
        _say(sys.stderr, "devid-renew: ERROR: %s" % e.message)
        return 1
    except (IOError, OSError) as e:
        _say(sys.stderr, "devid-renew: ERROR: %s" % e)
        return 1
    if result["action"] == "renewed":
        _say(sys.stdout, "devid-renew: renewed %s: serial %s -> %s, valid until %s" % (
            args.cert, result["previous_serial"], result["serial"], result["not_after"]))
    else:
        _say(sys.stdout, "devid-renew: %s not due (serial %s valid until %s, renewal from %s)" % (
            args.cert, result["serial"], result["not_after"], result["renew_after"]))
    return 0


def _say(stream, line):
    """One log line for the journal/syslog (the job runs outside Ansible, so no module.log here)."""
    stream.write(line + "\n")
    stream.flush()


if __name__ == "__main__":
    raise SystemExit(main())
