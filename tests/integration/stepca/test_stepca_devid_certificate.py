"""devid_certificate against a REAL step-ca (built from Debian's smallstep/certificates), with the DevID key in swtpm.

Oracles: openssl (chain verification, public keys, dates), the step-ca log (which endpoint answered what), and
PyJWT/cryptography-made tokens for the operator-token cases.
"""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

pytestmark = pytest.mark.stepca

FQCN = "trustroot.spire_tpm."
ROOT = Path(__file__).resolve().parents[3]
COLLECTIONS = ROOT / ".build" / "collections"
RENEW_MODULE = "ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca.renew"


def task(name, args, module="devid_certificate", **extra):
    t = {"name": name, FQCN + module: args}
    t.update(extra)
    return t


def csr_task(swtpm, d, cn, key_type="rsa"):
    return task("csr " + cn, {"tcti": swtpm.tcti, "key_type": key_type, "pub_path": str(d / "devid.pub"),
                              "priv_path": str(d / "devid.priv"), "csr_path": str(d / "devid.csr"),
                              "common_name": cn}, module="devid_csr")


def ca_args(ca, d, **kw):
    args = {"csr_path": str(d / "devid.csr"), "cert_path": str(d / "devid.crt"), "ca_url": ca.url,
            "root_fingerprint": ca.root_fingerprint, "provisioner_name": ca.provisioner_name,
            "provisioner_password": ca.provisioner_password}
    args.update(kw)
    return args


def tpm_args(swtpm, d):
    return {"tcti": swtpm.tcti, "devid_pub_path": str(d / "devid.pub"), "devid_priv_path": str(d / "devid.priv")}


def openssl(*args, input=None):
    out = subprocess.run(["openssl"] + list(args), capture_output=True, text=True, input=input)
    return out


def verify_chain(ca, d, chain_file):
    """openssl verify of the leaf against the CA's root with the file's other certificates as untrusted."""
    certs = x509.load_pem_x509_certificates(Path(chain_file).read_bytes())
    (d / "leaf.pem").write_bytes(certs[0].public_bytes(serialization.Encoding.PEM))
    (d / "untrusted.pem").write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs[1:]))
    (d / "root.pem").write_text(ca.root_pem)
    out = openssl("verify", "-CAfile", str(d / "root.pem"), "-untrusted", str(d / "untrusted.pem"),
                  str(d / "leaf.pem"))
    assert out.returncode == 0 and "OK" in out.stdout, out.stdout + out.stderr
    return certs


def openssl_pubkey(path, kind):
    cmd = ["req", "-in", str(path), "-pubkey", "-noout"] if kind == "csr" else ["x509", "-in", str(path),
                                                                                "-pubkey", "-noout"]
    out = openssl(*cmd)
    assert out.returncode == 0, out.stderr
    return out.stdout


def openssl_serial(path):
    out = openssl("x509", "-in", str(path), "-noout", "-serial")
    return int(out.stdout.strip().split("=")[1], 16)


def openssl_enddate(path):
    out = openssl("x509", "-in", str(path), "-noout", "-enddate")
    text = out.stdout.strip().split("=", 1)[1]
    return datetime.datetime.strptime(text, "%b %d %H:%M:%S %Y GMT").replace(tzinfo=datetime.timezone.utc)


def run_renew_job(ca, swtpm, d, *extra):
    env = dict(os.environ, PYTHONPATH=str(COLLECTIONS), TSS2_LOG="all+NONE")
    cmd = [sys.executable, "-m", RENEW_MODULE, "--cert", str(d / "devid.crt"), "--ca-url", ca.url,
           "--root-fingerprint", ca.root_fingerprint, "--devid-pub", str(d / "devid.pub"),
           "--devid-priv", str(d / "devid.priv"), "--tcti", swtpm.tcti] + list(extra)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def ca_log_count(ca, path, status):
    return sum(1 for line in ca.log_text().splitlines()
               if "path=%s " % path in line and "status=%d " % status in line)


def test_issue_noop_renew_revoke_with_tpm_key(step_ca, swtpm, run_playbook, tmp_path):
    d = tmp_path
    cn = "node-%s.devid.test" % uuid.uuid4().hex[:8]
    args = ca_args(step_ca, d)
    r = run_playbook(tasks=[csr_task(swtpm, d, cn), task("issue", args), task("again", args)], diff=True,
                     expect_rc=0)
    issued, again = r.task("issue"), r.task("again")
    assert issued["changed"] is True and issued["cert_action"] == "issued"
    assert again["changed"] is False and again["cert_action"] == "none"
    assert again["serial"] == issued["serial"]
    diff = issued["diff"][0] if isinstance(issued["diff"], list) else issued["diff"]
    assert diff["before"] == "" and diff["after"].startswith("-----BEGIN CERTIFICATE-----")
    assert "diff" not in again or not again["diff"]

    # the chain: leaf + intermediate, verifying to the pinned root; leaf for the TPM key; 90 days
    certs = verify_chain(step_ca, d, d / "devid.crt")
    assert len(certs) == 2
    assert certs[1].subject.rfc4514_string() == step_ca.intermediate_cert.subject.rfc4514_string()
    assert openssl_pubkey(d / "devid.crt", "x509") == openssl_pubkey(d / "devid.csr", "csr")
    assert str(openssl_serial(d / "devid.crt")) == issued["serial"]
    lifetime = openssl_enddate(d / "devid.crt") - datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(days=89, hours=23) < lifetime <= datetime.timedelta(days=90, minutes=1)
    assert oct(os.stat(d / "devid.crt").st_mode & 0o777) == "0o644"
    assert ca_log_count(step_ca, "/1.0/sign", 201) >= 1

    # check mode inside the renewal window: reports, changes nothing
    before = (d / "devid.crt").read_bytes()
    renew_args = dict(args, renew_before="2200h", **tpm_args(swtpm, d))
    r = run_playbook(tasks=[task("renew check", renew_args)], check=True, expect_rc=0)
    assert r.task("renew check")["changed"] is True and r.task("renew check")["cert_action"] == "renewed"
    assert (d / "devid.crt").read_bytes() == before

    # renewal inside the window through the TPM-signed Bearer token (no provisioner secret needed)
    renews_before = ca_log_count(step_ca, "/1.0/renew", 201)
    no_secret = {k: v for k, v in renew_args.items() if k not in ("provisioner_password",)}
    r = run_playbook(tasks=[task("renew", no_secret)], expect_rc=0)
    renewed = r.task("renew")
    assert renewed["changed"] is True and renewed["cert_action"] == "renewed"
    assert renewed["previous_serial"] == issued["serial"] and renewed["serial"] != issued["serial"]
    assert ca_log_count(step_ca, "/1.0/renew", 201) == renews_before + 1
    verify_chain(step_ca, d, d / "devid.crt")
    assert openssl_pubkey(d / "devid.crt", "x509") == openssl_pubkey(d / "devid.csr", "csr")
    assert swtpm.transient_handles() == []

    # the on-host renewal job, run by hand: not due with the default window, renews when inside it
    out = run_renew_job(step_ca, swtpm, d)
    assert out.returncode == 0, out.stderr
    assert "not due" in out.stdout
    serial_before_job = openssl_serial(d / "devid.crt")
    out = run_renew_job(step_ca, swtpm, d, "--renew-before", "2200h")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "renewed" in out.stdout
    serial_after_job = openssl_serial(d / "devid.crt")
    assert serial_after_job != serial_before_job
    verify_chain(step_ca, d, d / "devid.crt")
    assert openssl_pubkey(d / "devid.crt", "x509") == openssl_pubkey(d / "devid.csr", "csr")
    assert swtpm.transient_handles() == []

    # revoke (state=absent) → file removed; renewing the revoked certificate is refused and changes nothing
    revoked_copy = d / "revoked.crt"
    shutil.copy(d / "devid.crt", revoked_copy)
    r = run_playbook(tasks=[task("absent", dict(args, state="absent")),
                            task("absent again", dict(args, state="absent"))], expect_rc=0)
    assert r.task("absent")["cert_action"] == "revoked" and r.task("absent")["changed"] is True
    assert r.task("absent")["serial"] == str(serial_after_job)
    assert r.task("absent again")["changed"] is False
    assert not (d / "devid.crt").exists()
    assert ca_log_count(step_ca, "/1.0/revoke", 200) >= 1
    shutil.copy(revoked_copy, d / "devid.crt")
    out = run_renew_job(step_ca, swtpm, d, "--force")
    assert out.returncode == 1
    assert "refused to renew" in out.stderr and "revoked" in out.stderr
    assert (d / "devid.crt").read_bytes() == revoked_copy.read_bytes()
    assert "certificate has been revoked" in step_ca.log_text()
    r = run_playbook(tasks=[task("renew revoked", dict(renew_args))], expect_rc=2)
    assert r.task("renew revoked")["failed"] is True
    assert "refused to renew" in r.task("renew revoked")["msg"]
    assert (d / "devid.crt").read_bytes() == revoked_copy.read_bytes()


def test_ecc_devid_renewed_by_the_host_job(step_ca, swtpm, run_playbook, tmp_path):
    d = tmp_path
    cn = "ecc-%s.devid.test" % uuid.uuid4().hex[:8]
    t = csr_task(swtpm, d, cn, "ecc")
    t[FQCN + "devid_csr"]["subject_alt_names"] = ["DNS:" + cn, "IP:127.0.0.9", "URI:urn:devid:" + cn]
    run_playbook(tasks=[t, task("issue", ca_args(step_ca, d, validity="720h"))], expect_rc=0)
    first = openssl_serial(d / "devid.crt")
    text = openssl("x509", "-in", str(d / "devid.crt"), "-noout", "-ext", "subjectAltName").stdout
    assert "DNS:" + cn in text and "IP Address:127.0.0.9" in text and "URI:urn:devid:" + cn in text
    out = run_renew_job(step_ca, swtpm, d, "--renew-before", "800h")
    assert out.returncode == 0, out.stdout + out.stderr
    assert openssl_serial(d / "devid.crt") != first
    certs = verify_chain(step_ca, d, d / "devid.crt")
    # step-ca renewal keeps the lifetime of the original (30 days here)
    life = certs[0].not_valid_after_utc - certs[0].not_valid_before_utc
    assert datetime.timedelta(days=29, hours=23) < life <= datetime.timedelta(days=30, minutes=2)
    assert openssl_pubkey(d / "devid.crt", "x509") == openssl_pubkey(d / "devid.csr", "csr")
    assert swtpm.transient_handles() == []


def test_ca_down_changes_nothing(step_ca_factory, swtpm, run_playbook, tmp_path):
    ca = step_ca_factory()
    d = tmp_path
    run_playbook(tasks=[csr_task(swtpm, d, "down.devid.test")], expect_rc=0)
    ca.stop()
    r = run_playbook(tasks=[task("issue", ca_args(ca, d))], expect_rc=2)
    res = r.task("issue")
    assert res["failed"] is True and res["changed"] is False
    assert "not reachable" in res["msg"] and "connection refused" in res["msg"]
    assert not (d / "devid.crt").exists()
    # with a certificate on disk and the CA down: renewal fails, the certificate stays
    ca.start()
    run_playbook(tasks=[task("issue", ca_args(ca, d))], expect_rc=0)
    before = (d / "devid.crt").read_bytes()
    ca.stop()
    r = run_playbook(tasks=[task("renew", dict(ca_args(ca, d), renew_before="2200h", **tpm_args(swtpm, d)))],
                     expect_rc=2)
    assert "not reachable" in r.task("renew")["msg"]
    assert (d / "devid.crt").read_bytes() == before


def _operator_token(ca, cn, aud_path="/1.0/sign"):
    """A token minted independently of the collection: PyJWT with the provisioner key, as `step ca token` does."""
    now = int(time.time())
    claims = {"iss": ca.provisioner_name, "aud": ca.url + aud_path, "sub": cn, "sans": [cn], "nbf": now,
              "iat": now, "exp": now + 300, "jti": uuid.uuid4().hex, "sha": ca.root_fingerprint}
    return jwt.encode(claims, ca.provisioner_key, algorithm="ES256", headers={"kid": ca.kid})


def test_operator_token_and_replay_refused(step_ca, swtpm, run_playbook, tmp_path):
    d = tmp_path
    cn = "tok-%s.devid.test" % uuid.uuid4().hex[:8]
    tok = _operator_token(step_ca, cn)
    base = {"csr_path": str(d / "devid.csr"), "ca_url": step_ca.url, "root_fingerprint": step_ca.root_fingerprint,
            "token": tok}
    r = run_playbook(tasks=[csr_task(swtpm, d, cn),
                            task("issue", dict(base, cert_path=str(d / "a.crt"))),
                            task("replay", dict(base, cert_path=str(d / "b.crt")), ignore_errors=True)],
                     expect_rc=0)
    assert r.task("issue")["cert_action"] == "issued"
    verify_chain(step_ca, d, d / "a.crt")
    replay = r.task("replay")
    assert replay["failed"] is True
    assert "401" in replay["msg"] and "single use" in replay["msg"]
    assert not (d / "b.crt").exists()
    assert tok not in r.stdout          # no_log

    # revoke with an operator-minted revoke token (sub = decimal serial, aud = /1.0/revoke)
    serial = r.task("issue")["serial"]
    now = int(time.time())
    rev = jwt.encode({"iss": step_ca.provisioner_name, "aud": step_ca.url + "/1.0/revoke", "sub": serial,
                      "nbf": now, "iat": now, "exp": now + 300, "jti": uuid.uuid4().hex},
                     step_ca.provisioner_key, algorithm="ES256", headers={"kid": step_ca.kid})
    r = run_playbook(tasks=[task("revoke", {"state": "absent", "cert_path": str(d / "a.crt"), "ca_url": step_ca.url,
                                            "root_fingerprint": step_ca.root_fingerprint, "token": rev})],
                     expect_rc=0)
    assert r.task("revoke")["cert_action"] == "revoked" and not (d / "a.crt").exists()
    assert any("path=/1.0/revoke " in line and "status=200 " in line and "serial=%s " % serial in line
               for line in step_ca.log_text().splitlines())


def test_wrong_root_fingerprint_refused(step_ca, step_ca_factory, swtpm, run_playbook, tmp_path):
    other = step_ca_factory()
    d = tmp_path
    run_playbook(tasks=[csr_task(swtpm, d, "fp.devid.test")], expect_rc=0)
    r = run_playbook(tasks=[task("issue", ca_args(step_ca, d, root_fingerprint=other.root_fingerprint))],
                     expect_rc=2)
    assert "has no root with fingerprint %s" % other.root_fingerprint in r.task("issue")["msg"]
    assert not (d / "devid.crt").exists()
    r = run_playbook(tasks=[task("bad fp", ca_args(step_ca, d, root_fingerprint="abc"))], expect_rc=2)
    assert "not a SHA-256 fingerprint" in r.task("bad fp")["msg"]


def test_lifetime_cap_is_explained(step_ca_factory, swtpm, run_playbook, tmp_path):
    ca = step_ca_factory(max_duration="24h")
    d = tmp_path
    r = run_playbook(tasks=[csr_task(swtpm, d, "cap.devid.test"), task("issue", ca_args(ca, d))], expect_rc=2)
    msg = r.task("issue")["msg"]
    assert "caps certificates at 24h" in msg
    assert "raise claims.maxTLSCertDuration (and defaultTLSCertDuration)" in msg and "at least 2160h" in msg
    assert not (d / "devid.crt").exists()
    # within the cap it works
    r = run_playbook(tasks=[task("issue 12h", ca_args(ca, d, validity="12h"))], expect_rc=0)
    assert r.task("issue 12h")["cert_action"] == "issued"


def test_provisioner_key_password_and_explicit_encrypted_key(step_ca, swtpm, run_playbook, tmp_path):
    d = tmp_path
    cn = "pw-%s.devid.test" % uuid.uuid4().hex[:8]
    r = run_playbook(tasks=[csr_task(swtpm, d, cn),
                            task("wrong pw", ca_args(step_ca, d, provisioner_password="not-the-password"),
                                 ignore_errors=True),
                            task("explicit key", ca_args(step_ca, d, provisioner_encrypted_key=step_ca.encrypted_key))],
                     expect_rc=0)
    wrong = r.task("wrong pw")
    assert wrong["failed"] is True
    assert "provisioner password does not decrypt" in wrong["msg"]
    assert r.task("explicit key")["cert_action"] == "issued"
    verify_chain(step_ca, d, d / "devid.crt")
    assert step_ca.provisioner_password not in r.stdout


def test_check_mode_and_diff_issue_nothing(step_ca, swtpm, run_playbook, tmp_path):
    d = tmp_path
    run_playbook(tasks=[csr_task(swtpm, d, "check.devid.test")], expect_rc=0)
    signs = ca_log_count(step_ca, "/1.0/sign", 201)
    r = run_playbook(tasks=[task("issue", ca_args(step_ca, d))], check=True, diff=True, expect_rc=0)
    res = r.task("issue")
    assert res["changed"] is True and res["cert_action"] == "issued"
    assert not (d / "devid.crt").exists()
    assert ca_log_count(step_ca, "/1.0/sign", 201) == signs
    r = run_playbook(tasks=[task("issue", dict(ca_args(step_ca, d), mode="0640"))], diff=True, expect_rc=0)
    assert oct(os.stat(d / "devid.crt").st_mode & 0o777) == "0o640"
    r = run_playbook(tasks=[task("mode only", dict(ca_args(step_ca, d), mode="0600"))], expect_rc=0)
    assert r.task("mode only")["changed"] is True and r.task("mode only")["cert_action"] == "none"
    assert oct(os.stat(d / "devid.crt").st_mode & 0o777) == "0o600"


def test_new_key_gets_new_certificate(step_ca, swtpm, run_playbook, tmp_path):
    d = tmp_path
    run_playbook(tasks=[csr_task(swtpm, d, "rekey.devid.test"), task("issue", ca_args(step_ca, d))], expect_rc=0)
    first = openssl_serial(d / "devid.crt")
    forced = csr_task(swtpm, d, "rekey.devid.test")
    forced[FQCN + "devid_csr"]["force"] = True
    r = run_playbook(tasks=[forced, task("issue", ca_args(step_ca, d))], expect_rc=0)
    assert r.task("issue")["cert_action"] == "issued"
    assert openssl_serial(d / "devid.crt") != first
    assert openssl_pubkey(d / "devid.crt", "x509") == openssl_pubkey(d / "devid.csr", "csr")


def test_renew_job_devid_password(step_ca, swtpm, run_playbook, tmp_path):
    d = tmp_path
    cn = "pwkey-%s.devid.test" % uuid.uuid4().hex[:8]
    t = csr_task(swtpm, d, cn, "ecc")
    t[FQCN + "devid_csr"]["devid_password"] = "key-pw-1"
    run_playbook(tasks=[t, task("issue", ca_args(step_ca, d))], expect_rc=0)
    before = (d / "devid.crt").read_bytes()
    (d / "wrong").write_text("key-pw-2\n")
    out = run_renew_job(step_ca, swtpm, d, "--force", "--devid-password-file", str(d / "wrong"))
    assert out.returncode == 1
    assert "devid_password" in out.stderr and "Traceback" not in out.stderr
    assert (d / "devid.crt").read_bytes() == before
    assert swtpm.transient_handles() == []
    (d / "right").write_text("key-pw-1\n")
    out = run_renew_job(step_ca, swtpm, d, "--force", "--devid-password-file", str(d / "right"))
    assert out.returncode == 0, out.stderr
    assert (d / "devid.crt").read_bytes() != before
    verify_chain(step_ca, d, d / "devid.crt")


def test_expired_certificate_for_the_key_is_issued_anew(step_ca, swtpm, run_playbook, tmp_path):
    """An expired certificate (here from another CA) for the CSR's key and name is replaced by a new one."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    d = tmp_path
    cn = "expired-%s.devid.test" % uuid.uuid4().hex[:8]
    run_playbook(tasks=[csr_task(swtpm, d, cn)], expect_rc=0)
    csr = x509.load_pem_x509_csr((d / "devid.csr").read_bytes())
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    old = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(csr.subject)
           .public_key(csr.public_key()).serial_number(4242)
           .not_valid_before(now - datetime.timedelta(days=10)).not_valid_after(now - datetime.timedelta(days=1))
           .sign(ca_key, hashes.SHA256()))
    (d / "devid.crt").write_bytes(old.public_bytes(serialization.Encoding.PEM))
    r = run_playbook(tasks=[task("issue", dict(ca_args(step_ca, d), **tpm_args(swtpm, d)))], expect_rc=0)
    res = r.task("issue")
    assert res["cert_action"] == "issued" and res["previous_serial"] == "4242"
    verify_chain(step_ca, d, d / "devid.crt")
