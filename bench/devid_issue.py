#!/usr/bin/env python3
"""Time to issue one DevID against a real step-ca: TPM key + TPM-signed CSR + sign at step-ca + verify,
then a TPM-signed renewal. Also the step-ca build time (when not cached) and the provisioner key decryption at
step's p2c=600000. Prints figures; never pass/fail on time.

The TPM is a swtpm on a unix socket, reached with the cmd TCTI (tests/support/swtpm.py's SwTPM).

    .build/venv/bin/python bench/devid_issue.py [--rounds 5] [--key-type rsa|ecc]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import conftest  # noqa: E402,F401  (links the collection and puts it on sys.path)
from support.swtpm import SwTPM  # noqa: E402
from tests.support import stepca as support  # noqa: E402

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca import issuance  # noqa: E402
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca.client import StepCAClient  # noqa: E402
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.stepca.jwe import decrypt_provisioner_key  # noqa
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import devid, devid_csr  # noqa: E402
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm.context import open_tpm  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--key-type", default="rsa", choices=["rsa", "ecc"])
    a = ap.parse_args()
    t0 = time.monotonic()
    binary = support.build_step_ca()
    build = support.LAST_BUILD_SECONDS
    print("step-ca binary: %s (%s)" % (binary, "built in %.1f s" % build if build else
                                        "cached; %.2f s to find it" % (time.monotonic() - t0)))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ca = support.StepCA(tmp / "ca", binary=binary)
        t0 = time.monotonic()
        ca.start()
        print("step-ca start to healthy: %.2f s" % (time.monotonic() - t0))
        tpm_dev = SwTPM(tmp / "tpm")
        print("TPM: %s" % tpm_dev.tcti)
        try:
            client = StepCAClient(ca.url, ca.root_fingerprint)
            t0 = time.monotonic()
            decrypt_provisioner_key(ca.encrypted_key, ca.provisioner_password)
            print("provisioner key decryption (p2c 600000): %.3f s" % (time.monotonic() - t0))
            prov = issuance.Provisioner(client, ca.provisioner_name, ca.provisioner_password, ca.encrypted_key)
            prov.key()
            rows = {"key": [], "csr": [], "sign": [], "verify": [], "renew": [], "total": []}
            for i in range(a.rounds):
                t_all = time.monotonic()
                with open_tpm(tpm_dev.tcti) as tpm:
                    t = time.monotonic()
                    blobs = devid.create_devid(tpm, a.key_type)
                    rows["key"].append(time.monotonic() - t)
                    t = time.monotonic()
                    handle, public = devid.load_devid(tpm, blobs.pub_blob, blobs.priv_blob)
                    key = devid.signing_key(tpm, handle, public)
                    csr = devid_csr.build_csr(key, devid_csr.build_subject("bench-%d.devid.test" % i))
                    rows["csr"].append(time.monotonic() - t)
                    t = time.monotonic()
                    chain = issuance.issue_step_ca(client, csr, 2160 * 3600, prov)
                    rows["sign"].append(time.monotonic() - t)
                    t = time.monotonic()
                    chain[0].verify_directly_issued_by(chain[1])
                    chain[1].verify_directly_issued_by(ca.root_cert)
                    assert chain[0].public_key() == blobs.public_key()
                    rows["verify"].append(time.monotonic() - t)
                    rows["total"].append(time.monotonic() - t_all)
                    t = time.monotonic()
                    issuance.renew_step_ca(client, chain, key)
                    rows["renew"].append(time.monotonic() - t)
            print("one DevID (%s, %d rounds), median [min-max] seconds:" % (a.key_type, a.rounds))
            for k, v in rows.items():
                print("  %-7s %.3f [%.3f-%.3f]" % (k, statistics.median(v), min(v), max(v)))
        finally:
            tpm_dev.stop()
            ca.stop()


if __name__ == "__main__":
    main()
