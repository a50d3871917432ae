#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab environment the playbook tests and molecule scenarios run on (test harness, never shipped).

On top of ``lab/lab.py`` (netns hosts with sshd and swtpm) it adds what the playbooks need from the outside:

* a local DevID CA on the controller (key encrypted with a password) for devid_provision's ``local`` backend;
* optionally the REAL step-ca (tests/support/stepca.py), listening on the lab bridge's gateway address so that the
  lab hosts reach it from their namespaces (``--stepca``);
* the REAL SPIRE (spire-server + spire-agent built from the Go module proxy by lab/spire_build.py), packed as a
  release archive that the roles install through their air-gapped path (``spire_archive_src`` + checksum);
  ``--spire-version`` picks one of the pinned versions (default: $SPIRE_TPM_SPIRE_VERSION, else the suite's);
* ``<state>/labenv.json``: the variables pointing the roles at all of that, and ``<state>/inventory.json``: the
  lab's inventory with those variables merged in (what the scenarios' dynamic inventory scripts print), and the
  same as a static ``<state>/labenv-inventory.yml``;
* with ``--event-log``, a firmware event log per TPM host (``/run/swtpm/binary_bios_measurements`` inside the host,
  ``boot_state_event_log_path`` in the inventory) whose digests were extended into the host's swtpm after it started
  (``ensure_event_logs``): the measured boot the lab's swtpm otherwise lacks.

Usage::

    labenv.py up --name NAME --subnet 10.x.y.0/24 [--stepca] [--backend local|step_ca] [--host SPEC ...]
              [--spire-version 1.13.3] [--event-log]
    labenv.py inventory --name NAME          # JSON for an Ansible dynamic inventory (empty when not up)
    labenv.py down --name NAME               # stops step-ca, lab.py down --purge
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
LAB = ROOT / "lab" / "lab.py"
STATE_ROOT = Path(os.environ.get("SPIRE_TPM_LAB_DIR", str(ROOT / ".build" / "lab")))
sys.path.insert(0, str(ROOT / "tests"))
from support.labload import load  # noqa: E402

spire_build = load("spire_build")


def state_dir(name):
    return STATE_ROOT / name


def lab(*args):
    out = subprocess.run([sys.executable, str(LAB)] + list(args), capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit("lab.py %s failed: %s%s" % (" ".join(args), out.stdout, out.stderr))
    return out.stdout


def make_local_ca(dest, password):
    """A one-level DevID CA for the local backend: dest/ca.crt + dest/ca.key (PKCS#8, encrypted)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    dest.mkdir(parents=True, exist_ok=True)
    if (dest / "ca.crt").exists() and (dest / "ca.key").exists():
        return
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Trustroot Lab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "Trustroot Lab DevID CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    (dest / "ca.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password.encode())))
    os.chmod(dest / "ca.key", 0o600)
    (dest / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def start_stepca(state, gateway):
    """The real step-ca on <gateway>:<free port>, detached; returns its connection settings."""
    sys.path.insert(0, str(ROOT / "tests" / "support"))
    import stepca  # noqa: E402 (tests/support/stepca.py)

    class LabStepCA(stepca.StepCA):
        lab_host = None

        def write_config(self):
            super().write_config()
            if self.lab_host:
                cfg = json.loads(self.config_path.read_text())
                cfg["address"] = "%s:%d" % (self.lab_host, self.port)
                cfg["dnsNames"] = [self.lab_host, "127.0.0.1", "localhost"]
                self.config_path.write_text(json.dumps(cfg, indent=2))

    info_file = state / "stepca" / "info.json"
    pidfile = state / "stepca" / "step-ca.pid"
    if info_file.exists() and pidfile.exists():
        try:
            os.kill(int(pidfile.read_text()), 0)
            return json.loads(info_file.read_text())
        except (OSError, ValueError):
            pass
    ca = LabStepCA(state / "stepca")
    ca.lab_host = gateway
    ca.url = "https://%s:%d" % (gateway, ca.port)
    ca.write_config()
    ca.start()
    pidfile.write_text(str(ca.proc.pid))
    ca._log.close()
    ca._log = None
    info = {"url": ca.url, "root_fingerprint": ca.root_fingerprint, "provisioner_name": ca.provisioner_name,
            "provisioner_password": ca.provisioner_password, "root_pem": str(ca.dir / "root_ca.crt"),
            "intermediate_pem": str(ca.dir / "intermediate_ca.crt"), "pid": ca.proc.pid,
            "log": str(ca.log_path)}
    info_file.write_text(json.dumps(info, indent=2))
    return info


def stop_stepca(state):
    pidfile = state / "stepca" / "step-ca.pid"
    try:
        pid = int(pidfile.read_text())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    pidfile.unlink()


def yaml_inventory_to_dict(path):
    import yaml
    return yaml.safe_load(Path(path).read_text())


def _write_private(path, text):
    """Write ``text`` to ``path`` as a 0600 file (created with that mode, then renamed into place)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(str(tmp), 0o600)
    os.replace(str(tmp), str(path))


def write_inventory(name, extra_vars):
    """Lab inventory (YAML from lab.py) → Ansible dynamic-inventory JSON with our variables merged into all."""
    state = state_dir(name)
    inv = yaml_inventory_to_dict(state / "inventory.yml")
    out = {"_meta": {"hostvars": {}}, "all": {"vars": dict(inv["all"].get("vars") or {}), "children": []}}
    out["all"]["vars"].update(extra_vars)

    def walk(gname, g):
        g = g or {}
        entry = {"hosts": [], "vars": dict(g.get("vars") or {}), "children": []}
        for h, hv in (g.get("hosts") or {}).items():
            entry["hosts"].append(h)
            out["_meta"]["hostvars"].setdefault(h, {}).update(hv or {})
        for c, cg in (g.get("children") or {}).items():
            entry["children"].append(c)
            walk(c, cg)
        out[gname] = entry

    for c, cg in (inv["all"].get("children") or {}).items():
        out["all"]["children"].append(c)
        walk(c, cg)
    # Both carry secrets (the step-ca provisioner's and the lab database's passwords): root's only.
    _write_private(state / "inventory.json", json.dumps(out, indent=2))
    import yaml
    inv["all"].setdefault("vars", {}).update(extra_vars)
    _write_private(state / "labenv-inventory.yml", yaml.safe_dump(inv, sort_keys=False))
    return out


# Where a lab host finds its firmware event log (--event-log): /run/swtpm is private to each host, beside the socket
# of its TPM, so the "firmware" log lives with the TPM it was measured into.
EVENT_LOG = "/run/swtpm/binary_bios_measurements"


def ensure_event_logs(name):
    """Give every TPM host of lab ``name`` a firmware event log that its swtpm's PCRs really hold.

    swtpm's PCRs start at zero at each start, as a machine's at power-on: after each start of a host's swtpm a
    generated TCG crypto-agile log (tests/support/eventlog_gen.py, SHA-1 + SHA-256) is written to the host's
    EVENT_LOG and its digests are extended into that swtpm, as firmware does at boot. The swtpm pid the log was
    extended into is remembered beside it, so a repeated ``up`` extends nothing twice. Returns {host: "extended" |
    "kept"}.
    """
    sys.path.insert(0, str(ROOT / "tests" / "support"))
    import eventlog_gen  # noqa: E402 (tests/support/eventlog_gen.py)
    swtpm = load("swtpm")
    state = state_dir(name)
    out = {}
    for spec in json.loads((state / "lab.json").read_text())["hosts"]:
        host, flags = spec.split(":")[0], spec.split(":")[1:]
        if "notpm" in flags:
            continue
        hdir = state / "hosts" / host
        log_file = hdir / "root" / EVENT_LOG.lstrip("/")
        marker = log_file.with_name(log_file.name + ".swtpm-pid")
        pid = (hdir / "swtpm.pid").read_text().strip()
        if log_file.exists() and marker.exists() and marker.read_text().strip() == pid:
            out[host] = "kept"
            continue
        events = eventlog_gen.default_boot_events()
        log_file.write_bytes(eventlog_gen.build_log(events))
        os.chmod(log_file, 0o640)  # the kernel's copy is root's only
        eventlog_gen.extend_tpm(swtpm.tcti(str(log_file.with_name("tpm.sock"))), events)
        marker.write_text(pid + "\n")
        out[host] = "extended"
    return out


def up(args):
    t0 = time.monotonic()
    hosts = []
    for h in args.host or []:
        hosts += ["--host", h]
    lab("up", "--name", args.name, "--subnet", args.subnet, *hosts)
    state = state_dir(args.name)
    event_logs = ensure_event_logs(args.name) if args.event_log else {}
    import ipaddress
    gateway = str(ipaddress.ip_network(args.subnet).network_address + 1)
    ca_pw = "lab-devid-ca-pw"
    make_local_ca(state / "devid-local-ca", ca_pw)
    v = {
        "spire_trust_domain": "lab.trustroot.test",
        "devid_provision_backend": args.backend,
        "devid_provision_local_ca_cert": str(state / "devid-local-ca" / "ca.crt"),
        "devid_provision_local_ca_key": str(state / "devid-local-ca" / "ca.key"),
        "devid_provision_local_ca_key_password": ca_pw,
        "devid_provision_bundle_dir": str(state / "bundles"),
        "devid_provision_endorsement_ca_files": [str(state / "manufacturer" / "endorsement-ca-bundle.pem")],
        # Lab hosts share the machine's /etc and /opt: keep the renewal job inside their private directories.
        "devid_provision_renewal_cron_dir": "/var/lib/trustroot/cron.d",
        "devid_provision_renewal_lib_dir": "/var/lib/trustroot/lib",
        # Workload entries of every agent host for site.yml (parented to the host's node alias): the web workload
        # runs as uid 1000 on each host; uid 1001 is registered nowhere (it must get nothing).
        "spire_workloads": [{"path": "workload/{{ inventory_hostname }}/web", "selectors": ["unix:uid:1000"],
                             "x509_svid_ttl": 3600}],
        "labenv_workload_uid": 1000,
        "labenv_unregistered_uid": 1001,
    }
    # Real SPIRE, built from the Go module proxy, installed by the roles like a release archive (air-gapped path).
    try:
        release = spire_build.ensure(args.spire_version)
    except spire_build.BuildError as e:
        raise SystemExit("building SPIRE %s failed: %s" % (args.spire_version, e))
    v.update({
        "spire_version": release["version"],
        "spire_archive_src": release["archive"],
        "spire_archive_checksum": release["checksum"],
        # Each host's swtpm serves a unix socket (root:tss 0660, like /dev/tpmrm0): SPIRE's agent opens it as its
        # TPM device, so the agent's user joins the tss group as it would for /dev/tpmrm0.
        # The server's API socket (the roles' default, private to the server host; scenarios address it by name).
        "spire_server_socket_path": "/run/spire/server/private/api.sock",
        "spire_agent_tpm_device_path": "{{ lab_tpm_socket }}",
        "spire_agent_extra_groups": ["{{ lab_tpm_group }}"],
        # Lab hosts share /etc/passwd: a service user per lab (server and agents alike), so that no lab usermods
        # a user whose processes another lab is running.
        "spire_server_user": "sp-" + args.name[:28],
        "spire_server_group": "sp-" + args.name[:28],
        "spire_agent_user": "sp-" + args.name[:28],
        "spire_agent_group": "sp-" + args.name[:28],
        # tpm_host adds the agent's user to the TPM group: the lab's own user, never the machine-wide "spire" another
        # lab may be changing at the same moment. The spire roles create it (once, on the server, before the agents);
        # tpm_host creating it on every host at once would race on the shared /etc/passwd.
        "tpm_host_spire_agent_user": "sp-" + args.name[:28],
        "tpm_host_create_agent_user": False,
        # /var/log is shared by the lab hosts; /var/lib/spire is private to each.
        "spire_server_log_dir": "/var/lib/spire/log",
        "spire_agent_log_dir": "/var/lib/spire/log",
    })
    if args.stepca:
        info = start_stepca(state, gateway)
        v.update({
            "devid_provision_stepca_url": info["url"],
            "devid_provision_stepca_root_fingerprint": info["root_fingerprint"],
            "devid_provision_stepca_provisioner_name": info["provisioner_name"],
            "devid_provision_stepca_provisioner_password": info["provisioner_password"],
            "labenv_stepca_log": info["log"],
        })
    if args.event_log:
        # The boot_state role and tpm_boot_state read the host's log there (real hosts: securityfs).
        v["boot_state_event_log_path"] = EVENT_LOG
    _write_private(state / "labenv.json", json.dumps(v, indent=2))
    write_inventory(args.name, v)
    print(json.dumps({"name": args.name, "inventory": str(state / "labenv-inventory.yml"),
                      "event_logs": event_logs, "seconds": round(time.monotonic() - t0, 1)}))


def down(args):
    state = state_dir(args.name)
    stop_stepca(state)
    if (state / "lab.json").exists():
        lab("down", "--purge", "--name", args.name)


def inventory(args):
    f = state_dir(args.name) / "inventory.json"
    print(f.read_text() if f.exists() else json.dumps({"_meta": {"hostvars": {}}}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["up", "down", "inventory"])
    p.add_argument("--name", required=True)
    p.add_argument("--subnet", default="10.220.0.0/24")
    p.add_argument("--stepca", action="store_true")
    p.add_argument("--backend", choices=["local", "step_ca"], default="local")
    p.add_argument("--event-log", action="store_true",
                   help="give each TPM host a generated firmware event log at %s, extended into its swtpm" % EVENT_LOG)
    p.add_argument("--list", action="store_true", help="(dynamic inventory protocol)")
    p.add_argument("--host", action="append", help="host spec passed to lab.py up (repeatable)")
    p.add_argument("--spire-version", default=os.environ.get("SPIRE_TPM_SPIRE_VERSION", spire_build.DEFAULT_VERSION),
                   help="SPIRE version to build and install (pinned ones: %s)" % ", ".join(spire_build.pinned_versions()))
    args = p.parse_args(argv)
    {"up": up, "down": down, "inventory": inventory}[args.command](args)


if __name__ == "__main__":
    main()
