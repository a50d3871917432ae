"""module_utils/tpm/ek.py, info.py, pcr.py in-process against swtpm, cross-checked with tpm2-tools/openssl.

These are the functions the DevID/attestation code builds on (read_nv_certificate, create_ek, persistent_eks,
pubhash), so their edge cases are pinned here: padded and multi-chunk NV certificates, undefined indices,
non-EK persistent objects, the endorsement hierarchy password.
"""

import hashlib
import subprocess

import pytest
from cryptography import x509

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import ek, info, pcr
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm.context import open_tpm


def openssl_pubhash_of_handle(tpm, handle, tmp_path):
    pem = tmp_path / ("%s.pem" % handle)
    tpm.tool("tpm2_readpublic", "-c", handle, "-f", "pem", "-o", str(pem))
    der = subprocess.run(["openssl", "pkey", "-pubin", "-in", str(pem), "-outform", "DER"], capture_output=True,
                         check=True).stdout
    return hashlib.sha256(der).hexdigest()


def test_read_nv_certificate_matches_tpm2_nvread(swtpm, tmp_path):
    out = tmp_path / "nv.bin"
    swtpm.tool("tpm2_nvread", "0x1c00002", "-C", "o", "-o", str(out))
    with open_tpm(swtpm.tcti) as tpm:
        der = ek.read_nv_certificate(tpm, 0x01C00002)
        assert ek.read_nv_certificate(tpm, 0x01C0000A) is None  # not defined on this TPM
        assert ek.read_nv_certificate(tpm, 0x01C0001E) is None
    assert out.read_bytes().startswith(der)
    # openssl re-encodes exactly these bytes
    f = tmp_path / "c.der"
    f.write_bytes(der)
    again = subprocess.run(["openssl", "x509", "-inform", "DER", "-in", str(f), "-outform", "DER"],
                           capture_output=True, check=True).stdout
    assert again == der
    assert swtpm.transient_handles() == []


def test_padded_certificate_over_several_chunks(swtpm_factory, tmp_path):
    tpm2 = swtpm_factory(ek_certs=True)
    cert = tmp_path / "c.der"
    tpm2.tool("tpm2_nvread", "0x1c00016", "-C", "o", "-o", str(cert))
    der = subprocess.run(["openssl", "x509", "-inform", "DER", "-in", str(cert), "-outform", "DER"],
                         capture_output=True, check=True).stdout
    size = 2000  # > 1024 (swtpm's TPM_PT_NV_BUFFER_MAX): two NV reads
    padded = tmp_path / "padded.bin"
    padded.write_bytes(der + b"\xff" * (size - len(der)))
    tpm2.tool("tpm2_nvdefine", "0x1c0000a", "-C", "o", "-s", str(size), "-a",
              "ownerwrite|ownerread|authread|authwrite|no_da")
    tpm2.tool("tpm2_nvwrite", "0x1c0000a", "-C", "o", "-i", str(padded))
    with open_tpm(tpm2.tcti) as tpm:
        calls = []
        real = tpm.esapi.nv_read

        def counting(*a, **kw):
            calls.append(a[1])
            return real(*a, **kw)

        tpm.esapi.nv_read = counting
        got = ek.read_nv_certificate(tpm, 0x01C0000A)
        assert ek.read_nv_raw(tpm, 0x01C0000A) == padded.read_bytes()
    assert got == der
    assert calls[:2] == [1024, size - 1024]
    assert tpm2.transient_handles() == []


def test_create_ek_templates_match_tpm2_tools(swtpm, tmp_path):
    with open_tpm(swtpm.tcti) as tpm:
        h_rsa, pub_rsa = ek.create_ek(tpm)
        h_ecc, pub_ecc = ek.create_ek(tpm, "EK-HIGH-ECC384")
        h_low_ecc, pub_low_ecc = ek.create_ek(tpm, "EK-ECC256")
        assert len(tpm._transient) == 3  # tracked, flushed on close
        with pytest.raises(SpireTpmError, match="EK-HIGH-RSA3072"):
            ek.create_ek(tpm, "EK-HIGH-RSA3072")  # no certificate for it on this TPM
    assert swtpm.transient_handles() == []
    assert ek.pubhash(ek.ek_public_key(pub_rsa)) == openssl_pubhash_of_handle(swtpm, "0x81010001", tmp_path)
    assert ek.pubhash(ek.ek_public_key(pub_ecc)) == openssl_pubhash_of_handle(swtpm, "0x81010016", tmp_path)
    assert ek.key_description(pub_ecc) == ("ecc", "P-384")
    # the low-range ECC EK as tpm2_createek makes it
    pem = tmp_path / "ecc.pem"
    swtpm.tool("tpm2_createek", "-c", str(tmp_path / "e.ctx"), "-G", "ecc", "-u", str(pem), "-f", "pem")
    swtpm.tool("tpm2_flushcontext", "-t")
    der = subprocess.run(["openssl", "pkey", "-pubin", "-in", str(pem), "-outform", "DER"], capture_output=True,
                         check=True).stdout
    assert ek.pubhash(ek.ek_public_key(pub_low_ecc)) == hashlib.sha256(der).hexdigest()
    # the EK certificate's key is the EK's key
    with open_tpm(swtpm.tcti) as tpm:
        cert = x509.load_der_x509_certificate(ek.read_nv_certificate(tpm, 0x01C00002))
    assert ek.pubhash(cert.public_key()) == ek.pubhash(ek.ek_public_key(pub_rsa))


def test_persistent_eks_skip_other_objects_and_honour_endorsement_password(swtpm_factory, tmp_path):
    t = swtpm_factory(ek_certs=False)
    ctx = tmp_path / "p.ctx"
    t.tool("tpm2_createprimary", "-C", "o", "-c", str(ctx))
    t.tool("tpm2_evictcontrol", "-C", "o", "-c", str(ctx), "0x81010005")
    t.tool("tpm2_flushcontext", "-t")
    listed = t.tool("tpm2_getcap", "handles-persistent").stdout
    assert "0x81010005" in listed
    t.tool("tpm2_changeauth", "-c", "e", "endorse-pw")
    with open_tpm(t.tcti) as tpm:
        found = ek.persistent_eks(tpm)
        assert [h for h, _ in found] == [0x81010001, 0x81010016]
        with pytest.raises(SpireTpmError, match="authorization value rejected"):
            ek.create_ek(tpm)
    with open_tpm(t.tcti) as tpm:
        _h, pub = ek.create_ek(tpm, endorsement_hierarchy_password="endorse-pw")
        assert ek.pubhash(ek.ek_public_key(pub)) == ek.pubhash(ek.ek_public_key(found[0][1]))
    assert ek.pubhash(ek.ek_public_key(found[0][1])) == openssl_pubhash_of_handle(t, "0x81010001", tmp_path)
    assert t.transient_handles() == []


def test_info_and_banks_match_getcap(swtpm):
    with open_tpm(swtpm.tcti) as tpm:
        props = info.tpm_info(tpm)
        banks = pcr.allocated_banks(tpm)
    fixed = swtpm.tool("tpm2_getcap", "properties-fixed").stdout
    # tpm2_getcap prints the raw firmware words; rebuild the dotted form from them
    import yaml
    data = yaml.safe_load(fixed)
    fw1, fw2 = data["TPM2_PT_FIRMWARE_VERSION_1"]["raw"], data["TPM2_PT_FIRMWARE_VERSION_2"]["raw"]
    assert props["firmware_version"] == "%d.%d.%d.%d" % (fw1 >> 16, fw1 & 0xFFFF, fw2 >> 16, fw2 & 0xFFFF)
    assert props["manufacturer"] == data["TPM2_PT_MANUFACTURER"]["value"]
    assert props["spec"]["revision"] == "%.2f" % data["TPM2_PT_REVISION"]["value"]
    assert props["spec"]["year"] == data["TPM2_PT_YEAR"]["raw"]
    caps = yaml.safe_load(swtpm.tool("tpm2_getcap", "pcrs").stdout)["selected-pcrs"]
    expected = dict((list(d)[0], list(d.values())[0]) for d in caps if list(d.values())[0])
    assert banks == expected


def test_default_rsa_ek_reuses_only_a_matching_persistent_key(swtpm_factory, tmp_path):
    t = swtpm_factory(ek_certs=False)
    with open_tpm(t.tcti) as tpm:
        src, handle, pub = ek.default_rsa_ek(tpm)
    assert (src, handle) == ("persistent", 0x81010001)
    # replace 0x81010001 by a key of another template (tpm2_createprimary's default storage key)
    t.tool("tpm2_evictcontrol", "-C", "o", "-c", "0x81010001")
    ctx = tmp_path / "o.ctx"
    t.tool("tpm2_createprimary", "-C", "e", "-c", str(ctx))
    t.tool("tpm2_evictcontrol", "-C", "o", "-c", str(ctx), "0x81010001")
    t.tool("tpm2_flushcontext", "-t")
    with open_tpm(t.tcti) as tpm:
        src2, handle2, pub2 = ek.default_rsa_ek(tpm)
        assert [h for h, _ in ek.persistent_eks(tpm)] == [0x81010016]  # the storage key is no EK
    assert (src2, handle2) == ("created", None)
    assert ek.pubhash(ek.ek_public_key(pub2)) == ek.pubhash(ek.ek_public_key(pub))
    assert ek.pubhash(ek.ek_public_key(pub2)) != openssl_pubhash_of_handle(t, "0x81010001", tmp_path)
    assert t.transient_handles() == []


def test_batched_pcr_read_on_swtpm(swtpm):
    """48 PCR values need 6 TPM2_PCR_Read calls of 8 on a real (software) TPM; values equal tpm2_pcrread's."""
    import yaml
    swtpm.tool("tpm2_pcrextend", "9:sha1=%s" % ("c" * 40))
    with open_tpm(swtpm.tcti) as tpm:
        calls = []
        real = tpm.esapi.pcr_read

        def counting(*a, **kw):
            result = real(*a, **kw)
            calls.append(len(result[2]))
            return result

        tpm.esapi.pcr_read = counting
        values = pcr.to_hex_facts(pcr.read_pcrs(tpm, pcr.allocated_banks(tpm)))
    assert calls == [8] * 6
    tools = yaml.safe_load(swtpm.tool("tpm2_pcrread", "sha1:9+sha256:9").stdout)
    assert values["sha1"]["9"] == "%040x" % tools["sha1"][9] and values["sha1"]["9"] != "00" * 20
    assert values["sha256"]["9"] == "%064x" % tools["sha256"][9]


def test_chain_verdicts_agree_with_cryptography_verifier(swtpm, swtpm_factory):
    """Our path building vs cryptography.x509.verification (Web PKI CA rules, any leaf extensions allowed) on the
    swtpm EK certificates: both accept our CA, both refuse a foreign CA with the very same names."""
    verification = pytest.importorskip("cryptography.x509.verification")
    from ansible_collections.trustroot.spire_tpm.plugins.module_utils import x509 as xu
    other = swtpm_factory(ek_certs=True)
    other.stop()
    with open_tpm(swtpm.tcti) as tpm:
        leaves = [x509.load_der_x509_certificate(ek.read_nv_certificate(tpm, i)) for i in (0x01C00002, 0x01C00016)]
    for root_file, inter_file, expect in ((swtpm.root_ca, swtpm.intermediate_ca, True),
                                          (other.root_ca, other.intermediate_ca, False)):
        root, inter = xu.load_certificates(root_file)[0], xu.load_certificates(inter_file)[0]
        verifier = (verification.PolicyBuilder().store(verification.Store([root]))
                    .extension_policies(ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
                                        ee_policy=verification.ExtensionPolicy.permit_all())
                    .build_client_verifier())
        for leaf in leaves:
            try:
                verifier.verify(leaf, [inter])
                theirs = True
            except verification.VerificationError:
                theirs = False
            assert theirs is expect
            assert xu.verify_chain(leaf, [root], [inter])[0] is expect


def test_defined_but_unwritten_index_is_no_certificate(swtpm_factory):
    t = swtpm_factory(ek_certs=False)
    t.tool("tpm2_nvdefine", "0x1c00002", "-C", "o", "-s", "1200", "-a", "ownerwrite|ownerread|authread|no_da")
    assert "0x1C00002" in t.tool("tpm2_getcap", "handles-nv-index").stdout.upper().replace("0X", "0x")
    with open_tpm(t.tcti) as tpm:
        assert ek.read_nv_certificate(tpm, 0x01C00002) is None
        # and the EK template still builds (the template/nonce indices are absent, the certificate unwritten)
        _h, pub = ek.create_ek(tpm)
    assert ek.key_description(pub) == ("rsa", 2048)
    assert t.transient_handles() == []
