# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test-only stdout callback: the whole playbook run as one JSON document.

ansible-core ships no JSON stdout callback (ansible.posix.json is a separate collection we don't install). The
integration tests read results per task and host from this document:
``{"plays": [{"play": {"name"}, "tasks": [{"task": {"name"}, "hosts": {HOST: RESULT}}]}], "stats": {HOST: {...}}}``.
Only used by tests/conftest.py (ANSIBLE_CALLBACK_PLUGINS); never shipped.
"""

from __future__ import annotations

import json

from ansible.module_utils.common.json import AnsibleJSONEncoder
from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: json_results
type: stdout
short_description: the playbook run as one JSON document (tests only)
description: [Collects every task result per host and prints one JSON document at the end.]
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "json_results"

    def __init__(self, display=None):
        super().__init__(display)
        self.plays = []

    def v2_playbook_on_play_start(self, play):
        self.plays.append({"play": {"name": play.get_name(), "id": str(play._uuid)}, "tasks": []})

    def _start_task(self, task):
        if not self.plays:
            self.plays.append({"play": {"name": "", "id": ""}, "tasks": []})
        self.plays[-1]["tasks"].append({"task": {"name": task.get_name(), "id": str(task._uuid)}, "hosts": {}})

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._start_task(task)

    def v2_playbook_on_handler_task_start(self, task):
        self._start_task(task)

    def _record(self, result, **flags):
        task_result = dict(result._result)
        task_result.update(flags)
        task_result["action"] = result._task.action
        uuid = str(result._task._uuid)
        for entry in reversed(self.plays[-1]["tasks"] if self.plays else []):
            if entry["task"]["id"] == uuid:
                entry["hosts"][result._host.get_name()] = task_result
                return
        self._start_task(result._task)
        self.plays[-1]["tasks"][-1]["hosts"][result._host.get_name()] = task_result

    def v2_runner_on_ok(self, result, **kwargs):
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False, **kwargs):
        self._record(result, failed=True)

    def v2_runner_on_skipped(self, result, **kwargs):
        self._record(result, skipped=True)

    def v2_runner_on_unreachable(self, result, **kwargs):
        self._record(result, unreachable=True)

    def v2_playbook_on_stats(self, stats):
        summary = {h: stats.summarize(h) for h in sorted(stats.processed)}
        self._display.display(json.dumps({"plays": self.plays, "stats": summary}, cls=AnsibleJSONEncoder,
                                         indent=2, sort_keys=True))
