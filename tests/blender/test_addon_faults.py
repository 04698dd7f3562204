"""Fault matrix, add-on class (issue 15, Build 8): what an artist can get wrong or have happen, in real bpy with
the installed extension and the real engine on tiny random checkpoints. Each case ends with one clear message
naming the setting or button to use, and the scene and the .blend are left as they were.

| case | expected behaviour |
|---|---|
| Output Folder in a system folder (`/usr/local/…`) | Delight refused before anything is exported: the message names the Output Folder (Neural Render › Sampling & Output); nothing created; no datablock added |
| Output Folder inside the installed extension (the engine's installation) | the same; nothing written into the extension |
| Output Folder is an existing file | refused naming the Output Folder, nothing written (regression: passed before) |
| the engine is killed mid-job | the status says the engine process was killed and how to go on; no datablock added; the next Delight runs (regression: passed before) |
| Load Result of a set one of whose pass folders was deleted | refused naming the missing files and what to do; no datablock added, the result list unchanged |

Fixtures (addon, tiny_ckpts, plate) come from conftest.py. Skipped without bpy or DR_ENGINE_PYTHON.
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

PKG = "bl_ext.user_default.diffusion_renderer"
bpy = pytest.importorskip("bpy", reason="bpy (Blender as a Python module) is not installed; run bin/test-blender")
if not os.environ.get("DR_ENGINE_PYTHON"):
    pytest.skip("DR_ENGINE_PYTHON (the engine's interpreter) is not set", allow_module_level=True)
from addon_driver import client as _client, idle as _idle, pump, status as _status  # noqa: E402


def _datablocks() -> set:
    return {(c, b.name) for c in ("images", "node_groups", "materials", "objects")
            for b in getattr(bpy.data, c)}


@pytest.fixture
def delight(addon, tiny_ckpts, plate, tmp_path):
    """Scene settings for a tiny CPU Delight of the 3-frame plate; Output Folder tmp_path/jobs."""
    bpy.ops.wm.read_homefile(use_empty=True)
    img = bpy.data.images.load(str(plate / "plate.0001.png"), check_existing=True)
    img.source = "SEQUENCE"
    s = bpy.context.scene.diffusion_renderer
    s.footage_source, s.image, s.inverse_model = "IMAGE", img, str(tiny_ckpts["inverse"])
    s.pass_metallic = s.pass_roughness = s.pass_depth = False
    s.frames, s.overlap, s.steps, s.previews = 3, 0, 2, False
    s.resolution_mode, s.res_x, s.res_y = "CUSTOM", 64, 64
    s.output_dir, s.gbuffer_set = str(tmp_path / "jobs"), ""
    st = _status()
    st.last_manifest = st.last_error = st.status = ""
    yield s
    if not _idle():                                      # a failed assertion mid-job: do not leak it
        bpy.ops.diffusion_renderer.cancel()
        pump(_idle, timeout=60)


def _refused(s, before: set, panel: bool = True) -> str:
    with pytest.raises(RuntimeError) as info:
        bpy.ops.diffusion_renderer.delight()
    message = str(info.value)
    assert "Output Folder" in message and (not panel or "Sampling & Output" in message), message
    assert "Output Folder" in _status().last_error and _idle()
    assert _datablocks() == before and s.gbuffer_set == ""
    return message


def test_output_folder_in_a_system_folder_is_refused_before_export(delight):
    target = Path("/usr/local/dr-fault-test")
    existed = target.exists()
    delight.output_dir = str(target / "jobs")
    before = _datablocks()
    try:
        message = _refused(delight, before)
        assert "system folder" in message
        assert existed or not target.exists(), "the add-on wrote into /usr/local"
    finally:
        if not existed:
            shutil.rmtree(target, ignore_errors=True)


def test_output_folder_inside_the_extension_is_refused(delight):
    ext = Path(sys.modules[PKG].__file__).parent
    delight.output_dir = str(ext / "neural")
    before = _datablocks()
    try:
        message = _refused(delight, before)
        assert "installation" in message or "package folder" in message, message
        assert not (ext / "neural").exists()
    finally:
        shutil.rmtree(ext / "neural", ignore_errors=True)


def test_output_folder_that_is_a_file_is_refused(delight, tmp_path):
    (tmp_path / "a-file").write_text("not a folder\n")
    delight.output_dir = str(tmp_path / "a-file")
    before = _datablocks()
    _refused(delight, before, panel=False)
    assert (tmp_path / "a-file").read_text() == "not a folder\n"


def test_engine_killed_mid_job_says_so_and_the_next_run_works(delight, tmp_path):
    delight.steps = 400
    before = _datablocks()
    bpy.ops.diffusion_renderer.delight(wait=False)
    client = _client()
    pump(lambda: (_status().progress or 0) > 0.0 and "denois" in (_status().status or "").lower(), timeout=180)
    os.kill(client.proc.pid, signal.SIGKILL)
    pump(_idle, timeout=60)
    error = _status().last_error
    assert "engine" in error.lower() and "SIGKILL" in error, error
    assert _datablocks() == before and delight.gbuffer_set == ""
    assert not list((tmp_path / "jobs").rglob("manifest.json"))
    delight.steps = 2
    bpy.ops.diffusion_renderer.delight(wait=False)
    pump(_idle, timeout=240)
    assert _status().last_error == "" and _status().last_manifest, _status().last_error


def test_load_result_of_a_damaged_set_changes_nothing(delight, tmp_path):
    assert "FINISHED" in bpy.ops.diffusion_renderer.delight(wait=True)
    manifest = Path(_status().last_manifest)
    s = delight
    assert len(s.results) == 1
    shutil.rmtree(manifest.parent / "normal")
    # a fresh file holding only the result entry: loading it again must add nothing when a pass is gone
    for block in list(bpy.data.images):
        if str(manifest.parent) in bpy.path.abspath(block.filepath):
            bpy.data.images.remove(block)
    for group in list(bpy.data.node_groups):
        bpy.data.node_groups.remove(group)
    before, entries = _datablocks(), [(r.name, r.path) for r in s.results]
    with pytest.raises(RuntimeError) as info:
        bpy.ops.diffusion_renderer.load_result(index=0)
    message = str(info.value)
    assert "normal" in message and "missing" in message and "Delight" in message, message
    assert _datablocks() == before, sorted(_datablocks() - before)
    assert [(r.name, r.path) for r in s.results] == entries
