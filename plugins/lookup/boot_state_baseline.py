# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: boot_state_baseline
author:
  - trustroot.spire_tpm contributors (@trustroot)
version_added: "0.3.0"
short_description: Read hosts' current boot-state baselines from the controller's store, without a module call
description:
  - Returns, for each host named, what M(trustroot.spire_tpm.boot_state_baseline) returns with C(state=query)
    (C(baseline), C(version), C(history), C(path), C(enforcement)), read and checked by the same code, in the
    controller's own process. A delegated module call per host (an AnsiballZ start and a fork each) is not needed
    to read a file that is on the controller already.
  - A host without a store file gets C(baseline=null). A store file that cannot be read (not UTF-8, not JSON,
    truncated, wrong schema, digests of the wrong length ...) fails the task, naming the file and the fix.
  - Read-only; runs the same in check mode.
options:
  _terms:
    description: The hosts (inventory names) whose baselines are read.
    required: true
    type: list
    elements: str
  store_dir:
    description: Directory of the baseline store on the controller (C(<store_dir>/<host>.json)).
    required: true
    type: path
seealso:
  - module: trustroot.spire_tpm.boot_state_baseline
"""

EXAMPLES = r"""
- name: The stored baseline of this host (null when none is enrolled)
  ansible.builtin.set_fact:
    stored: "{{ query('trustroot.spire_tpm.boot_state_baseline', inventory_hostname,
                      store_dir=playbook_dir ~ '/boot_state') | first }}"
"""

RETURN = r"""
_raw:
  description: One result per host, in the order given.
  type: list
  elements: dict
  contains:
    baseline:
      description: The current baseline document; null when none is enrolled.
      type: dict
    version:
      description: The current version number; null when none is enrolled.
      type: int
    history:
      description: Every version, oldest first (version, created, by, reason).
      type: list
      elements: dict
    path:
      description: The store file of the host.
      type: str
    enforcement:
      description: The enforcement state recorded in the store (null when none).
      type: dict
"""

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.bootstate import baseline as bs


class LookupModule(LookupBase):

    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        store_dir = self.get_option("store_dir")
        if not store_dir:
            raise AnsibleLookupError("boot_state_baseline: store_dir is empty. Fix: give the store's directory")
        results = []
        for host in terms:
            try:
                results.append(bs.query(store_dir, host))
            except SpireTpmError as err:
                raise AnsibleLookupError(err.message)
        return results
