# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""inputs_digest: the digest a role's convergence record is keyed by (see plugins/modules/converged.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
name: inputs_digest
author:
  - trustroot.spire_tpm contributors (@trustroot)
short_description: Digest of a role's resolved inputs and of the collection code that acts on them
description:
  - Returns one SHA-256 hex digest over (1) the value of every option of a role's argument specification, as the role
    sees it (inventory, extra vars, C(vars:) of the include, then the role's defaults, templated), (2) every file of
    that role and of the collection's C(plugins/) directory, and (3) the O(extra) data.
  - A role records this digest with M(trustroot.spire_tpm.converged) after a successful run; on the next run an equal
    digest means that nothing the role is given, and nothing in the code that would act on it, has changed. Any change
    of an input, a default, a template, a task file or a module gives another digest, and the role runs in full.
  - Only the digest leaves the lookup; values (passwords among them) are never returned.
  - An option whose value cannot be templated (it refers to an undefined variable) enters the digest as a fixed
    marker, so the lookup itself never fails on it; the role's own tasks report such a variable when they use it.
options:
  _terms:
    description: The role's name in this collection (for example C(spire_agent)). One role.
    required: true
    type: list
    elements: str
  entry_point:
    description: The argument specification entry point whose options are read.
    type: str
    default: main
  extra:
    description: Further data that decides the role's outcome but is not one of its options (for example a trust
      bundle fetched from the SPIRE server, or the content of a CA bundle on the controller). Any JSON-serialisable
      value.
    type: raw
    default: null
"""

EXAMPLES = r"""
- name: Key a convergence record by the role's inputs and the server's current bundle
  trustroot.spire_tpm.converged:
    path: /var/lib/trustroot-spire-tpm/converged/spire_agent.json
    inputs_digest: "{{ lookup('trustroot.spire_tpm.inputs_digest', 'spire_agent', extra=server_bundle_pem) }}"
"""

RETURN = r"""
_raw:
  description: One element, the SHA-256 hex digest.
  type: list
  elements: str
"""

import hashlib
import json
import os

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_bytes
from ansible.plugins.lookup import LookupBase

try:
    import yaml
except ImportError:  # pragma: no cover - ansible-core depends on PyYAML
    yaml = None

_COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
_UNDEFINED = "\x00undefined\x00"
_SKIP_DIRS = {"__pycache__", "tests"}


def tree_files(top):
    """Every file below ``top`` (relative paths, sorted), without bytecode caches and role tests."""
    out = []
    for base, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        for name in files:
            if not name.endswith((".pyc", ".pyo")):
                path = os.path.join(base, name)
                out.append((os.path.relpath(path, _COLLECTION_ROOT), path))
    return sorted(out)


def code_digest(role):
    """SHA-256 over the role's files and the collection's plugins (path and content of each)."""
    h = hashlib.sha256()
    for rel, path in tree_files(os.path.join(_COLLECTION_ROOT, "roles", role)) + tree_files(
            os.path.join(_COLLECTION_ROOT, "plugins")):
        with open(path, "rb") as f:
            data = f.read()
        h.update(to_bytes(rel) + b"\x00" + str(len(data)).encode() + b"\x00" + data)
    return h.hexdigest()


def option_names(role, entry_point):
    spec_path = os.path.join(_COLLECTION_ROOT, "roles", role, "meta", "argument_specs.yml")
    try:
        with open(spec_path) as f:
            specs = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        raise AnsibleError("inputs_digest: cannot read the argument specification of role %r (%s): %s"
                           % (role, spec_path, e))
    entry = (specs.get("argument_specs") or {}).get(entry_point)
    if not isinstance(entry, dict):
        raise AnsibleError("inputs_digest: role %r has no argument_specs entry point %r in %s"
                           % (role, entry_point, spec_path))
    return sorted((entry.get("options") or {}).keys())


def canonical(value):
    """A JSON text for any templated value: keys sorted, tagged str/dict/list subclasses as their plain types."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


class LookupModule(LookupBase):

    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        if len(terms) != 1 or not isinstance(terms[0], str) or not terms[0]:
            raise AnsibleError("inputs_digest takes exactly one role name, got %r" % (terms,))
        role = terms[0]
        variables = variables or {}
        values = {}
        for name in option_names(role, self.get_option("entry_point")):
            if name not in variables:
                values[name] = _UNDEFINED
                continue
            try:
                values[name] = self._templar.template(variables[name])
            except AnsibleError:
                values[name] = _UNDEFINED
        doc = {"role": role, "inputs": values, "code": code_digest(role), "extra": self.get_option("extra")}
        return [hashlib.sha256(canonical(doc).encode("utf-8")).hexdigest()]
