# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Measure a host's boot state and evaluate it: the tpm_boot_state module's logic, shared with devid_state.

Two steps, so that a caller that has a TPM open for more than this can reuse it:

``prepare(...)``  everything that needs no TPM: the host's baseline copy (None when it does not exist: nothing is
                  measured), the baseline document, the PCR selection and banks, the event log;
``measure(tpm, plan)``  the PCR snapshot through the open ``tpm`` and the evaluation → tpm_boot_state's result.

``boot_state(tcti, **options)`` does both in one TPM context of its own.

Imports nothing from Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.bootstate import baseline as bs
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.bootstate import evaluate as ev
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.bootstate.eventlog import DEFAULT_PATH
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import pcr as pcr_utils
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm.context import open_tpm

DEFAULT_PCRS = list(range(8))


def prepare(pcrs=None, banks=None, event_log_path=None, event_log_required=False, baseline=None,
            baseline_copy_path=None):
    """What to measure and against what (tpm_boot_state's options), read without the TPM.

    Returns None when ``baseline_copy_path`` is given and does not exist (a host never enrolled: nothing is
    measured), else the plan for ``measure()``: ``{pcrs, banks, baseline_doc, event_log, baseline_copy}``
    (``baseline_copy`` only with ``baseline_copy_path``: the copy without its baseline). A malformed copy or
    baseline, bad PCR indices or an unreadable event log raise SpireTpmError.
    """
    event_log_path = event_log_path or DEFAULT_PATH
    plan = {}
    if baseline_copy_path is not None:
        copy = bs.read_host_copy(baseline_copy_path)
        if copy is None:
            return None
        baseline_doc = bs.current_document(copy["baseline"], "the baseline in %s" % baseline_copy_path)
        pcrs = pcr_utils.normalize_pcrs(baseline_doc["pcr_selection"])
        banks = sorted(baseline_doc["pcrs"])
        event_log_path = copy.get("event_log_path") or event_log_path
        plan["baseline_copy"] = dict((k, v) for k, v in copy.items() if k != "baseline")
    else:
        pcrs = pcr_utils.normalize_pcrs(DEFAULT_PCRS if pcrs is None else pcrs)
        baseline_doc = bs.current_document(baseline) if baseline is not None else None
    plan.update(pcrs=pcrs, banks=banks, baseline_doc=baseline_doc,
                event_log=ev.read_event_log(event_log_path, event_log_required))
    return plan


def measure(tpm, plan):
    """Read the plan's PCRs through the open ``tpm`` (one snapshot) and evaluate them: tpm_boot_state's result
    (``boot_state``, ``report``, ``ansible_facts``, ``banks``, ``tcti`` and, from a copy, ``baseline_copy``)."""
    pcrs, baseline_doc, event_log = plan["pcrs"], plan["baseline_doc"], plan["event_log"]
    wanted = set(pcrs) | set(baseline_doc["pcr_selection"] if baseline_doc else ())
    values, banks = pcr_utils.read_values(tpm, plan["banks"], wanted)
    report = ev.evaluate(values, event_log, baseline_doc, pcr_selection=pcrs)
    selected = dict((b, dict((k, v) for k, v in values[b].items() if int(k) in pcrs)) for b in values)
    result = {
        "boot_state": {"pcr_selection": pcrs, "pcrs": selected, "event_log": event_log},
        "report": report,
        "ansible_facts": {"tpm_boot_state": ev.compact(report, selected)},
        "banks": banks,
        "tcti": tpm.tcti_string,
    }
    if "baseline_copy" in plan:
        result["baseline_copy"] = plan["baseline_copy"]
    return result


def not_enrolled():
    """The result when the baseline copy does not exist: nothing measured."""
    return {"baseline_copy": None}


def boot_state(tcti=None, **options):
    """``prepare()`` then ``measure()`` in a TPM context of its own (the tpm_boot_state module)."""
    plan = prepare(**options)
    if plan is None:
        return not_enrolled()
    with open_tpm(tcti) as tpm:
        return measure(tpm, plan)
