"""The ``spire-server`` CLI commands that talk to the server API (entry, agent, token, bundle), simulated.

Behaviour follows the collection's SPIRE notes (facts/spire.md): protojson output with proto field names and int64
fields as strings, the input shape of ``entry create|update -data`` (different from ``entry show``), results in
request order with a non-OK result echoing the request, ``-output json`` exiting 0 even when results failed (pretty:
exit 1), AlreadyExists (6) for a similar entry, NotFound (5), InvalidArgument (3).

Deliberately independent of the collection's own module_utils (it is the oracle the modules are tested against).

Test-only fault injection (never part of SPIRE):
  SPIRE_SIM_TEST_RACE_CREATE="spiffe://td/a,spiffe://td/b" — on the first ``entry create`` request that contains one
  of these SPIFFE IDs, a similar entry is inserted just before the batch is processed (as if another client had
  created it between the caller's ``entry show`` and its ``entry create``), so that item fails with AlreadyExists.
"""

import json
import os
import re
import socket
import sys
import time
import uuid

from . import state as st
from .flags import FlagError, FlagSet

_TD_RE = re.compile(r"^[a-z0-9._-]+$")
_SEG_RE = re.compile(r"^[A-Za-z0-9._-]+$")


class CliError(Exception):
    """Printed as ``Error: <msg>`` on stderr, exit 1."""


class Out(object):
    def __init__(self, output):
        self.json = output == "json"

    def emit(self, obj, pretty):
        if self.json:
            sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
        else:
            sys.stdout.write(pretty)


# --- SPIFFE IDs (independent implementation of the spec's rules) ---------------------------------------------------

def id_problem(value):
    if not isinstance(value, str) or not value:
        return "cannot be empty"
    if not value.startswith("spiffe://"):
        return "scheme is missing or invalid"
    rest = value[len("spiffe://"):]
    td, slash, path = rest.partition("/")
    if not td:
        return "trust domain is missing"
    if not _TD_RE.match(td):
        return "trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores"
    if not slash:
        return None
    if path == "":
        return "path cannot have a trailing slash"
    for seg in path.split("/"):
        if seg == "":
            return "path cannot contain empty segments"
        if seg in (".", ".."):
            return "path cannot contain dot segments"
        if not _SEG_RE.match(seg):
            return "path segment characters are limited to letters, numbers, dots, dashes, and underscores"
    if path.endswith("/"):
        return "path cannot have a trailing slash"
    return None


def id_proto(value):
    return st.split_id(value)


def id_str(proto):
    return "spiffe://%s%s" % (proto.get("trust_domain", ""), proto.get("path", ""))


def parse_selector(text):
    t, sep, v = text.partition(":")
    if not sep or not t or not v:
        raise CliError("selector \"%s\" must be formatted as type:value" % text)
    return {"type": t, "value": v}


def selector_key(sels):
    return tuple(sorted("%s:%s" % (s["type"], s["value"]) for s in sels))


# --- plumbing ------------------------------------------------------------------------------------------------------

def check_socket(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(path)
    except OSError as e:
        reason = {2: "no such file or directory", 111: "connection refused", 13: "permission denied"}.get(
            e.errno, (e.strerror or str(e)).lower())
        raise CliError('rpc error: code = Unavailable desc = connection error: desc = "transport: Error while '
                       'dialing: dial unix %s: connect: %s"' % (path, reason))
    finally:
        s.close()


def read_data(path):
    try:
        if path == "-":
            return sys.stdin.read()
        with open(path) as f:
            return f.read()
    except OSError as e:
        raise CliError("open %s: %s" % (path, (e.strerror or "").lower()))


def lower_keys(obj):
    """Go's encoding/json matches object keys to struct tags case-insensitively."""
    return dict((k.lower(), v) for k, v in obj.items())


# --- entries -------------------------------------------------------------------------------------------------------

def request_to_entry(req, td):
    """One item of the ``-data`` input shape → (entry in show shape, error message or None)."""
    r = lower_keys(req)
    spiffe_id = r.get("spiffe_id", "")
    parent_id = r.get("parent_id", "")
    if not isinstance(spiffe_id, str) or not isinstance(parent_id, str):
        raise CliError("json: cannot unmarshal object into Go struct field RegistrationEntry.spiffe_id of type string")
    sels = r.get("selectors") or []
    fed = r.get("federates_with") or []
    dns = r.get("dns_names") or []
    problem = None
    p = id_problem(parent_id)
    if p:
        problem = "failed to convert entry: invalid parent ID: %s" % p
    else:
        p = id_problem(spiffe_id)
        if p:
            problem = "failed to convert entry: invalid spiffe ID: %s" % p
    if problem is None and not sels:
        problem = "failed to convert entry: selector list is empty"
    if problem is None:
        for s in sels:
            s = lower_keys(s)
            if not s.get("type"):
                problem = "failed to convert entry: missing selector type"
                break
            if ":" in s["type"]:
                problem = "failed to convert entry: selector type contains ':'"
                break
            if not s.get("value"):
                problem = "failed to convert entry: missing selector value"
                break
    fed_names = []
    if problem is None:
        for f in fed:
            name = f[len("spiffe://"):] if isinstance(f, str) and f.startswith("spiffe://") else f
            if not isinstance(name, str) or not name or not _TD_RE.match(name):
                problem = "failed to convert entry: invalid federated trust domain: %r" % (f,)
                break
            fed_names.append(name)
    for key in ("x509_svid_ttl", "jwt_svid_ttl"):
        if problem is None and int(r.get(key) or 0) < 0:
            problem = "failed to convert entry: %s cannot be negative" % key.replace("_svid_ttl", "SvidTtl").replace(
                "x509", "X509").replace("jwt", "JWT")
    if problem is None and spiffe_id and id_problem(spiffe_id) is None:
        if st.split_id(spiffe_id)["trust_domain"] != td:
            problem = "failed to convert entry: invalid spiffe ID: \"%s\" is not a member of trust domain \"%s\"" % (
                spiffe_id, td)
    entry = {
        "id": r.get("entry_id") or "",
        "spiffe_id": id_proto(spiffe_id) if id_problem(spiffe_id) is None else {"trust_domain": "", "path": ""},
        "parent_id": id_proto(parent_id) if id_problem(parent_id) is None else {"trust_domain": "", "path": ""},
        "selectors": [{"type": lower_keys(s).get("type", ""), "value": lower_keys(s).get("value", "")}
                      for s in sels],
        "x509_svid_ttl": int(r.get("x509_svid_ttl") or 0),
        "jwt_svid_ttl": int(r.get("jwt_svid_ttl") or 0),
        "federates_with": fed_names,
        "hint": r.get("hint") or "",
        "admin": bool(r.get("admin")),
        "created_at": "0",
        "downstream": bool(r.get("downstream")),
        "expires_at": str(int(r.get("entryexpiry") or 0)),
        "dns_names": list(dns),
        "revision_number": "0",
        "store_svid": bool(r.get("store_svid")),
        "additional_attributes": {"disable_x509_svid_prefetch": False, "jwt_svid_include_jti": False},
    }
    return entry, problem


def entry_identity(entry):
    return (id_str(entry["spiffe_id"]), id_str(entry["parent_id"]), selector_key(entry["selectors"]))


def match_selectors(have, want, mode):
    have = set(have)
    want = set(want)
    if mode == "exact":
        return have == want
    if mode == "any":
        return bool(have & want)
    if mode == "superset":
        return have >= want
    if mode == "subset":
        return have <= want
    raise CliError("match behavior %r unknown" % mode)


def status(code, message):
    return {"code": code, "message": message}


CODES = {0: "OK", 3: "InvalidArgument", 5: "NotFound", 6: "AlreadyExists"}


def pretty_entry(e):
    lines = ["Entry ID         : %s" % e["id"], "SPIFFE ID        : %s" % id_str(e["spiffe_id"]),
             "Parent ID        : %s" % id_str(e["parent_id"]), "Revision         : %s" % e["revision_number"],
             "X509-SVID TTL    : %s" % (e["x509_svid_ttl"] or "default"),
             "JWT-SVID TTL     : %s" % (e["jwt_svid_ttl"] or "default")]
    for s in e["selectors"]:
        lines.append("Selector         : %s:%s" % (s["type"], s["value"]))
    return "\n".join(lines) + "\n\n"


def run_entry(sub, v, out, sock):
    data = st.load(sock)
    td = data.get("trust_domain") or st.DEFAULT_TRUST_DOMAIN
    if sub == "show":
        entries = data["entries"]
        if v["entryID"]:
            if v["parentID"] or v["spiffeID"] or v["selector"]:
                raise CliError("the -entryID flag can't be combined with others")
            e = entries.get(v["entryID"])
            if e is None:
                raise CliError("rpc error: code = NotFound desc = entry not found")
            found = [e]
        else:
            for flag in ("parentID", "spiffeID"):
                if v[flag] and id_problem(v[flag]):
                    raise CliError("error parsing %s \"%s\": %s" % (flag, v[flag], id_problem(v[flag])))
            want_sels = [parse_selector(s) for s in v["selector"]]
            want_keys = ["%s:%s" % (s["type"], s["value"]) for s in want_sels]
            mode = v["matchSelectorsOn"] or "superset"
            if mode not in ("exact", "any", "superset", "subset"):
                raise CliError("match behavior \"%s\" unknown" % mode)
            found = []
            for e in entries.values():
                if v["parentID"] and id_str(e["parent_id"]) != v["parentID"]:
                    continue
                if v["spiffeID"] and id_str(e["spiffe_id"]) != v["spiffeID"]:
                    continue
                if want_keys and not match_selectors(selector_key(e["selectors"]), want_keys, mode):
                    continue
                if v["hint"] and e.get("hint") != v["hint"]:
                    continue
                found.append(e)
        if out.json:
            out.emit({"entries": found, "next_page_token": ""}, "")
        else:
            text = "Found %d entr%s\n" % (len(found), "y" if len(found) == 1 else "ies")
            out.emit(None, text + "".join(pretty_entry(e) for e in found))
        return 0
    if sub == "count":
        if out.json:
            out.emit({"count": len(data["entries"])}, "")
        else:
            out.emit(None, "%d registration entries\n" % len(data["entries"]))
        return 0
    if sub in ("create", "update"):
        return run_entry_write(sub, v, out, sock, td)
    if sub == "delete":
        return run_entry_delete(v, out, sock)
    raise CliError("unknown entry command %r" % sub)


def _requests_from_flags(sub, v):
    req = {"spiffe_id": v["spiffeID"], "parent_id": v["parentID"],
           "selectors": [parse_selector(s) for s in v["selector"]], "x509_svid_ttl": v["x509SVIDTTL"],
           "jwt_svid_ttl": v["jwtSVIDTTL"], "federates_with": v["federatesWith"], "dns_names": v["dns"],
           "admin": v["admin"], "downstream": v["downstream"], "entryExpiry": v["entryExpiry"],
           "store_svid": v["storeSVID"], "hint": v["hint"]}
    if sub == "update":
        req["entry_id"] = v["entryID"]
    if v.get("node"):
        td = st.split_id(v["spiffeID"])["trust_domain"] if v["spiffeID"].startswith("spiffe://") else ""
        req["parent_id"] = "spiffe://%s/spire/server" % td
    return [req]


def run_entry_write(sub, v, out, sock, td):
    if v["data"]:
        raw = read_data(v["data"])
        try:
            doc = json.loads(raw)
        except ValueError as e:
            raise CliError("failed to parse JSON: %s" % e)
        if not isinstance(doc, dict) or not isinstance(doc.get("entries", []), list):
            raise CliError("json: cannot unmarshal data into Go value of type common.RegistrationEntries")
        requests = doc.get("entries") or []
    else:
        requests = _requests_from_flags(sub, v)
    race = set(x for x in os.environ.get("SPIRE_SIM_TEST_RACE_CREATE", "").split(",") if x)
    results = []
    with st.locked(sock) as data:
        entries = data["entries"]
        similar = {}
        for e in entries.values():
            similar[entry_identity(e)] = e["id"]
        if sub == "create" and race:
            injected = data.setdefault("test_race_injected", [])
            for req in requests:
                r = lower_keys(req)
                sid = r.get("spiffe_id")
                if sid in race and sid not in injected:
                    entry, problem = request_to_entry(req, td)
                    if problem is None:
                        entry["id"] = str(uuid.uuid4())
                        entry["created_at"] = str(int(time.time()))
                        entry["hint"] = "created by another client (simulator race injection)"
                        entries[entry["id"]] = entry
                        similar[entry_identity(entry)] = entry["id"]
                        injected.append(sid)
        for req in requests:
            entry, problem = request_to_entry(req, td)
            echo = dict(entry)
            if problem:
                results.append({"status": status(3, problem), "entry": echo})
                continue
            key = entry_identity(entry)
            if sub == "create":
                if key in similar:
                    results.append({"status": status(6, "similar entry already exists"), "entry": echo})
                    continue
                entry["id"] = str(uuid.uuid4())
                entry["created_at"] = str(int(time.time()))
                entries[entry["id"]] = entry
                similar[key] = entry["id"]
                results.append({"status": status(0, "OK"), "entry": entry})
            else:
                old = entries.get(entry["id"]) if entry["id"] else None
                if not entry["id"]:
                    results.append({"status": status(3, "failed to convert entry: missing entry ID"), "entry": echo})
                    continue
                if old is None:
                    results.append({"status": status(5, "entry not found"), "entry": echo})
                    continue
                other = similar.get(key)
                if other is not None and other != entry["id"]:
                    results.append({"status": status(6, "similar entry already exists"), "entry": echo})
                    continue
                similar.pop(entry_identity(old), None)
                entry["created_at"] = old.get("created_at", "0")
                entry["revision_number"] = str(int(old.get("revision_number", "0")) + 1)
                entries[entry["id"]] = entry
                similar[key] = entry["id"]
                results.append({"status": status(0, "OK"), "entry": entry})
    failed = [r for r in results if r["status"]["code"] != 0]
    if out.json:
        out.emit({"results": results}, "")
        return 0
    text = ""
    for r in results:
        if r["status"]["code"] == 0:
            text += pretty_entry(r["entry"])
        else:
            text += "FAILED to %s the following entry:\n%s%s\n\n" % (sub, pretty_entry(r["entry"]),
                                                                      r["status"]["message"])
    out.emit(None, text)
    if failed:
        sys.stderr.write("Error: failed to %s one or more entries\n" % sub)
        return 1
    return 0


def run_entry_delete(v, out, sock):
    if v["file"]:
        raw = read_data(v["file"])
        try:
            doc = json.loads(raw)
        except ValueError as e:
            raise CliError("failed to parse JSON: %s" % e)
        doc = lower_keys(doc) if isinstance(doc, dict) else {}
        ids = doc.get("ids") or []
    elif v["entryID"]:
        ids = [v["entryID"]]
    else:
        raise CliError("an entry ID or a file is required")
    results = []
    with st.locked(sock) as data:
        for entry_id in ids:
            if data["entries"].pop(entry_id, None) is None:
                results.append({"status": status(5, "entry not found"), "id": entry_id})
            else:
                results.append({"status": status(0, "OK"), "id": entry_id})
    failed = [r for r in results if r["status"]["code"] != 0]
    if out.json:
        out.emit({"results": results}, "")
        return 0
    text = "".join(("Deleted entry with ID: %s\n" % r["id"]) if r["status"]["code"] == 0 else
                   ("Failed to delete entry with ID %s (code: %s, msg: \"%s\")\n"
                    % (r["id"], CODES.get(r["status"]["code"], r["status"]["code"]), r["status"]["message"]))
                   for r in results)
    out.emit(None, text)
    return 1 if failed else 0


# --- agents --------------------------------------------------------------------------------------------------------

def run_agent(sub, v, out, sock):
    if sub in ("list", "count"):
        data = st.load(sock)
        agents = list(data["agents"].values())
        if sub == "list":
            want = ["%s:%s" % (s["type"], s["value"]) for s in (parse_selector(x) for x in v["selector"])]
            mode = v["matchSelectorsOn"] or "superset"
            if mode not in ("exact", "any", "superset", "subset"):
                raise CliError("match behavior \"%s\" unknown" % mode)
            out_agents = []
            for a in agents:
                if want and not match_selectors(selector_key(a["selectors"]), want, mode):
                    continue
                if v["attestationType"] and a["attestation_type"] != v["attestationType"]:
                    continue
                if v["canReattest"] in ("true", "false") and a["can_reattest"] != (v["canReattest"] == "true"):
                    continue
                if v["banned"] in ("true", "false") and a["banned"] != (v["banned"] == "true"):
                    continue
                out_agents.append(a)
            if out.json:
                out.emit({"agents": out_agents, "next_page_token": ""}, "")
            else:
                text = "Found %d attested agent%s:\n\n" % (len(out_agents), "" if len(out_agents) == 1 else "s")
                for a in out_agents:
                    text += "SPIFFE ID         : %s\nAttestation type  : %s\n\n" % (id_str(a["id"]),
                                                                                   a["attestation_type"])
                out.emit(None, text if out_agents else "No attested agents found\n")
            return 0
        if out.json:
            out.emit({"count": len(agents)}, "")
        else:
            out.emit(None, "%d attested agent%s\n" % (len(agents), "" if len(agents) == 1 else "s"))
        return 0
    spiffe_id = v["spiffeID"]
    if not spiffe_id:
        raise CliError("a SPIFFE ID is required")
    if id_problem(spiffe_id):
        raise CliError("rpc error: code = InvalidArgument desc = invalid agent ID: %s" % id_problem(spiffe_id))
    if sub == "show":
        agent = st.load(sock)["agents"].get(spiffe_id)
        if agent is None:
            raise CliError("rpc error: code = NotFound desc = agent not found")
        out.emit(agent, "Found an attested agent given its SPIFFE ID\n\nSPIFFE ID         : %s\n" % spiffe_id)
        return 0
    with st.locked(sock) as data:
        agent = data["agents"].get(spiffe_id)
        if agent is None:
            raise CliError("rpc error: code = NotFound desc = agent not found")
        if sub == "evict":
            del data["agents"][spiffe_id]
            data.setdefault("evicted", {})[spiffe_id] = int(time.time())
            msg = "Agent evicted successfully\n"
        elif sub == "ban":
            agent["banned"] = True
            agent["x509svid_serial_number"] = ""
            msg = "Agent banned successfully\n"
        else:
            raise CliError("unknown agent command %r" % sub)
    out.emit({}, msg)
    return 0


# --- tokens, bundle ------------------------------------------------------------------------------------------------

def run_token(v, out, sock):
    ttl = v["ttl"]
    spiffe_id = v["spiffeID"]
    if spiffe_id and id_problem(spiffe_id):
        raise CliError("rpc error: code = InvalidArgument desc = failed to parse SPIFFE ID: %s" % id_problem(spiffe_id))
    if ttl < 1:
        raise CliError("rpc error: code = InvalidArgument desc = ttl is required, you must provide one")
    token = str(uuid.uuid4())
    expires = int(time.time()) + ttl
    with st.locked(sock) as data:
        td = data.get("trust_domain") or st.DEFAULT_TRUST_DOMAIN
        data["tokens"][token] = {"spiffe_id": spiffe_id or None, "expires_at": expires, "used": False}
        if spiffe_id:
            entry = {
                "id": str(uuid.uuid4()),
                "spiffe_id": id_proto(spiffe_id),
                "parent_id": id_proto("spiffe://%s/spire/agent/join_token/%s" % (td, token)),
                "selectors": [{"type": "spiffe_id", "value": "spiffe://%s/spire/agent/join_token/%s" % (td, token)}],
                "x509_svid_ttl": 0, "jwt_svid_ttl": 0, "federates_with": [], "hint": "", "admin": False,
                "created_at": str(int(time.time())), "downstream": False, "expires_at": "0", "dns_names": [],
                "revision_number": "0", "store_svid": False,
                "additional_attributes": {"disable_x509_svid_prefetch": False, "jwt_svid_include_jti": False},
            }
            data["entries"][entry["id"]] = entry
    out.emit({"value": token, "expires_at": str(expires)}, "Token: %s\n" % token)
    return 0


def run_bundle(sub, v, out, sock):
    if sub != "show":
        raise CliError("the simulator only implements 'bundle show'")
    with st.locked(sock) as data:
        ca = st.ensure_ca(data)
        td = data.get("trust_domain") or st.DEFAULT_TRUST_DOMAIN
    if ca is None:
        raise CliError("the simulator needs the Python 'cryptography' package for 'bundle show'")
    if out.json:
        import base64
        from cryptography import x509
        der = x509.load_pem_x509_certificate(ca["cert_pem"].encode()).public_bytes(
            __import__("cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]).Encoding.DER)
        out.emit({"trust_domain": td, "x509_authorities": [{"asn1": base64.b64encode(der).decode(), "tainted": False}],
                  "jwt_authorities": [], "refresh_hint": "0", "sequence_number": "1"}, "")
    else:
        out.emit(None, ca["cert_pem"])
    return 0


# --- dispatch ------------------------------------------------------------------------------------------------------

def flagset(group, sub):
    fs = FlagSet(sub)
    fs.string("output", "pretty")
    fs.string("socketPath", st.DEFAULT_SOCKET_PATH)
    if group == "entry":
        if sub == "show":
            for name in ("entryID", "parentID", "spiffeID", "hint", "matchSelectorsOn", "matchFederatesWithOn",
                         "downstream"):
                fs.string(name)
            fs.repeated("selector")
            fs.repeated("federatesWith")
        elif sub in ("create", "update"):
            for name in ("data", "parentID", "spiffeID", "hint"):
                fs.string(name)
            if sub == "update":
                fs.string("entryID")
            else:
                fs.bool("node")
            for name in ("x509SVIDTTL", "jwtSVIDTTL", "entryExpiry"):
                fs.int(name)
            for name in ("admin", "downstream", "storeSVID"):
                fs.bool(name)
            for name in ("selector", "federatesWith", "dns"):
                fs.repeated(name)
        elif sub == "delete":
            fs.string("entryID")
            fs.string("file")
        elif sub == "count":
            for name in ("parentID", "spiffeID", "hint", "matchSelectorsOn", "matchFederatesWithOn", "downstream"):
                fs.string(name)
            fs.repeated("selector")
            fs.repeated("federatesWith")
    elif group == "agent":
        if sub in ("list", "count"):
            for name in ("attestationType", "canReattest", "banned", "expiresBefore", "matchSelectorsOn"):
                fs.string(name)
            fs.repeated("selector")
        else:
            fs.string("spiffeID")
    elif group == "token":
        fs.string("spiffeID")
        fs.int("ttl", 600)
    elif group == "bundle":
        fs.string("format", "pem")
    return fs


COMMANDS = {
    "entry": ("show", "create", "update", "delete", "count"),
    "agent": ("list", "show", "evict", "ban", "count"),
    "token": ("generate",),
    "bundle": ("show",),
}


def main(argv):
    """``spire-server <group> <sub> [flags]`` for the API commands. Returns the exit code."""
    if len(argv) < 2 or argv[0] not in COMMANDS or argv[1] not in COMMANDS[argv[0]]:
        sys.stderr.write("Usage: spire-server [--version] [--help] <command> [<args>]\n")
        return 127
    group, sub = argv[0], argv[1]
    fs = flagset(group, sub)
    try:
        v, rest = fs.parse(argv[2:])
    except FlagError as e:
        sys.stderr.write("%s\n%s\n" % (e, fs.usage()))
        return 1
    if v["output"] not in ("json", "pretty"):
        sys.stderr.write("Error: unknown output format \"%s\"\n" % v["output"])
        return 1
    out = Out(v["output"])
    sock = v["socketPath"]
    try:
        check_socket(sock)
        if group == "entry":
            return run_entry(sub, v, out, sock)
        if group == "agent":
            return run_agent(sub, v, out, sock)
        if group == "token":
            return run_token(v, out, sock)
        return run_bundle(sub, v, out, sock)
    except CliError as e:
        sys.stderr.write("Error: %s\n" % e)
        return 1
