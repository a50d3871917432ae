# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""step-ca HTTP API client (stdlib ``urllib`` + ``ssl`` only).

Trust is bootstrapped like ``step ca bootstrap --fingerprint``: ``GET /root/{fp}`` (the only unverified call), the
returned root's SHA-256 over DER must equal the pinned fingerprint, and every later call verifies TLS against that
root alone. Errors become ``SpireTpmError`` with cause and fix; in particular a lifetime above the provisioner's cap
is explained (never silently accepted as a shorter certificate).

Imports nothing from Ansible: the on-host renewal job uses it too.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import errno
import hashlib
import json
import re
import socket
import ssl

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca.jwe import require_cryptography

try:
    from urllib.error import HTTPError, URLError
    from urllib.parse import quote, urlsplit
    from urllib.request import HTTPSHandler, Request, build_opener
except ImportError:  # pragma: no cover - Python 2 is not supported
    raise

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
except ImportError:  # pragma: no cover - require_cryptography() reports it
    pass

# How far the returned notAfter may fall short of what was asked (clock skew, CA rounding).
NOT_AFTER_TOLERANCE = datetime.timedelta(minutes=5)
_CAP_RE = re.compile(r"requested duration of (\S+) is more than the authorized maximum certificate duration of "
                     r"([0-9hms.]*[0-9hms])")
_MIN_RE = re.compile(r"requested duration of (\S+) is less than the authorized minimum certificate duration of "
                     r"([0-9hms.]*[0-9hms])")

UNAUTHORIZED_HINTS = {
    "sign": ("step-ca refused the one-time token (HTTP 401)",
             "tokens are single use and expire after 5 minutes: a replayed, expired or foreign token, a token signed "
             "by another provisioner key, a wrong provisioner_name, or an 'aud' that is not this CA's /1.0/sign URL "
             "all end here (the CA's log names which); mint a fresh token or check provisioner_name/password"),
    "renew": ("step-ca refused to renew the certificate (HTTP 401)",
              "the certificate was revoked, has expired beyond the provisioner's allowRenewalAfterExpiry, renewal is "
              "disabled on the provisioner (disableRenewal), or the renewal token was replayed (the CA's log names "
              "which); a revoked or expired DevID needs a new certificate: remove cert_path (or run state=absent) and "
              "issue again with the provisioner"),
    "revoke": ("step-ca refused the revocation token (HTTP 401)",
               "mint a fresh token (single use, 5 minutes) with the provisioner that issued the certificate"),
}


def fingerprint_of_der(der):
    return hashlib.sha256(der).hexdigest()


def normalize_fingerprint(fp):
    fp = (fp or "").strip().lower().replace(":", "")
    if not re.match(r"^[0-9a-f]{64}$", fp):
        raise SpireTpmError("root_fingerprint %r is not a SHA-256 fingerprint (64 hex digits)" % (fp,),
                            "use the output of 'step certificate fingerprint root_ca.crt' on the CA")
    return fp


def format_duration(seconds):
    """Seconds → a Go duration string step-ca accepts, e.g. 7776000 → '2160h'."""
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    out = ""
    if h:
        out += "%dh" % h
    if m:
        out += "%dm" % m
    if s or not out:
        out += "%ds" % s
    return out


_DUR_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|us|ns|h|m|s|d|w)")


def parse_duration(text, what="duration"):
    """'2160h', '90d', '1h30m', '3600s' or a number of seconds → seconds (int)."""
    if isinstance(text, (int, float)):
        return int(text)
    t = str(text).strip().replace("µs", "us")
    if t.isdigit():
        return int(t)
    mult = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6, "ns": 1e-9}
    pos, total = 0, 0.0
    for m in _DUR_RE.finditer(t):
        if m.start() != pos:
            break
        total += float(m.group(1)) * mult[m.group(2)]
        pos = m.end()
    if not t or pos != len(t):
        raise SpireTpmError("%s %r is not a duration" % (what, text),
                            "write it like '2160h' (90 days), '90d', '30d12h' or a number of seconds")
    return int(total)


def _utc(dt):
    return dt if dt.tzinfo else dt.replace(tzinfo=datetime.timezone.utc)


def not_after_of(cert):
    return _utc(getattr(cert, "not_valid_after_utc", None) or cert.not_valid_after)


def not_before_of(cert):
    return _utc(getattr(cert, "not_valid_before_utc", None) or cert.not_valid_before)


def _without_backdate(go_duration):
    """step-ca reports limits and requests with its 1-minute backdate added ('2160h1m0s'); show what to configure."""
    try:
        seconds = parse_duration(go_duration)
    except SpireTpmError:
        return go_duration
    return format_duration(seconds - 60) if seconds > 60 else go_duration


class StepCAClient:
    """A step-ca instance pinned by its root fingerprint."""

    def __init__(self, url, root_fingerprint, timeout=15):
        require_cryptography()
        parts = urlsplit(url or "")
        if parts.scheme != "https" or not parts.hostname:
            raise SpireTpmError("ca_url %r is not an https:// URL" % (url,),
                                "use the CA's address as step's ca-url, e.g. https://ca.example.net:9000")
        self.url = "%s://%s" % (parts.scheme, parts.netloc)
        self.fingerprint = normalize_fingerprint(root_fingerprint)
        self.timeout = timeout
        self._root_pem = None
        self._opener = None

    # --- transport -------------------------------------------------------------------------------------------
    def _unreachable(self, reason):
        return SpireTpmError(
            "step-ca at %s is not reachable: %s" % (self.url, reason),
            "check that step-ca is running and listening there (curl -k %s/health), that ca_url is right and "
            "no firewall is in the way; nothing was changed on this host" % self.url)

    def _request(self, method, path, body=None, headers=None, context=None, action=None):
        ctx = context if context is not None else self._verified_context()
        data = None
        hdrs = {"Accept": "application/json", "User-Agent": "trustroot.spire_tpm"}
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        req = Request(self.url + path, data=data, headers=hdrs, method=method)
        opener = build_opener(HTTPSHandler(context=ctx))
        try:
            resp = opener.open(req, timeout=self.timeout)
            status, raw = resp.status, resp.read()
        except HTTPError as e:
            raw = e.read() if hasattr(e, "read") else b""
            raise self._http_error(e.code, raw, action or path)
        except URLError as e:
            reason = e.reason
            if isinstance(reason, ssl.SSLCertVerificationError) or isinstance(reason, ssl.CertificateError):
                raise SpireTpmError(
                    "the TLS certificate of %s does not verify against the root pinned by root_fingerprint %s (%s)"
                    % (self.url, self.fingerprint, getattr(reason, "verify_message", reason)),
                    "make sure ca_url points at the CA whose root has this fingerprint and that the CA's dnsNames "
                    "include the host name used in ca_url")
            if isinstance(reason, ssl.SSLError):
                raise self._unreachable("TLS handshake failed (%s)" % reason)
            if isinstance(reason, OSError) and reason.errno == errno.ECONNREFUSED:
                raise self._unreachable("connection refused")
            raise self._unreachable(str(reason))
        except (socket.timeout, TimeoutError):
            raise self._unreachable("no answer within %d s" % self.timeout)
        except (ConnectionError, OSError) as e:
            raise self._unreachable(str(e))
        try:
            return status, json.loads(raw.decode("utf-8")) if raw else {}
        except (ValueError, UnicodeDecodeError):
            raise SpireTpmError("step-ca at %s answered %s with something that is not JSON" % (self.url, path),
                                "check that ca_url points at step-ca and not at a proxy or another service")

    def _http_error(self, code, raw, action):
        try:
            body = json.loads(raw.decode("utf-8"))
            message = body.get("message") or body.get("detail") or raw.decode("utf-8", "replace")
        except (ValueError, UnicodeDecodeError, AttributeError):
            message = raw.decode("utf-8", "replace") if raw else ""
        message = (message or "").strip()
        cap = _CAP_RE.search(message)
        if cap:
            return SpireTpmError(
                "step-ca refused the requested certificate lifetime: %s" % message,
                "the provisioner caps certificates at %s; raise claims.maxTLSCertDuration (and "
                "defaultTLSCertDuration) on the DevID provisioner to at least %s, or lower devid_validity"
                % (_without_backdate(cap.group(2)), _without_backdate(cap.group(1))), http_status=code,
                ca_message=message)
        low = _MIN_RE.search(message)
        if low:
            return SpireTpmError(
                "step-ca refused the requested certificate lifetime: %s" % message,
                "the provisioner requires at least %s; raise devid_validity or lower claims.minTLSCertDuration"
                % low.group(2), http_status=code, ca_message=message)
        if code == 401 and action in UNAUTHORIZED_HINTS:
            cause, fix = UNAUTHORIZED_HINTS[action]
            return SpireTpmError("%s: %s" % (cause, message), fix, http_status=code, ca_message=message)
        if code == 403:
            return SpireTpmError("step-ca forbade the %s request (HTTP 403): %s" % (action, message),
                                 "the token and the CSR must agree: the CSR's common name must be the token's 'sub' "
                                 "and its SANs must be in the token's 'sans'; the provisioner's policy and claims "
                                 "must allow the request", http_status=code, ca_message=message)
        if code == 404:
            return SpireTpmError("step-ca has no %s endpoint or object (HTTP 404): %s" % (action, message),
                                 "check ca_url (it must be the CA's base URL) and the provisioner name",
                                 http_status=code, ca_message=message)
        return SpireTpmError("step-ca answered the %s request with HTTP %d: %s" % (action, code, message),
                             "see the CA's log for details", http_status=code, ca_message=message)

    # --- trust -----------------------------------------------------------------------------------------------
    def root_pem(self):
        """The pinned root (PEM text), fetched once and checked against the fingerprint."""
        if self._root_pem is None:
            insecure = ssl.create_default_context()
            insecure.check_hostname = False
            insecure.verify_mode = ssl.CERT_NONE
            try:
                dummy, body = self._request("GET", "/root/%s" % quote(self.fingerprint), context=insecure,
                                            action="root")
            except SpireTpmError as e:
                if e.details.get("http_status") == 404:
                    raise SpireTpmError(
                        "step-ca at %s has no root with fingerprint %s" % (self.url, self.fingerprint),
                        "verify root_fingerprint with the CA operator ('step certificate fingerprint root_ca.crt' on "
                        "the CA) and that ca_url points at the intended CA", http_status=404)
                raise
            pem = body.get("ca") or ""
            try:
                cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
            except ValueError:
                raise SpireTpmError("step-ca at %s returned no PEM root for %s" % (self.url, self.fingerprint),
                                    "check ca_url and root_fingerprint")
            got = fingerprint_of_der(cert.public_bytes(serialization.Encoding.DER))
            if got != self.fingerprint:
                raise SpireTpmError(
                    "the root served by %s has fingerprint %s, not the pinned %s" % (self.url, got, self.fingerprint),
                    "someone may be impersonating the CA; verify root_fingerprint with the CA operator "
                    "('step certificate fingerprint root_ca.crt')")
            self._root_pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
        return self._root_pem

    def _verified_context(self):
        ctx = ssl.create_default_context(cadata=self.root_pem())
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    # --- API -------------------------------------------------------------------------------------------------
    def health(self):
        dummy, body = self._request("GET", "/health", action="health")
        if body.get("status") != "ok":
            raise SpireTpmError("step-ca at %s reports status %r" % (self.url, body.get("status")),
                                "check the CA's log")
        return True

    def provisioners(self):
        out, cursor = [], ""
        for dummy in range(100):
            path = "/provisioners" + ("?cursor=%s" % quote(cursor) if cursor else "")
            dummy, body = self._request("GET", path, action="provisioners")
            out.extend(body.get("provisioners") or [])
            cursor = body.get("nextCursor") or ""
            if not cursor:
                break
        return out

    def provisioner(self, name):
        found = [p for p in self.provisioners() if p.get("name") == name]
        if not found:
            raise SpireTpmError("step-ca has no provisioner named %r" % name,
                                "list them with 'step ca provisioner list' and fix provisioner_name")
        jwk = [p for p in found if p.get("type") == "JWK"]
        if not jwk:
            raise SpireTpmError("provisioner %r is of type %s, not JWK" % (name, found[0].get("type")),
                                "point provisioner_name at a JWK provisioner (or hand in a token)")
        return jwk[0]

    def _chain(self, body, what):
        pems = body.get("certChain") or [p for p in (body.get("crt"), body.get("ca")) if p]
        try:
            return [x509.load_pem_x509_certificate(p.encode("ascii")) for p in pems]
        except (ValueError, AttributeError):
            raise SpireTpmError("step-ca's %s answer holds no valid certificate chain" % what, "see the CA's log")

    def sign(self, csr_pem, ott, validity_seconds=None, now=None):
        """POST /1.0/sign → certificate chain (cryptography objects, leaf first)."""
        body = {"csr": csr_pem if isinstance(csr_pem, str) else csr_pem.decode("ascii"), "ott": ott}
        if validity_seconds:
            body["notAfter"] = format_duration(validity_seconds)
        now = now or datetime.datetime.now(datetime.timezone.utc)
        dummy, resp = self._request("POST", "/1.0/sign", body=body, action="sign")
        chain = self._chain(resp, "sign")
        if validity_seconds:
            check_lifetime(chain[0], now, validity_seconds)
        return chain

    def renew(self, bearer_token, expected_seconds=None, now=None):
        """POST /1.0/renew with a Bearer token signed by the certificate's key → new chain, leaf first."""
        now = now or datetime.datetime.now(datetime.timezone.utc)
        dummy, resp = self._request("POST", "/1.0/renew", body={},
                                    headers={"Authorization": "Bearer " + bearer_token}, action="renew")
        chain = self._chain(resp, "renew")
        if expected_seconds:
            check_lifetime(chain[0], now, expected_seconds)
        return chain

    def revoke(self, serial, ott, reason_code=0, reason=""):
        body = {"serial": str(serial), "ott": ott, "reasonCode": int(reason_code), "reason": reason,
                "passive": True}
        dummy, resp = self._request("POST", "/1.0/revoke", body=body, action="revoke")
        if resp.get("status") != "ok":
            raise SpireTpmError("step-ca did not confirm the revocation of serial %s (%r)" % (serial, resp),
                                "see the CA's log")
        return True


def check_lifetime(leaf, asked_at, validity_seconds):
    """Refuse a certificate shorter than asked (step-ca never shortens silently, but a proxy/old CA might)."""
    want = _utc(asked_at) + datetime.timedelta(seconds=int(validity_seconds))
    got = not_after_of(leaf)
    if got + NOT_AFTER_TOLERANCE < want:
        raise SpireTpmError(
            "step-ca issued a certificate valid until %s, but %s was asked (until about %s)"
            % (got.isoformat(), format_duration(validity_seconds), want.isoformat()),
            "the provisioner's claims cap the lifetime: raise claims.maxTLSCertDuration (and "
            "defaultTLSCertDuration) on the DevID provisioner to at least %s, or lower devid_validity"
            % format_duration(validity_seconds))
    return got
