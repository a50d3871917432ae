#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: spire_join_token
short_description: Generate a one-time SPIRE join token
version_added: "0.1.0"
description:
  - Runs C(spire-server token generate -output json) on the SPIRE server host and returns the token.
  - With O(spiffe_id) the server also creates an entry with that SPIFFE ID, parented to the agent the token
    will attest (C(spiffe://<trust domain>/spire/agent/join_token/<token>)), with selector C(spiffe_id:<agent ID>).
    The agent receives that entry because it is the entry's parent.
  - Not idempotent by nature - every run creates a new token (C(changed=true)). In check mode no token is created
    and RV(token) is null.
  - The token is a secret until it is used; it is returned only under RV(token), never in a message. Set
    C(no_log=true) on the task so that Ansible does not print or log the result, and pass the registered value on.
author:
  - trustroot.spire_tpm contributors (@trustroot)
extends_documentation_fragment:
  - trustroot.spire_tpm.spire_cli
options:
  spiffe_id:
    description:
      - SPIFFE ID for the entry created along with the token (SPIRE's C(-spiffeID)). Optional.
      - It must be in the server's trust domain, with a path outside SPIRE's reserved C(/spire) namespace.
    type: str
  ttl:
    description: Seconds the token stays valid.
    type: int
    default: 600
notes:
  - Supports check mode (nothing is created).
  - A join_token agent cannot re-attest and ignores its configured node attestor while a join token is set; see the
    collection's migration playbook for moving such agents to C(tpm_devid).
"""

EXAMPLES = r"""
- name: One-time token for a host that cannot use its TPM yet
  trustroot.spire_tpm.spire_join_token:
    spiffe_id: spiffe://example.org/host/legacy1
    ttl: 900
  register: jt
  no_log: true
"""

RETURN = r"""
token:
  description: The join token (null in check mode). A secret - register it from a task with C(no_log=true).
  returned: success
  type: str
expires_at:
  description: Unix time the token expires (null in check mode).
  returned: success
  type: int
agent_id:
  description:
    - The SPIFFE ID the agent attested with this token will get; it contains the token, so it is as secret.
    - Null in check mode and when O(spiffe_id) is not set (its trust domain is taken from O(spiffe_id)).
  returned: success
  type: str
  sample: spiffe://example.org/spire/agent/join_token/5e4b...
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError, fail_module
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire import ids
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire.cli import DEFAULT_SERVER_BIN, SpireCli


def main():
    module = AnsibleModule(
        argument_spec=dict(
            spire_server_bin=dict(type="path", default=DEFAULT_SERVER_BIN),
            socket_path=dict(type="path"),
            spiffe_id=dict(type="str"),
            ttl=dict(type="int", default=600),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        if p["spiffe_id"]:
            ids.validate_spiffe_id(p["spiffe_id"])
            problem = ids.entry_spiffe_id_problem(p["spiffe_id"])
            if problem:
                raise SpireTpmError("invalid spiffe_id %r: %s" % (p["spiffe_id"], problem),
                                    "give an ID such as spiffe://example.org/host/web1")
        if p["ttl"] < 1:
            raise SpireTpmError("ttl must be at least 1 second (got %d)" % p["ttl"], "give ttl in seconds, e.g. 600")
        if module.check_mode:
            module.exit_json(changed=True, token=None, expires_at=None, agent_id=None)
        cli = SpireCli(module.run_command, p["spire_server_bin"], p["socket_path"])
        out = cli.token_generate(p["spiffe_id"], p["ttl"])
    except SpireTpmError as err:
        fail_module(module, err)
    token = out["value"]
    # The CLI does not print the trust domain: the agent ID is known only when spiffe_id gives it.
    agent_id = None
    if p["spiffe_id"]:
        agent_id = ids.join_token_agent_id(ids.trust_domain_of(p["spiffe_id"]), token)
    module.exit_json(changed=True, token=token, expires_at=int(out.get("expires_at") or 0), agent_id=agent_id)


if __name__ == "__main__":
    main()
