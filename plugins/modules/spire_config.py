#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: spire_config
short_description: Write a SPIRE server or agent configuration file from data, checked against SPIRE's rules
version_added: "0.1.0"
description:
  - Takes the SPIRE configuration as data in SPIRE's own structure (C(server)/C(agent), C(plugins),
    C(health_checks), C(telemetry)) and writes it as HCL, the format C(spire-server run) and C(spire-agent run)
    read. Keys and plugin names are SPIRE's, so the SPIRE configuration reference applies unchanged.
  - Before writing, checks the rules SPIRE applies when it loads the file and fails with the cause and the fix
    instead of leaving a daemon that will not start. The rules were read from SPIRE 1.13.3 and 1.15.3 and are
    tested against the real binaries (each accepted configuration starts the daemon, each refused one does not).
    Among them, plugin names known to SPIRE per type (an unknown name without C(plugin_cmd), such as
    C(NodeAttestor "tpm"), fails in SPIRE with C(no built-in plugin "tpm" for type "NodeAttestor")),
    C(plugin_checksum) of exactly 64 hex digits, C(plugin_data) or C(plugin_data_file) but not both, exactly one
    NodeAttestor on an agent, no external C(join_token), the section keys of the SPIRE version and the types SPIRE
    can decode (C(bind_port) may be C(8081) or C("8081"), as in SPIRE; a boolean must be unquoted), durations,
    log levels, key types, the trust bundle rules of the agent and the required C(sql), C(disk) and C(tpm_devid)
    settings.
  - The SPIRE version is read from O(validate_bin) (C(--version)) when it exists; its plugin names and keys are
    then checked exactly. Without it, what any known version (1.13, 1.15) accepts is accepted.
  - Refused although SPIRE accepts it (collection policy, each with an override) are C(insecure_bootstrap)
    (O(allow_insecure_bootstrap)) and unknown keys in a plugin block, which SPIRE silently ignores
    (O(allow_unknown_plugin_keys)). A server with no NodeAttestor and an agent without C(data_dir) are accepted,
    as SPIRE does, with a warning.
  - With O(check_files), the files SPIRE reads when it starts must exist on the host (the DevID certificate, key
    blobs and TPM device of C(tpm_devid), its CA bundles on a server, C(plugin_cmd) matching
    C(plugin_checksum), C(plugin_data_file), C(join_token_file)).
  - The rendered text is parsed back (pyhcl) and compared with the input; any difference fails the task.
  - When O(validate_bin) exists, the rendered file is also checked with C(<validate_bin> validate -config <file>)
    before it replaces the current one (only when the content changes).
  - Writes atomically. Idempotent; supports check mode and diff mode. Values under keys whose names contain one of
    O(secret_keys) (passwords, tokens, connection strings) are masked in the returned text and the diff and kept
    out of Ansible's output.
options:
  path:
    description: Path of the configuration file, e.g. C(/opt/spire/conf/server/server.conf).
    type: path
    required: true
  kind:
    description: Whether this is a SPIRE C(server) or C(agent) configuration.
    type: str
    required: true
    choices: [server, agent]
  config:
    description:
      - The configuration in SPIRE's structure. Top-level keys C(server) (or C(agent)), C(plugins),
        C(health_checks), C(telemetry).
      - 'C(plugins) maps each plugin type to plugin names to plugin blocks with the keys C(plugin_cmd),
        C(plugin_args), C(plugin_checksum), C(plugin_data) (a mapping), C(plugin_data_file) and C(enabled), e.g.
        C({NodeAttestor: {tpm_devid: {plugin_data: {devid_ca_path: /opt/spire/conf/server/devid-ca.pem}}}}).'
      - Keys whose value is null are left out of the file. A list of mappings is written as repeated blocks.
      - Every C($) and backslash is written escaped, so values are never expanded by C(-expandEnv).
    type: dict
    required: true
  validate_bin:
    description:
      - Path of the C(spire-server) or C(spire-agent) binary that will run the file. When it exists, its version
        (C(--version)) selects the plugin names and keys checked, and the new content is checked with
        C(<validate_bin> validate -config <temporary file>); the task fails with SPIRE's output if it is rejected.
        When it does not exist (first install), only this module's checks apply.
      - C(spire-agent validate) (every version) and C(spire-server validate) up to 1.13 check the sections but not
        the plugins; this module checks those itself.
    type: path
  backup:
    description: Keep the previous file as C(<path>.<timestamp>.bak) when the content changes.
    type: bool
    default: true
  owner:
    description: Owner of the file (name or uid).
    type: str
  group:
    description: Group of the file (name or gid).
    type: str
  mode:
    description: File mode, e.g. C('0640').
    type: raw
    default: '0640'
  secret_keys:
    description:
      - Parts of key names whose values are secrets; a key matches when its name contains one of them
        (case-insensitive).
      - Their values are masked in RV(rendered) and in the diff and are never printed by Ansible.
    type: list
    elements: str
    default: [password, token, secret, connection_string]
  allow_insecure_bootstrap:
    description:
      - Accept an agent configuration whose only trust bundle source is C(insecure_bootstrap = true) (the agent
        then trusts whichever server answers first). Off by default; for labs only.
    type: bool
    default: false
  allow_unknown_plugin_keys:
    description:
      - Accept keys in a plugin block other than C(plugin_cmd), C(plugin_args), C(plugin_checksum), C(enabled),
        C(plugin_data) and C(plugin_data_file). SPIRE ignores such keys without a word, so by default they are
        refused (a misspelt C(plugin_checksum) would leave an external plugin unverified); with this option they
        only warn.
    type: bool
    default: false
  check_files:
    description:
      - Check that the files SPIRE reads when it starts exist on the host and are usable. In check mode a missing
        file is only a warning (an earlier task would have created it).
      - Turn off when the configuration is written before those files on purpose; the daemon will not start until
        they are there.
    type: bool
    default: true
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: Secret values are masked in the diff.
requirements:
  - pyhcl
author:
  - trustroot.spire_tpm contributors (@trustroot)
"""

EXAMPLES = r"""
- name: SPIRE server accepting TPM DevID and join-token agents
  trustroot.spire_tpm.spire_config:
    path: /opt/spire/conf/server/server.conf
    kind: server
    validate_bin: /opt/spire/bin/spire-server
    owner: spire
    group: spire
    config:
      server:
        trust_domain: example.org
        bind_address: 0.0.0.0
        bind_port: 8081
        data_dir: /opt/spire/data/server
        log_level: INFO
      plugins:
        DataStore:
          sql:
            plugin_data:
              database_type: sqlite3
              connection_string: /opt/spire/data/server/datastore.sqlite3
        KeyManager:
          disk:
            plugin_data:
              keys_path: /opt/spire/data/server/keys.json
        NodeAttestor:
          join_token:
            plugin_data: {}
          tpm_devid:
            plugin_data:
              devid_ca_path: /opt/spire/conf/server/devid-ca.pem
              endorsement_ca_path: /opt/spire/conf/server/endorsement-ca.pem
      health_checks:
        listener_enabled: true
        bind_address: 127.0.0.1
        bind_port: "8080"

- name: SPIRE agent attesting with its TPM DevID
  trustroot.spire_tpm.spire_config:
    path: /opt/spire/conf/agent/agent.conf
    kind: agent
    validate_bin: /opt/spire/bin/spire-agent
    config:
      agent:
        trust_domain: example.org
        server_address: spire.example.org
        server_port: 8081
        data_dir: /opt/spire/data/agent
        trust_bundle_path: /opt/spire/conf/agent/bundle.pem
      plugins:
        KeyManager:
          disk:
            plugin_data:
              directory: /opt/spire/data/agent
        NodeAttestor:
          tpm_devid:
            plugin_data:
              devid_cert_path: /opt/spire/conf/agent/devid.pem
              devid_priv_path: /opt/spire/conf/agent/devid.priv
              devid_pub_path: /opt/spire/conf/agent/devid.pub
        WorkloadAttestor:
          unix:
            plugin_data: {}
  register: agent_conf
"""

RETURN = r"""
changed:
  description: Whether the file was (or, in check mode, would be) written or had its attributes changed.
  returned: always
  type: bool
path:
  description: Path of the configuration file.
  returned: success
  type: str
rendered:
  description: The HCL text written, with secret values replaced by C(********).
  returned: success
  type: str
backup_file:
  description: Path of the backup of the previous file, or null when none was made.
  returned: success
  type: str
  sample: /opt/spire/conf/server/server.conf.20260101T120000.bak
node_attestors:
  description: Names of the enabled NodeAttestor plugins, sorted.
  returned: success
  type: list
  elements: str
  sample: [join_token, tpm_devid]
validated:
  description: Whether the new content was checked with O(validate_bin) C(validate).
  returned: success
  type: bool
spire_version:
  description: The SPIRE version O(validate_bin) reported, whose names and keys were checked; null without it.
  returned: success
  type: str
  sample: 1.13.3
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError, fail_module

try:
    from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire import config as spire_config
    IMPORT_ERROR = None
except ImportError:  # pragma: no cover
    spire_config = None
    IMPORT_ERROR = traceback.format_exc()


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            kind=dict(type="str", required=True, choices=["server", "agent"]),
            config=dict(type="dict", required=True),
            validate_bin=dict(type="path"),
            backup=dict(type="bool", default=True),
            owner=dict(type="str"),
            group=dict(type="str"),
            mode=dict(type="raw", default="0640"),
            secret_keys=dict(type="list", elements="str", no_log=False,
                             default=["password", "token", "secret", "connection_string"]),
            allow_insecure_bootstrap=dict(type="bool", default=False),
            allow_unknown_plugin_keys=dict(type="bool", default=False),
            check_files=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    if IMPORT_ERROR is not None:
        module.fail_json(msg="cannot import the collection's module_utils", exception=IMPORT_ERROR)
    if not spire_config.HAS_PYHCL:
        module.fail_json(msg=missing_required_lib("pyhcl"), exception=str(spire_config.PYHCL_IMPORT_ERROR))
    p = module.params
    # Keep secrets out of everything Ansible prints (invocation, results, errors).
    module.no_log_values.update(spire_config.secret_values(p["config"], p["secret_keys"]))
    try:
        result = spire_config.ensure_config(
            path=p["path"], kind=p["kind"], config=p["config"], validate_bin=p["validate_bin"], backup=p["backup"],
            owner=p["owner"], group=p["group"], mode=p["mode"], secret_keys=p["secret_keys"],
            allow_insecure_bootstrap=p["allow_insecure_bootstrap"],
            allow_unknown_plugin_keys=p["allow_unknown_plugin_keys"], check_files=p["check_files"],
            check_mode=module.check_mode)
    except SpireTpmError as err:
        fail_module(module, err)
    diff = result.pop("diff")
    for warning in result.pop("warnings"):
        module.warn(warning)
    if module._diff and result["changed"]:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
