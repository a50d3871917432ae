"""tpm/host_facts.py without a TPM: the document's bytes against Ansible's own to_nice_json filter (what the role
wrote before), the composition's rules, the schema shared with the role's no-TPM path."""

import os
import socket
import stat
from pathlib import Path

import pytest
import yaml
from ansible.plugins.filter.core import to_nice_json

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import host_facts

ROOT = Path(__file__).resolve().parents[3]

EK = {"eks": [{"key_type": "rsa", "nv_index": "0x01c00002", "pubhash": "ab", "certificate": "PEM", "public_key": "PEM",
               "issuer": "CN=Ünïcode CA", "serial": "01", "chain_verified": None},
              {"key_type": "rsa", "nv_index": None, "pubhash": "cd", "certificate": None, "public_key": "PEM",
               "source": "default_template"}],
      "ek_pubhash": "ab", "spire_tpm_devid_ready": False, "spire_tpm_devid_reason": "why, with ünïcode"}
PROPS = {"manufacturer": "IBM", "manufacturer_id": "0x49424d00", "vendor": "SW   TPM", "firmware_version": "1.2.3.4",
         "spec": {"family": "2.0", "level": 0, "revision": "1.59", "year": 2019, "day_of_year": 137}}
PCR = {"values": {"sha256": {"0": "00" * 32, "10": "ff" * 32}}, "banks": ["sha256"],
       "allocated_banks": ["sha1", "sha256"], "drift": [{"bank": "sha256", "pcr": 10, "expected": "aa" * 32, "actual": "ff" * 32}], "matches_baseline": False}


def test_render_is_what_to_nice_json_wrote():
    doc = host_facts.compose(EK, PROPS, "cmd:socat - UNIX-CONNECT:/run/swtpm/tpm.sock", PCR)
    assert host_facts.render(doc) == (to_nice_json(doc, sort_keys=True) + "\n").encode("utf-8")


def test_compose_leaves_pem_out_and_counts_certificates():
    doc = host_facts.compose(EK, PROPS, "device:/dev/tpmrm0", PCR)
    assert doc["ek_certificate_count"] == 1
    assert [sorted(e) for e in doc["eks"]] == [sorted(k for k in e if k not in ("certificate", "public_key"))
                                              for e in EK["eks"]]
    assert (doc["pcr_banks"], doc["pcrs"], doc["pcr_matches_baseline"]) == (["sha1", "sha256"], PCR["values"], False)
    assert doc["pcr_drift"] == PCR["drift"] and doc["tpm"] == PROPS and doc["tcti"] == "device:/dev/tpmrm0"
    assert (doc["present"], doc["error"], doc["spire_tpm_devid_ready"]) == (True, None, False)


def test_schema_is_the_roles():
    role_vars = yaml.safe_load((ROOT / "roles" / "tpm_host" / "vars" / "main.yml").read_text())
    assert role_vars["__tpm_host_facts_schema"] == host_facts.FACTS_SCHEMA


def test_socket_access(tmp_path):
    path = tmp_path / "s.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    try:
        os.chmod(str(path), 0o660)
        group = __import__("grp").getgrgid(path.stat().st_gid).gr_name
        assert host_facts.check_socket_access(str(path), group) is None
        assert host_facts.check_socket_access(str(tmp_path / "absent.sock"), group) is None
        os.chmod(str(path), 0o640)
        with pytest.raises(SpireTpmError) as e:
            host_facts.check_socket_access(str(path), group)
        assert "is a unix socket with group %s and mode 0640" % group in str(e.value)
        assert e.value.details["socket_mode"] == "0640"
        with pytest.raises(SpireTpmError) as e:
            host_facts.check_socket_access(str(path), "no-such-group-xyz")
        assert "must be a unix socket of group no-such-group-xyz with mode 0660" in str(e.value)
    finally:
        s.close()
    link = tmp_path / "link.sock"
    os.symlink(str(path), str(link))
    assert stat.S_ISLNK(os.lstat(str(link)).st_mode)
    with pytest.raises(SpireTpmError) as e:  # the socket itself is looked at, as the role's stat did
        host_facts.check_socket_access(str(link), "root")
    assert "is not a unix socket" in str(e.value)
