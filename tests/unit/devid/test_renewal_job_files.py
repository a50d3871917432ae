"""The on-host DevID renewal job copies an explicit list of module_utils files (roles/devid_provision/vars/main.yml)
and runs stepca/renew.py from them without ansible-core. A module split or a new import that the list misses breaks
renewal on every host, silently until the job runs: this test computes the import closure of renew.py from the sources
(module-level and function-level imports alike) and compares it with the list."""

import ast
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
PLUGINS = ROOT / "plugins"
PREFIX = "ansible_collections.trustroot.spire_tpm.plugins."
VARS = ROOT / "roles" / "devid_provision" / "vars" / "main.yml"


def _module_file(dotted):
    """'module_utils.bootstate.eventlog' → the .py file under plugins/ (a package → its __init__.py)."""
    base = PLUGINS.joinpath(*dotted.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _collection_imports(path):
    """The collection modules ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from pkg import mod" imports pkg and, when mod is a module, pkg.mod
            names = [node.module] + ["%s.%s" % (node.module, a.name) for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith(PREFIX) and _module_file(name[len(PREFIX):]) is not None:
                found.add(name[len(PREFIX):])
    return found


def _closure(start):
    todo, seen = [start], set()
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        todo.extend(_collection_imports(_module_file(mod)))
    files = set()
    for mod in seen:
        # every package on the way needs its __init__.py on the host
        parts = mod.split(".")
        for i in range(1, len(parts)):
            init = PLUGINS.joinpath(*parts[:i]) / "__init__.py"
            if init.is_file():
                files.add(init.relative_to(PLUGINS).as_posix())
        files.add(_module_file(mod).relative_to(PLUGINS).as_posix())
    return files


def test_the_renewal_job_copies_every_file_renew_py_imports():
    listed = set(yaml.safe_load(VARS.read_text())["devid_provision_renewal_module_files"])
    needed = _closure("module_utils.stepca.renew") | {"__init__.py"}
    missing = sorted(needed - listed)
    assert not missing, "devid_provision_renewal_module_files lacks %s (imported by stepca/renew.py)" % missing
    for rel in listed:
        assert (PLUGINS / rel).is_file(), "listed but absent: plugins/%s" % rel


def test_the_closure_is_computed_from_the_sources():
    # The test above must be able to fail: the closure really follows imports (eventlog_compare is reached only
    # through bootstate/evaluate.py, and tpm/pcr.py only through a function-level import in renew.py).
    needed = _closure("module_utils.stepca.renew")
    assert "module_utils/bootstate/eventlog_compare.py" in needed
    assert "module_utils/tpm/pcr.py" in needed
    assert "module_utils/spire/cli.py" not in needed
