# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""SPIFFE ID and selector rules, in one place.

* SPIFFE IDs follow the SPIFFE ID specification (SPIFFE-ID.md): scheme ``spiffe``, a trust domain of lowercase
  letters, digits, ``.``, ``-`` and ``_`` (no port, no userinfo), an optional path of non-empty segments made of
  letters, digits, ``.``, ``-`` and ``_`` (no ``.``/``..`` segments, no trailing slash), no query or fragment,
  at most 2048 bytes; the trust domain name at most 255 bytes.
* Selectors are ``type:value``; the value may itself contain colons (``tpm_devid:subject:cn:host1``).
* SPIRE's well-known IDs: the server (``/spire/server``) and agents per node attestor
  (``/spire/agent/join_token/<token>``, ``/spire/agent/tpm_devid/<sha1 fp>``, ``/spire/agent/tpm/<pubhash>``).

Imports nothing from Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError

SCHEME_PREFIX = "spiffe://"
MAX_ID_LENGTH = 2048
MAX_TRUST_DOMAIN_LENGTH = 255

_TD_RE = re.compile(r"^[a-z0-9._-]+$")
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9._-]+$")


def spiffe_id_problem(value):
    """Return why ``value`` is not a valid SPIFFE ID, or None when it is valid."""
    if not isinstance(value, str) or not value:
        return "SPIFFE ID is empty"
    if len(value.encode("utf-8")) > MAX_ID_LENGTH:
        return "SPIFFE ID is longer than %d bytes" % MAX_ID_LENGTH
    if not value.startswith(SCHEME_PREFIX):
        return "scheme is missing or invalid (a SPIFFE ID starts with 'spiffe://')"
    rest = value[len(SCHEME_PREFIX):]
    if "?" in rest or "#" in rest:
        return "SPIFFE ID must not have a query or fragment"
    td, slash, path = rest.partition("/")
    problem = trust_domain_problem(td)
    if problem:
        return problem
    if slash:
        path = "/" + path
        return path_problem(path)
    return None


def trust_domain_problem(td):
    """Return why ``td`` is not a valid trust domain name, or None."""
    if not td:
        return "trust domain is missing"
    if "@" in td:
        return "trust domain must not contain userinfo ('@')"
    if ":" in td:
        return "trust domain must not contain a port"
    if len(td.encode("utf-8")) > MAX_TRUST_DOMAIN_LENGTH:
        return "trust domain is longer than %d bytes" % MAX_TRUST_DOMAIN_LENGTH
    if not _TD_RE.match(td):
        return "trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores"
    return None


def path_problem(path):
    """Return why ``path`` (starting with '/', or empty) is not a valid SPIFFE ID path, or None."""
    if path == "":
        return None
    if not path.startswith("/"):
        return "path must start with '/'"
    if path.endswith("/"):
        return "path cannot have a trailing slash"
    for segment in path[1:].split("/"):
        if segment == "":
            return "path cannot contain empty segments"
        if segment in (".", ".."):
            return "path cannot contain dot segments"
        if not _SEGMENT_RE.match(segment):
            return "path segment characters are limited to letters, numbers, dots, dashes, and underscores"
    return None


def is_spiffe_id(value):
    return spiffe_id_problem(value) is None


def _path_of(value):
    return value[len(SCHEME_PREFIX):].partition("/")[2]


def entry_spiffe_id_problem(value):
    """Why a (syntactically valid) SPIFFE ID cannot be a registration entry's ``spiffe_id``, or None.

    SPIRE refuses an entry whose SPIFFE ID has no path or lies in its reserved namespace (``/spire`` and below:
    the server's and the agents' own IDs).
    """
    path = "/" + _path_of(value) if _path_of(value) else ""
    if not path:
        return "an entry's SPIFFE ID needs a path (spiffe://<trust domain>/<path>)"
    if path == "/spire" or path.startswith("/spire/"):
        return "the path %s is in SPIRE's reserved namespace (/spire); choose another path" % path
    return None


def entry_parent_id_problem(value):
    """Why a (syntactically valid) SPIFFE ID cannot be a registration entry's ``parent_id``, or None."""
    if not _path_of(value):
        return "a parent ID needs a path (an agent ID, spiffe://<trust domain>/spire/server or a node alias)"
    return None


def validate_spiffe_id(value, what="SPIFFE ID"):
    """Return ``value`` when it is a valid SPIFFE ID; raise SpireTpmError naming ``what`` otherwise."""
    problem = spiffe_id_problem(value)
    if problem:
        raise SpireTpmError("invalid %s %r: %s" % (what, value, problem),
                            "use the form spiffe://<trust domain>/<path>, e.g. spiffe://example.org/host/web1")
    return value


def split_spiffe_id(value):
    """``spiffe://td/a/b`` → (``td``, ``/a/b``). The ID must be valid."""
    validate_spiffe_id(value)
    rest = value[len(SCHEME_PREFIX):]
    td, slash, path = rest.partition("/")
    return td, (slash + path) if slash else ""


def trust_domain_of(value):
    """The trust domain name of a SPIFFE ID (``spiffe://example.org/x`` → ``example.org``)."""
    return split_spiffe_id(value)[0]


def make_spiffe_id(trust_domain, path=""):
    """Build and validate ``spiffe://<trust_domain><path>``; ``path`` may lack its leading slash."""
    if path and not path.startswith("/"):
        path = "/" + path
    return validate_spiffe_id(SCHEME_PREFIX + trust_domain + path)


def from_proto(obj):
    """``{"trust_domain": "example.org", "path": "/x"}`` (SPIRE's JSON output) → ``spiffe://example.org/x``."""
    if not obj:
        return ""
    return SCHEME_PREFIX + obj.get("trust_domain", "") + obj.get("path", "")


def to_proto(value):
    """``spiffe://example.org/x`` → ``{"trust_domain": "example.org", "path": "/x"}``."""
    td, path = split_spiffe_id(value)
    return {"trust_domain": td, "path": path}


def normalize_trust_domain(value):
    """Accept ``example.org`` or ``spiffe://example.org`` (as used in federates_with); return the bare name."""
    if not isinstance(value, str):
        raise SpireTpmError("invalid trust domain %r" % (value,), "give a trust domain name such as example.org")
    name = value[len(SCHEME_PREFIX):] if value.startswith(SCHEME_PREFIX) else value
    name = name.rstrip("/") if value.startswith(SCHEME_PREFIX) else name
    problem = trust_domain_problem(name)
    if problem:
        raise SpireTpmError("invalid trust domain %r: %s" % (value, problem),
                            "give a trust domain name such as example.org or spiffe://example.org")
    return name


# --- well-known SPIRE IDs -------------------------------------------------------------------------------------

def server_id(trust_domain):
    """The SPIRE server's ID, parent of node alias entries: ``spiffe://<td>/spire/server``."""
    return make_spiffe_id(trust_domain, "/spire/server")


def agent_id(trust_domain, attestor, *parts):
    """``spiffe://<td>/spire/agent/<attestor>/<parts...>``."""
    return make_spiffe_id(trust_domain, "/".join(("", "spire", "agent", attestor) + tuple(parts)))


def join_token_agent_id(trust_domain, token):
    return agent_id(trust_domain, "join_token", token)


def tpm_devid_agent_id(trust_domain, leaf_sha1_hex):
    """tpm_devid agents: the lowercase hex SHA-1 of the DevID leaf certificate's DER."""
    return agent_id(trust_domain, "tpm_devid", leaf_sha1_hex.lower())


def tpm_agent_id(trust_domain, pubhash):
    """spire-tpm-plugin agents: lowercase hex SHA-256 of the EK's DER SubjectPublicKeyInfo."""
    return agent_id(trust_domain, "tpm", pubhash.lower())


def is_agent_id(value):
    try:
        dummy, path = split_spiffe_id(value)
    except SpireTpmError:
        return False
    return path.startswith("/spire/agent/")


# --- selectors ------------------------------------------------------------------------------------------------

def selector_problem(value):
    """Return why ``value`` is not a ``type:value`` selector, or None."""
    if not isinstance(value, str):
        return "a selector is a string 'type:value'"
    stype, sep, svalue = value.partition(":")
    if not sep:
        return "selector %r has no ':' (expected type:value)" % value
    if not stype:
        return "selector %r has an empty type" % value
    if not svalue:
        return "selector %r has an empty value" % value
    if stype != stype.strip() or any(c.isspace() for c in stype):
        return "selector %r has whitespace in its type" % value
    return None


def parse_selector(value):
    """``"tpm_devid:subject:cn:web1"`` → ``{"type": "tpm_devid", "value": "subject:cn:web1"}``."""
    problem = selector_problem(value)
    if problem:
        raise SpireTpmError("invalid selector: %s" % problem,
                            "write selectors as type:value, e.g. unix:uid:1000 or tpm_devid:subject:cn:host1")
    stype, dummy, svalue = value.partition(":")
    return {"type": stype, "value": svalue}


def format_selector(sel):
    """``{"type": "unix", "value": "uid:0"}`` → ``"unix:uid:0"``."""
    return "%s:%s" % (sel.get("type", ""), sel.get("value", ""))


# --- DNS names ------------------------------------------------------------------------------------------------

def dns_name_problem(value):
    """Return why SPIRE would refuse ``value`` as a DNS name of an entry, or None.

    The server's rules (pkg/common/x509util ValidateLabel, checked against the real 1.13.3 and 1.15.3 servers):
    ASCII only; at most one wildcard, and only as a leading ``*.``; no trailing dot; non-empty labels of at most 63
    characters, not starting or ending with a hyphen, no ``--`` in the third and fourth place (except ``xn--``);
    at most 253 characters. Other characters (``_``, upper case, even ``!``) are accepted by the server, so they
    are accepted here: an entry the server holds must be declarable as it is.
    """
    if not isinstance(value, str) or not value.strip():
        return "DNS name is empty"
    try:
        value.encode("ascii")
    except UnicodeEncodeError:
        return "DNS name %r must be ASCII (use its xn-- form)" % value
    stars = value.count("*")
    name = value
    if stars > 1:
        return "DNS name %r has more than one wildcard" % value
    if stars == 1:
        if not value.startswith("*."):
            return "DNS name %r has a wildcard outside the first label" % value
        name = value[2:]
    name = name.strip()
    if not name:
        return "DNS name %r is empty after its wildcard" % value
    if name.endswith("."):
        return "DNS name %r ends with a dot (SPIRE refuses it; drop the trailing dot)" % value
    if len(name) > 253:
        return "DNS name %r is longer than 253 characters" % value
    for label in name.split("."):
        if not label or len(label) > 63:
            return "DNS name %r has an invalid label %r (1 to 63 characters)" % (value, label)
        if label.startswith("-") or label.endswith("-"):
            return "DNS name %r has an invalid label %r (starts or ends with a hyphen)" % (value, label)
        if label[2:4] == "--" and not label.lower().startswith("xn--"):
            return "DNS name %r has an invalid label %r ('--' in the third and fourth place)" % (value, label)
    return None
