"""pcr.py pure parts (baselines, drift, index checks) and the batching loop against a scripted TPM double.

The double behaves like TPM2_PCR_Read in the spec: it returns at most 8 digests, in bank-then-index order, and
a pcrSelectionOut naming exactly those. The real batching is exercised against swtpm in the integration tests.
"""

import json

import pytest
from tpm2_pytss.types import TPML_DIGEST, TPML_PCR_SELECTION, TPMS_PCR_SELECTION

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import pcr


class FakeEsapi:
    def __init__(self, values, bump_counter_on_call=None, max_digests=8):
        self.values = values  # {alg: {pcr: bytes}}
        self.calls = 0
        self.counter = 7
        self.bump = bump_counter_on_call or set()
        self.max = max_digests

    def pcr_read(self, selection):
        self.calls += 1
        if self.calls in self.bump:
            self.counter += 1
        out_sels, digests = [], []
        for sel in selection:
            alg = int(sel.hash)
            got = []
            for p in pcr._selected(sel):
                if len(digests) >= self.max:
                    break
                if p in self.values.get(alg, {}):
                    got.append(p)
                    digests.append(self.values[alg][p])
            if got:
                out_sels.append(TPMS_PCR_SELECTION(hash=alg, pcrs=got))
        return self.counter, TPML_PCR_SELECTION(out_sels), TPML_DIGEST(digests)


class FakeTPM:
    def __init__(self, esapi):
        self.esapi = esapi


def _values():
    return {0x0004: dict((i, bytes([i]) * 20) for i in range(24)),
            0x000B: dict((i, bytes([i + 100]) * 32) for i in range(24))}


def test_batches_of_eight_cover_everything():
    esapi = FakeEsapi(_values())
    got = pcr.read_pcrs(FakeTPM(esapi), {"sha1": range(24), "sha256": range(24)})
    assert esapi.calls == 6  # 48 digests / 8
    assert got["sha1"] == dict((i, bytes([i]) * 20) for i in range(24))
    assert got["sha256"][23] == bytes([123]) * 32


def test_counter_change_restarts_the_read():
    esapi = FakeEsapi(_values(), bump_counter_on_call={2})
    got = pcr.read_pcrs(FakeTPM(esapi), {"sha256": range(24)})
    # call 1 (counter 7), call 2 sees 8 → restart: 3 more calls with a stable counter
    assert esapi.calls == 5
    assert len(got["sha256"]) == 24


def test_counter_keeps_changing_gives_up():
    esapi = FakeEsapi(_values(), bump_counter_on_call=set(range(2, 100)))
    with pytest.raises(SpireTpmError, match="kept changing"):
        pcr.read_pcrs(FakeTPM(esapi), {"sha256": range(24)})


def test_unallocated_pcr_is_an_error_not_a_loop():
    vals = _values()
    del vals[0x000B][5]
    with pytest.raises(SpireTpmError, match="sha256:5"):
        pcr.read_pcrs(FakeTPM(FakeEsapi(vals)), {"sha256": [1, 5]})


@pytest.mark.parametrize("bad", [[24], [-1], [0, 99], ["x"], [True]])
def test_pcr_index_range(bad):
    with pytest.raises(SpireTpmError, match="PCR index out of range"):
        pcr.normalize_pcrs(bad)


def test_pcr_normalize():
    assert pcr.normalize_pcrs(None) == list(range(24))
    assert pcr.normalize_pcrs([7, "3", 7, 0]) == [0, 3, 7]


def test_check_banks():
    allocated = {"sha1": [0], "sha256": [0]}
    assert pcr.check_banks(None, allocated) == ["sha1", "sha256"]
    assert pcr.check_banks(["SHA256", "sha-256"], allocated) == ["sha256"]
    with pytest.raises(SpireTpmError) as e:
        pcr.check_banks(["sha384"], allocated)
    assert "sha384" in str(e.value) and "sha1, sha256" in str(e.value)


def test_baseline_spellings():
    h = "AB" * 32
    b = pcr.normalize_baseline({"SHA256": {"7": "0x" + h, 0: h.lower(), 1: int("ff", 16)}})
    assert b == {"sha256": {7: "ab" * 32, 0: "ab" * 32, 1: "00" * 31 + "ff"}}
    assert pcr.normalize_baseline({"tpm_pcrs": {"sha1": {"0": "00" * 20}}}) == {"sha1": {0: "00" * 20}}


@pytest.mark.parametrize("baseline,match", [
    ({"sha256": {"0": "zz"}}, "not hexadecimal"),
    ({"sha256": {"0": "00" * 20}}, "20 bytes"),
    ({"sha256": {"24": "00" * 32}}, "out of range"),
    ({"sha256": ["00"]}, "must map"),
    (["x"], "must be a mapping"),
    ({"sha1": {"0": 1 << 200}}, "does not fit"),
])
def test_baseline_rejections(baseline, match):
    with pytest.raises(SpireTpmError, match=match):
        pcr.normalize_baseline(baseline)


def test_drift():
    base = {"sha256": {0: "00" * 32, 7: "11" * 32}}
    values = {"sha256": {0: bytes(32), 7: b"\x22" * 32}}
    assert pcr.drift(base, values) == [{"bank": "sha256", "pcr": 7, "expected": "11" * 32, "actual": "22" * 32}]
    assert pcr.drift({"sha256": {0: "00" * 32}}, pcr.to_hex_facts(values)) == []


def test_baseline_file_json_and_tpm2_pcrread_yaml(tmp_path):
    j = tmp_path / "b.json"
    j.write_text(json.dumps({"sha256": {"0": "00" * 32}}))
    assert pcr.load_baseline_file(str(j)) == {"sha256": {0: "00" * 32}}
    y = tmp_path / "b.yaml"
    # the exact shape tpm2_pcrread prints
    y.write_text("  sha256:\n    0 : 0x%s\n    16: 0x%s\n" % ("00" * 32, "0A" * 32))
    assert pcr.load_baseline_file(str(y)) == {"sha256": {0: "00" * 32, 16: "0a" * 32}}
    bad = tmp_path / "bad.yaml"
    bad.write_text("sha256: [\n")
    with pytest.raises(SpireTpmError, match="neither JSON nor YAML"):
        pcr.load_baseline_file(str(bad))
    with pytest.raises(SpireTpmError, match="cannot read"):
        pcr.load_baseline_file(str(tmp_path / "missing.json"))


class AllocatingEsapi(FakeEsapi):
    """FakeEsapi that also answers TPM2_GetCapability(PCRS) with its banks, every PCR allocated."""

    def get_capability(self, cap, prop, count):
        sels = [TPMS_PCR_SELECTION(hash=alg, pcrs=sorted(vals)) for alg, vals in sorted(self.values.items())]
        return False, type("Caps", (), {"data": type("Data", (), {"assignedPCR": sels})()})()


def test_read_values_through_an_open_tpm():
    """read_values (measure()'s read, through a TPM the caller opened): the asked PCRs of the asked banks as hex,
    every allocated bank by default."""
    esapi = AllocatingEsapi(_values())
    values, banks = pcr.read_values(FakeTPM(esapi), None, [0, 7])
    assert banks == ["sha1", "sha256"]
    assert values == {"sha1": {"0": "00" * 20, "7": "07" * 20}, "sha256": {"0": "64" * 32, "7": "6b" * 32}}
    values, banks = pcr.read_values(FakeTPM(AllocatingEsapi(_values())), ["sha256"], {7})
    assert banks == ["sha256"] and values == {"sha256": {"7": "6b" * 32}}
    with pytest.raises(SpireTpmError, match="'sha384' is not allocated"):
        pcr.read_values(FakeTPM(AllocatingEsapi(_values())), ["sha384"], [0])
