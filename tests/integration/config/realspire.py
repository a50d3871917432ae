# -*- coding: utf-8 -*-
"""The real SPIRE binaries as the oracle of spire_config's verdicts.

``run_verdict(kind, config, version)`` renders the configuration data with the collection's renderer (what
spire_config would write), starts ``spire-<kind> run -config <file>`` and decides, from the process itself:

* **accepted**: the daemon answers ``healthcheck`` on its ``socket_path`` (an agent only gets there after it
  attested, so an agent config is accepted only when the whole start-up, attestation included, went through);
* **refused**: the process exits before that, with its log (the reason SPIRE gives).

Each run gets its own ports, sockets and directories; every process started here is stopped here (by its own pid,
process group of its own). ``World`` holds what agent runs need: one real server per SPIRE version with
join_token and tpm_devid, its bundle, fresh join tokens, and a swtpm with a DevID made by the collection's
devid code and signed by a local CA (so tpm_devid rows attest for real).
"""

from __future__ import annotations

import copy
import datetime
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from support import spire as spire_support

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire import config as C

TD = "example.org"


def binary(kind, version):
    return str(spire_support.binaries(version) / ("spire-" + kind))


def connectable(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(1)
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


class Outcome:
    def __init__(self, accepted, rc, log, seconds):
        self.hung = accepted is None
        self.accepted = bool(accepted)
        self.rc = rc
        self.log = log
        self.seconds = seconds

    def __repr__(self):
        return "<%s rc=%s %.1fs>\n%s" % ("accepted" if self.accepted else "hung" if self.hung else "refused",
                                         self.rc, self.seconds,
                                         self.log[-3000:])


class Run:
    """One daemon process started from a configuration file."""

    def __init__(self, kind, conf_path, version, socket_path, workdir, args=()):
        self.kind = kind
        self.bin = binary(kind, version)
        self.socket_path = socket_path
        Path(workdir).mkdir(parents=True, exist_ok=True)
        self.log_path = Path(workdir) / ("%s.log" % kind)
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen([self.bin, "run", "-config", str(conf_path)] + list(args), stdout=logf,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, cwd=str(workdir))

    @property
    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def healthy(self):
        if not self.socket_path or not connectable(self.socket_path):
            return False
        out = subprocess.run([self.bin, "healthcheck", "-socketPath", str(self.socket_path)], capture_output=True,
                             text=True, timeout=30)
        return out.returncode == 0

    def wait(self, timeout):
        """True when healthy, False when the process exited, None when neither happened within ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if self.healthy():
                return True
            time.sleep(0.2)
        return None  # neither healthy nor exited: hung (SPIRE does this when it cannot bind its socket)

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode


def run_text(kind, text, version, socket_path, workdir, timeout=30, args=()):
    """Start spire-<kind> on ``text``; return an Outcome (the daemon is stopped before returning)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / ("%s.conf" % kind)
    conf.write_text(text)
    t0 = time.monotonic()
    run = Run(kind, conf, version, socket_path, workdir, args)
    try:
        ok = run.wait(timeout)
    finally:
        rc = run.stop()
    return Outcome(ok, rc, run.log, time.monotonic() - t0)


def run_verdict(kind, config, version, workdir, timeout=30):
    """Render ``config`` (no checks: the binary must see exactly what spire_config would write) and run it."""
    text = C.render(kind, config, check=False)
    return run_text(kind, text, version, config.get(kind, {}).get("socket_path"), workdir, timeout)


def our_verdict(kind, config, version=None, **kw):
    """(accepted, message, warnings) of spire_config's own checks (rules + files; no SPIRE binary involved)."""
    try:
        warnings = C.validate(kind, config, version=version, **kw)
        C.check_referenced_files(kind, config)
        C.render(kind, config)
    except C.SpireTpmError as e:
        return False, "%s | fix: %s" % (e.message, e.fix), []
    return True, "", warnings


def agent_svid_id(config, workdir):
    """The SPIFFE ID of the SVID the agent stored after attesting (agent-data.json), or None."""
    import base64
    import json
    from cryptography import x509
    data_dir = config["agent"].get("data_dir") or str(workdir)
    path = Path(data_dir) / "agent-data.json"
    if not path.exists():
        return None
    pem = base64.b64decode(json.loads(path.read_text())["svid"][0])
    cert = x509.load_pem_x509_certificate(pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.UniformResourceIdentifier)[0]


def validate_verdict(kind, config, version, workdir):
    """(accepted, output) of ``spire-<kind> validate -config <file>`` on the rendering."""
    conf = Path(workdir) / ("%s-validate.conf" % kind)
    conf.write_text(C.render(kind, config, check=False))
    out = subprocess.run([binary(kind, version), "validate", "-config", str(conf)], capture_output=True, text=True,
                         timeout=60, cwd=str(workdir))
    return out.returncode == 0, (out.stdout + out.stderr).strip()


# --------------------------------------------------------------------------------------------------------------
# DevID material: key made in swtpm by the collection's devid code, certificate from a local two-level CA.

def _ca_cert(subject_key, subject_cn, issuer_key, issuer_cn, ca):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
         .public_key(subject_key.public_key() if hasattr(subject_key, "public_key") else subject_key)
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    return b.sign(issuer_key, hashes.SHA256())


class DevID:
    """An RSA DevID in ``tpm`` (SPIRE blob format) with a certificate chain: leaf + intermediate in cert_path."""

    def __init__(self, tpm, base, cn="config-table.example.org"):
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import Encoding
        from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import devid_csr
        base = Path(base)
        base.mkdir(parents=True, exist_ok=True)
        self.pub_path, self.priv_path, csr_path = base / "devid.pub", base / "devid.priv", base / "devid.csr"
        res = devid_csr.ensure_devid_csr(tcti=tpm.tcti, key_type="rsa", pub_path=str(self.pub_path),
                                     priv_path=str(self.priv_path), csr_path=str(csr_path), common_name=cn)
        csr = x509.load_pem_x509_csr(res["csr"].encode())
        root_key, inter_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
        root = _ca_cert(root_key, "Config Table DevID Root", root_key, "Config Table DevID Root", True)
        inter = _ca_cert(inter_key, "Config Table DevID Intermediate", root_key, "Config Table DevID Root", True)
        leaf = _ca_cert(csr.public_key(), cn, inter_key, "Config Table DevID Intermediate", False)
        self.cert_path = base / "devid.crt"
        self.cert_path.write_bytes(leaf.public_bytes(Encoding.PEM) + inter.public_bytes(Encoding.PEM))
        self.ca_path = base / "devid-ca.pem"
        self.ca_path.write_bytes(root.public_bytes(Encoding.PEM))
        self.ek_ca_path = base / "ek-ca.pem"
        self.ek_ca_path.write_bytes(Path(tpm.root_ca).read_bytes() + Path(tpm.intermediate_ca).read_bytes())
        self.tpm_device_path = str(tpm.sock)

    def agent_plugin_data(self):
        return {"devid_cert_path": str(self.cert_path), "devid_priv_path": str(self.priv_path),
                "devid_pub_path": str(self.pub_path), "tpm_device_path": self.tpm_device_path}

    def server_plugin_data(self):
        return {"devid_ca_path": str(self.ca_path), "endorsement_ca_path": str(self.ek_ca_path)}


# --------------------------------------------------------------------------------------------------------------
# Configurations with their own ports, sockets and directories

class World:
    """Per-test-module scratch space plus, per SPIRE version, one running server for the agent rows."""

    def __init__(self, base, devid=None):
        self.base = Path(base)
        self.devid = devid
        self.servers = {}
        self.sockdirs = []
        self.n = 0

    def workdir(self, name="run"):
        self.n += 1
        d = self.base / ("%s-%03d" % (name, self.n))
        d.mkdir(parents=True)
        return d

    def sockdir(self):
        d = tempfile.mkdtemp(prefix="spc-", dir="/tmp")
        self.sockdirs.append(d)
        return d

    def server_config(self, workdir=None):
        workdir = workdir or self.workdir("server")
        data = workdir / "data"
        data.mkdir(exist_ok=True)
        return {
            "server": {"trust_domain": TD, "bind_address": "127.0.0.1", "bind_port": spire_support.free_port(),
                       "data_dir": str(data), "socket_path": os.path.join(self.sockdir(), "api.sock"),
                       "log_level": "DEBUG"},
            "plugins": {
                "DataStore": {"sql": {"plugin_data": {"database_type": "sqlite3",
                                                      "connection_string": str(data / "datastore.sqlite3")}}},
                "KeyManager": {"memory": {"plugin_data": {}}},
                "NodeAttestor": {"join_token": {"plugin_data": {}}},
            },
        }

    def server(self, version):
        """The running server agent rows attest to (join_token + tpm_devid when a DevID is available)."""
        if version not in self.servers:
            na = {"join_token": {}}
            if self.devid is not None:
                na["tpm_devid"] = self.devid.server_plugin_data()
            srv = spire_support.SpireServer(self.workdir("shared-server-%s" % version), version=version,
                                            node_attestors=na, log_level="INFO")
            self.servers[version] = srv
            srv.start()
            (srv.dir / "bundle.pem").write_text(srv.bundle_pem())
        return self.servers[version]

    def agent_config(self, version, workdir=None, node_attestor="join_token"):
        """An agent config for ``version``'s shared server; join_token rows carry a fresh token in the config."""
        srv = self.server(version)
        workdir = workdir or self.workdir("agent")
        data = workdir / "data"
        data.mkdir(exist_ok=True)
        section = {"trust_domain": TD, "server_address": "127.0.0.1", "server_port": srv.port,
                   "data_dir": str(data), "socket_path": os.path.join(self.sockdir(), "api.sock"),
                   "trust_bundle_path": str(srv.dir / "bundle.pem"), "log_level": "DEBUG"}
        if node_attestor == "join_token":
            section["join_token"] = srv.token()
            na = {"join_token": {"plugin_data": {}}}
        else:
            na = {"tpm_devid": {"plugin_data": self.devid.agent_plugin_data()}}
        return {
            "agent": section,
            "plugins": {
                "KeyManager": {"memory": {"plugin_data": {}}},
                "NodeAttestor": na,
                "WorkloadAttestor": {"unix": {"plugin_data": {}}},
            },
        }

    def cleanup(self):
        for srv in self.servers.values():
            srv.cleanup()
        for d in self.sockdirs:
            shutil.rmtree(d, ignore_errors=True)


def mutated(config, mutate):
    cfg = copy.deepcopy(config)
    mutate(cfg)
    return cfg
