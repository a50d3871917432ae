# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""SPIRE server/agent configuration as data → HCL, parsed back with pyhcl, checked against SPIRE's rules.

The data model is SPIRE's own configuration structure, so operators can read the SPIRE documentation::

    {"server": {"trust_domain": "example.org", "bind_address": "0.0.0.0", "bind_port": 8081, "data_dir": "..."},
     "plugins": {"DataStore": {"sql": {"plugin_data": {"database_type": "sqlite3", ...}}},
                 "KeyManager": {"disk": {"plugin_data": {"keys_path": "..."}}},
                 "NodeAttestor": {"join_token": {"plugin_data": {}},
                                  "tpm_devid": {"plugin_data": {"devid_ca_path": "...", ...}},
                                  "tpm": {"plugin_cmd": "/opt/spire/plugins/tpm_attestor_server",
                                          "plugin_checksum": "<sha256>", "plugin_data": {...}}}},
     "health_checks": {...}, "telemetry": {...}}

``render()`` writes HCL v1 — what SPIRE's ``hcl.Decode`` (hashicorp/hcl v1) accepts — with a deterministic order:
the ``server``/``agent`` section, ``plugins`` (types in a fixed order, names sorted; inside a plugin
``plugin_cmd, plugin_args, plugin_checksum, enabled, plugin_data_file, plugin_data``), then the other sections;
inside a block scalars and lists first, then nested blocks, each sorted by key. ``None`` values are dropped (so
optional settings can be left unset from Jinja). Lists of dicts become repeated blocks.

String escaping: ``"`` is written ``\\"``; every backslash, ``$`` and control character is written as a ``\\uXXXX``
escape. Go's hcl v1 decodes ``\\uXXXX``; writing ``$`` escaped means a value is never taken for a ``${...}``
interpolation (hcl v1 copies the inside of ``${}`` raw) nor expanded by ``spire-server run -expandEnv``. Writing
backslashes as ``\\u005c`` (not ``\\\\``) also keeps pyhcl exact: pyhcl only unescapes ``\\"``/``\\\\`` and
mis-reads ``\\\\\\\\``, so the round trip check can decode the remaining ``\\uXXXX`` escapes unambiguously.

``render()`` then parses its own output back with pyhcl and compares it with the (normalised) input: a mismatch
is a renderer bug and raises instead of writing a configuration SPIRE would read differently.

``validate()`` applies SPIRE's own load-time rules (pkg/common/catalog, pkg/{server,agent}/catalog,
cmd/spire-{server,agent}/cli/run) plus a few collection policies, each failure a ``SpireTpmError`` naming the cause
and the fix. This file imports nothing from Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import difflib
import math
import os
import re
import shutil
import subprocess
import tempfile
import time

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.files import ManagedFile, parse_mode
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire import ids

try:
    from hcl.parser import HclParser  # pyhcl
    HAS_PYHCL = True
    PYHCL_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - exercised by ansible-test's import sanity test
    HclParser = None
    HAS_PYHCL = False
    PYHCL_IMPORT_ERROR = _exc

KINDS = ("server", "agent")

# Built-in plugin names per kind and type (pkg/server/catalog/*.go, pkg/agent/catalog/*.go, each plugin's
# pluginName / catalog.MakeBuiltIn name; spiffe/spire main ~1.16.0-dev). DataStore is special-cased in the server
# catalog: only the built-in "sql" exists and it cannot be external.
NODE_ATTESTORS = ("aws_iid", "azure_imds", "azure_msi", "gcp_iit", "http_challenge", "join_token", "k8s_psat",
                  "sshpop", "tpm_devid", "x509pop")
BUILTIN_PLUGINS = {
    "server": {
        "BundlePublisher": ("aws_rolesanywhere_trustanchor", "aws_s3", "azure_blob", "gcp_cloudstorage",
                            "k8s_configmap"),
        "CredentialComposer": ("uniqueid",),
        "DataStore": ("sql",),
        "KeyManager": ("aws_kms", "azure_key_vault", "disk", "gcp_kms", "hashicorp_vault", "memory"),
        "NodeAttestor": NODE_ATTESTORS,
        "Notifier": ("gcs_bundle", "k8sbundle"),
        "UpstreamAuthority": ("aws_pca", "awssecret", "cert-manager", "disk", "ejbca", "gcp_cas", "spire", "vault"),
    },
    "agent": {
        "KeyManager": ("disk", "memory"),
        "NodeAttestor": NODE_ATTESTORS,
        "SVIDStore": ("aws_secretsmanager", "gcp_secretmanager"),
        "WorkloadAttestor": ("docker", "k8s", "slurm", "systemd", "unix", "windows"),
    },
}

# (min, max) enabled plugins per type; None = unbounded. SPIRE's constraints, except the server NodeAttestor
# minimum of 1, which is a collection policy (SPIRE allows zero, but such a server can attest no agent).
CONSTRAINTS = {
    "server": {"BundlePublisher": (0, None), "CredentialComposer": (0, None), "DataStore": (1, 1),
               "KeyManager": (1, 1), "NodeAttestor": (1, None), "Notifier": (0, None), "UpstreamAuthority": (0, 1)},
    "agent": {"KeyManager": (1, 1), "NodeAttestor": (1, 1), "SVIDStore": (0, None), "WorkloadAttestor": (1, None)},
}

PLUGIN_TYPE_ORDER = ("DataStore", "KeyManager", "NodeAttestor", "UpstreamAuthority", "Notifier", "BundlePublisher",
                     "CredentialComposer", "WorkloadAttestor", "SVIDStore")
PLUGIN_KEY_ORDER = ("plugin_cmd", "plugin_args", "plugin_checksum", "enabled", "plugin_data_file", "plugin_data")
TOP_LEVEL_ORDER = ("server", "agent", "plugins", "health_checks", "telemetry")

# Keys of the server/agent sections (hcl tags of serverConfig/agentConfig in cmd/spire-{server,agent}/cli/run/run.go).
# SPIRE refuses to start on any other key ("unknown configuration detected").
SECTION_KEYS = {
    "server": frozenset((
        "admin_ids", "agent_ttl", "audit_log_enabled", "bind_address", "bind_port", "ca_key_type", "ca_subject",
        "ca_ttl", "data_dir", "default_x509_svid_ttl", "default_jwt_svid_ttl", "experimental", "federation",
        "disable_jwt_svids", "jwt_issuer", "jwt_key_type", "log_file", "log_level", "log_format",
        "log_source_location", "prune_attested_nodes_expired_for", "prune_attested_nodes_batch_size",
        "prune_tofu_nodes", "proxy_protocol_trusted_cidrs", "ratelimit", "socket_path", "trust_domain",
        "max_attested_node_info_staleness", "profiling_enabled", "profiling_port", "profiling_freq",
        "profiling_names")),
    "agent": frozenset((
        "data_dir", "admin_socket_path", "insecure_bootstrap", "rebootstrap_mode", "rebootstrap_delay", "join_token",
        "join_token_file", "log_file", "log_format", "log_level", "log_selectors", "log_source_location", "sds",
        "server_address", "server_port", "socket_path", "disable_workload_api", "disable_sds_api",
        "workload_x509_svid_key_type", "trust_bundle_format", "trust_bundle_path",
        "trust_bundle_spiffe_workload_api", "trust_bundle_unix_socket", "trust_bundle_url", "trust_domain",
        "allow_unauthenticated_verifiers", "allowed_foreign_jwt_claims", "availability_target",
        "x509_svid_cache_max_size", "jwt_svid_cache_max_size", "authorized_delegates", "profiling_enabled",
        "profiling_port", "profiling_freq", "profiling_names", "experimental")),
}
PLUGIN_KEYS = frozenset(PLUGIN_KEY_ORDER)

# Required plugin_data keys of built-in plugins whose Configure refuses to start without them:
# tpm_devid (pkg/{server,agent}/plugin/nodeattestor/tpmdevid), the sql DataStore (sqlstore configValidate),
# the disk KeyManagers (pkg/server/plugin/keymanager/disk: keys_path; pkg/agent/plugin/keymanager/disk: directory).
REQUIRED_PLUGIN_DATA = {
    ("server", "NodeAttestor", "tpm_devid"): ("devid_ca_path", "endorsement_ca_path"),
    ("agent", "NodeAttestor", "tpm_devid"): ("devid_cert_path", "devid_priv_path", "devid_pub_path"),
    ("server", "DataStore", "sql"): ("database_type", "connection_string"),
    ("server", "KeyManager", "disk"): ("keys_path",),
    ("agent", "KeyManager", "disk"): ("directory",),
}
TPM_DEVID_REQUIRED = {
    "server": REQUIRED_PLUGIN_DATA[("server", "NodeAttestor", "tpm_devid")],
    "agent": REQUIRED_PLUGIN_DATA[("agent", "NodeAttestor", "tpm_devid")],
}

# Key names whose values are secrets: masked in what the module returns and shows in a diff.
DEFAULT_SECRET_KEYS = ("password", "token", "secret", "connection_string")
MASK = "********"

_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_HEX64_RE = re.compile(r"^[0-9a-fA-F]*$")
_UESC_RE = re.compile(r"\\u([0-9a-fA-F]{4})")


# --------------------------------------------------------------------------------------------------------------
# Rendering

def _quote(value):
    out = ['"']
    for ch in value:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\" or ch == "$" or ord(ch) < 0x20 or ord(ch) == 0x7f:
            out.append("\\u%04x" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _key(key):
    if not isinstance(key, str) or key == "":
        raise SpireTpmError("configuration key %r is not a non-empty string" % (key,),
                            "use SPIRE's key names (strings), as in the SPIRE configuration reference")
    return key if _IDENT_RE.match(key) else _quote(key)


def _scalar(value, where):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise SpireTpmError("%s is %r, which HCL cannot express" % (where, value), "use a finite number")
        return repr(value)
    if isinstance(value, str):
        return _quote(value)
    raise SpireTpmError("%s has a value of type %s, which the SPIRE configuration cannot hold"
                        % (where, type(value).__name__),
                        "use a string, number, boolean, list or mapping")


def _is_block_list(value):
    return isinstance(value, list) and len(value) > 0 and all(isinstance(v, dict) for v in value)


def _render_body(data, indent, where):
    """Lines of a block body: scalars and lists first (sorted), then nested blocks (sorted)."""
    pad = "  " * indent
    lines = []
    items = sorted(((k, v) for k, v in data.items() if v is not None), key=lambda kv: str(kv[0]))
    for key, value in items:
        if isinstance(value, dict) or _is_block_list(value):
            continue
        here = "%s.%s" % (where, key)
        if isinstance(value, list):
            parts = []
            for i, item in enumerate(value):
                if isinstance(item, (dict, list)) or item is None:
                    raise SpireTpmError("%s[%d] is a %s inside a list" % (here, i, type(item).__name__),
                                        "lists in a SPIRE configuration hold strings, numbers or booleans; "
                                        "a list of mappings becomes repeated blocks")
                parts.append(_scalar(item, "%s[%d]" % (here, i)))
            lines.append("%s%s = [%s]" % (pad, _key(key), ", ".join(parts)))
        else:
            lines.append("%s%s = %s" % (pad, _key(key), _scalar(value, here)))
    for key, value in items:
        here = "%s.%s" % (where, key)
        if isinstance(value, dict):
            lines.extend(_render_block(_key(key), value, indent, here))
        elif _is_block_list(value):
            for i, item in enumerate(value):
                lines.extend(_render_block(_key(key), item, indent, "%s[%d]" % (here, i)))
    return lines


def _render_block(header, data, indent, where):
    pad = "  " * indent
    body = _render_body(data, indent + 1, where)
    if not body:
        return ["%s%s {}" % (pad, header)]
    return ["%s%s {" % (pad, header)] + body + ["%s}" % pad]


def _plugin_type_key(ptype):
    try:
        return (PLUGIN_TYPE_ORDER.index(ptype), ptype)
    except ValueError:
        return (len(PLUGIN_TYPE_ORDER), ptype)


def _render_plugins(plugins):
    lines = ["plugins {"]
    for ptype in sorted(plugins, key=_plugin_type_key):
        for name in sorted(plugins[ptype] or {}):
            spec = plugins[ptype][name] or {}
            where = "plugins.%s.%s" % (ptype, name)
            lines.append("  %s %s {" % (_key(ptype), _quote(name)))
            for k in PLUGIN_KEY_ORDER:
                v = spec.get(k)
                if v is None:
                    continue
                if k == "plugin_data":
                    lines.extend(_render_block("plugin_data", v, 2, where + ".plugin_data"))
                else:
                    lines.extend(_render_body({k: v}, 2, where))
            lines.append("  }")
    lines.append("}")
    return lines


def render(kind, config, check=True):
    """Render the configuration data as HCL v1 text; with ``check`` parse it back and compare (renderer bug → raise)."""
    _check_kind(kind)
    if not isinstance(config, dict):
        raise SpireTpmError("the configuration is a %s, not a mapping" % type(config).__name__,
                            "pass the SPIRE configuration as a mapping with '%s' and 'plugins' keys" % kind)
    blocks = []
    keys = sorted(config, key=lambda k: (TOP_LEVEL_ORDER.index(k) if k in TOP_LEVEL_ORDER else len(TOP_LEVEL_ORDER),
                                         str(k)))
    for key in keys:
        value = config[key]
        if value is None:
            continue
        if key == "plugins":
            blocks.append("\n".join(_render_plugins(value)))
        elif isinstance(value, dict):
            blocks.append("\n".join(_render_block(_key(key), value, 0, key)))
        else:
            blocks.append("\n".join(_render_body({key: value}, 0, "")))
    text = "\n\n".join(blocks) + "\n"
    if check:
        check_round_trip(text, config)
    return text


# --------------------------------------------------------------------------------------------------------------
# Parsing back and normalising

def _decode_pyhcl_strings(value):
    if isinstance(value, dict):
        return dict((_decode_pyhcl_strings(k), _decode_pyhcl_strings(v)) for k, v in value.items())
    if isinstance(value, list):
        return [_decode_pyhcl_strings(v) for v in value]
    if isinstance(value, str):
        return _UESC_RE.sub(lambda m: chr(int(m.group(1), 16)), value)
    return value


_PARSER = []


def _pyhcl_parser():
    """One pyhcl parser per process: building its ply tables costs ~150 ms, a parse ~5 ms."""
    if not _PARSER:
        _PARSER.append(HclParser())
    return _PARSER[0]


def parse(text):
    """Parse HCL text with pyhcl, decoding the ``\\uXXXX`` escapes pyhcl leaves in strings (see module doc)."""
    if not HAS_PYHCL:
        raise SpireTpmError("the Python library pyhcl is not installed",
                            "install it on the host that runs the module (pip install pyhcl)")
    try:
        return _decode_pyhcl_strings(_pyhcl_parser().parse(text))
    except SpireTpmError:
        raise
    except Exception as e:  # pyhcl raises ValueError and its own lexer/parser errors
        raise SpireTpmError("the HCL text does not parse: %s" % e, "fix the HCL syntax")


def normalise(value):
    """A canonical form shared by the input data and parsed HCL.

    ``None`` values are dropped; a list of mappings with pairwise distinct keys (how HCL parsers return repeated
    labelled blocks such as two NodeAttestors) is merged into one mapping; a one-element list of mappings becomes
    that mapping (a single block).
    """
    if isinstance(value, dict):
        return dict((k, normalise(v)) for k, v in value.items() if v is not None)
    if isinstance(value, list):
        items = [normalise(v) for v in value]
        if items and all(isinstance(v, dict) for v in items):
            if len(items) == 1:
                return items[0]
            seen = set()
            disjoint = True
            for v in items:
                if seen & set(v):
                    disjoint = False
                    break
                seen |= set(v)
            if disjoint:
                merged = {}
                for v in items:
                    merged.update(v)
                return merged
        return items
    return value


def _first_difference(a, b, where="config"):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                return "%s.%s is %s" % (where, k, "missing after parsing" if k in a else "extra after parsing")
            d = _first_difference(a[k], b[k], "%s.%s" % (where, k))
            if d:
                return d
        return None
    if type(a) is not type(b) or a != b:
        return "%s: %r was rendered and parsed back as %r" % (where, a, b)
    return None


def check_round_trip(text, config):
    parsed = normalise(parse(text))
    expected = normalise(config)
    diff = _first_difference(expected, parsed)
    if diff:
        raise SpireTpmError("the rendered SPIRE configuration does not parse back to the input (%s)" % diff,
                            "this is a bug in trustroot.spire_tpm's HCL renderer: report it with the input; as a "
                            "workaround avoid the value named")
    return parsed


# --------------------------------------------------------------------------------------------------------------
# SPIRE's rules

def _check_kind(kind):
    if kind not in KINDS:
        raise SpireTpmError("kind %r is neither 'server' nor 'agent'" % (kind,), "set kind to server or agent")


def _is_external(spec):
    cmd = spec.get("plugin_cmd")
    return isinstance(cmd, str) and cmd != ""


def _is_enabled(spec):
    return spec.get("enabled", True) is not False


def _require(section, kind, key, fix):
    value = section.get(key)
    if value is None or value == "" or value == 0:
        raise SpireTpmError("the %s section has no %s (SPIRE: \"%s must be configured\")" % (kind, key, key), fix)
    return value


def _check_port(section, kind, key):
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise SpireTpmError("%s.%s is %r, not a TCP port number" % (kind, key, value),
                            "set %s.%s to an integer between 1 and 65535" % (kind, key))


def _check_bool(section, where, key):
    if key in section and section[key] is not None and not isinstance(section[key], bool):
        raise SpireTpmError("%s.%s is %r, not a boolean" % (where, key, section[key]),
                            "set it to true or false (unquoted)")


def _check_trust_domain(kind, td):
    problem = ids.trust_domain_problem(td) if isinstance(td, str) else "not a string"
    if problem:
        raise SpireTpmError("%s.trust_domain %r is not a SPIFFE trust domain name: %s" % (kind, td, problem),
                            "use lowercase letters, digits, '.', '-' and '_' only, without the spiffe:// scheme "
                            "(e.g. example.org)")


def _check_server_section(section):
    _require(section, "server", "trust_domain", "set server.trust_domain, e.g. example.org")
    _check_trust_domain("server", section["trust_domain"])
    _require(section, "server", "bind_address", "set server.bind_address (e.g. 0.0.0.0) and server.bind_port")
    _require(section, "server", "bind_port", "set server.bind_port (SPIRE's default is 8081)")
    _check_port(section, "server", "bind_port")
    _require(section, "server", "data_dir", "set server.data_dir, e.g. /opt/spire/data/server")
    admin_ids = section.get("admin_ids") or []
    if not isinstance(admin_ids, list):
        raise SpireTpmError("server.admin_ids is not a list", "give admin_ids as a list of SPIFFE IDs")
    for value in admin_ids:
        problem = ids.spiffe_id_problem(value)
        if problem:
            raise SpireTpmError("server.admin_ids has %r, which is not a SPIFFE ID: %s (SPIRE: \"could not parse "
                                "admin ID\")" % (value, problem),
                                "use the form spiffe://<trust domain>/<path>")


def _check_agent_section(section, allow_insecure_bootstrap):
    _require(section, "agent", "trust_domain", "set agent.trust_domain to the server's trust domain")
    _check_trust_domain("agent", section["trust_domain"])
    _require(section, "agent", "server_address", "set agent.server_address to the SPIRE server's address")
    _require(section, "agent", "server_port", "set agent.server_port to the SPIRE server's bind_port")
    _check_port(section, "agent", "server_port")
    _require(section, "agent", "data_dir", "set agent.data_dir, e.g. /opt/spire/data/agent (SPIRE's default is "
                                           "the working directory)")
    _check_bool(section, "agent", "insecure_bootstrap")
    if section.get("join_token") and section.get("join_token_file"):
        raise SpireTpmError("agent.join_token and agent.join_token_file are both set (SPIRE: \"only one of "
                            "join_token or join_token_file can be specified, not both\")",
                            "keep only one of them")
    insecure = section.get("insecure_bootstrap") is True
    sources = [k for k in ("trust_bundle_path", "trust_bundle_url", "trust_bundle_spiffe_workload_api")
               if section.get(k)]
    if insecure and sources:
        raise SpireTpmError("agent.insecure_bootstrap is true and %s is set too (SPIRE refuses both)"
                            % " and ".join(sources), "drop insecure_bootstrap, or drop %s" % " and ".join(sources))
    if len(sources) > 1:
        raise SpireTpmError("the agent has more than one trust bundle source: %s (SPIRE accepts only one)"
                            % ", ".join(sources), "keep exactly one of them")
    if not sources:
        if not insecure:
            raise SpireTpmError("the agent has no trust bundle source (SPIRE: \"trust_bundle_path, trust_bundle_url, "
                                "or trust_bundle_spiffe_workload_api must be configured unless insecure_bootstrap "
                                "is set\")",
                                "set agent.trust_bundle_path to the server's CA bundle (or trust_bundle_url)")
        if not allow_insecure_bootstrap:
            raise SpireTpmError("agent.insecure_bootstrap is true: the agent would trust whichever server answers "
                                "on first contact",
                                "set agent.trust_bundle_path (or trust_bundle_url) instead; allow "
                                "insecure_bootstrap explicitly only in a lab")
    url = section.get("trust_bundle_url")
    if url:
        scheme = "http://" if section.get("trust_bundle_unix_socket") else "https://"
        if not str(url).startswith(scheme):
            raise SpireTpmError("agent.trust_bundle_url %r does not start with %s (SPIRE: \"trust bundle URL must "
                                "start with %s\")" % (url, scheme, scheme), "use an %s URL" % scheme.rstrip(":/"))
    fmt = section.get("trust_bundle_format")
    if fmt is not None and fmt not in ("pem", "spiffe"):
        raise SpireTpmError("agent.trust_bundle_format %r is neither pem nor spiffe" % (fmt,),
                            "set trust_bundle_format to pem (default) or spiffe")


def _unknown_builtin(kind, ptype, name):
    spire_msg = 'no built-in plugin "%s" for type "%s"' % (name, ptype)
    known = BUILTIN_PLUGINS[kind][ptype]
    if ptype == "NodeAttestor" and name == "tpm":
        return SpireTpmError(
            "%s NodeAttestor \"tpm\" has no plugin_cmd; SPIRE would fail with: %s. tpm is the external "
            "spire-tpm-plugin, not a built-in" % (kind, spire_msg),
            "tpm is the external spire-tpm-plugin: set plugin_cmd to the installed binary and plugin_checksum to "
            "its sha256, or use the built-in tpm_devid", plugin_type=ptype, plugin_name=name)
    close = difflib.get_close_matches(name, known, n=2)
    hint = (" (did you mean %s?)" % " or ".join(close)) if close else ""
    return SpireTpmError(
        "%s %s \"%s\" is not a SPIRE built-in and has no plugin_cmd; SPIRE would fail with: %s%s"
        % (kind, ptype, name, spire_msg, hint),
        "use one of the built-in %s plugins (%s), or set plugin_cmd (and plugin_checksum) for an external plugin"
        % (ptype, ", ".join(known)), plugin_type=ptype, plugin_name=name)


def _check_plugin(kind, ptype, name, spec, warnings):
    where = "plugins.%s.%s" % (ptype, name)
    if not isinstance(spec, dict):
        raise SpireTpmError("%s is a %s, not a mapping" % (where, type(spec).__name__),
                            "give each plugin a mapping with plugin_data (and plugin_cmd/plugin_checksum if "
                            "external), e.g. {plugin_data: {}}")
    unknown = sorted(k for k in spec if k not in PLUGIN_KEYS)
    if unknown:
        raise SpireTpmError("%s has unknown key(s) %s; SPIRE would silently ignore them"
                            % (where, ", ".join(unknown)),
                            "a plugin block holds only %s; plugin settings go inside plugin_data"
                            % ", ".join(PLUGIN_KEY_ORDER))
    _check_bool(spec, where, "enabled")
    if spec.get("plugin_data") is not None and spec.get("plugin_data_file") is not None:
        raise SpireTpmError("%s sets both plugin_data and plugin_data_file (SPIRE: \"only one of [plugin_data, "
                            "plugin_data_file] can be used\")" % where, "keep only one of them")
    if spec.get("plugin_data") is not None and not isinstance(spec["plugin_data"], dict):
        raise SpireTpmError("%s.plugin_data is a %s, not a mapping" % (where, type(spec["plugin_data"]).__name__),
                            "give plugin_data as a mapping of the plugin's settings ({} when it has none)")
    if spec.get("plugin_data_file") is not None and not isinstance(spec["plugin_data_file"], str):
        raise SpireTpmError("%s.plugin_data_file is not a path string" % where, "set it to the file's path")
    cmd = spec.get("plugin_cmd")
    if cmd is not None and not isinstance(cmd, str):
        raise SpireTpmError("%s.plugin_cmd is not a string" % where, "set plugin_cmd to the plugin binary's path")
    args = spec.get("plugin_args")
    if args is not None and (not isinstance(args, list) or not all(isinstance(a, str) for a in args)):
        raise SpireTpmError("%s.plugin_args is not a list of strings" % where, "give plugin_args as a list of strings")
    checksum = spec.get("plugin_checksum")
    external = _is_external(spec)
    if checksum is not None and checksum != "":
        # Go's hex.DecodeString fails on a non-hex character and on an odd length, before the length check.
        if not isinstance(checksum, str) or not _HEX64_RE.match(checksum) or len(checksum) % 2:
            raise SpireTpmError("%s.plugin_checksum is not a hex string (SPIRE: \"checksum is not a valid hex "
                                "string\")" % where, "set it to the sha256 of the plugin binary (sha256sum)")
        if len(checksum) != 64:
            raise SpireTpmError("%s.plugin_checksum has %d characters (SPIRE: \"expected checksum of length 64; "
                                "got %d\")" % (where, len(checksum), len(checksum)),
                                "set it to the 64-hex-digit SHA-256 of the plugin binary (sha256sum <plugin_cmd>)")
        if not external:
            warnings.append("%s has plugin_checksum but no plugin_cmd: SPIRE ignores the checksum of a built-in"
                            % where)
    elif external:
        warnings.append("%s is external without plugin_checksum: SPIRE only warns and runs the binary unverified"
                        % where)
    enabled = _is_enabled(spec)
    if ptype == "NodeAttestor" and name == "join_token" and external and enabled:
        raise SpireTpmError("%s has a plugin_cmd (SPIRE: \"the built-in join_token node attestor cannot be "
                            "overridden by an external plugin\")" % where, "remove plugin_cmd from join_token")
    if ptype == "DataStore":
        if name != "sql" or external:
            raise SpireTpmError("%s: SPIRE supports only the built-in DataStore \"sql\" (\"pluggability for the "
                                "DataStore is deprecated\")" % where, "configure DataStore \"sql\" without plugin_cmd")
    if enabled and not external and name not in BUILTIN_PLUGINS[kind][ptype]:
        raise _unknown_builtin(kind, ptype, name)
    required = REQUIRED_PLUGIN_DATA.get((kind, ptype, name))
    if enabled and not external and required:
        data = spec.get("plugin_data")
        if data is None and spec.get("plugin_data_file") is None:
            data = {}
        if data is not None:  # plugin_data_file cannot be inspected here
            missing = [k for k in required if data.get(k) in (None, "")]
            if missing:
                raise SpireTpmError("%s %s \"%s\" plugin_data lacks %s (SPIRE refuses to configure the plugin)"
                                    % (kind, ptype, name, ", ".join(missing)),
                                    "set %s in plugins.%s.%s.plugin_data" % (", ".join(required), ptype, name))
    return enabled


def validate(kind, config, allow_insecure_bootstrap=False):
    """Check the configuration data against SPIRE's rules; return a list of warnings, raise SpireTpmError on errors."""
    _check_kind(kind)
    warnings = []
    if not isinstance(config, dict):
        raise SpireTpmError("the configuration is a %s, not a mapping" % type(config).__name__,
                            "pass the SPIRE configuration as a mapping with '%s' and 'plugins' keys" % kind)
    other = "agent" if kind == "server" else "server"
    allowed_top = (kind, "plugins", "health_checks", "telemetry")
    for key in config:
        if key == other:
            raise SpireTpmError("a %s configuration has a '%s' section" % (kind, other),
                                "use kind=%s for this configuration, or rename the section to '%s'" % (other, kind))
        if key not in allowed_top:
            raise SpireTpmError("unknown top-level section %r (SPIRE: \"unknown configuration detected\")" % (key,),
                                "the top level holds only %s" % ", ".join(allowed_top))
    section = config.get(kind)
    if not isinstance(section, dict):
        raise SpireTpmError("the configuration has no '%s' section (SPIRE: \"%s section must be configured\")"
                            % (kind, kind), "add a '%s' mapping with trust_domain and the other settings" % kind)
    unknown = sorted(k for k in section if k not in SECTION_KEYS[kind] and section[k] is not None)
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), SECTION_KEYS[kind], n=1)
            hints.append("%s (did you mean %s?)" % (k, close[0]) if close else str(k))
        raise SpireTpmError("unknown key(s) in the %s section: %s (SPIRE refuses to start: \"unknown "
                            "configuration detected\")" % (kind, ", ".join(hints)),
                            "use the key names of SPIRE's %s configuration reference" % kind)
    if kind == "server":
        _check_server_section(section)
    else:
        _check_agent_section(section, allow_insecure_bootstrap)
    for key in ("health_checks", "telemetry"):
        if config.get(key) is not None and not isinstance(config[key], dict):
            raise SpireTpmError("%s is not a mapping" % key, "give %s as a mapping of its settings" % key)
    plugins = config.get("plugins")
    if not isinstance(plugins, dict):
        raise SpireTpmError("the configuration has no 'plugins' section (SPIRE: \"plugins section must be "
                            "configured\")", "add plugins with at least a KeyManager and a NodeAttestor")
    counts = {}
    for ptype, named in plugins.items():
        if ptype not in BUILTIN_PLUGINS[kind]:
            close = difflib.get_close_matches(str(ptype), BUILTIN_PLUGINS[kind], n=1)
            raise SpireTpmError("unsupported plugin type %r for a %s (SPIRE: \"unsupported plugin type\")%s"
                                % (ptype, kind, " — did you mean %s?" % close[0] if close else ""),
                                "a %s knows the plugin types %s" % (kind, ", ".join(sorted(BUILTIN_PLUGINS[kind]))))
        if not isinstance(named, dict):
            raise SpireTpmError("plugins.%s is a %s, not a mapping of plugin names" % (ptype, type(named).__name__),
                                "write plugins.%s as {<plugin name>: {plugin_data: {...}}}" % ptype)
        for name, spec in named.items():
            if not isinstance(name, str) or not name:
                raise SpireTpmError("plugins.%s has a plugin with name %r" % (ptype, name),
                                    "name each plugin with a non-empty string")
            if _check_plugin(kind, ptype, name, spec, warnings):
                counts[ptype] = counts.get(ptype, 0) + 1
    for ptype, (low, high) in sorted(CONSTRAINTS[kind].items()):
        n = counts.get(ptype, 0)
        if low == high and n != low:
            want = "exactly %d" % low
        elif n < low:
            want = "at least %d" % low
        elif high is not None and n > high:
            want = "at most %d" % high
        else:
            continue
        if kind == "agent" and ptype == "NodeAttestor":
            fix = ("an agent attests with exactly one enabled NodeAttestor; keep one (disable others with "
                   "enabled: false)")
        elif ptype == "DataStore":
            fix = "configure DataStore \"sql\" (e.g. sqlite3 under data_dir)"
        elif kind == "server" and ptype == "NodeAttestor":
            fix = "enable at least one NodeAttestor (e.g. tpm_devid and/or join_token) or no agent can attest"
        else:
            fix = "configure %s enabled %s plugin(s)" % (want, ptype)
        raise SpireTpmError("plugin type \"%s\" constraint not satisfied: expected %s but got %d"
                            % (ptype, want, n), fix, plugin_type=ptype)
    return warnings


def node_attestors(config):
    """Names of the enabled NodeAttestor plugins, sorted."""
    named = ((config or {}).get("plugins") or {}).get("NodeAttestor") or {}
    return sorted(n for n, spec in named.items() if isinstance(spec, dict) and _is_enabled(spec))


# --------------------------------------------------------------------------------------------------------------
# Secrets

def _is_secret_key(key, secret_keys):
    k = str(key).lower()
    return any(s.lower() in k for s in secret_keys)


def secret_values(config, secret_keys=DEFAULT_SECRET_KEYS):
    """Every non-empty scalar value held under a secret-looking key (for Ansible's no_log_values)."""
    found = set()

    def walk(value, secret):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, secret or _is_secret_key(k, secret_keys))
        elif isinstance(value, list):
            for v in value:
                walk(v, secret)
        elif secret and value not in (None, "") and not isinstance(value, bool):
            found.add(str(value))

    walk(config, False)
    return found


_ASSIGN_RE = re.compile(r'^(\s*)("(?:[^"\\]|\\.)*"|[A-Za-z_][\w.\-]*)(\s*=\s*)(.+)$')


def mask_text(text, secret_keys=DEFAULT_SECRET_KEYS):
    """Replace the values of secret-looking keys in HCL text (one assignment per line, as render() writes)."""
    if text is None:
        return None
    out = []
    for line in text.splitlines(True):
        m = _ASSIGN_RE.match(line.rstrip("\r\n"))
        if m and _is_secret_key(m.group(2).strip('"'), secret_keys):
            end = line[len(line.rstrip("\r\n")):]
            line = '%s%s%s"%s"%s' % (m.group(1), m.group(2), m.group(3), MASK, end)
        out.append(line)
    return "".join(out)


def build(kind, config, allow_insecure_bootstrap=False):
    """Validate then render; return (text, warnings)."""
    warnings = validate(kind, config, allow_insecure_bootstrap=allow_insecure_bootstrap)
    return render(kind, config), warnings


# --------------------------------------------------------------------------------------------------------------
# Writing the file (what the spire_config module does)

def run_validate(validate_bin, text, directory=None, timeout=120):
    """Run ``<validate_bin> validate -config <tmpfile>`` on the text; raise SpireTpmError when SPIRE rejects it.

    Returns the command's combined output. The temporary file (mode 0600) is removed afterwards.
    """
    if directory is None or not os.path.isdir(directory):
        directory = tempfile.gettempdir()
    fd, tmp = tempfile.mkstemp(prefix=".spire-config-validate.", suffix=".conf", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        try:
            proc = subprocess.run([validate_bin, "validate", "-config", tmp], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, timeout=timeout, check=False)
        except OSError as e:
            raise SpireTpmError("cannot run %s: %s" % (validate_bin, e.strerror or e),
                                "point validate_bin at the installed spire-server/spire-agent binary, or unset it")
        except subprocess.TimeoutExpired:
            raise SpireTpmError("%s validate did not finish within %d s" % (validate_bin, timeout),
                                "check that the configured DataStore/KeyManager backends are reachable")
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    output = proc.stdout.decode("utf-8", "replace").replace(tmp, "<config>").strip()
    if proc.returncode != 0:
        raise SpireTpmError("%s validate rejected the configuration (exit %d): %s"
                            % (validate_bin, proc.returncode, output),
                            "fix the setting SPIRE names above", validate_output=output)
    return output


def backup_path(path):
    stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime())
    candidate = "%s.%s.bak" % (path, stamp)
    n = 1
    while os.path.exists(candidate):
        candidate = "%s.%s-%d.bak" % (path, stamp, n)
        n += 1
    return candidate


def ensure_config(path, kind, config, validate_bin=None, backup=True, owner=None, group=None, mode=0o640,
                  secret_keys=DEFAULT_SECRET_KEYS, allow_insecure_bootstrap=False, check_mode=False):
    """Validate, render and (when it differs) atomically write a SPIRE configuration file.

    Returns a dict: changed, rendered (secrets masked), backup_file, node_attestors, validated, warnings, path,
    diff (masked before/after).
    """
    text, warnings = build(kind, config, allow_insecure_bootstrap=allow_insecure_bootstrap)
    data = text.encode("utf-8")
    mf = ManagedFile(path, mode=parse_mode(mode, 0o640), owner=owner, group=group, secret=False)
    content_changes = mf.before != data
    validated = False
    if validate_bin and content_changes and os.path.isfile(validate_bin) and os.access(validate_bin, os.X_OK):
        run_validate(validate_bin, text, os.path.dirname(os.path.abspath(path)))
        validated = True
    backup_file = None
    if backup and content_changes and mf.before is not None and not check_mode:
        backup_file = backup_path(path)
        shutil.copy2(path, backup_file)
    changed = mf.write(data, check_mode=check_mode)
    before_text = mf.before.decode("utf-8", "replace") if mf.before is not None else ""
    diff = {"before": mask_text(before_text, secret_keys), "after": mask_text(text, secret_keys),
            "before_header": path, "after_header": path}
    return {
        "changed": changed,
        "path": path,
        "rendered": mask_text(text, secret_keys),
        "backup_file": backup_file,
        "node_attestors": node_attestors(config),
        "validated": validated,
        "warnings": warnings,
        "diff": diff,
    }
