# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One error type for the whole collection.

Every failure an operator can meet is raised as ``SpireTpmError`` with two parts: what was wrong (``cause``)
and what to do about it (``fix``). Modules turn it into ``fail_json(msg=str(err), **err.details)``; the
on-host renewal job prints it. Nothing in module_utils lets a raw traceback reach the operator.

This file imports nothing from Ansible so that the on-host jobs can use it without ansible-core.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class SpireTpmError(Exception):
    """An operator-facing failure: ``cause`` says what was wrong, ``fix`` says what to do."""

    def __init__(self, cause, fix=None, **details):
        self.cause = cause
        self.fix = fix
        self.details = details
        super(SpireTpmError, self).__init__(self.message)

    @property
    def message(self):
        if self.fix:
            return "%s. Fix: %s" % (self.cause.rstrip("."), self.fix)
        return self.cause


def error_result(err, **extra):
    """A SpireTpmError as the result of a failed task: ``msg`` (its message), its details and ``extra``."""
    result = dict(err.details)
    result.update(extra)
    result["msg"] = err.message
    return result


def fail_module(module, err, **extra):
    """Fail an AnsibleModule with a SpireTpmError's message and details (never a traceback)."""
    module.fail_json(**error_result(err, **extra))
