#!/usr/bin/env python3
"""Let ansible-test bootstrap pip without the internet.

ansible-test downloads a get-pip script into ~/.ansible/test/cache/get_pip_<ver>.py before creating its sanity
venvs; this machine reaches no such host. We write a stand-in with the same command line: it runs ensurepip,
then installs the requested packages from the package index pip already uses.
"""
import os
import re
import sys

STAND_IN = '''import subprocess, sys
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"])
if args:
    subprocess.check_call([sys.executable, "-m", "pip", "install"] + args)
'''


def main():
    import ansible_test
    src = os.path.join(os.path.dirname(ansible_test.__file__), "_internal", "python_requirements.py")
    with open(src) as f:
        m = re.search(r"pip='([0-9.]+)'", f.read())
    version = m.group(1) if m else "24.2"
    cache = os.path.expanduser("~/.ansible/test/cache")
    os.makedirs(cache, exist_ok=True)
    path = os.path.join(cache, "get_pip_%s.py" % version.replace(".", "_"))
    with open(path, "w") as f:
        f.write(STAND_IN)
    print("ansible-test pip bootstrap stand-in: %s" % path)


if __name__ == "__main__":
    sys.exit(main())
