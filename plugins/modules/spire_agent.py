#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: spire_agent
short_description: Evict or ban an agent attested to a SPIRE server
version_added: "0.1.0"
description:
  - O(state=evicted) runs C(spire-server agent evict). The agent's record is deleted and its next sync with the
    server (within seconds) is refused; an agent that can re-attest (for example C(tpm_devid)) attests again by
    itself with the same SPIFFE ID, a C(join_token) agent drops its SVID and exits (its token is used up, so it
    cannot come back).
  - O(state=banned) runs C(spire-server agent ban). The agent stays listed as banned; the running agent is refused
    on its next sync and exits, and every attestation is refused (C(agent is banned)) until the agent is evicted,
    which deletes the record and so lifts the ban.
  - Idempotent. An agent the server does not know is left alone (C(changed=false)); an agent already banned is not
    banned again.
author:
  - trustroot.spire_tpm contributors (@trustroot)
extends_documentation_fragment:
  - trustroot.spire_tpm.spire_cli
options:
  spiffe_id:
    description: SPIFFE ID of the agent, for example C(spiffe://example.org/spire/agent/join_token/<token>).
    type: str
    required: true
  state:
    description: C(evicted) or C(banned).
    type: str
    choices: [evicted, banned]
    default: evicted
notes:
  - Supports check mode (only C(agent show) runs).
"""

EXAMPLES = r"""
- name: Evict the old join_token agent after the host re-attested with tpm_devid
  trustroot.spire_tpm.spire_agent:
    spiffe_id: "spiffe://example.org/spire/agent/join_token/{{ old_token }}"
    state: evicted
"""

RETURN = r"""
agent:
  description: The agent as the server listed it before the change (null when the server does not know it).
  returned: always
  type: dict
  sample: {"spiffe_id": "spiffe://example.org/spire/agent/join_token/abc", "attestation_type": "join_token",
           "banned": false, "can_reattest": false}
found:
  description: Whether the server knew the agent.
  returned: always
  type: bool
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
            spiffe_id=dict(type="str", required=True),
            state=dict(type="str", choices=["evicted", "banned"], default="evicted"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    changed = False
    view = None
    try:
        ids.validate_spiffe_id(p["spiffe_id"], "agent spiffe_id")
        cli = SpireCli(module.run_command, p["spire_server_bin"], p["socket_path"])
        agent = cli.agent_show(p["spiffe_id"])
        if agent is not None:
            view = {
                "spiffe_id": ids.from_proto(agent.get("id")) or p["spiffe_id"],
                "attestation_type": agent.get("attestation_type", ""),
                "selectors": [ids.format_selector(s) for s in agent.get("selectors") or []],
                "banned": bool(agent.get("banned")),
                "can_reattest": bool(agent.get("can_reattest")),
            }
            if p["state"] == "evicted":
                changed = True
                if not module.check_mode:
                    changed = cli.agent_evict(p["spiffe_id"])
            elif not view["banned"]:
                changed = True
                if not module.check_mode:
                    changed = cli.agent_ban(p["spiffe_id"])
    except SpireTpmError as err:
        fail_module(module, err)
    module.exit_json(changed=changed, agent=view, found=view is not None)


if __name__ == "__main__":
    main()
