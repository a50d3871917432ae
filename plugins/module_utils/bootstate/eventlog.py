# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The TCG PC Client crypto-agile event log (``/sys/kernel/security/tpm0/binary_bios_measurements``).

Layout (TCG PC Client Platform Firmware Profile), little-endian: a first record in the SHA-1 format (PCR, type,
20-byte digest, size, data) holding the ``Spec ID Event03`` header (hash algorithms and digest sizes); then
TCG_PCR_EVENT2 records (PCR, type, one digest per header algorithm, size, data).

API (names and shapes are a contract of the boot-state gate)::

    parse_event_log(data: bytes) -> EventLog
    parse_event_log_file(path: str) -> EventLog
    EventLog.spec    {"signature", "platform_class", "spec_version": "2.0.0", "uintn_size": 2 (1 = 32-bit UINTN,
                      2 = 64-bit), "algorithms": {bank: digest size}, "vendor_info": hex}
    EventLog.events  [{"index": n (0-based over the TCG_PCR_EVENT2 records), "pcr": int, "type": int,
                       "type_name": "EV_..." (or "0x%08x" when unknown), "digests": {bank: lower hex},
                       "data_size": int, "data_sha256": hex SHA-256 of the event data, "decoded": dict or None}]
    replay(log_or_events, banks=None, pcrs=None) -> {bank: {pcr int: hex}}
    events_of(log_or_events) -> the list of event dicts
The comparison of two logs (compare_logs, describe_event) is in bootstate/eventlog_compare.py.

Bank names are those of ``tpm/pcr.py`` (sha1, sha256, sha384, sha512, sm3_256). Every malformed log is a
SpireTpmError; garbage inside event data never raises (names are decoded with replacement characters). Imports
nothing from Ansible: it runs on hosts without ansible-core.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import functools
import hashlib
import re
import struct
import uuid

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm.pcr import (
    ALG_BANKS, DIGEST_SIZES, PCR_COUNT, normalize_pcrs)

EV_NO_ACTION, EV_SEPARATOR = 0x03, 0x04
EVENT_TYPES = {
    0x00: "EV_PREBOOT_CERT", 0x01: "EV_POST_CODE", 0x02: "EV_UNUSED", 0x03: "EV_NO_ACTION", 0x04: "EV_SEPARATOR",
    0x05: "EV_ACTION", 0x06: "EV_EVENT_TAG", 0x07: "EV_S_CRTM_CONTENTS", 0x08: "EV_S_CRTM_VERSION",
    0x09: "EV_CPU_MICROCODE", 0x0A: "EV_PLATFORM_CONFIG_FLAGS", 0x0B: "EV_TABLE_OF_DEVICES",
    0x0C: "EV_COMPACT_HASH", 0x0D: "EV_IPL", 0x0E: "EV_IPL_PARTITION_DATA", 0x0F: "EV_NONHOST_CODE",
    0x10: "EV_NONHOST_CONFIG", 0x11: "EV_NONHOST_INFO", 0x12: "EV_OMIT_BOOT_DEVICE_EVENTS", 0x13: "EV_POST_CODE2",
    0x80000001: "EV_EFI_VARIABLE_DRIVER_CONFIG", 0x80000002: "EV_EFI_VARIABLE_BOOT",
    0x80000003: "EV_EFI_BOOT_SERVICES_APPLICATION", 0x80000004: "EV_EFI_BOOT_SERVICES_DRIVER",
    0x80000005: "EV_EFI_RUNTIME_SERVICES_DRIVER", 0x80000006: "EV_EFI_GPT_EVENT", 0x80000007: "EV_EFI_ACTION",
    0x80000008: "EV_EFI_PLATFORM_FIRMWARE_BLOB", 0x80000009: "EV_EFI_HANDOFF_TABLES",
    0x8000000A: "EV_EFI_PLATFORM_FIRMWARE_BLOB2", 0x8000000B: "EV_EFI_HANDOFF_TABLES2",
    0x8000000C: "EV_EFI_VARIABLE_BOOT2", 0x8000000D: "EV_EFI_GPT_EVENT2", 0x80000010: "EV_EFI_HCRTM_EVENT",
    0x800000E0: "EV_EFI_VARIABLE_AUTHORITY", 0x800000E1: "EV_EFI_SPDM_FIRMWARE_BLOB",
    0x800000E2: "EV_EFI_SPDM_FIRMWARE_CONFIG", 0x800000E3: "EV_EFI_SPDM_DEVICE_POLICY",
    0x800000E4: "EV_EFI_SPDM_DEVICE_AUTHORITY",
}
VARIABLE_TYPES = ("EV_EFI_VARIABLE_DRIVER_CONFIG", "EV_EFI_VARIABLE_BOOT", "EV_EFI_VARIABLE_BOOT2",
                  "EV_EFI_VARIABLE_AUTHORITY")
IMAGE_TYPES = ("EV_EFI_BOOT_SERVICES_APPLICATION", "EV_EFI_BOOT_SERVICES_DRIVER", "EV_EFI_RUNTIME_SERVICES_DRIVER")
TEXT_TYPES = ("EV_S_CRTM_VERSION", "EV_POST_CODE", "EV_EFI_ACTION", "EV_ACTION", "EV_IPL", "EV_SEPARATOR",
              "EV_S_CRTM_CONTENTS", "EV_OMIT_BOOT_DEVICE_EVENTS", "EV_COMPACT_HASH")

SPEC_ID_SIGNATURE = b"Spec ID Event03\x00"
DEFAULT_PATH = "/sys/kernel/security/tpm0/binary_bios_measurements"  # where Linux exposes it (securityfs)
STARTUP_LOCALITY = "StartupLocality"
EFI_GLOBAL_VARIABLE = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
SIGNATURE_TYPES = {"a5c059a1-94e4-4aa7-87b5-ab155c2bf072": "x509", "c1c41626-504c-4092-aca9-41f936934328": "sha256",
                   "826ca512-cf10-4ac9-b187-be01496631bd": "sha1",
                   "3bd2a492-96c0-4079-b420-fcf98ef103ed": "x509_sha256"}
SIGNATURE_DB_NAMES = ("PK", "KEK", "db", "dbx", "dbt", "dbr", "MokList", "MokListX", "MokListTrusted", "SbatLevel")

MAX_LOG_SIZE, MAX_EVENT_DATA, MAX_ALGORITHMS, HEX_PREVIEW = 64 * 1024 * 1024, 16 * 1024 * 1024, 16, 64
RESETTABLE_FF = range(17, 23)  # PC Client profile: PCRs 17-22 start as all 0xFF (until a dynamic launch)

_FIX_LOG = ("give the unmodified firmware event log: copy /sys/kernel/security/tpm0/binary_bios_measurements "
            "as root (securityfs mounted) on a UEFI host with a TPM 2.0")


def event_type_name(etype):
    """'EV_…' for a known event type, '0x%08x' for any other."""
    return EVENT_TYPES.get(int(etype), "0x%08x" % int(etype))


class _Short(Exception):
    """Internal: a structure inside event data ended early (never leaves this module)."""


class _Reader:
    def __init__(self, data, pos=0, end=None, where=None):
        self.data, self.pos, self.end = data, pos, len(data) if end is None else end
        self.where = where  # None inside event data (→ _Short); a callable naming the record for log records

    def left(self):
        return self.end - self.pos

    def take(self, n, field="data"):
        if n < 0 or self.pos + n > self.end:
            if self.where is None:
                raise _Short("%s needs %d bytes, %d left" % (field, n, self.left()))
            raise SpireTpmError("the event log is truncated: %s of %s at byte offset %d needs %d bytes, only %d "
                                "remain" % (field, self.where(), self.pos, n, self.left()), _FIX_LOG,
                                offset=self.pos)
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def num(self, fmt, field="an integer"):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), field))[0]

    u8 = functools.partialmethod(num, "B")
    u16 = functools.partialmethod(num, "H")
    u32 = functools.partialmethod(num, "I")
    u64 = functools.partialmethod(num, "Q")

    def guid(self, field="GUID"):
        return str(uuid.UUID(bytes_le=bytes(self.take(16, field))))


def _utf16(raw):
    """UTF-16LE text up to the first NUL character; undecodable units become U+FFFD."""
    return bytes(raw[:len(raw) - len(raw) % 2]).decode("utf-16-le", "replace").split("\x00", 1)[0]


def _printable(text):
    return bool(text) and all(c.isprintable() or c in "\t\r\n" for c in text)


def _text_or_hex(raw):
    """{"text": ...} for ASCII/UTF-8 or UTF-16LE text (NUL-terminated or not), {"hex": ...} otherwise."""
    raw = bytes(raw)
    if len(raw) >= 4 and len(raw) % 2 == 0 and raw[0] and raw[1::2].count(0) == len(raw) // 2:
        text = _utf16(raw)
        if _printable(text):
            return {"text": text, "encoding": "utf-16-le"}
    text = raw.rstrip(b"\x00").decode("utf-8", "replace")
    if _printable(text) and "\ufffd" not in text:  # NUL-terminated or not, strictly valid UTF-8
        return {"text": text}
    return {"hex": raw[:HEX_PREVIEW].hex()}


def _hd_node(r):
    part, start, size = r.u32(), r.u64(), r.u64()
    sig, fmt, sig_type = r.take(16), r.u8(), r.u8()
    if sig_type == 2:
        ident = "GPT,%s" % uuid.UUID(bytes_le=bytes(sig))
    else:
        ident = ("MBR,0x%08x" % struct.unpack("<I", sig[:4])[0]) if sig_type == 1 else "%d,0" % fmt
    return "HD(%d,%s,0x%x,0x%x)" % (part, ident, start, size)


def _acpi_node(r):
    hid, uid = r.u32(), r.u32()
    name = {0x0A0341D0: "PciRoot", 0x0A0841D0: "PcieRoot"}.get(hid)  # PNP0A03, PNP0A08
    return "%s(0x%x)" % (name, uid) if name else "Acpi(0x%08x,0x%x)" % (hid, uid)


_NODES = {
    (0x01, 0x01): lambda r: "Pci(0x%x,0x%x)" % tuple(reversed((r.u8(), r.u8()))),
    (0x02, 0x01): _acpi_node,
    (0x03, 0x02): lambda r: "Scsi(0x%x,0x%x)" % (r.u16(), r.u16()),
    (0x03, 0x05): lambda r: "USB(0x%x,0x%x)" % (r.u8(), r.u8()),
    (0x03, 0x12): lambda r: "Sata(0x%x,0x%x,0x%x)" % (r.u16(), r.u16(), r.u16()),
    (0x03, 0x17): lambda r: "NVMe(0x%x,%s)" % (r.u32(), "-".join("%02X" % b for b in r.take(8))),
    (0x04, 0x01): _hd_node,
    (0x04, 0x06): lambda r: "FvFile(%s)" % r.guid(),
    (0x04, 0x07): lambda r: "Fv(%s)" % r.guid(),
    (0x04, 0x08): lambda r: "Offset(0x%x,0x%x)" % (r.take(4, "Reserved") and r.u64(), r.u64()),
}


def decode_device_path(raw):
    """A UEFI device path → {"device_path": "PciRoot(0x0)/…/\\EFI\\BOOT\\BOOTX64.EFI", "file_path": … or None}."""
    r = _Reader(bytes(raw))
    parts, files = [], []
    while r.left() >= 4:
        start = r.pos
        ntype, sub, length = r.u8(), r.u8(), r.u16()
        if length < 4 or start + length > r.end:
            parts.append("<malformed node at %d>" % start)
            break
        body = _Reader(r.data, r.pos, start + length)
        r.pos = start + length
        if ntype == 0x7F:
            if sub == 0xFF:
                break
            parts.append(",")
            continue
        if (ntype, sub) == (0x04, 0x04):
            files.append(_utf16(body.take(body.left())))
            parts.append(files[-1])
            continue
        try:
            parts.append(_NODES[(ntype, sub)](body))
        except (KeyError, _Short):
            parts.append("Path(%d,%d,%s)" % (ntype, sub, bytes(r.data[start + 4:start + length]).hex()))
    file_path = "\\".join(files).replace("\\\\", "\\") if files else None  # a path may span several nodes
    return {"device_path": "/".join(parts).replace("/,/", ","), "file_path": file_path}


def _signature_lists(raw):
    r = _Reader(bytes(raw))
    lists = []
    while r.left() >= 28:
        sig_type = r.guid()
        list_size, header_size, sig_size = r.u32(), r.u32(), r.u32()
        if list_size < 28 + header_size or sig_size < 16 or list_size - 28 > r.left():
            raise _Short("EFI_SIGNATURE_LIST sizes do not add up")
        r.take(header_size)
        body = list_size - 28 - header_size
        lists.append({"type": SIGNATURE_TYPES.get(sig_type, sig_type), "entries": body // sig_size})
        r.take(body)
    if r.left():
        raise _Short("%d stray bytes after the signature lists" % r.left())
    return lists


def _load_option(raw):
    r = _Reader(bytes(raw))
    attributes, path_len = r.u32(), r.u16()
    desc = []
    while True:
        unit = r.take(2, "description")
        if unit == b"\x00\x00":
            break
        desc.append(unit)
    out = {"attributes": attributes, "description": b"".join(desc).decode("utf-16-le", "replace")}
    out.update(decode_device_path(r.take(path_len, "FilePathList")))
    out["optional_data_size"] = r.left()
    return out


def _decode_variable(r, type_name):
    guid = r.guid("VariableName")
    name_len, data_len = r.u64(), r.u64()
    if name_len > MAX_EVENT_DATA or data_len > MAX_EVENT_DATA:
        raise _Short("absurd name/data length")
    name = _utf16(r.take(2 * name_len, "UnicodeName"))
    data = bytes(r.take(data_len, "VariableData"))
    out = {"guid": guid, "name": name, "data_length": data_len,
           "data_sha256": hashlib.sha256(data).hexdigest()}
    if type_name == "EV_EFI_VARIABLE_AUTHORITY":
        if len(data) >= 16:
            out["signature_owner"] = str(uuid.UUID(bytes_le=data[:16]))
        return out
    if name == "SecureBoot" and guid == EFI_GLOBAL_VARIABLE:
        out["enabled"] = bool(data[:1] == b"\x01")
        out["value"] = data[0] if data else None
    elif name == "BootOrder" and guid == EFI_GLOBAL_VARIABLE:
        out["boot_order"] = ["%04X" % v for v in struct.unpack("<%dH" % (len(data) // 2), data[:len(data) // 2 * 2])]
    elif re.match(r"Boot[0-9A-Fa-f]{4}$", name) and guid == EFI_GLOBAL_VARIABLE:
        try:
            out.update(_load_option(data))
        except _Short as e:
            out["load_option_error"] = str(e)
    elif name in SIGNATURE_DB_NAMES:
        try:
            lists = _signature_lists(data)
            out.update(signature_lists=lists, entries=sum(x["entries"] for x in lists))
        except _Short:
            pass
    return out


def _decode_image(r, uintn):
    read_n = r.u64 if uintn == 8 else r.u32
    location, length, link, dp_len = r.u64("ImageLocationInMemory"), read_n(), read_n(), read_n()
    out = {"image_location": location, "image_length": length, "link_time_address": link}
    out.update(decode_device_path(r.take(min(dp_len, r.left()), "DevicePath")))
    return out


def _decode_no_action(r):
    raw = bytes(r.take(r.left()))
    sig = raw[:16].split(b"\x00")[0].decode("ascii", "replace")
    if not _printable(sig) or len(raw) < 16:
        return _text_or_hex(raw)
    return dict({"signature": sig}, **({"locality": raw[16]} if sig == STARTUP_LOCALITY and len(raw) > 16 else {}))


def _decode(etype, type_name, data, uintn):
    r = _Reader(data)
    try:
        if type_name in VARIABLE_TYPES:
            return _decode_variable(r, type_name)
        if type_name in IMAGE_TYPES:
            return _decode_image(r, uintn)
        if etype == EV_NO_ACTION:
            return _decode_no_action(r)
        if etype == EV_SEPARATOR:
            return {"hex": bytes(data[:HEX_PREVIEW]).hex()}
        if type_name in TEXT_TYPES:
            return _text_or_hex(data)
        if type_name == "EV_EFI_PLATFORM_FIRMWARE_BLOB":
            return {"base": r.u64(), "length": r.u64()}
        if type_name == "EV_EFI_PLATFORM_FIRMWARE_BLOB2":
            desc = bytes(r.take(r.u8())).decode("utf-8", "replace")
            return {"description": desc, "base": r.u64(), "length": r.u64()}
    except _Short as e:
        return {"undecodable": str(e), "hex": bytes(data[:HEX_PREVIEW]).hex()}
    return None


class EventLog:
    """A parsed crypto-agile log: ``spec`` (the Spec ID header) and ``events`` (TCG_PCR_EVENT2 records)."""

    def __init__(self, spec, events):
        self.spec, self.events = spec, events

    def to_dict(self):
        return {"spec": self.spec, "events": self.events}


def _parse_spec_id(data):
    r = _Reader(data, where=lambda: "the first record (the Spec ID header)")
    pcr, etype = r.u32("PCRIndex"), r.u32("EventType")
    r.take(20, "SHA-1 digest")
    size = r.u32("EventSize")
    if size > MAX_EVENT_DATA:
        raise SpireTpmError("the first record of the event log claims %d bytes of event data: this is not a TCG "
                            "event log" % size, _FIX_LOG)
    body = bytes(data[r.pos:r.pos + size])
    if etype == EV_NO_ACTION and len(body) < size and (body.startswith(SPEC_ID_SIGNATURE)
                                                       or SPEC_ID_SIGNATURE.startswith(body)):
        r.take(size, "the Spec ID header's event data")  # a cut header: say so (raises)
    if etype != EV_NO_ACTION or not body.startswith(SPEC_ID_SIGNATURE):
        if body[:15] in (b"Spec ID Event00", b"Spec ID Event02"):
            found = "a %r header (TPM 1.2 style)" % body[:15].decode()
        else:
            found = "an %s record on PCR %d" % (event_type_name(etype), pcr)
        raise SpireTpmError("not a crypto-agile (TPM 2.0) event log: the first record is %s, not the 'Spec ID "
                            "Event03' header; SHA-1-only legacy (TPM 1.2) logs are not supported" % found,
                            "use the event log of a TPM 2.0 platform whose firmware writes the crypto-agile format "
                            "(TCG PC Client Platform Firmware Profile); check that the host boots with UEFI and "
                            "a TPM 2.0")
    h = _Reader(data, r.pos, r.pos + size, where=lambda: "the Spec ID header (first record)")
    r.take(size, "the Spec ID header's event data")
    h.take(16, "Signature")
    platform_class = h.u32("platformClass")
    minor, major, errata, uintn = h.u8("specVersionMinor"), h.u8("specVersionMajor"), h.u8("specErrata"), h.u8()
    count = h.u32("numberOfAlgorithms")
    if count == 0 or count > MAX_ALGORITHMS:
        raise SpireTpmError("the Spec ID header declares %d hash algorithms (expected 1 to %d)"
                            % (count, MAX_ALGORITHMS), _FIX_LOG)
    if uintn not in (1, 2):
        raise SpireTpmError("the Spec ID header's uintnSize is %d (1 = 32-bit, 2 = 64-bit firmware)" % uintn,
                            _FIX_LOG)
    algs, ids = {}, {}
    for _i in range(count):
        alg, dsize = h.u16("algorithmId"), h.u16("digestSize")
        if alg not in ALG_BANKS:
            raise SpireTpmError("the Spec ID header of the event log lists an unknown hash algorithm id 0x%04x "
                                "(digest size %d)" % (alg, dsize),
                                "known algorithm ids: %s" % ", ".join("0x%04x (%s)" % (a, ALG_BANKS[a])
                                                                      for a in sorted(ALG_BANKS)), algorithm_id=alg)
        bank = ALG_BANKS[alg]
        if dsize != DIGEST_SIZES[bank]:
            raise SpireTpmError("the Spec ID header gives %s digests a size of %d bytes; %s digests have %d"
                                % (bank, dsize, bank, DIGEST_SIZES[bank]), _FIX_LOG)
        if bank in algs:
            raise SpireTpmError("the Spec ID header lists %s twice" % bank, _FIX_LOG)
        algs[bank] = dsize
        ids[alg] = bank
    vendor = bytes(h.take(h.u8("vendorInfoSize"), "vendorInfo"))
    spec = {"signature": "Spec ID Event03", "platform_class": platform_class,
            "spec_version": "%d.%d.%d" % (major, minor, errata), "uintn_size": uintn, "algorithms": algs,
            "vendor_info": vendor.hex()}
    return spec, ids, r.pos


def _bad(index, offset, text):
    return SpireTpmError("event index %d (byte offset %d) %s" % (index, offset, text), _FIX_LOG, event_index=index,
                         offset=offset)


def parse_event_log(data):
    """Parse the bytes of a crypto-agile event log → EventLog (SpireTpmError for every malformed log)."""
    if data is None or len(data) == 0:
        raise SpireTpmError("the event log is empty (0 bytes)",
                            "read /sys/kernel/security/tpm0/binary_bios_measurements as root; an empty file means "
                            "the firmware handed over no TPM 2.0 event log (legacy BIOS boot, or the TPM disabled)")
    if len(data) > MAX_LOG_SIZE:
        raise SpireTpmError("the event log is %d bytes, more than the %d accepted" % (len(data), MAX_LOG_SIZE),
                            _FIX_LOG)
    data = bytes(data)
    spec, ids, pos = _parse_spec_id(data)
    uintn = 4 if spec["uintn_size"] == 1 else 8
    declared = ", ".join(ids[a] for a in ids)
    events = []
    while pos < len(data):
        index, start = len(events), pos
        r = _Reader(data, pos, where=lambda: "event index %d (record starting at byte offset %d)" % (index, start))
        pcr, etype = r.u32("PCRIndex"), r.u32("EventType")
        rest = data[start:]
        if (pcr, etype) in ((0, 0), (0xFFFFFFFF, 0xFFFFFFFF)) and rest.count(rest[:1]) == len(rest):
            break  # padding after the last record (some firmware tables hand over their whole area)
        count = r.u32("digest count")
        if pcr >= PCR_COUNT:
            raise _bad(index, start, "is for PCR %d; a TPM 2.0 has PCRs 0 to %d" % (pcr, PCR_COUNT - 1))
        if count != len(ids):
            raise _bad(index, start, "carries %d digest(s) but the Spec ID header declares %d algorithm(s) (%s)"
                       % (count, len(ids), declared))
        digests = {}
        for _i in range(count):
            alg = r.u16("AlgorithmId")
            bank = ids.get(alg)
            if bank is None or bank in digests:
                raise _bad(index, start, "has a digest for algorithm 0x%04x (%s) %s" % (
                    alg, ALG_BANKS.get(alg, "unknown"), "twice" if bank else "but the Spec ID header declares only "
                    + declared))
            digests[bank] = bytes(r.take(spec["algorithms"][bank], "the %s digest" % bank)).hex()
        size = r.u32("EventSize")
        if size > MAX_EVENT_DATA:
            raise _bad(index, start, "claims %d bytes of event data (more than %d): the log is corrupt"
                       % (size, MAX_EVENT_DATA))
        body = bytes(r.take(size, "the event data (%d bytes)" % size))
        name = event_type_name(etype)
        events.append({"index": index, "pcr": pcr, "type": etype, "type_name": name,
                       "digests": dict((b, digests[b]) for b in sorted(digests)), "data_size": size,
                       "data_sha256": hashlib.sha256(body).hexdigest(), "decoded": _decode(etype, name, body, uintn)})
        pos = r.pos
    return EventLog(spec, events)


def parse_event_log_file(path):
    """Read and parse an event log file (e.g. /sys/kernel/security/tpm0/binary_bios_measurements)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_LOG_SIZE + 1)
    except (IOError, OSError) as e:
        raise SpireTpmError("cannot read the event log %s: %s" % (path, e.strerror or e),
                            "run as root, with securityfs mounted (mount -t securityfs securityfs "
                            "/sys/kernel/security), on a host whose firmware hands over a TPM event log")
    try:
        return parse_event_log(data)
    except SpireTpmError as e:
        raise SpireTpmError("%s: %s" % (path, e.cause), e.fix, **e.details)


def events_of(log_or_events):
    """The event list of an EventLog, of its to_dict() form, or the list itself."""
    if isinstance(log_or_events, EventLog):
        return log_or_events.events
    return log_or_events["events"] if isinstance(log_or_events, dict) else list(log_or_events or [])


def _hasher(bank):
    name = {"sm3_256": "sm3"}.get(bank, bank)
    if name not in hashlib.algorithms_available:
        return None
    return lambda data: hashlib.new(name, data).digest()


def _startup_locality(events):
    for ev in events:
        dec = ev.get("decoded") or {}
        if ev.get("type") == EV_NO_ACTION and ev.get("pcr") == 0 and dec.get("signature") == STARTUP_LOCALITY:
            return dec.get("locality")
    return None


def replay(log_or_events, banks=None, pcrs=None):
    """Expected PCR values from the log: {bank: {pcr: lower hex}} (EV_NO_ACTION records are not extended).

    ``banks``: default every bank the events carry (banks this Python cannot hash are then left out). ``pcrs``:
    default the PCRs that the log extends (PCR 0 too when a StartupLocality event sets its initial value).
    PCR 0 starts with the StartupLocality byte in its last octet; PCRs 17-22 start as all 0xFF.
    """
    events = events_of(log_or_events)
    present = sorted(set(b for ev in events for b in ev.get("digests", {})))
    if banks is None:
        wanted = [b for b in present if _hasher(b)]
    else:
        wanted = [str(b).strip().lower().replace("-", "") for b in ([banks] if isinstance(banks, str) else banks)]
        for b in wanted:
            if b not in present or _hasher(b) is None:
                raise SpireTpmError("the event log has no %s digests" % b if b not in present else "this Python's "
                                    "hashlib cannot compute %s" % b, "replay one of the banks the log carries: %s"
                                    % (", ".join(x for x in present if _hasher(x)) or "none"))
    locality = _startup_locality(events)
    measured = set(ev["pcr"] for ev in events if ev.get("type") != EV_NO_ACTION)
    if locality is not None:
        measured.add(0)
    selected = sorted(measured) if pcrs is None else normalize_pcrs(pcrs)
    out = {}
    for bank in wanted:
        size, hash_fn = DIGEST_SIZES[bank], _hasher(bank)
        values = dict((p, (b"\xff" if p in RESETTABLE_FF else b"\x00") * size) for p in selected)
        if 0 in values and locality is not None:
            values[0] = b"\x00" * (size - 1) + bytes([locality & 0xFF])
        for ev in events:
            if ev.get("type") == EV_NO_ACTION or ev.get("pcr") not in values:
                continue
            digest = ev.get("digests", {}).get(bank)
            if digest is None:
                raise SpireTpmError("event index %s (PCR %s) has no %s digest" % (ev.get("index"), ev["pcr"], bank),
                                    "replay a bank every event carries")
            values[ev["pcr"]] = hash_fn(values[ev["pcr"]] + bytes.fromhex(digest))
        out[bank] = dict((p, values[p].hex()) for p in selected)
    return out
