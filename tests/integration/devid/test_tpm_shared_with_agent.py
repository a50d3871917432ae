"""One swtpm, two clients: our TPM code and the REAL spire-agent (tpm_devid, tpm_device_path = the swtpm socket).

swtpm serves one connection at a time. While a client of ours holds the TPM (an open_tpm context, exactly what a
module holds during its TPM operation), the agent's attestation waits: it does not fail, and it completes once the
TPM is released. The agent ID it gets is the one tpm_devid_verify predicted. This is the claim the tpm doc
fragment makes ("a module holding the TPM makes a SPIRE agent wait").
"""

import time

from devid_testlib import FQCN, DevIDCA, assert_tpm_clean, ek_bundle

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm.context import open_tpm


def test_agent_attestation_waits_while_the_tpm_is_held(swtpm_factory, run_playbook, spire_server_factory,
                                                       spire_agent_factory, tmp_path):
    tpm = swtpm_factory(ek_certs=True)
    d = tmp_path
    ca = DevIDCA(d)
    ek = ek_bundle(tpm, d / "ek.pem")
    files = {"pub": d / "devid.pub", "priv": d / "devid.priv", "csr": d / "devid.csr", "crt": d / "devid.crt"}
    run_playbook(tasks=[{"name": "csr", FQCN + "devid_csr": {
        "tcti": tpm.tcti, "key_type": "rsa", "pub_path": str(files["pub"]), "priv_path": str(files["priv"]),
        "csr_path": str(files["csr"]), "common_name": "shared-tpm.example.org"}}], expect_rc=0)
    ca.issue(files["csr"], files["crt"])
    predicted = run_playbook(tasks=[{"name": "verify", FQCN + "tpm_devid_verify": {
        "tcti": tpm.tcti, "devid_cert_path": str(files["crt"]), "devid_pub_path": str(files["pub"]),
        "devid_priv_path": str(files["priv"]), "devid_ca_path": str(ca.root_path), "endorsement_ca_path": str(ek),
        "trust_domain": "example.org"}}], expect_rc=0).task("verify")["agent_id"]

    server = spire_server_factory(node_attestors={"tpm_devid": {"devid_ca_path": str(ca.root_path),
                                                                "endorsement_ca_path": str(ek)}})
    agent = spire_agent_factory(server, ("tpm_devid", {
        "tpm_device_path": str(tpm.sock), "devid_cert_path": str(files["crt"]), "devid_pub_path": str(files["pub"]),
        "devid_priv_path": str(files["priv"])}), start=False)

    hold = 4.0
    with open_tpm(tpm.tcti) as held:
        held.esapi.get_random(8)  # our connection is the one swtpm serves now
        agent.write_config()
        agent._spawn()
        time.sleep(hold)
        assert agent.proc.poll() is None, "the agent gave up while the TPM was held:\n" + agent.log_text()
        assert server.agent_ids() == [], "the agent attested without the TPM?"
        assert not agent.healthy()
    released = time.monotonic()
    assert agent.wait_healthy(60), "the agent did not attest after the TPM was released:\n" + agent.log_text()
    took = time.monotonic() - released
    assert server.agent_ids() == [predicted]
    assert "level=error" not in agent.log_text(tail=400), agent.log_text(tail=400)
    print("agent attested %.1f s after the TPM was released (held %.0f s)" % (took, hold))

    # ... and our modules reach the same TPM while the agent runs (it holds no connection between commands)
    r = run_playbook(tasks=[{"name": "pcrs", FQCN + "tpm_pcr_facts": {"tcti": tpm.tcti, "pcrs": [0]}}],
                     expect_rc=0)
    assert r.task("pcrs")["ansible_facts"]["tpm_pcrs"]["sha256"]["0"]
    agent.stop()
    assert_tpm_clean(tpm)
