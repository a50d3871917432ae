"""Helpers for the SPIRE CLI module tests against a REAL spire-server (tests/support/spire.py).

* ``Recorder``: a ``spire_server_bin`` that is a shell wrapper around the REAL binary: it appends its argv to a
  log and ``exec``s the real spire-server (same stdin, stdout, exit code). Tests read the log to count the CLI
  invocations a module made; the server answering is the real one. ``before_exec`` runs shell text first (used to
  stage a race: the server stays real, only the timing is arranged).
* ``raw_show(server)``: the server's own ``entry show -output json`` stdout exactly as printed; ``by_spiffe`` the
  parsed entries keyed by SPIFFE ID; ``seed`` creates entries through the real CLI (not through our code).
* ``DevID``: an RSA DevID made in a swtpm by the collection's devid code, certified by a throwaway two-level CA,
  so a real spire-agent attests with tpm_devid.
"""

import json
import stat
from pathlib import Path

SEP = "\x1f"


class Recorder:
    """A spire_server_bin that logs every invocation and then execs the real binary."""

    def __init__(self, base, server, before_exec=""):
        self.dir = Path(base)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = self.dir / "calls.log"
        self.log.write_text("")
        self.real = str(server.bin)
        self.path = self.dir / "spire-server"
        self.path.write_text(
            "#!/bin/bash\n"
            "(IFS=$'%s'; printf '%%s\\n' \"$*\") >> '%s'\n"
            "%s"
            "exec '%s' \"$@\"\n" % (SEP, self.log, before_exec, self.real))
        self.path.chmod(self.path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)

    def calls(self):
        return [line.split(SEP) for line in self.log.read_text().splitlines() if line]

    def words(self):
        """The subcommand of each call, e.g. [["entry", "show"], ["entry", "create"]]."""
        return [c[:2] for c in self.calls()]

    def reset(self):
        self.log.write_text("")


def opts_for(server, binary=None):
    """Module options pointing at ``server`` (``binary``: a Recorder path instead of the real binary)."""
    return {"spire_server_bin": str(binary or server.bin), "socket_path": str(server.socket_path)}


def raw_show(server):
    """``entry show -output json`` exactly as the real CLI prints it."""
    out = server.run("entry", "show", "-socketPath", server.socket_path, "-output", "json")
    assert out.returncode == 0, out.stderr
    return out.stdout


def sid(proto):
    return "spiffe://%s%s" % (proto["trust_domain"], proto["path"])


def by_spiffe(server):
    out = {}
    for e in json.loads(raw_show(server))["entries"]:
        out.setdefault(sid(e["spiffe_id"]), []).append(e)
    return out


def request(spiffe_id, parent_id, *selectors, **fields):
    """An entry in the CLI's ``entry create -data`` input shape (for seeding through the harness)."""
    req = {"spiffe_id": spiffe_id, "parent_id": parent_id,
           "selectors": [dict(zip(("type", "value"), s.split(":", 1))) for s in selectors]}
    req.update(fields)
    return req


def seed(server, reqs):
    results = server.create_entries(reqs)
    assert [r["status"]["code"] for r in results] == [0] * len(reqs), results
    return [r["entry"]["id"] for r in results]


def ca_pem(cn):
    """A self-signed CA certificate (PEM) for ``bundle set`` of a federated trust domain."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(Encoding.PEM).decode()


def bundle_set(server, trust_domain, tmp_path):
    pem = Path(tmp_path) / ("%s.pem" % trust_domain)
    pem.write_text(ca_pem(trust_domain))
    out = server.run("bundle", "set", "-id", "spiffe://" + trust_domain, "-path", str(pem),
                     "-socketPath", server.socket_path)
    assert out.returncode == 0, out.stdout + out.stderr




def _cert(public_key, cn, issuer_key, issuer_cn, ca):
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(issuer_key, hashes.SHA256()))


class DevID:
    """An RSA DevID in ``tpm`` (made by the collection's devid code, SPIRE blob format) with leaf + intermediate
    in ``cert_path``, its root in ``ca_path`` and the TPM's EK CA chain in ``ek_ca_path``."""

    def __init__(self, tpm, base, cn):
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import Encoding
        from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import devid_csr
        base = Path(base)
        base.mkdir(parents=True, exist_ok=True)
        self.cn = cn
        self.pub_path, self.priv_path, csr_path = base / "devid.pub", base / "devid.priv", base / "devid.csr"
        res = devid_csr.ensure_devid_csr(tcti=tpm.tcti, key_type="rsa", pub_path=str(self.pub_path),
                                     priv_path=str(self.priv_path), csr_path=str(csr_path), common_name=cn)
        csr = x509.load_pem_x509_csr(res["csr"].encode())
        root_key, inter_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
        root = _cert(root_key.public_key(), "Entry Test DevID Root", root_key, "Entry Test DevID Root", True)
        inter = _cert(inter_key.public_key(), "Entry Test DevID Intermediate", root_key, "Entry Test DevID Root",
                      True)
        self.leaf = _cert(csr.public_key(), cn, inter_key, "Entry Test DevID Intermediate", False)
        self.cert_path = base / "devid.crt"
        self.cert_path.write_bytes(self.leaf.public_bytes(Encoding.PEM) + inter.public_bytes(Encoding.PEM))
        self.ca_path = base / "devid-ca.pem"
        self.ca_path.write_bytes(root.public_bytes(Encoding.PEM))
        self.ek_ca_path = base / "ek-ca.pem"
        self.ek_ca_path.write_bytes(Path(tpm.root_ca).read_bytes() + Path(tpm.intermediate_ca).read_bytes())
        self.tpm_device_path = str(tpm.sock)

    def agent_id(self, trust_domain="example.org"):
        import hashlib
        from cryptography.hazmat.primitives.serialization import Encoding
        return "spiffe://%s/spire/agent/tpm_devid/%s" % (
            trust_domain, hashlib.sha1(self.leaf.public_bytes(Encoding.DER)).hexdigest())

    def agent_plugin_data(self):
        return {"devid_cert_path": str(self.cert_path), "devid_priv_path": str(self.priv_path),
                "devid_pub_path": str(self.pub_path), "tpm_device_path": self.tpm_device_path}

    def server_plugin_data(self):
        return {"devid_ca_path": str(self.ca_path), "endorsement_ca_path": str(self.ek_ca_path)}


def wait_for(predicate, timeout=30.0, interval=0.25):
    """Poll ``predicate`` until it returns a truthy value (returned) or ``timeout`` passes (None)."""
    import time
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)
