#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: tpm_host_facts
short_description: Read a host's TPM report (identity, EKs, PCRs) in one call and store it as a local fact
version_added: "0.3.0"
description:
  - The tpm_host role's one call per host. With O(socket_group), first checks that the software TPM's unix socket
    O(socket_path) is a unix socket of that group with group read and write, as C(/dev/tpmrm0) is (a socket that does
    not exist is left to the TPM connection, which names the cause).
  - Reads the TPM's fixed properties, its endorsement keys and EK certificates (as M(trustroot.spire_tpm.tpm_ek_info))
    and its PCRs (as M(trustroot.spire_tpm.tpm_pcr_facts)) through one TPM context.
  - Composes the report (C(facts), PEM blobs left out) and writes it as JSON to C(<facts_dir>/<facts_name>.fact)
    (owner root, group root, mode C(0644); the directory root, C(0755)), atomically and only when it differs.
  - Returns the host's local facts as C(ansible_local), read from O(facts_dir) after the write exactly as
    M(ansible.builtin.setup) with C(gather_subset=local) reads them, so no re-read is needed.
author:
  - trustroot.spire_tpm contributors (@trustroot)
extends_documentation_fragment:
  - trustroot.spire_tpm.tpm
options:
  ca_path:
    description:
      - Manufacturer CA certificates (file or directory, roots and intermediates) the EK certificates are checked
        against (C(eks[].chain_verified)); see M(trustroot.spire_tpm.tpm_ek_info). Not set, no chain check.
    type: path
  endorsement_hierarchy_password:
    description: Authorization of the endorsement hierarchy, when it was set (see M(trustroot.spire_tpm.tpm_ek_info)).
    type: str
  banks:
    description: PCR banks to read; not set or empty reads every allocated bank.
    type: list
    elements: str
  pcrs:
    description: PCR indices to read, from 0 to 23.
    type: list
    elements: int
    default: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23]
  baseline_file:
    description:
      - A PCR baseline on the host (JSON/YAML, or C(tpm2_pcrread) output) the PCRs are compared with; drift goes into
        the report. See M(trustroot.spire_tpm.tpm_pcr_facts).
    type: path
  socket_path:
    description: The software TPM's unix socket (the one the TCTI's C(socat UNIX-CONNECT:) reaches).
    type: path
  socket_group:
    description:
      - The group the socket must belong to, with group read and write (mode C(0660)). Not set skips the check.
    type: str
  facts_dir:
    description: Directory of the local facts.
    type: path
    default: /etc/ansible/facts.d
  facts_name:
    description: Name of the local fact (file C(<name>.fact), read back as C(ansible_local.<name>)).
    type: str
    default: tpm
attributes:
  check_mode:
    support: full
    description: Reads the TPM and reports whether the facts file would change; writes nothing.
  diff_mode:
    support: full
    description: The facts file's directory and file attributes, and its JSON before and after.
  facts:
    support: full
    description: Sets C(ansible_local) (every local fact of O(facts_dir), as M(ansible.builtin.setup) does).
  platform:
    support: full
    description: Target OS/families that can be operated against.
    platforms: posix
notes:
  - The facts file's content is deterministic (no timestamps); a second run changes nothing while the TPM stays the
    same.
seealso:
  - module: trustroot.spire_tpm.tpm_ek_info
  - module: trustroot.spire_tpm.tpm_pcr_facts
"""

EXAMPLES = r"""
- name: Read the TPM report and store it as ansible_local.tpm
  trustroot.spire_tpm.tpm_host_facts:
    ca_path: /etc/ssl/tpm-manufacturers
  register: tpm_report

- name: A software TPM on a unix socket, its group checked
  trustroot.spire_tpm.tpm_host_facts:
    tcti: "cmd:socat - UNIX-CONNECT:/run/swtpm/tpm.sock"
    socket_path: /run/swtpm/tpm.sock
    socket_group: tss
"""

RETURN = r"""
facts:
  description:
    - The report as written to the facts file; C(eks) entries as M(trustroot.spire_tpm.tpm_ek_info) returns them,
      without C(certificate) and C(public_key).
  returned: success
  type: dict
  contains:
    schema:
      description: Version of the document.
      type: int
      sample: 1
    present:
      description: Always true here (the tpm_host role records a host without a usable TPM itself).
      type: bool
    error:
      description: Always null here.
      type: str
    tcti:
      description: The TCTI that was used.
      type: str
      sample: device:/dev/tpmrm0
    tpm:
      description: Fixed properties of the TPM (see M(trustroot.spire_tpm.tpm_ek_info)).
      type: dict
    ek_pubhash:
      description: The RSA EK's hash as spire-tpm-plugin computes it.
      type: str
    ek_certificate_count:
      description: How many EK certificates the NV indices hold.
      type: int
      sample: 2
    eks:
      description: Every endorsement key found.
      type: list
      elements: dict
    spire_tpm_devid_ready:
      description: Whether SPIRE's C(tpm_devid) attestor can use this TPM's EK.
      type: bool
    spire_tpm_devid_reason:
      description: Why not; null when ready.
      type: str
    pcr_banks:
      description: Every bank allocated on the TPM.
      type: list
      elements: str
      sample: [sha1, sha256]
    pcrs:
      description: PCR values per bank, keyed by the PCR index as a string, lowercase hex.
      type: dict
    pcr_drift:
      description: The O(baseline_file) entries whose PCR differs; empty without a baseline.
      type: list
      elements: dict
    pcr_matches_baseline:
      description: Whether every baseline entry matched; null without a baseline.
      type: bool
path:
  description: The facts file.
  returned: success
  type: str
  sample: /etc/ansible/facts.d/tpm.fact
changes:
  description:
    - The paths that changed (or would, in check mode), and what changed in each (as M(trustroot.spire_tpm.file_tree)).
  returned: success
  type: list
  elements: dict
  sample: [{"path": "/etc/ansible/facts.d/tpm.fact", "kind": "file", "changes": ["content"]}]
ansible_facts:
  description: Facts set by the module.
  returned: success
  type: dict
  contains:
    ansible_local:
      description: Every local fact of O(facts_dir) after the write, as M(ansible.builtin.setup) reads them.
      type: dict
socket_path:
  description: The socket, when the socket check failed.
  returned: on failure of the socket check
  type: str
socket_group:
  description: The socket's group, when the socket check failed.
  returned: on failure of the socket check
  type: str
socket_mode:
  description: The socket's mode, when the socket check failed.
  returned: on failure of the socket check
  type: str
  sample: "0600"
"""

import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.facts.system.local import LocalFactCollector

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError, fail_module
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.file_tree import FileTree
from ansible_collections.trustroot.spire_tpm.plugins.module_utils import x509 as x509_utils
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import host_facts
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import pcr as pcr_utils
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm.context import HAS_PYTSS, PYTSS_IMPORT_ERROR


class _FactPathModule:
    """What LocalFactCollector asks of a module (params['fact_path'], run_command for executable facts, warn)."""

    def __init__(self, module, fact_path):
        self.params = {"fact_path": fact_path}
        self.run_command = module.run_command
        self.warn = module.warn


def main():
    module = AnsibleModule(
        argument_spec=dict(
            tcti=dict(type="str"),
            ca_path=dict(type="path"),
            endorsement_hierarchy_password=dict(type="str", no_log=True),
            banks=dict(type="list", elements="str"),
            pcrs=dict(type="list", elements="int", default=list(range(24))),
            baseline_file=dict(type="path"),
            socket_path=dict(type="path"),
            socket_group=dict(type="str"),
            facts_dir=dict(type="path", default="/etc/ansible/facts.d"),
            facts_name=dict(type="str", default="tpm"),
        ),
        required_by={"socket_group": ["socket_path"]},
        supports_check_mode=True,
    )
    p = module.params
    path = os.path.join(p["facts_dir"], "%s.fact" % p["facts_name"])
    try:
        # The socket first: it needs no library, and a wrong group is the cause whatever else is missing.
        if p["socket_group"]:
            host_facts.check_socket_access(p["socket_path"], p["socket_group"])
    except SpireTpmError as err:
        fail_module(module, err)
    if not HAS_PYTSS:
        module.fail_json(msg=missing_required_lib("tpm2-pytss"), exception=str(PYTSS_IMPORT_ERROR))
    if not x509_utils.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=str(x509_utils.CRYPTOGRAPHY_IMPORT_ERROR))
    try:
        anchors = None
        if p["ca_path"]:
            anchors = x509_utils.load_certificates(p["ca_path"])
            if not anchors:
                raise SpireTpmError("no certificate found in ca_path %s" % p["ca_path"],
                                    "put the TPM manufacturer's root and intermediate CA certificates (PEM or DER) "
                                    "there")
        baseline = pcr_utils.load_baseline_file(p["baseline_file"]) if p["baseline_file"] else None
        doc = host_facts.read_report(p["tcti"], anchors, p["banks"], p["pcrs"], baseline,
                                     p["endorsement_hierarchy_password"])
        tree = FileTree(
            [{"path": p["facts_dir"], "owner": "root", "group": "root", "mode": "0755"}],
            [{"path": path, "content": host_facts.render(doc).decode("utf-8"), "owner": "root", "group": "root",
              "mode": "0644", "show_diff": True}], [])
        diff = tree.diff() if module._diff else None
        changes = tree.apply(check_mode=module.check_mode)
    except SpireTpmError as err:
        fail_module(module, err)
    local = LocalFactCollector().collect(module=_FactPathModule(module, p["facts_dir"]))["local"]
    result = {"changed": bool(changes), "facts": doc, "path": path, "changes": changes,
              "ansible_facts": {"ansible_local": local}}
    if diff is not None and changes:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
