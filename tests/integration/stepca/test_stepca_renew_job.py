"""renew_if_due (the on-host renewal job's library entry) against the real step-ca with a software key."""

from __future__ import annotations

import os
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca import issuance
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca.client import StepCAClient
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca.renew import renew_if_due

pytestmark = pytest.mark.stepca


def _issue(ca, client, path, cn="soft.devid.test", validity=30 * 86400):
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])).sign(key, hashes.SHA256()))
    prov = issuance.Provisioner(client, ca.provisioner_name, ca.provisioner_password)
    chain = issuance.issue_step_ca(client, csr.public_bytes(serialization.Encoding.PEM).decode(), validity, prov)
    path.write_bytes(issuance.chain_pem(chain))
    os.chmod(path, 0o640)
    return key, chain


def test_renew_if_due_software_key(step_ca, tmp_path):
    client = StepCAClient(step_ca.url, step_ca.root_fingerprint)
    path = tmp_path / "devid.crt"
    key, chain = _issue(step_ca, client, path)
    res = renew_if_due(str(path), lambda: issuance.software_signer(key), client)
    assert res["action"] == "none" and res["changed"] is False
    assert path.read_bytes() == issuance.chain_pem(chain)
    res = renew_if_due(str(path), lambda: issuance.software_signer(key), client, renew_before="31d")
    assert res["action"] == "renewed" and res["serial"] != str(chain[0].serial_number)
    new = x509.load_pem_x509_certificates(path.read_bytes())
    assert new[0].public_key() == chain[0].public_key() and len(new) == 2
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640          # attributes kept

    # a wrong key: clear error, file untouched
    before = path.read_bytes()
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(SpireTpmError, match="does not belong to the certificate"):
        renew_if_due(str(path), lambda: issuance.software_signer(other), client, force=True)
    assert path.read_bytes() == before


def test_renew_token_replay_refused(step_ca, tmp_path):
    from ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca import token
    client = StepCAClient(step_ca.url, step_ca.root_fingerprint)
    key, chain = _issue(step_ca, client, tmp_path / "c.crt", cn="replay.devid.test")
    bearer = token.renew_token(key, chain, step_ca.url)
    client.renew(bearer)
    with pytest.raises(SpireTpmError, match="refused to renew"):
        client.renew(bearer)
    # leaf alone in x5cInsecure (no intermediate) is refused by step-ca: the whole chain is needed
    with pytest.raises(SpireTpmError, match="401"):
        client.renew(token.renew_token(key, chain[:1], step_ca.url))


def test_tls_is_verified_against_the_pinned_root_on_every_call(step_ca, step_ca_factory):
    other = step_ca_factory()
    client = StepCAClient(step_ca.url, step_ca.root_fingerprint)
    assert client.health()
    client.url = other.url          # same pinned root, a server whose TLS chains to another root
    with pytest.raises(SpireTpmError, match="does not verify against the root pinned"):
        client.health()


def test_root_not_matching_the_fingerprint_is_refused(tmp_path):
    """A server that answers /root/<fp> with another certificate (an impersonator) is refused."""
    import datetime
    import http.server
    import json
    import ssl
    import threading
    from tests.support.stepca import free_port, make_ca_cert

    key = ec.generate_private_key(ec.SECP256R1())
    fake_root = make_ca_cert("Impersonator", key)
    pem = fake_root.public_bytes(serialization.Encoding.PEM).decode()
    now = datetime.datetime.now(datetime.timezone.utc)
    import ipaddress
    tls_cert = (x509.CertificateBuilder().subject_name(fake_root.subject).issuer_name(fake_root.subject)
                .public_key(key.public_key()).serial_number(5).not_valid_before(now)
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                               critical=False).sign(key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(tls_cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"ca": pem} if self.path.startswith("/root/") else {"status": "ok"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    port = free_port()
    srv = http.server.HTTPServer(("127.0.0.1", port), H)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        pinned = "12" * 32
        with pytest.raises(SpireTpmError, match="has fingerprint [0-9a-f]{64}, not the pinned %s" % pinned):
            StepCAClient("https://127.0.0.1:%d" % port, pinned).health()
    finally:
        srv.shutdown()
        srv.server_close()
