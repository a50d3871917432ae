# -*- coding: utf-8 -*-
"""Every configuration the SPIRE roles render starts the real daemon.

The roles' own task (``tasks_from: config.yml``: the role's defaults and vars/main.yml build the data, spire_config
renders it, checks it and runs ``<install_root>/versions/<version>/bin/spire-<kind> validate``) writes the file,
with the installation root pointing at the real binaries built by lab/spire_build.py. The written file is then
started with ``spire-<kind> run`` (the role's service does the same, with ``-joinToken`` for a join_token agent):
the server must become healthy, the agents must attest to it (join_token, and tpm_devid with a DevID made in swtpm).

The external ``tpm`` plugin shape (spiffe/spire-tpm-plugin, a later issue) is rendered with its binary absent:
spire_config refuses it for the same reason SPIRE does, and what SPIRE says is asserted.
"""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "config"))
import realspire as R  # noqa: E402
from support import spire as spire_support  # noqa: E402

VERSIONS = [spire_support.DEFAULT_VERSION, spire_support.NEWEST_VERSION]
SERVER_TASK = "Render, validate and write the server configuration"
AGENT_TASK = "Render, validate and write the agent configuration"


def role_task(result, name):
    """The result of a role task (its name carries the role prefix) on localhost."""
    found = None
    for play in result.data.get("plays", []):
        for task in play.get("tasks", []):
            if task["task"]["name"].endswith(name) and "localhost" in task["hosts"]:
                found = task["hosts"]["localhost"]
    if found is None:
        raise KeyError("no task %r in:\n%s" % (name, result.stdout[-3000:]))
    return found


def install_root(base, version):
    """<root>/versions/<version>/bin/spire-{server,agent} -> the real binaries (the roles' install layout)."""
    root = Path(base) / "opt-spire"
    bindir = root / "versions" / version / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for prog in ("spire-server", "spire-agent"):
        link = bindir / prog
        if not link.exists():
            link.symlink_to(spire_support.binaries(version) / prog)
    return root


def render(run_playbook, role, variables, check=False):
    task = {"name": "role config", "ansible.builtin.include_role": {"name": "trustroot.spire_tpm." + role,
                                                                  "tasks_from": "config.yml"},
            "vars": variables}
    return run_playbook(tasks=[task], check=check)


@pytest.fixture(scope="module")
def devid(swtpm, tmp_path_factory):
    return R.DevID(swtpm, tmp_path_factory.mktemp("role-devid"))


@pytest.fixture
def sockdir():
    """Short socket directories under /tmp (unix socket paths are limited to 107 bytes), removed afterwards."""
    import shutil
    import tempfile
    made = []

    def make():
        made.append(tempfile.mkdtemp(prefix="sprole-", dir="/tmp"))
        return made[-1]
    yield make
    for d in made:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def group():
    import grp
    return grp.getgrgid(os.getgid()).gr_name


def server_vars(base, version, group, sockdir, node_attestors, devid=None):
    base = Path(base)
    sock = Path(sockdir()) / "api.sock"
    v = {
        "spire_version": version,
        "spire_server_install_root": str(install_root(base, version)),
        "spire_server_config_dir": str(base / "etc-server"),
        "spire_server_data_dir": str(base / "server-data"),
        "spire_server_socket_path": str(sock),
        "spire_server_bind_address": "127.0.0.1",
        "spire_server_bind_port": spire_support.free_port(),
        "spire_server_group": group,
        "spire_server_node_attestors": node_attestors,
        # the handler the config task notifies: a no-op here (no service is installed)
        "spire_server__use_systemd": False,
        "spire_server_supervisor_path": "/bin/true",
    }
    for d in ("etc-server", "server-data"):
        (base / d).mkdir(exist_ok=True)
    if devid is not None:
        (base / "etc-server" / "tpm_devid").mkdir(exist_ok=True)
        ca = base / "etc-server" / "tpm_devid" / "devid-ca.pem"
        ek = base / "etc-server" / "tpm_devid" / "endorsement-ca.pem"
        ca.write_bytes(devid.ca_path.read_bytes())
        ek.write_bytes(devid.ek_ca_path.read_bytes())
    return v


def agent_vars(base, version, group, sockdir, server, node_attestor, devid=None):
    base = Path(base)
    sock = Path(sockdir()) / "api.sock"
    (base / "etc-agent").mkdir(exist_ok=True)
    (base / "agent-data").mkdir(exist_ok=True)
    bundle = base / "etc-agent" / "bootstrap-bundle.crt"
    bundle.write_text(server.bundle_pem())
    v = {
        "spire_version": version,
        "spire_agent_install_root": str(install_root(base, version)),
        "spire_agent_config_dir": str(base / "etc-agent"),
        "spire_agent_data_dir": str(base / "agent-data"),
        "spire_agent_socket_path": str(sock),
        "spire_agent_server_address": "127.0.0.1",
        "spire_agent_server_port": server.port,
        "spire_agent_group": group,
        "spire_agent_node_attestor": node_attestor,
        "spire_agent_trust_domain": R.TD,
        "spire_agent__use_systemd": False,
        "spire_agent_supervisor_path": "/bin/true",
    }
    if devid is not None:
        v.update({"spire_agent_tpm_devid_cert_path": str(devid.cert_path),
                  "spire_agent_tpm_devid_pub_path": str(devid.pub_path),
                  "spire_agent_tpm_devid_priv_path": str(devid.priv_path),
                  "spire_agent_tpm_device_path": devid.tpm_device_path})
    return v


class FileServer(object):
    """A spire-server started from a role-rendered file (stopped at the end of the test)."""

    def __init__(self, conf_path, version, socket_path, port, workdir):
        self.version = version
        self.socket_path = socket_path
        self.port = port
        self.run = R.Run("server", conf_path, version, socket_path, workdir)

    def bundle_pem(self):
        import subprocess
        out = subprocess.run([R.binary("server", self.version), "bundle", "show", "-socketPath",
                              str(self.socket_path)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def token(self):
        import json
        import subprocess
        out = subprocess.run([R.binary("server", self.version), "token", "generate", "-socketPath",
                              str(self.socket_path), "-output", "json"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)["value"]


@pytest.fixture
def started():
    runs = []
    yield runs
    for run in runs:
        run.stop()


@pytest.mark.parametrize("version", VERSIONS)
def test_role_rendered_server_and_agents_start_and_attest(version, tmp_path, run_playbook, devid, group, sockdir,
                                                        started):
    # server: join_token + tpm_devid, sqlite, disk KeyManager (the role's defaults otherwise)
    sv = server_vars(tmp_path, version, group, sockdir, ["join_token", "tpm_devid"], devid=devid)
    r = render(run_playbook, "spire_server", sv)
    assert r.rc == 0, r.stdout[-3000:]
    res = role_task(r, SERVER_TASK)
    assert res["changed"] is True and res["validated"] is True and res["spire_version"] == version
    assert res["node_attestors"] == ["join_token", "tpm_devid"]
    conf = Path(sv["spire_server_config_dir"]) / "server.conf"
    text = conf.read_text()
    assert 'DataStore "sql"' in text and 'database_type = "sqlite3"' in text and 'KeyManager "disk"' in text
    srv = FileServer(conf, version, sv["spire_server_socket_path"], sv["spire_server_bind_port"],
                     tmp_path / "server-run")
    started.append(srv.run)
    assert srv.run.wait(60) is True, srv.run.log[-3000:]

    # agent, join_token: the role hands the token on the command line (-joinToken), not in the file
    base = tmp_path / "agent-jt"
    base.mkdir()
    av = agent_vars(base, version, group, sockdir, srv, "join_token")
    r = render(run_playbook, "spire_agent", av)
    assert r.rc == 0, r.stdout[-3000:]
    res = role_task(r, AGENT_TASK)
    assert res["validated"] is True and res["node_attestors"] == ["join_token"]
    conf = Path(av["spire_agent_config_dir"]) / "agent.conf"
    assert "join_token =" not in conf.read_text()
    token = srv.token()
    out = R.run_text("agent", conf.read_text(), version, av["spire_agent_socket_path"], base / "run",
                     args=["-joinToken", token])
    assert out.accepted, out
    cfg = {"agent": {"data_dir": av["spire_agent_data_dir"]}}
    assert R.agent_svid_id(cfg, base) == "spiffe://%s/spire/agent/join_token/%s" % (R.TD, token)

    # agent, tpm_devid with the DevID in swtpm (tpm_device_path = the TPM's socket)
    base = tmp_path / "agent-devid"
    base.mkdir()
    av = agent_vars(base, version, group, sockdir, srv, "tpm_devid", devid=devid)
    r = render(run_playbook, "spire_agent", av)
    assert r.rc == 0, r.stdout[-3000:]
    res = role_task(r, AGENT_TASK)
    assert res["validated"] is True and res["node_attestors"] == ["tpm_devid"]
    conf = Path(av["spire_agent_config_dir"]) / "agent.conf"
    out = R.run_text("agent", conf.read_text(), version, av["spire_agent_socket_path"], base / "run")
    assert out.accepted, out
    cfg = {"agent": {"data_dir": av["spire_agent_data_dir"]}}
    assert R.agent_svid_id(cfg, base).startswith("spiffe://%s/spire/agent/tpm_devid/" % R.TD)


@pytest.mark.parametrize("version", VERSIONS)
def test_role_rendered_join_token_only_server_starts(version, tmp_path, run_playbook, group, sockdir):
    """The roles' defaults: join_token, sqlite, disk KeyManager."""
    sv = server_vars(tmp_path, version, group, sockdir, ["join_token"])
    r = render(run_playbook, "spire_server", sv)
    assert r.rc == 0, r.stdout[-3000:]
    conf = Path(sv["spire_server_config_dir"]) / "server.conf"
    out = R.run_text("server", conf.read_text(), version, sv["spire_server_socket_path"], tmp_path / "run")
    assert out.accepted, out


@pytest.mark.parametrize("version", VERSIONS)
def test_external_tpm_plugin_shape_with_absent_plugin(version, tmp_path, run_playbook, group, sockdir):
    """The role's tpm shape (plugin_cmd, plugin_checksum, ca_path/hash_path) with no plugin installed yet: the
    rendering is what SPIRE expects of an external plugin, and SPIRE stops at the missing binary — as spire_config
    does first."""
    checksum = "ab" * 32
    sv = server_vars(tmp_path, version, group, sockdir, ["tpm"])
    sv.update({"spire_server_tpm_plugin_path": str(tmp_path / "plugins" / "tpm_attestor_server"),
               "spire_server__tpm_plugin_sha256": checksum})
    r = render(run_playbook, "spire_server", sv, check=True)
    assert r.rc == 0, r.stdout[-3000:]
    res = role_task(r, SERVER_TASK)
    assert any("check mode" in w and "tpm_attestor_server does not exist" in w for w in res["warnings"]), res
    text = res["rendered"]
    assert 'NodeAttestor "tpm" {' in text and 'plugin_checksum = "%s"' % checksum in text
    assert 'ca_path = "%s"' % (Path(sv["spire_server_config_dir"]) / "tpm" / "cas") in text
    r = render(run_playbook, "spire_server", sv)
    res = role_task(r, SERVER_TASK)
    assert r.rc != 0 and "tpm_attestor_server does not exist" in res["msg"]
    assert not (Path(sv["spire_server_config_dir"]) / "server.conf").exists()
    out = R.run_text("server", text, version, sv["spire_server_socket_path"], tmp_path / "run")
    assert not out.accepted
    assert ("failed to launch plugin: error verifying checksum: open %s: no such file or directory"
            % sv["spire_server_tpm_plugin_path"]) in out.log.replace('\\"', '"'), out
    # the agent's shape, rendered the same way, meets the same end
    av = {"spire_version": version, "spire_agent_install_root": sv["spire_server_install_root"],
          "spire_agent_config_dir": str(tmp_path / "etc-agent"), "spire_agent_data_dir": str(tmp_path / "adata"),
          "spire_agent_socket_path": str(Path(sockdir()) / "api.sock"),
          "spire_agent_server_address": "127.0.0.1", "spire_agent_server_port": 1, "spire_agent_group": group,
          "spire_agent_node_attestor": "tpm", "spire_agent_trust_bundle_path": "/dev/null",
          "spire_agent_tpm_plugin_path": str(tmp_path / "plugins" / "tpm_attestor_agent"),
          "spire_agent__tpm_plugin_sha256": checksum,
          "spire_agent__use_systemd": False, "spire_agent_supervisor_path": "/bin/true"}
    r = render(run_playbook, "spire_agent", av, check=True)
    assert r.rc == 0, r.stdout[-3000:]
    text = role_task(r, AGENT_TASK)["rendered"]
    assert 'NodeAttestor "tpm" {' in text
    out = R.run_text("agent", text, version, av["spire_agent_socket_path"], tmp_path / "agent-run")
    assert not out.accepted
    assert "failed to launch plugin: error verifying checksum: open %s: no such file or directory" % \
        av["spire_agent_tpm_plugin_path"] in out.log.replace('\\"', '"'), out
