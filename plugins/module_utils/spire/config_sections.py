# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""SPIRE's load-time rules for the ``server``/``agent`` section, ``health_checks`` and ``telemetry``.

Read from cmd/spire-{server,agent}/cli/run (v1.13.3 and v1.15.3) and pkg/common/{health,telemetry}; each failure a
``SpireTpmError`` naming the cause (with SPIRE's own message) and the fix. ``validate()`` (config_rules.py) calls
these; tests/integration/config/test_config_vs_spire.py holds every verdict against the real daemons' ``run``.

This file imports nothing from Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import difflib
import os

try:
    from urllib.parse import parse_qs, urlparse
except ImportError:  # pragma: no cover - Python 2
    from urlparse import parse_qs, urlparse  # type: ignore

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire import ids
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire.config_catalog import (
    HEALTH_CHECK_KEYS, KNOWN_VERSIONS, LOG_FORMATS, LOG_LEVELS, MAX_SOCKET_PATH, REBOOTSTRAP_MODES, SECTION_TYPES,
    SERVER_KEY_TYPES, TELEMETRY_SINK_KEYS)
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire.config_values import (
    _set, _typed, go_duration_seconds, trust_domain_name, trust_domain_problem)


def _require(section, kind, key, fix, spire_msg=None):
    value = section.get(key)
    if not _set(value):
        raise SpireTpmError("the %s section has no %s (SPIRE: \"%s\")"
                            % (kind, key, spire_msg or "%s must be configured" % key), fix)
    return value


def _check_port(value, kind, key):
    if not 0 < value < 65536:
        raise SpireTpmError("%s.%s is %r, not a TCP port number" % (kind, key, value),
                            "set %s.%s to a port between 1 and 65535" % (kind, key))


def _check_trust_domain(kind, td):
    problem = trust_domain_problem(td)
    if problem:
        raise SpireTpmError("%s.trust_domain %r is not a SPIFFE trust domain name: %s (SPIRE: \"could not parse "
                            "trust_domain\")" % (kind, td, problem),
                            "use lowercase letters, digits, '.', '-' and '_' only (e.g. example.org)")


def _check_duration(section, where, key, spire_msg, minimum=None):
    value = section.get(key)
    if value is None or value == "":
        return None
    seconds = go_duration_seconds(value)
    if seconds is None:
        raise SpireTpmError("%s.%s %r is not a Go duration (SPIRE: \"%s\")" % (where, key, value, spire_msg),
                            "write it like 90s, 10m, 1h30m or 720h (units ns, us, ms, s, m, h)")
    if minimum is not None and seconds < minimum:
        raise SpireTpmError("%s.%s is %s, below SPIRE's minimum of %dh" % (where, key, value, minimum // 3600),
                            "set %s.%s to at least %dh" % (where, key, minimum // 3600))
    return seconds


def _check_choice(section, where, key, choices, spire_msg, fix):
    value = section.get(key)
    if value is None:
        return
    if str(value).lower() not in choices:
        raise SpireTpmError("%s.%s is %r (SPIRE: \"%s\")" % (where, key, value, spire_msg), fix)


def _check_logging(section, kind):
    _check_choice(section, kind, "log_level", LOG_LEVELS, "not a valid logrus Level",
                  "set log_level to one of debug, info, warn, error (or trace, fatal, panic)")
    _check_choice(section, kind, "log_format", LOG_FORMATS, "unknown logger format",
                  "set log_format to text or json")


def _check_socket_path(section, kind, key):
    value = section.get(key)
    if value and len(os.path.abspath(value).encode("utf-8")) > MAX_SOCKET_PATH:
        raise SpireTpmError("%s.%s is %d bytes long; Linux cannot bind a unix socket path longer than %d"
                            % (kind, key, len(os.path.abspath(value).encode("utf-8")), MAX_SOCKET_PATH),
                            "choose a shorter path for %s.%s" % (kind, key))


def _section_typed(kind, section, rules, warnings):
    """Check the section's keys and types; return the section as SPIRE reads it (None values dropped)."""
    known = rules.section[kind]
    unknown = sorted(str(k) for k in section if k not in known and section[k] is not None)
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, list(known), n=1)
            hints.append("%s (did you mean %s?)" % (k, close[0]) if close else k)
            if k in SECTION_TYPES[kind] and not close:
                hints[-1] += " (a setting of other SPIRE versions)"
        if rules.newer:
            warnings.append("unknown key(s) in the %s section for %s: %s; SPIRE %s is newer than the versions "
                            "spire_config knows (%s), its own validate decides"
                            % (kind, rules.label(), ", ".join(hints), rules.version, ", ".join(KNOWN_VERSIONS)))
        else:
            raise SpireTpmError("unknown key(s) in the %s section: %s (%s refuses to start: \"unknown "
                                "configuration detected\")" % (kind, ", ".join(hints), rules.label()),
                                "use the key names of SPIRE's %s configuration reference for this version" % kind)
    typed = {}
    for key, value in section.items():
        if value is None:
            continue
        gotype = known.get(key) or SECTION_TYPES[kind].get(key)
        typed[key] = _typed(value, gotype, "%s.%s" % (kind, key)) if gotype else value
    return typed


def _check_experimental(section, kind):
    exp = section.get("experimental")
    if not isinstance(exp, dict):
        return
    where = kind + ".experimental"
    for key in ("named_pipe_name", "admin_named_pipe_name"):
        if exp.get(key):
            raise SpireTpmError("%s.%s is set: named pipes exist only on Windows (SPIRE: \"%s is not supported in "
                                "this platform\")" % (where, key, key), "remove it; use socket_path on Linux")
    if kind == "server":
        if _set(exp.get("event_timeout")) and _set(exp.get("sql_transaction_timeout")):
            raise SpireTpmError("%s sets both event_timeout and sql_transaction_timeout (SPIRE: \"both experimental "
                                "sql_transaction_timeout and event_timeout set, only set event_timeout\")" % where,
                                "keep only event_timeout")
        for key in ("cache_reload_interval", "full_cache_reload_interval", "prune_events_older_than",
                    "event_timeout", "sql_transaction_timeout"):
            _check_duration(exp, where, key, "could not parse %s" % key.replace("_", " "))
    else:
        _check_duration(exp, where, "sync_interval", "could not parse synchronization interval")


def _check_server_section(s, rules, warnings):
    # bind_address/bind_port default to 0.0.0.0:8081 in SPIRE (its "must be configured" check runs after the
    # defaults are merged in), so neither is required here.
    if s.get("bind_port") == 0:
        warnings.append("server.bind_port is 0: SPIRE takes it as unset and listens on its default port 8081")
    elif s.get("bind_port") is not None:
        _check_port(s["bind_port"], "server", "bind_port")
    _require(s, "server", "trust_domain", "set server.trust_domain, e.g. example.org")
    _check_trust_domain("server", s["trust_domain"])
    _require(s, "server", "data_dir", "set server.data_dir, e.g. /var/lib/spire/server")
    for value in s.get("admin_ids") or []:
        problem = ids.spiffe_id_problem(value)
        if problem:
            raise SpireTpmError("server.admin_ids has %r, which is not a SPIFFE ID: %s (SPIRE: \"could not parse "
                                "admin ID\")" % (value, problem), "use the form spiffe://<trust domain>/<path>")
    for key, msg in (("agent_ttl", "could not parse agent ttl"),
                     ("default_x509_svid_ttl", "could not parse default X509 SVID ttl"),
                     ("default_jwt_svid_ttl", "could not parse default JWT SVID ttl"),
                     ("ca_ttl", "could not parse default CA ttl"),
                     ("prune_attested_nodes_expired_for", "could not parse prune_attested_nodes_expired_for")):
        _check_duration(s, "server", key, msg)
    if s.get("max_attested_node_info_staleness") is not None:
        if go_duration_seconds(s["max_attested_node_info_staleness"]) is None:
            raise SpireTpmError("server.max_attested_node_info_staleness %r is not a Go duration (SPIRE: \"could "
                                "not parse max attested node staleness\")" % s["max_attested_node_info_staleness"],
                                "write it like 30s or 5m")
    for key in ("ca_key_type", "jwt_key_type"):
        if _set(s.get(key)):
            _check_choice(s, "server", key, SERVER_KEY_TYPES, "error parsing %s: key type is unknown" % key,
                          "set %s to one of %s" % (key, ", ".join(SERVER_KEY_TYPES)))
    _check_logging(s, "server")
    _check_socket_path(s, "server", "socket_path")
    _check_experimental(s, "server")


def _check_agent_section(s, rules, allow_insecure_bootstrap, warnings):
    if _set(s.get("join_token")) and _set(s.get("join_token_file")):
        raise SpireTpmError("agent.join_token and agent.join_token_file are both set (SPIRE: \"only one of "
                            "join_token or join_token_file can be specified, not both\")", "keep only one of them")
    _require(s, "agent", "server_address", "set agent.server_address to the SPIRE server's address")
    _require(s, "agent", "server_port", "set agent.server_port to the server's bind_port")
    _check_port(s["server_port"], "agent", "server_port")
    _require(s, "agent", "trust_domain", "set agent.trust_domain to the server's trust domain")
    _check_trust_domain("agent", s["trust_domain"])
    if not _set(s.get("data_dir")):
        warnings.append("agent.data_dir is not set: SPIRE then keeps the agent's SVID and keys in the directory "
                        "it is started from; set data_dir (e.g. /var/lib/spire/agent)")
    insecure = s.get("insecure_bootstrap") is True
    sources = [k for k in ("trust_bundle_path", "trust_bundle_url", "trust_bundle_spiffe_workload_api")
               if _set(s.get(k))]
    if insecure and sources:
        raise SpireTpmError("agent.insecure_bootstrap is true and %s is set too (SPIRE: \"only one of "
                            "insecure_bootstrap or %s can be specified\")" % (" and ".join(sources), sources[0]),
                            "drop insecure_bootstrap, or drop %s" % " and ".join(sources))
    if len(sources) > 1:
        raise SpireTpmError("the agent has more than one trust bundle source: %s (SPIRE accepts only one)"
                            % ", ".join(sources), "keep exactly one of them")
    if not sources:
        if not insecure:
            raise SpireTpmError("the agent has no trust bundle source (SPIRE: \"trust_bundle_path or "
                                "trust_bundle_url must be configured unless insecure_bootstrap is set\")",
                                "set agent.trust_bundle_path to the server's CA bundle (or trust_bundle_url)")
        if not allow_insecure_bootstrap:
            raise SpireTpmError("agent.insecure_bootstrap is true: the agent would trust whichever server answers "
                                "on first contact (SPIRE accepts it; spire_config refuses it unless "
                                "allow_insecure_bootstrap is true)",
                                "set agent.trust_bundle_path (or trust_bundle_url) instead; allow "
                                "insecure_bootstrap explicitly only in a lab")
    fmt = s.get("trust_bundle_format")
    if fmt is not None and fmt not in ("pem", "spiffe"):
        raise SpireTpmError("agent.trust_bundle_format %r is neither pem nor spiffe (SPIRE: \"invalid value for "
                            "trust_bundle_format\")" % (fmt,), "set trust_bundle_format to pem (default) or spiffe")
    unix_socket = s.get("trust_bundle_unix_socket")
    url = s.get("trust_bundle_url")
    if _set(unix_socket) and _set(s.get("trust_bundle_spiffe_workload_api")):
        raise SpireTpmError("agent.trust_bundle_unix_socket is set with trust_bundle_spiffe_workload_api (SPIRE: "
                            "\"trust_bundle_unix_socket can not be used with trust_bundle_spiffe_workload_api\")",
                            "drop trust_bundle_unix_socket")
    if _set(unix_socket) and not _set(url):
        raise SpireTpmError("agent.trust_bundle_unix_socket is set without trust_bundle_url (SPIRE: \"if "
                            "trust_bundle_unix_socket is specified, so must be trust_bundle_url\")",
                            "set trust_bundle_url (http://...) or drop trust_bundle_unix_socket")
    if _set(url):
        parsed = urlparse(url)
        if _set(unix_socket):
            if parsed.scheme != "http":
                raise SpireTpmError("agent.trust_bundle_url %r must start with http:// when used with "
                                    "trust_bundle_unix_socket (SPIRE refuses it)" % (url,), "use an http:// URL")
            for param in parse_qs(parsed.query, keep_blank_values=True):
                if param.startswith("spiffe-") or param.startswith("spire-"):
                    raise SpireTpmError("agent.trust_bundle_url has the query parameter %r (SPIRE: \"trust_bundle_url "
                                        "query params can not start with spiffe- or spire-\")" % param,
                                        "rename the query parameter")
        elif parsed.scheme != "https":
            raise SpireTpmError("agent.trust_bundle_url %r does not start with https:// (SPIRE: \"trust bundle URL "
                                "must start with https://\")" % (url,), "use an https:// URL")
    mode = s.get("rebootstrap_mode")
    if mode is not None and mode not in REBOOTSTRAP_MODES:
        raise SpireTpmError("agent.rebootstrap_mode is %r (SPIRE: \"unknown rebootstrap mode specified\")" % (mode,),
                            "set rebootstrap_mode to never, auto or always")
    if mode in ("auto", "always"):
        if insecure:
            raise SpireTpmError("agent.rebootstrap_mode %s with insecure_bootstrap (SPIRE: \"insecure_bootstrap "
                                "option can not be used with rebootstrapping\")" % mode,
                                "set a trust bundle source instead of insecure_bootstrap, or rebootstrap_mode never")
        if "retry_bootstrap" in s:
            raise SpireTpmError("agent.retry_bootstrap is set with rebootstrap_mode %s (SPIRE: \"you can not set "
                                "retry_bootstrap when using reboostrap_mode\")" % mode, "remove retry_bootstrap")
    _check_duration(s, "agent", "rebootstrap_delay", "error parsing rebootstrap delay duration")
    _check_duration(s, "agent", "availability_target", "unable to parse availability_target", minimum=24 * 3600)
    for key in ("x509_svid_cache_max_size", "jwt_svid_cache_max_size"):
        if s.get(key) is not None and s[key] < 0:
            raise SpireTpmError("agent.%s is %d (SPIRE: \"%s should not be negative\")" % (key, s[key], key),
                                "set it to 0 (the default) or a positive size")
    td = trust_domain_name(s["trust_domain"])
    for delegate in s.get("authorized_delegates") or []:
        problem = ids.spiffe_id_problem(delegate)
        if not problem and ids.trust_domain_of(delegate) != td:
            problem = "it is not in the agent's trust domain %s" % td
        if problem:
            raise SpireTpmError("agent.authorized_delegates has %r: %s (SPIRE: \"error validating authorized "
                                "delegate\")" % (delegate, problem),
                                "use SPIFFE IDs of the agent's trust domain (spiffe://%s/...)" % td)
    if _set(s.get("workload_x509_svid_key_type")):
        _check_choice(s, "agent", "workload_x509_svid_key_type", rules.workload_key_types,
                      "key type is unknown; must be one of [%s]" % ", ".join(rules.workload_key_types),
                      "set workload_x509_svid_key_type to one of %s" % ", ".join(rules.workload_key_types))
    _check_logging(s, "agent")
    _check_socket_path(s, "agent", "socket_path")
    _check_socket_path(s, "agent", "admin_socket_path")
    if _set(s.get("admin_socket_path")):
        sock_dir = os.path.dirname(os.path.abspath(s.get("socket_path") or "/tmp/spire-agent/public/api.sock"))
        if os.path.abspath(s["admin_socket_path"]).startswith(sock_dir + "/"):
            raise SpireTpmError("agent.admin_socket_path is inside %s, the Workload API socket's directory (SPIRE: "
                                "\"admin socket cannot be in the same directory or a subdirectory as that "
                                "containing the Workload API socket\")" % sock_dir,
                                "put the admin socket in another directory (e.g. /run/spire/agent/private)")
    _check_experimental(s, "agent")


def _check_health_checks(value):
    if not isinstance(value, dict):
        raise SpireTpmError("health_checks is not a mapping", "give health_checks as a mapping of its settings")
    unknown = sorted(str(k) for k in value if k not in HEALTH_CHECK_KEYS and value[k] is not None)
    if unknown:
        raise SpireTpmError("unknown key(s) in health_checks: %s (SPIRE refuses to start: \"unknown configuration "
                            "detected\")" % ", ".join(unknown),
                            "health_checks holds only %s" % ", ".join(sorted(HEALTH_CHECK_KEYS)))
    for key, gotype in HEALTH_CHECK_KEYS.items():
        if value.get(key) is not None:
            _typed(value[key], gotype, "health_checks.%s" % key)


def _check_telemetry(value):
    if not isinstance(value, dict):
        raise SpireTpmError("telemetry is not a mapping", "give telemetry as a mapping of its settings")
    for sink, keys in TELEMETRY_SINK_KEYS.items():
        blocks = value.get(sink)
        if blocks is None:
            continue
        for block in (blocks if isinstance(blocks, list) else [blocks]):
            if not isinstance(block, dict):
                raise SpireTpmError("telemetry.%s is not a mapping" % sink, "give %s as a mapping" % sink)
            unknown = sorted(str(k) for k in block if k not in keys and block[k] is not None)
            if unknown:
                raise SpireTpmError("unknown key(s) in telemetry.%s: %s (SPIRE refuses to start: \"unknown "
                                    "configuration detected\")" % (sink, ", ".join(unknown)),
                                    "telemetry.%s holds only %s" % (sink, ", ".join(keys) or "nothing"))
