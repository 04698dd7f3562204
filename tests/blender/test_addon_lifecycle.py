"""Registering and unregistering the add-on must leave Blender able to exit cleanly.

Each check runs in a fresh interpreter (the one running these tests, i.e. the bpy under test), because the
failure only shows at process exit: on bpy 4.2 a PropertyGroup class with a Python method kept the bpy
module alive at exit, Blender's own exit (WM_exit) never ran and the process died with SIGSEGV (exit 139)
in C++ static destructors after pytest had already reported success.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

if importlib.util.find_spec("bpy") is None:
    pytest.skip("bpy (Blender as a Python module) is not installed; run bin/test-blender", allow_module_level=True)

_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
import bpy
import addon_utils
bpy.ops.wm.read_factory_settings(use_empty=True)
mod = addon_utils.enable("diffusion_renderer_addon", default_set=True)
assert mod is not None, "the add-on did not enable"
assert hasattr(bpy.types.Scene, "diffusion_renderer") and hasattr(bpy.types, "DR_PT_view3d_main")
if sys.argv[2] == "disable":
    addon_utils.disable("diffusion_renderer_addon", default_set=True)
    assert not hasattr(bpy.types.Scene, "diffusion_renderer")
    assert not hasattr(bpy.types, "DR_PT_view3d_main") and not hasattr(bpy.types, "DIFFUSION_RENDERER_OT_delight")
print("SCRIPT-END", flush=True)
"""


def _run(mode: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, BLENDER_USER_RESOURCES=tempfile.mkdtemp(prefix="dr-lifecycle-"))
    return subprocess.run([sys.executable, "-c", _SCRIPT, str(REPO), mode], capture_output=True, text=True,
                          timeout=120, env=env, cwd=tempfile.gettempdir())


@pytest.mark.parametrize("mode", ["disable", "keep"])
def test_process_exits_cleanly_after_the_addon_was_registered(mode):
    """``disable``: enable → disable → exit; ``keep``: exit with the add-on still enabled (Blender closing)."""
    proc = _run(mode)
    assert "SCRIPT-END" in proc.stdout, proc.stderr[-3000:]
    assert proc.returncode == 0, f"exit code {proc.returncode} after the script ended:\n{proc.stderr[-3000:]}"


def test_property_groups_define_no_python_functions():
    """The rule behind the exit crash, checked on the classes themselves: only bpy.props annotations."""
    sys.path.insert(0, str(REPO))
    try:
        from diffusion_renderer_addon import properties
    finally:
        sys.path.remove(str(REPO))
    for cls in properties.classes:
        own = {k: v for k, v in vars(cls).items() if not k.startswith("__")}
        funcs = [k for k, v in own.items() if callable(v) or isinstance(v, (staticmethod, classmethod, property))]
        assert not funcs, f"{cls.__name__} defines {funcs}: move them to module functions (see properties.py)"
