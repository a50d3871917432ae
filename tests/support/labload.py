# -*- coding: utf-8 -*-
"""Load a lab/ tool (lab/swtpm.py, lab/spire_build.py, ...) as a module by path: the lab scripts are standalone
programs, not a package, and their names must not clash with tests/support's own modules."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load(name):
    """The module lab/<name>.py (loaded once per process)."""
    key = "trustroot_lab_" + name
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, ROOT / "lab" / (name + ".py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[key] = mod
        spec.loader.exec_module(mod)
    return sys.modules[key]
