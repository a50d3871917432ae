# -*- coding: utf-8 -*-
"""Crypto-agile TCG event logs for tests, written from the TCG PC Client Platform Firmware Profile layout.

Test-only: it never imports the parser (plugins/module_utils/bootstate/eventlog.py), which is checked against
this generator AND against tpm2_eventlog. An *event spec* is a dict::

    {"pcr": int, "type": int, "data": bytes,            # the TCG_PCR_EVENT2 record
     "hashed": bytes,                                   # what the digests are computed over (default: data)
     "digests": {bank: bytes},                          # optional: written as given (broken logs)
     "alg_ids": {bank: int},                            # optional: another algorithm id for a bank (broken logs)
     "zero_digests": True,                              # EV_NO_ACTION: all-zero digests
     "variable": (guid, name, value) | "path": str}     # what helpers such as with_changed_variable look for

API::

    build_log(events=None, banks=("sha1", "sha256"), startup_locality=None, header_algs=None,
              signature=b"Spec ID Event03\\0", uintn_size=2) -> GeneratedLog   (bytes with .events, .banks,
              .offsets: the byte offset of each TCG_PCR_EVENT2 record)
    default_boot_events() -> [event spec]               (a realistic UEFI Secure Boot sequence, PCRs 0-7)
    with_changed_variable(events, name, new_data) -> [event spec]
    with_added_event(events, spec) -> [event spec]      (after the last event of the spec's PCR)
    with_altered_digest(events, position, bank="sha256", banks=("sha1", "sha256")) -> [event spec]
    digests_of(spec, banks) -> {bank: bytes}
    extend_tpm(tcti, log_bytes_or_events, banks=("sha1", "sha256"), batch=8) -> number of extends
    truncated(log, event_index, keep=10) -> bytes        (cut inside record ``event_index``)
    unknown_algorithm_log(events=None) / wrong_digest_count_log(events=None, position=3) / legacy_sha1_log(events=None)
    constructors: variable_event, boot_variable, load_option, image_event, separator, efi_action, crtm_version,
                  post_code, no_action, signature_list, device_path
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import tempfile
import uuid

import yaml

ALG_IDS = {"sha1": 0x0004, "sha256": 0x000B, "sha384": 0x000C, "sha512": 0x000D}
SIZES = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}
SPEC_ID = b"Spec ID Event03\x00"

EV_POST_CODE, EV_NO_ACTION, EV_SEPARATOR, EV_S_CRTM_VERSION, EV_IPL = 0x1, 0x3, 0x4, 0x8, 0xD
EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
EV_EFI_VARIABLE_BOOT = 0x80000002
EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
EV_EFI_BOOT_SERVICES_DRIVER = 0x80000004
EV_EFI_ACTION = 0x80000007
EV_EFI_VARIABLE_BOOT2 = 0x8000000C
EV_EFI_VARIABLE_AUTHORITY = 0x800000E0

GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"        # EFI_GLOBAL_VARIABLE
IMAGE_DB = "d719b2cb-3d3a-4596-a3bc-dad00e67656f"      # EFI_IMAGE_SECURITY_DATABASE_GUID (db, dbx)
CERT_X509 = "a5c059a1-94e4-4aa7-87b5-ab155c2bf072"
CERT_SHA256 = "c1c41626-504c-4092-aca9-41f936934328"
OWNER = "77fa9abd-0359-4d32-bd60-28f4e78f784b"
DISK = "5e3a1c2b-8f0d-4b7e-9a61-2c4d6e8f0a1b"


def _guid(text):
    return uuid.UUID(text).bytes_le


def _u16s(text, nul=True):
    return text.encode("utf-16-le") + (b"\x00\x00" if nul else b"")


def fake_blob(label, size=600):
    """Deterministic filler bytes standing for a certificate or an image (``label`` makes them differ)."""
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(("%s/%d" % (label, counter)).encode()).digest()
        counter += 1
    return out[:size]


# ----------------------------------------------------------------------------------------------------------------
# structures
# ----------------------------------------------------------------------------------------------------------------
def signature_list(sig_type, entries, owner=OWNER):
    """An EFI_SIGNATURE_LIST of equally sized entries (each EFI_SIGNATURE_DATA = owner GUID + entry)."""
    size = 16 + len(entries[0])
    body = b"".join(_guid(owner) + e for e in entries)
    return _guid(sig_type) + struct.pack("<III", 28 + len(body), 0, size) + body


def device_path(file_path, partition=1, with_disk=True):
    """PciRoot(0x0)/Pci(0x1f,0x2)/Sata(0x0,0xffff,0x0)/HD(1,GPT,…)/<file path>/End as bytes."""
    def node(t, s, body):
        return struct.pack("<BBH", t, s, 4 + len(body)) + body
    out = b""
    if with_disk:
        out += node(0x02, 0x01, struct.pack("<II", 0x0A0341D0, 0))
        out += node(0x01, 0x01, struct.pack("<BB", 0x2, 0x1F))
        out += node(0x03, 0x12, struct.pack("<HHH", 0, 0xFFFF, 0))
        out += node(0x04, 0x01, struct.pack("<IQQ", partition, 0x800, 0x100000) + _guid(DISK) + b"\x02\x02")
    if file_path:
        out += node(0x04, 0x04, _u16s(file_path))
    return out + node(0x7F, 0xFF, b"")


def load_option(description, file_path, attributes=1):
    """An EFI_LOAD_OPTION (the value of a Boot#### variable)."""
    fpl = device_path(file_path)
    return struct.pack("<IH", attributes, len(fpl)) + _u16s(description) + fpl


def uefi_variable_data(guid, name, value):
    return _guid(guid) + struct.pack("<QQ", len(name), len(value)) + _u16s(name, nul=False) + value


# ----------------------------------------------------------------------------------------------------------------
# event specs
# ----------------------------------------------------------------------------------------------------------------
def variable_event(name, value, guid=None, pcr=7, etype=EV_EFI_VARIABLE_DRIVER_CONFIG):
    """A UEFI_VARIABLE_DATA event; the digest covers the whole structure (EV_EFI_VARIABLE_BOOT: the value only)."""
    guid = guid or (IMAGE_DB if name in ("db", "dbx") else GLOBAL)
    data = uefi_variable_data(guid, name, value)
    return {"pcr": pcr, "type": etype, "data": data, "hashed": value if etype == EV_EFI_VARIABLE_BOOT else data,
            "variable": (guid, name, value)}


def boot_variable(name, value, etype=EV_EFI_VARIABLE_BOOT):
    return variable_event(name, value, guid=GLOBAL, pcr=1, etype=etype)


def image_event(path, image=None, etype=EV_EFI_BOOT_SERVICES_APPLICATION, pcr=4, location=0x7E000000):
    """UEFI_IMAGE_LOAD_EVENT (64-bit UINTN) with a disk device path ending in ``path``; digest over ``image``."""
    image = image if image is not None else fake_blob("image:" + path, 4096)
    dp = device_path(path)
    data = struct.pack("<QQQQ", location, len(image), 0, len(dp)) + dp
    return {"pcr": pcr, "type": etype, "data": data, "hashed": image, "path": path}


def separator(pcr, value=0):
    data = struct.pack("<I", value)
    return {"pcr": pcr, "type": EV_SEPARATOR, "data": data}


def efi_action(text, pcr=4):
    return {"pcr": pcr, "type": EV_EFI_ACTION, "data": text.encode("ascii")}


def crtm_version(text="1.00"):
    return {"pcr": 0, "type": EV_S_CRTM_VERSION, "data": _u16s(text)}


def post_code(text="ACPI DATA", pcr=0):
    return {"pcr": pcr, "type": EV_POST_CODE, "data": text.encode("ascii")}


def no_action(signature, payload=b"", pcr=0):
    """An EV_NO_ACTION record (zero digests, never extended)."""
    sig = signature.encode("ascii").ljust(16, b"\x00")[:16]
    return {"pcr": pcr, "type": EV_NO_ACTION, "data": sig + payload, "zero_digests": True}


def default_boot_events():
    """A realistic Secure Boot sequence: CRTM, PCR 7 policy, boot variables, separators, shim → grub."""
    pk = signature_list(CERT_X509, [fake_blob("PK cert", 700)])
    kek = signature_list(CERT_X509, [fake_blob("KEK cert 1", 900), fake_blob("KEK cert 2", 900)])
    db = signature_list(CERT_X509, [fake_blob("db cert 1", 1000)]) + \
        signature_list(CERT_X509, [fake_blob("db cert 2", 1100)])
    dbx = signature_list(CERT_SHA256, [fake_blob("revoked %d" % i, 32) for i in range(3)])
    return [
        crtm_version("1.00"),
        post_code("ACPI DATA"),
        variable_event("SecureBoot", b"\x01"),
        variable_event("PK", pk),
        variable_event("KEK", kek),
        variable_event("db", db),
        variable_event("dbx", dbx),
        separator(7),
        boot_variable("BootOrder", struct.pack("<HH", 1, 0)),
        boot_variable("Boot0001", load_option("debian", "\\EFI\\debian\\shimx64.efi")),
        boot_variable("Boot0000", load_option("UEFI Misc Device", None)),
        efi_action("Calling EFI Application from Boot Option"),
        separator(0), separator(1), separator(2), separator(3), separator(4), separator(5), separator(6),
        variable_event("db", signature_list(CERT_X509, [fake_blob("db cert 1", 1000)])[28:],
                       etype=EV_EFI_VARIABLE_AUTHORITY),
        image_event("\\EFI\\debian\\shimx64.efi"),
        image_event("\\EFI\\debian\\grubx64.efi"),
        efi_action("Exit Boot Services Invocation", pcr=5),
        efi_action("Exit Boot Services Returned with Success", pcr=5),
    ]


def with_changed_variable(events, name, new_data):
    """A copy of ``events`` where every PCR 7/1 variable event called ``name`` holds ``new_data`` instead."""
    out, hit = [], False
    for ev in events:
        var = ev.get("variable")
        if var and var[1] == name and ev["type"] != EV_EFI_VARIABLE_AUTHORITY:
            new = variable_event(name, new_data, guid=var[0], pcr=ev["pcr"], etype=ev["type"])
            out.append(new)
            hit = True
        else:
            out.append(dict(ev))
    if not hit:
        raise KeyError("no variable event named %r" % name)
    return out


def with_added_event(events, spec):
    """A copy with ``spec`` inserted after the last event of its PCR (or at the end)."""
    out = [dict(e) for e in events]
    positions = [i for i, e in enumerate(out) if e["pcr"] == spec["pcr"]]
    out.insert(positions[-1] + 1 if positions else len(out), spec)
    return out


def with_altered_digest(events, position, bank="sha256", banks=("sha1", "sha256")):
    """A copy where event ``position`` carries a wrong ``bank`` digest (those of the other ``banks`` stay right)."""
    out = [dict(e) for e in events]
    digests = digests_of(out[position], banks)
    digests[bank] = hashlib.new(bank, b"not what was measured").digest()
    out[position]["digests"] = digests
    return out


# ----------------------------------------------------------------------------------------------------------------
# serialisation
# ----------------------------------------------------------------------------------------------------------------
class GeneratedLog(bytes):
    """The log bytes, plus the event specs, banks and record offsets they were built from."""
    events = ()
    banks = ()
    offsets = ()


def digests_of(spec, banks):
    if spec.get("digests") is not None:
        return dict(spec["digests"])
    if spec.get("zero_digests"):
        return dict((b, b"\x00" * SIZES[b]) for b in banks)
    payload = spec.get("hashed", spec["data"])
    return dict((b, hashlib.new(b, payload).digest()) for b in banks)


def spec_id_record(header_algs, signature=SPEC_ID, uintn_size=2):
    body = signature + struct.pack("<IBBBBI", 0, 0, 2, 0, uintn_size, len(header_algs))
    body += b"".join(struct.pack("<HH", a, s) for a, s in header_algs) + b"\x00"
    return struct.pack("<II", 0, EV_NO_ACTION) + b"\x00" * 20 + struct.pack("<I", len(body)) + body


def event2_record(spec, banks):
    digests = digests_of(spec, banks)
    out = struct.pack("<III", spec["pcr"], spec["type"], len(digests))
    for bank, value in digests.items():
        out += struct.pack("<H", spec.get("alg_ids", {}).get(bank, ALG_IDS.get(bank, 0))) + value
    return out + struct.pack("<I", len(spec["data"])) + spec["data"]


def build_log(events=None, banks=("sha1", "sha256"), startup_locality=None, header_algs=None, signature=SPEC_ID,
              uintn_size=2):
    """A crypto-agile log: the Spec ID header for ``banks``, then one TCG_PCR_EVENT2 per spec (digests for every
    bank), preceded by a StartupLocality EV_NO_ACTION when ``startup_locality`` is given."""
    events = list(default_boot_events() if events is None else events)
    if startup_locality is not None:
        events.insert(0, no_action("StartupLocality", bytes([startup_locality])))
    header_algs = header_algs or [(ALG_IDS[b], SIZES[b]) for b in banks]
    out = spec_id_record(header_algs, signature, uintn_size)
    offsets = []
    for spec in events:
        offsets.append(len(out))
        out += event2_record(spec, banks)
    log = GeneratedLog(out)
    log.events, log.banks, log.offsets = events, tuple(banks), offsets
    return log


def truncated(log, event_index, keep=10):
    """The log cut ``keep`` bytes into record ``event_index``."""
    return bytes(log[:log.offsets[event_index] + keep])


def unknown_algorithm_log(events=None):
    """A header listing algorithm id 0x1234 (32-byte digests) besides sha256."""
    return build_log(events, banks=("sha256",), header_algs=[(0x000B, 32), (0x1234, 32)])


def wrong_digest_count_log(events=None, position=3):
    """Event ``position`` carries only a sha256 digest while the header declares sha1 and sha256."""
    events = [dict(e) for e in (default_boot_events() if events is None else events)]
    events[position]["digests"] = {"sha256": digests_of(events[position], ("sha256",))["sha256"]}
    return build_log(events)


def legacy_sha1_log(events=None):
    """A TPM 1.2 style log: SHA-1 records only (TCG_PCClientPCREvent), no Spec ID Event03 header."""
    out = b""
    for spec in (default_boot_events() if events is None else events):
        out += struct.pack("<II", spec["pcr"], spec["type"]) + digests_of(spec, ("sha1",))["sha1"]
        out += struct.pack("<I", len(spec["data"])) + spec["data"]
    return out


# ----------------------------------------------------------------------------------------------------------------
# the TPM side
# ----------------------------------------------------------------------------------------------------------------
def _oracle_digests(log_bytes):
    """(pcr, {bank: bytes}) of each extended record, as tpm2_eventlog (not our parser) reads them."""
    fd, path = tempfile.mkstemp(suffix=".bin", prefix="eventlog-gen-")
    with os.fdopen(fd, "wb") as f:
        f.write(log_bytes)
    try:
        res = subprocess.run(["tpm2_eventlog", path], capture_output=True, text=True, check=True)
    finally:
        os.unlink(path)
    out = []
    for ev in yaml.safe_load(res.stdout)["events"]:
        if ev.get("EventType") == "EV_NO_ACTION" or "Digests" not in ev:
            continue
        out.append((ev["PCRIndex"], dict((d["AlgorithmId"], bytes.fromhex(str(d["Digest"]))) for d in ev["Digests"])))
    return out


def extend_tpm(tcti, log_bytes_or_events, banks=("sha1", "sha256"), batch=8):
    """Extend the TPM's PCRs (tpm2_pcrextend -T tcti) with the log's digests, in log order; EV_NO_ACTION skipped.

    Accepts a GeneratedLog, a list of event specs, or foreign log bytes (their digests are then read with
    tpm2_eventlog). Returns the number of extends.
    """
    src = log_bytes_or_events
    if isinstance(src, GeneratedLog):
        items = [(s["pcr"], digests_of(s, src.banks)) for s in src.events if s["type"] != EV_NO_ACTION]
    elif isinstance(src, (bytes, bytearray)):
        items = _oracle_digests(bytes(src))
    else:
        items = [(s["pcr"], digests_of(s, banks)) for s in src if s["type"] != EV_NO_ACTION]
    args = ["%d:%s" % (pcr, ",".join("%s=%s" % (b, d[b].hex()) for b in banks if b in d)) for pcr, d in items]
    env = dict(os.environ, TSS2_LOG="all+NONE")
    for i in range(0, len(args), batch):
        res = subprocess.run(["tpm2_pcrextend", "-T", tcti] + args[i:i + batch], env=env, capture_output=True,
                             text=True)
        if res.returncode != 0:
            raise AssertionError("tpm2_pcrextend failed (%d): %s" % (res.returncode, res.stderr))
    return len(args)
