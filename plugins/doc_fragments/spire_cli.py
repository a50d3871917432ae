# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """How a module reaches the SPIRE server: shared by every module that drives the spire-server CLI."""

    DOCUMENTATION = r"""
options:
  spire_server_bin:
    description:
      - Path of the C(spire-server) binary on the SPIRE server host.
    type: path
    default: /opt/spire/bin/spire-server
  socket_path:
    description:
      - Path of the SPIRE server's private API socket (C(-socketPath)).
      - When not set, the binary's default (C(/tmp/spire-server/private/api.sock)) is used.
    type: path
notes:
  - The module runs on the SPIRE server host and drives the C(spire-server) CLI with C(-output json).
  - In JSON mode the CLI exits 0 even when single results of a batch failed; the module reads every
    result's status and fails with the failing items listed.
"""
