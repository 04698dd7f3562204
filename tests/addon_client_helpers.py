"""Shared by the tests of the add-on's engine client (tests/test_addon_client*.py).

The client is stdlib-only and importing the add-on package does not import bpy, so it is imported here as
it is in Blender, ``diffusion_renderer_addon.client`` (with the contract from the checkout): :data:`dr`.
"""
from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLIENT_DIR = REPO / "diffusion_renderer_addon" / "client"
POSIX = os.name == "posix"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

dr = importlib.import_module("diffusion_renderer_addon.client")


def wait_for(client, predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        client.pump(timeout=0.05)
