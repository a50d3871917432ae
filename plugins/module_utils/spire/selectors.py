# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The selector types SPIRE can emit, and why a declared selector could never match.

SPIRE compares an entry's selectors with the selectors an attestor produced, as plain strings. A selector no
attestor emits is accepted by ``spire-server entry create`` and then silently never matches. This catalog lists what
SPIRE's built-in plugins emit (read from SPIRE's Go sources at the versions of ``KNOWN_VERSIONS``; the unit tests
cross-check it against those sources in the Go module cache):

* The selector type is the name the plugin is configured under (pkg/server/plugin/nodeattestor/v1.go and
  pkg/agent/plugin/workloadattestor/v1.go put the plugin's name into ``Selector.Type``); for a built-in plugin that
  is its built-in name. An external plugin's type is whatever name server.conf/agent.conf gives it.
* **node** selectors: a node attestor gives them to an agent at attestation (server side). They belong on node
  alias entries (parent ``spiffe://<td>/spire/server``). ``join_token`` and ``sshpop`` emit none.
* **workload** selectors: a workload attestor on the agent emits them. They belong on entries parented to an agent
  ID or to a node alias.
* **store** selectors: the agent hands an entry with ``store_svid`` to the SVIDStore plugin named by its (single)
  selector type, never to a workload (pkg/agent/manager/sync.go, pkg/agent/svid/store/service.go).
* ``spiffe_id``: the server's own selector. ``spire-server token generate -spiffeID`` creates an entry parented to
  the join_token agent with the selector ``spiffe_id:<agent ID>`` (every version); from SPIRE 1.15 the server adds
  the node selector ``spiffe_id:<agent ID>`` to every agent it attests when
  ``server.experimental.agent_spiffe_id_as_selector`` is on (pkg/server/api/agent/v1/service.go).
* ``tpm``: the external spire-tpm-plugin (configured as ``NodeAttestor "tpm"``) emits ``tpm:pub_hash:<hash>`` only.
  No SPIRE attestor emits PCR selectors.

Imports nothing from Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import difflib
import re

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire import ids
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.spire.config_catalog import (
    KNOWN_VERSIONS, version_family)

NODE = "node"
WORKLOAD = "workload"
STORE = "store"
KINDS = (NODE, WORKLOAD, STORE)

FAMILIES = ("1.13", "1.15")
_BOTH = FAMILIES
_FROM_115 = ("1.15",)

SPIFFE_ID = "spiffe_id"
BOOT_STATE_HINT = ("Boot state is enforced by this collection's boot-state gate (playbooks/boot_state.yml, host "
                   "variable boot_state_policy), not by an entry selector")
_PUBHASH_RE = re.compile(r"^[0-9a-f]{64}$")


class SelectorType(object):
    """One selector type: its kind, the plugin that emits it, the SPIRE families that have it, and the value
    prefixes it emits per family (None: values not checked here)."""

    __slots__ = ("name", "kind", "plugin", "families", "prefixes", "source", "_union")

    def __init__(self, name, kind, plugin, source, families=_BOTH, prefixes=None, added=None):
        self.name = name
        self.kind = kind
        self.plugin = plugin
        self.source = source
        self.families = families
        self.prefixes = None
        self._union = None
        if prefixes is not None:
            self.prefixes = dict((fam, tuple(prefixes) + tuple((added or {}).get(fam, ()))) for fam in families)
            union = []
            for fam in families:
                union.extend(p for p in self.prefixes[fam] if p not in union)
            self._union = tuple(union)

    def prefixes_for(self, family):
        """The value prefixes for one family (the union of the families when it is None), or None (not checked)."""
        if self.prefixes is None:
            return None
        return self._union if family is None else self.prefixes.get(family)


def _types(*items):
    return dict((t.name, t) for t in items)


_NA = "pkg/server/plugin/nodeattestor/"
_WA = "pkg/agent/plugin/workloadattestor/"
_SS = "pkg/agent/plugin/svidstore/"

CATALOG = _types(
    # --- node attestors (server side) ---------------------------------------------------------------------------
    SelectorType("aws_iid", NODE, "the aws_iid node attestor", _NA + "awsiid/iid.go",
                 prefixes=("az:", "iamrole:", "image:id:", "instance:id:", "region:", "sg:id:", "sg:name:", "tag:"),
                 added={"1.15": ("account_id:",)}),
    SelectorType("azure_imds", NODE, "the azure_imds node attestor", _NA + "azureimds/imds.go", families=_FROM_115,
                 prefixes=("network-security-group:", "resource-group:", "subscription-id:", "virtual-network:",
                           "virtual-network-subnet:", "vm-location:", "vm-name:", "vm-tag:", "vmss-name:")),
    SelectorType("azure_msi", NODE, "the azure_msi node attestor", _NA + "azuremsi/msi.go",
                 prefixes=("network-security-group:", "subscription-id:", "virtual-network:",
                           "virtual-network-subnet:", "vm-name:")),
    SelectorType("gcp_iit", NODE, "the gcp_iit node attestor", _NA + "gcpiit/iit.go",
                 prefixes=("instance-name:", "label:", "metadata:", "project-id:", "sa:", "tag:", "zone:")),
    SelectorType("http_challenge", NODE, "the http_challenge node attestor", _NA + "httpchallenge/httpchallenge.go",
                 prefixes=("hostname:",)),
    SelectorType("k8s_psat", NODE, "the k8s_psat node attestor", _NA + "k8spsat/psat.go",
                 prefixes=("agent_node_ip:", "agent_node_label:", "agent_node_name:", "agent_node_uid:",
                           "agent_ns:", "agent_pod_label:", "agent_pod_name:", "agent_pod_uid:", "agent_sa:",
                           "cluster:")),
    SelectorType("tpm_devid", NODE, "the tpm_devid node attestor", _NA + "tpmdevid/selectors.go",
                 prefixes=("subject:cn:", "issuer:cn:", "ca:fingerprint:")),
    SelectorType("x509pop", NODE, "the x509pop node attestor", _NA + "x509pop/x509pop.go",
                 prefixes=("subject:cn:", "ca:fingerprint:", "serialnumber:", "san:")),
    SelectorType("tpm", NODE, "the external spire-tpm-plugin (NodeAttestor \"tpm\")",
                 "spiffe/spire-tpm-plugin pkg/server/server.go (buildSelectors); not part of SPIRE",
                 prefixes=("pub_hash:",)),
    SelectorType(SPIFFE_ID, NODE, "the SPIRE server (server.experimental.agent_spiffe_id_as_selector)",
                 "pkg/server/api/agent/v1/service.go (AttestAgent)", families=_FROM_115),
    # --- workload attestors (agent side) ------------------------------------------------------------------------
    SelectorType("docker", WORKLOAD, "the docker workload attestor", _WA + "docker/docker.go"),
    SelectorType("k8s", WORKLOAD, "the k8s workload attestor", _WA + "k8s/k8s.go"),
    SelectorType("slurm", WORKLOAD, "the slurm workload attestor", _WA + "slurm/slurm_posix.go", families=_FROM_115,
                 prefixes=("job_id:", "sluid:", "step:")),
    SelectorType("systemd", WORKLOAD, "the systemd workload attestor", _WA + "systemd/systemd_posix.go",
                 prefixes=("id:", "fragment_path:")),
    SelectorType("unix", WORKLOAD, "the unix workload attestor", _WA + "unix/unix_posix.go",
                 prefixes=("uid:", "user:", "gid:", "group:", "supplementary_gid:", "supplementary_group:", "path:",
                           "sha256:")),
    SelectorType("windows", WORKLOAD, "the windows workload attestor", _WA + "windows/windows_windows.go",
                 prefixes=("user_name:", "user_sid:", "group_name:", "group_sid:", "path:", "sha256:")),
    # --- SVIDStore plugins (agent side; entries with store_svid) ------------------------------------------------
    SelectorType("aws_secretsmanager", STORE, "the aws_secretsmanager SVIDStore", _SS + "awssecretsmanager/aws.go"),
    SelectorType("gcp_secretmanager", STORE, "the gcp_secretmanager SVIDStore", _SS + "gcpsecretmanager/gcloud.go"),
)

# Built-in node attestors that give an agent no selectors at all (their server side sends no SelectorValues).
NO_SELECTORS = {
    "join_token": "pkg/server/api/agent/v1/service.go (attestJoinToken returns the agent ID only)",
    "sshpop": _NA + "sshpop/sshpop.go (AgentAttributes without SelectorValues)",
}

_KIND_WORDS = {NODE: "node aliases", WORKLOAD: "workloads", STORE: "store_svid entries"}


def _family(spire_version):
    return version_family(spire_version) if spire_version else None


def _where(spire_version, family):
    if family:
        return "SPIRE %s" % spire_version
    return "SPIRE %s" % " or ".join(KNOWN_VERSIONS)


def _versions_of(families):
    out = [v for v in KNOWN_VERSIONS if version_family(v) in families]
    return " and ".join(out) if out else "none of " + ", ".join(KNOWN_VERSIONS)


def types_for(kind=None, spire_version=None, plugins_only=False):
    """The known selector types (of one kind, for one SPIRE version; all of them when not given), sorted.

    ``plugins_only``: only the types plugins emit (not the server's spiffe_id)."""
    family = _family(spire_version)
    out = set()
    for st in CATALOG.values():
        if family and family not in st.families:
            continue
        if plugins_only and st.name == SPIFFE_ID:
            continue
        if kind is None or st.kind == kind:
            out.add(st.name)
    if kind in (None, WORKLOAD) and not plugins_only:
        out.add(SPIFFE_ID)  # entries parented to an agent (token generate -spiffeID), every version
    return sorted(out)


def known_types_text(spire_version=None):
    return "; ".join("%s: %s" % (_KIND_WORDS[k], ", ".join(types_for(k, spire_version))) for k in KINDS)


def entry_kind(parent_id, store_svid=False):
    """``node`` for a node alias (parent = the server's ID ``spiffe://<td>/spire/server``), ``store`` for an entry
    with store_svid, else ``workload``; None when ``parent_id`` is not a valid SPIFFE ID."""
    if not parent_id or ids.spiffe_id_problem(parent_id):
        return None
    # ids.server_id(<trust domain>) without validating the ID a second time (this runs once per declared entry)
    if parent_id.endswith("/spire/server") and parent_id.count("/") == 4:
        return NODE
    return STORE if store_svid else WORKLOAD


def _tpm_message(selector):
    return ("selector %r can never match: no SPIRE attestor emits PCR (or other TPM state) selectors - the tpm "
            "node attestor (spire-tpm-plugin) emits only tpm:pub_hash:<hash of the EK public key>, SPIRE's tpm_devid "
            "only tpm_devid:subject:cn:, issuer:cn: and ca:fingerprint:. %s; drop this selector"
            % (selector, BOOT_STATE_HINT))


def _unknown_message(selector, stype, spire_version, family):
    known = types_for(None, spire_version)
    if stype.lower() in known:
        hint = " Did you mean %r? Selector types are case-sensitive." % stype.lower()
    else:
        close = difflib.get_close_matches(stype.lower(), known, n=1, cutoff=0.75)
        hint = " Did you mean %r?" % close[0] if close else ""
    return ("selector %r has type %r, which no attestor known here emits (%s), so the entry would never match. "
            "Known types - %s.%s If a custom (external) plugin configured under the name %r emits it, add %r to "
            "allow_selector_types" % (selector, stype, _where(spire_version, family), known_types_text(spire_version),
                                      hint, stype, stype))


def _kind_message(selector, st, kind):
    if st.kind == NODE and kind == WORKLOAD:
        return ("selector %r is a node selector (%s gives it to an agent at attestation) but this is a workload "
                "entry (its parent is an agent or a node alias): workloads are attested by workload attestors "
                "(%s), so it would never match. Put node selectors on a node alias (node: true, parent "
                "spiffe://<trust domain>/spire/server) and parent the workload entries to that alias"
                % (selector, st.plugin, ", ".join(types_for(WORKLOAD, plugins_only=True))))
    if st.kind == WORKLOAD and kind == NODE:
        return ("selector %r is a workload selector (%s runs on the agent) but this entry is a node alias (parented "
                "to spiffe://<trust domain>/spire/server): an agent's node selectors come from its node attestor "
                "(%s), so the alias would never match an agent. Use node selectors here and put workload selectors "
                "on entries parented to the alias"
                % (selector, st.plugin, ", ".join(types_for(NODE, plugins_only=True))))
    if kind == STORE:
        return ("selector %r is a %s selector (%s) but the entry has store_svid: true: SPIRE's agent hands such an "
                "entry to the SVIDStore plugin named by its selector type (%s), never to a workload or an agent, so "
                "it would never be stored. Use the SVIDStore plugin's selectors (e.g. "
                "aws_secretsmanager:secretname:<name>) or set store_svid: false"
                % (selector, st.kind, st.plugin, ", ".join(types_for(STORE))))
    if st.kind == STORE:
        return ("selector %r names an SVIDStore plugin (%s) but the entry does not set store_svid: true: only such "
                "entries are handed to an SVIDStore, and no attestor emits this type, so it would never match. Set "
                "store_svid: true (all selectors then of this one type)" % (selector, st.plugin))
    return ("selector %r is a %s selector (%s) and cannot match on a %s entry" % (selector, st.kind, st.plugin, kind))


def _value_problem(selector, st, value, kind, spire_version, family):
    if st.name == SPIFFE_ID:
        problem = ids.spiffe_id_problem(value)
        if problem:
            return "selector %r: the value of a spiffe_id selector is a SPIFFE ID (%s)" % (selector, problem)
        if kind == NODE and not ids.is_agent_id(value):
            return ("selector %r can never match: the server's spiffe_id node selector carries the agent's own ID "
                    "(spiffe://<trust domain>/spire/agent/...)" % selector)
        return None
    prefixes = st.prefixes_for(family)
    if prefixes and not value.startswith(prefixes):
        return ("selector %r can never match: %s emits values starting with %s (%s), not %r"
                % (selector, st.plugin, ", ".join(prefixes), _where(spire_version, family), value))
    if st.name == "tpm" and not _PUBHASH_RE.match(value[len("pub_hash:"):]):
        return ("selector %r can never match: spire-tpm-plugin's pub_hash is the lowercase hex SHA-256 of the EK's "
                "public key (64 characters)" % selector)
    return None


def selector_type_problem(selector, kind=None, allow_types=(), spire_version=None):
    """Why SPIRE could never match ``selector`` (``type:value``), or None.

    ``kind``: ``node`` (a node alias), ``workload`` or ``store`` (an entry with store_svid); None checks the type and
    value only. A type in ``allow_types`` is accepted as it is (a custom plugin's). ``spire_version`` (e.g.
    "1.13.3") narrows the catalog to that version's family; None, or a version of another minor line, uses the union
    of the known versions.
    """
    problem = ids.selector_problem(selector)
    if problem:
        return problem
    if kind is not None and kind not in KINDS:
        raise ValueError("kind must be one of %s or None" % ", ".join(KINDS))
    stype, dummy, value = selector.partition(":")
    if stype in (allow_types or ()):
        return None
    family = _family(spire_version)
    if stype == "tpm" and not value.startswith("pub_hash:"):
        return _tpm_message(selector)
    if stype in NO_SELECTORS:
        return ("selector %r can never match: the %s node attestor gives agents no selectors. Parent the entries to "
                "the agent's SPIFFE ID (spiffe://<trust domain>/spire/agent/%s/...) instead%s"
                % (selector, stype, stype, ", or on SPIRE 1.15+ with agent_spiffe_id_as_selector use "
                   "spiffe_id:<agent ID> on a node alias" if stype == "join_token" else ""))
    if stype == SPIFFE_ID and kind in (None, WORKLOAD):
        # The shape of SPIRE's own "token generate -spiffeID" entry (parent: the agent ID), every version.
        return _value_problem(selector, CATALOG[SPIFFE_ID], value, WORKLOAD, spire_version, family)
    st = CATALOG.get(stype)
    if st is None:
        return _unknown_message(selector, stype, spire_version, family)
    if kind is not None and kind != st.kind:
        return _kind_message(selector, st, kind)
    if family and family not in st.families:
        if st.name == SPIFFE_ID:
            return ("selector %r can never match on a node alias with %s: the server adds the spiffe_id node "
                    "selector only from SPIRE 1.15 (server.experimental.agent_spiffe_id_as_selector). Parent the "
                    "entries to the agent ID instead" % (selector, _where(spire_version, family)))
        return ("selector %r can never match on %s: %s exists only in SPIRE %s; add %r to allow_selector_types if "
                "a custom plugin of that name emits it"
                % (selector, _where(spire_version, family), st.plugin, _versions_of(st.families), stype))
    return _value_problem(selector, st, value, kind, spire_version, family)


# The types whose verdict can differ between the known versions (not in every family, or other value prefixes).
VERSIONED_TYPES = frozenset(st.name for st in CATALOG.values() if set(st.families) != set(FAMILIES)
                            or (st.prefixes is not None and len(set(st.prefixes.values())) > 1))


def version_dependent(selector, kind=None, allow_types=()):
    """True when the verdict on ``selector`` differs between the known SPIRE versions (the version is then worth
    asking the binary for)."""
    if selector.partition(":")[0] not in VERSIONED_TYPES:
        return False
    verdicts = set(selector_type_problem(selector, kind, allow_types, v) is None for v in KNOWN_VERSIONS)
    return len(verdicts) > 1


def allow_types_problem(allow_types):
    """Why ``allow_types`` is not a list of selector types, or None."""
    for name in allow_types or ():
        if not isinstance(name, str) or not name or ":" in name or any(c.isspace() for c in name):
            return ("allow_selector_types: %r is not a selector type (the part before the first ':' of a selector, "
                    "e.g. my_attestor)" % (name,))
    return None


def lazy_version(read):
    """A callable returning ``read()``, called at most once (the SPIRE version, asked only when it matters)."""
    memo = []

    def version():
        if not memo:
            memo.append(read())
        return memo[0]
    return version


def entry_selector_check(allow_types=(), spire_version=None):
    """``check(parent_id, selectors, store_svid)`` → the problems of a declared entry's selectors (list of str).

    ``spire_version`` is a version string, None, or a callable returning one, called only when a verdict depends on
    the version. Malformed selectors are skipped (ids.selector_problem reports them). Raises SpireTpmError when
    ``allow_types`` is not a list of types.
    """
    problem = allow_types_problem(allow_types)
    if problem:
        raise SpireTpmError(problem, "list selector types only, e.g. allow_selector_types: [my_attestor]")
    allow = tuple(allow_types or ())

    def check(parent_id, selectors, store_svid=False):
        kind = entry_kind(parent_id, store_svid)
        out = []
        for sel in selectors:
            if ids.selector_problem(sel):
                continue
            version = spire_version
            if callable(version):
                version = version() if version_dependent(sel, kind, allow) else None
            problem = selector_type_problem(sel, kind, allow, version)
            if problem:
                out.append(problem)
        return out
    return check
