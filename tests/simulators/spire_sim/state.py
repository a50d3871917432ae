"""Persistent state of the simulated SPIRE server, shared by the CLI commands and the daemon (daemon.py).

The state lives next to the server's API socket: ``<socket_path>.state.json``, guarded by an fcntl lock on
``<socket_path>.state.lock``. Schema::

    {
      "trust_domain": "example.org",           # the daemon sets it from the server config
      "entries": {id: entry},                   # the ``entry show -output json`` shape
      "agents": {spiffe_id: agent},             # the ``agent list -output json`` shape
      "evicted": {spiffe_id: unix_time},        # agents evicted since they last attested
      "tokens": {value: {"spiffe_id": str|None, "expires_at": int, "used": bool}},
      "ca": {"cert_pem": str, "key_pem": str}   # created on first use by ensure_ca()
    }

Test double only — never shipped.
"""

import contextlib
import fcntl
import json
import os
import time

DEFAULT_SOCKET_PATH = "/tmp/spire-server/private/api.sock"
DEFAULT_TRUST_DOMAIN = "example.org"


def state_path(socket_path):
    return "%s.state.json" % (socket_path or DEFAULT_SOCKET_PATH)


def _lock_path(socket_path):
    return "%s.state.lock" % (socket_path or DEFAULT_SOCKET_PATH)


def empty_state():
    return {"trust_domain": DEFAULT_TRUST_DOMAIN, "entries": {}, "agents": {}, "evicted": {}, "tokens": {}}


def _read(socket_path):
    try:
        with open(state_path(socket_path)) as f:
            data = json.load(f)
    except FileNotFoundError:
        return empty_state()
    base = empty_state()
    base.update(data)
    return base


def load(socket_path):
    """Read the state (a consistent snapshot, taken under a shared lock)."""
    os.makedirs(os.path.dirname(os.path.abspath(_lock_path(socket_path))), exist_ok=True)
    with open(_lock_path(socket_path), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        try:
            return _read(socket_path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write(socket_path, state):
    path = state_path(socket_path)
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        json.dump(state, f, separators=(",", ":"))
    os.replace(tmp, path)


def save(socket_path, state):
    os.makedirs(os.path.dirname(os.path.abspath(_lock_path(socket_path))), exist_ok=True)
    with open(_lock_path(socket_path), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            _write(socket_path, state)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def locked(socket_path):
    """Exclusive read-modify-write: yields the mutable state dict, saves it on a clean exit."""
    os.makedirs(os.path.dirname(os.path.abspath(_lock_path(socket_path))), exist_ok=True)
    with open(_lock_path(socket_path), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            state = _read(socket_path)
            yield state
            _write(socket_path, state)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# --- helpers for the daemon -------------------------------------------------------------------------------------

def split_id(spiffe_id):
    rest = spiffe_id[len("spiffe://"):]
    td, slash, path = rest.partition("/")
    return {"trust_domain": td, "path": slash + path if slash else ""}


def register_agent(state, spiffe_id, attestation_type, selectors, can_reattest, serial="", expires_at=0,
                   agent_version=""):
    """Record a successful node attestation. ``selectors``: list of {"type","value"} or "type:value" strings.

    Raises ValueError("... banned") when the agent is banned. Clears a previous eviction.
    """
    current = state["agents"].get(spiffe_id)
    if current and current.get("banned"):
        raise ValueError("failed to attest: agent is banned")
    sels = []
    for s in selectors or []:
        if isinstance(s, str):
            t, _, v = s.partition(":")
            s = {"type": t, "value": v}
        sels.append({"type": s["type"], "value": s["value"]})
    agent = {
        "id": split_id(spiffe_id),
        "attestation_type": attestation_type,
        "x509svid_serial_number": str(serial or ""),
        "x509svid_expires_at": str(int(expires_at or 0)),
        "selectors": sels,
        "banned": False,
        "can_reattest": bool(can_reattest),
        "agent_version": agent_version or "",
    }
    state["agents"][spiffe_id] = agent
    state.setdefault("evicted", {}).pop(spiffe_id, None)
    return agent


def consume_join_token(state, token, now=None):
    """Use a join token once: returns the agent ID ``spiffe://<td>/spire/agent/join_token/<token>``.

    Raises ValueError for an unknown, used or expired token (SPIRE deletes a token when it is used).
    """
    now = time.time() if now is None else now
    rec = state["tokens"].get(token)
    if rec is None:
        raise ValueError("failed to attest: join token does not exist or has already been used")
    if rec.get("used"):
        raise ValueError("failed to attest: join token does not exist or has already been used")
    if int(rec.get("expires_at", 0)) < now:
        raise ValueError("failed to attest: join token expired")
    rec["used"] = True
    return "spiffe://%s/spire/agent/join_token/%s" % (state.get("trust_domain") or DEFAULT_TRUST_DOMAIN, token)


def ensure_ca(state):
    """Create the trust domain's CA once (needs ``cryptography``); returns {"cert_pem", "key_pem"} or None."""
    if state.get("ca"):
        return state["ca"]
    try:
        import datetime
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        return None
    td = state.get("trust_domain") or DEFAULT_TRUST_DOMAIN
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE"),
                      x509.NameAttribute(NameOID.SERIAL_NUMBER, str(int(time.time())))])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://%s" % td)]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    state["ca"] = {
        "cert_pem": cert.public_bytes(serialization.Encoding.PEM).decode(),
        "key_pem": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode(),
    }
    return state["ca"]
