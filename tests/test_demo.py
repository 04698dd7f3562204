"""``bin/demo --tiny``: the README's main job end to end (scene → G-buffers → forward model with tiny random
weights through the add-on's engine client → reimport → demo.blend + demo.mp4), in a subprocess.

Needs Blender's Python module in the bpy venv (``.venv-blender`` or ``DR_BLENDER_VENV``); skipped otherwise
(``bin/test-blender`` creates it). The engine interpreter is this one (DR_ENGINE_PYTHON overrides).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _bpy_venv() -> Path | None:
    venv = Path(os.environ.get("DR_BLENDER_VENV") or REPO / ".venv-blender")
    py = venv / "bin" / "python"
    if not py.is_file():
        return None
    r = subprocess.run([str(py), "-c", "import importlib.util,sys; sys.exit(importlib.util.find_spec('bpy') is None)"],
                       capture_output=True)
    return venv if r.returncode == 0 else None


def test_demo_tiny(tmp_path):
    venv = _bpy_venv()
    if venv is None:
        pytest.skip("no bpy venv (.venv-blender or DR_BLENDER_VENV with bpy installed); run bin/test-blender once")
    out = tmp_path / "demo"
    env = dict(os.environ, DR_BLENDER_VENV=str(venv), HF_HUB_OFFLINE="1",
               DR_ENGINE_PYTHON=os.environ.get("DR_ENGINE_PYTHON") or sys.executable)
    r = subprocess.run([str(REPO / "bin" / "demo"), "--tiny", "--out", str(out)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (out / "demo.blend").stat().st_size > 0
    assert (out / "demo.mp4").stat().st_size > 0
    assert "demo: wrote" in r.stdout
