"""DevID renewal on real SPIRE: what the agent does, what stays behind on the server, and what cleans it up.

A tpm_devid agent ID is the SHA-1 of the DevID certificate, so a renewed certificate means a new agent ID. Workloads
hang off a node alias (parent spiffe://<td>/spire/server, selector tpm_devid:subject:cn:<host>), never off the
agent ID. The DevID is issued by the REAL step-ca and renewed by the on-host renewal job the devid_provision role
installs (rendered by the role's own renewal_job.yml, run as cron runs it). A workload (unix:uid:<our uid>) is
fetched from the real agent's Workload API all along; every gap is recorded.

What real SPIRE does (1.13.3 and 1.15.3, read in pkg/agent/plugin/nodeattestor/tpmdevid/devid.go and proven here):
the agent reads the DevID files only when it starts (plugin Configure). Its re-attestations at SVID rotation present
the certificate it started with, so after a renewal the agent keeps its OLD agent ID until it is restarted; after a
restart it still uses its cached SVID (old ID) until its next rotation, then re-attests with the new certificate
under the new ID — and the server keeps the old agent record. Evicting the old ID alone, without a restart, makes the
agent re-attest with the old certificate: the old ID comes back.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from attest_testlib import (FQCN, SPIRE_VERSIONS, WorkloadPoller, after_next_reattestation, agent_restart_script,
                            assert_tpm_clean, csr_task, ek_bundle, log_lines, stepca_cert_task, stop_pid,
                            tpm_devid_agent_data, tpm_devid_server_data, verify_task, wait_for)

from support.swtpm import SwTPM

pytestmark = pytest.mark.stepca
COLLECTIONS = Path(__file__).resolve().parents[3] / ".build" / "collections"
RENEW_MODULE = "ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca.renew"

TD = "example.org"
AGENT_TTL = "30s"          # short agent SVIDs: the agent rotates (re-attests) about every 15 s
CRON_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "SHELL": "/bin/sh"}
# SPIRE itself drops a workload's entry for about one agent sync (5 s) when the agent's ID changes (its first sync
# under the new ID comes before the server's entry cache knows the new agent); measured 4-6 s on both versions.
MAX_GAP_S = 12.0


def agent_id_of(cert_path):
    leaf = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
    return "spiffe://%s/spire/agent/tpm_devid/%s" % (TD, hashlib.sha1(leaf.public_bytes(
        serialization.Encoding.DER)).hexdigest())


def reattested_ids(agent):
    return [ln.split('spiffe_id="')[1].split('"')[0] for ln in log_lines(agent, r'msg="Successfully reattested node"')]


class World:
    """The host (swtpm + DevID through the real step-ca), the real server with alias + workload entries, the agent."""

    def __init__(self, version, swtpm, step_ca, run_playbook, spire_server_factory, spire_agent_factory, d, cn):
        self.d, self.cn, self.tpm, self.ca, self.run_playbook = d, cn, swtpm, step_ca, run_playbook
        (d / "devid-ca.pem").write_text(step_ca.root_pem)
        self.ek_ca = ek_bundle(swtpm, d / "endorsement-ca.pem")
        r = run_playbook(tasks=[csr_task("csr", swtpm, d, "rsa", cn=cn), stepca_cert_task("certificate", step_ca, d),
                                verify_task("verify", swtpm, d, d / "devid-ca.pem", self.ek_ca)], expect_rc=0)
        self.first_id = r.task("verify")["agent_id"]
        self.selectors = r.task("verify")["selectors"]
        self.server = spire_server_factory(version=version,
                                           node_attestors=tpm_devid_server_data(d / "devid-ca.pem", self.ek_ca),
                                           server_extra='  agent_ttl = "%s"\n' % AGENT_TTL)
        self.alias = "spiffe://%s/node/%s" % (TD, cn)
        self.workload = "spiffe://%s/workload/%s" % (TD, cn)
        results = self.server.create_entries([
            {"spiffe_id": self.alias, "parent_id": "spiffe://%s/spire/server" % TD,
             "selectors": [{"type": "tpm_devid", "value": "subject:cn:" + cn}]},
            {"spiffe_id": self.workload, "parent_id": self.alias,
             "selectors": [{"type": "unix", "value": "uid:%d" % os.getuid()}]}])
        assert [r["status"]["code"] for r in results] == [0, 0], results
        self.agent = spire_agent_factory(self.server, ("tpm_devid", tpm_devid_agent_data(swtpm, d)))

    def host_ids(self):
        """The agent IDs the server lists for this host's subject CN."""
        return sorted(self.server.agent_ids("-selector", "tpm_devid:subject:cn:" + self.cn))

    def install_renewal_job(self, restart_command):
        """The devid_provision role's own renewal job (cron flavour), rendered into this test's directories."""
        v = {"devid_provision_dir": str(self.d), "devid_provision_cert_path": str(self.d / "devid.crt"),
             "devid_provision_pub_path": str(self.d / "devid.pub"),
             "devid_provision_priv_path": str(self.d / "devid.priv"), "devid_provision_tcti": self.tpm.tcti,
             "devid_provision_stepca_url": self.ca.url,
             "devid_provision_stepca_root_fingerprint": self.ca.root_fingerprint,
             "devid_provision_renewal_scheduler": "cron", "devid_provision_renewal_cron_dir": str(self.d / "cron.d"),
             "devid_provision_renewal_lib_dir": str(self.d / "lib"), "devid_provision_renewal_name": "devid-renew",
             "devid_provision_agent_restart_command": restart_command}
        self.run_playbook(tasks=[{"name": "job", "ansible.builtin.include_role": {
            "name": FQCN + "devid_provision", "tasks_from": "renewal_job.yml"}, "vars": v}], expect_rc=0)
        cron = (self.d / "cron.d" / "devid-renew").read_text()
        assert str(self.d / "lib" / "devid-renew") in cron
        return self.d / "lib" / "devid-renew"

    def run_job(self, job, *args):
        """Run the job as cron does: /bin/sh, cron's PATH, nothing of our environment."""
        return subprocess.run(["/bin/sh", "-c", " ".join([str(job)] + list(args))], capture_output=True, text=True,
                              env=CRON_ENV, timeout=180)

    def retire_stale_agents(self, restart_command, per_host=False, **extra):
        """The devid_provision role's stale_agents.yml, after tpm_devid_verify (its input), as the role runs them.

        Alone in its play, the host asks the server once for the play (the run_once listing, filtered by its subject
        selector). ``per_host``: a second host of the play ("peer", another DevID) asks another server, so each host
        asks its own (the server filters by the subject selector)."""
        v = {"devid_provision_spire_server_host": "localhost",
             "devid_provision_spire_server_bin": str(self.server.bin),
             "devid_provision_spire_server_socket_path": str(self.server.socket_path),
             "devid_provision_agent_bin": str(self.agent.bin),
             "devid_provision_agent_socket_path": str(self.agent.socket_path),
             "devid_provision_agent_restart_command": restart_command,
             "devid_provision_agent_health_delay": 1}
        v.update(extra)
        verify = dict(verify_task("verify", self.tpm, self.d, self.d / "devid-ca.pem", self.ek_ca),
                      register="devid_provision_verified")
        retire = {"name": "retire", "ansible.builtin.include_role": {
            "name": FQCN + "devid_provision", "tasks_from": "stale_agents.yml"}, "vars": v}
        if not per_host:
            r = self.run_playbook(tasks=[verify, retire], expect_rc=0)
            assert not role_task(r, "List the tpm_devid agents on the SPIRE server (once for the play)").get("skipped")
            assert role_task(r, "List the host's tpm_devid agents on the SPIRE server").get("skipped")
            return r
        inventory = self.d / "inventory-peer.ini"
        inventory.write_text("localhost ansible_connection=local\npeer ansible_connection=local\n")
        v["devid_provision_spire_server_socket_path"] = (
            "{{ '%s' if inventory_hostname == 'localhost' else '%s' }}" % (self.server.socket_path,
                                                                          self.d / "no-other-server.sock"))
        peer = {"name": "peer DevID", "ansible.builtin.set_fact": {"devid_provision_verified": {
            "agent_id": "spiffe://%s/spire/agent/tpm_devid/%s" % (TD, "0" * 40),
            "selectors": ["tpm_devid:subject:cn:peer.devid.test"]}}, "when": "inventory_hostname == 'peer'"}
        r = self.run_playbook(plays=[{"hosts": "localhost,peer", "gather_facts": False, "tasks": [
            dict(verify, when="inventory_hostname == 'localhost'"), peer, retire]}], inventory=inventory,
            expect_rc=0)
        assert role_task(r, "List the tpm_devid agents on the SPIRE server (once for the play)").get("skipped")
        assert not role_task(r, "List the host's tpm_devid agents on the SPIRE server").get("skipped")
        return r


def role_task(result, suffix):
    found = None
    for play in result.data.get("plays", []):
        for task in play.get("tasks", []):
            if task["task"]["name"].endswith(suffix) and "localhost" in task["hosts"]:
                found = task["hosts"]["localhost"]
    assert found is not None, "no task ending with %r" % suffix
    return found


@pytest.mark.parametrize("version", SPIRE_VERSIONS)
def test_renewal_needs_a_restart_and_the_role_retires_the_old_agent_id(
        version, swtpm, step_ca, run_playbook, spire_server_factory, spire_agent_factory, uid, record_property,
        tmp_path):
    w = World(version, swtpm, step_ca, run_playbook, spire_server_factory, spire_agent_factory, tmp_path,
              "renew-%s.devid.test" % version.replace(".", "-"))
    agent, server = w.agent, w.server
    assert w.host_ids() == [w.first_id]
    assert wait_for(lambda: w.workload in agent.fetch_x509(uid=uid), 30), agent.log_text()
    poller = WorkloadPoller(agent, w.workload, uid).start()
    timeline = []
    pidfile = tmp_path / "agent.pid"
    try:
        marker = tmp_path / "job-restarted-the-agent"
        job = w.install_renewal_job("touch %s; echo restarted" % marker)
        serial_before = x509.load_pem_x509_certificates((tmp_path / "devid.crt").read_bytes())[0].serial_number

        # 1. the cron job, not due: nothing renewed, no restart
        out = w.run_job(job)
        assert out.returncode == 0 and "not due" in out.stdout, out.stdout + out.stderr
        assert not marker.exists()

        # 2. the cron job inside the renewal window: renewed through the real step-ca with the TPM key -> restart hook
        assert after_next_reattestation(agent)
        out = w.run_job(job, "--renew-before", "2200h")
        timeline.append(("renewed by the job", poller.now()))
        assert out.returncode == 0 and "renewed" in out.stdout, out.stdout + out.stderr
        assert marker.exists() and "restarted" in out.stdout
        new_leaf = x509.load_pem_x509_certificates((tmp_path / "devid.crt").read_bytes())[0]
        assert new_leaf.serial_number != serial_before
        new_id = agent_id_of(tmp_path / "devid.crt")
        assert new_id != w.first_id

        # 3. NOT restarted: the agent re-attests at its SVID rotations, with the certificate it started with
        before = len(reattested_ids(agent))
        assert wait_for(lambda: len(reattested_ids(agent)) >= before + 2, 60), agent.log_text()
        assert set(reattested_ids(agent)[before:]) == {w.first_id}
        assert w.host_ids() == [w.first_id]
        timeline.append(("two rotations later, still the old ID", poller.now()))

        # 4. the role (devid_provision stale_agents.yml): the server does not list the current ID -> restart the
        #    agent, wait until healthy, evict the old ID -> the agent re-attests with the new DevID at once
        restart = agent_restart_script(tmp_path / "restart-agent.sh", agent, pidfile)
        assert after_next_reattestation(agent)
        t = poller.now()
        r = w.retire_stale_agents(str(restart), per_host=True)
        timeline.append(("role run (restart + evict)", poller.now()))
        assert role_task(r, "Restart the SPIRE agent so that it loads the current DevID certificate")["changed"]
        evicted = role_task(r, "Evict the stale agent IDs from the SPIRE server")
        assert [x["item"] for x in evicted["results"]] == [w.first_id]
        assert wait_for(lambda: w.host_ids() == [new_id], 60), (w.host_ids(), agent.log_text())
        timeline.append(("only the new ID listed", poller.now()))
        switch_s = poller.now() - t
        shown = server.cli("agent", "show", "-spiffeID", new_id)
        assert {"%s:%s" % (s["type"], s["value"]) for s in shown["selectors"]} == set(w.selectors)

        # 5. idempotent: a second run finds nothing stale, restarts nothing
        assert after_next_reattestation(agent, tracked=False)    # the agent restarted by the role's command
        r = w.retire_stale_agents(str(restart))
        assert role_task(r, "Restart the SPIRE agent so that it loads the current DevID certificate").get("skipped")
        assert role_task(r, "Evict the stale agent IDs from the SPIRE server")["results"] == []
        assert w.host_ids() == [new_id]
        assert wait_for(lambda: w.workload in agent.fetch_x509(uid=uid), 30)
    finally:
        poller.stop()
        stop_pid(pidfile)
        agent.stop()
    summary = poller.summary()
    record_property("renewal", {"version": version, "timeline": timeline, "workload": summary,
                                "switch_seconds": round(switch_s, 1)})
    print("SPIRE %s renewal timeline %s; workload %s; restart+evict -> new ID in %.1f s"
          % (version, timeline, summary, switch_s))
    assert summary["served"] > 0 and summary["fetches"] > 50
    assert all(g <= MAX_GAP_S for _, g in summary["gaps"]), summary
    assert poller.samples[-1][2] is True, summary
    assert_tpm_clean(swtpm)


def test_restart_alone_switches_at_rotation_and_the_old_record_stays_until_evicted(
        spire_version, swtpm, step_ca, run_playbook, spire_server_factory, spire_agent_factory, uid, record_property,
        request, tmp_path):
    """The job's restart (what it runs after a renewal) is enough for the new ID — at the next rotation, not at the
    restart. The old record stays listed (SPIRE keeps it); the role then evicts it without restarting anything, and
    leaves alone another host's agent and a banned stale agent of this host (evicting would lift the ban)."""
    w = World(spire_version, swtpm, step_ca, run_playbook, spire_server_factory, spire_agent_factory, tmp_path,
              "restart.devid.test")
    agent, server = w.agent, w.server
    assert wait_for(lambda: w.workload in agent.fetch_x509(uid=uid), 30), agent.log_text()

    # another host (own TPM from the same manufacturer, own DevID, own CN) attested to the same server
    other_tpm = SwTPM(tmp_path / "other-tpm", manufacturer=swtpm.manufacturer)
    request.addfinalizer(other_tpm.stop)
    od = tmp_path / "other"
    od.mkdir()
    run_playbook(tasks=[csr_task("csr", other_tpm, od, "ecc", cn="other.devid.test"),
                        stepca_cert_task("certificate", step_ca, od)], expect_rc=0)
    other = spire_agent_factory(server, ("tpm_devid", tpm_devid_agent_data(other_tpm, od)))
    other_id = agent_id_of(od / "devid.crt")
    assert other_id in server.agent_ids()

    poller = WorkloadPoller(agent, w.workload, uid).start()
    try:
        # a first renewal of this host whose agent ID the operator banned (a compromised DevID, say): it must stay
        assert after_next_reattestation(agent)
        subprocess_renew(w)
        agent.stop()
        agent.start()
        banned_id = agent_id_of(tmp_path / "devid.crt")
        assert wait_for(lambda: banned_id in w.host_ids(), 60), agent.log_text()
        # (first_id is now stale too)

        # the renewal proper, then the restart the job runs
        assert after_next_reattestation(agent)
        subprocess_renew(w)
        new_id = agent_id_of(tmp_path / "devid.crt")
        t = poller.now()
        agent.stop()
        agent.start()
        assert w.agent.healthy()
        cached = log_lines(agent, r'msg="SVID loaded"')[-1]
        assert banned_id in cached          # after the restart: the cached SVID, still the previous ID
        assert wait_for(lambda: new_id in w.host_ids(), 60), agent.log_text()
        switch_s = poller.now() - t
        assert set(w.host_ids()) == {w.first_id, banned_id, new_id}     # SPIRE keeps the old records
        server.cli("agent", "ban", "-spiffeID", banned_id)

        assert after_next_reattestation(agent)
        r = w.retire_stale_agents("echo the role must not restart here; exit 1")
        assert role_task(r, "Restart the SPIRE agent so that it loads the current DevID certificate").get("skipped")
        evicted = [x["item"] for x in role_task(r, "Evict the stale agent IDs from the SPIRE server")["results"]]
        assert evicted == [w.first_id]
        assert set(w.host_ids()) == {banned_id, new_id}
        assert server.agents("-banned", "true")[0]["id"]["path"].endswith(banned_id.rsplit("/", 1)[1])
        assert other_id in server.agent_ids() and other.healthy()
        assert wait_for(lambda: w.workload in agent.fetch_x509(uid=uid), 30)
    finally:
        poller.stop()
        agent.stop()
    summary = poller.summary()
    record_property("restart", {"version": spire_version, "restart_to_new_id_s": round(switch_s, 1),
                                "workload": summary})
    print("SPIRE %s: restart -> new ID at rotation after %.1f s (agent_ttl %s); workload %s"
          % (spire_version, switch_s, AGENT_TTL, summary))
    assert all(g <= MAX_GAP_S for _, g in summary["gaps"]), summary
    assert_tpm_clean(swtpm)


def subprocess_renew(w):
    """The renewal job's code (stepca/renew.py) run as the job runs it, forced."""
    env = dict(CRON_ENV, PYTHONPATH=str(COLLECTIONS), TSS2_LOG="all+NONE")
    out = subprocess.run([sys.executable, "-m", RENEW_MODULE,
                          "--cert", str(w.d / "devid.crt"), "--ca-url", w.ca.url, "--root-fingerprint",
                          w.ca.root_fingerprint, "--devid-pub", str(w.d / "devid.pub"), "--devid-priv",
                          str(w.d / "devid.priv"), "--tcti", w.tpm.tcti, "--force"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and "renewed" in out.stdout, out.stdout + out.stderr


def test_default_restart_command_restarts_only_a_running_agent(run_playbook, tmp_path):
    """The job's default restart (no systemd here): the spire_agent role's supervisor script is asked for its status
    and told to restart only when it says running; with no supervisor at all it does nothing. The supervisor here
    records its calls (what a restart does is the spire_agent role's business, proven with that role)."""
    calls = tmp_path / "calls"
    sup = tmp_path / "spire-agent-svc"
    sup.write_text("#!/bin/sh\necho \"$1\" >>%s\n[ \"$1\" != status ] || [ -e %s ]\n" % (calls, tmp_path / "running"))
    sup.chmod(0o755)
    v = {"devid_provision_dir": str(tmp_path), "devid_provision_stepca_url": "https://127.0.0.1:1",
         "devid_provision_stepca_root_fingerprint": "00" * 32, "devid_provision_renewal_scheduler": "cron",
         "devid_provision_renewal_cron_dir": str(tmp_path / "cron.d"),
         "devid_provision_renewal_lib_dir": str(tmp_path / "lib"), "devid_provision_renewal_name": "devid-renew",
         "devid_provision_agent_supervisor_path": str(sup)}
    absent = dict(v, devid_provision_agent_supervisor_path=str(tmp_path / "absent-svc"))
    restart = {"cmd": "{{ devid_provision__agent_restart }}"}
    r = run_playbook(tasks=[
        {"name": "job", "ansible.builtin.include_role": {"name": FQCN + "devid_provision",
                                                         "tasks_from": "renewal_job.yml", "public": True}, "vars": v},
        {"name": "stopped", "ansible.builtin.shell": restart, "vars": v},
        {"name": "start it", "ansible.builtin.file": {"path": str(tmp_path / "running"), "state": "touch"}},
        {"name": "running", "ansible.builtin.shell": restart, "vars": v},
        {"name": "no supervisor", "ansible.builtin.shell": restart, "vars": absent}], expect_rc=0)
    job = tmp_path / "lib" / "devid-renew"
    assert subprocess.run(["sh", "-n", str(job)]).returncode == 0
    assert "status" in job.read_text() and str(sup) in job.read_text()
    assert r.task("stopped")["stdout"] == ""                                    # not running: left alone
    assert r.task("running")["stdout"] == "restarted"
    assert r.task("no supervisor")["rc"] == 0 and r.task("no supervisor")["stdout"] == ""
    assert calls.read_text() == "status\nstatus\nrestart\n"
