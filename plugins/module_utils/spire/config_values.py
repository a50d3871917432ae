# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Values as SPIRE's Go code reads them, and the data model's small predicates.

``go_parse_int()`` (Go's ``strconv.ParseInt(s, 0, 64)``, how hcl v1 reads a string into an int),
``go_duration_seconds()`` (Go's ``time.ParseDuration``), ``trust_domain_problem()`` (go-spiffe's
``TrustDomainFromString``) and ``_typed()`` (what hcl v1 decodes into a Go field of a given type). Go's own
parsing is the oracle of these in tests/unit/config (go_parse_oracle).

This file imports nothing from Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire import ids


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
