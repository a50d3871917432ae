#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: spire_entry
short_description: Declare SPIRE registration entries, one or thousands at a time
version_added: "0.1.0"
description:
  - Makes the SPIRE server's registration entries match a declaration, on the SPIRE server host.
  - Reads the current entries with one C(spire-server entry show -output json), compares them in memory in linear time,
    and applies the difference with batched C(entry create), C(entry update) and C(entry delete) calls, each well
    below the gRPC message limit (at most 500 entries and 1 MiB of JSON per call).
  - An entry is identified by its SPIFFE ID, parent ID and set of selectors (what SPIRE calls a similar entry).
    Every other field of a declared entry is brought to the declared value; a field not set means its SPIRE
    default (0, false, empty), as C(entry update) replaces all fields.
  - Creates run first, then updates; deletes (O(state=absent) and purging) run only when all of those succeeded.
    When some items of a batch fail, the module fails listing the failing entries and what was already applied.
  - Every declared entry is validated before the first call with the rules the SPIRE server applies (SPIFFE ID
    syntax; a SPIFFE ID with a path outside SPIRE's reserved C(/spire) namespace; parent and child in the same trust
    domain, as SPIRE requires both in its own, whatever O(federates_with) says; selector shape; one selector type
    when O(store_svid=true); non-negative TTLs; DNS names); an invalid declaration changes nothing.
  - What only the server can know is reported per entry, for example a O(federates_with) trust domain the server
    has no bundle for, or a trust domain that is not the server's.
  - Selectors that could never match are refused before the first call, for every entry to be present (entries
    with O(state=absent) are not checked, so a bad entry can always be deleted). The type must be one SPIRE can emit
    (the built-in node attestors, workload attestors and SVIDStores of SPIRE 1.13 and 1.15, the server's
    C(spiffe_id), the external spire-tpm-plugin's C(tpm:pub_hash:<hash>)) or be listed in O(allow_selector_types);
    node attestor selectors only on node aliases (parent C(spiffe://<trust domain>/spire/server)), workload
    attestor selectors only on entries parented to an agent or a node alias, SVIDStore selectors only with
    O(store_svid=true); the values of most built-in types must start as the plugin emits them (for example
    C(tpm_devid:subject:cn:), C(issuer:cn:), C(ca:fingerprint:)). C(tpm:pcr:...) selectors are refused, as no SPIRE
    attestor emits PCR selectors; boot state is enforced by the collection's boot-state gate
    (C(playbooks/boot_state.yml), host variable C(boot_state_policy)).
  - Where the verdict depends on the SPIRE version (for example C(spiffe_id) node selectors exist from SPIRE 1.15,
    C(azure_imds) and C(slurm) only in 1.15), the version is read from C(spire_server_bin --version).
author:
  - trustroot.spire_tpm contributors (@trustroot)
extends_documentation_fragment:
  - trustroot.spire_tpm.spire_cli
options:
  spiffe_id:
    description:
      - SPIFFE ID of a single entry (C(spiffe://<trust domain>/<path>)). Mutually exclusive with O(entries).
    type: str
  parent_id:
    description:
      - SPIFFE ID of the entry's parent, for example an agent ID or a node alias ID.
      - Required unless O(node=true).
    type: str
  node:
    description:
      - Declare a node alias entry, parented to the SPIRE server (C(spiffe://<trust domain>/spire/server)).
      - Mutually exclusive with O(parent_id). Not set means false.
    type: bool
  selectors:
    description:
      - Selectors as C(type:value) strings, for example C(tpm_devid:subject:cn:host1) or C(unix:uid:1000).
      - The value may contain colons. Order does not matter.
      - A selector no SPIRE attestor could emit for this kind of entry is refused (see O(allow_selector_types)).
    type: list
    elements: str
  x509_svid_ttl:
    description: TTL of the X509-SVIDs issued for the entry, in seconds; 0 (or not set) means the server default.
    type: int
  jwt_svid_ttl:
    description: TTL of the JWT-SVIDs issued for the entry, in seconds; 0 (or not set) means the server default.
    type: int
  dns_names:
    description: DNS names put into the X509-SVID (the first one also becomes its common name).
    type: list
    elements: str
  federates_with:
    description:
      - Trust domains (C(example.com) or C(spiffe://example.com)) whose bundles the workload receives.
      - The server must already hold a bundle for each (C(spire-server bundle set) or federation); otherwise it
        refuses the entry.
    type: list
    elements: str
  admin:
    description: Whether the workload may use the server's admin API. Not set means false.
    type: bool
  downstream:
    description: Whether the entry describes a downstream SPIRE server. Not set means false.
    type: bool
  hint:
    description: Hint for workloads to tell SVIDs apart.
    type: str
  store_svid:
    description:
      - Whether the SVID is stored by an SVIDStore plugin. Not set means false.
      - All selectors of such an entry must have the same type.
    type: bool
  entry_expiry:
    description: Unix time after which the entry expires; 0 (or not set) means never.
    type: int
  state:
    description:
      - C(present) creates or updates the entry; C(absent) deletes it.
      - With O(entries), the default for every list item that does not set its own C(state).
    type: str
    choices: [present, absent]
    default: present
  entries:
    description:
      - Many entries at once; each item takes the single-entry options above.
      - Mutually exclusive with O(spiffe_id).
    type: list
    elements: dict
    suboptions:
      spiffe_id:
        description: SPIFFE ID of the entry.
        type: str
        required: true
      parent_id:
        description: SPIFFE ID of the parent. Required unless O(entries[].node=true).
        type: str
      node:
        description: Parent the entry to the SPIRE server (a node alias).
        type: bool
        default: false
      selectors:
        description: Selectors as C(type:value) strings.
        type: list
        elements: str
        required: true
      x509_svid_ttl:
        description: X509-SVID TTL in seconds; 0 means the server default.
        type: int
        default: 0
      jwt_svid_ttl:
        description: JWT-SVID TTL in seconds; 0 means the server default.
        type: int
        default: 0
      dns_names:
        description: DNS names of the X509-SVID.
        type: list
        elements: str
        default: []
      federates_with:
        description: Federated trust domains.
        type: list
        elements: str
        default: []
      admin:
        description: Admin workload.
        type: bool
        default: false
      downstream:
        description: Downstream SPIRE server.
        type: bool
        default: false
      hint:
        description: Hint for workloads.
        type: str
        default: ""
      store_svid:
        description: Store the SVID through an SVIDStore plugin.
        type: bool
        default: false
      entry_expiry:
        description: Unix time the entry expires; 0 means never.
        type: int
        default: 0
      state:
        description: C(present) or C(absent); defaults to the top-level O(state).
        type: str
        choices: [present, absent]
  allow_selector_types:
    description:
      - Selector types accepted without any check, for the types a custom (external) plugin emits.
      - A plugin's selectors carry the name it is configured under in the server or agent configuration, for
        example C(my_attestor) for C(WorkloadAttestor "my_attestor").
      - Applies to O(selectors) and to the selectors of every item of O(entries).
    type: list
    elements: str
    default: []
  purge:
    description:
      - Delete the entries inside O(purge_scope) that are not declared.
      - Refused without O(purge_scope), so a short declaration cannot wipe a whole server.
    type: bool
    default: false
  purge_scope:
    description:
      - The part of the server's entries this task owns; an entry is in scope when it matches every key given.
    type: dict
    suboptions:
      parent_id:
        description: Entries with exactly this parent ID.
        type: str
      spiffe_id_prefix:
        description: Entries whose SPIFFE ID starts with this string (for example C(spiffe://example.org/web/)).
        type: str
notes:
  - Supports check mode (the plan is computed from one read-only C(entry show); nothing is written) and diff mode
    (one JSON line per changed entry before and after).
  - Entries created by C(spire-server token generate -spiffeID) or by other tools are left alone unless they are
    declared with O(state=absent) or fall inside O(purge_scope).
"""

EXAMPLES = r"""
- name: Node alias for every TPM DevID host of the fleet
  trustroot.spire_tpm.spire_entry:
    spiffe_id: spiffe://example.org/node/web1
    node: true
    selectors:
      - tpm_devid:subject:cn:web1.example.org

- name: Workload entries of the web tier, purging undeclared ones below /web/
  trustroot.spire_tpm.spire_entry:
    socket_path: /run/spire/server/private/api.sock
    entries:
      - spiffe_id: spiffe://example.org/web/frontend
        parent_id: spiffe://example.org/node/web1
        selectors: [unix:uid:1000]
        x509_svid_ttl: 3600
        dns_names: [frontend.example.org]
      - spiffe_id: spiffe://example.org/web/old
        parent_id: spiffe://example.org/node/web1
        selectors: [unix:uid:1001]
        state: absent
    purge: true
    purge_scope:
      spiffe_id_prefix: spiffe://example.org/web/

- name: A workload attested by a custom external WorkloadAttestor "my_attestor"
  trustroot.spire_tpm.spire_entry:
    spiffe_id: spiffe://example.org/batch/runner
    parent_id: spiffe://example.org/node/web1
    selectors:
      - my_attestor:queue:nightly
    allow_selector_types: [my_attestor]
"""

RETURN = r"""
created:
  description: Entries created (in check mode, that would be created; their C(id) is then null).
  returned: always
  type: list
  elements: dict
  sample: [{"id": "2f1c...", "spiffe_id": "spiffe://example.org/web/frontend",
            "parent_id": "spiffe://example.org/node/web1", "selectors": ["unix:uid:1000"]}]
updated:
  description: Entries updated in place, with the names of the fields that changed (C(changed_fields)).
  returned: always
  type: list
  elements: dict
deleted:
  description: Entries deleted (O(state=absent) or purged), with their IDs.
  returned: always
  type: list
  elements: dict
entries:
  description:
    - Every declared entry with O(state=present) as it is now on the server (fields as in the options), with its
      C(id) (null for an entry not created yet in check mode).
  returned: always
  type: list
  elements: dict
failures:
  description:
    - When some items of a batch failed, one item per failed change with C(action) (create, update, delete),
      C(spiffe_id), C(parent_id), C(selectors), C(id) and the server's C(error); C(created), C(updated) and
      C(deleted) then list what was already applied.
  returned: failure
  type: list
  elements: dict
  sample: [{"action": "create", "spiffe_id": "spiffe://example.org/web/w3",
            "error": "AlreadyExists (6): similar entry already exists"}]
skipped_deletes:
  description: Deletes not attempted because creates or updates failed.
  returned: failure
  type: list
  elements: dict
summary:
  description: Counts of entries to create, update, delete and left unchanged.
  returned: always
  type: dict
  sample: {"create": 1, "update": 0, "delete": 2, "unchanged": 41}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError, fail_module
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire import entries as E
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire import selectors as S
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire.cli import DEFAULT_SERVER_BIN, SpireCli
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire.config_catalog import binary_version

SINGLE_OPTIONS = ("parent_id", "node", "selectors") + E.FIELDS


def entry_suboptions():
    return dict(
        spiffe_id=dict(type="str", required=True),
        parent_id=dict(type="str"),
        node=dict(type="bool", default=False),
        selectors=dict(type="list", elements="str", required=True),
        x509_svid_ttl=dict(type="int", default=0),
        jwt_svid_ttl=dict(type="int", default=0),
        dns_names=dict(type="list", elements="str", default=[]),
        federates_with=dict(type="list", elements="str", default=[]),
        admin=dict(type="bool", default=False),
        downstream=dict(type="bool", default=False),
        hint=dict(type="str", default=""),
        store_svid=dict(type="bool", default=False),
        entry_expiry=dict(type="int", default=0),
        state=dict(type="str", choices=["present", "absent"]),
    )


def argument_spec():
    return dict(
        spire_server_bin=dict(type="path", default=DEFAULT_SERVER_BIN),
        socket_path=dict(type="path"),
        spiffe_id=dict(type="str"),
        parent_id=dict(type="str"),
        node=dict(type="bool"),
        selectors=dict(type="list", elements="str"),
        x509_svid_ttl=dict(type="int"),
        jwt_svid_ttl=dict(type="int"),
        dns_names=dict(type="list", elements="str"),
        federates_with=dict(type="list", elements="str"),
        admin=dict(type="bool"),
        downstream=dict(type="bool"),
        hint=dict(type="str"),
        store_svid=dict(type="bool"),
        entry_expiry=dict(type="int"),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        entries=dict(type="list", elements="dict", options=entry_suboptions()),
        allow_selector_types=dict(type="list", elements="str", default=[]),
        purge=dict(type="bool", default=False),
        purge_scope=dict(type="dict", options=dict(parent_id=dict(type="str"), spiffe_id_prefix=dict(type="str"))),
    )


def declared(params):
    """The declared entries as plain dicts, each with its own state."""
    if params["entries"] is not None:
        stray = [name for name in SINGLE_OPTIONS if params[name] is not None]
        if stray:
            raise SpireTpmError("options %s are single-entry options and cannot be combined with entries"
                                % ", ".join(stray), "move them into the items of entries")
        out = []
        for item in params["entries"]:
            item = dict(item)
            item["state"] = item.get("state") or params["state"]
            out.append(item)
        return out
    if params["spiffe_id"] is None:
        if params["purge"]:
            return []
        raise SpireTpmError("nothing declared", "set spiffe_id (one entry) or entries (a list)")
    spec = dict((name, params[name]) for name in ("spiffe_id", "state") + SINGLE_OPTIONS)
    return [spec]


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        mutually_exclusive=[("spiffe_id", "entries"), ("node", "parent_id")],
        supports_check_mode=True,
    )
    params = module.params
    result = dict(changed=False, created=[], updated=[], deleted=[], entries=[], summary={})
    try:
        # Selectors that could never match are refused here, before any call; the binary is asked for its version
        # only when a verdict depends on it.
        version = S.lazy_version(lambda: binary_version(params["spire_server_bin"]))
        check = S.entry_selector_check(params["allow_selector_types"], version)
        desired = E.normalize_all(declared(params), selector_check=check)
        scope = E.check_scope(params["purge"], params["purge_scope"])
        cli = SpireCli(module.run_command, params["spire_server_bin"], params["socket_path"])
        current = [E.normalize_current(e) for e in cli.entry_show()]
        plan = E.make_plan(desired, current, scope)
        result["summary"] = plan.summary()
        result["changed"] = plan.changed
        if module._diff:
            result["diff"] = E.diff_text(plan)
        ids = {}
        for entry_id, want in plan.unchanged:
            ids[E.identity(want)] = entry_id
        for entry_id, want, _have in plan.update:
            ids[E.identity(want)] = entry_id
        if module.check_mode:
            result.update(E.planned(plan))
        elif plan.changed:
            done = E.apply_plan(cli, plan)
            ids.update(done["ids"])
            result["created"] = done["created"]
            result["updated"] = done["updated"]
            result["deleted"] = done["deleted"]
        result["entries"] = [E.public(w, ids.get(E.identity(w))) for w in desired if w["state"] == "present"]
    except SpireTpmError as err:
        fail_module(module, err, changed=bool(err.details.get("created") or err.details.get("updated")
                                              or err.details.get("deleted")))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
