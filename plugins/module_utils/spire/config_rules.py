# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``validate()``: the configuration data checked against SPIRE's rules before anything is written.

SPIRE's own load-time rules (pkg/common/catalog, pkg/{server,agent}/catalog, cmd/spire-{server,agent}/cli/run,
read at v1.13.3 and v1.15.3; ``version`` selects that line's plugin names and keys) plus two collection policies
with overrides (insecure_bootstrap, unknown plugin-block keys), each failure a ``SpireTpmError`` naming the cause
and the fix. Here: the top level, the plugin blocks and the catalog's constraints; the sections' rules are in
config_sections.py. tests/integration/config/test_config_vs_spire.py holds every verdict against the real
daemons' ``run``.

This file imports nothing from Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import difflib
import re

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire.config_catalog import (
    BUILTINS_BY_FAMILY, CONSTRAINTS, KNOWN_VERSIONS, NO_CONFIG_BUILTINS, PLUGIN_KEY_ORDER, PLUGIN_KEYS,
    REQUIRED_PLUGIN_DATA, SQL_DATABASE_TYPE_BLOCKS, SQL_DATABASE_TYPES, _check_kind, _Rules, version_family)
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire.config_render import normalise
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire.config_sections import (
    _check_agent_section, _check_health_checks, _check_server_section, _check_telemetry, _section_typed)
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire.config_values import (
    _is_enabled, _is_external, _set, _typed)

_HEX64_RE = re.compile(r"^[0-9a-fA-F]*$")


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


def node_attestors(config):
    """Names of the enabled NodeAttestor plugins, sorted."""
    named = ((config or {}).get("plugins") or {}).get("NodeAttestor") or {}
    return sorted(n for n, spec in named.items() if isinstance(spec, dict) and _is_enabled(spec))
