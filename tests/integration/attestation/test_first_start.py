"""tpm_devid on real SPIRE, first start: our modules make and check the DevID, the real agent attests with it.

devid_csr (key in swtpm, SPIRE's blob format) → devid_certificate against the REAL step-ca → tpm_devid_verify
(our replay: predicted agent ID and selectors) → the real spire-agent (NodeAttestor tpm_devid, tpm_device_path =
the swtpm socket) attests on its first start, and ``spire-server agent show`` lists exactly the predicted ID and
selectors — nothing more, nothing less. RSA and ECC DevIDs, on both SPIRE versions.
"""

from __future__ import annotations

import hashlib
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from attest_testlib import (SPIRE_VERSIONS, assert_tpm_clean, csr_task, ek_bundle, log_lines, selector_strings,
                            spiffe_id, stepca_cert_task, tpm_devid_agent_data, tpm_devid_server_data, verify_task)

pytestmark = pytest.mark.stepca


@pytest.mark.parametrize("key_type", ["rsa", "ecc"])
@pytest.mark.parametrize("version", SPIRE_VERSIONS)
def test_agent_attests_on_first_start_as_predicted(version, key_type, swtpm, step_ca, run_playbook,
                                                  spire_server_factory, spire_agent_factory, tmp_path):
    d = tmp_path
    cn = "%s-%s.devid.test" % (key_type, uuid.uuid4().hex[:8])
    (d / "devid-ca.pem").write_text(step_ca.root_pem)
    ek_ca = ek_bundle(swtpm, d / "endorsement-ca.pem")
    r = run_playbook(tasks=[
        csr_task("csr", swtpm, d, key_type, cn=cn),
        stepca_cert_task("certificate", step_ca, d),
        verify_task("verify", swtpm, d, d / "devid-ca.pem", ek_ca),
    ], expect_rc=0)
    assert r.task("certificate")["cert_action"] == "issued"
    predicted = r.task("verify")
    assert all(c["ok"] for c in predicted["checks"]), predicted["checks"]

    # Independent of our code: the agent ID is the SHA-1 of the leaf's DER, the fingerprints those of the CAs.
    chain = x509.load_pem_x509_certificates((d / "devid.crt").read_bytes())
    der = [c.public_bytes(serialization.Encoding.DER) for c in chain]
    assert predicted["agent_id"] == "spiffe://example.org/spire/agent/tpm_devid/" + hashlib.sha1(der[0]).hexdigest()
    root_der = step_ca.root_cert.public_bytes(serialization.Encoding.DER)
    assert set(predicted["selectors"]) == {
        "tpm_devid:subject:cn:" + cn,
        "tpm_devid:issuer:cn:Trustroot Test Intermediate CA",
        "tpm_devid:ca:fingerprint:" + hashlib.sha1(der[1]).hexdigest(),
        "tpm_devid:ca:fingerprint:" + hashlib.sha1(root_der).hexdigest(),
    }
    assert_tpm_clean(swtpm)

    server = spire_server_factory(version=version,
                                  node_attestors=tpm_devid_server_data(d / "devid-ca.pem", ek_ca))
    agent = spire_agent_factory(server, ("tpm_devid", tpm_devid_agent_data(swtpm, d)), start=False)
    assert agent.start(check=False), "the real agent did not attest:\n" + agent.log_text()

    # First start: one attestation, no retry, no error on the way.
    done = log_lines(agent, r'msg="Node attestation was successful"')
    assert len(done) == 1 and predicted["agent_id"] in done[0], agent.log_text()
    assert not log_lines(agent, r"level=(error|warning) msg=\"Failed to retrieve attestation result"), agent.log_text()

    shown = server.cli("agent", "show", "-spiffeID", predicted["agent_id"])
    assert spiffe_id(shown["id"]) == predicted["agent_id"]
    assert shown["attestation_type"] == "tpm_devid" and shown["can_reattest"] is True and shown["banned"] is False
    assert selector_strings(shown) == set(predicted["selectors"])
    assert len(shown["selectors"]) == len(predicted["selectors"])
    # ... and it is the only agent the server knows
    assert server.agent_ids() == [predicted["agent_id"]]

    agent.stop()
    assert_tpm_clean(swtpm)
