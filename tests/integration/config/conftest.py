# -*- coding: utf-8 -*-
"""Fixtures for the spire_config / simulator daemon tests (helpers in spcfg_support.py)."""

import pytest

from spcfg_support import DevIDMaterial, SimWorld


@pytest.fixture
def sim():
    world = SimWorld()
    yield world
    world.cleanup()


@pytest.fixture
def devid(sim):
    material = DevIDMaterial(sim.path("devid", "x").parent)
    material.tpm_device_path = sim.tpm_socket()
    return material
