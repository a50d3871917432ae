"""tpm_host_facts through ansible-playbook on swtpm: the report cross-checked with tpm2-tools and openssl, the facts
file with the file system, ansible_local with what the file holds, the socket check with real sockets."""

import json
import os
import socket
import stat
import subprocess

import yaml

FQCN = "trustroot.spire_tpm.tpm_host_facts"


def pcrread(tpm, selection):
    out = tpm.tool("tpm2_pcrread", selection).stdout
    sizes = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}
    return dict((bank, dict((str(k), "%0*x" % (2 * sizes[bank], v)) for k, v in (vals or {}).items()))
                for bank, vals in yaml.safe_load(out).items())


def nv_cert_pubhash(tpm, index, tmp_path):
    """SHA-256 of the DER public key of the certificate tpm2_nvread returns (openssl does the parsing)."""
    raw = tmp_path / ("nv-%s.bin" % index)
    tpm.tool("tpm2_nvread", index, "-C", "o", "-o", str(raw))
    der = subprocess.run(["openssl", "x509", "-inform", "DER", "-in", str(raw), "-outform", "DER"],
                         capture_output=True, check=True).stdout  # trailing NV padding dropped
    (tmp_path / "c.der").write_bytes(der)
    return subprocess.run("openssl x509 -inform DER -in '%s' -pubkey -noout | openssl pkey -pubin -outform DER "
                          "| sha256sum" % (tmp_path / "c.der"), shell=True, capture_output=True, text=True,
                          check=True).stdout.split()[0]


def unix_socket(path, mode, gid=0):
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    os.chmod(str(path), mode)
    os.chown(str(path), -1, gid)
    return s


def task(name, **args):
    return {"name": name, FQCN: args, "register": name}


def test_report_file_and_local_facts(swtpm, run_playbook, tmp_path):
    facts_dir = tmp_path / "facts.d"
    cas = tmp_path / "ca.pem"
    cas.write_text(swtpm.root_ca.read_text() + swtpm.intermediate_ca.read_text())
    swtpm.tool("tpm2_pcrextend", "16:sha256=%s" % ("c" * 64))
    args = {"tcti": swtpm.tcti, "ca_path": str(cas), "facts_dir": str(facts_dir)}
    res = run_playbook(tasks=[task("first", **args), task("again", **args),
                              {"name": "echo", "ansible.builtin.debug": {"var": "ansible_local.tpm.ek_pubhash"}}],
                       diff=True, expect_rc=0)
    first, again = res.task("first"), res.task("again")
    doc = first["facts"]
    path = facts_dir / "tpm.fact"
    assert first["changed"] is True and again["changed"] is False and again["changes"] == []
    assert "diff" in first and "diff" not in again
    # the file: mode 0644, its directory 0755, content what the report says, as to_nice_json writes it
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 and stat.S_IMODE(facts_dir.stat().st_mode) == 0o755
    assert json.loads(path.read_text()) == doc == again["facts"]
    assert path.read_text() == json.dumps(doc, indent=4, sort_keys=True, separators=(",", ": ")) + "\n"
    # ansible_local is what the file holds, set by the module itself
    assert first["ansible_facts"]["ansible_local"]["tpm"] == doc
    assert res.task("echo")["ansible_local.tpm.ek_pubhash"] == doc["ek_pubhash"]
    # the TPM, as tpm2-tools and openssl see it
    assert doc["pcrs"] == pcrread(swtpm, "sha1:all+sha256:all")
    assert doc["pcr_banks"] == ["sha1", "sha256"] and doc["pcr_drift"] == [] and doc["pcr_matches_baseline"] is None
    assert doc["ek_pubhash"] == nv_cert_pubhash(swtpm, "0x1c00002", tmp_path)
    assert doc["ek_certificate_count"] == 2 and doc["spire_tpm_devid_ready"] is True
    assert all("certificate" not in e and "public_key" not in e for e in doc["eks"])
    assert all(e["chain_verified"] for e in doc["eks"] if e["nv_index"])
    assert (doc["schema"], doc["present"], doc["error"], doc["tcti"]) == (1, True, None, swtpm.tcti)
    assert swtpm.transient_handles() == []


def test_check_mode_writes_nothing_and_change_is_seen(swtpm, run_playbook, tmp_path):
    facts_dir = tmp_path / "facts.d"
    args = {"tcti": swtpm.tcti, "facts_dir": str(facts_dir), "facts_name": "t", "banks": ["sha256"], "pcrs": [16]}
    r = run_playbook(tasks=[task("chk", **args)], check=True, expect_rc=0).task("chk")
    assert r["changed"] is True and not facts_dir.exists()
    run_playbook(tasks=[task("write", **args)], expect_rc=0)
    before = (facts_dir / "t.fact").read_text()
    swtpm.tool("tpm2_pcrextend", "16:sha256=%s" % ("d" * 64))
    r = run_playbook(tasks=[task("chk", **args)], check=True, expect_rc=0).task("chk")
    assert r["changed"] is True and (facts_dir / "t.fact").read_text() == before
    assert r["ansible_facts"]["ansible_local"]["t"] == json.loads(before)  # the file as it is (check mode)
    r = run_playbook(tasks=[task("write", **args)], expect_rc=0).task("write")
    assert r["ansible_facts"]["ansible_local"]["t"]["pcrs"] == pcrread(swtpm, "sha256:16")
    assert r["facts"]["pcrs"]["sha256"]["16"] != json.loads(before)["pcrs"]["sha256"]["16"]


def test_socket_check(swtpm, run_playbook, tmp_path):
    bad = tmp_path / "bad.sock"
    good = tmp_path / "good.sock"
    keep = [unix_socket(bad, 0o600), unix_socket(good, 0o660)]
    base = {"tcti": swtpm.tcti, "facts_dir": str(tmp_path / "f")}
    res = run_playbook(tasks=[
        task("bad", socket_path=str(bad), socket_group="root", **base),
        {"name": "skip", "ansible.builtin.debug": {"msg": "-"}}], expect_rc=2)
    r = res.task("bad")
    assert r["failed"] and ("%s is a unix socket with group root and mode 0600" % bad) in r["msg"]
    assert "it must be a unix socket of group root with mode 0660" in r["msg"]
    assert ("type=unixio,path=%s,mode=0660,gid=" % bad) in r["msg"]
    assert not (tmp_path / "f").exists()
    # a regular file, the right group and mode, a socket that does not exist (left to the TPM connection)
    plain = tmp_path / "plain"
    plain.write_text("")
    os.chmod(str(plain), 0o660)
    res = run_playbook(tasks=[task("plain", socket_path=str(plain), socket_group="root", **base)], expect_rc=2)
    assert "is not a unix socket with group root and mode 0660" in res.task("plain")["msg"]
    for name, sock in (("good", good), ("missing", tmp_path / "missing.sock")):
        r = run_playbook(tasks=[task(name, socket_path=str(sock), socket_group="root", **base)],
                         expect_rc=0).task(name)
        assert r["facts"]["present"] is True
    for s in keep:
        s.close()
