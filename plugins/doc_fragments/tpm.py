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
        C(cmd:socat - UNIX-CONNECT:/run/swtpm/tpm.sock), C(tabrmd) or C(swtpm:port=2321).
      - A software TPM (swtpm) served on a unix socket (C(swtpm socket --tpm2 --server type=unixio,path=SOCKET))
        is reached with tpm2-tss's C(cmd) TCTI through socat, C(cmd:socat - UNIX-CONNECT:SOCKET); the same socket
        is what the SPIRE agent's TPM plugins take as their device path. The command runs through C(/bin/sh -c)
        and needs socat on the managed host. Before the first TPM command the module checks that the command exists
        and that the socket exists, is a socket and accepts a connection, and fails naming the socket and the fix
        (swtpm not running, stale socket, wrong path, or no permission - the user must be in the socket's group).
      - When not set, the C(TPM2TOOLS_TCTI) and then the C(TCTI) environment variables of the task are used;
        when those are unset too, C(/dev/tpmrm0), then C(/dev/tpm0), then the tpm2-abrmd daemon are tried in that order.
      - C(/dev/tpmrm0) (the kernel resource manager) is preferred; C(/dev/tpm0) has no resource manager and
        allows one user at a time.
    type: str
requirements:
  - tpm2-pytss >= 2.3 (Python bindings over the tpm2-tss libraries) on the managed host
  - a TPM 2.0 (hardware, firmware or swtpm) reachable through the chosen TCTI
  - socat on the managed host for a software TPM on a unix socket (C(cmd:socat - UNIX-CONNECT:SOCKET))
notes:
  - Every transient object the module loads into the TPM is flushed before it returns, also when it fails,
    so the module is safe on TPMs without a resource manager (C(/dev/tpm0), swtpm).
  - swtpm serves one client at a time. While the module holds its connection (for the duration of its TPM
    operation, typically well under a second) a SPIRE agent using the same swtpm waits, and while the agent is in
    the middle of a TPM command the module waits; neither fails. Do not keep another TPM client connected to the
    socket (for example an interactive C(socat) or a long-running script), as every other client waits until it closes.
  - When swtpm stops while the module uses it, the module fails with a message saying the connection to the
    software TPM was lost and what the socket looks like now (removed, or left over with nothing serving it).
"""
