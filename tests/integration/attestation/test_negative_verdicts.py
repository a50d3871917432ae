"""Every negative verdict of tpm_devid_verify that real SPIRE can be made to show, shown by BOTH.

For each broken DevID set-up: our module (through ansible-playbook) must fail, the real spire-agent must fail to
attest (never healthy, never listed by the server; for a server-side refusal the server logs it too), and the two
messages must name the same cause. The real error text is recorded next to ours (user property ``verdicts``,
printed as a table at the end of the session by this directory's conftest) and in every assertion message.
Run on both SPIRE versions.

Not covered because real SPIRE cannot be made to show it separately: ``credential_activation`` (the AK and the EK
are always in the same TPM for an agent; a wrong endorsement password fails earlier, when the EK is regenerated).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from attest_testlib import (SPIRE_VERSIONS, assert_tpm_clean, ek_bundle, error_text, failed_start, server_errors,
                            tpm_devid_agent_data, tpm_devid_server_data, verify_task)
from devid_testlib import DevIDCA, spire_format_from_tools

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import devid_csr as devid_csr_mod

pytestmark = pytest.mark.stepca


class Case:
    """One broken set-up: where SPIRE fails (agent or server) and the cause both must name (regexes)."""

    def __init__(self, side, ours, spire):
        self.side, self.ours, self.spire = side, ours, spire


CASES = {
    # required by the issue: the four classic ones
    "tools_default_primary": Case("agent", [r"integrity check failed", r"tpm2-tools' default primary"],
                                  [r"tpm2\.Load failed: .*integrity check failed"]),
    "ek_bundle_without_intermediate": Case("server", [r"would fail at check 'ek_chain'",
                                                      r"lacks the EK certificate's issuer",
                                                      r"endorsement certificate verification failed"],
                                           [r"endorsement certificate verification failed: x509: certificate "
                                            r"signed by unknown authority"]),
    "devid_ca_not_trusted": Case("server", [r"would fail at check 'devid_chain'", r"does not verify against "
                                            r"devid_ca_path", r"unable to verify DevID signature"],
                                 [r"unable to verify DevID signature: verification failed: x509: certificate signed "
                                  r"by unknown authority"]),
    "tpm_without_ek_certificate": Case("agent", [r"no RSA EK certificate at NV index 0x01c00002",
                                                 r"unable to get endorsement certificate"],
                                       [r"unable to get endorsement certificate: failed to read NV index 01c00002"]),
    # the other verdicts real SPIRE can be made to show
    "certificate_for_another_key": Case("server", [r"would fail at check 'devid_signature'",
                                                   r"devID challenge verification failed"],
                                        [r"devID challenge verification failed"]),
    "expired_certificate": Case("server", [r"would fail at check 'devid_chain'", r"expired on",
                                           r"certificate has expired or is not yet valid"],
                                [r"x509: certificate has expired or is not yet valid"]),
    "sha1_signed_certificate": Case("server", [r"would fail at check 'devid_chain'", r"signed with SHA1",
                                               r"insecure algorithm"],
                                    [r"insecure algorithm \w+-SHA1"]),
    "ek_certificate_of_another_tpm": Case("server", [r"would fail at check 'ek_matches_certificate'",
                                                     r"public key in EK certificate differs"],
                                          [r"public key in EK certificate differs from public key created via EK "
                                           r"template"]),
    "wrong_devid_password": Case("agent", [r"rejected devid_password", r"authorization HMAC check failed"],
                                 [r"tpm2\.Certify failed: .*authorization HMAC check failed"]),
    "wrong_owner_hierarchy_password": Case("agent", [r"parent key in the owner hierarchy",
                                                     r"owner hierarchy password was rejected",
                                                     r"authorization failure without DA implications"],
                                           [r"tpm2\.CreatePrimaryEx failed: .*authorization failure without DA "
                                            r"implications"]),
    "wrong_endorsement_hierarchy_password": Case("agent", [r"regenerating the RSA EK",
                                                           r"endorsement hierarchy password was rejected",
                                                           r"authorization failure without DA implications"],
                                                 [r"cannot create endorsement key: .*authorization failure without "
                                                  r"DA implications"]),
    "devid_public_blob_missing": Case("agent", [r"devid_pub_path \S+ does not exist", r"unable to load DevID files"],
                                      [r"unable to load DevID files: cannot load public key"]),
}


def _sha1_leaf(ca, csr_path, out_path):
    """A DevID certificate signed with ECDSA-SHA1 by the DevID intermediate (Go's crypto/x509 refuses SHA-1).

    openssl signs it: cryptography refuses SHA-1 signatures."""
    d = Path(out_path).parent
    (d / "inter.pem").write_bytes(ca.pem(ca.inter))
    (d / "inter.key").write_bytes(ca.inter_key.private_bytes(serialization.Encoding.PEM,
                                                             serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
    (d / "leaf.ext").write_text("basicConstraints=critical,CA:FALSE\n")
    out = subprocess.run(["openssl", "x509", "-req", "-in", str(csr_path), "-CA", str(d / "inter.pem"),
                          "-CAkey", str(d / "inter.key"), "-sha1", "-days", "30", "-set_serial", "4242",
                          "-extfile", str(d / "leaf.ext"), "-out", str(d / "sha1-leaf.pem")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    leaf = x509.load_pem_x509_certificate((d / "sha1-leaf.pem").read_bytes())
    assert leaf.signature_hash_algorithm.name == "sha1"
    Path(out_path).write_bytes(ca.pem(leaf) + ca.pem(ca.inter))


def _new_devid(tpm, d, name, kt="rsa", **kw):
    """Set-up only (devid_csr is proven through ansible-playbook in test_first_start): key + CSR in the TPM."""
    paths = {k: str(d / ("%s.%s" % (name, k))) for k in ("pub", "priv", "csr")}
    devid_csr_mod.ensure_devid_csr(tcti=tpm.tcti, key_type=kt, pub_path=paths["pub"], priv_path=paths["priv"],
                                   csr_path=paths["csr"], common_name="%s.example.org" % name.replace("_", "-"), **kw)
    return {k: Path(v) for k, v in paths.items()}


def _scenario(case, swtpm, swtpm_factory, step_ca_root, d):
    """Build the broken set-up. Returns dict(tpm, cert, pub, priv, devid_ca, ek_ca, agent (extra plugin_data),
    verify (extra module options))."""
    ca = DevIDCA(d)
    s = {"tpm": swtpm, "devid_ca": ca.root_path, "ek_ca": ek_bundle(swtpm, d / "ek.pem"), "agent": {}, "verify": {}}
    if case in ("tpm_without_ek_certificate", "ek_certificate_of_another_tpm", "wrong_owner_hierarchy_password",
                "wrong_endorsement_hierarchy_password", "wrong_devid_password"):
        s["tpm"] = swtpm_factory(ek_certs=case != "tpm_without_ek_certificate")
        s["ek_ca"] = ek_bundle(s["tpm"], d / "ek.pem") if case != "tpm_without_ek_certificate" else s["ek_ca"]
    tpm = s["tpm"]
    make = {}
    if case == "wrong_devid_password":
        make = {"devid_password": "right-devid-pw"}
        s["agent"] = s["verify"] = {"devid_password": "wrong-devid-pw"}
    if case in ("wrong_owner_hierarchy_password", "wrong_endorsement_hierarchy_password"):
        tpm.tool("tpm2_changeauth", "-c", "o", "owner-pw")
        tpm.tool("tpm2_changeauth", "-c", "e", "endorse-pw")
        make = {"owner_hierarchy_password": "owner-pw"}
        if case == "wrong_owner_hierarchy_password":
            s["agent"] = s["verify"] = {"owner_hierarchy_password": "not-the-owner-pw",
                                        "endorsement_hierarchy_password": "endorse-pw"}
        else:
            s["agent"] = s["verify"] = {"owner_hierarchy_password": "owner-pw"}
    key = _new_devid(tpm, d, "node", **make)
    s.update(pub=key["pub"], priv=key["priv"], cert=d / "node.crt")
    ca.issue(key["csr"], s["cert"])

    if case == "tools_default_primary":
        # tpm2-tools' defaults: tpm2_createprimary (no noDA) + tpm2_create, size prefixes stripped to SPIRE's format
        tpm.tool("tpm2_createprimary", "-Q", "-C", "o", "-c", str(d / "prim.ctx"))
        tpm.tool("tpm2_create", "-Q", "-C", str(d / "prim.ctx"), "-G", "rsa2048:rsassa-sha256:null",
                 "-a", "sign|fixedtpm|fixedparent|sensitivedataorigin|userwithauth",
                 "-u", str(d / "tools.pub"), "-r", str(d / "tools.priv"))
        tpm.tool("tpm2_flushcontext", "-t")
        spire_format_from_tools(d / "tools.pub", d / "tools.priv", d / "spire.pub", d / "spire.priv")
        s.update(pub=d / "spire.pub", priv=d / "spire.priv")
    elif case == "ek_bundle_without_intermediate":
        s["ek_ca"] = ek_bundle(tpm, d / "ek-root-only.pem", with_intermediate=False)
    elif case == "devid_ca_not_trusted":
        s["devid_ca"] = d / "another-ca.pem"          # the real step-ca's root: a CA, just not the DevID's
        s["devid_ca"].write_text(step_ca_root)
    elif case == "certificate_for_another_key":
        other = _new_devid(tpm, d, "other", "ecc")
        s["cert"] = d / "other-key.crt"
        ca.issue(key["csr"], s["cert"], public_key_from=other["csr"])
    elif case == "expired_certificate":
        s["cert"] = d / "expired.crt"
        ca.issue(key["csr"], s["cert"], expired=True)
    elif case == "sha1_signed_certificate":
        s["cert"] = d / "sha1.crt"
        _sha1_leaf(ca, key["csr"], s["cert"])
    elif case == "ek_certificate_of_another_tpm":
        # NV 0x01c00002 rewritten (platform hierarchy, as the manufacturer would) with another TPM's EK certificate
        other = swtpm_factory(ek_certs=True)
        other.tool("tpm2_nvread", "-C", "o", "-o", str(d / "other-ek.der"), "0x01c00002")
        size = str((d / "other-ek.der").stat().st_size)
        tpm.tool("tpm2_nvundefine", "-C", "p", "0x01c00002")
        tpm.tool("tpm2_nvdefine", "-C", "p", "-s", size, "-a",
                 "ppwrite|ppread|ownerread|authread|no_da|platformcreate", "0x01c00002")
        tpm.tool("tpm2_nvwrite", "-C", "p", "-i", str(d / "other-ek.der"), "0x01c00002")
        s["ek_ca"].write_bytes(s["ek_ca"].read_bytes() + ek_bundle(other, d / "other-ek-ca.pem").read_bytes())
    elif case == "devid_public_blob_missing":
        s["pub"] = d / "absent.pub"
    return s


def _matches(patterns, text):
    return [p for p in patterns if not re.search(p, text)]


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("version", SPIRE_VERSIONS)
def test_both_refuse_for_the_same_cause(case, version, swtpm, swtpm_factory, step_ca, run_playbook,
                                        spire_server_factory, spire_agent_factory, record_property, tmp_path):
    spec = CASES[case]
    s = _scenario(case, swtpm, swtpm_factory, step_ca.root_pem, tmp_path)

    # ours: tpm_devid_verify through ansible-playbook
    task = dict(verify_task("verify", s["tpm"], tmp_path, s["devid_ca"], s["ek_ca"], cert=s["cert"], pub=s["pub"],
                            priv=s["priv"], **s["verify"]), ignore_errors=True)
    ours = run_playbook(tasks=[task]).task("verify")
    assert ours.get("failed") is True, "tpm_devid_verify accepted the %s set-up: %s" % (case, ours)
    ours_msg = ours["msg"]

    # real SPIRE: the same files, the same TPM
    server = spire_server_factory(version=version, node_attestors=tpm_devid_server_data(s["devid_ca"], s["ek_ca"]))
    agent = spire_agent_factory(server, ("tpm_devid", tpm_devid_agent_data(s["tpm"], tmp_path, cert=s["cert"],
                                                                            pub=s["pub"], priv=s["priv"],
                                                                            **s["agent"])), start=False)
    healthy, line = failed_start(agent)
    spire_msg = error_text(line)
    srv_lines = server_errors(server)
    record_property("verdicts", {"case": case, "version": version, "side": spec.side, "ours": ours_msg,
                                 "spire": spire_msg})
    table = "\n  ours : %s\n  SPIRE: %s\n  server log: %s" % (ours_msg, spire_msg, srv_lines)

    assert healthy is False, "the real agent attested in the %s set-up:%s" % (case, table)
    assert server.agent_ids() == [], table
    if spec.side == "server":
        assert any(re.search(spec.spire[0], ln) for ln in srv_lines), "the server did not refuse:" + table
    else:
        assert srv_lines == [], "an agent-side failure reached the server:" + table
    missing = _matches(spec.spire, spire_msg)
    assert not missing, "SPIRE's message lacks %s:%s" % (missing, table)
    missing = _matches(spec.ours, ours_msg)
    assert not missing, "our message does not name the cause SPIRE names (%s):%s" % (missing, table)
    for secret in ("right-devid-pw", "wrong-devid-pw", "owner-pw", "endorse-pw"):
        assert secret not in spire_msg and secret not in ours_msg
    assert_tpm_clean(s["tpm"])
