"""tpm_ek_info through ansible-playbook on swtpm, every figure cross-checked with tpm2-tools and openssl."""

import shutil
import subprocess

import yaml


def openssl_pubhash(pem_path):
    """openssl pkey -pubin -outform DER | sha256sum, literally."""
    out = subprocess.run("openssl pkey -pubin -in '%s' -outform DER | sha256sum" % pem_path, shell=True,
                         capture_output=True, text=True, check=True).stdout
    return out.split()[0]


def persistent_pubhash(tpm, handle, tmp_path):
    out = tmp_path / ("pub-%s.pem" % handle)
    tpm.tool("tpm2_readpublic", "-c", handle, "-f", "pem", "-o", str(out))
    return openssl_pubhash(out)


def createek_pubhash(tpm, tmp_path):
    """The RSA EK from the default template, as tpm2_createek makes it (then flushed again)."""
    pub = tmp_path / "createek.pem"
    tpm.tool("tpm2_createek", "-c", str(tmp_path / "ek.ctx"), "-G", "rsa", "-u", str(pub), "-f", "pem")
    tpm.tool("tpm2_flushcontext", "-t")
    return openssl_pubhash(pub)


def pem_to_der(pem_text, tmp_path):
    f = tmp_path / "c.pem"
    f.write_text(pem_text)
    return subprocess.run(["openssl", "x509", "-in", str(f), "-outform", "DER"], capture_output=True,
                          check=True).stdout


def nvread(tpm, index, tmp_path):
    out = tmp_path / ("nv-%s.bin" % index)
    tpm.tool("tpm2_nvread", index, "-C", "o", "-o", str(out))
    return out.read_bytes()


def ca_dir(tmp_path, *files):
    d = tmp_path / "ca"
    d.mkdir(exist_ok=True)
    for f in files:
        shutil.copy(str(f), str(d / f.name))
    return d


def openssl_ca(tmp_path):
    key, crt = tmp_path / "other.key", tmp_path / "other.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(crt), "-subj", "/CN=Unrelated Root", "-days", "2"],
                   check=True, capture_output=True)
    return crt


def test_rsa_and_ecc_eks_with_full_chain(swtpm, run_playbook, tmp_path):
    cas = ca_dir(tmp_path, swtpm.root_ca, swtpm.intermediate_ca)
    tasks = [{"name": "ek", "trustroot.spire_tpm.tpm_ek_info": {"tcti": swtpm.tcti, "ca_path": str(cas)}}]
    res = run_playbook(tasks=tasks, expect_rc=0)
    r = res.task("ek")
    assert r["changed"] is False
    by_index = dict((e["nv_index"], e) for e in r["eks"] if e["nv_index"])
    assert sorted(by_index) == ["0x01c00002", "0x01c00016"]
    rsa, ecc = by_index["0x01c00002"], by_index["0x01c00016"]
    assert (rsa["key_type"], rsa["key_size"], rsa["curve"]) == ("rsa", 2048, None)
    assert (ecc["key_type"], ecc["key_size"], ecc["curve"]) == ("ecc", None, "P-384")
    assert rsa["persistent_handle"] == "0x81010001" and ecc["persistent_handle"] == "0x81010016"

    # certificate bytes = what tpm2_nvread returns, minus nothing but padding
    for index, entry in (("0x1c00002", rsa), ("0x1c00016", ecc)):
        nv = nvread(swtpm, index, tmp_path)
        der = pem_to_der(entry["certificate"], tmp_path)
        assert nv.startswith(der) and not nv[len(der):].strip(b"\x00\xff")
        assert entry["chain_verified"] is True and entry["chain_error"] is None
        assert entry["issuer"] == "CN=swtpm-localca"
        # the certificate fields, as openssl sees them
        f = tmp_path / "x.pem"
        f.write_text(entry["certificate"])
        serial = subprocess.run(["openssl", "x509", "-in", str(f), "-noout", "-serial"], capture_output=True,
                                text=True, check=True).stdout.strip().split("=")[1]
        assert int(serial, 16) == int(entry["serial"], 16)
        # the public key reported is the persistent EK's, hashed by openssl
        pk = tmp_path / "pk.pem"
        pk.write_text(entry["public_key"])
        assert openssl_pubhash(pk) == entry["pubhash"]
    assert rsa["pubhash"] == persistent_pubhash(swtpm, "0x81010001", tmp_path)
    assert ecc["pubhash"] == persistent_pubhash(swtpm, "0x81010016", tmp_path)

    # ek_pubhash: the key of the RSA EK certificate = the EK regenerated from the default template
    assert r["ek_pubhash"] == rsa["pubhash"] == createek_pubhash(swtpm, tmp_path)
    assert r["spire_tpm_devid_ready"] is True and r["spire_tpm_devid_reason"] is None
    fixed = yaml.safe_load(swtpm.tool("tpm2_getcap", "properties-fixed").stdout)
    assert r["tpm"]["manufacturer"] == fixed["TPM2_PT_MANUFACTURER"]["value"] == "IBM"
    assert r["tpm"]["vendor"] == "".join(fixed["TPM2_PT_VENDOR_STRING_%d" % i]["value"] for i in (1, 2, 3, 4))
    assert r["tpm"]["spec"]["family"] == "2.0"
    assert swtpm.transient_handles() == []


def test_bundle_file_and_check_mode(swtpm, run_playbook, tmp_path):
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(swtpm.intermediate_ca.read_text() + swtpm.root_ca.read_text())
    tasks = [{"name": "ek", "trustroot.spire_tpm.tpm_ek_info": {"tcti": swtpm.tcti, "ca_path": str(bundle)}}]
    res = run_playbook(tasks=tasks, check=True, expect_rc=0)
    r = res.task("ek")
    assert r["changed"] is False and r["spire_tpm_devid_ready"] is True
    assert all(e["chain_verified"] for e in r["eks"] if e["certificate"])
    assert swtpm.transient_handles() == []


def test_chain_fails_against_unrelated_cas(swtpm, swtpm_factory, run_playbook, tmp_path):
    other = swtpm_factory(ek_certs=True)  # its own local CA: same names as ours, other keys
    other.stop()
    foreign = ca_dir(tmp_path, other.root_ca, other.intermediate_ca)
    plain = openssl_ca(tmp_path)
    only_root = tmp_path / "root-only.pem"
    shutil.copy(str(swtpm.root_ca), str(only_root))
    tasks = [
        {"name": "foreign", "trustroot.spire_tpm.tpm_ek_info": {"tcti": swtpm.tcti, "ca_path": str(foreign)}},
        {"name": "plain", "trustroot.spire_tpm.tpm_ek_info": {"tcti": swtpm.tcti, "ca_path": str(plain)}},
        {"name": "rootonly", "trustroot.spire_tpm.tpm_ek_info": {"tcti": swtpm.tcti, "ca_path": str(only_root)}},
    ]
    res = run_playbook(tasks=tasks, expect_rc=0)
    for name in ("foreign", "plain", "rootonly"):
        r = res.task(name)
        certified = [e for e in r["eks"] if e["certificate"]]
        assert len(certified) == 2
        for e in certified:
            assert e["chain_verified"] is False
            assert "no trusted issuer" in e["chain_error"]
        assert r["spire_tpm_devid_ready"] is False
        assert "does not verify against ca_path" in r["spire_tpm_devid_reason"]
    assert "Unrelated Root" in res.task("plain")["eks"][0]["chain_error"]
    # openssl agrees: the EK certificate does not verify against the foreign CA, and does against ours
    ek_pem = tmp_path / "ek.pem"
    ek_pem.write_text(res.task("plain")["eks"][0]["certificate"])
    bad = subprocess.run(["openssl", "verify", "-CAfile", str(other.root_ca), "-untrusted", str(other.intermediate_ca),
                          str(ek_pem)], capture_output=True, text=True)
    assert bad.returncode != 0
    good = subprocess.run(["openssl", "verify", "-CAfile", str(swtpm.root_ca), "-untrusted",
                           str(swtpm.intermediate_ca), str(ek_pem)], capture_output=True, text=True)
    assert good.returncode == 0, good.stdout + good.stderr
    assert swtpm.transient_handles() == []


def test_tpm_without_ek_certificate(swtpm_factory, run_playbook, tmp_path):
    tpm = swtpm_factory(ek_certs=False)
    tasks = [{"name": "ek", "trustroot.spire_tpm.tpm_ek_info": {"tcti": tpm.tcti}}]
    r = run_playbook(tasks=tasks, expect_rc=0).task("ek")
    assert r["spire_tpm_devid_ready"] is False
    assert "0x01c00002" in r["spire_tpm_devid_reason"]
    assert all(e["certificate"] is None and e["nv_index"] is None for e in r["eks"])
    # no certificate: the hash is the default-template RSA EK's, as tpm2_createek regenerates it
    expected = createek_pubhash(tpm, tmp_path)
    assert r["ek_pubhash"] == expected
    assert expected == persistent_pubhash(tpm, "0x81010001", tmp_path)
    rsa = [e for e in r["eks"] if e["key_type"] == "rsa"]
    assert len(rsa) == 1 and rsa[0]["persistent_handle"] == "0x81010001" and rsa[0]["source"] == "persistent"
    ecc = [e for e in r["eks"] if e["key_type"] == "ecc"]
    assert len(ecc) == 1 and ecc[0]["pubhash"] == persistent_pubhash(tpm, "0x81010016", tmp_path)
    assert tpm.transient_handles() == []


def test_no_persistent_ek_uses_created_default(swtpm_factory, run_playbook, tmp_path):
    tpm = swtpm_factory(ek_certs=False)
    tpm.tool("tpm2_evictcontrol", "-C", "o", "-c", "0x81010001")
    tpm.tool("tpm2_evictcontrol", "-C", "o", "-c", "0x81010016")
    assert "0x81010001" not in tpm.tool("tpm2_getcap", "handles-persistent").stdout
    r = run_playbook(tasks=[{"name": "ek", "trustroot.spire_tpm.tpm_ek_info": {"tcti": tpm.tcti}}],
                     expect_rc=0).task("ek")
    assert [(e["source"], e["key_type"]) for e in r["eks"]] == [("default_template", "rsa")]
    assert r["ek_pubhash"] == r["eks"][0]["pubhash"] == createek_pubhash(tpm, tmp_path)
    assert tpm.transient_handles() == []


def test_errors(swtpm, run_playbook, tmp_path):
    from support.swtpm import dead_socket_tcti
    dead = dead_socket_tcti(tmp_path)
    empty = tmp_path / "empty-ca"
    empty.mkdir()
    tasks = [
        {"name": "dead", "trustroot.spire_tpm.tpm_ek_info": {"tcti": dead}, "ignore_errors": True},
        {"name": "garbled", "trustroot.spire_tpm.tpm_ek_info": {"tcti": "swtpm/port"}, "ignore_errors": True},
        {"name": "notpm", "trustroot.spire_tpm.tpm_ek_info": {}, "ignore_errors": True},
        {"name": "noca", "trustroot.spire_tpm.tpm_ek_info": {"tcti": swtpm.tcti, "ca_path": str(tmp_path / "nope")},
         "ignore_errors": True},
        {"name": "emptyca", "trustroot.spire_tpm.tpm_ek_info": {"tcti": swtpm.tcti, "ca_path": str(empty)},
         "ignore_errors": True},
    ]
    res = run_playbook(tasks=tasks, env={"TPM2TOOLS_TCTI": "", "TCTI": ""})
    dead_r = res.task("dead")
    assert dead_r["failed"] and "the TPM socket %s/nobody-serves-this.sock (TCTI %r) does not exist" % (
        tmp_path, dead) in dead_r["msg"]
    assert "Fix: start the software TPM serving it" in dead_r["msg"]
    assert "not of the form" in res.task("garbled")["msg"]
    notpm = res.task("notpm")
    assert notpm["failed"] and "no TPM found" in notpm["msg"] and "tcti" in notpm["msg"]
    assert "does not exist" in res.task("noca")["msg"]
    assert "no certificate found in ca_path" in res.task("emptyca")["msg"]
    for name in ("dead", "garbled", "notpm", "noca", "emptyca"):
        # a clean fail_json: no Python traceback (ansible-core 2.19 fills 'exception' with a placeholder)
        assert "Traceback" not in res.task(name)["msg"]
        assert 'File "' not in res.task(name).get("exception", "")
    assert swtpm.transient_handles() == []
