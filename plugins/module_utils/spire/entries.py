# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Registration entries as data: desired vs actual → plan → chunked batches.

* ``normalize_desired`` / ``normalize_current`` turn the module's options and ``entry show`` JSON into one
  comparable form (selectors and federated trust domains sorted, SPIFFE IDs as strings, TTLs as ints).
* An entry's identity is ``(spiffe_id, parent_id, sorted selectors)`` — exactly what SPIRE calls a
  "similar entry" (AlreadyExists). Every other field is updatable in place.
* ``make_plan`` is O(N): one dict of current entries by identity, one pass over the desired ones, one pass over
  the rest for purging. Purging only happens inside an explicit scope.
* ``chunks`` keeps every call's JSON far below gRPC's default 4 MiB message limit.
* ``apply_plan`` runs creates, then updates, then — only if all of those succeeded — deletes, and reports per
  entry what failed and what already went through.

Imports nothing from Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire import ids
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire.cli import result_error, result_ok

# Per call: at most this many entries and this many bytes of JSON (gRPC's default limit is 4 MiB).
MAX_BATCH_ENTRIES = 500
MAX_BATCH_BYTES = 1024 * 1024

# Updatable fields and the value SPIRE stores when the field is not given.
FIELD_DEFAULTS = (
    ("x509_svid_ttl", 0),
    ("jwt_svid_ttl", 0),
    ("dns_names", ()),
    ("federates_with", ()),
    ("admin", False),
    ("downstream", False),
    ("hint", ""),
    ("store_svid", False),
    ("entry_expiry", 0),
)
FIELDS = tuple(name for name, dummy in FIELD_DEFAULTS)
INT32_MAX = 2 ** 31 - 1
INT64_MAX = 2 ** 63 - 1


def identity(entry):
    """What makes two entries "similar" for SPIRE: (spiffe_id, parent_id, sorted selectors)."""
    return (entry["spiffe_id"], entry["parent_id"], entry["selectors"])


def identity_label(entry):
    return "%s (parent %s, selectors %s)" % (entry["spiffe_id"], entry["parent_id"], ",".join(entry["selectors"]))


# --- normalisation --------------------------------------------------------------------------------------------

def _int_field(spec, name, problems, label, maximum):
    value = spec.get(name)
    if value is None:
        return 0
    try:
        value = int(value)
    except (TypeError, ValueError):
        problems.append("%s: %s must be an integer, got %r" % (label, name, spec.get(name)))
        return 0
    if value < 0:
        problems.append("%s: %s must not be negative (got %d)" % (label, name, value))
    elif value > maximum:
        problems.append("%s: %s is larger than %d" % (label, name, maximum))
    return value


def normalize_desired(spec, index=None, problems=None, selector_check=None):
    """One desired entry (module options) → comparable dict; problems are appended to ``problems``.

    Returns None when the entry is unusable (its problems recorded). ``node: true`` parents the entry to
    ``spiffe://<td>/spire/server`` (a node alias). ``selector_check(parent_id, selectors, store_svid)`` (see
    selectors.entry_selector_check) lists why selectors of an entry to be present could never match.
    """
    own = problems if problems is not None else []
    label = "entries[%d]" % index if index is not None else "entry"
    spiffe_id = spec.get("spiffe_id")
    start = len(own)
    if not spiffe_id:
        own.append("%s: spiffe_id is required" % label)
    else:
        problem = ids.spiffe_id_problem(spiffe_id) or ids.entry_spiffe_id_problem(spiffe_id)
        if problem:
            own.append("%s: spiffe_id %r is invalid: %s" % (label, spiffe_id, problem))
        label = "%s (%s)" % (label, spiffe_id)
    parent_id = spec.get("parent_id")
    if spec.get("node"):
        if parent_id:
            own.append("%s: node and parent_id are mutually exclusive (a node alias is parented to the server)"
                       % label)
        elif spiffe_id and ids.is_spiffe_id(spiffe_id):
            parent_id = ids.server_id(ids.trust_domain_of(spiffe_id))
    if not parent_id:
        if not spec.get("node"):
            own.append("%s: parent_id is required (or node: true for a node alias)" % label)
    else:
        problem = ids.spiffe_id_problem(parent_id) or ids.entry_parent_id_problem(parent_id)
        if problem:
            own.append("%s: parent_id %r is invalid: %s" % (label, parent_id, problem))
    selectors = spec.get("selectors") or []
    if not selectors:
        own.append("%s: selectors must not be empty (SPIRE rejects an entry without selectors)" % label)
    for sel in selectors:
        problem = ids.selector_problem(sel)
        if problem:
            own.append("%s: %s" % (label, problem))
    if selector_check is not None and parent_id and (spec.get("state") or "present") == "present":
        own.extend("%s: %s" % (label, problem)
                   for problem in selector_check(parent_id, selectors, bool(spec.get("store_svid"))))
    if spec.get("store_svid") and len(set(str(sel).partition(":")[0] for sel in selectors)) > 1:
        own.append("%s: with store_svid all selectors must have the same type (SPIRE refuses mixed types)" % label)
    federates_with = []
    for td in spec.get("federates_with") or []:
        try:
            federates_with.append(ids.normalize_trust_domain(td))
        except SpireTpmError as err:
            own.append("%s: federates_with: %s" % (label, err.cause))
    dns_names = list(spec.get("dns_names") or [])
    for name in dns_names:
        problem = ids.dns_name_problem(name)
        if problem:
            own.append("%s: %s" % (label, problem))
    x509_ttl = _int_field(spec, "x509_svid_ttl", own, label, INT32_MAX)
    jwt_ttl = _int_field(spec, "jwt_svid_ttl", own, label, INT32_MAX)
    expiry = _int_field(spec, "entry_expiry", own, label, INT64_MAX)
    if len(own) == start and spiffe_id and parent_id:
        child_td = ids.trust_domain_of(spiffe_id)
        parent_td = ids.trust_domain_of(parent_id)
        # SPIRE requires both IDs to be members of the server's own trust domain (federates_with does not
        # change that): the server's domain is not known here, but the two must at least agree.
        if child_td != parent_td:
            own.append("%s: parent_id %s is in trust domain %s but spiffe_id is in %s (SPIRE requires both in "
                       "the server's trust domain)" % (label, parent_id, parent_td, child_td))
    state = spec.get("state") or "present"
    if state not in ("present", "absent"):
        own.append("%s: state must be present or absent, got %r" % (label, state))
    if len(own) != start:
        return None
    return {
        "spiffe_id": spiffe_id,
        "parent_id": parent_id,
        "selectors": tuple(sorted(set(selectors))),
        "x509_svid_ttl": x509_ttl,
        "jwt_svid_ttl": jwt_ttl,
        "dns_names": tuple(dns_names),
        "federates_with": tuple(sorted(set(federates_with))),
        "admin": bool(spec.get("admin")),
        "downstream": bool(spec.get("downstream")),
        "hint": spec.get("hint") or "",
        "store_svid": bool(spec.get("store_svid")),
        "entry_expiry": expiry,
        "state": state,
    }


def normalize_all(specs, selector_check=None):
    """Normalise a list of desired entries; raise one SpireTpmError listing every problem (before any call)."""
    problems = []
    out = []
    seen = {}
    for i, spec in enumerate(specs):
        entry = normalize_desired(spec, i, problems, selector_check)
        if entry is None:
            continue
        key = identity(entry)
        if key in seen:
            problems.append("entries[%d] and entries[%d] declare the same entry %s"
                            % (seen[key], i, identity_label(entry)))
            continue
        seen[key] = i
        out.append(entry)
    if problems:
        shown = problems[:25]
        more = "" if len(problems) <= 25 else " (and %d more)" % (len(problems) - 25)
        raise SpireTpmError("invalid registration entries, nothing was changed: %s%s" % ("; ".join(shown), more),
                            "correct the listed entries", problems=problems)
    return out


def normalize_current(entry):
    """An entry from ``entry show -output json`` → comparable dict (with its ``id``)."""
    return {
        "id": entry.get("id", ""),
        "spiffe_id": ids.from_proto(entry.get("spiffe_id")),
        "parent_id": ids.from_proto(entry.get("parent_id")),
        "selectors": tuple(sorted(set(ids.format_selector(s) for s in entry.get("selectors") or []))),
        "x509_svid_ttl": int(entry.get("x509_svid_ttl") or 0),
        "jwt_svid_ttl": int(entry.get("jwt_svid_ttl") or 0),
        "dns_names": tuple(entry.get("dns_names") or ()),
        "federates_with": tuple(sorted(set(ids.normalize_trust_domain(td)
                                           for td in entry.get("federates_with") or []))),
        "admin": bool(entry.get("admin")),
        "downstream": bool(entry.get("downstream")),
        "hint": entry.get("hint") or "",
        "store_svid": bool(entry.get("store_svid")),
        "entry_expiry": int(entry.get("expires_at") or 0),
    }


def differences(desired, current):
    """Names of the updatable fields that differ."""
    return [name for name in FIELDS if desired[name] != current[name]]


def to_request(entry, entry_id=None):
    """Comparable dict → the input shape of ``entry create|update -data``."""
    req = {}
    if entry_id:
        req["entry_id"] = entry_id
    req.update({
        "spiffe_id": entry["spiffe_id"],
        "parent_id": entry["parent_id"],
        "selectors": [dict(zip(("type", "value"), s.split(":", 1))) for s in entry["selectors"]],
        "x509_svid_ttl": entry["x509_svid_ttl"],
        "jwt_svid_ttl": entry["jwt_svid_ttl"],
        "federates_with": ["spiffe://" + td for td in entry["federates_with"]],
        "dns_names": list(entry["dns_names"]),
        "admin": entry["admin"],
        "downstream": entry["downstream"],
        "store_svid": entry["store_svid"],
        "hint": entry["hint"],
        "entryExpiry": entry["entry_expiry"],
    })
    return req


def public(entry, entry_id=None):
    """Comparable dict → what the module returns (lists, not tuples)."""
    out = {"id": entry_id if entry_id is not None else entry.get("id")}
    for key in ("spiffe_id", "parent_id") + ("selectors",) + FIELDS:
        value = entry[key]
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


# --- purge scope ----------------------------------------------------------------------------------------------

def check_scope(purge, scope):
    """Validate ``purge``/``purge_scope``; return a normalised scope (or None when not purging)."""
    if not purge:
        if scope:
            raise SpireTpmError("purge_scope is set but purge is false",
                                "set purge: true to delete undeclared entries in that scope, or drop purge_scope")
        return None
    scope = dict(scope or {})
    scope = dict((k, v) for k, v in scope.items() if v not in (None, ""))
    if not scope:
        raise SpireTpmError("purge: true needs a purge_scope; refusing to delete every undeclared entry of the server",
                            "set purge_scope.parent_id and/or purge_scope.spiffe_id_prefix to the part of the "
                            "server this task owns")
    unknown = set(scope) - {"parent_id", "spiffe_id_prefix"}
    if unknown:
        raise SpireTpmError("unknown purge_scope keys: %s" % ", ".join(sorted(unknown)),
                            "use parent_id and/or spiffe_id_prefix")
    if "parent_id" in scope:
        ids.validate_spiffe_id(scope["parent_id"], "purge_scope.parent_id")
    if "spiffe_id_prefix" in scope:
        prefix = scope["spiffe_id_prefix"]
        td_and_path = prefix[len(ids.SCHEME_PREFIX):] if prefix.startswith(ids.SCHEME_PREFIX) else ""
        td = td_and_path.partition("/")[0]
        if not td or ids.trust_domain_problem(td):
            raise SpireTpmError("purge_scope.spiffe_id_prefix %r does not start with spiffe://<trust domain>" % prefix,
                                "give a prefix such as spiffe://example.org/workload/")
    return scope


def in_scope(entry, scope):
    if not scope:
        return False
    if "parent_id" in scope and entry["parent_id"] != scope["parent_id"]:
        return False
    if "spiffe_id_prefix" in scope and not entry["spiffe_id"].startswith(scope["spiffe_id_prefix"]):
        return False
    return True


# --- plan -----------------------------------------------------------------------------------------------------

class Plan(object):
    """What to do: ``create`` (desired), ``update`` ((id, desired, current)), ``delete`` (current),
    ``unchanged`` ((id, desired))."""

    def __init__(self):
        self.create = []
        self.update = []
        self.delete = []
        self.unchanged = []

    @property
    def changed(self):
        return bool(self.create or self.update or self.delete)

    def summary(self):
        return {"create": len(self.create), "update": len(self.update), "delete": len(self.delete),
                "unchanged": len(self.unchanged)}


def make_plan(desired, current, purge_scope=None):
    """O(N) plan from normalised desired entries and normalised current entries."""
    plan = Plan()
    by_identity = {}
    for entry in current:
        by_identity.setdefault(identity(entry), entry)
    claimed = set()
    for want in desired:
        key = identity(want)
        have = by_identity.get(key)
        if want["state"] == "absent":
            if have is not None and have["id"] not in claimed:
                plan.delete.append(have)
                claimed.add(have["id"])
            continue
        if have is None:
            plan.create.append(want)
            continue
        claimed.add(have["id"])
        if differences(want, have):
            plan.update.append((have["id"], want, have))
        else:
            plan.unchanged.append((have["id"], want))
    if purge_scope:
        for entry in current:
            if entry["id"] not in claimed and in_scope(entry, purge_scope):
                plan.delete.append(entry)
                claimed.add(entry["id"])
    return plan


def chunks(items, max_entries=MAX_BATCH_ENTRIES, max_bytes=MAX_BATCH_BYTES, size=None):
    """Split ``items`` greedily so each chunk has ≤ max_entries items and ≤ max_bytes of JSON. O(N)."""
    if size is None:
        def size(item):
            return len(json.dumps(item, separators=(",", ":"))) + 1
    out = []
    current = []
    current_bytes = 32  # the {"entries":[]} envelope
    for item in items:
        n = size(item)
        if n + 32 > max_bytes:
            raise SpireTpmError("one registration entry is %d bytes of JSON, more than the %d bytes allowed per call"
                                % (n, max_bytes), "shorten its DNS names, selectors or hint")
        if current and (len(current) >= max_entries or current_bytes + n > max_bytes):
            out.append(current)
            current = []
            current_bytes = 32
        current.append(item)
        current_bytes += n
    if current:
        out.append(current)
    return out


# --- apply ----------------------------------------------------------------------------------------------------

def brief(entry, entry_id=None):
    return {"id": entry_id if entry_id is not None else entry.get("id"), "spiffe_id": entry["spiffe_id"],
            "parent_id": entry["parent_id"], "selectors": list(entry["selectors"])}


def apply_plan(cli, plan, max_entries=MAX_BATCH_ENTRIES, max_bytes=MAX_BATCH_BYTES):
    """Run the plan through ``cli`` (a SpireCli). Returns {"created", "updated", "deleted", "ids"}.

    ``ids`` maps identity → entry ID for every created entry. Raises SpireTpmError listing every failed entry and
    everything that already succeeded when any result is not OK; deletes run only when creates and updates all
    succeeded.
    """
    done = {"created": [], "updated": [], "deleted": [], "ids": {}}
    failures = []

    for batch in chunks(plan.create, max_entries, max_bytes, size=_request_size):
        results = cli.entry_create([to_request(e) for e in batch])
        for want, res in zip(batch, results):
            if result_ok(res):
                entry_id = (res.get("entry") or {}).get("id")
                done["created"].append(brief(want, entry_id))
                done["ids"][identity(want)] = entry_id
            else:
                failures.append(dict(brief(want), action="create", error=result_error(res)))

    for batch in chunks(plan.update, max_entries, max_bytes, size=lambda u: _request_size(u[1])):
        results = cli.entry_update([to_request(want, entry_id) for entry_id, want, _have in batch])
        for (entry_id, want, have), res in zip(batch, results):
            if result_ok(res):
                done["updated"].append(dict(brief(want, entry_id), changed_fields=differences(want, have)))
            else:
                failures.append(dict(brief(want, entry_id), action="update", error=result_error(res)))

    skipped_deletes = []
    if failures:
        skipped_deletes = [brief(e) for e in plan.delete]
    else:
        id_size = len('"%s",' % ("0" * 36))
        for batch in chunks(plan.delete, max_entries, max_bytes, size=lambda e: id_size):
            results = cli.entry_delete([e["id"] for e in batch])
            for have, res in zip(batch, results):
                if result_ok(res):
                    done["deleted"].append(brief(have))
                elif int((res.get("status") or {}).get("code", 0)) == 5:
                    # Already gone (deleted behind our back): the desired state holds.
                    done["deleted"].append(dict(brief(have), already_absent=True))
                else:
                    failures.append(dict(brief(have), action="delete", error=result_error(res)))

    if failures:
        shown = "; ".join("%s %s: %s" % (f["action"], f["spiffe_id"], f["error"]) for f in failures[:20])
        more = "" if len(failures) <= 20 else " (and %d more)" % (len(failures) - 20)
        cause = "%d of the registration entry changes failed: %s%s. Already applied: %d created, %d updated, " \
                "%d deleted" % (len(failures), shown, more, len(done["created"]), len(done["updated"]),
                                len(done["deleted"]))
        if skipped_deletes:
            cause += "; %d deletes were not attempted because of the failures" % len(skipped_deletes)
        raise SpireTpmError(cause, "fix the failing entries (AlreadyExists means a similar entry with the same "
                                   "spiffe_id, parent_id and selectors exists; run again to converge)",
                            failures=failures, created=done["created"], updated=done["updated"],
                            deleted=done["deleted"], skipped_deletes=skipped_deletes)
    return done


def _request_size(entry):
    return len(json.dumps(to_request(entry, "0" * 36), separators=(",", ":"))) + 1


def planned(plan):
    """What a check-mode run reports: {"created", "updated", "deleted"} as apply_plan would (new IDs unknown)."""
    return {
        "created": [brief(w, None) for w in plan.create],
        "updated": [dict(brief(w, i), changed_fields=differences(w, h)) for i, w, h in plan.update],
        "deleted": [brief(h) for h in plan.delete],
    }


def diff_text(plan):
    """Before/after text for diff mode: one JSON line per changed entry, sorted."""
    before = []
    after = []
    for entry_id, want, have in plan.update:
        before.append(json.dumps(public(have), sort_keys=True))
        after.append(json.dumps(public(want, entry_id), sort_keys=True))
    for have in plan.delete:
        before.append(json.dumps(public(have), sort_keys=True))
    for want in plan.create:
        after.append(json.dumps(public(want, None), sort_keys=True))
    return {"before": "\n".join(sorted(before)) + ("\n" if before else ""),
            "after": "\n".join(sorted(after)) + ("\n" if after else "")}
