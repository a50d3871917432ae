# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The tpm_host role's TPM report (the local fact ``tpm``): what the TPM is, its EKs and its PCRs, composed once.

* ``check_socket_access()``: a software TPM's unix socket must be a socket of the TPM group with group read/write, as
  /dev/tpmrm0 is (the SPIRE agent user opens it through that group);
* ``read_report()``: the EK report, the fixed properties and the PCRs read through ONE TPM context;
* ``compose()``: the document of the facts file (PEM blobs left out: audits read hashes, issuers and dates);
* ``render()``: its bytes, as Ansible's ``to_nice_json(sort_keys=true)`` + newline writes them, so a file written by
  either is byte-identical.

The tpm_host_facts module is the thin shell around them. Imports nothing from Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import grp
import json
import os
import stat

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import ek as ek_utils
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import info as info_utils
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import pcr as pcr_utils
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm.context import open_tpm

# The facts file's schema (roles/tpm_host/vars/main.yml __tpm_host_facts_schema says the same for a host without TPM).
FACTS_SCHEMA = 1
# Kept out of the facts file (tpm_ek_info returns them when a play needs them).
PEM_KEYS = ("certificate", "public_key")


def _group_name(gid):
    try:
        return grp.getgrgid(gid).gr_name
    except (KeyError, OverflowError):
        return str(gid)


def check_socket_access(path, group):
    """Raise SpireTpmError unless ``path`` is a unix socket of ``group`` with group read and write.

    A path that does not exist passes: whether anything serves the socket is open_tpm's to tell (it connects first and
    names the cause). The socket itself is looked at, not what a symbolic link points to."""
    try:
        st = os.lstat(path)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        raise SpireTpmError("cannot look at the TPM socket %s: %s" % (path, e.strerror or e),
                            "give the user running the task access to %s, or run it with become"
                            % os.path.dirname(path))
    is_sock = stat.S_ISSOCK(st.st_mode)
    gname = _group_name(st.st_gid)
    mode = stat.S_IMODE(st.st_mode)
    if is_sock and gname == group and mode & 0o060 == 0o060:
        return None
    raise SpireTpmError(
        "%s is %s with group %s and mode %04o; it must be a unix socket of group %s with mode 0660, as /dev/tpmrm0 is"
        % (path, "a unix socket" if is_sock else "not a unix socket", gname, mode, group),
        "serve it with swtpm socket --server type=unixio,path=%s,mode=0660,gid=<gid of %s>; or leave the socket's "
        "group unchecked (tpm_host_check_device_permissions=false) when only root opens the TPM" % (path, group),
        socket_path=path, socket_group=gname, socket_mode="%04o" % mode)


def compose(ek_report, tpm_props, tcti, pcr):
    """The facts file's document from ek.ek_report(), info.tpm_info(), the TCTI string and pcr.pcr_report()."""
    return {
        "schema": FACTS_SCHEMA,
        "present": True,
        "error": None,
        "tcti": tcti,
        "tpm": tpm_props,
        "ek_pubhash": ek_report["ek_pubhash"],
        "ek_certificate_count": len([e for e in ek_report["eks"] if e.get("nv_index")]),
        "eks": [dict((k, v) for k, v in e.items() if k not in PEM_KEYS) for e in ek_report["eks"]],
        "spire_tpm_devid_ready": ek_report["spire_tpm_devid_ready"],
        "spire_tpm_devid_reason": ek_report["spire_tpm_devid_reason"],
        "pcr_banks": pcr["allocated_banks"],
        "pcrs": pcr["values"],
        "pcr_drift": pcr["drift"],
        "pcr_matches_baseline": pcr["matches_baseline"],
    }


def render(doc):
    """The facts file's bytes: ``to_nice_json(sort_keys=true)`` (indent 4, ', '/': ' separators, ASCII) + newline."""
    return (json.dumps(doc, indent=4, sort_keys=True, separators=(",", ": ")) + "\n").encode("utf-8")


def read_report(tcti, trust_anchors=None, banks=None, pcrs=None, baseline=None, endorsement_hierarchy_password=None):
    """Open the TPM once: its fixed properties, EK report and PCRs → the composed document (see ``compose``)."""
    pcrs = pcr_utils.normalize_pcrs(pcrs)
    with open_tpm(tcti) as tpm:
        props = info_utils.tpm_info(tpm)
        eks = ek_utils.ek_report(tpm, trust_anchors, endorsement_hierarchy_password=endorsement_hierarchy_password)
        pcr = pcr_utils.pcr_report(tpm, banks, pcrs, baseline)
        tcti_string = tpm.tcti_string
    return compose(eks, props, tcti_string, pcr)
