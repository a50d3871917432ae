# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The files a SPIRE configuration names, checked on the host that will run SPIRE (where the module runs).

``path_problems()`` finds the files SPIRE reads at start-up that are missing or unusable;
``check_referenced_files()`` raises on the first one (or, in check mode, returns them as warnings). This is what
the spire_config module's ``check_files`` option turns on.

This file imports nothing from Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import re

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire.config_values import (
    _is_enabled, _is_external, _set)

# Linux TPM device names spire-agent's tpm_devid autodetection looks for in /dev, in this order.
TPM_DEVICE_PATTERNS = (re.compile(r"^tpmrm\d+$"), re.compile(r"^tpm\d+$"))


def _readable_file(path):
    return os.path.isfile(path) and os.access(path, os.R_OK)


def _has_certificate(path):
    try:
        with open(path, "rb") as f:
            return b"-----BEGIN CERTIFICATE-----" in f.read()
    except (IOError, OSError):
        return False


def _tpm_autodetect(dev_dir="/dev"):
    """What spire-agent's tpm_devid autodetection finds: (path, None) or (None, problem)."""
    try:
        names = sorted(os.listdir(dev_dir))
    except OSError as e:
        return None, "cannot list %s: %s" % (dev_dir, e.strerror)
    for pattern in TPM_DEVICE_PATTERNS:
        found = [n for n in names if pattern.match(n)]
        if len(found) > 1:
            return None, "more than one possible TPM device was found (%s)" % ", ".join(found)
        if found:
            return os.path.join(dev_dir, found[0]), None
    return None, "not found (no %s/tpmrm<N> or %s/tpm<N>)" % (dev_dir, dev_dir)


def _sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def path_problems(kind, config):
    """Every file SPIRE reads at start-up that is missing or unusable: a list of (cause, fix) pairs.

    Covered: join_token_file, plugin_data_file, plugin_cmd (exists, executable, matches plugin_checksum),
    tpm_devid's certificate, key blobs and TPM device (agent; an empty tpm_device_path means SPIRE's
    autodetection in /dev) and its CA bundles (server). Only enabled plugins count."""
    problems = []
    section = config.get(kind) or {}
    jtf = section.get("join_token_file")
    if kind == "agent" and _set(jtf):
        if not _readable_file(str(jtf)):
            problems.append(("agent.join_token_file %s is not a readable file (SPIRE: \"unable to read join token "
                             "file\")" % jtf, "write the join token there before the agent starts"))
        else:
            with open(str(jtf), "rb") as f:
                if not f.read().strip():
                    problems.append(("agent.join_token_file %s is empty (SPIRE: \"join token file is empty\")"
                                     % jtf, "write the join token into it"))
    for ptype, named in sorted((config.get("plugins") or {}).items()):
        for name, spec in sorted((named or {}).items()):
            spec = spec or {}
            if not isinstance(spec, dict) or (not _is_enabled(spec) and ptype != "DataStore"):
                continue
            where = "plugins.%s.%s" % (ptype, name)
            pdf = spec.get("plugin_data_file")
            if _set(pdf) and not _readable_file(str(pdf)):
                problems.append(("%s.plugin_data_file %s is not a readable file" % (where, pdf),
                                 "write the plugin's settings there, or use plugin_data"))
            if _is_external(spec):
                cmd = str(spec["plugin_cmd"])
                if not os.path.isfile(cmd):
                    problems.append(("%s.plugin_cmd %s does not exist (SPIRE: \"failed to launch plugin\")"
                                     % (where, cmd), "install the plugin binary there first"))
                elif not os.access(cmd, os.X_OK):
                    problems.append(("%s.plugin_cmd %s is not executable" % (where, cmd),
                                     "make it executable (mode 0755)"))
                else:
                    checksum = str(spec.get("plugin_checksum") or "").lower()
                    if len(checksum) == 64 and os.access(cmd, os.R_OK) and _sha256_file(cmd) != checksum:
                        problems.append(("%s.plugin_cmd %s has sha256 %s, not the plugin_checksum %s (SPIRE "
                                         "refuses to launch it)" % (where, cmd, _sha256_file(cmd), checksum),
                                         "install the right binary, or fix plugin_checksum"))
                continue
            data = spec.get("plugin_data") or {}
            if not isinstance(data, dict) or not (ptype == "NodeAttestor" and name == "tpm_devid"):
                continue
            if kind == "server":
                for key in ("devid_ca_path", "endorsement_ca_path"):
                    path = data.get(key)
                    if _set(path) and not _has_certificate(str(path)):
                        problems.append(("%s.plugin_data.%s %s is not a readable PEM file with a certificate "
                                         "(SPIRE: \"unable to load %s trust bundle\")"
                                         % (where, key, path, "DevID" if key == "devid_ca_path" else "endorsement"),
                                         "lay down the CA bundle before the server starts"))
            else:
                path = data.get("devid_cert_path")
                if _set(path) and not _has_certificate(str(path)):
                    problems.append(("%s.plugin_data.devid_cert_path %s is not a readable PEM file with a "
                                     "certificate (SPIRE: \"unable to load DevID files\")" % (where, path),
                                     "provision the DevID (trustroot.spire_tpm.devid_provision) before the agent"))
                for key in ("devid_priv_path", "devid_pub_path"):
                    path = data.get(key)
                    if _set(path) and not _readable_file(str(path)):
                        problems.append(("%s.plugin_data.%s %s is not a readable file (SPIRE: \"unable to load "
                                         "DevID files\")" % (where, key, path),
                                         "provision the DevID (trustroot.spire_tpm.devid_provision) before the "
                                         "agent"))
                device = data.get("tpm_device_path")
                if _set(device):
                    if not os.path.exists(str(device)):
                        problems.append(("%s.plugin_data.tpm_device_path %s does not exist (the agent cannot "
                                         "open its TPM)" % (where, device),
                                         "point tpm_device_path at /dev/tpmrm0 (or the TPM's socket)"))
                else:
                    found, problem = _tpm_autodetect()
                    if problem:
                        problems.append(("%s.plugin_data has no tpm_device_path and SPIRE's TPM autodetection "
                                         "fails on this host: %s (SPIRE: \"tpm autodetection failed\")"
                                         % (where, problem), "set tpm_device_path (e.g. /dev/tpmrm0)"))
    return problems


def check_referenced_files(kind, config, check_mode=False):
    """Raise on the first path problem; in check mode return them as warnings (earlier tasks may create them)."""
    problems = path_problems(kind, config)
    if problems and not check_mode:
        cause, fix = problems[0]
        raise SpireTpmError(cause, fix + " (or set check_files: false when the files come later)")
    return ["check mode: %s" % cause for cause, _fix in problems]
