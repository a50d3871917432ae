# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """How a module reaches the TPM: shared by every TPM module."""

    DOCUMENTATION = r"""
options:
  tcti:
    description:
      - TPM Command Transmission Interface to use, as C(name:config), for example C(device:/dev/tpmrm0),
        C(swtpm:port=2321), C(swtpm:host=127.0.0.1,port=2321), C(tabrmd) or C(mssim:port=2321).
      - When not set, the C(TPM2TOOLS_TCTI) and then the C(TCTI) environment variables of the task are used;
        when those are unset too, C(/dev/tpmrm0), then C(/dev/tpm0), then the tpm2-abrmd daemon are tried in that order.
      - C(/dev/tpmrm0) (the kernel resource manager) is preferred; C(/dev/tpm0) has no resource manager and
        allows one user at a time.
    type: str
requirements:
  - tpm2-pytss >= 2.3 (Python bindings over the tpm2-tss libraries) on the managed host
  - a TPM 2.0 (hardware, firmware or swtpm) reachable through the chosen TCTI
notes:
  - Every transient object the module loads into the TPM is flushed before it returns, also when it fails,
    so the module is safe on TPMs without a resource manager (C(/dev/tpm0), swtpm).
"""
