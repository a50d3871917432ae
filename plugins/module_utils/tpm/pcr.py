# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PCR banks, batched PCR reads, baselines and drift.

TPM2_PCR_Read returns at most 8 digests per call (TPML_DIGEST holds 8); the TPM says in pcrSelectionOut which
ones it returned. ``read_pcrs`` asks again for what is still missing and restarts when the PCR update counter
moved between calls, so all values belong to one consistent state.

Imports nothing from Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm.context import (
    TSS2_Exception, describe_tss_error, open_tpm)

try:
    from tpm2_pytss.constants import TPM2_CAP
    from tpm2_pytss.types import TPML_PCR_SELECTION, TPMS_PCR_SELECTION
except ImportError:  # pragma: no cover - require_pytss() in open_tpm names the fix
    pass

try:
    import yaml
    HAS_YAML = True
except ImportError:  # pragma: no cover
    HAS_YAML = False

PCR_COUNT = 24
ALL_PCRS = list(range(PCR_COUNT))
MAX_ATTEMPTS = 5

# TPM_ALG_ID of the hash algorithms a PCR bank can use, and their digest sizes
BANK_ALGS = {"sha1": 0x0004, "sha256": 0x000B, "sha384": 0x000C, "sha512": 0x000D, "sm3_256": 0x0012,
             "sha3_256": 0x0027, "sha3_384": 0x0028, "sha3_512": 0x0029}
ALG_BANKS = dict((v, k) for k, v in BANK_ALGS.items())
DIGEST_SIZES = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64, "sm3_256": 32, "sha3_256": 32,
                "sha3_384": 48, "sha3_512": 64}


def bank_name(alg):
    return ALG_BANKS.get(int(alg), "alg_0x%04x" % int(alg))


def _selected(sel):
    """PCR indices set in a TPMS_PCR_SELECTION."""
    out = []
    size = int(sel.sizeofSelect)
    bits = bytes(sel.pcrSelect)[:size]
    for byte_i, b in enumerate(bits):
        for bit in range(8):
            if b & (1 << bit):
                out.append(byte_i * 8 + bit)
    return out


def allocated_banks(tpm):
    """{bank name: [pcr indices]} of the banks with at least one PCR allocated (TPM2_GetCapability PCRS)."""
    try:
        _more, data = tpm.esapi.get_capability(TPM2_CAP.PCRS, 0, 1)
    except TSS2_Exception as e:
        raise describe_tss_error(e, "reading the allocated PCR banks (TPM2_GetCapability)")
    banks = {}
    for sel in data.data.assignedPCR:
        pcrs = _selected(sel)
        if pcrs:
            banks[bank_name(sel.hash)] = pcrs
    return banks


def normalize_pcrs(pcrs):
    """A sorted list of unique ints in 0..23; SpireTpmError naming the bad entries otherwise."""
    if pcrs is None:
        return list(ALL_PCRS)
    if isinstance(pcrs, (int, str)):
        pcrs = [pcrs]
    out, bad = set(), []
    for p in pcrs:
        try:
            if isinstance(p, bool):
                raise ValueError
            v = int(p)
        except (TypeError, ValueError):
            bad.append(repr(p))
            continue
        if v < 0 or v >= PCR_COUNT:
            bad.append(str(p))
        else:
            out.add(v)
    if bad:
        raise SpireTpmError("PCR index out of range: %s" % ", ".join(bad),
                            "PCR indices are integers from 0 to 23")
    return sorted(out)


def check_banks(banks, allocated):
    """The requested banks (default: all allocated), each checked against the allocated ones."""
    if not banks:
        return sorted(allocated)
    names = []
    for b in banks:
        n = str(b).strip().lower().replace("-", "")
        if n not in allocated:
            raise SpireTpmError("PCR bank %r is not allocated on this TPM" % (b,),
                                "use one of the allocated banks: %s" % ", ".join(sorted(allocated)))
        if n not in names:
            names.append(n)
    return names


def _selection(wanted):
    sels = []
    for bank in sorted(wanted):
        if wanted[bank]:
            sels.append(TPMS_PCR_SELECTION(hash=BANK_ALGS[bank], pcrs=sorted(wanted[bank])))
    return TPML_PCR_SELECTION(sels)


def read_pcrs(tpm, selection):
    """Read ``{bank: [pcr, ...]}`` → ``{bank: {pcr: digest bytes}}``, batching TPM2_PCR_Read calls.

    Each call returns at most 8 digests; the rest is asked again. If the PCR update counter changes between
    calls (someone extended a PCR meanwhile) the read restarts so the result is one consistent snapshot.
    """
    wanted = dict((b, set(p)) for b, p in selection.items() if p)
    for b in wanted:
        if b not in BANK_ALGS:
            raise SpireTpmError("unknown PCR bank %r" % b, "use one of %s" % ", ".join(sorted(BANK_ALGS)))
    for _attempt in range(MAX_ATTEMPTS):
        values = dict((b, {}) for b in wanted)
        remaining = dict((b, set(p)) for b, p in wanted.items())
        counter = None
        consistent = True
        while any(remaining.values()):
            try:
                update_counter, sel_out, digests = tpm.esapi.pcr_read(_selection(remaining))
            except TSS2_Exception as e:
                raise describe_tss_error(e, "reading PCRs (TPM2_PCR_Read)")
            if counter is None:
                counter = int(update_counter)
            elif int(update_counter) != counter:
                consistent = False
                break
            digest_list = [bytes(d) for d in digests]
            i = 0
            got_any = False
            for sel in sel_out:
                bank = bank_name(sel.hash)
                for pcr in _selected(sel):
                    if i >= len(digest_list):
                        break
                    if bank in values and pcr in remaining.get(bank, ()):
                        values[bank][pcr] = digest_list[i]
                        remaining[bank].discard(pcr)
                        got_any = True
                    i += 1
            if not got_any:
                missing = ["%s:%s" % (b, ",".join(str(p) for p in sorted(ps))) for b, ps in remaining.items() if ps]
                raise SpireTpmError("the TPM returned no value for PCR(s) %s" % " ".join(missing),
                                    "those PCRs are not allocated in that bank; read tpm2_getcap pcrs and ask only "
                                    "for allocated banks/PCRs")
        if consistent:
            return values
    raise SpireTpmError("the PCRs kept changing while being read (%d attempts)" % MAX_ATTEMPTS,
                        "retry when no measurement is being extended (e.g. after boot has finished)")


def measure(tcti, banks, pcrs):
    """Open the TPM at ``tcti`` and read ``pcrs`` of ``banks`` (None: every allocated bank) as one snapshot.

    Returns ``({bank: {"pcr": hex}}, the banks read, the TCTI string used)``.
    """
    with open_tpm(tcti) as tpm:
        values, names = read_values(tpm, banks, pcrs)
        return values, names, tpm.tcti_string


def read_values(tpm, banks, pcrs):
    """Read ``pcrs`` of ``banks`` (None: every allocated bank) through the open ``tpm`` as one snapshot.

    Returns ``({bank: {"pcr": hex}}, the banks read)``.
    """
    names = check_banks(banks, allocated_banks(tpm))
    return to_hex_facts(read_pcrs(tpm, dict((b, list(pcrs)) for b in names))), names


def pcr_report(tpm, banks, pcrs, baseline=None):
    """Read ``pcrs`` (normalised indices) of ``banks`` (None/empty: every allocated bank) through the open ``tpm`` as
    one snapshot, plus every PCR of ``baseline`` (normalised, or None), and compare them with it.

    Returns ``{values: {bank: {"pcr": hex}} (only banks/pcrs asked for), banks: the banks read, allocated_banks:
    sorted, drift: [...], matches_baseline: bool or None without a baseline}`` (tpm_pcr_facts' and tpm_host_facts'
    results)."""
    allocated = allocated_banks(tpm)
    names = check_banks(banks, allocated)
    if baseline:
        check_banks(list(baseline), allocated)
    selection = dict((b, set(pcrs)) for b in names)
    for b, entries in (baseline or {}).items():
        selection.setdefault(b, set()).update(entries)
    values = read_pcrs(tpm, selection)
    wanted = dict((b, dict((i, values[b][i]) for i in pcrs if i in values[b])) for b in names)
    found = drift(baseline, values) if baseline is not None else []
    return {"values": to_hex_facts(wanted), "banks": names, "allocated_banks": sorted(allocated), "drift": found,
            "matches_baseline": (not found) if baseline is not None else None}


def to_hex_facts(values):
    """``{bank: {pcr: bytes}}`` → ``{bank: {"pcr": lowercase hex}}`` (JSON-safe, string keys)."""
    return dict((bank, dict((str(p), values[bank][p].hex()) for p in sorted(values[bank]))) for bank in values)


# ---------------------------------------------------------------------------------------------------------------
# baselines
# ---------------------------------------------------------------------------------------------------------------
def _digest_hex(bank, pcr, value):
    size = DIGEST_SIZES.get(bank)
    if isinstance(value, bool):
        raise SpireTpmError("baseline %s PCR %s: %r is not a digest" % (bank, pcr, value),
                            "give the digest as hex text")
    if isinstance(value, int):
        # YAML 1.1 reads tpm2_pcrread's '0x...' values as integers
        if size is None or value < 0 or value >= 1 << (8 * size):
            raise SpireTpmError("baseline %s PCR %s: integer %r does not fit a %s digest" % (bank, pcr, value, bank),
                                "give the digest as hex text")
        return "%0*x" % (2 * size, value)
    text = str(value).strip().lower()
    if text.startswith("0x"):
        text = text[2:]
    text = text.replace(":", "").replace(" ", "")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise SpireTpmError("baseline %s PCR %s: %r is not hexadecimal" % (bank, pcr, value),
                            "give each digest as hex text, e.g. the ansible_facts.tpm_pcrs output of tpm_pcr_facts")
    if size is not None and len(raw) != size:
        raise SpireTpmError("baseline %s PCR %s: %d bytes, a %s digest has %d" % (bank, pcr, len(raw), bank, size),
                            "check the bank the baseline value belongs to")
    return raw.hex()


def normalize_baseline(baseline):
    """``{bank: {index: hex}}`` in any of the accepted spellings → ``{bank: {int: lowercase hex}}``.

    Accepts string or int PCR keys, '0x'-prefixed or bare hex (any case), and integers (YAML reading of
    tpm2_pcrread output). A top-level ``tpm_pcrs`` key (a saved fact) is unwrapped.
    """
    if not isinstance(baseline, dict):
        raise SpireTpmError("the PCR baseline must be a mapping bank → {pcr index: hex digest}, got %s"
                            % type(baseline).__name__,
                            "e.g. {sha256: {'0': '<64 hex digits>', '7': '...'}}")
    if set(baseline) == {"tpm_pcrs"}:
        baseline = baseline["tpm_pcrs"]
    out = {}
    for bank, pcrs in baseline.items():
        name = str(bank).strip().lower().replace("-", "")
        if not isinstance(pcrs, dict):
            raise SpireTpmError("baseline bank %r must map PCR indices to digests" % (bank,),
                                "e.g. {sha256: {'0': '<hex>'}}")
        entries = {}
        for k, v in pcrs.items():
            idx = normalize_pcrs([k])[0]
            entries[idx] = _digest_hex(name, idx, v)
        out[name] = entries
    return out


def load_baseline_file(path):
    """Read a JSON or YAML baseline file → normalized baseline.

    Every way the file can be wrong (unreadable, not UTF-8 text, neither JSON nor YAML, not a mapping of banks,
    bad digests) is a SpireTpmError naming the file, what was wrong and what to write instead.
    """
    fix = ("write the file as JSON or YAML in UTF-8: a mapping bank → {pcr index: hex digest}, for example the "
           "ansible_facts.tpm_pcrs of tpm_pcr_facts or the output of tpm2_pcrread")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except (IOError, OSError) as e:
        raise SpireTpmError("cannot read baseline_file %s: %s" % (path, e.strerror or e),
                            "check the path on the managed host and that the task's user may read it")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpireTpmError("baseline_file %s is not UTF-8 text (byte 0x%02x at offset %d): a binary file such as a "
                            "TPM event log or a tpm2_pcrread -o dump is not a baseline"
                            % (path, raw[e.start], e.start), fix)
    if not text.strip():
        raise SpireTpmError("baseline_file %s is empty" % path, fix)
    try:
        data = json.loads(text)
    except ValueError:
        if not HAS_YAML:
            raise SpireTpmError("baseline_file %s is not JSON and PyYAML is not installed" % path,
                                "write the baseline as JSON or install PyYAML")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise SpireTpmError("baseline_file %s is neither JSON nor YAML: %s" % (path, str(e).replace("\n", " ")),
                                fix)
    if not isinstance(data, dict):
        raise SpireTpmError("baseline_file %s holds a %s, not a mapping of PCR banks"
                            % (path, "null document" if data is None else type(data).__name__), fix)
    try:
        return normalize_baseline(data)
    except SpireTpmError as e:
        raise SpireTpmError("baseline_file %s: %s" % (path, e.cause), e.fix)


def drift(baseline, values):
    """[{bank, pcr, expected, actual}] for every baseline entry that differs from ``values`` (hex facts or bytes)."""
    out = []
    for bank in sorted(baseline):
        for pcr in sorted(baseline[bank]):
            actual = values.get(bank, {}).get(pcr)
            if actual is None:
                actual = values.get(bank, {}).get(str(pcr))
            if isinstance(actual, (bytes, bytearray)):
                actual = bytes(actual).hex()
            if actual != baseline[bank][pcr]:
                out.append({"bank": bank, "pcr": pcr, "expected": baseline[bank][pcr], "actual": actual})
    return out
