#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: spire_agent_info
short_description: List the agents attested to a SPIRE server
version_added: "0.1.0"
description:
  - Runs C(spire-server agent list -output json) on the SPIRE server host and returns every attested agent
    with its SPIFFE ID, attestation type, selectors, SVID expiry, ban and re-attestation state.
  - Filters by attestation type and selectors are applied by the server.
  - Read-only; never reports a change.
author:
  - trustroot.spire_tpm contributors (@trustroot)
extends_documentation_fragment:
  - trustroot.spire_tpm.spire_cli
options:
  attestation_type:
    description: Only agents attested with this node attestor, for example C(tpm_devid), C(tpm) or C(join_token).
    type: str
  selectors:
    description: Only agents with these selectors (C(type:value) strings), matched as O(match_selectors_on) says.
    type: list
    elements: str
  match_selectors_on:
    description:
      - How O(selectors) match an agent's selectors, as SPIRE's C(-matchSelectorsOn).
      - C(superset) (the agent has at least these), C(exact), C(any) (at least one), C(subset).
    type: str
    choices: [exact, any, superset, subset]
    default: superset
notes:
  - Supports check mode (it only reads).
"""

EXAMPLES = r"""
- name: Agents still on join_token
  trustroot.spire_tpm.spire_agent_info:
    attestation_type: join_token
  register: legacy

- name: The agent of one DevID host
  trustroot.spire_tpm.spire_agent_info:
    selectors: ["tpm_devid:subject:cn:web1.example.org"]
"""

RETURN = r"""
agents:
  description: The agents found.
  returned: always
  type: list
  elements: dict
  contains:
    spiffe_id:
      description: The agent's SPIFFE ID.
      type: str
      sample: spiffe://example.org/spire/agent/tpm_devid/4f0c...
    attestation_type:
      description: Node attestor that attested the agent.
      type: str
      sample: tpm_devid
    selectors:
      description: The agent's selectors as C(type:value) strings.
      type: list
      elements: str
    expires_at:
      description: Unix time the agent's X509-SVID expires (0 when unknown).
      type: int
    serial_number:
      description: Serial number of the agent's current X509-SVID.
      type: str
    banned:
      description: Whether the agent is banned.
      type: bool
    can_reattest:
      description: Whether the agent can re-attest (join_token agents cannot).
      type: bool
    agent_version:
      description:
        - Version the agent reported; an empty string when the server does not say (SPIRE 1.13 servers do not).
      type: str
count:
  description: Number of agents found.
  returned: always
  type: int
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError, fail_module
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire import ids
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire.cli import DEFAULT_SERVER_BIN, SpireCli


def agent_view(agent):
    return {
        "spiffe_id": ids.from_proto(agent.get("id")),
        "attestation_type": agent.get("attestation_type", ""),
        "selectors": [ids.format_selector(s) for s in agent.get("selectors") or []],
        "expires_at": int(agent.get("x509svid_expires_at") or 0),
        "serial_number": agent.get("x509svid_serial_number", ""),
        "banned": bool(agent.get("banned")),
        "can_reattest": bool(agent.get("can_reattest")),
        "agent_version": agent.get("agent_version", ""),
    }


def main():
    module = AnsibleModule(
        argument_spec=dict(
            spire_server_bin=dict(type="path", default=DEFAULT_SERVER_BIN),
            socket_path=dict(type="path"),
            attestation_type=dict(type="str"),
            selectors=dict(type="list", elements="str"),
            match_selectors_on=dict(type="str", choices=["exact", "any", "superset", "subset"], default="superset"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        for sel in p["selectors"] or []:
            ids.parse_selector(sel)
        cli = SpireCli(module.run_command, p["spire_server_bin"], p["socket_path"])
        agents = cli.agent_list(selectors=p["selectors"], attestation_type=p["attestation_type"],
                                match_selectors_on=p["match_selectors_on"] if p["selectors"] else None)
    except SpireTpmError as err:
        fail_module(module, err)
    views = [agent_view(a) for a in agents]
    module.exit_json(changed=False, agents=views, count=len(views))


if __name__ == "__main__":
    main()
