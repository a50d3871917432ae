import pytest

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire import ids


@pytest.mark.parametrize("value", [
    "spiffe://example.org",
    "spiffe://example.org/workload",
    "spiffe://trust-domain_1.example/a/b.c/d-e_f",
    "spiffe://example.org/spire/agent/tpm_devid/" + "a" * 40,
    "spiffe://example.org/A/Upper/Case",
])
def test_valid_ids(value):
    assert ids.spiffe_id_problem(value) is None


@pytest.mark.parametrize("value, problem", [
    ("", "empty"),
    ("example.org/x", "scheme"),
    ("SPIFFE://example.org/x", "scheme"),
    ("https://example.org/x", "scheme"),
    ("spiffe://", "trust domain is missing"),
    ("spiffe:///path", "trust domain is missing"),
    ("spiffe://Example.org/x", "lowercase"),
    ("spiffe://example.org:8080/x", "port"),
    ("spiffe://user@example.org/x", "userinfo"),
    ("spiffe://example.org/x?y=1", "query"),
    ("spiffe://example.org/x#f", "query or fragment"),
    ("spiffe://example.org/", "trailing slash"),
    ("spiffe://example.org/a/", "trailing slash"),
    ("spiffe://example.org//a", "empty segments"),
    ("spiffe://example.org/a/./b", "dot segments"),
    ("spiffe://example.org/a/..", "dot segments"),
    ("spiffe://example.org/a b", "segment characters"),
    ("spiffe://example.org/a%20b", "segment characters"),
    ("spiffe://example.org/" + "a" * 2048, "longer than 2048"),
    ("spiffe://" + "a" * 256, "longer than 255"),
])
def test_invalid_ids(value, problem):
    found = ids.spiffe_id_problem(value)
    assert found and problem in found


def test_split_and_helpers():
    assert ids.split_spiffe_id("spiffe://example.org/a/b") == ("example.org", "/a/b")
    assert ids.split_spiffe_id("spiffe://example.org") == ("example.org", "")
    assert ids.trust_domain_of("spiffe://td.test/x") == "td.test"
    assert ids.server_id("example.org") == "spiffe://example.org/spire/server"
    assert ids.join_token_agent_id("example.org", "abc-123") == "spiffe://example.org/spire/agent/join_token/abc-123"
    assert ids.tpm_devid_agent_id("example.org", "ABCDEF") == "spiffe://example.org/spire/agent/tpm_devid/abcdef"
    assert ids.tpm_agent_id("example.org", "00ff") == "spiffe://example.org/spire/agent/tpm/00ff"
    assert ids.is_agent_id("spiffe://example.org/spire/agent/tpm/00ff")
    assert not ids.is_agent_id("spiffe://example.org/spire/server")
    assert ids.from_proto({"trust_domain": "example.org", "path": "/x"}) == "spiffe://example.org/x"
    assert ids.to_proto("spiffe://example.org/x") == {"trust_domain": "example.org", "path": "/x"}
    assert ids.normalize_trust_domain("spiffe://partner.org") == "partner.org"
    assert ids.normalize_trust_domain("partner.org") == "partner.org"
    with pytest.raises(SpireTpmError):
        ids.normalize_trust_domain("spiffe://Partner.org")
    with pytest.raises(SpireTpmError) as e:
        ids.validate_spiffe_id("spiffe://example.org/a//b", "parent_id")
    assert "parent_id" in str(e.value) and "Fix:" in str(e.value)


def test_selectors():
    assert ids.parse_selector("tpm_devid:subject:cn:web1") == {"type": "tpm_devid", "value": "subject:cn:web1"}
    assert ids.parse_selector("unix:uid:0") == {"type": "unix", "value": "uid:0"}
    assert ids.format_selector({"type": "k8s", "value": "ns:default"}) == "k8s:ns:default"
    for bad in ("nocolon", ":v", "t:", "ty pe:v", 5):
        assert ids.selector_problem(bad)
        with pytest.raises(SpireTpmError):
            ids.parse_selector(bad)


@pytest.mark.parametrize("name, ok", [
    ("example.org", True), ("*.example.org", True), ("a-b.example.org", True), ("localhost", True),
    ("a-b.example.org.", False),
    ("a..b", False), ("-a.example", False), ("a.*.example", False), ("bad_name", True), ("", False),
    ("a" * 64 + ".org", False), ("ab--c.example", False), ("\u00e9t\u00e9.example", False), ("*.*.example", False),
])
def test_dns_names(name, ok):
    assert (ids.dns_name_problem(name) is None) is ok


@pytest.mark.parametrize("value, problem", [
    ("spiffe://example.org/w", None),
    ("spiffe://example.org/spiffe/x", None),
    ("spiffe://example.org/spire-x", None),
    ("spiffe://example.org", "needs a path"),
    ("spiffe://example.org/spire", "reserved namespace"),
    ("spiffe://example.org/spire/server", "reserved namespace"),
    ("spiffe://example.org/spire/agent/join_token/t", "reserved namespace"),
])
def test_entry_spiffe_id_rules(value, problem):
    found = ids.entry_spiffe_id_problem(value)
    assert (found is None) if problem is None else (problem in found)


def test_entry_parent_id_rules():
    assert ids.entry_parent_id_problem("spiffe://example.org/spire/server") is None
    assert ids.entry_parent_id_problem("spiffe://example.org/spire/agent/x/y") is None
    assert "needs a path" in ids.entry_parent_id_problem("spiffe://example.org")
