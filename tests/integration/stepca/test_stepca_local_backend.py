"""devid_certificate with backend=local (CA key on the host), cross-checked with openssl."""

from __future__ import annotations

import datetime
import subprocess

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.stepca import make_ca_cert

FQCN = "trustroot.spire_tpm."


def _ca(d):
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = make_ca_cert("Local Root", root_key, path_length=1)
    key = ec.generate_private_key(ec.SECP256R1())
    inter = make_ca_cert("Local DevID CA", key, root, root_key, path_length=0)
    pem = serialization.Encoding.PEM
    (d / "root.pem").write_bytes(root.public_bytes(pem))
    # issuing CA first, then its root (the root must not be copied into the chain)
    (d / "ca.pem").write_bytes(inter.public_bytes(pem) + root.public_bytes(pem))
    (d / "ca.key").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                 serialization.BestAvailableEncryption(b"ca-pw")))
    return inter


def test_local_backend_issue_noop_renew_absent(swtpm, run_playbook, tmp_path):
    d = tmp_path
    inter = _ca(d)
    csr = {"tcti": swtpm.tcti, "pub_path": str(d / "devid.pub"), "priv_path": str(d / "devid.priv"),
           "csr_path": str(d / "devid.csr"), "common_name": "local.devid.test",
           "subject": {"O": "Example", "OU": "Lab"}, "subject_alt_names": ["DNS:local.devid.test"]}
    args = {"backend": "local", "csr_path": str(d / "devid.csr"), "cert_path": str(d / "devid.crt"),
            "ca_cert_path": str(d / "ca.pem"), "ca_key_path": str(d / "ca.key"), "ca_key_password": "ca-pw",
            "validity": "720h"}
    r = run_playbook(tasks=[{"name": "csr", FQCN + "devid_csr": csr},
                            {"name": "issue", FQCN + "devid_certificate": args},
                            {"name": "again", FQCN + "devid_certificate": args}], diff=True, expect_rc=0)
    assert r.task("issue")["cert_action"] == "issued" and r.task("again")["changed"] is False
    diff = r.task("issue")["diff"]
    diff = diff[0] if isinstance(diff, list) else diff
    assert diff["before"] == "" and diff["after"].startswith("-----BEGIN CERTIFICATE-----")
    out = subprocess.run(["openssl", "verify", "-CAfile", str(d / "root.pem"), "-untrusted", str(d / "devid.crt"),
                          str(d / "devid.crt")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    chain = x509.load_pem_x509_certificates((d / "devid.crt").read_bytes())
    assert len(chain) == 2 and chain[1] == inter
    leaf = chain[0]
    assert leaf.subject.rfc4514_string() == "CN=local.devid.test,OU=Lab,O=Example"
    life = leaf.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(days=29, hours=23) < life <= datetime.timedelta(days=30)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["local.devid.test"]
    pub_csr = subprocess.run(["openssl", "req", "-in", str(d / "devid.csr"), "-pubkey", "-noout"],
                             capture_output=True, text=True).stdout
    pub_crt = subprocess.run(["openssl", "x509", "-in", str(d / "devid.crt"), "-pubkey", "-noout"],
                             capture_output=True, text=True).stdout
    assert pub_csr == pub_crt

    r = run_playbook(tasks=[{"name": "renew", FQCN + "devid_certificate": dict(args, renew_before="800h")},
                            {"name": "bad pw", FQCN + "devid_certificate": dict(args, renew_before="800h",
                                                                                 ca_key_password="nope"),
                             "ignore_errors": True},
                            {"name": "absent", FQCN + "devid_certificate": dict(args, state="absent")}],
                     expect_rc=0)
    assert r.task("renew")["cert_action"] == "renewed"
    assert r.task("renew")["serial"] != r.task("renew")["previous_serial"]
    assert "wrong ca_key_password" in r.task("bad pw")["msg"]
    assert r.task("absent")["cert_action"] == "removed"
    assert not (d / "devid.crt").exists()
