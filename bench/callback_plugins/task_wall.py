# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-task wall time for benchmarks (bench/site_scale.py); not part of the collection.

An aggregate callback (it prints nothing and leaves the stdout callback alone). Enable it with
ANSIBLE_CALLBACK_PLUGINS=<repo>/bench/callback_plugins ANSIBLE_CALLBACKS_ENABLED=task_wall and name the output with
TASK_WALL_FILE=<path>. At the end of the run it writes JSON:

  {"elapsed": s, "tasks": [{"uuid", "play", "name", "role", "path", "action", "elapsed", "host_seconds",
                            "hosts", "changed", "skipped", "delegated", "per_host": {host: s}}, ...],
   "recap": {host: {...}}}

``elapsed`` of a task is the wall time from its start to the start of whatever came next (the next task, handler
or play, or the end of the run): what the run spent on it, strategy overhead included. ``host_seconds`` is the
sum over hosts of each host's own time in the task (from the worker's start to its result; loops included).
"""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: task_wall
    type: aggregate
    short_description: per-task wall time (summed over hosts and elapsed), written as JSON
    description:
      - Benchmark helper of trustroot.spire_tpm's bench/ (not shipped). Writes to the file named by TASK_WALL_FILE.
    requirements:
      - enable in configuration (callbacks_enabled)
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "task_wall"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._t0 = time.monotonic()
        self._tasks = {}     # uuid -> record
        self._order = []
        self._current = None  # uuid of the task whose elapsed time is running
        self._current_start = None
        self._play = None
        self._host_start = {}  # (task uuid, host) -> monotonic

    # --- task boundaries ----------------------------------------------------------------------------------------
    def _close_current(self, now):
        if self._current is not None:
            self._tasks[self._current]["elapsed"] += now - self._current_start
        self._current = None

    def _record(self, task):
        uuid = task._uuid
        rec = self._tasks.get(uuid)
        if rec is None:
            role = task._role.get_name() if getattr(task, "_role", None) else None
            rec = {"uuid": uuid, "play": self._play, "name": task.get_name().strip(), "role": role,
                   "path": task.get_path(), "action": task.action, "elapsed": 0.0, "host_seconds": 0.0,
                   "hosts": 0, "changed": 0, "skipped": 0, "delegated": 0, "per_host": {}}
            self._tasks[uuid] = rec
            self._order.append(uuid)
        return rec

    def _start_task(self, task):
        now = time.monotonic()
        self._close_current(now)
        self._record(task)
        self._current = task._uuid
        self._current_start = now

    def v2_playbook_on_play_start(self, play):
        self._close_current(time.monotonic())
        self._play = play.get_name().strip()

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._start_task(task)

    def v2_playbook_on_handler_task_start(self, task):
        self._start_task(task)

    # --- per host -----------------------------------------------------------------------------------------------
    def v2_runner_on_start(self, host, task):
        self._host_start[(task._uuid, host.get_name())] = time.monotonic()

    def _host_done(self, result, changed=None, skipped=False):
        now = time.monotonic()
        task, host = result._task, result._host.get_name()
        rec = self._record(task)
        start = self._host_start.pop((task._uuid, host), None)
        if start is None:
            return
        took = now - start
        rec["host_seconds"] += took
        rec["hosts"] += 1
        rec["per_host"][host] = rec["per_host"].get(host, 0.0) + took
        if changed is None:
            changed = bool(result._result.get("changed"))
        if changed:
            rec["changed"] += 1
        if skipped:
            rec["skipped"] += 1
        if result._result.get("_ansible_delegated_vars") or getattr(task, "delegate_to", None):
            rec["delegated"] += 1

    def v2_runner_on_ok(self, result):
        self._host_done(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._host_done(result, changed=False)

    def v2_runner_on_skipped(self, result):
        self._host_done(result, changed=False, skipped=True)

    def v2_runner_on_unreachable(self, result):
        self._host_done(result, changed=False)

    # --- end ----------------------------------------------------------------------------------------------------
    def v2_playbook_on_stats(self, stats):
        now = time.monotonic()
        self._close_current(now)
        out = os.environ.get("TASK_WALL_FILE")
        if not out:
            return
        recap = {h: stats.summarize(h) for h in sorted(stats.processed)}
        data = {"elapsed": now - self._t0, "tasks": [self._tasks[u] for u in self._order], "recap": recap}
        tmp = out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, out)
