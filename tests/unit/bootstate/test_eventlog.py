"""bootstate/eventlog.py on logs made by tests/support/eventlog_gen.py: parsing, decoding, replay, comparison, errors.

Expected digests and PCR values are computed here with hashlib from the generator's specs, never with the parser.
The parser is also checked against tpm2_eventlog and a real (software) TPM in tests/integration/bootstate.
"""

import hashlib
import json
import random
import struct

import pytest

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.bootstate import eventlog
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.bootstate import eventlog_compare
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import pcr as pcrmod
from support import eventlog_gen as gen

DB = "d719b2cb-3d3a-4596-a3bc-dad00e67656f"
GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
SHIM = "\\EFI\\debian\\shimx64.efi"


def expected_pcrs(specs, banks=("sha1", "sha256"), locality=None):
    """Independent replay over the generator's specs: {bank: {pcr: hex}}."""
    out = {}
    for bank in banks:
        size = gen.SIZES[bank]
        values = {}
        for spec in specs:
            if spec["type"] == gen.EV_NO_ACTION:
                continue
            p = spec["pcr"]
            if p not in values:
                values[p] = b"\x00" * (size - 1) + bytes([locality or 0] if p == 0 else [0])
            values[p] = hashlib.new(bank, values[p] + gen.digests_of(spec, (bank,))[bank]).digest()
        out[bank] = dict((p, v.hex()) for p, v in values.items())
    return out


@pytest.fixture(scope="module")
def specs():
    return gen.default_boot_events()


@pytest.fixture(scope="module")
def parsed(specs):
    return eventlog.parse_event_log(gen.build_log(specs))


def by_name(log, name, type_name=None):
    return [e for e in log.events if (e["decoded"] or {}).get("name") == name
            and (type_name is None or e["type_name"] == type_name)]


# ---------------------------------------------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------------------------------------------
def test_spec_header(parsed):
    assert parsed.spec["signature"] == "Spec ID Event03"
    assert parsed.spec["spec_version"] == "2.0.0"
    assert parsed.spec["uintn_size"] == 2
    assert parsed.spec["algorithms"] == {"sha1": 20, "sha256": 32}


def test_bank_names_are_those_of_pcr_module():
    log = eventlog.parse_event_log(gen.build_log(gen.default_boot_events()[:3], banks=("sha1", "sha256", "sha384",
                                                                                       "sha512")))
    assert sorted(log.spec["algorithms"]) == sorted(pcrmod.bank_name(gen.ALG_IDS[b]) for b in gen.ALG_IDS)
    assert log.spec["algorithms"] == dict((b, pcrmod.DIGEST_SIZES[b]) for b in gen.ALG_IDS)
    assert set(log.events[0]["digests"]) == set(gen.ALG_IDS)


def test_every_record_matches_the_generator(specs, parsed):
    assert len(parsed.events) == len(specs)
    for i, (spec, ev) in enumerate(zip(specs, parsed.events)):
        assert ev["index"] == i
        assert (ev["pcr"], ev["type"]) == (spec["pcr"], spec["type"])
        assert ev["digests"] == dict((b, d.hex()) for b, d in gen.digests_of(spec, ("sha1", "sha256")).items())
        assert ev["data_sha256"] == hashlib.sha256(spec["data"]).hexdigest()
        assert ev["data_size"] == len(spec["data"])
    names = [e["type_name"] for e in parsed.events]
    assert names[:4] == ["EV_S_CRTM_VERSION", "EV_POST_CODE", "EV_EFI_VARIABLE_DRIVER_CONFIG",
                         "EV_EFI_VARIABLE_DRIVER_CONFIG"]
    assert names.count("EV_SEPARATOR") == 8 and names.count("EV_EFI_BOOT_SERVICES_APPLICATION") == 2
    assert "EV_EFI_VARIABLE_BOOT" in names and "EV_EFI_VARIABLE_AUTHORITY" in names and "EV_EFI_ACTION" in names


def test_json_serialisable(parsed):
    again = json.loads(json.dumps(parsed.to_dict()))
    assert again["events"] == parsed.events and again["spec"] == parsed.spec


def test_secure_boot_variables_decoded(parsed):
    sb = by_name(parsed, "SecureBoot")[0]["decoded"]
    assert sb["guid"] == GLOBAL and sb["enabled"] is True and sb["value"] == 1 and sb["data_length"] == 1
    assert sb["data_sha256"] == hashlib.sha256(b"\x01").hexdigest()
    counts = dict((n, by_name(parsed, n, "EV_EFI_VARIABLE_DRIVER_CONFIG")[0]["decoded"]) for n in
                  ("PK", "KEK", "db", "dbx"))
    assert [counts[n]["entries"] for n in ("PK", "KEK", "db", "dbx")] == [1, 2, 2, 3]
    assert counts["db"]["guid"] == DB and counts["dbx"]["guid"] == DB and counts["PK"]["guid"] == GLOBAL
    assert counts["dbx"]["signature_lists"] == [{"type": "sha256", "entries": 3}]
    assert counts["db"]["signature_lists"] == [{"type": "x509", "entries": 1}, {"type": "x509", "entries": 1}]
    auth = by_name(parsed, "db", "EV_EFI_VARIABLE_AUTHORITY")[0]
    assert auth["pcr"] == 7 and auth["decoded"]["signature_owner"] == gen.OWNER


def test_boot_variables_decoded(parsed):
    order = by_name(parsed, "BootOrder")[0]
    assert order["pcr"] == 1 and order["decoded"]["boot_order"] == ["0001", "0000"]
    boot1 = by_name(parsed, "Boot0001")[0]["decoded"]
    assert boot1["description"] == "debian" and boot1["attributes"] == 1
    assert boot1["file_path"] == SHIM
    assert boot1["device_path"] == ("PciRoot(0x0)/Pci(0x1f,0x2)/Sata(0x0,0xffff,0x0)/HD(1,GPT,%s,0x800,0x100000)/%s"
                                    % (gen.DISK, SHIM))
    boot0 = by_name(parsed, "Boot0000")[0]["decoded"]
    assert boot0["description"] == "UEFI Misc Device" and boot0["file_path"] is None


def test_images_and_text_events_decoded(parsed):
    images = [e for e in parsed.events if e["type_name"] == "EV_EFI_BOOT_SERVICES_APPLICATION"]
    assert [e["decoded"]["file_path"] for e in images] == [SHIM, "\\EFI\\debian\\grubx64.efi"]
    assert images[0]["pcr"] == 4 and images[0]["decoded"]["image_length"] == 4096
    assert images[0]["decoded"]["image_location"] == 0x7E000000
    assert images[0]["digests"]["sha256"] == hashlib.sha256(gen.fake_blob("image:" + SHIM, 4096)).hexdigest()
    crtm = parsed.events[0]["decoded"]
    assert crtm == {"text": "1.00", "encoding": "utf-16-le"}
    assert parsed.events[1]["decoded"] == {"text": "ACPI DATA"}
    actions = [e["decoded"]["text"] for e in parsed.events if e["type_name"] == "EV_EFI_ACTION"]
    assert actions[0] == "Calling EFI Application from Boot Option"
    seps = [e for e in parsed.events if e["type_name"] == "EV_SEPARATOR"]
    assert sorted(e["pcr"] for e in seps) == list(range(8))
    assert all(e["decoded"] == {"hex": "00000000"} for e in seps)


def node(ntype, sub, body):
    return struct.pack("<BBH", ntype, sub, 4 + len(body)) + body


def test_device_path_nodes():
    raw = (node(2, 1, struct.pack("<II", 0x0A0841D0, 1)) + node(1, 1, bytes([0, 0x1D]))
           + node(3, 0x17, struct.pack("<I", 1) + bytes(range(8))) + node(4, 8, struct.pack("<IQQ", 0, 0x10, 0x2F))
           + node(5, 1, b"\x02\x00") + node(4, 4, "\\EFI\\".encode("utf-16-le") + b"\0\0")
           + node(4, 4, "BOOT\\BOOTX64.EFI".encode("utf-16-le") + b"\0\0") + node(0x7F, 0xFF, b""))
    got = eventlog.decode_device_path(raw)
    assert got == {"device_path": "PcieRoot(0x1)/Pci(0x1d,0x0)/NVMe(0x1,00-01-02-03-04-05-06-07)/Offset(0x10,0x2f)/"
                                  "Path(5,1,0200)/\\EFI\\/BOOT\\BOOTX64.EFI",
                   "file_path": "\\EFI\\BOOT\\BOOTX64.EFI"}
    broken = eventlog.decode_device_path(node(4, 1, b"\x01") + b"\x04\x04\xff\x00")
    assert broken["file_path"] is None and "<malformed node at 5>" in broken["device_path"]
    assert broken["device_path"].startswith("Path(4,1,01)")


def test_startup_locality_and_no_action_events():
    log = eventlog.parse_event_log(gen.build_log(startup_locality=3))
    first = log.events[0]
    assert first["type_name"] == "EV_NO_ACTION" and first["decoded"] == {"signature": "StartupLocality", "locality": 3}
    assert set(first["digests"].values()) == {"00" * 20, "00" * 32}


def test_unknown_type_and_garbage_never_raise():
    bad_name = gen.uefi_variable_data(gen.GLOBAL, "xx", b"\x01")[:16] + struct.pack("<QQ", 2, 1) + \
        b"\x00\xd8\x41\x00" + b"\x01"  # a lone high surrogate, then "A"
    specs = [
        {"pcr": 5, "type": 0x12345678, "data": b"\x01\x02\x03"},
        {"pcr": 7, "type": gen.EV_EFI_VARIABLE_DRIVER_CONFIG, "data": bad_name},
        {"pcr": 7, "type": gen.EV_EFI_VARIABLE_DRIVER_CONFIG, "data": b"\xff" * 7},
        {"pcr": 4, "type": gen.EV_EFI_BOOT_SERVICES_APPLICATION, "data": b"\x00" * 12},
        {"pcr": 1, "type": gen.EV_EFI_VARIABLE_BOOT, "data": gen.uefi_variable_data(gen.GLOBAL, "Boot0003",
                                                                                  b"\x01\x00\x00\x00\xff")},
        {"pcr": 8, "type": gen.EV_IPL, "data": b"grub_cmd: linux /vmlinuz\x00"},
        {"pcr": 8, "type": gen.EV_IPL, "data": b"\xc3\x28\x00\x01"},
    ]
    log = eventlog.parse_event_log(gen.build_log(specs))
    unknown, badname, short, image, boot3, ipl, ipl_bin = log.events
    assert unknown["type_name"] == "0x12345678" and unknown["type"] == 0x12345678 and unknown["decoded"] is None
    assert badname["decoded"]["name"] == "\ufffdA"
    assert "undecodable" in short["decoded"] and "undecodable" in image["decoded"]
    assert boot3["decoded"]["name"] == "Boot0003" and "load_option_error" in boot3["decoded"]
    assert ipl["decoded"] == {"text": "grub_cmd: linux /vmlinuz"}
    assert ipl_bin["decoded"] == {"hex": "c3280001"}
    json.dumps(log.to_dict())
    for ev in log.events:
        assert eventlog_compare.describe_event(ev).startswith("PCR %d " % ev["pcr"])


def test_trailing_zero_padding_is_not_an_event(specs):
    log = eventlog.parse_event_log(bytes(gen.build_log(specs)) + b"\x00" * 64)
    assert len(log.events) == len(specs)


def test_parse_file(tmp_path, specs):
    path = tmp_path / "binary_bios_measurements"
    path.write_bytes(gen.build_log(specs))
    assert eventlog.parse_event_log_file(str(path)).events == eventlog.parse_event_log(gen.build_log(specs)).events
    with pytest.raises(SpireTpmError) as e:
        eventlog.parse_event_log_file(str(tmp_path / "missing"))
    assert "cannot read the event log" in str(e.value) and "securityfs" in e.value.fix


# ---------------------------------------------------------------------------------------------------------------
# replay
# ---------------------------------------------------------------------------------------------------------------
def test_replay_matches_independent_computation(specs, parsed):
    want = expected_pcrs(specs)
    assert eventlog.replay(parsed) == want
    assert eventlog.replay(parsed.events) == want
    assert sorted(want["sha256"]) == list(range(8))


def test_replay_selection(specs, parsed):
    want = expected_pcrs(specs)
    got = eventlog.replay(parsed, banks=["sha256"], pcrs=[7, 4, 23, 17])
    assert list(got) == ["sha256"]
    assert got["sha256"] == {4: want["sha256"][4], 7: want["sha256"][7], 17: "ff" * 32, 23: "00" * 32}
    with pytest.raises(SpireTpmError) as e:
        eventlog.replay(parsed, banks=["sha384"])
    assert "no sha384 digests" in e.value.cause and "sha1, sha256" in e.value.fix
    with pytest.raises(SpireTpmError):
        eventlog.replay(parsed, pcrs=[24])


def test_replay_honours_startup_locality(specs):
    log = eventlog.parse_event_log(gen.build_log(specs, startup_locality=3))
    got = eventlog.replay(log)
    assert got == expected_pcrs(specs, locality=3)
    assert got["sha256"][0] != expected_pcrs(specs)["sha256"][0]
    assert got["sha256"][7] == expected_pcrs(specs)["sha256"][7]
    # EV_NO_ACTION records are never extended, StartupLocality or not
    other = eventlog.parse_event_log(gen.build_log([gen.no_action("SP800-155 Event", b"x" * 20, pcr=7)] + specs))
    assert eventlog.replay(other) == expected_pcrs(specs)
    assert eventlog.replay(eventlog.parse_event_log(gen.build_log(specs[:2], startup_locality=3)),
                           pcrs=[0])["sha1"][0] == expected_pcrs(specs[:2], ("sha1",), locality=3)["sha1"][0]


# ---------------------------------------------------------------------------------------------------------------
# comparison and descriptions
# ---------------------------------------------------------------------------------------------------------------
def test_describe_event(parsed):
    texts = [eventlog_compare.describe_event(e) for e in parsed.events]
    assert "PCR 7 EV_EFI_VARIABLE_DRIVER_CONFIG db (%s)" % DB in texts
    assert "PCR 7 EV_EFI_VARIABLE_DRIVER_CONFIG SecureBoot (%s)" % GLOBAL in texts
    assert "PCR 4 EV_EFI_BOOT_SERVICES_APPLICATION %s" % SHIM in texts
    assert 'PCR 4 EV_EFI_ACTION "Calling EFI Application from Boot Option"' in texts
    assert "PCR 0 EV_S_CRTM_VERSION \"1.00\"" in texts and "PCR 3 EV_SEPARATOR 0x00000000" in texts
    assert all("\n" not in t for t in texts)


def test_compare_identical_logs_has_no_finding(parsed):
    assert eventlog_compare.compare_logs(parsed.events, parsed.events) == []
    assert eventlog_compare.compare_logs(parsed, eventlog.parse_event_log(gen.build_log(gen.default_boot_events()))) == []


def test_compare_changed_db(specs, parsed):
    extra = gen.signature_list(gen.CERT_X509, [gen.fake_blob("db cert 3", 1000)])
    old_db = [s for s in specs if s.get("variable") and s["variable"][1] == "db"][0]["variable"][2]
    current = eventlog.parse_event_log(gen.build_log(gen.with_changed_variable(specs, "db", old_db + extra)))
    findings = eventlog_compare.compare_logs(parsed.events, current.events)
    assert len(findings) == 1
    f = findings[0]
    assert (f["pcr"], f["type_name"], f["change"]) == (7, "EV_EFI_VARIABLE_DRIVER_CONFIG", "changed")
    assert f["description"] == ("PCR 7 EV_EFI_VARIABLE_DRIVER_CONFIG db (%s): digest changed (entries 2 -> 3)" % DB)
    assert f["baseline"]["decoded"]["entries"] == 2 and f["current"]["decoded"]["entries"] == 3
    assert f["baseline"]["digests"] != f["current"]["digests"]
    json.dumps(findings)
    assert eventlog_compare.compare_logs(parsed.events, current.events, pcrs=[0, 1, 4]) == []


def test_compare_secure_boot_disabled_and_boot_order(specs, parsed):
    cur = gen.with_changed_variable(specs, "SecureBoot", b"\x00")
    cur = gen.with_changed_variable(cur, "BootOrder", struct.pack("<HH", 0, 1))
    findings = eventlog_compare.compare_logs(parsed, eventlog.parse_event_log(gen.build_log(cur)))
    assert [(f["pcr"], f["change"]) for f in findings] == [(1, "changed"), (7, "changed")]
    assert findings[0]["description"].endswith("BootOrder (%s): digest changed (order 0001,0000 -> 0000,0001)"
                                               % GLOBAL)
    assert findings[1]["description"].endswith("SecureBoot (%s): digest changed (enabled True -> False)" % GLOBAL)


def test_compare_added_and_removed_boot_application(specs, parsed):
    added = gen.image_event("\\EFI\\evil\\bootkit.efi")
    cur = gen.with_added_event(specs, added)
    findings = eventlog_compare.compare_logs(parsed.events, eventlog.parse_event_log(gen.build_log(cur)).events)
    assert len(findings) == 1
    f = findings[0]
    assert (f["pcr"], f["change"], f["baseline"]) == (4, "added", None)
    assert f["current"]["decoded"]["file_path"] == "\\EFI\\evil\\bootkit.efi"
    assert f["description"].startswith("PCR 4 EV_EFI_BOOT_SERVICES_APPLICATION \\EFI\\evil\\bootkit.efi: added")
    back = eventlog_compare.compare_logs(eventlog.parse_event_log(gen.build_log(cur)).events, parsed.events)
    assert [(x["change"], x["current"]) for x in back] == [("removed", None)]
    assert "bootkit.efi: removed" in back[0]["description"]


def test_compare_replaced_image_is_a_change_of_that_image(specs, parsed):
    cur = [gen.image_event(s["path"], image=b"patched grub") if s.get("path", "").endswith("grubx64.efi") else s
           for s in specs]
    findings = eventlog_compare.compare_logs(parsed, eventlog.parse_event_log(gen.build_log(cur)))
    assert [(f["change"], f["current"]["decoded"]["file_path"]) for f in findings] == \
        [("changed", "\\EFI\\debian\\grubx64.efi")]


def test_compare_without_common_bank(specs):
    a = eventlog.parse_event_log(gen.build_log(specs, banks=("sha1",)))
    b = eventlog.parse_event_log(gen.build_log(specs, banks=("sha256",)))
    with pytest.raises(SpireTpmError) as e:
        eventlog_compare.compare_logs(a, b)
    assert "share no digest bank" in e.value.cause


# ---------------------------------------------------------------------------------------------------------------
# bad logs
# ---------------------------------------------------------------------------------------------------------------
def error_of(data):
    with pytest.raises(SpireTpmError) as e:
        eventlog.parse_event_log(data)
    assert e.value.fix
    return str(e.value)


def test_empty_log():
    assert "empty (0 bytes)" in error_of(b"")


def test_truncated_record_names_offset_and_index(specs):
    log = gen.build_log(specs)
    msg = error_of(gen.truncated(log, 5, keep=10))
    assert "truncated" in msg and "event index 5" in msg and "byte offset %d" % log.offsets[5] in msg
    msg = error_of(gen.truncated(log, 5, keep=60))
    assert "event index 5" in msg and "digest" in msg
    assert "Spec ID header" in error_of(bytes(log[:40]))


def test_legacy_sha1_log_rejected():
    msg = error_of(gen.legacy_sha1_log())
    assert "not a crypto-agile" in msg and "Spec ID Event03" in msg and "SHA-1-only" in msg
    assert "an EV_S_CRTM_VERSION record on PCR 0" in msg
    old = gen.build_log(gen.default_boot_events()[:2], signature=b"Spec ID Event02\x00")
    assert "Spec ID Event02" in error_of(old)


def test_unknown_algorithm_named():
    msg = error_of(gen.unknown_algorithm_log())
    assert "unknown hash algorithm id 0x1234" in msg


def test_wrong_digest_count_and_algorithm(specs):
    msg = error_of(gen.wrong_digest_count_log(position=3))
    assert "event index 3" in msg and "1 digest(s)" in msg and "2 algorithm(s) (sha1, sha256)" in msg
    odd = [dict(s) for s in specs[:3]]
    odd[2]["alg_ids"] = {"sha1": 0x000C}
    msg = error_of(gen.build_log(odd))
    assert "event index 2" in msg and "algorithm 0x000c (sha384)" in msg and "declares only sha1, sha256" in msg


def test_absurd_sizes(specs):
    built = gen.build_log(specs)
    log = bytearray(built)
    size_at = built.offsets[2] + 12 + (2 + 20) + (2 + 32)  # pcr, type, count, sha1 and sha256 digests
    assert struct.unpack_from("<I", log, size_at)[0] == len(specs[2]["data"])
    struct.pack_into("<I", log, size_at, 0x7FFFFFFF)
    msg = error_of(bytes(log))
    assert "event index 2" in msg and "claims 2147483647 bytes" in msg
    msg = error_of(gen.build_log(specs, header_algs=[(0x000B, 32)] * 40))
    assert "declares 40 hash algorithms" in msg
    msg = error_of(gen.build_log(specs, header_algs=[(0x000B, 20)]))
    assert "sha256 digests a size of 20 bytes" in msg
    msg = error_of(gen.build_log([{"pcr": 99, "type": gen.EV_IPL, "data": b"x"}]))
    assert "PCR 99" in msg and "event index 0" in msg
    assert "uintnSize is 7" in error_of(gen.build_log(specs, uintn_size=7))


def test_every_truncation_and_random_corruption_is_a_clear_error_or_a_log(specs):
    log = bytes(gen.build_log(specs))
    boundaries = set(gen.build_log(specs).offsets) | {len(log)}
    rng = random.Random(12)
    cuts = sorted(set(rng.randrange(1, len(log)) for _ in range(250)) | set(boundaries))
    for cut in cuts:
        try:
            got = eventlog.parse_event_log(log[:cut])
        except SpireTpmError as e:
            assert cut not in boundaries, (cut, str(e))
            assert "truncated" in e.cause or "Spec ID" in e.cause
        else:
            assert cut in boundaries and len(got.events) == sorted(boundaries).index(cut)
    for _ in range(250):
        data = bytearray(log)
        for _j in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            json.dumps(eventlog.parse_event_log(bytes(data)).to_dict())
        except SpireTpmError:
            pass
