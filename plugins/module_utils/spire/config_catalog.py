# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What each SPIRE version knows: the sections and their keys, the plugin types and built-in plugin names.

The tables were read from SPIRE's sources (cmd/spire-{server,agent}/cli/run/run.go, pkg/{server,agent}/catalog,
pkg/common/catalog) at the versions of ``KNOWN_VERSIONS`` and checked against the running binaries.
``version_family()`` maps a version (as ``binary_version()`` reads it from ``<binary> --version``) onto the line the
tables were read from; ``_Rules`` holds the tables the checks apply for one version (or the union of the known
versions when it is unknown). Also here: the catalog's constraints, the built-ins' required plugin_data and the value
sets SPIRE accepts (log levels, key types, ...).

This file imports nothing from Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import subprocess

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError


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


def binary_version(binary, timeout=30):
    """The SPIRE version ``<binary> --version`` reports (e.g. "1.13.3"), or None."""
    try:
        proc = subprocess.run([binary, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"\b(\d+\.\d+\.\d+)\S*", proc.stdout.decode("utf-8", "replace"))
    return m.group(1) if m else None
