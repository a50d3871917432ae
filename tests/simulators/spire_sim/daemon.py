"""The daemon side of the SPIRE simulator: ``run``, ``validate``, ``healthcheck`` and ``spire-agent api fetch x509``.

Test double only — never shipped. It is the oracle the collection's roles and modules are tested against, so it
re-implements SPIRE's rules straight from /work/shared/facts/spire.md and the spiffe/spire sources, independently of
``plugins/module_utils/spire/config.py`` (nothing from the collection is imported here).

What is simulated (as SPIRE does it)
------------------------------------
* Configuration loading: HCL (pyhcl), ``-expandEnv`` with Go's ``os.Expand`` rules (``$$`` stays ``$``), the
  section checks of ``cmd/spire-{server,agent}/cli/run`` (required keys, trust bundle sources, join_token vs
  join_token_file, unknown keys → "unknown configuration detected"), plugin blocks as ``pkg/common/catalog`` parses
  them (``plugin_data``/``plugin_data_file`` exclusive, duplicates), and the catalog: unsupported types, disabled
  plugins skipped, ``no built-in plugin "X" for type "T"``, external plugins (``plugin_cmd`` must exist; checksum
  hex/length/sha256 checked), external join_token refused, the DataStore rules, per-type constraints
  (agent: exactly one NodeAttestor and KeyManager, at least one WorkloadAttestor; server: exactly one KeyManager,
  at most one UpstreamAuthority, zero or more NodeAttestors), the required settings of the sql DataStore and the
  disk KeyManagers, and the built-in tpm_devid plugin's configuration (required keys; the server loads its CA
  bundles; the agent loads its DevID files and finds its TPM).
* ``validate``: the server checks configuration and catalog (plugin notes); the agent — like SPIRE's
  ``spire-agent validate`` — only loads the configuration: it does NOT catch unknown built-in plugin names.
* ``spire-server run``: listens on its API socket (``server.socket_path``, default
  /tmp/spire-server/private/api.sock), on ``bind_address:bind_port`` (TCP, accepts and closes) and, when
  ``health_checks.listener_enabled``, serves ``live_path``/``ready_path`` over HTTP. It sets the trust domain in the
  shared state (``spire_sim.state``, next to the socket), creates the CA, and registers itself in
  ``$SPIRE_SIM_REGISTRY`` (default /tmp/spire-sim-registry) as ``<bind_port>.json`` = {socket_path, pid,
  trust_domain, node_attestors: {name: {external, plugin_data}}, ...} so agents find it by ``server_port``.
  SIGTERM/SIGINT remove the socket and the registry entry.
* ``spire-agent run``: finds the server by ``server_port`` (registry + a live socket), checks that
  ``server_address:server_port`` accepts a TCP connection (a wrong address fails as in SPIRE), checks the trust
  bundle on bootstrap (``trust_bundle_path`` must hold the server CA; ``insecure_bootstrap`` skips it;
  ``trust_bundle_url`` is accepted unchecked), then attests:
  - a join token (``-joinToken``, ``join_token``, ``join_token_file``) wins over the configured NodeAttestor; the
    server handles it without a plugin; it is consumed; agent ID ``.../spire/agent/join_token/<token>``,
    not re-attestable, no selectors;
  - ``tpm_devid``: the server must have tpm_devid enabled; the DevID chain (leaf = first PEM, the rest
    intermediates) must verify against the server's ``devid_ca_path`` (chain built with cryptography, then
    ``openssl verify`` as the validity oracle); the pub blob must parse as a bare TPMT_PUBLIC (no 2-byte size
    prefix) of an RSA/ECC signing key whose public key is the certificate's; the priv blob must be a bare
    TPM2B_PRIVATE buffer; ``tpm_device_path`` must be reachable (a unix socket is connected to). Agent ID
    ``.../spire/agent/tpm_devid/<sha1 of leaf DER>``, selectors ``subject:cn:``, ``issuer:cn:``,
    ``ca:fingerprint:`` (as pkg/server/plugin/nodeattestor/tpmdevid/selectors.go), re-attestable;
  - external ``tpm`` (spire-tpm-plugin): the EK public key hash is read from a TPM through tpm2-tools
    (``SPIRE_SIM_TPM_TCTI``: the RSA EK certificate at NV 0x01c00002, else the persistent EK 0x81010001); the
    server accepts it when ``<hash_path>/<pubhash>`` exists. Agent ID ``.../spire/agent/tpm/<pubhash>``, selector
    ``tpm:pub_hash:<pubhash>``.
  The agent serves ``health_checks`` like the server. It is registered with ``state.register_agent``, an X.509 SVID is issued by the simulated CA and
  ``<data_dir>/agent-data.json`` is written. A valid cached agent-data.json means NO new attestation, even if the
  NodeAttestor changed; when the agent was evicted a re-attestable agent attests again, a non-re-attestable one
  drops its SVID and exits (checked at start and every second while running). The Workload API socket
  (``socket_path``, default /tmp/spire-agent/public/api.sock) is created, with ``<socket>.sim.json`` beside it.
* ``healthcheck``: connects to the socket: "Server is healthy." / "Agent is healthy." or SPIRE's failure text.
* ``spire-agent api fetch x509``: the agent's SVID plus one X.509 SVID per registration entry the agent is
  authorised for — parent = the agent ID, or parent = a node alias entry (parent ``/spire/server``) whose selectors
  are a subset of the agent's. Not filtered by the caller's workload selectors (no workload attestation).

What is NOT simulated
---------------------
No TPM cryptography: no credential activation, no TPM2_Certify, no nonce signatures, no EK certificate check
against ``endorsement_ca_path`` for tpm_devid, no loading of the DevID under SPIRE's SRK. No gRPC: the sockets
accept and close connections; the CLI talks to the shared state files. No SVID rotation, no other attestors.
"""

import base64
import datetime
import glob
import hashlib
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading

from . import state as sim_state
from .flags import FlagError, FlagSet

try:
    import hcl
except ImportError:  # pragma: no cover
    hcl = None

REGISTRY_DEFAULT = "/tmp/spire-sim-registry"
SERVER_SOCKET_DEFAULT = "/tmp/spire-server/private/api.sock"
AGENT_SOCKET_DEFAULT = "/tmp/spire-agent/public/api.sock"

NODE_ATTESTORS = ("aws_iid", "azure_imds", "azure_msi", "gcp_iit", "http_challenge", "join_token", "k8s_psat",
                  "sshpop", "tpm_devid", "x509pop")
BUILTINS = {
    "server": {
        "BundlePublisher": ("aws_rolesanywhere_trustanchor", "aws_s3", "azure_blob", "gcp_cloudstorage",
                            "k8s_configmap"),
        "CredentialComposer": ("uniqueid",),
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
# (min, max): catalog.ExactlyOne / AtLeastOne / MaybeOne / ZeroOrMore
CONSTRAINTS = {
    "server": {"BundlePublisher": (0, None), "CredentialComposer": (0, None), "KeyManager": (1, 1),
               "NodeAttestor": (0, None), "Notifier": (0, None), "UpstreamAuthority": (0, 1)},
    "agent": {"KeyManager": (1, 1), "NodeAttestor": (1, 1), "SVIDStore": (0, None), "WorkloadAttestor": (1, None)},
}
SECTION_KEYS = {
    "server": set("""admin_ids agent_ttl audit_log_enabled bind_address bind_port ca_key_type ca_subject ca_ttl data_dir
        default_x509_svid_ttl default_jwt_svid_ttl experimental federation disable_jwt_svids jwt_issuer jwt_key_type
        log_file log_level log_format log_source_location prune_attested_nodes_expired_for
        prune_attested_nodes_batch_size prune_tofu_nodes proxy_protocol_trusted_cidrs ratelimit socket_path
        trust_domain max_attested_node_info_staleness profiling_enabled profiling_port profiling_freq
        profiling_names""".split()),
    "agent": set("""data_dir admin_socket_path insecure_bootstrap rebootstrap_mode rebootstrap_delay join_token
        join_token_file log_file log_format log_level log_selectors log_source_location sds server_address
        server_port socket_path disable_workload_api disable_sds_api workload_x509_svid_key_type trust_bundle_format
        trust_bundle_path trust_bundle_spiffe_workload_api trust_bundle_unix_socket trust_bundle_url trust_domain
        allow_unauthenticated_verifiers allowed_foreign_jwt_claims availability_target x509_svid_cache_max_size
        jwt_svid_cache_max_size authorized_delegates profiling_enabled profiling_port profiling_freq profiling_names
        experimental""".split()),
}
TD_RE = re.compile(r"^[a-z0-9._-]+$")


class ConfigError(Exception):
    """The configuration does not load (``run.LoadConfig`` fails)."""


class CatalogError(Exception):
    """A plugin does not load or configure (``catalog.Load`` fails)."""


class AttestError(Exception):
    pass


# --- logging (logrus text format, like SPIRE's default) ----------------------------------------------------------

def log(level, msg, **fields):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    parts = ['time="%s"' % now, "level=%s" % level, "msg=%s" % json.dumps(msg)]
    for k in sorted(fields):
        v = str(fields[k])
        parts.append("%s=%s" % (k, json.dumps(v) if (not v or re.search(r'[\s"=]', v)) else v))
    sys.stderr.write(" ".join(parts) + "\n")
    sys.stderr.flush()


# --- configuration ----------------------------------------------------------------------------------------------

def _is_special(c):
    return c in "*#$@!?-" or c.isdigit()


def _is_alnum(c):
    return c == "_" or ("0" <= c <= "9") or ("a" <= c <= "z") or ("A" <= c <= "Z")


def _shell_name(s):
    if s[0] == "{":
        if len(s) > 2 and _is_special(s[1]) and s[2] == "}":
            return s[1:2], 3
        for i in range(1, len(s)):
            if s[i] == "}":
                if i == 1:
                    return "", 2
                return s[1:i], i + 1
        return "", 1
    if _is_special(s[0]):
        return s[0:1], 1
    i = 0
    while i < len(s) and _is_alnum(s[i]):
        i += 1
    return s[:i], i


def expand_env(text, env=None):
    """SPIRE's config.ExpandEnv: Go's os.Expand with ``$`` mapped to itself."""
    env = os.environ if env is None else env
    out = []
    i = 0
    j = 0
    while j < len(text):
        if text[j] == "$" and j + 1 < len(text):
            out.append(text[i:j])
            name, w = _shell_name(text[j + 1:])
            if name == "" and w > 0:
                pass
            elif name == "":
                out.append("$")
            else:
                out.append("$" if name == "$" else env.get(name, ""))
            j += w
            i = j + 1
        j += 1
    out.append(text[i:])
    return "".join(out)


_UESC = re.compile(r"\\u([0-9a-fA-F]{4})")


def _decode(value):
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, str):
        return _UESC.sub(lambda m: chr(int(m.group(1), 16)), value)
    return value


def _block(value):
    """One HCL block: pyhcl gives a dict, or a list of dicts when repeated (merged like hcl.Decode into a struct)."""
    if isinstance(value, list):
        merged = {}
        for v in value:
            if isinstance(v, dict):
                merged.update(v)
        return merged
    return value if isinstance(value, dict) else None


def parse_config_file(path, expand):
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise ConfigError('unable to read configuration at "%s": open %s: %s'
                          % (path, path, (e.strerror or str(e)).lower()))
    if expand:
        text = expand_env(text)
    if hcl is None:
        raise ConfigError("the simulator needs pyhcl")
    try:
        return _decode(hcl.loads(text))
    except Exception as e:
        raise ConfigError('unable to decode configuration at "%s": %s' % (path, e))


def parse_plugins(node):
    """The plugin list as catalog.PluginConfigsFromHCLNode builds it: [(type, name, spec)]."""
    result = []
    seen = set()
    node = _block(node) if not isinstance(node, dict) else node
    for ptype, named in (node or {}).items():
        groups = named if isinstance(named, list) else [named]
        for group in groups:
            if not isinstance(group, dict):
                raise ConfigError("expected plugins node type *ast.ObjectList")
            for name, spec in group.items():
                if (ptype, name) in seen:
                    raise ConfigError('plugin "%s"/"%s" declared more than once' % (ptype, name))
                seen.add((ptype, name))
                spec = _block(spec) or {}
                if spec.get("plugin_data") is not None and spec.get("plugin_data_file") is not None:
                    raise ConfigError('failed to create plugin config for "%s"/"%s": only one of [plugin_data, '
                                      'plugin_data_file] can be used' % (ptype, name))
                data = spec.get("plugin_data")
                if data is not None:
                    data = _block(data) or {}
                elif spec.get("plugin_data_file"):
                    try:
                        with open(spec["plugin_data_file"]) as f:
                            data = _decode(hcl.loads(f.read())) if f else {}
                    except (OSError, ValueError):
                        data = None
                result.append({
                    "type": ptype, "name": name, "cmd": spec.get("plugin_cmd") or "",
                    "checksum": spec.get("plugin_checksum") or "", "args": spec.get("plugin_args") or [],
                    "data": data if data is not None else {}, "data_file": spec.get("plugin_data_file"),
                    "enabled": spec.get("enabled", True) is not False,
                })
    return result


def _unknown_keys(kind, section, top):
    for where, keys in (("top-level", [k for k in top if k not in (kind, "plugins", "telemetry", "health_checks")]),
                        (kind, [k for k in section if k not in SECTION_KEYS[kind]])):
        if keys:
            log("error", "Unknown configuration detected", section=where, keys=",".join(sorted(keys)))
            raise ConfigError("unknown configuration detected")


def load_config(kind, path, expand=False):
    """run.LoadConfig: returns {"section", "plugins", "health_checks", "raw"}; raises ConfigError."""
    raw = parse_config_file(path, expand)
    section = _block(raw.get(kind))
    if section is None:
        raise ConfigError("%s section must be configured" % kind)
    _unknown_keys(kind, section, raw)
    if kind == "server":
        section.setdefault("bind_address", "0.0.0.0")
        section.setdefault("bind_port", 8081)
        if not section.get("bind_address") or not section.get("bind_port"):
            raise ConfigError("bind_address and bind_port must be configured")
        if not section.get("trust_domain"):
            raise ConfigError("trust_domain must be configured")
        if not section.get("data_dir"):
            raise ConfigError("data_dir must be configured")
        if raw.get("plugins") is None:
            raise ConfigError("plugins section must be configured")
        if not TD_RE.match(str(section["trust_domain"])):
            raise ConfigError('could not parse trust_domain "%s": trust domain characters are limited to lowercase '
                              'letters, numbers, dots, dashes, and underscores' % section["trust_domain"])
    else:
        if section.get("join_token") and section.get("join_token_file"):
            raise ConfigError("only one of join_token or join_token_file can be specified, not both")
        if not section.get("server_address"):
            raise ConfigError("server_address must be configured")
        if not section.get("server_port"):
            raise ConfigError("server_port must be configured")
        if not section.get("trust_domain"):
            raise ConfigError("trust_domain must be configured")
        url, path_, wl = (section.get("trust_bundle_url"), section.get("trust_bundle_path"),
                          section.get("trust_bundle_spiffe_workload_api"))
        if wl:
            if section.get("insecure_bootstrap"):
                raise ConfigError("only one of insecure_bootstrap or trust_bundle_spiffe_workload_api can be "
                                  "specified, not both")
            if url:
                raise ConfigError("only one of trust_bundle_url or trust_bundle_spiffe_workload_api can be "
                                  "specified, not both")
            if path_:
                raise ConfigError("only one of trust_bundle_path or trust_bundle_spiffe_workload_api can be "
                                  "specified, not both")
        if section.get("insecure_bootstrap"):
            if url and path_:
                raise ConfigError("only one of insecure_bootstrap, trust_bundle_url, or trust_bundle_path can be "
                                  "specified, not the three options")
            if url:
                raise ConfigError("only one of insecure_bootstrap or trust_bundle_url can be specified, not both")
            if path_:
                raise ConfigError("only one of insecure_bootstrap or trust_bundle_path can be specified, not both")
        elif not (path_ or url or wl):
            raise ConfigError("trust_bundle_path, trust_bundle_url, or trust_bundle_spiffe_workload_api must be "
                              "configured unless insecure_bootstrap is set")
        if url and path_:
            raise ConfigError("only one of trust_bundle_url or trust_bundle_path can be specified, not both")
        fmt = section.get("trust_bundle_format", "pem")
        if fmt not in ("pem", "spiffe"):
            raise ConfigError('invalid value for trust_bundle_format, expected "pem" or "spiffe"')
        if url and not section.get("trust_bundle_unix_socket") and not str(url).startswith("https://"):
            raise ConfigError("trust bundle URL must start with https://")
        if raw.get("plugins") is None:
            raise ConfigError("plugins section must be configured")
        if section.get("join_token_file"):
            try:
                with open(section["join_token_file"]) as f:
                    token = f.read().strip()
            except OSError as e:
                raise ConfigError('unable to read join token file "%s": open %s: %s'
                                  % (section["join_token_file"], section["join_token_file"],
                                     (e.strerror or "").lower()))
            if not token:
                raise ConfigError("join token file is empty")
            section["join_token"] = token
    plugins = parse_plugins(raw.get("plugins"))
    return {"section": section, "plugins": plugins, "health_checks": _block(raw.get("health_checks")) or {},
            "raw": raw}


# --- catalog ----------------------------------------------------------------------------------------------------

def _sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_external(p):
    checksum = p["checksum"]
    if checksum:
        if len(checksum) % 2 or not re.match(r"^[0-9a-fA-F]*$", checksum):
            raise CatalogError('failed to load plugin "%s": checksum is not a valid hex string' % p["name"])
        if len(checksum) != 64:
            raise CatalogError('failed to load plugin "%s": expected checksum of length 64; got %d'
                               % (p["name"], len(checksum)))
    else:
        log("warning", "Plugin checksum not configured", plugin_name=p["name"], plugin_type=p["type"],
            external="true")
    cmd = p["cmd"]
    if not os.path.isfile(cmd):
        raise CatalogError('failed to load plugin "%s": failed to launch plugin: fork/exec %s: no such file or '
                           'directory' % (p["name"], cmd))
    if not os.access(cmd, os.X_OK):
        raise CatalogError('failed to load plugin "%s": failed to launch plugin: fork/exec %s: permission denied'
                           % (p["name"], cmd))
    if checksum and _sha256_file(cmd) != checksum.lower():
        raise CatalogError('failed to load plugin "%s": failed to launch plugin: checksums did not match'
                           % p["name"])


def _read_pem_certs(path):
    from cryptography import x509
    with open(path, "rb") as f:
        data = f.read()
    certs = x509.load_pem_x509_certificates(data)
    if not certs:
        raise ValueError("no PEM certificates found in %s" % path)
    return certs


def _configure_simple(kind, p):
    """Configure checks of the sql DataStore and the disk KeyManagers (sqlstore configValidate, keymanager/disk)."""
    data = p["data"] or {}
    if p["type"] == "DataStore":
        if not data.get("database_type"):
            return "datastore-sql: database_type must be set"
        if not data.get("connection_string"):
            return "datastore-sql: connection_string must be set"
        dbtype = data["database_type"]
        if isinstance(dbtype, str) and dbtype not in ("sqlite3", "postgres", "mysql"):
            return "datastore-sql: unsupported database_type: %s" % dbtype
    elif p["type"] == "KeyManager" and p["name"] == "disk":
        if kind == "server" and not data.get("keys_path"):
            return "keys_path is required"
        if kind == "agent" and not data.get("directory"):
            return "directory must be configured"
    return None


def _configure_builtin(kind, p, notes):
    """Built-in plugins' Configure/Validate (tpm_devid, sql, disk). Errors go to ``notes`` (a dict) or raise."""
    problem = _configure_simple(kind, p)
    if problem:
        if notes is not None:
            notes.setdefault('%s "%s"' % (p["type"], p["name"]), []).append(problem)
            return
        if p["type"] == "DataStore":
            raise CatalogError(problem)
        raise CatalogError('failed to configure plugin "%s": rpc error: code = InvalidArgument desc = %s'
                           % (p["name"], problem))
    if p["type"] != "NodeAttestor" or p["name"] != "tpm_devid":
        return
    data = p["data"] or {}
    problems = []
    if kind == "server":
        for key in ("devid_ca_path", "endorsement_ca_path"):
            if not data.get(key):
                problems.append("%s is required" % key)
        for key, what in (("devid_ca_path", "DevID"), ("endorsement_ca_path", "endorsement")):
            if data.get(key):
                try:
                    _read_pem_certs(data[key])
                except (OSError, ValueError) as e:
                    problems.append("unable to load %s trust bundle: %s" % (what, getattr(e, "strerror", None) or e))
    else:
        for key in ("devid_cert_path", "devid_priv_path", "devid_pub_path"):
            if not data.get(key):
                problems.append("invalid configuration: %s is required" % key)
        if not problems and notes is None:
            if not data.get("tpm_device_path"):
                found = sorted(glob.glob("/dev/tpmrm[0-9]*")) or sorted(glob.glob("/dev/tpm[0-9]*"))
                if not found:
                    problems.append("tpm autodetection failed: not found")
                elif len(found) > 1:
                    problems.append("tpm autodetection failed: more than one possible TPM device was found")
            for key, what in (("devid_cert_path", "certificate(s)"), ("devid_priv_path", "private key"),
                              ("devid_pub_path", "public key")):
                try:
                    with open(data[key], "rb") as f:
                        f.read()
                except OSError as e:
                    problems.append("unable to load DevID files: cannot load %s: open %s: %s"
                                    % (what, data[key], (e.strerror or "").lower()))
                    break
    if not problems:
        return
    if notes is not None:
        notes.setdefault('NodeAttestor "tpm_devid"', []).extend(problems)
        return
    raise CatalogError('failed to configure plugin "tpm_devid": rpc error: code = InvalidArgument desc = %s'
                       % problems[0])


def check_catalog(kind, plugins, notes=None):
    """catalog.Load (notes=None) or ValidatePluginConfigs (notes = dict to fill). Returns the loaded plugins."""
    loaded = []
    if kind == "server":
        ds = [p for p in plugins if p["type"] == "DataStore"]
        plugins = [p for p in plugins if p["type"] != "DataStore"]
        if not ds:
            if notes is not None:
                notes.setdefault('DataStore "sql"', []).append("'datastore' must be configured")
            else:
                raise CatalogError("expecting a DataStore plugin")
        elif len(ds) > 1:
            raise CatalogError("only one DataStore plugin is allowed")
        elif ds[0]["name"] != "sql" or ds[0]["cmd"]:
            raise CatalogError('pluggability for the DataStore is deprecated; only the built-in "sql" plugin is '
                               'supported')
        else:
            _configure_builtin(kind, ds[0], notes)
            loaded.append(ds[0])
    for p in plugins:
        if p["type"] == "NodeAttestor" and p["name"] == "join_token" and p["enabled"] and p["cmd"]:
            raise CatalogError("the built-in join_token node attestor cannot be overridden by an external plugin")
    counts = {}
    for p in plugins:
        if p["type"] not in BUILTINS[kind]:
            raise CatalogError('unsupported plugin type "%s"' % p["type"])
        if not p["enabled"]:
            log("debug", "Not loading plugin; disabled", plugin_name=p["name"], plugin_type=p["type"])
            continue
        if p["cmd"]:
            _load_external(p)
        elif p["name"] not in BUILTINS[kind][p["type"]]:
            raise CatalogError('failed to load plugin "%s": no built-in plugin "%s" for type "%s"'
                               % (p["name"], p["name"], p["type"]))
        else:
            _configure_builtin(kind, p, notes)
        if notes is None:
            log("info", "Plugin loaded", external=str(bool(p["cmd"])).lower(), plugin_name=p["name"],
                plugin_type=p["type"], subsystem_name="catalog")
        counts[p["type"]] = counts.get(p["type"], 0) + 1
        loaded.append(p)
    for ptype in sorted(CONSTRAINTS[kind]):
        low, high = CONSTRAINTS[kind][ptype]
        n = counts.get(ptype, 0)
        if low == high and n != low:
            msg = "expected exactly %d but got %d" % (low, n)
        elif n < low:
            msg = "expected at least %d but got %d" % (low, n)
        elif high is not None and n > high:
            msg = "expected at most %d but got %d" % (high, n)
        else:
            continue
        if notes is not None:
            notes.setdefault(ptype, []).append("constraint not satisfied: %s" % msg)
        else:
            raise CatalogError('plugin type "%s" constraint not satisfied: %s' % (ptype, msg))
    return loaded


# --- sockets ----------------------------------------------------------------------------------------------------

def socket_listening(path, timeout=2.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        return None
    except OSError as e:
        return {2: "no such file or directory", 111: "connection refused", 13: "permission denied"}.get(
            e.errno, (e.strerror or str(e)).lower())
    finally:
        s.close()


def listen_unix(path):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    if os.path.exists(path):
        if socket_listening(path) is None:
            raise OSError("listen unix %s: bind: address already in use" % path)
        os.unlink(path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(128)
    return s


def _accept_forever(sock, stop):
    while not stop.is_set():
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        conn.close()


def _pid_alive(pid):
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError):
        return False
    try:
        with open("/proc/%d/stat" % int(pid)) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def registry_dir():
    return os.environ.get("SPIRE_SIM_REGISTRY") or REGISTRY_DEFAULT


def _write_json(path, obj, mode=0o644):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp.", dir=d)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class Stopper(object):
    def __init__(self):
        self.event = threading.Event()
        self.signal = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, _frame):
        self.signal = signum
        self.event.set()


# --- server -----------------------------------------------------------------------------------------------------

def _health_server(hc, stop):
    from http.server import BaseHTTPRequestHandler, HTTPServer
    live, ready = hc.get("live_path", "/live"), hc.get("ready_path", "/ready")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            if self.path in (live, ready):
                body = b'{"started":true}' if self.path == live else b'{}'
                self.send_response(200)
            else:
                body = b"404 page not found\n"
                self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = HTTPServer((hc.get("bind_address", "localhost"), int(hc.get("bind_port", 80))), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def run_server(argv):
    fs = FlagSet("run")
    fs.string("config", "conf/server/server.conf")
    fs.bool("expandEnv")
    fs.string("logLevel")
    try:
        v, _ = fs.parse(argv)
    except FlagError as e:
        sys.stderr.write("%s\n%s\n" % (e, fs.usage()))
        return 1
    try:
        cfg = load_config("server", v["config"], v["expandEnv"])
    except ConfigError as e:
        sys.stderr.write("%s\n" % e)
        return 1
    sec = cfg["section"]
    td = sec["trust_domain"]
    log("info", "Data directory: %s" % sec["data_dir"])
    try:
        loaded = check_catalog("server", cfg["plugins"])
    except CatalogError as e:
        log("error", "Fatal run error", error=str(e))
        return 1
    log("info", "Configured DataStore", reconfigurable="false", subsystem_name="sql")
    os.makedirs(sec["data_dir"], exist_ok=True)
    sock_path = sec.get("socket_path") or SERVER_SOCKET_DEFAULT
    stopper = Stopper()
    listeners = []
    try:
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind((sec["bind_address"], int(sec["bind_port"])))
        except OSError as e:
            tcp.close()
            raise OSError("listen tcp %s:%s: bind: %s" % (sec["bind_address"], sec["bind_port"],
                                                          (e.strerror or str(e)).lower()))
        tcp.listen(128)
        listeners.append(tcp)
        if os.path.exists(sock_path) and socket_listening(sock_path) is None:
            raise OSError("listen unix %s: bind: address already in use" % sock_path)
    except OSError as e:
        for s in listeners:
            s.close()
        log("error", "Fatal run error", error=str(e))
        return 1
    with sim_state.locked(sock_path) as st:
        if st.get("trust_domain") != td:
            st.pop("ca", None)  # a new trust domain gets a new CA
        st["trust_domain"] = td
        sim_state.ensure_ca(st)
    health = None
    hc = cfg["health_checks"]
    if hc.get("listener_enabled"):
        try:
            health = _health_server(hc, stopper.event)
        except OSError as e:
            log("error", "Fatal run error", error="health check listener: %s" % e)
            for s in listeners:
                s.close()
            return 1
    reg_path = os.path.join(registry_dir(), "%d.json" % int(sec["bind_port"]))
    attestors = {}
    for p in loaded:
        if p["type"] == "NodeAttestor":
            attestors[p["name"]] = {"external": bool(p["cmd"]), "plugin_data": p["data"]}
    _write_json(reg_path, {"socket_path": os.path.abspath(sock_path), "pid": os.getpid(), "trust_domain": td,
                           "bind_address": sec["bind_address"], "bind_port": int(sec["bind_port"]),
                           "data_dir": sec["data_dir"], "config": os.path.abspath(v["config"]),
                           "node_attestors": attestors})
    # The API socket comes last: once it accepts connections, state and registry are in place.
    try:
        listeners.append(listen_unix(sock_path))
    except OSError as e:
        for s in listeners:
            s.close()
        os.unlink(reg_path)
        log("error", "Fatal run error", error=str(e))
        return 1
    for s in listeners:
        threading.Thread(target=_accept_forever, args=(s, stopper.event), daemon=True).start()
    log("info", "Starting Server APIs", address="%s:%s" % (sec["bind_address"], sec["bind_port"]),
        subsystem_name="endpoints")
    log("info", "Starting Server APIs", address=sock_path, network="unix", subsystem_name="endpoints")
    while not stopper.event.wait(0.5):
        pass
    log("info", "Stopping server", signal=signal.Signals(stopper.signal).name if stopper.signal else "")
    for s in listeners:
        try:
            s.close()
        except OSError:
            pass
    if health is not None:
        health.shutdown()
    try:
        os.unlink(sock_path)
    except OSError:
        pass
    reg = _read_json(reg_path)
    if reg and reg.get("pid") == os.getpid():
        try:
            os.unlink(reg_path)
        except OSError:
            pass
    log("info", "Server stopped gracefully")
    return 0


# --- agent: attestation -----------------------------------------------------------------------------------------

def _sha1_hex(cert):
    from cryptography.hazmat.primitives.serialization import Encoding
    return hashlib.sha1(cert.public_bytes(Encoding.DER)).hexdigest()


def _cn(name):
    from cryptography.x509.oid import NameOID
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return attrs[0].value if attrs else ""


def _build_chain(leaf, intermediates, roots):
    chain = [leaf]
    pool = list(intermediates) + list(roots)
    root_fps = {_sha1_hex(r) for r in roots}
    cur = leaf
    for _ in range(10):
        if _sha1_hex(cur) in root_fps:
            return chain
        nxt = None
        for cand in pool:
            if cand.subject != cur.issuer:
                continue
            try:
                cur.verify_directly_issued_by(cand)
            except Exception:
                continue
            nxt = cand
            break
        if nxt is None:
            return None
        if _sha1_hex(nxt) == _sha1_hex(cur):
            return chain if _sha1_hex(cur) in root_fps else None
        chain.append(nxt)
        cur = nxt
    return None


def _openssl_verify(leaf_pem, inter_pems, roots_path):
    with tempfile.TemporaryDirectory(prefix="spsim-verify-") as d:
        leaf = os.path.join(d, "leaf.pem")
        with open(leaf, "wb") as f:
            f.write(leaf_pem)
        cmd = ["openssl", "verify", "-CAfile", roots_path]
        if inter_pems:
            inter = os.path.join(d, "inter.pem")
            with open(inter, "wb") as f:
                f.write(b"".join(inter_pems))
            cmd += ["-untrusted", inter]
        r = subprocess.run(cmd + [leaf], capture_output=True, text=True)
        return r.returncode == 0, (r.stderr or r.stdout).strip()


def _check_tpmt_public(blob, cert):
    """The pub blob is a bare TPMT_PUBLIC of a signing RSA/ECC key, and it is the certificate's key."""
    if len(blob) >= 2 and int.from_bytes(blob[:2], "big") == len(blob) - 2:
        raise AttestError("unable to load DevID: tpm2.DecodePublic failed: the public blob starts with a 2-byte "
                          "size (TPM2B_PUBLIC, tpm2-tools' -u format); SPIRE reads a bare TPMT_PUBLIC")
    try:
        from tpm2_pytss.types import TPMT_PUBLIC
        from tpm2_pytss.constants import TPM2_ALG, TPMA_OBJECT
    except ImportError:  # pragma: no cover
        return
    try:
        pub, used = TPMT_PUBLIC.unmarshal(blob)
    except Exception as e:
        raise AttestError("unable to load DevID: tpm2.DecodePublic failed: %s" % e)
    if used != len(blob):
        raise AttestError("unable to load DevID: tpm2.DecodePublic failed: %d trailing bytes after TPMT_PUBLIC"
                          % (len(blob) - used))
    if not (pub.objectAttributes & TPMA_OBJECT.SIGN_ENCRYPT):
        raise AttestError("unable to load DevID: not a signing key")
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    key = cert.public_key()
    if pub.type == TPM2_ALG.RSA:
        n = int.from_bytes(bytes(pub.unique.rsa), "big")
        same = isinstance(key, rsa.RSAPublicKey) and key.public_numbers().n == n
    elif pub.type == TPM2_ALG.ECC:
        x = int.from_bytes(bytes(pub.unique.ecc.x), "big")
        y = int.from_bytes(bytes(pub.unique.ecc.y), "big")
        same = (isinstance(key, ec.EllipticCurvePublicKey) and key.public_numbers().x == x
                and key.public_numbers().y == y)
    else:
        raise AttestError("unable to load DevID: bad key type: 0x%04x" % int(pub.type))
    if not same:
        raise AttestError("rpc error: code = InvalidArgument desc = failed to attest: the DevID certificate's "
                          "public key is not the key in devid_pub_path (proof of possession would fail)")


def attest_tpm_devid(agent_data, server_data, td):
    from cryptography.hazmat.primitives.serialization import Encoding
    dev = agent_data.get("tpm_device_path")
    if dev:
        if os.path.exists(dev) and stat.S_ISSOCK(os.stat(dev).st_mode):
            why = socket_listening(dev)
            if why:
                raise AttestError('unable to start a new TPM session: cannot open TPM at "%s": dial unix %s: '
                                  'connect: %s' % (dev, dev, why))
        elif not os.path.exists(dev):
            raise AttestError('unable to start a new TPM session: cannot open TPM at "%s": open %s: no such file '
                              'or directory' % (dev, dev))
    try:
        certs = _read_pem_certs(agent_data["devid_cert_path"])
    except (OSError, ValueError) as e:
        raise AttestError("unable to load DevID files: cannot load certificate(s): %s" % e)
    leaf, inter = certs[0], certs[1:]
    with open(agent_data["devid_pub_path"], "rb") as f:
        pub_blob = f.read()
    with open(agent_data["devid_priv_path"], "rb") as f:
        priv_blob = f.read()
    if not priv_blob:
        raise AttestError("unable to load DevID: the private blob is empty")
    if len(priv_blob) >= 2 and int.from_bytes(priv_blob[:2], "big") == len(priv_blob) - 2 and len(priv_blob) > 40:
        raise AttestError("cannot load DevID key on TPM: tpm2.Load failed: the private blob starts with a 2-byte "
                          "size (tpm2-tools' -r format); SPIRE reads the TPM2B_PRIVATE buffer without it")
    _check_tpmt_public(pub_blob, leaf)
    roots_path = (server_data or {}).get("devid_ca_path")
    try:
        roots = _read_pem_certs(roots_path)
    except (OSError, ValueError, TypeError) as e:
        raise AttestError("rpc error: code = Internal desc = server cannot load devid_ca_path: %s" % e)
    chain = _build_chain(leaf, inter, roots)
    ok, why = _openssl_verify(leaf.public_bytes(Encoding.PEM), [c.public_bytes(Encoding.PEM) for c in inter],
                              roots_path)
    if chain is None or not ok:
        raise AttestError("rpc error: code = InvalidArgument desc = failed to attest: unable to verify DevID "
                          "signature: verification failed: x509: certificate signed by unknown authority (%s)"
                          % (why or "no chain to devid_ca_path"))
    fp = _sha1_hex(leaf)
    selectors = []
    if _cn(leaf.subject):
        selectors.append("subject:cn:" + _cn(leaf.subject))
    if _cn(leaf.issuer):
        selectors.append("issuer:cn:" + _cn(leaf.issuer))
    for c in chain[1:]:
        selectors.append("ca:fingerprint:" + _sha1_hex(c))
    return ("spiffe://%s/spire/agent/tpm_devid/%s" % (td, fp), "tpm_devid",
            [{"type": "tpm_devid", "value": s} for s in selectors], True)


def _ek_pubhash_from_tpm():
    tcti = os.environ.get("SPIRE_SIM_TPM_TCTI")
    if not tcti:
        raise AttestError("simulator: the external tpm attestor needs SPIRE_SIM_TPM_TCTI (a tpm2-tools TCTI) to "
                          "read the EK")
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key
    env = dict(os.environ, TPM2TOOLS_TCTI=tcti, TSS2_LOG="all+NONE")
    with tempfile.TemporaryDirectory(prefix="spsim-ek-") as d:
        out = os.path.join(d, "ek")
        r = subprocess.run(["tpm2_nvread", "0x01c00002", "-o", out], capture_output=True, env=env)
        if r.returncode == 0:
            data = open(out, "rb").read()
            try:
                cert = x509.load_der_x509_certificate(data)
            except ValueError:
                # NV areas may be padded: DER length from the header
                n = int.from_bytes(data[2:4], "big") + 4
                cert = x509.load_der_x509_certificate(data[:n])
            der = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
            return hashlib.sha256(der).hexdigest()
        r = subprocess.run(["tpm2_readpublic", "-c", "0x81010001", "-f", "pem", "-o", out], capture_output=True,
                           env=env)
        if r.returncode != 0:
            raise AttestError("cannot read the EK: %s" % r.stderr.decode(errors="replace").strip())
        key = load_pem_public_key(open(out, "rb").read())
        return hashlib.sha256(key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).hexdigest()


def attest_tpm_external(server_data, td):
    pubhash = _ek_pubhash_from_tpm()
    hash_path = (server_data or {}).get("hash_path") or "/opt/spire/.data/hashes"
    if not os.path.exists(os.path.join(hash_path, pubhash)):
        raise AttestError("rpc error: code = Unknown desc = failed to attest: could not validate EK (pubhash %s "
                          "not in %s; manufacturer CA validation is not simulated)" % (pubhash, hash_path))
    return ("spiffe://%s/spire/agent/tpm/%s" % (td, pubhash), "tpm",
            [{"type": "tpm", "value": "pub_hash:%s" % pubhash}], True)


def _issue_svid(state_data, spiffe_id, ttl=3600):
    """An X.509 SVID signed by the simulated CA: (cert_pem, key_pem, serial, expires_at)."""
    ca = sim_state.ensure_ca(state_data)
    if ca is None:
        return None, None, "", 0
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    ca_cert = x509.load_pem_x509_certificate(ca["cert_pem"].encode())
    ca_key = serialization.load_pem_private_key(ca["key_pem"].encode(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    serial = x509.random_serial_number()
    cert = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(serial)
            .not_valid_before(now - datetime.timedelta(seconds=10)).not_valid_after(now + datetime.timedelta(seconds=ttl))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode(),
            str(serial), int((now + datetime.timedelta(seconds=ttl)).timestamp()))


def find_server(port):
    reg = _read_json(os.path.join(registry_dir(), "%d.json" % int(port)))
    if not reg or not _pid_alive(reg.get("pid")) or socket_listening(reg.get("socket_path", "")) is not None:
        return None
    return reg


def _check_trust_bundle(sec, server_socket):
    if sec.get("insecure_bootstrap"):
        log("warning", "Insecure bootstrap enabled; skipping server certificate validation")
        return
    if sec.get("trust_bundle_url") or sec.get("trust_bundle_spiffe_workload_api"):
        log("warning", "simulator: trust bundle download is not simulated; accepting the server")
        return
    path = sec["trust_bundle_path"]
    try:
        certs = _read_pem_certs(path)
    except (OSError, ValueError) as e:
        raise AttestError("could not parse trust bundle: %s" % (getattr(e, "strerror", None) or e))
    ca = sim_state.load(server_socket).get("ca")
    if ca:
        from cryptography import x509
        want = x509.load_pem_x509_certificate(ca["cert_pem"].encode())
        if not any(c == want for c in certs):
            raise AttestError("failed to dial server: transport: authentication handshake failed: "
                              "x509svid: could not verify leaf certificate: x509: certificate signed by unknown "
                              "authority (trust_bundle_path %s does not hold the server's CA)" % path)


def attest(sec, node_attestor, join_token, reg):
    """Run one node attestation against the server described by ``reg``; returns the agent record."""
    td = sec["trust_domain"]
    server_socket = reg["socket_path"]
    if join_token:
        with sim_state.locked(server_socket) as st:
            try:
                agent_id = sim_state.consume_join_token(st, join_token)
            except ValueError as e:
                raise AttestError("rpc error: code = InvalidArgument desc = %s" % e)
            sim_state.register_agent(st, agent_id, "join_token", [], False)
        return agent_id, "join_token", [], False
    name = node_attestor["name"]
    server_attestors = reg.get("node_attestors") or {}
    if name not in server_attestors:
        raise AttestError('rpc error: code = FailedPrecondition desc = error getting node attestor: could not find '
                          'node attestor type "%s"' % name)
    if name == "join_token":
        raise AttestError("join token was not provided")
    if name == "tpm_devid" and not node_attestor["cmd"]:
        result = attest_tpm_devid(node_attestor["data"], server_attestors[name]["plugin_data"], td)
    elif name == "tpm" and node_attestor["cmd"]:
        result = attest_tpm_external(server_attestors[name]["plugin_data"], td)
    else:
        raise AttestError("simulator: node attestor %r is not simulated" % name)
    agent_id, atype, selectors, reattestable = result
    with sim_state.locked(server_socket) as st:
        try:
            sim_state.register_agent(st, agent_id, atype, selectors, reattestable)
        except ValueError as e:
            raise AttestError("rpc error: code = PermissionDenied desc = %s" % e)
    return result


def _agent_data_path(sec):
    return os.path.join(sec.get("data_dir") or ".", "agent-data.json")


def _agent_status(reg, agent_id):
    st = sim_state.load(reg["socket_path"])
    agent = st["agents"].get(agent_id)
    if agent and agent.get("banned"):
        return "banned"
    if agent_id in (st.get("evicted") or {}) or agent is None:
        return "evicted"
    return "ok"


def _do_attest(sec, node_attestor, join_token, reg, data_path):
    agent_id, atype, selectors, reattestable = attest(sec, node_attestor, join_token, reg)
    with sim_state.locked(reg["socket_path"]) as st:
        cert_pem, key_pem, serial, expires = _issue_svid(st, agent_id)
        agent = st["agents"].get(agent_id)
        if agent is not None:
            agent["x509svid_serial_number"] = serial
            agent["x509svid_expires_at"] = str(expires)
        bundle = (st.get("ca") or {}).get("cert_pem", "")
    data = {"spiffe_id": agent_id, "attestation_type": atype, "reattestable": reattestable,
            "selectors": selectors, "trust_domain": sec["trust_domain"], "server_port": int(sec["server_port"]),
            "svid_pem": cert_pem, "svid_key_pem": key_pem, "serial": serial, "expires_at": expires,
            "bundle_pem": bundle}
    _write_json(data_path, data, mode=0o600)
    log("info", "Node attestation was successful", spiffe_id=agent_id, attestation_type=atype,
        reattestable=str(reattestable).lower())
    return data


def run_agent(argv):
    fs = FlagSet("run")
    fs.string("config", "conf/agent/agent.conf")
    fs.bool("expandEnv")
    fs.string("joinToken")
    fs.string("joinTokenFile")
    fs.string("logLevel")
    try:
        v, _ = fs.parse(argv)
    except FlagError as e:
        sys.stderr.write("%s\n%s\n" % (e, fs.usage()))
        return 1
    try:
        cfg = load_config("agent", v["config"], v["expandEnv"])
        if v["joinTokenFile"]:
            with open(v["joinTokenFile"]) as f:
                cfg["section"]["join_token"] = f.read().strip()
    except (ConfigError, OSError) as e:
        sys.stderr.write("%s\n" % e)
        return 1
    sec = cfg["section"]
    join_token = v["joinToken"] or sec.get("join_token") or ""
    try:
        loaded = check_catalog("agent", cfg["plugins"])
    except CatalogError as e:
        log("error", "Agent crashed", error=str(e))
        return 1
    node_attestor = [p for p in loaded if p["type"] == "NodeAttestor"][0]
    data_dir = sec.get("data_dir") or "."
    os.makedirs(data_dir, exist_ok=True)
    data_path = _agent_data_path(sec)
    reg = find_server(sec["server_port"])
    tcp_error = None
    try:
        with socket.create_connection((str(sec["server_address"]), int(sec["server_port"])), timeout=3):
            pass
    except OSError as e:
        tcp_error = (e.strerror or str(e)).lower()
    if reg is None or tcp_error:
        log("error", "Agent crashed", error="failed to get SVID: create attestation client: failed to dial "
            "dns:///%s:%s: %s" % (sec["server_address"], sec["server_port"], tcp_error or "connection refused"))
        return 1
    if reg.get("trust_domain") != sec["trust_domain"]:
        log("error", "Agent crashed", error='failed to attest: the server is in trust domain "%s", the agent '
            'expects "%s"' % (reg.get("trust_domain"), sec["trust_domain"]))
        return 1
    cached = _read_json(data_path)
    try:
        if cached and cached.get("spiffe_id") and cached.get("trust_domain") == sec["trust_domain"]:
            status = _agent_status(reg, cached["spiffe_id"])
            if status == "banned":
                raise AttestError("rpc error: code = PermissionDenied desc = agent is banned")
            if status == "evicted":
                if not cached.get("reattestable"):
                    os.unlink(data_path)
                    raise AttestError("agent is not re-attestable and its SVID was rejected (evicted): "
                                      "removed agent-data.json, shutting down")
                log("info", "Agent was evicted; re-attesting", spiffe_id=cached["spiffe_id"])
                cached = _do_attest(sec, node_attestor, join_token, reg, data_path)
            else:
                log("info", "Agent SVID loaded from cache; skipping node attestation",
                    spiffe_id=cached["spiffe_id"])
        else:
            _check_trust_bundle(sec, reg["socket_path"])
            cached = _do_attest(sec, node_attestor, join_token, reg, data_path)
    except AttestError as e:
        log("error", "Agent crashed", error=str(e))
        return 1
    sock_path = sec.get("socket_path") or AGENT_SOCKET_DEFAULT
    stopper = Stopper()
    health = None
    if cfg["health_checks"].get("listener_enabled"):
        try:
            health = _health_server(cfg["health_checks"], None)
        except OSError as e:
            log("error", "Agent crashed", error="health check listener: %s" % e)
            return 1
    sidecar = sock_path + ".sim.json"
    if os.path.exists(sock_path) and socket_listening(sock_path) is None:
        log("error", "Agent crashed", error="listen unix %s: bind: address already in use" % sock_path)
        return 1
    _write_json(sidecar, {"agent_id": cached["spiffe_id"], "data_dir": os.path.abspath(data_dir),
                          "server_socket_path": reg["socket_path"], "trust_domain": sec["trust_domain"],
                          "pid": os.getpid()})
    # The Workload API socket comes last: once it accepts connections, everything else is in place.
    try:
        lsock = listen_unix(sock_path)
    except OSError as e:
        if health is not None:
            health.shutdown()
        os.unlink(sidecar)
        log("error", "Agent crashed", error=str(e))
        return 1
    threading.Thread(target=_accept_forever, args=(lsock, stopper.event), daemon=True).start()
    log("info", "Starting Workload and SDS APIs", address=sock_path, network="unix", subsystem_name="endpoints")
    rc = 0
    while not stopper.event.wait(1.0):
        if find_server(sec["server_port"]) is None:
            continue  # server down: the real agent keeps its SVID and retries
        status = _agent_status(reg, cached["spiffe_id"])
        if status == "ok":
            continue
        if status == "banned" or not cached.get("reattestable"):
            log("error", "Agent needs to re-attest but cannot: removing SVID and shutting down",
                spiffe_id=cached["spiffe_id"], reason=status)
            try:
                os.unlink(data_path)
            except OSError:
                pass
            rc = 1
            break
        try:
            log("info", "Agent was evicted; re-attesting", spiffe_id=cached["spiffe_id"])
            cached = _do_attest(sec, node_attestor, "", reg, data_path)
        except AttestError as e:
            log("error", "Agent crashed", error=str(e))
            rc = 1
            break
    lsock.close()
    if health is not None:
        health.shutdown()
    for path in (sock_path, sidecar):
        try:
            os.unlink(path)
        except OSError:
            pass
    log("info", "Agent stopped" if rc == 0 else "Agent exited")
    return rc


# --- validate / healthcheck / api -------------------------------------------------------------------------------

def validate(program, argv):
    kind = "server" if program == "spire-server" else "agent"
    fs = FlagSet("validate")
    fs.string("config", "conf/%s/%s.conf" % (kind, kind))
    fs.bool("expandEnv")
    try:
        v, _ = fs.parse(argv)
    except FlagError as e:
        sys.stderr.write("%s\n%s\n" % (e, fs.usage()))
        return 1
    try:
        cfg = load_config(kind, v["config"], v["expandEnv"])
    except ConfigError as e:
        sys.stderr.write("SPIRE %s configuration file is invalid: %s\n" % (kind, e))
        return 1
    if kind == "agent":  # spire-agent validate only loads the configuration
        sys.stdout.write("SPIRE agent configuration file is valid.\n")
        return 0
    notes = {}
    try:
        check_catalog("server", cfg["plugins"], notes=notes)
    except CatalogError as e:
        sys.stderr.write("Could not validate configuration file: %s" % e)
        return 1
    notes = {k: v for k, v in notes.items() if v}
    if notes:
        sys.stderr.write("SPIRE server configuration file is invalid.\nValidation errors:\n")
        for plugin in sorted(notes):
            sys.stderr.write("\t%s:\n" % plugin)
            for note in notes[plugin]:
                sys.stderr.write("\t\t%s\n" % note)
        return 1
    sys.stdout.write("SPIRE server configuration file is valid.\n")
    return 0


def healthcheck(program, argv):
    server = program == "spire-server"
    fs = FlagSet("healthcheck")
    fs.string("socketPath", SERVER_SOCKET_DEFAULT if server else AGENT_SOCKET_DEFAULT)
    fs.bool("shallow")
    fs.bool("verbose")
    try:
        v, _ = fs.parse(argv)
    except FlagError as e:
        sys.stderr.write("%s\n%s\n" % (e, fs.usage()))
        return 1
    if v["verbose"]:
        sys.stdout.write("Checking %s health...\n" % ("server" if server else "agent"))
    why = socket_listening(v["socketPath"])
    if why is None:
        sys.stdout.write("Server is healthy.\n" if server else "Agent is healthy.\n")
        return 0
    if v["verbose"]:
        sys.stderr.write('Failed to check health: rpc error: code = Unavailable desc = connection error: desc = '
                         '"transport: Error while dialing: dial unix %s: connect: %s"\n' % (v["socketPath"], why))
    if server:
        sys.stderr.write("Error: server is unhealthy: unable to determine health\n")
    else:
        sys.stderr.write("Agent is unhealthy: unable to determine health\n")
    return 1


def _b64_der(pem):
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    return base64.b64encode(x509.load_pem_x509_certificate(pem.encode()).public_bytes(Encoding.DER)).decode()


def _b64_key_der(pem):
    from cryptography.hazmat.primitives import serialization
    key = serialization.load_pem_private_key(pem.encode(), None)
    return base64.b64encode(key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption())).decode()


def _entry_id_str(proto):
    return "spiffe://%s%s" % (proto["trust_domain"], proto["path"])


def authorized_entries(state_data, agent_id, td):
    """Entries the agent may fetch: parent = agent ID, or parent = a node alias whose selectors ⊆ agent selectors."""
    agent = state_data["agents"].get(agent_id) or {}
    have = {"%s:%s" % (s["type"], s["value"]) for s in agent.get("selectors", [])}
    server_id = "spiffe://%s/spire/server" % td
    parents = {agent_id}
    for e in state_data["entries"].values():
        if _entry_id_str(e["parent_id"]) != server_id:
            continue
        sels = {"%s:%s" % (s["type"], s["value"]) for s in e.get("selectors", [])}
        if sels and sels <= have:
            parents.add(_entry_id_str(e["spiffe_id"]))
    return sorted((e for e in state_data["entries"].values() if _entry_id_str(e["parent_id"]) in parents),
                  key=lambda e: (_entry_id_str(e["spiffe_id"]), e["id"])), sorted(parents)


def api(argv):
    if argv[:2] != ["fetch", "x509"]:
        sys.stderr.write("simulator: only 'api fetch x509' is implemented\n")
        return 1
    fs = FlagSet("fetch x509")
    fs.string("socketPath", AGENT_SOCKET_DEFAULT)
    fs.string("timeout", "5s")
    fs.string("write")
    fs.string("output", "pretty")
    fs.bool("silent")
    try:
        v, _ = fs.parse(argv[2:])
    except FlagError as e:
        sys.stderr.write("%s\n%s\n" % (e, fs.usage()))
        return 1
    why = socket_listening(v["socketPath"])
    if why is not None:
        sys.stderr.write('rpc error: code = Unavailable desc = connection error: desc = "transport: Error while '
                         'dialing: dial unix %s: connect: %s"\n' % (v["socketPath"], why))
        return 1
    side = _read_json(v["socketPath"] + ".sim.json")
    if not side:
        sys.stderr.write("rpc error: code = PermissionDenied desc = no identity issued\n")
        return 1
    data = _read_json(os.path.join(side["data_dir"], "agent-data.json")) or {}
    with sim_state.locked(side["server_socket_path"]) as st:
        entries, parents = authorized_entries(st, side["agent_id"], side["trust_domain"])
        svids = []
        for e in entries:
            sid = _entry_id_str(e["spiffe_id"])
            cert_pem, key_pem, _, _ = _issue_svid(st, sid)
            svids.append({"spiffe_id": sid, "x509_svid": _b64_der(cert_pem) if cert_pem else "",
                          "x509_svid_key": _b64_key_der(key_pem) if key_pem else "",
                          "bundle": _b64_der(st["ca"]["cert_pem"]) if st.get("ca") else "",
                          "hint": e.get("hint", ""), "entry_id": e["id"], "parent_id": _entry_id_str(e["parent_id"]),
                          "selectors": e.get("selectors", [])})
    if not svids:
        sys.stderr.write("rpc error: code = PermissionDenied desc = no identity issued\n")
        return 1
    if v["output"] == "json":
        agent_info = {"spiffe_id": side["agent_id"], "attestation_type": data.get("attestation_type"),
                      "reattestable": data.get("reattestable"), "selectors": data.get("selectors", []),
                      "expires_at": str(data.get("expires_at", 0)), "alias_ids": [p for p in parents
                                                                                   if p != side["agent_id"]]}
        sys.stdout.write(json.dumps({"svids": svids, "crl": [], "federated_bundles": {},
                                     "simulator_agent": agent_info}) + "\n")
    else:
        sys.stdout.write("Received %d svid after 1ms\n\n" % len(svids))
        for s in svids:
            sys.stdout.write("SPIFFE ID:\t\t%s\n\n" % s["spiffe_id"])
    return 0


def main(program, argv):
    cmd, rest = argv[0], argv[1:]
    try:
        if cmd == "run":
            return run_server(rest) if program == "spire-server" else run_agent(rest)
        if cmd == "validate":
            return validate(program, rest)
        if cmd == "healthcheck":
            return healthcheck(program, rest)
        if cmd == "api" and program == "spire-agent":
            return api(rest)
    except KeyboardInterrupt:
        return 130
    sys.stderr.write("simulator: unknown command %r\n" % cmd)
    return 127
