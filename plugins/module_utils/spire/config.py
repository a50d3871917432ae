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
cmd/spire-{server,agent}/cli/run, read at v1.13.3 and v1.15.3; ``version`` selects that line's plugin names and
keys) plus two collection policies with overrides (insecure_bootstrap, unknown plugin-block keys), each failure a
``SpireTpmError`` naming the cause and the fix. ``path_problems()`` finds the files SPIRE reads at start-up that are
missing. tests/integration/config/test_config_vs_spire.py holds every verdict against the real daemons' ``run``.
This file imports nothing from Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import difflib
import hashlib
import math
import os
import re
import shutil
import subprocess
import tempfile
import time

try:
    from urllib.parse import parse_qs, urlparse
except ImportError:  # pragma: no cover - Python 2
    from urlparse import parse_qs, urlparse  # type: ignore

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

# SPIRE versions whose sources these tables were read from (cmd/spire-{server,agent}/cli/run/run.go,
# pkg/{server,agent}/catalog/*.go, pkg/common/catalog) and checked against the running binaries. A version of
# another minor line is checked against the union of what these know (see version_family()).
KNOWN_VERSIONS = ("1.13.3", "1.15.3")

# Built-in plugin names per kind, type and minor version. DataStore is special-cased in the server catalog: only
# the built-in "sql" exists and it cannot be external.
_NA_113 = ("aws_iid", "azure_msi", "gcp_iit", "http_challenge", "join_token", "k8s_psat", "sshpop", "tpm_devid",
           "x509pop")
_BUILTINS_113 = {
    "server": {
        "BundlePublisher": ("aws_rolesanywhere_trustanchor", "aws_s3", "gcp_cloudstorage", "k8s_configmap"),
        "CredentialComposer": ("uniqueid",),
        "DataStore": ("sql",),
        "KeyManager": ("aws_kms", "azure_key_vault", "disk", "gcp_kms", "memory"),
        "NodeAttestor": _NA_113,
        "Notifier": ("gcs_bundle", "k8sbundle"),
        "UpstreamAuthority": ("aws_pca", "awssecret", "cert-manager", "disk", "ejbca", "gcp_cas", "spire", "vault"),
    },
    "agent": {
        "KeyManager": ("disk", "memory"),
        "NodeAttestor": _NA_113,
        "SVIDStore": ("aws_secretsmanager", "gcp_secretmanager"),
        "WorkloadAttestor": ("docker", "k8s", "systemd", "unix", "windows"),
    },
}
_BUILTINS_ADDED_115 = {
    "server": {"BundlePublisher": ("azure_blob",), "KeyManager": ("hashicorp_vault",), "NodeAttestor": ("azure_imds",)},
    "agent": {"NodeAttestor": ("azure_imds",), "WorkloadAttestor": ("slurm",)},
}

# (min, max) enabled plugins per type; None = unbounded (SPIRE's catalog constraints). The server's DataStore is
# counted whether enabled or not: SPIRE loads it before the catalog and does not look at "enabled".
CONSTRAINTS = {
    "server": {"BundlePublisher": (0, None), "CredentialComposer": (0, None), "DataStore": (1, 1),
               "KeyManager": (1, 1), "NodeAttestor": (0, None), "Notifier": (0, None), "UpstreamAuthority": (0, 1)},
    "agent": {"KeyManager": (1, 1), "NodeAttestor": (1, 1), "SVIDStore": (0, None), "WorkloadAttestor": (1, None)},
}

PLUGIN_TYPE_ORDER = ("DataStore", "KeyManager", "NodeAttestor", "UpstreamAuthority", "Notifier", "BundlePublisher",
                     "CredentialComposer", "WorkloadAttestor", "SVIDStore")
PLUGIN_KEY_ORDER = ("plugin_cmd", "plugin_args", "plugin_checksum", "enabled", "plugin_data_file", "plugin_data")
TOP_LEVEL_ORDER = ("server", "agent", "plugins", "health_checks", "telemetry")

# Keys of the server/agent sections with the Go type SPIRE decodes them into (hcl tags of serverConfig/agentConfig
# in cmd/spire-{server,agent}/cli/run/run.go). hcl v1 decodes a number into a string field and a string into an
# int field (Go's strconv.ParseInt, base 0), but nothing else into a bool. SPIRE refuses to start on any other key
# ("unknown configuration detected"). "dur" = a string Go's time.ParseDuration must accept.
_SECTION_113 = {
    "server": {
        "admin_ids": "strlist", "agent_ttl": "dur", "audit_log_enabled": "bool", "bind_address": "str",
        "bind_port": "int", "ca_key_type": "str", "ca_subject": "block", "ca_ttl": "dur", "data_dir": "str",
        "default_x509_svid_ttl": "dur", "default_jwt_svid_ttl": "dur", "experimental": "block",
        "federation": "block", "jwt_issuer": "str", "jwt_key_type": "str", "log_file": "str", "log_level": "str",
        "log_format": "str", "log_source_location": "bool", "prune_attested_nodes_expired_for": "dur",
        "prune_tofu_nodes": "bool", "ratelimit": "block", "socket_path": "str", "trust_domain": "str",
        "max_attested_node_info_staleness": "dur", "profiling_enabled": "bool", "profiling_port": "int",
        "profiling_freq": "int", "profiling_names": "strlist"},
    "agent": {
        "data_dir": "str", "admin_socket_path": "str", "insecure_bootstrap": "bool", "retry_bootstrap": "bool",
        "rebootstrap_mode": "str", "rebootstrap_delay": "dur", "join_token": "str", "join_token_file": "str",
        "log_file": "str", "log_format": "str", "log_level": "str", "log_source_location": "bool", "sds": "block",
        "server_address": "str", "server_port": "int", "socket_path": "str", "workload_x509_svid_key_type": "str",
        "trust_bundle_format": "str", "trust_bundle_path": "str", "trust_bundle_unix_socket": "str",
        "trust_bundle_url": "str", "trust_domain": "str", "allow_unauthenticated_verifiers": "bool",
        "allowed_foreign_jwt_claims": "strlist", "availability_target": "dur", "x509_svid_cache_max_size": "int",
        "jwt_svid_cache_max_size": "int", "authorized_delegates": "strlist", "profiling_enabled": "bool",
        "profiling_port": "int", "profiling_freq": "int", "profiling_names": "strlist", "experimental": "block"},
}
_SECTION_ADDED_115 = {
    "server": {"disable_jwt_svids": "bool", "prune_attested_nodes_batch_size": "int",
               "proxy_protocol_trusted_cidrs": "strlist"},
    "agent": {"log_selectors": "strlist", "disable_workload_api": "bool", "disable_sds_api": "bool",
              "trust_bundle_spiffe_workload_api": "str"},
}
_SECTION_REMOVED_115 = {"server": (), "agent": ("retry_bootstrap",)}

# health_checks (pkg/common/health.Config; unknown keys refused) — bind_port is a string there.
HEALTH_CHECK_KEYS = {"listener_enabled": "bool", "bind_address": "str", "bind_port": "str", "ready_path": "str",
                     "live_path": "str"}
# telemetry: SPIRE does not check the top level's keys, only those of these sinks (pkg/common/telemetry/config.go).
TELEMETRY_SINK_KEYS = {"Prometheus": ("host", "port"), "DogStatsd": ("address",), "Statsd": ("address",),
                       "M3": ("address", "env"), "InMem": ()}

PLUGIN_KEYS = frozenset(PLUGIN_KEY_ORDER)

# Required plugin_data keys of built-in plugins whose Configure refuses to start without them:
# tpm_devid (pkg/{server,agent}/plugin/nodeattestor/tpmdevid), the sql DataStore (sqlstore configuration.Validate),
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
# Built-ins with no configuration interface: SPIRE refuses to start when they get a non-empty plugin_data or any
# plugin_data_file ("no supported configuration interface found"; pkg/common/catalog/configure.go).
NO_CONFIG_BUILTINS = frozenset((("server", "CredentialComposer", "uniqueid"), ("server", "KeyManager", "memory"),
                                ("agent", "KeyManager", "memory"), ("agent", "NodeAttestor", "join_token"),
                                ("agent", "WorkloadAttestor", "systemd"), ("agent", "WorkloadAttestor", "slurm")))
SQL_DATABASE_TYPES = ("sqlite3", "postgres", "mysql")
SQL_DATABASE_TYPE_BLOCKS = ("aws_mysql", "aws_postgres")
LOG_LEVELS = ("panic", "fatal", "error", "warn", "warning", "info", "debug", "trace")
LOG_FORMATS = ("", "text", "json")
SERVER_KEY_TYPES = ("rsa-2048", "rsa-4096", "ec-p256", "ec-p384")
WORKLOAD_KEY_TYPES = {"1.13": ("rsa-2048", "ec-p256"), "1.15": ("rsa-2048", "ec-p256", "ec-p384")}
REBOOTSTRAP_MODES = ("", "never", "auto", "always")
# Longest unix socket path Linux binds (sun_path is 108 bytes with the terminating NUL).
MAX_SOCKET_PATH = 107
# Linux TPM device names spire-agent's tpm_devid autodetection looks for in /dev, in this order.
TPM_DEVICE_PATTERNS = (re.compile(r"^tpmrm\d+$"), re.compile(r"^tpm\d+$"))


def _merge_names(a, b):
    out = {}
    for kind in KINDS:
        out[kind] = dict((t, tuple(sorted(set(a[kind].get(t, ())) | set(b[kind].get(t, ())))))
                         for t in set(a[kind]) | set(b[kind]))
    return out


def _section_115():
    out = {}
    for kind in KINDS:
        keys = dict(_SECTION_113[kind])
        keys.update(_SECTION_ADDED_115[kind])
        for k in _SECTION_REMOVED_115[kind]:
            keys.pop(k, None)
        out[kind] = keys
    return out


_EMPTY_NAMES = {"server": {}, "agent": {}}
BUILTINS_BY_FAMILY = {"1.13": _merge_names(_BUILTINS_113, _EMPTY_NAMES),
                      "1.15": _merge_names(_BUILTINS_113, _BUILTINS_ADDED_115)}
SECTION_KEYS_BY_FAMILY = {"1.13": _SECTION_113, "1.15": _section_115()}
# The union: what the checks use when the SPIRE version is not known (or of a minor line not read).
BUILTIN_PLUGINS = _merge_names(BUILTINS_BY_FAMILY["1.13"], BUILTINS_BY_FAMILY["1.15"])
SECTION_TYPES = dict((kind, dict(list(_SECTION_113[kind].items()) + list(_SECTION_ADDED_115[kind].items())))
                     for kind in KINDS)
SECTION_KEYS = dict((kind, frozenset(SECTION_TYPES[kind])) for kind in KINDS)
NODE_ATTESTORS = BUILTIN_PLUGINS["server"]["NodeAttestor"]

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
            extra = sorted(k for k in spec if k not in PLUGIN_KEYS)  # only with allow_unknown_plugin_keys
            for k in PLUGIN_KEY_ORDER + tuple(extra):
                v = spec.get(k)
                if v is None:
                    continue
                if k == "plugin_data" or (k in extra and isinstance(v, dict)):
                    lines.extend(_render_block(_key(k), v, 2, "%s.%s" % (where, k)))
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
    if isinstance(expected, dict) and isinstance(expected.get("plugins"), dict):
        # A plugin type with no plugins writes nothing (SPIRE reads both the same way).
        expected["plugins"] = dict((t, v) for t, v in expected["plugins"].items() if v != {})
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


def _minor(version):
    m = re.match(r"^v?(\d+)\.(\d+)(?:\.\d+)?", str(version or "").strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


def version_family(version):
    """'1.13' or '1.15' for a version of a minor line the tables were read from, else None (the union applies)."""
    minor = _minor(version)
    family = "%d.%d" % minor if minor else None
    return family if family in BUILTINS_BY_FAMILY else None


class _Rules(object):
    """The name and key tables for one SPIRE version (or their union when the version is unknown)."""

    def __init__(self, version):
        self.version = version
        self.family = version_family(version)
        minor = _minor(version)
        newest = max(_minor(v) for v in KNOWN_VERSIONS)
        # A newer SPIRE may know names and keys these tables do not: for it, unknown ones only warn.
        self.newer = minor is not None and minor > newest
        self.builtins = BUILTINS_BY_FAMILY[self.family] if self.family else BUILTIN_PLUGINS
        self.section = SECTION_KEYS_BY_FAMILY[self.family] if self.family else SECTION_TYPES
        self.workload_key_types = (WORKLOAD_KEY_TYPES[self.family] if self.family
                                   else WORKLOAD_KEY_TYPES["1.15"])

    def label(self):
        if self.family:
            return "SPIRE %s" % self.version
        return "SPIRE %s" % " or ".join(KNOWN_VERSIONS)


def _is_external(spec):
    cmd = spec.get("plugin_cmd")
    return isinstance(cmd, (str, int)) and not isinstance(cmd, bool) and str(cmd) != ""


def _is_enabled(spec):
    return spec.get("enabled", True) is not False


def _set(value):
    return value is not None and value != "" and value != 0


def go_parse_int(text):
    """The value of Go's ``strconv.ParseInt(text, 0, 64)`` (how hcl v1 reads a string into an int), else None."""
    if not isinstance(text, str) or not text:
        return None
    s = text
    sign = 1
    if s[0] in "+-":
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if not s:
        return None
    if "_" in s:
        # Go's underscoreOK: "_" only between digits (or right after a base prefix), never first or last.
        saw, i, hexa = "^", 0, False
        if len(s) >= 2 and s[0] == "0" and s[1].lower() in "box":
            i, saw, hexa = 2, "0", s[1].lower() == "x"
        for ch in s[i:]:
            if ch.isdigit() or (hexa and ch.lower() in "abcdef"):
                saw = "0"
            elif ch == "_":
                if saw != "0":
                    return None
                saw = "_"
            else:
                if saw == "_":
                    return None
                saw = "!"
        if saw == "_":
            return None
        s = s.replace("_", "")
    low = s.lower()
    if len(low) >= 3 and low[0] == "0" and low[1] in "box":
        base, digits = {"b": 2, "o": 8, "x": 16}[low[1]], low[2:]
    elif low[0] == "0" and len(low) > 1:
        base, digits = 8, low[1:]
    else:
        base, digits = 10, low
    if not digits or any(ch not in "0123456789abcdef"[:base] for ch in digits):
        return None
    value = sign * int(digits, base)
    if not -(1 << 63) <= value < (1 << 63):
        return None
    return value


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, u"\u00b5s": 1e-6, u"\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                   "h": 3600.0}
_DURATION_PART_RE = re.compile(u"(\\d+\\.?\\d*|\\.\\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def go_duration_seconds(text):
    """Seconds of a Go ``time.ParseDuration`` string (e.g. ``1h30m``, ``90s``), or None when Go refuses it."""
    if not isinstance(text, str) or not text:
        return None
    s = text
    sign = 1.0
    if s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        return None
    total, pos = 0.0, 0
    while pos < len(s):
        m = _DURATION_PART_RE.match(s, pos)
        if not m:
            return None
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return sign * total


_TD_CHARS_RE = re.compile(r"^[a-z0-9._-]+$")


def trust_domain_problem(value):
    """Why SPIRE (go-spiffe's ``TrustDomainFromString``) refuses ``value`` as trust_domain, or None.

    Like SPIRE, a value containing ``:/`` is read as a SPIFFE ID and its trust domain is used
    (``spiffe://example.org`` and ``spiffe://example.org/x`` both give example.org); names longer than 255
    bytes are only warned about by SPIRE."""
    if value == "":
        return "trust domain is missing"
    if ":/" in value:
        if not value.startswith(ids.SCHEME_PREFIX):
            return "scheme is missing or invalid"
        td, slash, path = value[len(ids.SCHEME_PREFIX):].partition("/")
        if not td:
            return "trust domain is missing"
        if not _TD_CHARS_RE.match(td):
            return ("trust domain characters are limited to lowercase letters, numbers, dots, dashes, and "
                    "underscores")
        return ids.path_problem("/" + path) if slash else None
    if not _TD_CHARS_RE.match(value):
        return "trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores"
    return None


def trust_domain_name(value):
    return value[len(ids.SCHEME_PREFIX):].partition("/")[0] if ":/" in value else value


def _typed(value, gotype, where):
    """The value as SPIRE's hcl v1 decoding reads it into a Go field of ``gotype``; raise when it cannot."""
    def refuse(what, fix):
        return SpireTpmError("%s is %r, %s (SPIRE cannot decode it: hcl v1 %s)"
                             % (where, value, what, fix[0]), fix[1])
    scalar = not isinstance(value, (bool, float, dict, list)) and isinstance(value, (str, int))
    if gotype in ("str", "dur"):
        if not scalar:
            raise refuse("not a string", ("reads only strings and integers into a string setting",
                                          "quote the value (a string)"))
        return str(value)
    if gotype == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and go_parse_int(value) is not None:
            return go_parse_int(value)
        raise refuse("not an integer", ("reads an integer or a string Go's strconv.ParseInt accepts",
                                        "give a whole number, e.g. 8081 or \"8081\""))
    if gotype == "bool":
        if isinstance(value, bool):
            return value
        raise refuse("not a boolean", ("reads only true or false (unquoted) into a boolean setting",
                                       "set it to true or false (unquoted)"))
    if gotype == "strlist":
        if not isinstance(value, list) or not all(
                isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
            raise refuse("not a list of strings", ("reads only a list (of strings or integers) into a list setting",
                                                   "give a list of strings, e.g. [\"a\", \"b\"]"))
        return [str(v) for v in value]
    if gotype == "block":
        if not isinstance(value, dict):
            raise refuse("not a mapping", ("reads only a block into this setting", "give a mapping of settings"))
        return value
    return value


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


def _unknown_builtin(kind, ptype, name, rules):
    spire_msg = 'no built-in plugin "%s" for type "%s"' % (name, ptype)
    known = rules.builtins[kind][ptype]
    if ptype == "NodeAttestor" and name == "tpm":
        return SpireTpmError(
            "%s NodeAttestor \"tpm\" has no plugin_cmd; SPIRE would fail with: %s. tpm is the external "
            "spire-tpm-plugin, not a built-in" % (kind, spire_msg),
            "tpm is the external spire-tpm-plugin: set plugin_cmd to the installed binary and plugin_checksum to "
            "its sha256, or use the built-in tpm_devid", plugin_type=ptype, plugin_name=name)
    elsewhere = [v for v in KNOWN_VERSIONS if name in BUILTINS_BY_FAMILY[version_family(v)][kind].get(ptype, ())]
    close = difflib.get_close_matches(name, known, n=2)
    hint = (" (did you mean %s?)" % " or ".join(close)) if close else ""
    if elsewhere:
        hint += " (a built-in of SPIRE %s)" % ", ".join(elsewhere)
    return SpireTpmError(
        "%s %s \"%s\" is not a built-in of %s and has no plugin_cmd; SPIRE would fail with: %s%s"
        % (kind, ptype, name, rules.label(), spire_msg, hint),
        "use one of the built-in %s plugins (%s), or set plugin_cmd (and plugin_checksum) for an external plugin"
        % (ptype, ", ".join(known)), plugin_type=ptype, plugin_name=name)


def _check_sql_plugin_data(data, where):
    dbtype = data.get("database_type")
    if isinstance(dbtype, dict):
        names = [k for k in dbtype if dbtype[k] is not None]
        if len(names) != 1 or names[0] not in SQL_DATABASE_TYPE_BLOCKS:
            raise SpireTpmError("%s.plugin_data.database_type is a block of %s (SPIRE: \"unknown database type\" / "
                                "\"exactly one database type is expected\")" % (where, ", ".join(names) or "nothing"),
                                "give database_type as sqlite3, postgres or mysql, or one block aws_postgres or "
                                "aws_mysql")
    elif dbtype is not None and str(dbtype) not in SQL_DATABASE_TYPES:
        raise SpireTpmError("%s.plugin_data.database_type is %r (SPIRE: \"unsupported database_type\")"
                            % (where, dbtype), "set database_type to sqlite3, postgres or mysql")


def _check_plugin(kind, ptype, name, spec, rules, allow_unknown_plugin_keys, warnings):
    where = "plugins.%s.%s" % (ptype, name)
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise SpireTpmError("%s is a %s, not a mapping" % (where, type(spec).__name__),
                            "give each plugin a mapping with plugin_data (and plugin_cmd/plugin_checksum if "
                            "external), e.g. {plugin_data: {}}")
    unknown = sorted(str(k) for k in spec if k not in PLUGIN_KEYS)
    if unknown:
        msg = ("%s has unknown key(s) %s; SPIRE ignores them silently (a misspelt plugin_checksum would leave the "
               "plugin unverified)" % (where, ", ".join(unknown)))
        if not allow_unknown_plugin_keys:
            raise SpireTpmError(msg + "; spire_config refuses them unless allow_unknown_plugin_keys is true",
                                "a plugin block holds only %s; plugin settings go inside plugin_data"
                                % ", ".join(PLUGIN_KEY_ORDER))
        warnings.append(msg)
    if spec.get("enabled") is not None:
        _typed(spec["enabled"], "bool", where + ".enabled")
    if spec.get("plugin_data") is not None and spec.get("plugin_data_file") is not None:
        raise SpireTpmError("%s sets both plugin_data and plugin_data_file (SPIRE: \"only one of [plugin_data, "
                            "plugin_data_file] can be used\")" % where, "keep only one of them")
    if spec.get("plugin_data") is not None and not isinstance(spec["plugin_data"], dict):
        raise SpireTpmError("%s.plugin_data is a %s, not a mapping" % (where, type(spec["plugin_data"]).__name__),
                            "give plugin_data as a mapping of the plugin's settings ({} when it has none)")
    for key in ("plugin_data_file", "plugin_cmd", "plugin_checksum"):
        if spec.get(key) is not None:
            _typed(spec[key], "str", "%s.%s" % (where, key))
    if spec.get("plugin_args") is not None:
        _typed(spec["plugin_args"], "strlist", where + ".plugin_args")
    external = _is_external(spec)
    enabled = _is_enabled(spec)
    checksum = str(spec.get("plugin_checksum") or "")
    if external and enabled and checksum:
        # Go's hex.DecodeString fails on a non-hex character and on an odd length, before the length check.
        if not _HEX64_RE.match(checksum) or len(checksum) % 2:
            raise SpireTpmError("%s.plugin_checksum is not a hex string (SPIRE: \"checksum is not a valid hex "
                                "string\")" % where, "set it to the sha256 of the plugin binary (sha256sum)")
        if len(checksum) != 64:
            raise SpireTpmError("%s.plugin_checksum has %d characters (SPIRE: \"expected checksum of length 64; "
                                "got %d\")" % (where, len(checksum), len(checksum)),
                                "set it to the 64-hex-digit SHA-256 of the plugin binary (sha256sum <plugin_cmd>)")
    elif checksum and not external:
        warnings.append("%s has plugin_checksum but no plugin_cmd: SPIRE ignores the checksum of a built-in" % where)
    elif external and enabled:
        warnings.append("%s is external without plugin_checksum: SPIRE only warns and runs the binary unverified"
                        % where)
    if ptype == "NodeAttestor" and name == "join_token" and external and enabled:
        raise SpireTpmError("%s has a plugin_cmd (SPIRE: \"the built-in join_token node attestor cannot be "
                            "overridden by an external plugin\")" % where, "remove plugin_cmd from join_token")
    if ptype == "DataStore":
        # Loaded before (and apart from) the plugin catalog: "enabled" is not looked at.
        if name != "sql" or external:
            raise SpireTpmError("%s: SPIRE supports only the built-in DataStore \"sql\" (\"pluggability for the "
                                "DataStore is deprecated\")" % where, "configure DataStore \"sql\" without plugin_cmd")
        enabled = True
    if enabled and not external and name not in rules.builtins[kind][ptype]:
        err = _unknown_builtin(kind, ptype, name, rules)
        if rules.newer and name != "tpm":
            warnings.append("%s (SPIRE %s is newer than the versions spire_config knows: its own start-up decides)"
                            % (err.message, rules.version))
        else:
            raise err
    data = spec.get("plugin_data")
    if enabled and not external and (kind, ptype, name) in NO_CONFIG_BUILTINS:
        if spec.get("plugin_data_file") is not None or normalise(data or {}):
            raise SpireTpmError("%s has %s, but the built-in %s \"%s\" takes no configuration (SPIRE: \"no "
                                "supported configuration interface found\")"
                                % (where, "plugin_data_file" if spec.get("plugin_data_file") is not None
                                   else "settings in plugin_data", ptype, name),
                                "leave plugin_data empty ({}) and drop plugin_data_file")
    if data is None and spec.get("plugin_data_file") is None:
        data = {}
    required = REQUIRED_PLUGIN_DATA.get((kind, ptype, name))
    if enabled and not external and data is not None:  # plugin_data_file is read by SPIRE, not here
        if required:
            missing = [k for k in required if not _set(data.get(k))]
            if missing:
                raise SpireTpmError("%s %s \"%s\" plugin_data lacks %s (SPIRE: \"%s is required\")"
                                    % (kind, ptype, name, ", ".join(missing), missing[0]),
                                    "set %s in plugins.%s.%s.plugin_data" % (", ".join(required), ptype, name))
        if ptype == "DataStore":
            _check_sql_plugin_data(data, where)
    return enabled


def validate(kind, config, allow_insecure_bootstrap=False, version=None, allow_unknown_plugin_keys=False):
    """Check the configuration data against SPIRE's rules; return a list of warnings, raise SpireTpmError on errors.

    ``version`` (e.g. "1.13.3") selects the plugin names and section keys of that SPIRE line; without it the
    union of the known versions applies. Files the configuration names are checked by ``check_referenced_files()``."""
    _check_kind(kind)
    rules = _Rules(version)
    warnings = []
    if not isinstance(config, dict):
        raise SpireTpmError("the configuration is a %s, not a mapping" % type(config).__name__,
                            "pass the SPIRE configuration as a mapping with '%s' and 'plugins' keys" % kind)
    other = "agent" if kind == "server" else "server"
    allowed_top = (kind, "plugins", "health_checks", "telemetry")
    for key in config:
        if config[key] is None:
            continue
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
    typed = _section_typed(kind, section, rules, warnings)
    if config.get("plugins") is None:
        raise SpireTpmError("the configuration has no 'plugins' section (SPIRE: \"plugins section must be "
                            "configured\")", "add plugins with at least a KeyManager and a NodeAttestor")
    if kind == "server":
        _check_server_section(typed, rules, warnings)
    else:
        _check_agent_section(typed, rules, allow_insecure_bootstrap, warnings)
    if config.get("health_checks") is not None:
        _check_health_checks(config["health_checks"])
    if config.get("telemetry") is not None:
        _check_telemetry(config["telemetry"])
    plugins = config["plugins"]
    if not isinstance(plugins, dict):
        raise SpireTpmError("plugins is a %s, not a mapping of plugin types" % type(plugins).__name__,
                            "write plugins as {<plugin type>: {<plugin name>: {plugin_data: {...}}}}")
    counts = {}
    for ptype, named in plugins.items():
        if named is None:
            continue
        if ptype not in rules.builtins[kind]:
            close = difflib.get_close_matches(str(ptype), list(rules.builtins[kind]), n=1)
            raise SpireTpmError("unsupported plugin type %r for a %s (SPIRE: \"unsupported plugin type\")%s"
                                % (ptype, kind, " — did you mean %s?" % close[0] if close else ""),
                                "a %s knows the plugin types %s" % (kind, ", ".join(sorted(rules.builtins[kind]))))
        if not isinstance(named, dict):
            raise SpireTpmError("plugins.%s is a %s, not a mapping of plugin names" % (ptype, type(named).__name__),
                                "write plugins.%s as {<plugin name>: {plugin_data: {...}}}" % ptype)
        for name, spec in named.items():
            if not isinstance(name, str) or not name:
                raise SpireTpmError("plugins.%s has a plugin with name %r" % (ptype, name),
                                    "name each plugin with a non-empty string")
            if _check_plugin(kind, ptype, name, spec, rules, allow_unknown_plugin_keys, warnings):
                counts[ptype] = counts.get(ptype, 0) + 1
    if kind == "server" and counts.get("DataStore", 0) > 1:
        raise SpireTpmError("%d DataStore plugins are configured (SPIRE: \"only one DataStore plugin is allowed\")"
                            % counts["DataStore"], "configure exactly one DataStore \"sql\"")
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
            raise SpireTpmError("no DataStore is configured (SPIRE: \"expecting a DataStore plugin\")", fix,
                                plugin_type=ptype)
        else:
            fix = "configure %s enabled %s plugin(s)" % (want, ptype)
        raise SpireTpmError("plugin type \"%s\" constraint not satisfied: expected %s but got %d"
                            % (ptype, want, n), fix, plugin_type=ptype)
    if kind == "server" and not counts.get("NodeAttestor"):
        warnings.append("the server has no enabled NodeAttestor: SPIRE starts, and only join-token agents can "
                        "attest (SPIRE handles join tokens without the plugin)")
    if kind == "agent" and _set(typed.get("join_token")) and counts.get("NodeAttestor") \
            and "join_token" not in node_attestors(config):
        warnings.append("agent.join_token is set: the agent attests with the join token and does not use its "
                        "NodeAttestor %s until its data_dir is cleared" % ", ".join(node_attestors(config)))
    return warnings


# --------------------------------------------------------------------------------------------------------------
# Files the configuration names (checked on the host that will run SPIRE, where the module runs)

def _readable_file(path):
    return os.path.isfile(path) and os.access(path, os.R_OK)


def _has_certificate(path):
    try:
        with open(path, "rb") as f:
            return b"-----BEGIN CERTIFICATE-----" in f.read()
    except (IOError, OSError):
        return False


def _tpm_autodetect(dev_dir="/dev"):
    """What spire-agent's tpm_devid autodetection finds: (path, None) or (None, problem)."""
    try:
        names = sorted(os.listdir(dev_dir))
    except OSError as e:
        return None, "cannot list %s: %s" % (dev_dir, e.strerror)
    for pattern in TPM_DEVICE_PATTERNS:
        found = [n for n in names if pattern.match(n)]
        if len(found) > 1:
            return None, "more than one possible TPM device was found (%s)" % ", ".join(found)
        if found:
            return os.path.join(dev_dir, found[0]), None
    return None, "not found (no %s/tpmrm<N> or %s/tpm<N>)" % (dev_dir, dev_dir)


def _sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def path_problems(kind, config):
    """Every file SPIRE reads at start-up that is missing or unusable: a list of (cause, fix) pairs.

    Covered: join_token_file, plugin_data_file, plugin_cmd (exists, executable, matches plugin_checksum),
    tpm_devid's certificate, key blobs and TPM device (agent; an empty tpm_device_path means SPIRE's
    autodetection in /dev) and its CA bundles (server). Only enabled plugins count."""
    problems = []
    section = config.get(kind) or {}
    jtf = section.get("join_token_file")
    if kind == "agent" and _set(jtf):
        if not _readable_file(str(jtf)):
            problems.append(("agent.join_token_file %s is not a readable file (SPIRE: \"unable to read join token "
                             "file\")" % jtf, "write the join token there before the agent starts"))
        else:
            with open(str(jtf), "rb") as f:
                if not f.read().strip():
                    problems.append(("agent.join_token_file %s is empty (SPIRE: \"join token file is empty\")"
                                     % jtf, "write the join token into it"))
    for ptype, named in sorted((config.get("plugins") or {}).items()):
        for name, spec in sorted((named or {}).items()):
            spec = spec or {}
            if not isinstance(spec, dict) or (not _is_enabled(spec) and ptype != "DataStore"):
                continue
            where = "plugins.%s.%s" % (ptype, name)
            pdf = spec.get("plugin_data_file")
            if _set(pdf) and not _readable_file(str(pdf)):
                problems.append(("%s.plugin_data_file %s is not a readable file" % (where, pdf),
                                 "write the plugin's settings there, or use plugin_data"))
            if _is_external(spec):
                cmd = str(spec["plugin_cmd"])
                if not os.path.isfile(cmd):
                    problems.append(("%s.plugin_cmd %s does not exist (SPIRE: \"failed to launch plugin\")"
                                     % (where, cmd), "install the plugin binary there first"))
                elif not os.access(cmd, os.X_OK):
                    problems.append(("%s.plugin_cmd %s is not executable" % (where, cmd),
                                     "make it executable (mode 0755)"))
                else:
                    checksum = str(spec.get("plugin_checksum") or "").lower()
                    if len(checksum) == 64 and os.access(cmd, os.R_OK) and _sha256_file(cmd) != checksum:
                        problems.append(("%s.plugin_cmd %s has sha256 %s, not the plugin_checksum %s (SPIRE "
                                         "refuses to launch it)" % (where, cmd, _sha256_file(cmd), checksum),
                                         "install the right binary, or fix plugin_checksum"))
                continue
            data = spec.get("plugin_data") or {}
            if not isinstance(data, dict) or not (ptype == "NodeAttestor" and name == "tpm_devid"):
                continue
            if kind == "server":
                for key in ("devid_ca_path", "endorsement_ca_path"):
                    path = data.get(key)
                    if _set(path) and not _has_certificate(str(path)):
                        problems.append(("%s.plugin_data.%s %s is not a readable PEM file with a certificate "
                                         "(SPIRE: \"unable to load %s trust bundle\")"
                                         % (where, key, path, "DevID" if key == "devid_ca_path" else "endorsement"),
                                         "lay down the CA bundle before the server starts"))
            else:
                path = data.get("devid_cert_path")
                if _set(path) and not _has_certificate(str(path)):
                    problems.append(("%s.plugin_data.devid_cert_path %s is not a readable PEM file with a "
                                     "certificate (SPIRE: \"unable to load DevID files\")" % (where, path),
                                     "provision the DevID (trustroot.spire_tpm.devid_provision) before the agent"))
                for key in ("devid_priv_path", "devid_pub_path"):
                    path = data.get(key)
                    if _set(path) and not _readable_file(str(path)):
                        problems.append(("%s.plugin_data.%s %s is not a readable file (SPIRE: \"unable to load "
                                         "DevID files\")" % (where, key, path),
                                         "provision the DevID (trustroot.spire_tpm.devid_provision) before the "
                                         "agent"))
                device = data.get("tpm_device_path")
                if _set(device):
                    if not os.path.exists(str(device)):
                        problems.append(("%s.plugin_data.tpm_device_path %s does not exist (the agent cannot "
                                         "open its TPM)" % (where, device),
                                         "point tpm_device_path at /dev/tpmrm0 (or the TPM's socket)"))
                else:
                    found, problem = _tpm_autodetect()
                    if problem:
                        problems.append(("%s.plugin_data has no tpm_device_path and SPIRE's TPM autodetection "
                                         "fails on this host: %s (SPIRE: \"tpm autodetection failed\")"
                                         % (where, problem), "set tpm_device_path (e.g. /dev/tpmrm0)"))
    return problems


def check_referenced_files(kind, config, check_mode=False):
    """Raise on the first path problem; in check mode return them as warnings (earlier tasks may create them)."""
    problems = path_problems(kind, config)
    if problems and not check_mode:
        cause, fix = problems[0]
        raise SpireTpmError(cause, fix + " (or set check_files: false when the files come later)")
    return ["check mode: %s" % cause for cause, _fix in problems]


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


def build(kind, config, allow_insecure_bootstrap=False, version=None, allow_unknown_plugin_keys=False):
    """Validate then render; return (text, warnings)."""
    warnings = validate(kind, config, allow_insecure_bootstrap=allow_insecure_bootstrap, version=version,
                        allow_unknown_plugin_keys=allow_unknown_plugin_keys)
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


def _usable_binary(path):
    return bool(path) and os.path.isfile(path) and os.access(path, os.X_OK)


def binary_version(binary, timeout=30):
    """The SPIRE version ``<binary> --version`` reports (e.g. "1.13.3"), or None."""
    try:
        proc = subprocess.run([binary, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"\b(\d+\.\d+\.\d+)\S*", proc.stdout.decode("utf-8", "replace"))
    return m.group(1) if m else None


def ensure_config(path, kind, config, validate_bin=None, backup=True, owner=None, group=None, mode=0o640,
                  secret_keys=DEFAULT_SECRET_KEYS, allow_insecure_bootstrap=False, allow_unknown_plugin_keys=False,
                  check_files=True, check_mode=False):
    """Validate, render and (when it differs) atomically write a SPIRE configuration file.

    When ``validate_bin`` is an executable, its version selects the plugin names and section keys checked (else
    the union of the known versions) and, when the content changes, ``<validate_bin> validate`` must accept the
    new text. With ``check_files`` the files SPIRE reads at start-up must be there (in check mode: warnings).

    Returns a dict: changed, rendered (secrets masked), backup_file, node_attestors, validated, spire_version,
    warnings, path, diff (masked before/after).
    """
    version = binary_version(validate_bin) if _usable_binary(validate_bin) else None
    text, warnings = build(kind, config, allow_insecure_bootstrap=allow_insecure_bootstrap, version=version,
                           allow_unknown_plugin_keys=allow_unknown_plugin_keys)
    missing = check_referenced_files(kind, config, check_mode=check_mode) if check_files else []
    warnings.extend(missing)
    data = text.encode("utf-8")
    mf = ManagedFile(path, mode=parse_mode(mode, 0o640), owner=owner, group=group, secret=False)
    content_changes = mf.before != data
    validated = False
    if content_changes and _usable_binary(validate_bin):
        if missing:
            # check mode, files not there yet: SPIRE's validate (1.14+ loads plugins) would only repeat that
            warnings.append("check mode: %s validate not run, the files above are missing" % validate_bin)
        else:
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
        "spire_version": version,
        "warnings": warnings,
        "diff": diff,
    }
