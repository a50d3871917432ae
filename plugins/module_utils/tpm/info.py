# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixed TPM properties: manufacturer, vendor string, firmware version, specification family/level/revision.

Imports nothing from Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm.context import TSS2_Exception, describe_tss_error

try:
    from tpm2_pytss.constants import TPM2_CAP
except ImportError:  # pragma: no cover - require_pytss() in open_tpm names the fix
    pass

# TPM_PT_FIXED (0x100) + n, from the TPM 2.0 spec part 2 (TPM_PT constants)
PT_FIXED = 0x100
PT_FAMILY_INDICATOR = PT_FIXED + 0
PT_LEVEL = PT_FIXED + 1
PT_REVISION = PT_FIXED + 2
PT_DAY_OF_YEAR = PT_FIXED + 3
PT_YEAR = PT_FIXED + 4
PT_MANUFACTURER = PT_FIXED + 5
PT_VENDOR_STRING_1 = PT_FIXED + 6
PT_VENDOR_STRING_2 = PT_FIXED + 7
PT_VENDOR_STRING_3 = PT_FIXED + 8
PT_VENDOR_STRING_4 = PT_FIXED + 9
PT_VENDOR_TPM_TYPE = PT_FIXED + 10
PT_FIRMWARE_VERSION_1 = PT_FIXED + 11
PT_FIRMWARE_VERSION_2 = PT_FIXED + 12


def fixed_properties(tpm):
    """{property_int: value_int} of every TPM_PT_FIXED property the TPM reports (looping while 'more data')."""
    props = {}
    start = PT_FIXED
    try:
        while True:
            more, data = tpm.esapi.get_capability(TPM2_CAP.TPM_PROPERTIES, start, 64)
            items = list(data.data.tpmProperties)
            for p in items:
                prop = int(p.property)
                if prop >= 0x200:  # past TPM_PT_FIXED into TPM_PT_VAR
                    return props
                props[prop] = int(p.value)
            if not more or not items:
                return props
            start = int(items[-1].property) + 1
    except TSS2_Exception as e:
        raise describe_tss_error(e, "reading the TPM's fixed properties (TPM2_GetCapability)")


def u32_text(value):
    """The ASCII text packed big-endian into a 32-bit property, NULs and trailing blanks removed."""
    raw = int(value).to_bytes(4, "big")
    return "".join(chr(b) for b in raw if 0x20 <= b < 0x7F).strip()


def firmware_version(v1, v2):
    """Dotted firmware version as tpm2-tools/Windows show it: FW1 high.low . FW2 high.low."""
    return "%d.%d.%d.%d" % ((v1 >> 16) & 0xFFFF, v1 & 0xFFFF, (v2 >> 16) & 0xFFFF, v2 & 0xFFFF)


def summarize(props):
    """Turn the raw fixed properties into the reported dictionary."""
    vendor = "".join(u32_text(props.get(p, 0)) for p in range(PT_VENDOR_STRING_1, PT_VENDOR_STRING_4 + 1))
    revision = props.get(PT_REVISION)
    return {
        "manufacturer": u32_text(props.get(PT_MANUFACTURER, 0)),
        "manufacturer_id": "0x%08x" % props.get(PT_MANUFACTURER, 0),
        "vendor": vendor,
        "firmware_version": firmware_version(props.get(PT_FIRMWARE_VERSION_1, 0), props.get(PT_FIRMWARE_VERSION_2, 0)),
        "spec": {
            "family": u32_text(props.get(PT_FAMILY_INDICATOR, 0)),
            "level": props.get(PT_LEVEL),
            # TPM_PT_REVISION is the spec revision times 100 (138 → 1.38)
            "revision": ("%d.%02d" % (revision // 100, revision % 100)) if revision is not None else None,
            "year": props.get(PT_YEAR),
            "day_of_year": props.get(PT_DAY_OF_YEAR),
        },
    }


def tpm_info(tpm):
    """Manufacturer, vendor string, firmware version, spec of the TPM (see ``summarize``)."""
    return summarize(fixed_properties(tpm))
