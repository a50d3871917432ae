#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Service-to-service mTLS with X.509-SVIDs, standard library only (a test workload of molecule `default`).

Each side loads what ``spire-agent api fetch x509 -write DIR`` wrote (svid.0.pem, svid.0.key, bundle.0.pem), requires
the peer's certificate to chain to the SPIRE trust bundle (OpenSSL's verification, both directions), then
authorises the peer by its SPIFFE ID: the peer's leaf must carry exactly one URI SAN, equal to --expect. No hostname
check: in SPIFFE the identity is the URI SAN, not a DNS name.

    serve   --dir DIR --listen ADDR:PORT --expect SPIFFE_ID [--ready FILE] [--timeout S]
    connect --dir DIR --to ADDR:PORT --expect SPIFFE_ID [--timeout S]

One JSON line on stdout: {"ok": bool, "role": ..., "peer_id": ..., "tls": ..., "error": ...}. Exit codes: 0 the peer
was authorised and the exchange completed; 2 TLS/verification or network failure; 3 the peer's SPIFFE ID is not the
expected one (connection dropped before any application data is sent); 4 the other side refused us.
"""

import argparse
import json
import os
import socket
import ssl
import sys


def context(server, d):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(os.path.join(d, "svid.0.pem"), os.path.join(d, "svid.0.key"))
    ctx.load_verify_locations(cafile=os.path.join(d, "bundle.0.pem"))
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def peer_id(tls):
    """The peer's SPIFFE ID (its only URI SAN), or None when the certificate carries none or several."""
    cert = tls.getpeercert() or {}
    uris = [v for k, v in cert.get("subjectAltName", ()) if k == "URI"]
    return uris[0] if len(uris) == 1 and uris[0].startswith("spiffe://") else None


def done(ok, code, **fields):
    fields["ok"] = ok
    print(json.dumps(fields, sort_keys=True), flush=True)
    sys.exit(code)


def addr(s):
    host, _, port = s.rpartition(":")
    return host, int(port)


def serve(a):
    ctx = context(True, a.dir)
    lsock = socket.create_server(addr(a.listen))
    lsock.settimeout(a.timeout)
    if a.ready:
        with open(a.ready, "w") as f:
            f.write("listening\n")
    try:
        raw, remote = lsock.accept()
    except socket.timeout:
        done(False, 2, role="server", error="no client within %ss" % a.timeout)
    raw.settimeout(a.timeout)
    try:
        tls = ctx.wrap_socket(raw, server_side=True)
    except (ssl.SSLError, OSError) as e:
        done(False, 2, role="server", remote=remote[0], error="TLS handshake failed: %s" % e)
    got, ver = peer_id(tls), tls.version()
    if got != a.expect:
        tls.close()
        done(False, 3, role="server", remote=remote[0], peer_id=got, tls=ver,
             error="client SPIFFE ID %s is not the authorised %s" % (got, a.expect))
    try:
        hello = tls.recv(256).decode(errors="replace").strip()
        if not hello:
            done(False, 4, role="server", peer_id=got, error="the client closed the connection (it refused us)")
        tls.sendall(("welcome %s\n" % got).encode())
        tls.close()
    except (ssl.SSLError, OSError) as e:
        done(False, 4, role="server", peer_id=got, error="the client dropped the connection: %s" % e)
    done(True, 0, role="server", remote=remote[0], peer_id=got, tls=ver, received=hello)


def connect(a):
    ctx = context(False, a.dir)
    try:
        raw = socket.create_connection(addr(a.to), timeout=a.timeout)
        tls = ctx.wrap_socket(raw)
    except (ssl.SSLError, OSError) as e:
        done(False, 2, role="client", error="TLS handshake failed: %s" % e)
    got, ver = peer_id(tls), tls.version()
    if got != a.expect:
        tls.close()
        done(False, 3, role="client", peer_id=got, tls=ver,
             error="server SPIFFE ID %s is not the authorised %s" % (got, a.expect))
    try:
        tls.sendall(b"hello\n")
        answer = tls.recv(256).decode(errors="replace").strip()
    except (ssl.SSLError, OSError) as e:
        done(False, 4, role="client", peer_id=got, error="the server dropped the connection: %s" % e)
    if not answer.startswith("welcome "):
        done(False, 4, role="client", peer_id=got, error="the server closed the connection (it refused us)")
    done(True, 0, role="client", peer_id=got, tls=ver, received=answer)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--listen", required=True)
    s.add_argument("--ready")
    c = sub.add_parser("connect")
    c.add_argument("--to", required=True)
    for x in (s, c):
        x.add_argument("--dir", required=True)
        x.add_argument("--expect", required=True)
        x.add_argument("--timeout", type=float, default=30)
    a = p.parse_args()
    serve(a) if a.cmd == "serve" else connect(a)


if __name__ == "__main__":
    main()
