"""Shared set-up of the Blender tests.

bpy reads BLENDER_USER_RESOURCES once, when the first test module imports it: it is set here, before any
test module is imported, so the whole session uses a fresh sandbox (extensions, preferences) whatever the
collection order. A value set by the caller wins.

Fixtures for the tests of the add-on as users get it (test_addon_ui.py, test_addon_jobs.py): the extension
zip (built once), the installed and enabled extension (per module: installed, then uninstalled and checked
clean), tiny random-weight checkpoints and a tiny image-sequence plate. bpy is imported only inside them,
so collecting this folder without bpy still skips cleanly.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="dr-blender-user-"))

REPO = Path(__file__).resolve().parents[2]
ENGINE_PY = os.environ.get("DR_ENGINE_PYTHON", "")
PKG = "bl_ext.user_default.diffusion_renderer"


def _builder():
    spec = importlib.util.spec_from_file_location("dr_build_extension", REPO / "tools" / "build_extension.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def zip_path(tmp_path_factory):
    return _builder().build(tmp_path_factory.mktemp("dist"), python=sys.executable, include_untracked=True)


def _repo_index(module: str = "user_default") -> int:
    import bpy

    for i, repo in enumerate(bpy.context.preferences.extensions.repos):
        if repo.module == module:
            return i
    raise AssertionError("no user_default extension repository")


@pytest.fixture(scope="module")
def addon(zip_path):
    """The extension installed from the zip and enabled (engine: DR_ENGINE_PYTHON, CPU, fp32); yields its
    package module. Afterwards it is disabled and uninstalled, and must have unregistered everything."""
    import addon_utils
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)   # before enabling: a reset disables add-ons
    result = bpy.ops.extensions.package_install_files(filepath=str(zip_path), repo="user_default",
                                                      enable_on_install=True)
    assert "FINISHED" in result
    assert PKG in bpy.context.preferences.addons, "the installed extension was not enabled"
    mod, timer = sys.modules[PKG], sys.modules[PKG + ".client.timer"]
    assert bpy.app.timers.is_registered(timer.tick)
    prefs = bpy.context.preferences.addons[PKG].preferences
    if ENGINE_PY:
        prefs.engine_python = ENGINE_PY
    prefs.device, prefs.precision = "cpu", "fp32"
    yield mod
    addon_utils.disable(PKG, default_set=True)
    bpy.ops.extensions.package_uninstall(repo_index=_repo_index(), pkg_id="diffusion_renderer")
    assert PKG not in bpy.context.preferences.addons
    assert not hasattr(bpy.types, "DIFFUSION_RENDERER_OT_delight"), "unregister left an operator behind"
    assert not hasattr(bpy.types.Scene, "diffusion_renderer")
    assert not bpy.app.timers.is_registered(timer.tick), "unregister left the engine timer behind"


@pytest.fixture(scope="session")
def tiny_ckpts(tmp_path_factory) -> dict:
    """Random tiny {"inverse": folder, "forward": folder} checkpoints, written by the engine's interpreter
    (bpy's venv has no torch)."""
    if not ENGINE_PY:
        pytest.skip("DR_ENGINE_PYTHON (the engine's interpreter) is not set")
    root = tmp_path_factory.mktemp("ckpt")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    code = ("import sys; from engine.random_checkpoint import write_random_checkpoint as w\n"
            "for kind in ('inverse', 'forward'): w(sys.argv[1] + '/' + kind, kind)")
    subprocess.run([ENGINE_PY, "-c", code, str(root)], check=True, cwd=REPO, env=env)
    return {kind: root / kind for kind in ("inverse", "forward")}


@pytest.fixture(scope="session")
def plate(tmp_path_factory) -> Path:
    """Three 64×64 PNG frames plate.0001.png … plate.0003.png (a de-light input); returns the folder."""
    import bpy

    seq = tmp_path_factory.mktemp("plate")
    for f in (1, 2, 3):
        img = bpy.data.images.new(f"plate{f}", 64, 64)
        img.pixels[:] = [0.2 * f, 0.5, 0.3, 1.0] * (64 * 64)
        img.filepath_raw, img.file_format = str(seq / f"plate.{f:04d}.png"), "PNG"
        img.save()
        bpy.data.images.remove(img)
    return seq
