# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The three checks of a no-op devid_provision run in one call (the devid_state module's logic).

1. the boot state against the host's baseline copy (``bootstate.measure``: tpm_boot_state's logic), reported and
   never judged: the gate is the role's;
2. the role's convergence record (``converge.ConvergenceRecord.check()``: the converged module's state=check);
3. only when converged, the replay of SPIRE's tpm_devid server checks (``attest``: tpm_devid_verify's logic). A
   failed replay is a result (``verified: false``, ``verify.failed``, ``verify.msg``: tpm_devid_verify's message),
   not an error, so that the role can restore the last good DevID or fail with it.

Everything that needs no TPM is read first (the baseline copy, the record and its paths, the DevID files and CA
bundles), so that a bad input fails before the TPM is opened; then one TPM context serves the PCR snapshot and the
replay, and every transient handle is flushed when it closes. The TPM is not held open while the convergence check
runs its health commands, and is not opened at all when there is nothing to measure or replay.

Imports nothing from Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.trustroot.spire_tpm.plugins.module_utils import converge
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.bootstate import measure as boot_measure
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError, error_result
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import attest
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import context

NOT_CONVERGED = "not run: not converged"
LOAD_OPTIONS = ("devid_cert_path", "devid_pub_path", "devid_priv_path", "devid_ca_path", "endorsement_ca_path",
                "trust_domain")


def verify_result(replayed):
    """``attest.replay()``'s dict → ``(verified, verify part)``: the part is tpm_devid_verify's result, and when a
    check failed its failed result (``failed: true``, ``msg`` its message, the checks and the rest)."""
    failed = replayed.pop("failed")
    if failed is None:
        return True, replayed
    return False, error_result(attest.failure_error(failed), failed=True, **replayed)


def replay_or_failure(tpm, inputs, verify):
    """Run the replay through ``tpm``; a failure of the agent session (the DevID does not load under SPIRE's parent,
    the TPM has no EK certificate, a hierarchy password is rejected) is a failed verification too, with
    tpm_devid_verify's message and the checks run so far."""
    try:
        replayed = attest.replay(tpm, inputs, verify.get("devid_password"), verify.get("owner_hierarchy_password"),
                                 verify.get("endorsement_hierarchy_password"))
    except SpireTpmError as err:
        result = error_result(err, failed=True)
        result.setdefault("checks", [])
        return False, result
    return verify_result(replayed)


def devid_state(tcti=None, boot_state=None, convergence=None, verify=None):
    """The devid_state module's result but ``changed`` (see its RETURN).

    ``boot_state``: None or ``{baseline_copy_path}``; ``convergence``: ConvergenceRecord's arguments (path,
    inputs_digest, paths, users, groups, certificates, commands); ``verify``: None or tpm_devid_verify's options
    (its tcti aside). Bad inputs, a malformed baseline copy and an unreachable TPM raise SpireTpmError.
    """
    if not convergence:
        raise SpireTpmError("devid_state needs the convergence record's options (convergence.path, "
                            "convergence.inputs_digest)", "pass the options the role passes to converged state=check")
    plan = None
    if boot_state is not None:
        plan = boot_measure.prepare(baseline_copy_path=boot_state["baseline_copy_path"])

    checked = converge.ConvergenceRecord(**convergence).check()
    result = dict(checked, boot_state=None, verify=None, verified=None)  # converged, reasons, certificates, digest
    if boot_state is not None and plan is None:
        result["boot_state"] = boot_measure.not_enrolled()

    inputs = None
    if verify is not None:
        if checked["converged"]:
            inputs = attest.load_inputs(**dict((k, verify[k]) for k in LOAD_OPTIONS))
        else:
            result["verify"] = {"skipped": True, "msg": NOT_CONVERGED}

    if plan is None and inputs is None:
        return result
    try:
        with context.open_tpm(tcti) as tpm:
            if plan is not None:
                measured = boot_measure.measure(tpm, plan)
                result["ansible_facts"] = measured.pop("ansible_facts")
                result["boot_state"] = measured
            if inputs is not None:
                result["verified"], result["verify"] = replay_or_failure(tpm, inputs, verify)
    except context.TSS2_Exception as e:
        raise context.describe_tss_error(e, "a TPM command of devid_state")
    return result
