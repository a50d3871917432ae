# -*- coding: utf-8 -*-
"""A real step-ca for tests and the lab: built from Debian's Go packages, configured with ``cryptography`` only.

* ``build_step_ca(dest_dir=None)`` builds step-ca offline in GOPATH mode from a tiny ``main.go`` (a urfave/cli app
  running the packaged ``commands.AppCommand`` with the soft CAS) and caches the binary under
  ``.build/step-ca/<package version>-<go version>-<main.go hash>/step-ca``; concurrent callers (pytest -n) wait on a
  lock instead of building twice.
* ``StepCA(workdir, ...)`` creates a root + intermediate CA, a JWK provisioner (P-256, ``kid`` = RFC 7638 thumbprint,
  ``encryptedKey`` = PBES2-HS256+A128KW/A256GCM JWE) with configurable claims, a bbolt DB, and serves on a free
  127.0.0.1 port. ``start()``/``stop()``; attributes ``url``, ``root_fingerprint``, ``root_pem``,
  ``provisioner_name``, ``provisioner_password``, ``provisioner_key`` (the private key), ``encrypted_key``, ``kid``,
  ``log_text()``.

Self-contained (no import of the collection) so lab scripts can use it as well.
"""

from __future__ import annotations

import base64
import datetime
import fcntl
import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".build" / "step-ca"
PACKAGE = "golang-github-smallstep-certificates-dev"
GOPATH_SYSTEM = "/usr/share/gocode"

MAIN_GO = """package main

import (
\t"fmt"
\t"os"

\t"github.com/smallstep/certificates/commands"
\t"github.com/urfave/cli"

\t_ "github.com/smallstep/certificates/cas/softcas"
)

func main() {
\tapp := cli.NewApp()
\tapp.Name = "step-ca"
\tapp.HelpName = "step-ca"
\tapp.Usage = "step-ca (Debian's smallstep/certificates library) for trustroot.spire_tpm tests"
\tapp.UsageText = "step-ca [--password-file FILE] <config>"
\tapp.Action = commands.AppCommand.Action
\tapp.Flags = commands.AppCommand.Flags
\tif err := app.Run(os.Args); err != nil {
\t\tfmt.Fprintln(os.Stderr, err)
\t\tos.Exit(1)
\t}
}
"""

LAST_BUILD_SECONDS = None   # set when build_step_ca actually compiled (for the bench/report)


def _package_version():
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", PACKAGE], capture_output=True, text=True)
    if out.returncode != 0 or not out.stdout.strip():
        raise RuntimeError("%s is not installed: apt-get install -y golang-go %s" % (PACKAGE, PACKAGE))
    return out.stdout.strip()


def _go_version():
    out = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError("the Go toolchain is missing: apt-get install -y golang-go")
    return out.stdout.strip()


def build_step_ca(dest_dir=None):
    """Build (or reuse) the step-ca binary; return its path. Offline: GOPATH mode, no module proxy."""
    global LAST_BUILD_SECONDS
    cgo = "1" if shutil.which("gcc") else "0"     # gcc is only Recommended by golang-go; both builds work
    key = "%s-%s-%s%s" % (_package_version(), _go_version(), hashlib.sha256(MAIN_GO.encode()).hexdigest()[:12],
                          "" if cgo == "1" else "-nocgo")
    base = Path(dest_dir) if dest_dir else CACHE
    out_dir = base / key.replace("/", "_").replace(":", "_")
    binary = out_dir / "step-ca"
    if binary.exists():
        return str(binary)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.exists():
            return str(binary)
        work = Path(tempfile.mkdtemp(prefix="stepca-gopath-", dir=str(out_dir)))
        try:
            (work / "src" / "stepca").mkdir(parents=True)
            (work / "src" / "stepca" / "main.go").write_text(MAIN_GO)
            env = dict(os.environ)
            env.update({"GO111MODULE": "off", "GOPATH": "%s:%s" % (work, GOPATH_SYSTEM), "GOFLAGS": "",
                        "GOPROXY": "off", "GOCACHE": str(base / "gocache"), "CGO_ENABLED": cgo})
            t0 = time.monotonic()
            res = subprocess.run(["go", "build", "-o", str(work / "step-ca"), "stepca"], cwd=str(work), env=env,
                                 capture_output=True, text=True)
            if res.returncode != 0:
                raise RuntimeError("building step-ca failed:\n%s\n%s" % (res.stdout, res.stderr))
            LAST_BUILD_SECONDS = time.monotonic() - t0
            (out_dir / "build-seconds").write_text("%.1f\n" % LAST_BUILD_SECONDS)
            os.replace(work / "step-ca", binary)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return str(binary)


# --- small JOSE helpers (independent of the collection's code) ----------------------------------------------------

def _b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _coord(n):
    return _b64u(n.to_bytes(32, "big"))


def jwk_pair(key):
    """(public JWK with kid, private JWK) of an EC P-256 key; kid = RFC 7638 thumbprint."""
    n = key.public_key().public_numbers()
    x, y = _coord(n.x), _coord(n.y)
    thumb = _b64u(hashlib.sha256(('{"crv":"P-256","kty":"EC","x":"%s","y":"%s"}' % (x, y)).encode()).digest())
    pub = {"use": "sig", "kty": "EC", "kid": thumb, "crv": "P-256", "alg": "ES256", "x": x, "y": y}
    priv = dict(pub, d=_coord(key.private_numbers().private_value))
    return pub, priv


def pbes2_encrypt(plaintext, password, p2c):
    """Compact JWE, PBES2-HS256+A128KW / A256GCM, as step's ``crypto jwk create`` writes it."""
    p2s, iv, cek = os.urandom(16), os.urandom(12), os.urandom(32)
    header = {"alg": "PBES2-HS256+A128KW", "cty": "jwk+json", "enc": "A256GCM", "p2c": p2c, "p2s": _b64u(p2s)}
    prot = _b64u(json.dumps(header, separators=(",", ":")).encode())
    kek = PBKDF2HMAC(hashes.SHA256(), 16, b"PBES2-HS256+A128KW\x00" + p2s, p2c).derive(password.encode())
    sealed = AESGCM(cek).encrypt(iv, plaintext, prot.encode())
    return ".".join([prot, _b64u(aes_key_wrap(kek, cek)), _b64u(iv), _b64u(sealed[:-16]), _b64u(sealed[-16:])])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "trustroot test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca_cert(subject_cn, key, issuer_cert=None, issuer_key=None, path_length=None, days=3650):
    now = datetime.datetime.now(datetime.timezone.utc)
    issuer = issuer_cert.subject if issuer_cert is not None else _name(subject_cn)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    b = (x509.CertificateBuilder().subject_name(_name(subject_cn)).issuer_name(issuer)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                      data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                      crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
         .add_extension(ski, critical=False))
    if issuer_cert is not None:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                            critical=False)
    return b.sign(issuer_key if issuer_key is not None else key, hashes.SHA256())


def claims(max_duration="2160h", default_duration=None, min_duration="5m", disable_renewal=False):
    return {"minTLSCertDuration": min_duration, "maxTLSCertDuration": max_duration,
            "defaultTLSCertDuration": default_duration or max_duration, "disableRenewal": disable_renewal}


class StepCA:
    """A configured, running (after ``start()``) step-ca on 127.0.0.1."""

    def __init__(self, workdir, binary=None, provisioner_name="devid@trustroot.test",
                 provisioner_password="devid-provisioner-pw", max_duration="2160h", default_duration=None,
                 p2c=600000, ca_password="intermediate-key-pw", disable_renewal=False):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.binary = binary or build_step_ca()
        self.provisioner_name = provisioner_name
        self.provisioner_password = provisioner_password
        self.ca_password = ca_password
        self.port = free_port()
        self.url = "https://127.0.0.1:%d" % self.port
        self.proc = None
        self._log = None

        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root_cert = make_ca_cert("Trustroot Test Root CA", self.root_key, path_length=1)
        self.intermediate_key = ec.generate_private_key(ec.SECP256R1())
        self.intermediate_cert = make_ca_cert("Trustroot Test Intermediate CA", self.intermediate_key,
                                              self.root_cert, self.root_key, path_length=0)
        pem = serialization.Encoding.PEM
        self.root_pem = self.root_cert.public_bytes(pem).decode("ascii")
        self.intermediate_pem = self.intermediate_cert.public_bytes(pem).decode("ascii")
        self.root_fingerprint = hashlib.sha256(self.root_cert.public_bytes(serialization.Encoding.DER)).hexdigest()

        self.provisioner_key = ec.generate_private_key(ec.SECP256R1())
        self.provisioner_jwk, private = jwk_pair(self.provisioner_key)
        self.kid = self.provisioner_jwk["kid"]
        self.encrypted_key = pbes2_encrypt(json.dumps(private).encode(), provisioner_password, p2c)

        (self.dir / "root_ca.crt").write_text(self.root_pem)
        (self.dir / "intermediate_ca.crt").write_text(self.intermediate_pem)
        (self.dir / "intermediate_ca_key").write_bytes(self.intermediate_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(ca_password.encode())))
        (self.dir / "password").write_text(ca_password)
        self.claims = claims(max_duration, default_duration, disable_renewal=disable_renewal)
        self.write_config()

    @property
    def config_path(self):
        return self.dir / "ca.json"

    def write_config(self):
        cfg = {
            "root": str(self.dir / "root_ca.crt"),
            "federatedRoots": None,
            "crt": str(self.dir / "intermediate_ca.crt"),
            "key": str(self.dir / "intermediate_ca_key"),
            "address": "127.0.0.1:%d" % self.port,
            "insecureAddress": "",
            "dnsNames": ["127.0.0.1", "localhost"],
            "logger": {"format": "text"},
            "db": {"type": "bbolt", "dataSource": str(self.dir / "db")},
            "authority": {"provisioners": [{
                "type": "JWK", "name": self.provisioner_name, "key": self.provisioner_jwk,
                "encryptedKey": self.encrypted_key, "claims": self.claims}]},
            "tls": {"cipherSuites": ["TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
                                     "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"],
                    "minVersion": 1.2, "maxVersion": 1.3, "renegotiation": False},
        }
        self.config_path.write_text(json.dumps(cfg, indent=2))

    @property
    def log_path(self):
        return self.dir / "step-ca.log"

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def start(self, timeout=30, attempts=3):
        """Start and wait for /health; a port taken meanwhile by someone else gets a new port (url changes)."""
        for attempt in range(attempts):
            try:
                return self._start_once(timeout)
            except RuntimeError as e:
                if "address already in use" not in str(e) or attempt == attempts - 1:
                    raise
                self.port = free_port()
                self.url = "https://127.0.0.1:%d" % self.port
                self.write_config()

    def _start_once(self, timeout):
        if self.proc is not None and self.proc.poll() is None:
            return self
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.binary, "--password-file", str(self.dir / "password"),
                                      str(self.config_path)], stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=str(self.dir), env=dict(os.environ, STEPPATH=str(self.dir / "steppath")))
        ctx = ssl.create_default_context(cadata=self.root_pem)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("step-ca exited with %s:\n%s" % (self.proc.returncode, self.log_text()[-3000:]))
            try:
                with urllib.request.urlopen(self.url + "/health", context=ctx, timeout=1) as r:
                    if json.loads(r.read()).get("status") == "ok":
                        return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("step-ca did not become healthy on %s:\n%s" % (self.url, self.log_text()[-3000:]))

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self):
        self.stop()
        return self.start()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False
