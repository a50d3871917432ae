import json

import pytest

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire import entries as E

NODE = "spiffe://example.org/node/a"


def spec(n, **kw):
    d = {"spiffe_id": "spiffe://example.org/w/%d" % n, "parent_id": NODE, "selectors": ["unix:uid:%d" % n]}
    d.update(kw)
    return d


def shown(n, entry_id=None, parent="/node/a", **kw):
    """An entry in `entry show -output json` shape (the keys and types the real 1.13.3 and 1.15.3 servers print;
    test_spire_cli_real.py runs the same code on JSON captured from a real server)."""
    e = {"id": entry_id or "id-%d" % n, "spiffe_id": {"trust_domain": "example.org", "path": "/w/%d" % n},
         "parent_id": {"trust_domain": "example.org", "path": parent},
         "selectors": [{"type": "unix", "value": "uid:%d" % n}], "x509_svid_ttl": 0, "jwt_svid_ttl": 0,
         "federates_with": [], "hint": "", "admin": False, "created_at": "1", "downstream": False,
         "expires_at": "0", "dns_names": [], "revision_number": "0", "store_svid": False}
    e.update(kw)
    return e


def test_normalize_desired_defaults_and_node():
    [e] = E.normalize_all([{"spiffe_id": "spiffe://example.org/host/x", "node": True,
                            "selectors": ["tpm_devid:subject:cn:x", "tpm_devid:issuer:cn:ca"]}])
    assert e["parent_id"] == "spiffe://example.org/spire/server"
    assert e["selectors"] == ("tpm_devid:issuer:cn:ca", "tpm_devid:subject:cn:x")
    assert e["x509_svid_ttl"] == 0 and e["admin"] is False and e["state"] == "present"


def test_current_and_desired_compare_equal():
    [want] = E.normalize_all([spec(1, x509_svid_ttl=60, federates_with=["spiffe://b.org", "a.org"],
                                   dns_names=["x.example.org"], entry_expiry=99)])
    have = E.normalize_current(shown(1, x509_svid_ttl=60, federates_with=["a.org", "b.org"],
                                     dns_names=["x.example.org"], expires_at="99"))
    assert E.identity(want) == E.identity(have)
    assert E.differences(want, have) == []


def test_validation_collects_every_problem():
    with pytest.raises(SpireTpmError) as err:
        E.normalize_all([
            spec(1, spiffe_id="spiffe://example.org/a//b"),
            spec(2, parent_id=None),
            spec(3, selectors=[]),
            spec(4, x509_svid_ttl=-1, jwt_svid_ttl="x"),
            spec(5, parent_id="spiffe://other.org/n"),
            spec(6, node=True),
            spec(7, dns_names=["a..b"]),
            spec(8), spec(8),
        ])
    problems = err.value.details["problems"]
    text = " | ".join(problems)
    assert "empty segments" in text
    assert "parent_id is required" in text
    assert "selectors must not be empty" in text
    assert "must not be negative" in text and "must be an integer" in text
    assert "trust domain other.org" in text
    assert "mutually exclusive" in text
    assert "invalid label" in text
    assert "declare the same entry" in text
    assert len(problems) == 9


def test_plan_create_update_delete_unchanged():
    desired = E.normalize_all([spec(1), spec(2, hint="new"), spec(3), spec(4, state="absent"), spec(5)])
    current = [E.normalize_current(shown(n)) for n in (1, 2, 4, 6)]
    current.append(E.normalize_current(shown(7, parent="/node/other")))
    plan = E.make_plan(desired, current, E.check_scope(True, {"parent_id": NODE}))
    assert [e["spiffe_id"] for e in plan.create] == ["spiffe://example.org/w/3", "spiffe://example.org/w/5"]
    assert [(i, w["hint"]) for i, w, _h in plan.update] == [("id-2", "new")]
    assert sorted(e["id"] for e in plan.delete) == ["id-4", "id-6"]  # absent + purged; id-7 out of scope
    assert [i for i, _w in plan.unchanged] == ["id-1"]
    assert plan.summary() == {"create": 2, "update": 1, "delete": 2, "unchanged": 1}


def test_selector_change_is_create_plus_purge():
    desired = E.normalize_all([spec(1, selectors=["unix:uid:1", "unix:gid:1"])])
    current = [E.normalize_current(shown(1))]
    plan = E.make_plan(desired, current, None)
    assert len(plan.create) == 1 and plan.delete == []  # no purge: the old one stays
    plan = E.make_plan(desired, current, E.check_scope(True, {"spiffe_id_prefix": "spiffe://example.org/w/"}))
    assert len(plan.create) == 1 and [e["id"] for e in plan.delete] == ["id-1"]


def test_scope_rules():
    assert E.check_scope(False, None) is None
    with pytest.raises(SpireTpmError, match="needs a purge_scope"):
        E.check_scope(True, None)
    with pytest.raises(SpireTpmError, match="needs a purge_scope"):
        E.check_scope(True, {"parent_id": None, "spiffe_id_prefix": ""})
    with pytest.raises(SpireTpmError, match="purge is false"):
        E.check_scope(False, {"parent_id": NODE})
    with pytest.raises(SpireTpmError, match="spiffe_id_prefix"):
        E.check_scope(True, {"spiffe_id_prefix": "/w/"})
    with pytest.raises(SpireTpmError):
        E.check_scope(True, {"parent_id": "not-an-id"})
    scope = E.check_scope(True, {"parent_id": NODE, "spiffe_id_prefix": "spiffe://example.org/w/1"})
    assert E.in_scope(E.normalize_current(shown(1)), scope)
    assert E.in_scope(E.normalize_current(shown(12)), scope)
    assert not E.in_scope(E.normalize_current(shown(2)), scope)
    assert not E.in_scope(E.normalize_current(shown(1, parent="/node/b")), scope)


def test_plan_is_linear_on_10k():
    import time
    desired = E.normalize_all([spec(n) for n in range(10000)])
    current = [E.normalize_current(shown(n)) for n in range(5000, 15000)]
    t = time.perf_counter()
    plan = E.make_plan(desired, current, E.check_scope(True, {"parent_id": NODE}))
    took = time.perf_counter() - t
    assert plan.summary() == {"create": 5000, "update": 0, "delete": 5000, "unchanged": 5000}
    assert took < 2.0  # a quadratic plan would take minutes


def test_to_request_shape():
    [e] = E.normalize_all([spec(1, federates_with=["b.org"], entry_expiry=5, x509_svid_ttl=10)])
    req = E.to_request(e, "abc")
    assert req["entry_id"] == "abc"
    assert req["spiffe_id"] == "spiffe://example.org/w/1" and req["parent_id"] == NODE
    assert req["selectors"] == [{"type": "unix", "value": "uid:1"}]
    assert req["federates_with"] == ["spiffe://b.org"]
    assert req["entryExpiry"] == 5 and "entry_expiry" not in req
    assert "entry_id" not in E.to_request(e)


def test_chunks_by_count_and_bytes():
    items = list(range(1201))
    parts = E.chunks(items, max_entries=500, max_bytes=10 ** 9)
    assert [len(p) for p in parts] == [500, 500, 201]
    assert sum(parts, []) == items
    big = ["x" * 1000] * 50
    parts = E.chunks(big, max_entries=500, max_bytes=10 * 1024)
    assert all(len(json.dumps({"entries": p})) <= 10 * 1024 for p in parts)
    assert sum(len(p) for p in parts) == 50 and len(parts) >= 5
    with pytest.raises(SpireTpmError):
        E.chunks(["x" * 5000], max_bytes=1024)
    assert E.chunks([]) == []


def test_server_rules_for_ids():
    """Rules the real server enforces per item (see test_spire_cli_real / the integration tests): both IDs in one
    trust domain even when federating, an entry ID with a path outside /spire, a parent with a path."""
    with pytest.raises(SpireTpmError) as err:
        E.normalize_all([
            spec(1, parent_id="spiffe://partner.org/n", federates_with=["partner.org"]),
            spec(2, spiffe_id="spiffe://example.org/spire/agent/x"),
            spec(3, spiffe_id="spiffe://example.org"),
            spec(4, parent_id="spiffe://example.org"),
            spec(5, dns_names=["x.example.org."]),
        ])
    text = " | ".join(err.value.details["problems"])
    assert "trust domain partner.org" in text and "reserved namespace" in text
    assert "needs a path" in text and "a parent ID needs a path" in text and "ends with a dot" in text
    assert len(err.value.details["problems"]) == 5
    # agent IDs and the server ID are fine as parents; a federating entry of the server's own domain too
    assert len(E.normalize_all([spec(1, parent_id="spiffe://example.org/spire/agent/join_token/t"),
                                spec(2, parent_id="spiffe://example.org/spire/server"),
                                spec(3, federates_with=["partner.org"])])) == 3
