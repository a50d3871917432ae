"""The TPM transport: swtpm on a unix socket, reached with the cmd TCTI (``cmd:socat - UNIX-CONNECT:<socket>``).

Every failure is produced for real: a socket nobody serves, a swtpm stopped (SIGTERM removes its socket) or killed
(SIGKILL leaves the socket file behind, refusing), a path that is no socket, a user outside the socket's group,
a missing command, and a swtpm stopped while a connection is open. tpm2-tools is the oracle that the TPM works
again afterwards. swtpm serves one client at a time: a module waits while another client holds the TPM.
"""

import grp
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import pcr
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm.context import open_tpm
from support.swtpm import SwTPM, dead_socket_tcti, labswtpm

COLLECTIONS = Path(__file__).resolve().parents[3] / ".build" / "collections"
PCRS = "trustroot.spire_tpm.tpm_pcr_facts"


def kill_hard(tpm):
    """SIGKILL the swtpm: it cannot remove its socket, which stays behind refusing connections."""
    pid = int(tpm.proc_pidfile.read_text())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while labswtpm.alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    tpm.proc_pidfile.unlink()


def test_module_names_the_socket_and_the_fix_for_each_fault(swtpm_factory, run_playbook, tmp_path):
    stopped, killed, live = swtpm_factory(ek_certs=False), swtpm_factory(ek_certs=False), swtpm_factory(ek_certs=False)
    stopped.stop()
    assert not stopped.sock.exists()  # swtpm removes its socket on SIGTERM
    kill_hard(killed)
    assert killed.sock.is_socket()  # ... not on SIGKILL
    cases = {
        "nobody": dead_socket_tcti(tmp_path),
        "stopped": stopped.tcti,
        "killed": killed.tcti,
        "directory": labswtpm.tcti(live.state),
        "no socat": "cmd:no-such-socat - UNIX-CONNECT:%s" % live.sock,
        # other TCTIs keep the errors they had
        "tcp": "swtpm:host=127.0.0.1,port=1",
        "device": "device:%s" % (tmp_path / "tpm0"),
    }
    t0 = time.monotonic()
    res = run_playbook(tasks=[{"name": n, PCRS: {"tcti": t, "pcrs": [0]}, "ignore_errors": True}
                              for n, t in cases.items()] + [{"name": "live", PCRS: {"tcti": live.tcti, "pcrs": [0]}}])
    took = time.monotonic() - t0
    msg = dict((n, res.task(n)["msg"]) for n in cases)
    for n in cases:
        assert res.task(n)["failed"] is True, n
        assert "Traceback" not in msg[n] and 'File "' not in res.task(n).get("exception", ""), msg[n]
        assert "Fix:" in msg[n], msg[n]
    assert "nobody-serves-this.sock (TCTI %r) does not exist: no software TPM is serving it" % cases["nobody"] \
        in msg["nobody"]
    assert "the TPM socket %s (TCTI %r) does not exist" % (stopped.sock, stopped.tcti) in msg["stopped"]
    assert "swtpm socket --tpm2 --server type=unixio,path=%s" % stopped.sock in msg["stopped"]
    assert "the TPM socket %s (TCTI %r) refuses connections" % (killed.sock, killed.tcti) in msg["killed"]
    assert "left over but no swtpm is serving it" in msg["killed"]
    assert "the TPM socket %s (TCTI %r) is a directory, not a unix socket" % (live.state, cases["directory"]) \
        in msg["directory"]
    assert "the command 'no-such-socat' of TCTI" in msg["no socat"] and "not installed" in msg["no socat"]
    assert "cannot open the TPM through TCTI 'swtpm:host=127.0.0.1,port=1'" in msg["tcp"]
    assert "TPM device %s does not exist" % (tmp_path / "tpm0") in msg["device"]
    # the live TPM next to them answers, and agrees with tpm2-tools
    live_pcr0 = res.task("live")["ansible_facts"]["tpm_pcrs"]["sha256"]["0"]
    assert live.tool("tpm2_pcrread", "sha256:0").stdout.split("0x")[-1].strip().lower() == live_pcr0
    print("8 tasks, 7 transport faults reported: %.1f s" % took)

    # the faults are repaired by starting swtpm again (a left-over socket is replaced)
    stopped.start()
    killed.start()
    res = run_playbook(tasks=[{"name": n, PCRS: {"tcti": t.tcti, "pcrs": [0]}}
                              for n, t in (("stopped", stopped), ("killed", killed))], expect_rc=0)
    assert res.task("killed")["tcti"] == killed.tcti


def _as_user(tcti, *setpriv_args):
    """open_tpm + one PCR read in a separate Python run under setpriv (another uid, chosen groups)."""
    code = ("import json, sys; sys.path.insert(0, %r)\n"
            "from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError\n"
            "from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import pcr\n"
            "from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm.context import open_tpm\n"
            "try:\n"
            "    with open_tpm(%r) as tpm:\n"
            "        print(json.dumps({'banks': sorted(pcr.allocated_banks(tpm))}))\n"
            "except SpireTpmError as e:\n"
            "    print(json.dumps({'error': str(e)}))\n" % (str(COLLECTIONS), tcti))
    out = subprocess.run(["setpriv"] + list(setpriv_args) + [sys.executable, "-c", code], capture_output=True,
                         text=True, timeout=60, env=dict(os.environ, TSS2_LOG="all+NONE"))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture
def group_tpm():
    """A TPM whose socket is root:tss 0660 (like /dev/tpmrm0), in a directory other users may traverse."""
    try:
        gid = grp.getgrnam("tss").gr_gid
    except KeyError:
        pytest.skip("no tss group on this machine")
    base = Path(tempfile.mkdtemp(prefix="tpmgrp-", dir="/tmp"))
    os.chmod(base, 0o755)
    tpm = SwTPM(base, ek_certs=False)
    tpm.stop()
    labswtpm.start(tpm.state, tpm.sock, tpm.proc_pidfile, logfile=base / "swtpm.log", gid=gid, mode="0660")
    tpm.gid = gid
    yield tpm
    tpm.stop()
    shutil.rmtree(base, ignore_errors=True)


def test_permission_names_the_group_and_joining_it_is_the_fix(group_tpm):
    tpm = group_tpm
    st = os.stat(tpm.sock)
    assert (st.st_gid, st.st_mode & 0o777) == (tpm.gid, 0o660)
    nobody = ["--reuid=nobody", "--regid=nogroup"]
    denied = _as_user(tpm.tcti, *(nobody + ["--clear-groups"]))["error"]
    assert "permission denied connecting to the TPM socket %s (TCTI %r) as uid 65534 (owner root, group tss, " \
        "mode 0660)" % (tpm.sock, tpm.tcti) in denied
    assert "add the user to the socket's group tss (usermod -aG tss USER" in denied
    # the fix named: the same user in the group tss reaches the TPM
    assert _as_user(tpm.tcti, *(nobody + ["--groups=%d" % tpm.gid])) == {"banks": ["sha1", "sha256"]}
    # a directory on the way the user may not traverse
    os.chmod(tpm.base, 0o700)
    try:
        hidden = _as_user(tpm.tcti, *(nobody + ["--groups=%d" % tpm.gid]))["error"]
    finally:
        os.chmod(tpm.base, 0o755)
    assert "permission denied looking up the TPM socket %s" % tpm.sock in hidden
    assert "a directory on the way is not searchable" in hidden and str(tpm.base) in hidden


@pytest.mark.parametrize("how", ["stopped", "killed"])
def test_swtpm_gone_mid_way_is_a_lost_connection(swtpm_factory, how):
    tpm = swtpm_factory(ek_certs=False)
    t0 = time.monotonic()
    with pytest.raises(SpireTpmError) as e:
        with open_tpm(tpm.tcti) as ctx:
            assert sorted(pcr.allocated_banks(ctx)) == ["sha1", "sha256"]
            # a transient object is loaded: closing must not hang on the dead connection
            ctx.track(ctx.esapi.create_primary(None, "ecc256")[0])
            if how == "stopped":
                tpm.stop()
            else:
                kill_hard(tpm)
            pcr.allocated_banks(ctx)
    took = time.monotonic() - t0
    m = str(e.value)
    assert m.startswith("reading the allocated PCR banks (TPM2_GetCapability) failed: the connection to the "
                        "software TPM through TCTI %r was lost (tcti:" % tpm.tcti), m
    now = "does not exist" if how == "stopped" else "refuses connections"
    assert "; now the TPM socket %s %s" % (tpm.sock, now) in m, m
    assert "Fix: the swtpm serving %s stopped while it was in use: restart it" % tpm.sock in m
    assert e.value.details["tpm_rc"] in (0xA000A, 0xA0011)
    assert took < 10, took
    # restarted, the TPM serves again (tpm2-tools as the oracle) and holds no transient object
    tpm.start()
    assert "TPM2_PT_MANUFACTURER" in tpm.tool("tpm2_getcap", "properties-fixed").stdout
    assert tpm.transient_handles() == []


def test_lost_connection_is_translated_even_where_no_caller_did(swtpm_factory):
    """A raw ESAPI call inside open_tpm (no describe_tss_error around it) still ends as a SpireTpmError."""
    tpm = swtpm_factory(ek_certs=False)
    with pytest.raises(SpireTpmError) as e:
        with open_tpm(tpm.tcti) as ctx:
            ctx.esapi.get_random(8)  # connected and served
            tpm.stop()
            ctx.esapi.get_random(8)
    assert str(e.value).startswith("a TPM command failed: the connection to the software TPM through TCTI %r was "
                                   "lost" % tpm.tcti)


def test_one_client_at_a_time_a_module_waits_for_the_holder(swtpm, run_playbook):
    """swtpm serves one connection at a time: while another client holds it the module waits, then succeeds."""
    hold = 3.0
    result = {}

    def module():
        t0 = time.monotonic()
        result["res"] = run_playbook(tasks=[{"name": "pcrs", PCRS: {"tcti": swtpm.tcti, "pcrs": [0]}}])
        result["took"] = time.monotonic() - t0

    with open_tpm(swtpm.tcti) as held:
        held.esapi.get_random(8)  # this connection is swtpm's current client now
        worker = threading.Thread(target=module)
        worker.start()
        worker.join(hold)
        assert worker.is_alive(), "the module did not wait for the client holding the TPM"
    released = time.monotonic()
    worker.join(60)
    assert not worker.is_alive()
    assert result["res"].rc == 0 and result["res"].task("pcrs")["ansible_facts"]["tpm_pcrs"]["sha256"]["0"]
    after = time.monotonic() - released
    print("module waited for the holder: total %.1f s, %.1f s after the release" % (result["took"], after))
    assert result["took"] >= hold
    assert swtpm.transient_handles() == []
