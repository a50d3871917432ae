"""The selector catalog (module_utils/spire/selectors.py): messages, allow list, node vs workload vs store, versions,
and a cross-check of the catalog against SPIRE's Go sources in the module cache (so it cannot drift from SPIRE)."""

import datetime
import re

import pytest

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire import entries as E
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire import ids
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire import selectors as S
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire.config_catalog import (
    KNOWN_VERSIONS, version_family)

from support.labload import load

TD = "example.org"
SERVER = "spiffe://example.org/spire/server"
ALIAS = "spiffe://example.org/node/web1"
JT = "spiffe://example.org/spire/agent/join_token/5d0c3b5e-0000-4000-8000-000000000000"
DEVID_AGENT = "spiffe://example.org/spire/agent/tpm_devid/" + "ab" * 20
PUBHASH = "0123456789abcdef" * 4
OLD, NEW = KNOWN_VERSIONS[0], KNOWN_VERSIONS[-1]


def problem(sel, kind=None, allow=(), version=None):
    return S.selector_type_problem(sel, kind, allow, version)


# --- the catalog ------------------------------------------------------------------------------------------------

def test_catalog_shape():
    for name, st in S.CATALOG.items():
        assert st.name == name and st.kind in S.KINDS and st.plugin and st.source
        assert st.families and set(st.families) <= set(S.FAMILIES)
        if st.prefixes is not None:
            assert set(st.prefixes) == set(st.families)
            for fam, prefixes in st.prefixes.items():
                assert prefixes and all(p.endswith(":") for p in prefixes), (name, fam)
    assert not set(S.NO_SELECTORS) & set(S.CATALOG)
    assert {version_family(v) for v in KNOWN_VERSIONS} == set(S.FAMILIES)


def test_types_per_version():
    old_node, new_node = S.types_for(S.NODE, OLD), S.types_for(S.NODE, NEW)
    assert "azure_imds" not in old_node and "azure_imds" in new_node
    assert "spiffe_id" not in old_node and "spiffe_id" in new_node  # the node selector arrives with 1.15
    assert {"tpm_devid", "x509pop", "tpm", "aws_iid", "gcp_iit", "k8s_psat", "azure_msi", "http_challenge"} \
        <= set(old_node)
    assert "join_token" not in new_node and "sshpop" not in new_node  # they emit nothing
    assert "slurm" not in S.types_for(S.WORKLOAD, OLD) and "slurm" in S.types_for(S.WORKLOAD, NEW)
    assert {"unix", "k8s", "docker", "systemd", "windows", "spiffe_id"} <= set(S.types_for(S.WORKLOAD, OLD))
    assert S.types_for(S.STORE) == ["aws_secretsmanager", "gcp_secretmanager"]
    # an unknown minor line (older or newer) gets the union of what the known versions have
    assert S.types_for(None, "1.14.2") == S.types_for(None) == S.types_for(None, None)


# --- tpm:pcr and other tpm values -----------------------------------------------------------------------------

@pytest.mark.parametrize("sel", ["tpm:pcr:0:" + "a" * 64, "tpm:pcr:7:sha256:abcd", "tpm:pcrs:0,1,7", "tpm:ek:x",
                                 "tpm:PUB_HASH:" + PUBHASH])
@pytest.mark.parametrize("kind", [None, S.NODE, S.WORKLOAD, S.STORE])
def test_tpm_values_other_than_pub_hash_get_the_boot_state_message(sel, kind):
    msg = problem(sel, kind)
    assert msg.startswith("selector %r can never match" % sel)
    assert "no SPIRE attestor emits PCR" in msg and "tpm:pub_hash:" in msg
    assert "playbooks/boot_state.yml" in msg and "boot_state_policy" in msg
    for version in KNOWN_VERSIONS:
        assert problem(sel, kind, version=version) == msg


def test_tpm_pub_hash():
    sel = "tpm:pub_hash:" + PUBHASH
    assert problem(sel, S.NODE) is None and problem(sel) is None
    assert "node selector" in problem(sel, S.WORKLOAD)  # the agent is attested with it, no workload
    assert "lowercase hex SHA-256" in problem("tpm:pub_hash:" + PUBHASH.upper(), S.NODE)
    assert "lowercase hex SHA-256" in problem("tpm:pub_hash:abc", S.NODE)


# --- unknown types and the allow list -------------------------------------------------------------------------

def test_unknown_type_message():
    msg = problem("my_attestor:queue:nightly", S.WORKLOAD)
    assert "type 'my_attestor'" in msg and "would never match" in msg
    assert "node aliases: aws_iid, azure_imds" in msg and "workloads: docker, k8s" in msg
    assert "store_svid entries: aws_secretsmanager, gcp_secretmanager" in msg
    assert "allow_selector_types" in msg and "Did you mean" not in msg
    # per version: 1.13 lists no azure_imds
    assert "azure_imds" not in problem("my_attestor:x", S.WORKLOAD, version=OLD).split("Known types")[1]


@pytest.mark.parametrize("sel, guess", [("tpmdevid:subject:cn:x", "'tpm_devid'"), ("Unix:uid:0", "'unix'"),
                                        ("k8s_sat:cluster:c", "'k8s_psat'"), ("x509_pop:subject:cn:x", "'x509pop'")])
def test_unknown_type_near_misses(sel, guess):
    msg = problem(sel)
    assert "Did you mean %s" % guess in msg
    assert ("case-sensitive" in msg) == (sel.split(":")[0].lower() == guess.strip("'"))


def test_allow_list():
    assert problem("my_attestor:queue:nightly", S.WORKLOAD, ("my_attestor",)) is None
    assert problem("my_attestor:queue:nightly", S.NODE, ("my_attestor",)) is None  # no kind known for it
    assert problem("other:x", S.WORKLOAD, ("my_attestor",)) is not None
    # an allowed type is taken as it is: a custom plugin configured under a built-in's name
    assert problem("tpm:pcr:0:ab", S.NODE, ("tpm",)) is None
    assert problem("unix:custom:1", S.NODE, ("unix",)) is None
    assert S.allow_types_problem(["a", "b_c-1.2"]) is None
    for bad in ("tpm:pcr", "", "a b", None):
        assert "not a selector type" in S.allow_types_problem([bad])
    with pytest.raises(SpireTpmError) as err:
        S.entry_selector_check(["tpm:pcr"])
    assert "allow_selector_types" in err.value.cause


def test_silent_node_attestors():
    msg = problem("join_token:5d0c3b5e", S.NODE)
    assert "gives agents no selectors" in msg and "spire/agent/join_token/" in msg and "spiffe_id:<agent ID>" in msg
    msg = problem("sshpop:host", S.NODE)
    assert "gives agents no selectors" in msg and "spire/agent/sshpop/" in msg


# --- node vs workload vs store ----------------------------------------------------------------------------------

@pytest.mark.parametrize("parent, store, kind", [
    (SERVER, False, S.NODE), (SERVER, True, S.NODE), (ALIAS, False, S.WORKLOAD), (JT, False, S.WORKLOAD),
    (DEVID_AGENT, True, S.STORE), ("spiffe://example.org/spire/server/x", False, S.WORKLOAD),
    ("spiffe://other.org/spire/server", False, S.NODE), ("spiffe://example.org/x/spire/server", False, S.WORKLOAD),
    ("spiffe://spire/server", False, S.WORKLOAD), ("not an id", False, None), (None, False, None)])
def test_entry_kind(parent, store, kind):
    assert S.entry_kind(parent, store) == kind
    if kind is not None:  # the same verdict as comparing with ids.server_id of the parent's trust domain
        assert (kind == S.NODE) == (parent == ids.server_id(ids.trust_domain_of(parent)))


def test_node_selector_on_workload_entry_and_back():
    msg = problem("tpm_devid:subject:cn:web1", S.WORKLOAD)
    assert "is a node selector" in msg and "workload entry" in msg and "node: true" in msg
    assert "(docker, k8s, slurm, systemd, unix, windows)" in msg  # attestors only, not the server's spiffe_id
    msg = problem("unix:uid:0", S.NODE)
    assert "is a workload selector" in msg and "node alias" in msg and "tpm_devid" in msg
    assert problem("tpm_devid:subject:cn:web1", S.NODE) is None and problem("unix:uid:0", S.WORKLOAD) is None
    assert problem("tpm_devid:subject:cn:web1") is None and problem("unix:uid:0") is None  # no kind: type only


def test_store_entries():
    assert problem("aws_secretsmanager:secretname:db", S.STORE) is None
    assert problem("gcp_secretmanager:name:db", S.STORE) is None
    msg = problem("unix:uid:1", S.STORE)
    assert "store_svid: true" in msg and "SVIDStore" in msg and "aws_secretsmanager" in msg
    msg = problem("aws_secretsmanager:secretname:db", S.WORKLOAD)
    assert "names an SVIDStore plugin" in msg and "store_svid: true" in msg


def test_value_prefixes():
    for v in ("subject:cn:web1", "issuer:cn:DevID CA", "ca:fingerprint:" + "ab" * 20):
        assert problem("tpm_devid:" + v, S.NODE) is None
    msg = problem("tpm_devid:fingerprint:" + "ab" * 20, S.NODE)  # SPIRE's doc table says fingerprint:; code ca:...
    assert "can never match" in msg and "subject:cn:, issuer:cn:, ca:fingerprint:" in msg
    assert problem("unix:uid:1000", S.WORKLOAD) is None and "uid:" in problem("unix:userid:1000", S.WORKLOAD)
    assert problem("x509pop:san:role:web", S.NODE) is None
    # values of docker, k8s and the SVIDStores are not checked
    assert problem("k8s:pod-label:app:web", S.WORKLOAD) is None and problem("docker:anything", S.WORKLOAD) is None


# --- spiffe_id and the version -----------------------------------------------------------------------------------

def test_spiffe_id_selectors():
    # SPIRE's own "token generate -spiffeID" entry: parent the agent ID, selector spiffe_id:<agent ID> (every version)
    for version in (None, OLD, NEW):
        assert problem("spiffe_id:" + JT, S.WORKLOAD, version=version) is None
    assert "is a SPIFFE ID" in problem("spiffe_id:not-an-id", S.WORKLOAD)
    # the node selector: only 1.15 (agent_spiffe_id_as_selector); not known = the union = accepted
    assert problem("spiffe_id:" + JT, S.NODE, version=NEW) is None
    assert problem("spiffe_id:" + JT, S.NODE) is None
    msg = problem("spiffe_id:" + JT, S.NODE, version=OLD)
    assert "SPIRE %s" % OLD in msg and "only from SPIRE 1.15" in msg and "agent_spiffe_id_as_selector" in msg
    assert "agent's own ID" in problem("spiffe_id:spiffe://example.org/node/web1", S.NODE, version=NEW)
    assert "SVIDStore" in problem("spiffe_id:" + JT, S.STORE)


def test_version_specific_types_and_values():
    assert problem("azure_imds:vm-name:x", S.NODE, version=NEW) is None
    msg = problem("azure_imds:vm-name:x", S.NODE, version=OLD)
    assert "can never match on SPIRE %s" % OLD in msg and "only in SPIRE %s" % NEW in msg
    assert problem("slurm:job_id:12", S.WORKLOAD, version=OLD) is not None
    assert problem("aws_iid:account_id:123", S.NODE, version=NEW) is None
    assert "account_id:123" in problem("aws_iid:account_id:123", S.NODE, version=OLD)
    assert problem("aws_iid:account_id:123", S.NODE, version="1.14.1") is None  # other minor line: the union
    for sel, kind in [("azure_imds:vm-name:x", S.NODE), ("slurm:step:0", S.WORKLOAD),
                      ("aws_iid:account_id:1", S.NODE), ("spiffe_id:" + JT, S.NODE)]:
        assert S.version_dependent(sel, kind)
    for sel, kind in [("unix:uid:0", S.WORKLOAD), ("tpm_devid:subject:cn:x", S.NODE), ("spiffe_id:" + JT, S.WORKLOAD),
                      ("tpm:pcr:0:ab", S.WORKLOAD), ("foo:bar", S.WORKLOAD), ("unix:uid:0", S.NODE)]:
        assert not S.version_dependent(sel, kind)
    assert not S.version_dependent("azure_imds:vm-name:x", S.NODE, ("azure_imds",))


def test_entry_check_asks_the_version_only_when_it_matters():
    asked = []

    def read():
        asked.append(1)
        return OLD

    check = S.entry_selector_check((), S.lazy_version(read))
    assert check(ALIAS, ["unix:uid:0", "unix:gid:0"]) == []
    assert check(SERVER, ["tpm_devid:subject:cn:web1"]) == [] and asked == []
    assert len(check(SERVER, ["spiffe_id:" + JT])) == 1 and asked == [1]  # 1.13: no spiffe_id node selector
    assert len(check(SERVER, ["spiffe_id:" + JT, "azure_imds:vm-name:a"])) == 2 and asked == [1]  # asked once
    assert check(SERVER, ["nocolon", "tpm_devid:subject:cn:x"]) == []  # shape problems are ids.selector_problem's
    unknown = S.entry_selector_check((), S.lazy_version(lambda: None))
    assert unknown(SERVER, ["spiffe_id:" + JT]) == []  # version not readable: the union


def test_normalize_all_lists_every_selector_problem_and_skips_absent_entries():
    check = S.entry_selector_check(("my_attestor",), OLD)
    specs = [
        {"spiffe_id": "spiffe://example.org/web/a", "parent_id": ALIAS, "selectors": ["tpm:pcr:0:ab", "unix:uid:1"]},
        {"spiffe_id": "spiffe://example.org/web/b", "parent_id": ALIAS, "selectors": ["foo:bar"]},
        {"spiffe_id": "spiffe://example.org/node/c", "node": True, "selectors": ["unix:uid:1"]},
        {"spiffe_id": "spiffe://example.org/web/d", "parent_id": ALIAS, "selectors": ["my_attestor:q:1"]},
        # deleting an entry that never matched must stay possible
        {"spiffe_id": "spiffe://example.org/web/e", "parent_id": ALIAS, "selectors": ["tpm:pcr:0:ab"],
         "state": "absent"},
    ]
    with pytest.raises(SpireTpmError) as err:
        E.normalize_all(specs, selector_check=check)
    problems = err.value.details["problems"]
    assert len(problems) == 3
    assert problems[0].startswith("entries[0] (spiffe://example.org/web/a): selector 'tpm:pcr:0:ab'")
    assert problems[1].startswith("entries[1] (spiffe://example.org/web/b): selector 'foo:bar' has type 'foo'")
    assert problems[2].startswith("entries[2] (spiffe://example.org/node/c): selector 'unix:uid:1' is a workload")
    assert "nothing was changed" in err.value.cause
    assert len(E.normalize_all(specs[3:], selector_check=check)) == 2
    assert len(E.normalize_all(specs)) == 5  # no check given: as before


# --- what the collection itself registers ----------------------------------------------------------------------

def _devid_chain():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def cert(cn, key, issuer_cn, issuer_key, ca):
        now = datetime.datetime(2030, 1, 1)
        b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
             .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        return b.sign(issuer_key, hashes.SHA256())

    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)]
    root = cert("DevID Root", keys[0], "DevID Root", keys[0], True)
    inter = cert("DevID Issuing CA", keys[1], "DevID Root", keys[0], True)
    leaf = cert("web1.example.org", keys[2], "DevID Issuing CA", keys[1], False)
    return leaf, [[leaf, inter, root]]


def test_the_collections_own_selectors_pass():
    from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import attest
    leaf, chains = _devid_chain()
    predicted = attest.selectors(leaf, chains)  # what devid_provision/site.yml/the migration declare on aliases
    assert len(predicted) == 4
    for version in (None, OLD, NEW):
        check = S.entry_selector_check((), version)
        assert check(SERVER, predicted) == []  # site.yml: node alias per agent; migration: alias / token alias
        assert check(ALIAS, ["unix:uid:1000"]) == []  # workload entries (site.yml spire_workloads, migration copies)
        assert check(ALIAS, ["unix:uid:1002", "unix:gid:1002"]) == []
        assert check(JT, ["spiffe_id:" + JT]) == []  # token aliases the migration keeps/restores
        assert check(JT, ["unix:uid:1000"]) == []  # workload entries still parented to the join_token agent
    assert S.entry_selector_check((), NEW)(SERVER, ["spiffe_id:" + JT]) == []  # the migration's alias path (1.15)


# --- cross-check against SPIRE's Go sources --------------------------------------------------------------------

GO_SPIFFE = load("spire_build").CACHE / "go" / "mod" / "github.com" / "spiffe"
IMPORT_RE = re.compile(r'^\s*(?:(\w+)\s+)?"github\.com/spiffe/spire/([^"]+)"', re.M)
# How the built-in plugins write their selector values (prefix = the part before the first variable part).
PREFIX_RES = [re.compile(r'"([a-z0-9_:-]+:)"\s*\+'),
              re.compile(r'\b[mM]akeSelectorValue\(\s*"([a-z0-9_-]+)"'),
              re.compile(r'\bselectorValue\(\s*"([a-z0-9_-]+)"'),
              re.compile(r'\w*SelectorPrefix\s*=\s*"([^"]+)"'),
              re.compile(r'addSelectorValueIfNotEmpty\(\s*\w+\s*,\s*"([a-z0-9_-]+)"')]


def _src(version):
    root = GO_SPIFFE / ("spire@v" + version)
    if not (root / "pkg" / "server" / "catalog" / "nodeattestor.go").is_file():
        pytest.skip("SPIRE %s's Go sources are not in the module cache (%s): build it first with "
                    "python lab/spire_build.py --version %s" % (version, root, version))
    return root


def _code(path):
    """The non-test Go files of a package directory (or one file), concatenated."""
    files = [path] if path.is_file() else sorted(p for p in path.glob("*.go") if not p.name.endswith("_test.go"))
    return "\n".join(p.read_text() for p in files)


def _imports(text):
    return dict((alias or rel.rsplit("/", 1)[-1], rel) for alias, rel in IMPORT_RE.findall(text))


def _const(root, rel, name):
    found = set(re.findall(r'\b%s\s*=\s*"([^"]+)"' % re.escape(name), _code(root / rel)))
    assert len(found) == 1, (rel, name, found)
    return found.pop()


def _plugin_name(root, rel):
    """The name a built-in plugin registers under (catalog.MakeBuiltIn's first argument, resolved)."""
    names = set()
    for path in sorted((root / rel).glob("*.go")):
        if path.name.endswith("_test.go"):
            continue
        text = path.read_text()
        for arg in re.findall(r'MakeBuiltIn\(\s*([\w.]+|"[^"]+")', text):
            if arg.startswith('"'):
                names.add(arg.strip('"'))
            elif "." in arg:
                pkg, const = arg.split(".")
                names.add(_const(root, _imports(text)[pkg], const))
            else:
                names.add(_const(root, rel, arg))
    assert len(names) == 1, (rel, names)
    return names.pop()


def _builtins(root, catalog_file):
    """{plugin name: package dir} of the built-ins a catalog repository lists in BuiltIns()."""
    text = (root / catalog_file).read_text()
    imports = _imports(text)
    body = text[text.index("BuiltIns()"):]
    body = body[:body.index("\n}\n")]
    out = {}
    for alias in re.findall(r'(\w+)\.BuiltIn\(\)', body):
        out[_plugin_name(root, imports[alias])] = imports[alias]
    assert out, catalog_file
    return out


def _prefixes(root, rel):
    found = set()
    text = _code(root / rel)
    for pattern in PREFIX_RES:
        found.update(m if m.endswith(":") else m + ":" for m in pattern.findall(text))
    return found


def _of_kind(kind, family):
    return set(n for n, st in S.CATALOG.items() if st.kind == kind and family in st.families)


@pytest.mark.parametrize("version", KNOWN_VERSIONS)
def test_catalog_matches_spire_sources(version):
    root = _src(version)
    family = version_family(version)
    # The selector type is the plugin's name, on both sides.
    assert re.search(r'Type:\s*v1\.Name\(\)', _code(root / "pkg/server/plugin/nodeattestor/v1.go"))
    assert re.search(r'Type:\s*v1\.Name\(\)', _code(root / "pkg/agent/plugin/workloadattestor/v1.go"))

    node = _builtins(root, "pkg/server/catalog/nodeattestor.go")
    emitting = set(n for n, rel in node.items() if "SelectorValues" in _code(root / rel))
    assert set(node) - emitting == set(S.NO_SELECTORS)  # join_token and sshpop send no SelectorValues
    attest_jt = _code(root / "pkg/server/api/agent/v1/service.go").split("func (s *Service) attestJoinToken")[1]
    assert "Selectors" not in attest_jt.split("\n}\n")[0]
    assert emitting == _of_kind(S.NODE, family) - {"tpm", S.SPIFFE_ID}  # tpm: external plugin, not in SPIRE

    workload = _builtins(root, "pkg/agent/catalog/workloadattestor.go")
    assert set(workload) == _of_kind(S.WORKLOAD, family)
    store = _builtins(root, "pkg/agent/catalog/svidstore.go")
    assert set(store) == _of_kind(S.STORE, family)
    sync = _code(root / "pkg/agent/manager/sync.go")
    assert "case entry.StoreSvid:" in sync  # store_svid entries never reach the workload cache
    assert "selectors[0].Type" in _code(root / "pkg/agent/svid/store/service.go")  # the SVIDStore is the type

    # Value prefixes, both ways, for every type whose values the catalog checks.
    for name, rel in list(node.items()) + list(workload.items()):
        st = S.CATALOG.get(name)
        if st is None or st.prefixes is None:
            continue
        assert _prefixes(root, rel) == set(st.prefixes[family]), (version, name)
        assert st.source.startswith(rel), (name, st.source, rel)
    for name, st in S.CATALOG.items():
        if st.prefixes is not None and st.kind != S.STORE and name != "tpm" and family in st.families:
            assert name in node or name in workload, name

    # The server's spiffe_id: the token generate entry (every version), the node selector only with the flag.
    service = _code(root / "pkg/server/api/agent/v1/service.go")
    assert re.search(r'\{Type:\s*"spiffe_id",\s*Value:\s*parentID\.String\(\)\}', service)
    node_selector = bool(re.search(r'AgentSpiffeIdAsSelector\s*\{\s*attestResult\.Selectors = append\('
                                   r'attestResult\.Selectors,\s*&common\.Selector\{\s*Type:\s*"spiffe_id"', service))
    assert node_selector == (family in S.CATALOG[S.SPIFFE_ID].families)
    assert ('hcl:"agent_spiffe_id_as_selector"' in _code(root / "cmd/spire-server/cli/run/run.go")) == node_selector
