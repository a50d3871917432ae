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
        [--renew-before 30d] [--force] [--boot-state /var/lib/trustroot/boot-state/baseline.json]

With ``--boot-state`` naming the host's boot-state baseline copy (written by the boot_state role) the PCRs are read
and evaluated against that baseline (bootstate/evaluate.py) BEFORE anything is asked of the CA: the job refuses when
the copy says ``blocked`` (an enforcement not lifted yet), or when its ``gate`` is ``enforce`` and the report has a
finding of its ``enforce_on`` (drift by default); with gate ``report`` the finding is only logged. A missing copy
means no gate (a host never enrolled).

Exit status: 0 renewed or not yet due, 1 failure (the message names cause and fix), 2 usage error, 3 refused by the
boot-state gate (the report is in the log). Imports nothing from Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import os
import stat
import sys

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.bootstate import baseline as boot_baseline
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.bootstate import evaluate as boot_evaluate
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.bootstate import eventlog
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.files import atomic_write
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca import issuance
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca.client import StepCAClient


EXIT_REFUSED = 3


class BootStateRefused(Exception):
    """The boot-state gate refuses: ``report`` is the evaluation, ``reason`` one line for the log."""

    def __init__(self, reason, report):
        Exception.__init__(self, reason)
        self.reason = reason
        self.report = report


def measure_pcrs(tcti, selection, banks):
    """{bank: {"<pcr>": hex}} of ``selection`` in ``banks`` (the baseline's), read as one snapshot."""
    from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import pcr
    return pcr.measure(tcti, banks, selection)[0]


def check_boot_state(copy_path, tcti=None, measure=measure_pcrs):
    """The boot-state gate: None without a copy, else the report; BootStateRefused when the job must not renew."""
    copy = boot_baseline.read_host_copy(copy_path)
    if copy is None:
        return None
    doc = boot_baseline.current_document(copy["baseline"], "the baseline in %s" % copy_path)
    event_log = boot_evaluate.read_event_log(copy.get("event_log_path") or eventlog.DEFAULT_PATH, required=False)
    values = measure(tcti, doc["pcr_selection"], sorted(doc["pcrs"]))
    report = boot_evaluate.evaluate(values, event_log, doc)
    blocked = copy.get("blocked")
    enforce_on = copy.get("enforce_on") or ["drift"]
    hits = [f for f in report["findings"] if f in enforce_on]
    if blocked:
        raise BootStateRefused("blocked by boot_state policy %s since %s (%s); now: %s: %s" % (
            blocked.get("policy"), blocked.get("applied_at"), blocked.get("summary"), report["status"],
            report["summary"]), report)
    if copy.get("gate", "enforce") != "report" and hits:
        raise BootStateRefused("boot state %s against baseline version %s: %s" % (
            report["status"], doc["version"], report["summary"]), report)
    return report


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
    p.add_argument("--boot-state", default=None, help="the host's boot-state baseline copy: compare the PCRs with "
                   "it before asking the CA, refuse on a blocked or drifted boot state (exit 3)")
    args = p.parse_args(argv)
    if args.boot_state:
        try:
            report = check_boot_state(args.boot_state, args.tcti)
        except BootStateRefused as e:
            _say(sys.stderr, "devid-renew: REFUSED: %s: %s; nothing was asked of the CA. If the change is sanctioned "
                 "(a planned firmware update) run playbooks/rebaseline.yml for this host with a reason" % (
                     args.cert, e.reason))
            for d in e.report["pcr_drift"]:
                _say(sys.stderr, "devid-renew: drift: %s PCR %s: %s -> %s"
                     % (d["bank"], d["pcr"], d["baseline"], d["current"]))
            return EXIT_REFUSED
        except SpireTpmError as e:
            _say(sys.stderr, "devid-renew: ERROR: boot-state gate: %s" % e.message)
            return 1
        if report is not None and report["status"] != "ok":
            _say(sys.stdout, "devid-renew: boot state %s (gate lets it through): %s"
                 % (report["status"], report["summary"]))
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
