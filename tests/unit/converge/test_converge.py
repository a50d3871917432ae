"""The convergence record's pure parts (module_utils/converge.py): snapshots of a file, a directory, a link, a missing
path and a special file (cross-checked with hashlib/os on what the test made, not with the module's code),
comparisons and their reasons, the reasons cap, record parsing, input validation, and the renewal rule shared with
devid_certificate (certificates made here with cryptography)."""

from __future__ import annotations

import datetime
import errno
import hashlib
import json
import os
import socket
import stat
import subprocess
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ansible_collections.trustroot.spire_tpm.plugins.module_utils import converge
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError

NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.timezone.utc)


def _cert(not_before, not_after):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "unit leaf")])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
            .sign(key, hashes.SHA256()))


def _pem(*certs):
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


# --- snapshots ------------------------------------------------------------------------------------------------------

def test_snapshot_file(tmp_path):
    f = tmp_path / "agent.conf"
    f.write_bytes(b"agent {}\n")
    os.chmod(f, 0o640)
    st = os.lstat(f)
    assert converge.snapshot_path(str(f)) == {"type": "file", "sha256": hashlib.sha256(b"agent {}\n").hexdigest(),
                                              "mode": "0640", "uid": st.st_uid, "gid": st.st_gid}


def test_snapshot_directory_and_missing(tmp_path):
    d = tmp_path / "d"
    d.mkdir(mode=0o750)
    os.chmod(d, 0o750)
    snap = converge.snapshot_path(str(d))
    assert snap == {"type": "directory", "mode": "0750", "uid": os.lstat(d).st_uid, "gid": os.lstat(d).st_gid}
    assert converge.snapshot_path(str(tmp_path / "nope")) == {"type": "missing"}
    (tmp_path / "file").write_text("x")
    # a component that is a file: the path cannot exist, so it is missing (not an error)
    assert converge.snapshot_path(str(tmp_path / "file" / "below")) == {"type": "missing"}


def test_snapshot_link_is_not_followed(tmp_path):
    (tmp_path / "target").write_text("content")
    link = tmp_path / "current"
    os.symlink("target", link)
    snap = converge.snapshot_path(str(link))
    assert snap["type"] == "link" and snap["target"] == "target" and "sha256" not in snap
    os.symlink("nowhere", tmp_path / "dangling")
    assert converge.snapshot_path(str(tmp_path / "dangling"))["target"] == "nowhere"


def test_snapshot_other(tmp_path):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(tmp_path / "api.sock"))
        snap = converge.snapshot_path(str(tmp_path / "api.sock"))
    finally:
        s.close()
    assert snap["type"] == "other" and snap["format"] == "socket"
    os.mkfifo(tmp_path / "fifo")
    assert converge.snapshot_path(str(tmp_path / "fifo"))["format"] == "fifo"


def test_snapshot_unreadable_raises(tmp_path, monkeypatch):
    f = tmp_path / "secret"
    f.write_text("x")
    real_open = os.open

    def denied(path, *a, **kw):
        if path == str(f):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, *a, **kw)

    monkeypatch.setattr(converge.os, "open", denied)
    with pytest.raises(SpireTpmError) as e:
        converge.snapshot_path(str(f))
    assert "cannot be read (Permission denied)" in e.value.cause and "become" in e.value.fix


def test_snapshot_user_and_group():
    # cross-checked with id(1), which reads the same account database through NSS
    groups = sorted(subprocess.run(["id", "-nG", "root"], capture_output=True, text=True, check=True).stdout.split())
    assert converge.snapshot_user("root") == {"uid": 0, "gid": 0, "groups": groups}
    assert converge.snapshot_user("no-such-user-zz") == {"missing": True}
    root = converge.snapshot_group("root")
    assert root["gid"] == 0 and root["members"] == sorted(root["members"])
    assert converge.snapshot_group("no-such-group-zz") == {"missing": True}


# --- comparisons ------------------------------------------------------------------------------------------------------

FILE = {"type": "file", "sha256": "a" * 64, "mode": "0644", "uid": 0, "gid": 0}


@pytest.mark.parametrize("now, expected", [
    (dict(FILE), []),
    (dict(FILE, sha256="b" * 64), ["/p: content differs from the record"]),
    (dict(FILE, mode="0600"), ["/p: mode differs (recorded: 0644; now: 0600)"]),
    (dict(FILE, uid=999), ["/p: owner differs (recorded: uid 0; now: uid 999)"]),
    (dict(FILE, gid=998), ["/p: group differs (recorded: gid 0; now: gid 998)"]),
    ({"type": "missing"}, ["/p: was a file, now missing"]),
    ({"type": "link", "target": "x", "mode": "0777", "uid": 0, "gid": 0}, ["/p: was a file, now a link"]),
    ({"type": "other", "format": "fifo", "mode": "0644", "uid": 0, "gid": 0}, ["/p: was a file, now a fifo"]),
    (dict(FILE, sha256="b" * 64, mode="0600"), ["/p: content differs from the record",
                                                 "/p: mode differs (recorded: 0644; now: 0600)"]),
])
def test_compare_path(now, expected):
    assert converge.compare_path("/p", FILE, now) == expected


def test_compare_link_target():
    rec = {"type": "link", "target": "versions/1.13.3", "mode": "0777", "uid": 0, "gid": 0}
    assert converge.compare_path("/opt/spire/current", rec, dict(rec, target="versions/1.15.3")) == [
        "/opt/spire/current: link target differs (recorded: versions/1.13.3; now: versions/1.15.3)"]


def test_compare_account():
    rec = {"uid": 999, "gid": 999, "groups": ["spire", "tss"]}
    assert converge.compare_account("user", "spire", rec, dict(rec)) == []
    assert converge.compare_account("user", "spire", rec, dict(rec, groups=["spire"])) == [
        "user spire: supplementary groups differ (recorded: spire,tss; now: spire)"]
    assert converge.compare_account("user", "spire", rec, dict(rec, gid=5)) == [
        "user spire: primary gid differs (recorded: 999; now: 5)"]
    assert converge.compare_account("user", "spire", rec, {"missing": True}) == [
        "user spire: does not exist any more"]
    assert converge.compare_account("group", "tss", {"missing": True}, {"gid": 5, "members": []}) == [
        "group tss: exists now (recorded as missing)"]
    assert converge.compare_account("group", "tss", {"missing": True}, {"missing": True}) == []
    assert converge.compare_account("group", "tss", {"gid": 5, "members": ["a", "b"]},
                                    {"gid": 5, "members": ["a"]}) == [
        "group tss: members differ (recorded: a,b; now: a)"]


def test_compare_sets():
    assert converge.compare_sets("paths", ["/a", "/b"], {"/b": {}, "/a": {}}) == []
    assert converge.compare_sets("paths", ["/a", "/c"], {"/a": {}, "/b": {}}) == [
        "paths asked differ from the record (not recorded: /c; recorded but not asked: /b)"]
    assert converge.compare_sets("users", [], {"spire": {}}) == [
        "users asked differ from the record (recorded but not asked: spire)"]


def test_cap_reasons():
    reasons = ["r%d" % i for i in range(25)]
    capped = converge.cap_reasons(reasons)
    assert len(capped) == 20 and capped[-1] == "... and 6 more" and capped[:19] == reasons[:19]
    assert converge.cap_reasons(reasons[:20]) == reasons[:20]


# --- record parsing and input -----------------------------------------------------------------------------------------

GOOD = {"schema": 1, "inputs_digest": "d", "paths": {"/p": FILE}, "users": {}, "groups": {}}


@pytest.mark.parametrize("raw, words", [
    (None, "no record yet"),
    (b"{not json", "is not valid JSON"),
    (b"\xff\xfe", "is not valid JSON"),
    (b"[1, 2]", "is not a JSON object"),
    (json.dumps(dict(GOOD, schema=2)).encode(), "has schema 2, this module reads schema 1"),
    (json.dumps({"schema": 1, "paths": {}}).encode(), "lacks inputs_digest, users, groups"),
    (json.dumps(dict(GOOD, paths=[])).encode(), "paths that are not a mapping"),
    (json.dumps(dict(GOOD, paths={"/p": {"type": "blob"}})).encode(), "unknown type"),
    (json.dumps(dict(GOOD, inputs_digest=5)).encode(), "non-string inputs_digest"),
])
def test_parse_record_problems(raw, words):
    record, reason = converge.parse_record(raw, "/r.json")
    assert record is None and words in reason


def test_parse_record_roundtrip():
    record, reason = converge.parse_record(converge.record_bytes(GOOD), "/r.json")
    assert reason is None and record == GOOD
    assert converge.record_bytes(GOOD) == converge.record_bytes(json.loads(converge.record_bytes(GOOD)))


@pytest.mark.parametrize("kwargs, words", [
    (dict(path="relative/r.json"), "record path 'relative/r.json' is not an absolute path"),
    (dict(paths=["etc/x"]), "path 'etc/x' is not an absolute path"),
    (dict(paths=["/etc/../x"]), "'.' or '..'"),
    (dict(users=["bad name"]), "user name 'bad name' is not an account name"),
    (dict(groups=[""]), "group name '' is not an account name"),
    (dict(commands=[{"name": "h", "argv": []}]), "command 'h' has an empty or non-string argv"),
    (dict(commands=[{"name": "", "argv": ["true"]}]), "a command has no name"),
    (dict(commands=[{"name": "h", "argv": ["true"], "timeout": 0}]), "command 'h' has timeout 0"),
    (dict(certificates=[{"path": "/c.crt", "renew_before": "soon"}]), "renew_before of certificate /c.crt 'soon' "
                                                                      "is not a duration"),
    (dict(certificates=[{"path": "c.crt"}]), "certificate path 'c.crt' is not an absolute path"),
    (dict(paths=["/r.json"]), "is among the paths it records"),
])
def test_bad_input(kwargs, words):
    args = dict(path="/r.json", inputs_digest="d")
    args.update(kwargs)
    with pytest.raises(SpireTpmError) as e:
        converge.ConvergenceRecord(**args)
    assert words in str(e.value) and "Fix:" in str(e.value)


def test_paths_normalised_and_collapsed():
    rec = converge.ConvergenceRecord("/r.json", "d", paths=["/b/", "//a", "/b", "/a"], users=["x", "x"])
    assert rec.paths == ["/a", "/b"] and rec.users == ["x"]


def test_digest_required():
    with pytest.raises(SpireTpmError, match="inputs_digest is required"):
        converge.ConvergenceRecord("/r.json").check()


# --- certificates and commands -----------------------------------------------------------------------------------------

def test_renewal_rule_default_third():
    # 90 days of life: due from 30 days before notAfter
    leaf = _cert(NOW - datetime.timedelta(days=50), NOW + datetime.timedelta(days=40))
    assert converge.certificate_reason("/c", None, now=NOW, data=_pem(leaf)) is None
    leaf = _cert(NOW - datetime.timedelta(days=70), NOW + datetime.timedelta(days=20))
    assert converge.certificate_reason("/c", None, now=NOW, data=_pem(leaf)) == (
        "certificate /c: due for renewal (not after %s, renew before a third of its lifetime, 720h)"
        % (NOW + datetime.timedelta(days=20)).strftime("%Y-%m-%dT%H:%M:%SZ"))


def test_renewal_rule_renew_before_and_chain_leaf_first():
    leaf = _cert(NOW - datetime.timedelta(days=1), NOW + datetime.timedelta(days=20))
    other = _cert(NOW - datetime.timedelta(days=1), NOW + datetime.timedelta(days=2))
    assert converge.certificate_reason("/c", "479h", now=NOW, data=_pem(leaf, other)) is None
    reason = converge.certificate_reason("/c", "720h", now=NOW, data=_pem(leaf, other))
    assert reason.startswith("certificate /c: due for renewal (not after ") and reason.endswith("renew before 720h)")
    expired = _cert(NOW - datetime.timedelta(days=10), NOW - datetime.timedelta(days=1))
    assert "due for renewal" in converge.certificate_reason("/c", "1h", now=NOW, data=_pem(expired))


def test_certificate_unreadable(tmp_path):
    assert converge.certificate_reason(str(tmp_path / "none.crt")) == "certificate %s: missing" % (
        tmp_path / "none.crt")
    bad = tmp_path / "bad.crt"
    bad.write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    assert converge.certificate_reason(str(bad)).startswith("certificate %s: holds a malformed PEM" % bad)
    assert "is neither a PEM bundle nor a DER" in converge.certificate_reason("/c", data=b"garbage")
    assert "cannot be read (Is a directory)" in converge.certificate_reason(str(tmp_path))


def test_command_reasons(tmp_path):
    assert converge.command_reason("ok", ["true"]) is None
    assert converge.command_reason("h", ["sh", "-c", "echo; echo 'socket down' >&2; echo more >&2; exit 3"]) == (
        "command 'h' exited 3: socket down")
    assert converge.command_reason("h", ["sh", "-c", "echo out only; exit 1"]) == "command 'h' exited 1: out only"
    assert converge.command_reason("h", ["false"]) == "command 'h' exited 1: no output"
    assert converge.command_reason("h", [str(tmp_path / "nope")]) == (
        "command 'h' cannot be started (%s: No such file or directory)" % (tmp_path / "nope"))
    assert converge.command_reason("h", ["sh", "-c", "kill -9 $$"]) == "command 'h' was killed by signal 9"


def test_command_timeout_kills_the_group(tmp_path):
    marker = tmp_path / "survived"
    # a grandchild holding the pipes: killed with its process group, the check does not hang
    reason = converge.command_reason("slow", ["sh", "-c", "(sleep 3; touch %s) & sleep 30" % marker], timeout=1)
    assert reason == "command 'slow' timed out after 1 s"
    time.sleep(3.5)
    assert not marker.exists()


def test_record_file_attributes_are_checked(tmp_path):
    f = tmp_path / "r.json"
    f.write_bytes(converge.record_bytes(GOOD))
    os.chmod(f, 0o644)
    raw, problems = converge.read_record_file(str(f))
    assert raw == converge.record_bytes(GOOD)
    if os.geteuid() == 0:
        assert problems == ["record %s is not root:root 0600 (uid 0, gid 0, mode 0644)" % f]
        os.chmod(f, 0o600)
        assert converge.read_record_file(str(f))[1] == []
    os.symlink("r.json", tmp_path / "l.json")
    assert converge.read_record_file(str(tmp_path / "l.json")) == (
        None, ["record %s is a symbolic link, not a file" % (tmp_path / "l.json")])
    assert converge.read_record_file(str(tmp_path)) == (None, ["record %s is not a regular file" % tmp_path])
    assert converge.read_record_file(str(tmp_path / "none")) == (None, [])
    assert stat.S_ISREG(os.lstat(f).st_mode)


def test_check_names_what_it_cannot_read(tmp_path, monkeypatch):
    """Permission problems (simulated: the tests run as root) are reasons of the check, never errors."""
    f = tmp_path / "conf"
    f.write_text("x")
    record_path = str(tmp_path / "r.json")
    rec = converge.ConvergenceRecord(record_path, "d", paths=[str(f)])
    with open(record_path, "wb") as out:
        out.write(converge.record_bytes(rec.snapshot()))
    os.chmod(record_path, 0o600)
    if os.geteuid() == 0:       # root:root 0600, as record() writes it
        assert rec.check() == {"converged": True, "reasons": [], "certificates": [], "inputs_digest": "d"}
    real_open = os.open
    denied_paths = {str(f)}

    def denied(path, *a, **kw):
        if path in denied_paths:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, *a, **kw)

    monkeypatch.setattr(converge.os, "open", denied)
    assert "%s cannot be read (Permission denied)" % f in rec.check()["reasons"]
    denied_paths.add(record_path)
    assert rec.check()["reasons"] == ["record %s cannot be read (Permission denied)" % record_path]


def test_inspect_certificate_reports_the_leaf_in_devid_certificate_formats(tmp_path):
    """The facts a role reports for a certificate it skipped: serial in decimal and ISO dates as devid_certificate's
    issuance.describe() gives them, and the key digest devid_csr gives (SHA-256 of the DER SubjectPublicKeyInfo),
    computed here with hashlib over cryptography's own encoding."""
    from ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca import issuance
    cert = _cert(NOW - datetime.timedelta(days=1), NOW + datetime.timedelta(days=89))
    path = tmp_path / "leaf.crt"
    path.write_bytes(_pem(cert))
    reason, facts = converge.inspect_certificate(str(path), now=NOW)
    assert reason is None
    described = issuance.describe([cert])
    assert facts["serial"] == described["serial"] and facts["not_after"] == described["not_after"]
    assert facts["not_before"] == described["not_before"]
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert facts["public_key_sha256"] == hashlib.sha256(spki).hexdigest()
    assert converge.inspect_certificate(str(tmp_path / "none.crt")) == ("certificate %s: missing"
                                                                         % (tmp_path / "none.crt"), None)
