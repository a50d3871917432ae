"""context.py: TCTI parsing, the cmd TCTI's command and socket, and the socket checks on real OS objects.

The socket checks run against real files, directories and unix sockets made here (a bound socket nobody listens
on refuses like a killed swtpm's left-over socket); the same failures against real swtpm sockets are in
tests/integration/tpm/test_tpm_transport.py.
"""

import os
import socket
import tempfile

import pytest

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.tpm import context


@pytest.mark.parametrize("tcti, name, conf", [
    ("cmd:socat - UNIX-CONNECT:/run/swtpm/tpm.sock", "cmd", "socat - UNIX-CONNECT:/run/swtpm/tpm.sock"),
    ("  cmd:socat - UNIX-CONNECT:/a:b.sock ", "cmd", "socat - UNIX-CONNECT:/a:b.sock"),
    ("libtss2-tcti-cmd.so.0:socat - UNIX:/x", "cmd", "socat - UNIX:/x"),
    ("device:/dev/tpmrm0", "device", "/dev/tpmrm0"),
    ("swtpm:port=2321", "swtpm", "port=2321"),
    ("tabrmd", "tabrmd", None),
])
def test_parse_tcti(tcti, name, conf):
    assert context.parse_tcti(tcti) == (name, conf)


@pytest.mark.parametrize("bad", ["", "   ", "swtpm/port", "socat - UNIX-CONNECT:/x", "a=b:c"])
def test_parse_tcti_errors_suggest_the_socket_form(bad):
    with pytest.raises(SpireTpmError) as e:
        context.parse_tcti(bad)
    assert "cmd:socat - UNIX-CONNECT:/run/swtpm/tpm.sock" in str(e.value)


def test_select_tcti_from_the_environment():
    env = {"TPM2TOOLS_TCTI": "", "TCTI": "cmd:socat - UNIX-CONNECT:/s.sock"}
    assert context.select_tcti(None, env) == ("cmd", "socat - UNIX-CONNECT:/s.sock", "the TCTI environment variable")
    env["TPM2TOOLS_TCTI"] = "device:/dev/tpm0"
    assert context.select_tcti(None, env)[:2] == ("device", "/dev/tpm0")
    assert context.select_tcti("tabrmd", env) == ("tabrmd", None, "the tcti option")


@pytest.mark.parametrize("conf, sock", [
    ("socat - UNIX-CONNECT:/run/swtpm/tpm.sock", "/run/swtpm/tpm.sock"),
    ("socat - unix-connect:/run/swtpm/tpm.sock,retry=3,interval=0.5", "/run/swtpm/tpm.sock"),
    ("/usr/bin/socat -d -d UNIX-CLIENT:/tmp/t.sock -", "/tmp/t.sock"),
    ("socat - UNIX:/tmp/t.sock", "/tmp/t.sock"),
    ("socat - 'UNIX-CONNECT:/tmp/with space/t.sock'", "/tmp/with space/t.sock"),
    ("socat - TCP:127.0.0.1:2321", None),
    ("socat - UNIX-CONNECT:", None),
    ("tpm2-simulator-cmd", None),
    ("socat - 'UNIX-CONNECT:/unbalanced", None),
    ("", None),
])
def test_cmd_tcti_socket(conf, sock):
    assert context.cmd_tcti_socket(conf) == sock


@pytest.mark.parametrize("conf, program", [
    ("socat - UNIX-CONNECT:/x", "socat"),
    ("/usr/bin/socat - UNIX-CONNECT:/x", "/usr/bin/socat"),
    ("FOO=1 socat - UNIX-CONNECT:/x", None),
    ("", None),
    ("'unbalanced", None),
])
def test_cmd_tcti_program(conf, program):
    assert context.cmd_tcti_program(conf) == program


@pytest.fixture
def short_dir():
    """A short directory for unix sockets (pytest's tmp paths may exceed the 107-byte limit)."""
    d = tempfile.mkdtemp(prefix="ctx-", dir="/tmp")
    yield d
    for name in os.listdir(d):
        path = os.path.join(d, name)
        if os.path.isdir(path):
            os.rmdir(path)
        else:
            os.unlink(path)
    os.rmdir(d)


def _msg(path, tcti="cmd:socat - UNIX-CONNECT:%s"):
    with pytest.raises(SpireTpmError) as e:
        context.check_cmd_tcti("socat - UNIX-CONNECT:%s" % path, tcti % path)
    return str(e.value)


def test_check_socket_missing_file_dir_and_refusing(short_dir):
    missing = os.path.join(short_dir, "missing.sock")
    m = _msg(missing)
    assert "the TPM socket %s (TCTI 'cmd:socat - UNIX-CONNECT:%s') does not exist" % (missing, missing) in m
    assert "Fix: start the software TPM serving it (swtpm socket --tpm2 --server type=unixio,path=%s" % missing in m

    regular = os.path.join(short_dir, "file")
    open(regular, "w").close()
    assert "is a regular file, not a unix socket" in _msg(regular)
    assert "is a directory, not a unix socket" in _msg(short_dir)

    # bound, never listening: connect() is refused, as on the socket file a killed swtpm leaves behind
    stale = os.path.join(short_dir, "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(stale)
    try:
        m = _msg(stale)
    finally:
        s.close()
    assert "refuses connections: the socket file is left over but no swtpm is serving it" in m


def test_check_socket_accepts_a_listening_socket_without_sending(short_dir):
    path = os.path.join(short_dir, "ok.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    try:
        assert context.check_cmd_tcti("socat - UNIX-CONNECT:%s" % path, "cmd") is None
        conn, _ = srv.accept()
        conn.settimeout(2)
        assert conn.recv(10) == b""  # the probe connected and closed without a byte: swtpm serves the next client
        conn.close()
    finally:
        srv.close()


def test_check_cmd_tcti_command(short_dir):
    with pytest.raises(SpireTpmError, match="has no command"):
        context.check_cmd_tcti("  ", "cmd")
    with pytest.raises(SpireTpmError) as e:
        context.check_cmd_tcti("no-such-socat-here - UNIX-CONNECT:/x", "cmd:no-such-socat-here - UNIX-CONNECT:/x")
    assert "the command 'no-such-socat-here' of TCTI" in str(e.value) and "not installed" in str(e.value)
    with pytest.raises(SpireTpmError) as e:
        context.check_cmd_tcti("/nonexistent/socat - UNIX-CONNECT:/x", "cmd")
    assert "install socat on the host" in str(e.value)
    # a cmd TCTI without a unix socket is left to its command
    assert context.check_cmd_tcti("true", "cmd:true") is None


def test_tcti_errors_that_mean_the_connection_broke():
    """The TSS2 codes treated as a lost transport: TCTI layer 0xA0000 + IO_ERROR, MALFORMED_RESPONSE, NO_CONNECTION."""
    from tpm2_pytss.constants import TSS2_RC
    assert set(context.LOST_CONNECTION_RCS) == {int(TSS2_RC.TCTI_RC_IO_ERROR), int(TSS2_RC.TCTI_RC_MALFORMED_RESPONSE),
                                                int(TSS2_RC.TCTI_RC_NO_CONNECTION)}
    assert context.ESYS_BAD_SEQUENCE == int(TSS2_RC.ESYS_RC_BAD_SEQUENCE)
