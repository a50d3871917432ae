# -*- coding: utf-8 -*-
"""spire_config's verdict against the real SPIRE binaries' verdict, row by row.

For each row a configuration (good or bad, server or agent) is built as data, with its own ports, sockets and
directories. Its verdict is taken three ways:

* **ours**: ``config.validate()`` + the file checks (what spire_config decides without any SPIRE binary);
* **SPIRE run**: the rendering is started with ``spire-<kind> run``: accepted when the daemon answers its
  healthcheck (an agent only after it attested to a real server), refused when it exits;
* **SPIRE validate**: ``spire-<kind> validate`` on the same file, recorded, never stricter than ``run``.

Every row states what SPIRE does (``spire``), so a change of SPIRE's behaviour fails the row as well as a change of
ours. A row with ``policy`` is a refusal of spire_config's own although SPIRE accepts the configuration: it must
be refused by default and accepted with the named override.

The whole table runs on the default version; the rows marked ``key`` (and the version-specific ones) run on the
newest pinned version too, ours then told that version (as spire_config learns it from validate_bin).
"""

import hashlib
import json
import os
import stat

import pytest

import realspire as R
from support import spire as spire_support

DEFAULT = spire_support.DEFAULT_VERSION
NEWEST = spire_support.NEWEST_VERSION


class Ctx:
    """What a mutation may use: the row's work directory, the DevID, a fake external plugin binary."""

    def __init__(self, world, workdir, version):
        self.world = world
        self.workdir = workdir
        self.version = version
        self.devid = world.devid

    def file(self, name, content=""):
        path = self.workdir / name
        path.write_text(content)
        return str(path)

    def plugin(self):
        """An executable that is not a SPIRE plugin (its checksum is right, its handshake is not)."""
        path = self.workdir / "fake-plugin"
        path.write_text("#!/bin/sh\nexit 1\n")
        path.chmod(0o755)
        return str(path), hashlib.sha256(path.read_bytes()).hexdigest()


class Row:
    def __init__(self, rid, kind, mutate, spire, policy=None, key=False, base="join_token", note="", timeout=30,
                 says=None):
        self.id = rid
        self.says = says            # (what SPIRE's log says, what spire_config's message says) for a refusal
        self.timeout = timeout
        self.kind = kind
        self.mutate = mutate
        self.spire = spire          # True/False, or {version: bool}
        self.policy = policy        # name of the override that makes spire_config accept
        self.key = key or isinstance(spire, dict)
        self.base = base
        self.note = note

    def spire_for(self, version):
        return self.spire[version] if isinstance(self.spire, dict) else self.spire


def at(cfg, dotted, value=None, delete=False):
    """Set (or delete) cfg[a][b][c] for dotted 'a.b.c' (keys may not contain dots)."""
    parts = dotted.split(".")
    node = cfg
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    if delete:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value
    return cfg


def setter(dotted, value):
    return lambda cfg, ctx: at(cfg, dotted, value)


def deleter(dotted):
    return lambda cfg, ctx: at(cfg, dotted, delete=True)


def both(*fns):
    def run(cfg, ctx):
        for f in fns:
            f(cfg, ctx)
    return run


def plugins(ptype, value):
    return setter("plugins." + ptype, value)


def add_plugin(ptype, name, spec):
    return lambda cfg, ctx: cfg["plugins"].setdefault(ptype, {}).__setitem__(name, spec)


def port_as(fmt):
    def run(cfg, ctx):
        kind = "server" if "server" in cfg else "agent"
        key = "bind_port" if kind == "server" else "server_port"
        cfg[kind][key] = fmt(cfg[kind][key])
    return run


def with_external(ptype, name, checksum=None, data=None, cmd=None):
    def run(cfg, ctx):
        path, good = ctx.plugin()
        spec = {"plugin_cmd": cmd if cmd is not None else path, "plugin_data": data or {}}
        spec["plugin_checksum"] = good if checksum is None else checksum
        cfg["plugins"].setdefault(ptype, {})[name] = spec
    return run


def with_tpm_devid_server(extra=None, drop=None):
    def run(cfg, ctx):
        data = ctx.devid.server_plugin_data()
        data.update(extra or {})
        for k in drop or ():
            data.pop(k)
        cfg["plugins"]["NodeAttestor"]["tpm_devid"] = {"plugin_data": data}
    return run


def devid_data(extra=None, drop=None):
    def run(cfg, ctx):
        data = cfg["plugins"]["NodeAttestor"]["tpm_devid"]["plugin_data"]
        data.update(extra or {})
        for k in drop or ():
            data.pop(k)
    return run


def with_file(dotted, content, name="file.txt"):
    return lambda cfg, ctx: at(cfg, dotted, ctx.file(name, content))


def sql_from_file(cfg, ctx):
    data = cfg["plugins"]["DataStore"]["sql"].pop("plugin_data")
    cfg["plugins"]["DataStore"]["sql"]["plugin_data_file"] = ctx.file(
        "sql.hcl", 'database_type = "%s"\nconnection_string = "%s"\n' % (data["database_type"],
                                                                        data["connection_string"]))


def join_token_to_file(cfg, ctx):
    token = cfg["agent"].pop("join_token")
    cfg["agent"]["join_token_file"] = ctx.file("join.token", token + "\n")


def insecure(cfg, ctx):
    cfg["agent"].pop("trust_bundle_path")
    cfg["agent"]["insecure_bootstrap"] = True


def long_socket(cfg, ctx):
    kind = "server" if "server" in cfg else "agent"
    d = os.path.dirname(cfg[kind]["socket_path"])
    cfg[kind]["socket_path"] = os.path.join(d, "s" * 120 + ".sock")


def admin_beside_workload_socket(cfg, ctx):
    cfg["agent"]["admin_socket_path"] = os.path.join(os.path.dirname(cfg["agent"]["socket_path"]), "admin.sock")


def admin_elsewhere(cfg, ctx):
    cfg["agent"]["admin_socket_path"] = os.path.join(ctx.world.sockdir(), "admin.sock")


TPM_PLUGIN_FIX = ("tpm is the external spire-tpm-plugin: set plugin_cmd to the installed binary and plugin_checksum "
                  "to its sha256, or use the built-in tpm_devid")

SERVER_ROWS = [
    Row("base", "server", None, True, key=True),
    # built-in names per type, and misspelt ones
    Row("km-disk", "server", lambda c, x: plugins("KeyManager", {"disk": {"plugin_data": {
        "keys_path": os.path.join(c["server"]["data_dir"], "keys.json")}}})(c, x), True),
    Row("km-disk-without-keys_path", "server", plugins("KeyManager", {"disk": {"plugin_data": {}}}), False),
    Row("km-misspelt", "server", plugins("KeyManager", {"dsik": {"plugin_data": {}}}), False, key=True),
    Row("two-keymanagers", "server", add_plugin("KeyManager", "disk", {"plugin_data": {"keys_path": "/tmp/k"}}),
        False),
    Row("na-tpm-without-plugin_cmd", "server",
        plugins("NodeAttestor", {"tpm": {"plugin_data": {"hash_path": "/tmp"}}}), False, key=True,
        says=('no built-in plugin "tpm" for type "NodeAttestor"', TPM_PLUGIN_FIX)),
    Row("na-misspelt", "server", plugins("NodeAttestor", {"tpm-devid": {"plugin_data": {}}}), False),
    Row("na-tpm_devid", "server", with_tpm_devid_server(), True, key=True),
    Row("na-tpm_devid-without-endorsement_ca_path", "server",
        with_tpm_devid_server(drop=["endorsement_ca_path"]), False, key=True),
    Row("na-tpm_devid-ca-file-missing", "server", with_tpm_devid_server(extra={"devid_ca_path": "/nonexistent.pem"}),
        False),
    Row("na-tpm_devid-ca-file-without-certificate", "server",
        both(with_tpm_devid_server(), with_file("plugins.NodeAttestor.tpm_devid.plugin_data.devid_ca_path", "x\n")),
        False),
    Row("na-x509pop", "server", lambda c, x: add_plugin("NodeAttestor", "x509pop", {"plugin_data": {
        "ca_bundle_path": str(x.devid.ca_path)}})(c, x), True),
    Row("no-node-attestor", "server", plugins("NodeAttestor", {}), True, key=True,
        note="SPIRE allows it; join tokens still work without the plugin (spire_config: a warning)"),
    Row("ds-misspelt", "server", plugins("DataStore", {"sqll": {"plugin_data": {}}}), False),
    Row("ds-missing", "server", deleter("plugins.DataStore"), False),
    Row("ds-disabled", "server", setter("plugins.DataStore.sql.enabled", False), True,
        note="the DataStore is loaded before the catalog: enabled=false is not looked at"),
    Row("ds-without-connection_string", "server",
        deleter("plugins.DataStore.sql.plugin_data.connection_string"), False, key=True,
        says=("connection_string must be set", "lacks connection_string")),
    Row("ds-database_type-sqlite", "server", setter("plugins.DataStore.sql.plugin_data.database_type", "sqlite"),
        False),
    Row("ua-misspelt", "server", plugins("UpstreamAuthority", {"dsik": {"plugin_data": {}}}), False),
    Row("cc-uniqueid", "server", plugins("CredentialComposer", {"uniqueid": {"plugin_data": {}}}), True),
    Row("notifier-misspelt", "server", plugins("Notifier", {"k8s_bundle": {"plugin_data": {}}}), False),
    Row("bp-misspelt", "server", plugins("BundlePublisher", {"aws_s4": {"plugin_data": {}}}), False),
    Row("plugin-type-misspelt", "server", plugins("Keymanager", {"memory": {"plugin_data": {}}}), False),
    # external plugins
    Row("checksum-62-hex", "server", with_external("NodeAttestor", "tpm", checksum="ab" * 31), False, key=True,
        says=("expected checksum of length 64; got 62",) * 2),
    Row("checksum-63-chars", "server", with_external("NodeAttestor", "tpm", checksum="a" * 63), False),
    Row("checksum-not-hex", "server", with_external("NodeAttestor", "tpm", checksum="zz" * 32), False, key=True,
        says=("checksum is not a valid hex string",) * 2),
    Row("checksum-mismatch", "server", with_external("NodeAttestor", "tpm", checksum="00" * 32), False,
        says=("checksums did not match", "not the plugin_checksum")),
    Row("plugin_cmd-missing", "server", with_external("NodeAttestor", "tpm", cmd="/nonexistent/tpm_attestor_server"),
        False, key=True),
    Row("join_token-external", "server", setter("plugins.NodeAttestor.join_token.plugin_cmd", "/bin/true"), False,
        key=True, says=("the built-in join_token node attestor cannot be overridden by an external plugin",) * 2),
    Row("plugin_data-and-plugin_data_file", "server", setter("plugins.KeyManager.memory.plugin_data_file", "/dev/null"),
        False, key=True, says=("only one of [plugin_data, plugin_data_file] can be used",) * 2),
    Row("plugin_data_file", "server", sql_from_file, True),
    Row("plugin_data_file-missing", "server", both(sql_from_file, setter("plugins.DataStore.sql.plugin_data_file",
                                                                         "/nonexistent/sql.hcl")), False),
    Row("memory-with-plugin_data", "server", setter("plugins.KeyManager.memory.plugin_data", {"x": 1}), False,
        key=True, note="a built-in without configuration interface refuses any data",
        says=("no supported configuration interface found",) * 2),
    Row("memory-with-plugin_data_file", "server", lambda c, x: c["plugins"]["KeyManager"].__setitem__(
        "memory", {"plugin_data_file": x.file("memory.hcl", "")}), False),
    Row("uniqueid-with-plugin_data", "server",
        plugins("CredentialComposer", {"uniqueid": {"plugin_data": {"x": "y"}}}), False),
    Row("enabled-as-string", "server", setter("plugins.KeyManager.memory.enabled", "true"), False),
    Row("unknown-plugin-key", "server", setter("plugins.KeyManager.memory.plugin_dat", {}), True,
        policy="allow_unknown_plugin_keys", key=True),
    # sections and keys
    Row("unknown-top-level-key", "server", setter("plugins_extra", {}), False),
    Row("unknown-server-key", "server", setter("server.trustdomain", "example.org"), False, key=True,
        says=("unknown configuration detected", "trustdomain (did you mean trust_domain?)")),
    Row("bind_port-string", "server", port_as(str), True, key=True),
    Row("bind_port-hex-string", "server", port_as(hex), True),
    Row("bind_port-not-a-number", "server", port_as(lambda p: "%da" % p), False),
    Row("bind_port-out-of-range", "server", setter("server.bind_port", 70000), False),
    Row("bind_address-missing", "server", deleter("server.bind_address"), True,
        note="SPIRE's defaults: bind_address 0.0.0.0, bind_port 8081 (not run here: 8081 may be taken)"),
    Row("trust_domain-as-spiffe-id", "server", setter("server.trust_domain", "spiffe://example.org"), True,
        note="go-spiffe's TrustDomainFromString reads a SPIFFE ID"),
    Row("trust_domain-uppercase", "server", setter("server.trust_domain", "Example.org"), False),
    Row("trust_domain-missing", "server", deleter("server.trust_domain"), False),
    Row("data_dir-missing", "server", deleter("server.data_dir"), False),
    Row("number-into-string-key", "server", setter("server.jwt_issuer", 12345), True),
    Row("bool-as-string", "server", setter("server.audit_log_enabled", "true"), False),
    Row("log_level-warning", "server", setter("server.log_level", "warning"), True),
    Row("log_level-verbose", "server", setter("server.log_level", "verbose"), False, key=True),
    Row("log_format-JSON", "server", setter("server.log_format", "JSON"), True),
    Row("log_format-xml", "server", setter("server.log_format", "xml"), False),
    Row("ca_ttl-48h", "server", setter("server.ca_ttl", "48h"), True),
    Row("ca_ttl-not-a-duration", "server", setter("server.ca_ttl", "48 hours"), False),
    Row("ca_key_type-ec-p384", "server", setter("server.ca_key_type", "EC-P384"), True),
    Row("ca_key_type-ed25519", "server", setter("server.ca_key_type", "ed25519"), False),
    Row("admin_ids-not-spiffe", "server", setter("server.admin_ids", ["example.org/admin"]), False),
    Row("socket_path-too-long", "server", long_socket, False, timeout=10,
        note="SPIRE neither starts nor exits: it stops its APIs and hangs"),
    Row("experimental-both-timeouts", "server", setter("server.experimental", {
        "event_timeout": "1m", "sql_transaction_timeout": "1m"}), False),
    Row("health_checks", "server", setter("health_checks", {
        "listener_enabled": False, "bind_address": "127.0.0.1", "bind_port": 18080}), True),
    Row("health_checks-unknown-key", "server", setter("health_checks", {"listener_enabled": False, "port": "1"}),
        False),
    Row("disable_jwt_svids", "server", setter("server.disable_jwt_svids", False), {DEFAULT: False, NEWEST: True},
        note="a 1.15 key: unknown configuration for 1.13"),
]

AGENT_ROWS = [
    Row("base", "agent", None, True, key=True),
    Row("tpm_devid", "agent", None, True, base="tpm_devid", key=True),
    Row("tpm_devid-without-devid_pub_path", "agent", devid_data(drop=["devid_pub_path"]), False, base="tpm_devid",
        key=True),
    Row("tpm_devid-cert-missing", "agent", devid_data(extra={"devid_cert_path": "/nonexistent/devid.crt"}), False,
        base="tpm_devid"),
    Row("tpm_devid-autodetect", "agent", devid_data(drop=["tpm_device_path"]), False, base="tpm_devid",
        note="this machine has no /dev/tpmrm* or /dev/tpm*: SPIRE's autodetection fails",
        says=("tpm autodetection failed: not found", "tpm autodetection failed")),
    Row("two-node-attestors", "agent", lambda c, x: add_plugin("NodeAttestor", "tpm_devid", {
        "plugin_data": x.devid.agent_plugin_data()})(c, x), False, key=True,
        says=('constraint not satisfied: expected exactly 1 but got 2',) * 2),
    Row("second-node-attestor-disabled", "agent",
        add_plugin("NodeAttestor", "x509pop", {"enabled": False, "plugin_data": {}}), True),
    Row("zero-node-attestors", "agent", plugins("NodeAttestor", {}), False, key=True,
        says=('constraint not satisfied: expected exactly 1 but got 0',) * 2),
    Row("na-tpm-without-plugin_cmd", "agent", plugins("NodeAttestor", {"tpm": {"plugin_data": {}}}), False,
        key=True, says=('no built-in plugin "tpm" for type "NodeAttestor"', TPM_PLUGIN_FIX)),
    Row("join_token-external", "agent", setter("plugins.NodeAttestor.join_token.plugin_cmd", "/bin/true"), False),
    Row("join_token-with-plugin_data", "agent", setter("plugins.NodeAttestor.join_token.plugin_data", {"x": 1}),
        False, note="the agent's join_token takes no configuration"),
    Row("wa-misspelt", "agent", plugins("WorkloadAttestor", {"unixx": {"plugin_data": {}}}), False),
    Row("wa-none", "agent", plugins("WorkloadAttestor", {}), False),
    Row("wa-slurm", "agent", plugins("WorkloadAttestor", {"slurm": {"plugin_data": {}}}),
        {DEFAULT: False, NEWEST: True}, note="slurm is a built-in from 1.14/1.15 on"),
    Row("km-disk", "agent", lambda c, x: plugins("KeyManager", {"disk": {"plugin_data": {
        "directory": c["agent"]["data_dir"]}}})(c, x), True),
    Row("km-disk-without-directory", "agent", plugins("KeyManager", {"disk": {"plugin_data": {}}}), False),
    Row("km-server-only-name", "agent", plugins("KeyManager", {"aws_kms": {"plugin_data": {}}}), False),
    Row("server_port-string", "agent", port_as(str), True, key=True),
    Row("server_port-missing", "agent", deleter("agent.server_port"), False),
    Row("server_port-zero", "agent", setter("agent.server_port", "0"), False),
    Row("server_address-missing", "agent", deleter("agent.server_address"), False),
    Row("insecure_bootstrap", "agent", insecure, True, policy="allow_insecure_bootstrap", key=True),
    Row("insecure_bootstrap-with-bundle", "agent", setter("agent.insecure_bootstrap", True), False),
    Row("insecure_bootstrap-as-string", "agent", both(insecure, setter("agent.insecure_bootstrap", "true")), False),
    Row("no-trust-bundle-source", "agent", deleter("agent.trust_bundle_path"), False, key=True),
    Row("trust_bundle_url-http", "agent", both(deleter("agent.trust_bundle_path"),
                                               setter("agent.trust_bundle_url", "http://127.0.0.1:1/b")), False),
    Row("trust_bundle_url-and-path", "agent", setter("agent.trust_bundle_url", "https://127.0.0.1:1/b"), False),
    Row("trust_bundle_format-der", "agent", setter("agent.trust_bundle_format", "der"), False),
    Row("trust_bundle_unix_socket-without-url", "agent", setter("agent.trust_bundle_unix_socket", "/tmp/x.sock"),
        False),
    Row("join_token-and-join_token_file", "agent", setter("agent.join_token_file", "/dev/null"), False),
    Row("join_token_file", "agent", join_token_to_file, True, key=True),
    Row("join_token_file-missing", "agent", both(join_token_to_file,
                                                 setter("agent.join_token_file", "/nonexistent/token")), False),
    Row("data_dir-unset", "agent", deleter("agent.data_dir"), True,
        note="SPIRE's default is the working directory (spire_config: a warning)"),
    Row("unknown-agent-key", "agent", setter("agent.trustdomain", "example.org"), False),
    Row("retry_bootstrap", "agent", setter("agent.retry_bootstrap", True), {DEFAULT: True, NEWEST: False},
        note="removed in 1.14"),
    Row("log_selectors", "agent", setter("agent.log_selectors", ["x"]), {DEFAULT: False, NEWEST: True}),
    Row("workload-key-ec-p384", "agent", setter("agent.workload_x509_svid_key_type", "ec-p384"),
        {DEFAULT: False, NEWEST: True}),
    Row("rebootstrap_mode-sometimes", "agent", setter("agent.rebootstrap_mode", "sometimes"), False),
    Row("rebootstrap_mode-auto", "agent", setter("agent.rebootstrap_mode", "auto"), True),
    Row("availability_target-1h", "agent", setter("agent.availability_target", "1h"), False),
    Row("availability_target-24h", "agent", setter("agent.availability_target", "24h"), True),
    Row("authorized_delegates-other-td", "agent", setter("agent.authorized_delegates", ["spiffe://other.org/x"]),
        False),
    Row("admin_socket-beside-workload-socket", "agent", admin_beside_workload_socket, False),
    Row("admin_socket-elsewhere", "agent", admin_elsewhere, True),
    Row("x509_svid_cache_max_size-negative", "agent", setter("agent.x509_svid_cache_max_size", -1), False),
    Row("unknown-plugin-key", "agent", setter("plugins.WorkloadAttestor.unix.plugin_checksun", "00"), True,
        policy="allow_unknown_plugin_keys"),
]

ROWS = SERVER_ROWS + AGENT_ROWS
CASES = ([pytest.param(DEFAULT, r, id="%s-%s-%s" % (DEFAULT, r.kind, r.id)) for r in ROWS]
         + [pytest.param(NEWEST, r, id="%s-%s-%s" % (NEWEST, r.kind, r.id)) for r in ROWS if r.key])

RECORD = []


@pytest.fixture(scope="module")
def world(tmp_path_factory, swtpm):
    w = R.World(tmp_path_factory.mktemp("config-table"), devid=R.DevID(swtpm, tmp_path_factory.mktemp("devid")))
    yield w
    w.cleanup()
    out = os.environ.get("SPIRE_CONFIG_TABLE_REPORT")
    if out:
        with open(out, "w") as f:
            json.dump(RECORD, f, indent=1)


@pytest.mark.parametrize("version,row", CASES)
def test_verdict_equals_spire(world, version, row):
    workdir = world.workdir(row.id)
    if row.kind == "server":
        cfg = world.server_config(workdir)
    else:
        cfg = world.agent_config(version, workdir, node_attestor=row.base)
    ctx = Ctx(world, workdir, version)
    if row.mutate is not None:
        row.mutate(cfg, ctx)

    ours, why, warnings = R.our_verdict(row.kind, cfg, version=version)
    valid, valid_out = R.validate_verdict(row.kind, cfg, version, workdir)
    run = R.run_verdict(row.kind, cfg, version, workdir, timeout=row.timeout)
    RECORD.append({"version": version, "kind": row.kind, "row": row.id, "spire_run": "hung" if run.hung else run.accepted,
                   "spire_validate": valid, "validate_output": valid_out[-400:], "ours": ours, "why": why,
                   "warnings": warnings, "seconds": round(run.seconds, 2),
                   "spire_error": [l for l in run.log.splitlines() if "level=error" in l][-1:]})

    # What SPIRE itself does is part of the row: a change in SPIRE fails here.
    assert run.accepted is row.spire_for(version), "SPIRE %s run: %r" % (version, run)
    if row.kind == "agent" and run.accepted:
        # healthy means attested: the agent stored an SVID with the ID of the expected attestation type
        section = cfg["agent"]
        method = ("join_token" if section.get("join_token") or section.get("join_token_file")
                  else R.C.node_attestors(cfg)[0])
        svid_id = R.agent_svid_id(cfg, workdir)
        assert svid_id and svid_id.startswith("spiffe://%s/spire/agent/%s/" % (R.TD, method)), svid_id
    # validate never refuses what run accepts (it may accept what run refuses: plugins, files).
    assert valid or not run.accepted, valid_out
    if row.policy:
        assert not ours, "spire_config should refuse by policy (%s)" % row.policy
        assert row.policy.replace("allow_", "") in why.replace(" ", "_") or row.policy in why, why
        ours, why, warnings = R.our_verdict(row.kind, cfg, version=version, **{row.policy: True})
    assert ours is run.accepted, "ours: %s %s\nSPIRE %s run: %r" % (ours, why, version, run)
    if row.says:
        assert row.says[0] in run.log.replace('\\"', '"'), run
        assert row.says[1] in why, why
    # The version-specific rows need the version; without it spire_config accepts what either version accepts.
    if isinstance(row.spire, dict) and not row.policy:
        assert R.our_verdict(row.kind, cfg)[0] is True


def test_tpm_without_plugin_cmd_is_stopped_with_the_explanation(world):
    """The seed error: SPIRE's message comes late (at run, not validate, for 1.13); ours comes first, with the fix."""
    cfg = world.server_config()
    cfg["plugins"]["NodeAttestor"] = {"tpm": {"plugin_data": {"hash_path": "/tmp"}}}
    ours, why, _ = R.our_verdict("server", cfg, version=DEFAULT)
    assert not ours and 'no built-in plugin "tpm" for type "NodeAttestor"' in why and TPM_PLUGIN_FIX in why
    valid, out = R.validate_verdict("server", cfg, DEFAULT, world.workdir())
    assert valid, "SPIRE %s validate does not look at plugins: %s" % (DEFAULT, out)
    run = R.run_verdict("server", cfg, DEFAULT, world.workdir())
    assert not run.accepted
    assert 'failed to load plugin \\"tpm\\": no built-in plugin \\"tpm\\" for type \\"NodeAttestor\\"' in run.log
    # from 1.14 on, the server's validate loads plugins and says it too
    valid, out = R.validate_verdict("server", cfg, NEWEST, world.workdir())
    assert not valid and out == ('Could not validate configuration file: failed to load plugin "tpm": no built-in '
                                 'plugin "tpm" for type "NodeAttestor"'), out


def test_version_is_read_from_the_binary(world, tmp_path):
    for version in (DEFAULT, NEWEST):
        assert R.C.binary_version(R.binary("server", version)) == version
        assert R.C.binary_version(R.binary("agent", version)) == version
    assert R.C.binary_version(str(tmp_path / "absent")) is None
    exe = tmp_path / "not-spire"
    exe.write_text("#!/bin/sh\necho hello\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    assert R.C.binary_version(str(exe)) is None


@pytest.mark.parametrize("version", [DEFAULT, NEWEST])
def test_bind_port_zero_means_spire_default(world, version):
    """bind_port 0 is "unset" to SPIRE (its defaults are merged into zero values): it listens on 8081. Judged with
    validate (the same config loading as run) so that no test binds 8081."""
    cfg = world.server_config()
    cfg["server"]["bind_port"] = 0
    ours, _why, warnings = R.our_verdict("server", cfg, version=version)
    assert ours and any("default port 8081" in w for w in warnings)
    valid, out = R.validate_verdict("server", cfg, version, world.workdir())
    assert valid, out
