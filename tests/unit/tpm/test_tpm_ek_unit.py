"""ek.py / info.py pure parts: the EK index table against tpm2-pytss's own templates, DER padding, EK recognition."""

import pytest
from tpm2_pytss.constants import TPM2_ALG, TPM2_ECC
from tpm2_pytss.internal.templates import ek_template
from tpm2_pytss.types import TPMT_PUBLIC

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import ek, info

CURVES = {TPM2_ECC.NIST_P256: "P-256", TPM2_ECC.NIST_P384: "P-384", TPM2_ECC.NIST_P521: "P-521",
          TPM2_ECC.SM2_P256: "SM2-P256"}


@pytest.mark.parametrize("nv_index", sorted(ek.EK_NV_INDICES))
def test_index_table_matches_pytss_templates(nv_index):
    t = ek_template.lookup(ek.EK_TEMPLATE_NAMES[nv_index])
    assert int(t.cert_index) == nv_index
    area = t.template.publicArea
    if area.type == TPM2_ALG.RSA:
        assert ek.EK_NV_INDICES[nv_index] == ("rsa", int(area.parameters.rsaDetail.keyBits))
    else:
        assert ek.EK_NV_INDICES[nv_index] == ("ecc", CURVES[area.parameters.eccDetail.curveID])
    # every template's policy is one we recognise as an EK policy, and its shape passes is_ek_public
    assert ek.is_ek_public(area)


def test_required_indices_present():
    for idx in (0x01c00002, 0x01c0000a, 0x01c00012, 0x01c00014, 0x01c00016, 0x01c00018, 0x01c0001c, 0x01c0001e):
        assert idx in ek.EK_NV_INDICES


def _fresh_rsa_template():
    # a copy: the template objects are shared class attributes of tpm2-pytss
    area, _ = TPMT_PUBLIC.unmarshal(ek_template.lookup("EK-RSA2048").template.publicArea.marshal())
    return area


def test_non_ek_shapes_rejected():
    assert ek.is_ek_public(_fresh_rsa_template())
    area = _fresh_rsa_template()
    area.authPolicy = b"\x00" * 32
    assert not ek.is_ek_public(area)
    area = _fresh_rsa_template()
    area.objectAttributes = int(area.objectAttributes) & ~0x10000  # drop restricted
    assert not ek.is_ek_public(area)


def test_der_padding_stripped():
    der = bytes([0x30, 0x82, 0x01, 0x00]) + b"\x01" * 0x100
    assert ek.der_length(der) == 0x104
    assert ek.strip_der_padding(der + b"\xff" * 50) == der
    assert ek.strip_der_padding(der + b"\x00" * 3) == der
    short = bytes([0x30, 0x03, 1, 2, 3])
    assert ek.strip_der_padding(short + b"\x00") == short
    # not DER, or truncated: returned unchanged, the certificate parser reports it
    assert ek.strip_der_padding(b"\x04\x01\x00") == b"\x04\x01\x00"
    assert ek.strip_der_padding(der[:100]) == der[:100]


def test_template_names():
    assert ek.normalize_template("H-3") == "EK-HIGH-ECC384"
    assert ek.template_name_for("ecc", "P-384") == "EK-HIGH-ECC384"
    assert ek.template_name_for("rsa", 2048) == "EK-RSA2048"
    assert ek.template_name_for("rsa", 2048, high_range=True) == "EK-HIGH-RSA2048"
    with pytest.raises(SpireTpmError, match="unknown EK template"):
        ek.normalize_template("EK-DSA")


def test_info_summary():
    props = {info.PT_MANUFACTURER: 0x49465800, info.PT_VENDOR_STRING_1: 0x534C4239, info.PT_VENDOR_STRING_2:
             0x36373000, info.PT_VENDOR_STRING_3: 0, info.PT_VENDOR_STRING_4: 0,
             info.PT_FIRMWARE_VERSION_1: 0x00070055, info.PT_FIRMWARE_VERSION_2: 0x11CB0000,
             info.PT_FAMILY_INDICATOR: 0x322E3000, info.PT_LEVEL: 0, info.PT_REVISION: 138, info.PT_YEAR: 2019,
             info.PT_DAY_OF_YEAR: 137}
    s = info.summarize(props)
    assert s["manufacturer"] == "IFX"
    assert s["vendor"] == "SLB9670"
    assert s["firmware_version"] == "7.85.4555.0"
    assert s["spec"] == {"family": "2.0", "level": 0, "revision": "1.38", "year": 2019, "day_of_year": 137}
