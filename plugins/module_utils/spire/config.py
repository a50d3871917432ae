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

This file is the entry point, what the spire_config module calls: ``build()`` (``validate()`` then ``render()``),
``ensure_config()`` (validate, render, ``<validate_bin> validate``, the file check, an atomic write with a backup)
and the masking of secrets (``secret_values()``, ``mask_text()``). The rest lives in sibling files, each imported
here so that every name of the former single file is still importable from this one:

* config_catalog.py   what each SPIRE version knows: section keys and their Go types, plugin types, built-in
                      plugin names, catalog constraints, required plugin_data; ``version_family()`` and
                      ``binary_version()`` (the version ``<binary> --version`` reports)
* config_values.py    values as SPIRE's Go code reads them: ``go_parse_int()``, ``go_duration_seconds()``, trust
                      domains, hcl v1 decoding into typed fields
* config_render.py    ``render()`` (data → HCL v1, order, escaping), ``parse()`` (pyhcl), ``normalise()``, the
                      round trip check
* config_rules.py     ``validate()``: the top level, the plugin blocks, the catalog's constraints
* config_sections.py  the rules of the server/agent section, health_checks and telemetry (used by validate())
* config_files.py     ``path_problems()``/``check_referenced_files()``: the files SPIRE reads at start-up

tests/integration/config/test_config_vs_spire.py holds every verdict against the real daemons' ``run``.
This file imports nothing from Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import shutil
import subprocess
import tempfile
import time

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.files import ManagedFile, parse_mode
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire.config_catalog import (
    BUILTIN_PLUGINS, BUILTINS_BY_FAMILY, CONSTRAINTS, HEALTH_CHECK_KEYS, KINDS, KNOWN_VERSIONS, LOG_FORMATS, LOG_LEVELS,
    MAX_SOCKET_PATH, NO_CONFIG_BUILTINS, NODE_ATTESTORS, PLUGIN_KEY_ORDER, PLUGIN_KEYS, PLUGIN_TYPE_ORDER,
    REBOOTSTRAP_MODES, REQUIRED_PLUGIN_DATA, SECTION_KEYS, SECTION_KEYS_BY_FAMILY, SECTION_TYPES, SERVER_KEY_TYPES,
    SQL_DATABASE_TYPE_BLOCKS, SQL_DATABASE_TYPES, TELEMETRY_SINK_KEYS, TOP_LEVEL_ORDER, TPM_DEVID_REQUIRED,
    WORKLOAD_KEY_TYPES, binary_version, version_family)
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire.config_files import (
    TPM_DEVICE_PATTERNS, _tpm_autodetect, check_referenced_files, path_problems)
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire.config_render import (
    HAS_PYHCL, PYHCL_IMPORT_ERROR, check_round_trip, normalise, parse, render)
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire.config_rules import (
    node_attestors, validate)
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire.config_values import (
    go_duration_seconds, go_parse_int, trust_domain_name, trust_domain_problem)

__all__ = [
    "BUILTINS_BY_FAMILY", "BUILTIN_PLUGINS", "CONSTRAINTS", "DEFAULT_SECRET_KEYS", "HAS_PYHCL", "HEALTH_CHECK_KEYS",
    "KINDS", "KNOWN_VERSIONS", "LOG_FORMATS", "LOG_LEVELS", "MASK", "MAX_SOCKET_PATH", "NODE_ATTESTORS",
    "NO_CONFIG_BUILTINS", "PLUGIN_KEYS", "PLUGIN_KEY_ORDER", "PLUGIN_TYPE_ORDER", "PYHCL_IMPORT_ERROR",
    "REBOOTSTRAP_MODES", "REQUIRED_PLUGIN_DATA", "SECTION_KEYS", "SECTION_KEYS_BY_FAMILY", "SECTION_TYPES",
    "SERVER_KEY_TYPES", "SQL_DATABASE_TYPES", "SQL_DATABASE_TYPE_BLOCKS", "TELEMETRY_SINK_KEYS", "TOP_LEVEL_ORDER",
    "TPM_DEVICE_PATTERNS", "TPM_DEVID_REQUIRED", "WORKLOAD_KEY_TYPES", "backup_path", "binary_version", "build",
    "check_referenced_files", "check_round_trip", "ensure_config", "go_duration_seconds", "go_parse_int", "mask_text",
    "node_attestors", "normalise", "parse", "path_problems", "render", "run_validate", "secret_values",
    "_tpm_autodetect", "trust_domain_name", "trust_domain_problem", "validate", "version_family"]

# Key names whose values are secrets: masked in what the module returns and shows in a diff.
DEFAULT_SECRET_KEYS = ("password", "token", "secret", "connection_string")
MASK = "********"


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
