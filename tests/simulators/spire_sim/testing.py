"""A running stand-in for the SPIRE server's API socket plus helpers to read the simulator's state.

The spire-server simulator refuses every API command unless its socket path is a listening unix socket (as the
real CLI fails when no server runs). ``SimServer`` binds one in a thread; tests point ``socket_path`` at it.
"""

import json
import os
import shutil
import socket
import tempfile
import threading

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(HERE, "bin")
SERVER_BIN = os.path.join(BIN, "spire-server")
AGENT_BIN = os.path.join(BIN, "spire-agent")

from . import state as sim_state


class SimServer(object):
    def __init__(self, trust_domain="example.org"):
        # Unix socket paths are limited to 108 bytes: keep the directory short.
        self.dir = tempfile.mkdtemp(prefix="spsim-", dir="/tmp")
        self.socket_path = os.path.join(self.dir, "api.sock")
        self.call_log = os.path.join(self.dir, "calls.jsonl")
        self._sock = None
        self._stop = False
        with sim_state.locked(self.socket_path) as st:
            st["trust_domain"] = trust_domain
        self.start()

    def start(self):
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self.socket_path)
        self._sock.listen(128)
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            conn.close()

    def stop(self):
        """Stop listening and remove the socket (the server is then 'not running')."""
        self._stop = True
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
            self._sock = None
        try:
            os.unlink(self.socket_path)
        except OSError:
            pass

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- state -----------------------------------------------------------------------------------------------
    def state(self):
        return sim_state.load(self.socket_path)

    def state_bytes(self):
        try:
            with open(sim_state.state_path(self.socket_path), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""

    def locked(self):
        return sim_state.locked(self.socket_path)

    def entries(self):
        return list(self.state()["entries"].values())

    def calls(self):
        """Every simulator invocation logged so far: list of {"program", "argv"}."""
        try:
            with open(self.call_log) as f:
                return [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def reset_calls(self):
        try:
            os.unlink(self.call_log)
        except FileNotFoundError:
            pass

    @property
    def env(self):
        return {"SPIRE_SIM_CALL_LOG": self.call_log}
