"""Entry points of the ``spire-server`` and ``spire-agent`` simulator executables.

``run``, ``validate`` and ``healthcheck`` (both programs) and the agent's ``api`` commands are served by
``spire_sim.daemon.main(program, argv)`` (imported lazily; a separate file). Everything else of spire-server is
in ``server_cli``. When ``SPIRE_SIM_CALL_LOG`` is set, every invocation's argv is appended to that file as one JSON
line (tests and the benchmark count calls with it).
"""

import json
import os
import sys

DAEMON_COMMANDS = {
    "spire-server": ("run", "validate", "healthcheck"),
    "spire-agent": ("run", "validate", "healthcheck", "api"),
}


def log_call(program, argv):
    path = os.environ.get("SPIRE_SIM_CALL_LOG")
    if not path:
        return
    line = json.dumps({"program": program, "argv": list(argv)}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _daemon(program, argv):
    try:
        from . import daemon
    except ImportError as e:
        sys.stderr.write("Error: the simulator's daemon (spire_sim/daemon.py) is not available: %s\n" % e)
        return 1
    return daemon.main(program, argv)


def main(program, argv):
    log_call(program, argv)
    if argv and argv[0] in ("--version", "-version"):
        sys.stdout.write("1.15.3-simulator\n")
        return 0
    if argv and argv[0] in DAEMON_COMMANDS[program]:
        return _daemon(program, argv)
    if program == "spire-server":
        from . import server_cli
        return server_cli.main(argv)
    sys.stderr.write("Usage: spire-agent [--version] [--help] <command> [<args>]\n\nAvailable commands are:\n"
                     "    api\n    healthcheck\n    run\n    validate\n")
    return 127
