# -*- coding: utf-8 -*-
"""Helpers for the spire_config / simulator daemon tests: a private simulator world per test.

Every test gets its own registry directory (SPIRE_SIM_REGISTRY), short socket paths under /tmp (unix sockets are
limited to 108 bytes), free loopback ports, and every daemon it starts is stopped (SIGTERM, then SIGKILL) by pid.
"""

import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire import config as C

ROOT = Path(__file__).resolve().parents[3]
BIN = ROOT / "tests" / "simulators" / "bin"
SERVER_BIN = str(BIN / "spire-server")
AGENT_BIN = str(BIN / "spire-agent")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connectable(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


class Daemon(object):
    def __init__(self, proc, log_path, socket_path):
        self.proc = proc
        self.log_path = Path(log_path)
        self.socket_path = socket_path

    @property
    def log(self):
        return self.log_path.read_text() if self.log_path.exists() else ""

    def wait_ready(self, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("daemon exited with %s:\n%s" % (self.proc.returncode, self.log))
            if connectable(self.socket_path):
                return self
            time.sleep(0.05)
        raise AssertionError("daemon not ready after %ss:\n%s" % (timeout, self.log))

    def wait_exit(self, timeout=15):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("daemon still running after %ss:\n%s" % (timeout, self.log))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


class SimWorld(object):
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="spcfg-", dir="/tmp"))
        self.registry = self.dir / "reg"
        self.daemons = []
        self.sockets = []
        self.env = dict(os.environ)
        self.env["SPIRE_SIM_REGISTRY"] = str(self.registry)
        self.env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
        self.env["TSS2_LOG"] = "all+NONE"

    def path(self, *parts):
        p = self.dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    # --- configurations -----------------------------------------------------------------------------------
    def server_config(self, name="srv", port=None, td="example.org", node_attestors=None):
        port = port or free_port()
        return {
            "server": {"trust_domain": td, "bind_address": "127.0.0.1", "bind_port": port,
                       "data_dir": str(self.path(name, "data", "x").parent),
                       "socket_path": str(self.path(name, "api.sock"))},
            "plugins": {
                "DataStore": {"sql": {"plugin_data": {"database_type": "sqlite3",
                                                      "connection_string": str(self.path(name, "ds.sqlite3"))}}},
                "KeyManager": {"memory": {"plugin_data": {}}},
                "NodeAttestor": node_attestors if node_attestors is not None else {"join_token": {"plugin_data": {}}},
            },
        }

    def agent_config(self, server_cfg, name="agt", node_attestor=None, **section):
        sec = {"trust_domain": server_cfg["server"]["trust_domain"], "server_address": "127.0.0.1",
               "server_port": server_cfg["server"]["bind_port"], "data_dir": str(self.path(name, "data", "x").parent),
               "trust_bundle_path": str(self.path(name, "bundle.pem")),
               "socket_path": str(self.path(name, "api.sock"))}
        sec.update(section)
        return {
            "agent": dict((k, v) for k, v in sec.items() if v is not None),
            "plugins": {
                "KeyManager": {"memory": {"plugin_data": {}}},
                "NodeAttestor": node_attestor or {"join_token": {"plugin_data": {}}},
                "WorkloadAttestor": {"unix": {"plugin_data": {}}},
            },
        }

    def write(self, kind, cfg, name=None):
        path = self.path(name or ("%s-%d.conf" % (kind, time.monotonic_ns())))
        path.write_text(C.render(kind, cfg))
        return path

    # --- processes ------------------------------------------------------------------------------------------
    def cli(self, program, *args, **kw):
        binary = SERVER_BIN if program == "spire-server" else AGENT_BIN
        return subprocess.run([sys.executable, binary] + [str(a) for a in args], capture_output=True, text=True,
                              env=kw.get("env", self.env), timeout=kw.get("timeout", 60))

    def start(self, program, conf, *args, socket_path=None, ready=True, env=None):
        binary = SERVER_BIN if program == "spire-server" else AGENT_BIN
        log = self.path("logs", "%s-%d.log" % (program, time.monotonic_ns()))
        with open(log, "w") as f:
            proc = subprocess.Popen([sys.executable, binary, "run", "-config", str(conf)] + [str(a) for a in args],
                                    stdout=f, stderr=subprocess.STDOUT, env=env or self.env)
        d = Daemon(proc, log, socket_path)
        self.daemons.append(d)
        if ready:
            d.wait_ready()
        return d

    def start_server(self, cfg, **kw):
        return self.start("spire-server", self.write("server", cfg), socket_path=cfg["server"]["socket_path"], **kw)

    def start_agent(self, cfg, *args, **kw):
        return self.start("spire-agent", self.write("agent", cfg), *args, socket_path=cfg["agent"]["socket_path"],
                          **kw)

    def server_cli(self, server_cfg, *args):
        r = self.cli("spire-server", *(list(args) + ["-socketPath", server_cfg["server"]["socket_path"]]))
        return r

    def server_json(self, server_cfg, *args):
        r = self.server_cli(server_cfg, *(list(args) + ["-output", "json"]))
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def write_bundle(self, server_cfg, agent_cfg):
        r = self.server_cli(server_cfg, "bundle", "show")
        assert r.returncode == 0, r.stderr
        Path(agent_cfg["agent"]["trust_bundle_path"]).write_text(r.stdout)

    def token(self, server_cfg, spiffe_id=None):
        args = ["token", "generate"] + (["-spiffeID", spiffe_id] if spiffe_id else [])
        return self.server_json(server_cfg, *args)["value"]

    def tpm_socket(self, name="tpm.sock"):
        """A listening unix socket standing in for swtpm's (SPIRE's tpm_device_path may be a socket)."""
        import threading
        path = self.path(name)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(path))
        s.listen(16)
        self.sockets.append(s)

        def accept():
            while True:
                try:
                    conn, _ = s.accept()
                except OSError:
                    return
                conn.close()
        threading.Thread(target=accept, daemon=True).start()
        return str(path)

    def cleanup(self):
        for d in self.daemons:
            d.stop()
        for s in self.sockets:
            s.close()
        shutil.rmtree(str(self.dir), ignore_errors=True)


# --- DevID material (no TPM needed: the simulator checks formats and chains, not TPM cryptography) -------------

def _name(cn):
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test"), x509.NameAttribute(NameOID.COMMON_NAME,
                                                                                                 cn)])


def _cert(subject_key, subject, issuer_key, issuer, ca, days=30):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(subject_key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    return b.sign(issuer_key, hashes.SHA256())


def pem(cert):
    from cryptography.hazmat.primitives.serialization import Encoding
    return cert.public_bytes(Encoding.PEM)


class DevIDMaterial(object):
    """root CA → intermediate CA → DevID leaf (ECC P-256) plus SPIRE-format TPM blobs for the leaf's key."""

    def __init__(self, base, cn="host1.example.org"):
        from cryptography.hazmat.primitives.asymmetric import ec
        from tpm2_pytss.constants import TPMA_OBJECT
        from tpm2_pytss.types import TPMT_PUBLIC
        base = Path(base)
        base.mkdir(parents=True, exist_ok=True)
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.inter_key = ec.generate_private_key(ec.SECP256R1())
        self.leaf_key = ec.generate_private_key(ec.SECP256R1())
        self.root = _cert(self.root_key, _name("Test DevID Root"), self.root_key, _name("Test DevID Root"), True)
        self.inter = _cert(self.inter_key, _name("Test DevID Issuing CA"), self.root_key, self.root.subject, True)
        self.leaf = _cert(self.leaf_key, _name(cn), self.inter_key, self.inter.subject, False)
        self.ca_path = base / "devid-ca.pem"
        self.ca_path.write_bytes(pem(self.root))
        self.cert_path = base / "devid.pem"
        self.cert_path.write_bytes(pem(self.leaf) + pem(self.inter))
        nums = self.leaf_key.public_key().public_numbers()
        pub = TPMT_PUBLIC.parse("ecc256:ecdsa-sha256",
                                objectAttributes=(TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.FIXEDTPM |
                                                  TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN |
                                                  TPMA_OBJECT.USERWITHAUTH))
        pub.unique.ecc.x = nums.x.to_bytes(32, "big")
        pub.unique.ecc.y = nums.y.to_bytes(32, "big")
        self.tpmt_public = pub.marshal()
        self.pub_path = base / "devid.pub"
        self.pub_path.write_bytes(self.tpmt_public)
        # a TPM2B_PRIVATE buffer without its size: integrity HMAC (TPM2B, 32 bytes) + encrypted sensitive area
        self.priv_path = base / "devid.priv"
        self.priv_path.write_bytes(b"\x00\x20" + os.urandom(32) + os.urandom(90))
        self.tpm_device_path = None  # set to a listening unix socket (a stand-in for swtpm's) by the fixture
        self.endorsement_ca_path = base / "ek-ca.pem"
        self.endorsement_ca_path.write_bytes(pem(self.root))

    def agent_plugin_data(self, **extra):
        d = {"devid_cert_path": str(self.cert_path), "devid_priv_path": str(self.priv_path),
             "devid_pub_path": str(self.pub_path), "tpm_device_path": self.tpm_device_path}
        d.update(extra)
        return d

    def server_plugin_data(self):
        return {"devid_ca_path": str(self.ca_path), "endorsement_ca_path": str(self.endorsement_ca_path)}
