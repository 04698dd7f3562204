"""Shared by the tests of the add-on's engine client (tests/test_addon_client*.py).

The client is stdlib-only; it is loaded here by file path as a stand-alone package named
``dr_addon_client_under_test`` (the add-on's own __init__ needs bpy), once per process: :data:`dr`.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLIENT_DIR = REPO / "diffusion_renderer_addon" / "client"
POSIX = os.name == "posix"


def load_client():
    name = "dr_addon_client_under_test"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, CLIENT_DIR / "__init__.py",
                                                  submodule_search_locations=[str(CLIENT_DIR)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


dr = load_client()


def wait_for(client, predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        client.pump(timeout=0.05)
