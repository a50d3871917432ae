# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""SPIRE configuration data → HCL v1 text, and the text parsed back with pyhcl.

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

This file imports nothing from Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math
import re

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire.config_catalog import (
    PLUGIN_KEY_ORDER, PLUGIN_KEYS, PLUGIN_TYPE_ORDER, TOP_LEVEL_ORDER, _check_kind)

try:
    from hcl.parser import HclParser  # pyhcl
    HAS_PYHCL = True
    PYHCL_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - exercised by ansible-test's import sanity test
    HclParser = None
    HAS_PYHCL = False
    PYHCL_IMPORT_ERROR = _exc

_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_UESC_RE = re.compile(r"\\u([0-9a-fA-F]{4})")


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
