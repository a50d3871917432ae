# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running ``spire-server`` (and ``spire-agent``) in JSON mode, reading every result's status.

Facts honoured (see the collection's SPIRE notes):

* every command takes ``-output json``; JSON is protojson with proto field names and int64 fields as strings;
* ``entry create|update -data -`` read the batch from stdin; ``entry delete -file F`` reads ``{"Ids": [...]}``;
* **in JSON mode the CLI exits 0 even when single results of a batch failed**: each result's
  ``status.code`` is read here, never the exit code alone;
* a server that is not running makes the CLI print ``Error: <what>: rpc error: code = Unavailable ...`` and exit 1
  (``connect: no such file or directory`` / ``connection refused``); a socket that is not a server's API answers
  ``code = Unimplemented desc = unknown service spire.api.server...``;
* ``agent show|evict|ban`` of an unknown agent exit 1 with ``code = NotFound desc = agent not found`` (all modes);
  ``agent evict`` and ``agent ban`` print ``{}``; banning a banned agent succeeds again;
* failed batch items: ``entry create|update`` echo the request as the result's ``entry``; ``entry delete`` gives
  ``{"id", "status"}``; an unknown ID is ``NotFound`` (``entry not found`` / ``failed to update entry``);
* ``entry show`` and ``agent list`` page inside the CLI (500 entries / 1,000 agents per page): one invocation
  returns everything;
* ``entry show`` has no ``additional_attributes`` key (1.13.3 and 1.15.3); ``agent list`` has ``agent_version``
  on 1.15.3 but not on 1.13.3: readers default both.

The caller passes ``run_command`` in: ``AnsibleModule.run_command`` in modules, ``subprocess_run_command``
elsewhere (bench, on-host jobs), so this file imports nothing from Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import shutil
import subprocess
import tempfile

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError

DEFAULT_SERVER_BIN = "/opt/spire/bin/spire-server"

# gRPC status codes SPIRE returns in batch results.
CODE_NAMES = {
    0: "OK", 1: "Canceled", 2: "Unknown", 3: "InvalidArgument", 4: "DeadlineExceeded", 5: "NotFound",
    6: "AlreadyExists", 7: "PermissionDenied", 8: "ResourceExhausted", 9: "FailedPrecondition", 10: "Aborted",
    11: "OutOfRange", 12: "Unimplemented", 13: "Internal", 14: "Unavailable", 15: "DataLoss", 16: "Unauthenticated",
}

_RPC_CODE_RE = re.compile(r"code = (\w+)")


def subprocess_run_command(args, data=None, **_kwargs):
    """A ``run_command`` for use outside Ansible: returns (rc, stdout, stderr) like AnsibleModule.run_command."""
    proc = subprocess.run(args, input=data, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def rpc_code(stderr):
    """The gRPC code name in a CLI error (``Error: rpc error: code = NotFound desc = ...``), or None."""
    match = _RPC_CODE_RE.search(stderr or "")
    return match.group(1) if match else None


class SpireCli(object):
    """One SPIRE binary (server or agent) reached through one API socket."""

    def __init__(self, run_command, binary=DEFAULT_SERVER_BIN, socket_path=None):
        self._run_command = run_command
        self.binary = binary
        self.socket_path = socket_path
        self.calls = 0

    # --- plumbing -------------------------------------------------------------------------------------------
    def _resolve_binary(self):
        path = self.binary
        if os.sep not in path:
            found = shutil.which(path)
            if found:
                return found
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise SpireTpmError("the SPIRE binary %s does not exist or is not executable" % path,
                                "install SPIRE on this host or point spire_server_bin at the spire-server binary")
        return path

    def command(self, words, flags=None):
        """The argv for ``<binary> <words...> <flags...> -output json [-socketPath S]``."""
        argv = [self._resolve_binary()] + list(words) + list(flags or [])
        argv += ["-output", "json"]
        if self.socket_path:
            argv += ["-socketPath", self.socket_path]
        return argv

    def run(self, words, flags=None, data=None, allow_codes=()):
        """Run one command and return its parsed JSON output.

        ``allow_codes``: gRPC code names (e.g. ``("NotFound",)``) for which a failing command returns None
        instead of raising.
        """
        argv = self.command(words, flags)
        self.calls += 1
        if data is None:
            rc, out, err = self._run_command(argv)
        else:
            rc, out, err = self._run_command(argv, data=data)
        what = " ".join(words)
        if rc != 0:
            code = rpc_code(err) or rpc_code(out)
            if code in allow_codes:
                return None
            message = (err or out or "").strip()
            if code == "Unavailable" or "connect:" in message:
                fix = ("start the SPIRE server (or check it is healthy with 'spire-server healthcheck') and make "
                       "sure socket_path points at its private API socket")
            elif code == "Unimplemented" and "unknown service" in message:
                fix = ("socket_path answers but is not a SPIRE server's private API socket (an agent's Workload API "
                       "socket, for example): point socket_path at the server's socket_path")
            elif code == "PermissionDenied":
                fix = "run the task as a user allowed to use the SPIRE server's private API socket (usually root)"
            else:
                fix = "check the arguments given to the module"
            raise SpireTpmError("'spire-server %s' failed (rc=%d): %s" % (what, rc, message[:2000]), fix,
                                rc=rc, grpc_code=code, stderr=err[-4000:] if err else "")
        try:
            return json.loads(out) if out.strip() else {}
        except ValueError:
            raise SpireTpmError("'spire-server %s' did not print JSON: %r" % (what, out[:300]),
                                "check that spire_server_bin is a SPIRE server binary that supports -output json "
                                "(SPIRE >= 1.6)")

    def _with_tempfile(self, payload, fn):
        """Write ``payload`` to a 0600 temporary file, call fn(path), remove the file."""
        fd, path = tempfile.mkstemp(prefix="spire-tpm-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(payload, f)
            return fn(path)
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass

    # --- entries --------------------------------------------------------------------------------------------
    def entry_show(self, entry_id=None, parent_id=None, spiffe_id=None, selectors=None, match_selectors_on=None):
        flags = []
        if entry_id:
            flags += ["-entryID", entry_id]
        if parent_id:
            flags += ["-parentID", parent_id]
        if spiffe_id:
            flags += ["-spiffeID", spiffe_id]
        for sel in selectors or []:
            flags += ["-selector", sel]
        if match_selectors_on:
            flags += ["-matchSelectorsOn", match_selectors_on]
        out = self.run(["entry", "show"], flags)
        return out.get("entries") or []

    def _batch(self, verb, entries):
        payload = json.dumps({"entries": entries}, separators=(",", ":"))
        out = self.run(["entry", verb], ["-data", "-"], data=payload)
        results = out.get("results") or []
        if len(results) != len(entries):
            raise SpireTpmError("'spire-server entry %s' returned %d results for %d entries"
                                % (verb, len(results), len(entries)),
                                "check the SPIRE server logs; the batch may have been applied partly")
        return results

    def entry_create(self, entries):
        """Create a batch (input shape, see entries.to_request). Returns the results in request order."""
        return self._batch("create", entries)

    def entry_update(self, entries):
        return self._batch("update", entries)

    def entry_delete(self, ids):
        ids = list(ids)
        out = self._with_tempfile({"Ids": ids}, lambda path: self.run(["entry", "delete"], ["-file", path]))
        results = out.get("results") or []
        if len(results) != len(ids):
            raise SpireTpmError("'spire-server entry delete' returned %d results for %d IDs" % (len(results), len(ids)),
                                "check the SPIRE server logs; the batch may have been applied partly")
        return results

    def entry_count(self):
        return int((self.run(["entry", "count"]) or {}).get("count", 0))

    # --- agents ---------------------------------------------------------------------------------------------
    def agent_list(self, selectors=None, attestation_type=None, can_reattest=None, banned=None,
                   match_selectors_on=None):
        flags = []
        for sel in selectors or []:
            flags += ["-selector", sel]
        if match_selectors_on:
            flags += ["-matchSelectorsOn", match_selectors_on]
        if attestation_type:
            flags += ["-attestationType", attestation_type]
        if can_reattest is not None:
            flags += ["-canReattest", "true" if can_reattest else "false"]
        if banned is not None:
            flags += ["-banned", "true" if banned else "false"]
        return (self.run(["agent", "list"], flags) or {}).get("agents") or []

    def agent_show(self, spiffe_id):
        """The agent, or None when the server does not know it."""
        return self.run(["agent", "show"], ["-spiffeID", spiffe_id], allow_codes=("NotFound",))

    def agent_evict(self, spiffe_id):
        """Evict; returns False when the agent was already gone."""
        return self.run(["agent", "evict"], ["-spiffeID", spiffe_id], allow_codes=("NotFound",)) is not None

    def agent_ban(self, spiffe_id):
        return self.run(["agent", "ban"], ["-spiffeID", spiffe_id], allow_codes=("NotFound",)) is not None

    # --- tokens, health -------------------------------------------------------------------------------------
    def token_generate(self, spiffe_id=None, ttl=None):
        flags = []
        if spiffe_id:
            flags += ["-spiffeID", spiffe_id]
        if ttl is not None:
            flags += ["-ttl", str(int(ttl))]
        out = self.run(["token", "generate"], flags)
        if not out.get("value"):
            raise SpireTpmError("'spire-server token generate' returned no token",
                                "check the SPIRE server logs")
        return out


def result_ok(result):
    return int((result.get("status") or {}).get("code", 0) or 0) == 0


def result_error(result):
    """``"AlreadyExists (6): similar entry already exists"`` for a failed batch result."""
    status = result.get("status") or {}
    code = int(status.get("code", 0) or 0)
    return "%s (%d): %s" % (CODE_NAMES.get(code, "code"), code, status.get("message", ""))


def raise_for_results(results, action, label=None):
    """Raise one SpireTpmError listing every failed result of a batch (``action``: e.g. "create entry").

    ``label(result)`` names an item in the message (default: its entry's SPIFFE ID or its ``id``).
    """
    def default_label(res):
        entry = res.get("entry") or {}
        sid = entry.get("spiffe_id")
        if isinstance(sid, dict):
            sid = "spiffe://%s%s" % (sid.get("trust_domain", ""), sid.get("path", ""))
        return sid or entry.get("id") or res.get("id") or "?"

    label = label or default_label
    failed = [(label(r), result_error(r)) for r in results if not result_ok(r)]
    if failed:
        raise SpireTpmError("%d of %d items failed to %s: %s" % (len(failed), len(results), action,
                                                                 "; ".join("%s: %s" % f for f in failed[:20])),
                            "fix the listed items and run again",
                            failures=[{"item": name, "error": err} for name, err in failed])
