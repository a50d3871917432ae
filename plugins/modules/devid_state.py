#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: devid_state
short_description: The boot state, the DevID's convergence record and SPIRE's tpm_devid checks in one call
version_added: "0.3.0"
description:
  - The three checks a no-op run of the C(devid_provision) role makes, in one module call. Read-only.
  - With O(boot_state), measures the boot state against the host's baseline copy exactly as
    M(trustroot.spire_tpm.tpm_boot_state) does with O(trustroot.spire_tpm.tpm_boot_state#module:baseline_copy_path),
    and returns its result as RV(boot_state). A drift or a blocked copy is reported, never a failure; the gate is the
    role's.
  - Checks the convergence record exactly as M(trustroot.spire_tpm.converged) with C(state=check) does, and returns
    its result as RV(converged), RV(reasons), RV(certificates) and RV(inputs_digest).
  - With O(verify), and only when RV(converged) is true, replays SPIRE's C(tpm_devid) attestation exactly as
    M(trustroot.spire_tpm.tpm_devid_verify) does, and returns its result as RV(verify). A replay that fails does not
    fail the module; RV(verified) is false and RV(verify) holds the message M(trustroot.spire_tpm.tpm_devid_verify)
    fails with. When not converged the replay is not run (the role issues a new certificate and verifies it then).
  - Everything that needs no TPM is read first (the baseline copy, the record, the DevID files and CA bundles); then
    one TPM context serves the PCR snapshot and the replay. The TPM is not opened when there is nothing to measure or
    replay (no baseline copy on the host, and no replay).
  - Fails on bad options, unreadable or malformed inputs (a malformed baseline copy, a missing DevID file or CA
    bundle) and an unreachable TPM.
author:
  - trustroot.spire_tpm contributors (@trustroot)
extends_documentation_fragment:
  - trustroot.spire_tpm.tpm
options:
  boot_state:
    description:
      - Measure the boot state against the host's baseline copy. Without it RV(boot_state) is null.
    type: dict
    suboptions:
      baseline_copy_path:
        description:
          - The host's baseline copy, as O(trustroot.spire_tpm.tpm_boot_state#module:baseline_copy_path). When the
            file does not exist nothing is measured and RV(boot_state.baseline_copy) is null.
        type: path
        required: true
  convergence:
    description:
      - The convergence record to check, with the options of M(trustroot.spire_tpm.converged) with C(state=check)
        and their meaning.
    type: dict
    required: true
    suboptions:
      path:
        description: The record file (absolute).
        type: str
        required: true
      inputs_digest:
        description: The digest of the role's inputs; a different digest from the record's means not converged.
        type: str
        required: true
      paths:
        description: Absolute paths compared with their snapshots in the record.
        type: list
        elements: str
        default: []
      users:
        description: Users whose uid, primary gid and groups are compared with the record.
        type: list
        elements: str
        default: []
      groups:
        description: Groups whose gid and members are compared with the record.
        type: list
        elements: str
        default: []
      certificates:
        description: Certificates that must be readable and outside their renewal window.
        type: list
        elements: dict
        default: []
        suboptions:
          path:
            description: A PEM certificate or chain (leaf first), or a DER certificate.
            type: str
            required: true
          renew_before:
            description: How long before the leaf's notAfter it is due (V(720h), V(30d)); default a third of its life.
            type: str
      commands:
        description: Health commands that must exit 0; not run when anything else already differs.
        type: list
        elements: dict
        default: []
        suboptions:
          name:
            description: A short name, used in RV(reasons).
            type: str
            required: true
          argv:
            description: The program and its arguments (no shell).
            type: list
            elements: str
            required: true
          timeout:
            description: Seconds before the command is killed, which counts as a failure.
            type: int
            default: 10
  verify:
    description:
      - Replay SPIRE's tpm_devid attestation when converged, with the options of
        M(trustroot.spire_tpm.tpm_devid_verify) and their meaning. Without it RV(verify) and RV(verified) are null.
    type: dict
    suboptions:
      devid_cert_path:
        description: The DevID certificate (PEM), followed by its intermediate CA certificates.
        type: path
        required: true
      devid_pub_path:
        description: The DevID public blob in SPIRE's format.
        type: path
        required: true
      devid_priv_path:
        description: The DevID private blob in SPIRE's format.
        type: path
        required: true
      devid_password:
        description: Authorization value of the DevID key.
        type: str
      devid_ca_path:
        description: PEM bundle of DevID root CAs (SPIRE server's C(devid_ca_path)).
        type: path
        required: true
      endorsement_ca_path:
        description: PEM bundle of TPM manufacturer CAs, roots and intermediates.
        type: path
        required: true
      trust_domain:
        description: SPIFFE trust domain of the SPIRE server, used for the returned agent ID.
        type: str
        required: true
      owner_hierarchy_password:
        description: Owner hierarchy authorization.
        type: str
      endorsement_hierarchy_password:
        description: Endorsement hierarchy authorization.
        type: str
attributes:
  check_mode:
    support: full
    description: The module never changes anything; it runs the same in check mode.
  diff_mode:
    support: none
    description: Nothing is changed, so there is no diff.
  facts:
    support: full
    description: Sets C(ansible_facts.tpm_boot_state) when the boot state was measured, as
      M(trustroot.spire_tpm.tpm_boot_state) does.
  platform:
    support: full
    description: Target OS/families that can be operated against.
    platforms: posix
notes:
  - The DevID key has no C(noDA) attribute, so a wrong O(verify.devid_password) counts toward the TPM's
    dictionary-attack lockout; the replay tries it once.
requirements:
  - cryptography on the managed host (the certificates and the replay)
seealso:
  - module: trustroot.spire_tpm.tpm_boot_state
  - module: trustroot.spire_tpm.converged
  - module: trustroot.spire_tpm.tpm_devid_verify
"""

EXAMPLES = r"""
- name: Boot state, convergence and SPIRE's tpm_devid checks (one call)
  trustroot.spire_tpm.devid_state:
    boot_state:
      baseline_copy_path: /var/lib/trustroot/boot-state/baseline.json
    convergence:
      path: /var/lib/trustroot-spire-tpm/converged/devid_provision.json
      inputs_digest: "{{ devid_inputs_digest }}"
      paths: [/etc/spire/devid/devid.crt, /etc/spire/devid/devid.pub, /etc/spire/devid/devid.priv]
      groups: [spire]
      certificates:
        - {path: /etc/spire/devid/devid.crt, renew_before: 720h}
    verify:
      devid_cert_path: /etc/spire/devid/devid.crt
      devid_pub_path: /etc/spire/devid/devid.pub
      devid_priv_path: /etc/spire/devid/devid.priv
      devid_ca_path: /etc/spire/devid/verify/devid-ca.pem
      endorsement_ca_path: /etc/spire/devid/verify/endorsement-ca.pem
      trust_domain: example.org
  become: true
  register: devid_state

- name: Fail with the broken check of SPIRE's tpm_devid attestation
  ansible.builtin.fail:
    msg: "{{ devid_state.verify.msg }}"
  when: devid_state.verified is false
"""

RETURN = r"""
boot_state:
  description:
    - M(trustroot.spire_tpm.tpm_boot_state)'s result for O(boot_state.baseline_copy_path) (C(baseline_copy),
      C(boot_state), C(report), C(banks), C(tcti)), its C(ansible_facts) aside (set as facts). Only
      C(baseline_copy), null, when the copy does not exist (nothing measured).
    - Null without O(boot_state).
  returned: always
  type: dict
  sample: {"baseline_copy": {"schema": 1, "host": "node1", "policy": "block", "gate": "enforce",
           "enforce_on": ["drift"], "event_log_path": "/sys/kernel/security/tpm0/binary_bios_measurements",
           "blocked": null},
           "report": {"status": "drift", "findings": ["drift"], "baseline_version": 1,
                      "summary": "PCR 7 changed: EV_EFI_VARIABLE_DRIVER_CONFIG db"},
           "boot_state": {"pcr_selection": [0, 7], "pcrs": {"sha256": {"0": "3d45...", "7": "65ca..."}},
                          "event_log": null},
           "banks": ["sha256"], "tcti": "device:/dev/tpmrm0"}
  contains:
    baseline_copy:
      description: The host's baseline copy without its C(baseline); null when it does not exist.
      type: dict
      returned: when O(boot_state) is given
    boot_state:
      description: What was measured (C(pcr_selection), C(pcrs), C(event_log)).
      type: dict
      returned: when the copy exists
    report:
      description: The evaluation (C(status), C(findings), C(pcr_drift), C(summary), C(baseline_version), ...).
      type: dict
      returned: when the copy exists
    banks:
      description: The banks that were read.
      type: list
      elements: str
      returned: when the copy exists
    tcti:
      description: The TCTI that was used.
      type: str
      returned: when the copy exists
converged:
  description: Whether the host is as recorded (M(trustroot.spire_tpm.converged)'s C(converged)).
  returned: always
  type: bool
  sample: true
reasons:
  description: Each difference from the record (M(trustroot.spire_tpm.converged)'s C(reasons)); empty when converged.
  returned: always
  type: list
  elements: str
  sample: ["inputs changed since the record"]
certificates:
  description:
    - For each of O(convergence.certificates), C(path), C(serial), C(not_before), C(not_after) and
      C(public_key_sha256) (M(trustroot.spire_tpm.converged)'s C(certificates)); null for one that could not be read.
  returned: always
  type: list
  elements: dict
inputs_digest:
  description: The O(convergence.inputs_digest) the check compared, to record at the end of the run it started.
  returned: always
  type: str
verified:
  description:
    - V(true) when the replay of SPIRE's tpm_devid checks passed, V(false) when it failed (RV(verify.msg) says
      why), null when it did not run (no O(verify), or not converged).
  returned: always
  type: bool
  sample: true
verify:
  description:
    - Null without O(verify).
    - 'When not converged, C({"skipped": true, "msg": "not run: not converged"}).'
    - When the replay passed, M(trustroot.spire_tpm.tpm_devid_verify)'s result (C(checks), C(agent_id),
      C(selectors), C(devid_certificate), C(ek_certificate)).
    - When it failed, M(trustroot.spire_tpm.tpm_devid_verify)'s failed result, C(failed) true and C(msg) its
      message, with C(checks) (those run; when the DevID did not load or the TPM has no EK certificate, only
      C(devid_chain)) and, when every check could run, C(agent_id), C(selectors), C(devid_certificate) and
      C(ek_certificate).
  returned: always
  type: dict
  contains:
    failed:
      description: True when the replay failed.
      type: bool
      returned: when the replay failed
    skipped:
      description: True when the replay was not run because the host is not converged.
      type: bool
      returned: when not converged
    msg:
      description: Why the replay failed (the broken check, explained, and the fix), or why it was not run.
      type: str
      returned: when the replay failed or did not run
      sample: "SPIRE's tpm_devid attestation would fail at check 'devid_chain': ..."
    checks:
      description: Every check run, in SPIRE's order (C(name), C(ok), C(detail)).
      type: list
      elements: dict
      returned: when the replay ran
    agent_id:
      description: The SPIFFE ID SPIRE gives the agent.
      type: str
      returned: when every check could run
      sample: spiffe://example.org/spire/agent/tpm_devid/b006eea07c04deb86aa76e19320ec7ee13039fca
    selectors:
      description: The selectors SPIRE emits for the agent.
      type: list
      elements: str
      returned: when every check could run
    devid_certificate:
      description: Subject, issuer, serial, validity and SHA-256 fingerprint of the DevID certificate.
      type: dict
      returned: when every check could run
    ek_certificate:
      description: Subject, issuer, serial, validity and SHA-256 fingerprint of the EK certificate at 0x01c00002.
      type: dict
      returned: when every check could run
ansible_facts:
  description: Facts set by the module.
  returned: when the boot state was measured
  type: dict
  contains:
    tpm_boot_state:
      description: As M(trustroot.spire_tpm.tpm_boot_state) sets it, C(pcrs), C(status), C(summary) and
        C(baseline_version).
      type: dict
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.converge import CHECK_OPTIONS
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError, fail_module
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm.attest import VERIFY_OPTIONS

try:
    from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import devid
    from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm.context import HAS_PYTSS
    from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm.devid_state import devid_state
    IMPORT_ERROR = None
except ImportError:  # pragma: no cover
    HAS_PYTSS = False
    IMPORT_ERROR = traceback.format_exc()


def main():
    module = AnsibleModule(
        argument_spec=dict(
            tcti=dict(type="str"),
            boot_state=dict(type="dict", options=dict(baseline_copy_path=dict(type="path", required=True))),
            convergence=dict(type="dict", required=True,
                             options=dict(CHECK_OPTIONS, inputs_digest=dict(type="str", required=True))),
            verify=dict(type="dict", options=VERIFY_OPTIONS),
        ),
        supports_check_mode=True,
    )
    p = module.params
    needs_tpm = p["boot_state"] is not None or p["verify"] is not None
    if needs_tpm and (IMPORT_ERROR is not None or not HAS_PYTSS):
        module.fail_json(msg=missing_required_lib("tpm2-pytss"), exception=IMPORT_ERROR)
    if p["verify"] is not None and not devid.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=str(devid.CRYPTOGRAPHY_IMPORT_ERROR))
    try:
        result = devid_state(tcti=p["tcti"], boot_state=p["boot_state"], convergence=p["convergence"],
                             verify=p["verify"])
    except SpireTpmError as err:
        fail_module(module, err)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
