"""Results belong to the artist's file and never take over their render (issue 12, items 1, 3, 4, 11, 12),
in real bpy with the installed extension and the real engine on tiny random checkpoints.

* F12 after a Neural Render result is loaded renders the scene: pixels equal to a render made before.
* Output Folder defaults to ``//neural/`` beside the saved .blend (a path Blender 4.5+ accepts as relative);
  an unsaved file is refused with the choice to make, and nothing is written.
* A job started in A.blend that ends while B.blend is open adds nothing to B; it waits in the registry and
  is loaded when A is opened again.
* Saved result paths are relative: the project folder moved elsewhere still finds its images.
* The result list is saved in the .blend; Load Result loads an entry again; a second run replaces the
  first (no ``.001`` datablocks).
Fixtures (addon, tiny_ckpts, plate) come from conftest.py. Skipped without bpy or DR_ENGINE_PYTHON.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

PKG = "bl_ext.user_default.diffusion_renderer"
bpy = pytest.importorskip("bpy", reason="bpy (Blender as a Python module) is not installed; run bin/test-blender")
needs_engine = pytest.mark.skipif(not os.environ.get("DR_ENGINE_PYTHON"),
                                  reason="DR_ENGINE_PYTHON (the engine's interpreter) is not set")
from addon_driver import client as _client, idle as _idle, pump as _pump, status as _status  # noqa: E402


def _numbered(names) -> list:
    return [n for n in names if len(n) > 4 and n[-4] == "." and n[-3:].isdigit()]


def _datablock_names() -> list:
    return [b.name for coll in (bpy.data.images, bpy.data.node_groups, bpy.data.materials) for b in coll]


def _delight_settings(tiny_ckpts, plate):
    img = bpy.data.images.load(str(plate / "plate.0001.png"), check_existing=True)
    img.source = "SEQUENCE"
    s = bpy.context.scene.diffusion_renderer
    s.footage_source, s.image, s.inverse_model = "IMAGE", img, str(tiny_ckpts["inverse"])
    s.pass_metallic = s.pass_roughness = s.pass_depth = False
    s.frames, s.overlap, s.steps, s.previews = 3, 0, 2, False
    s.resolution_mode, s.res_x, s.res_y = "CUSTOM", 64, 64
    return s


def _new_file(path: Path | None = None):
    """An empty file (the add-on stays enabled), saved as ``path`` when given."""
    bpy.ops.wm.read_homefile(use_empty=True)
    assert PKG in bpy.context.preferences.addons
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        bpy.ops.wm.save_as_mainfile(filepath=str(path))


def test_output_folder_is_next_to_the_blend_and_relative(addon):
    s = bpy.context.scene.diffusion_renderer
    prop = type(s).bl_rna.properties["output_dir"]
    assert prop.default == "//neural/" and s.output_dir == "//neural/"
    if hasattr(prop, "is_path_supports_blend_relative"):          # Blender 4.5+: `//` must be declared
        assert prop.is_path_supports_blend_relative
    assert type(s).bl_rna.properties["add_strip"].default is False


@needs_engine
def test_unsaved_file_is_refused_and_nothing_written(addon, tiny_ckpts, plate, tmp_path, monkeypatch):
    _new_file()
    monkeypatch.chdir(tmp_path)
    _delight_settings(tiny_ckpts, plate)
    assert bpy.data.filepath == ""
    with pytest.raises(RuntimeError, match=r"Save the \.blend file first.*Output Folder"):
        bpy.ops.diffusion_renderer.delight()
    assert list(tmp_path.iterdir()) == [], "wrote into the working directory"
    assert "Output Folder" in _status().last_error


@needs_engine
def test_a_job_ends_in_the_file_that_started_it(addon, tiny_ckpts, plate, tmp_path):
    results = sys.modules[PKG + ".results"]
    blend_b = tmp_path / "other" / "B.blend"
    _new_file(blend_b)
    b_before = sorted(_datablock_names())
    blend_a = tmp_path / "shotA" / "A.blend"
    _new_file(blend_a)
    bpy.context.scene.name = "Shot010"
    _delight_settings(tiny_ckpts, plate)
    bpy.ops.wm.save_mainfile()
    st = _status()
    assert bpy.ops.diffusion_renderer.delight(wait=False) == {"FINISHED"}
    job = _client().registry.get(st.job_id)
    assert Path(job.folder).parent == tmp_path / "shotA" / "neural"                # //neural/ beside A.blend

    bpy.ops.wm.open_mainfile(filepath=str(blend_b))                               # the artist moves on
    _pump(_idle)
    assert job.state == "done", job.error and job.error.full_text()
    assert sorted(_datablock_names()) == b_before, "the result went into B.blend"
    assert len(bpy.context.scene.diffusion_renderer.results) == 0
    [waiting] = results.pending(str(blend_a))
    assert waiting["scene"] == "Shot010" and waiting["manifests"] == [job.manifest]
    bpy.ops.wm.save_mainfile()
    assert results.pending(str(blend_b)) == []

    bpy.ops.wm.open_mainfile(filepath=str(blend_a))                               # load_post delivers it
    s = bpy.context.scene.diffusion_renderer
    assert results.pending(str(blend_a)) == []
    assert [r.name for r in s.results] == ["Shot010.Delight"]
    img = bpy.data.images["Shot010.Delight.Base Color"]
    assert Path(bpy.path.abspath(img.filepath)).is_relative_to(Path(job.manifest).parent)
    assert img.filepath.startswith("//neural/") and s.results[0].path.startswith("//neural/")
    assert Path(bpy.path.abspath(s.gbuffer_set)) == Path(job.manifest).parent        # ready for Relight Preview

    # saved paths are relative: the project folder moved elsewhere still finds every file
    bpy.ops.wm.save_mainfile()
    moved = tmp_path / "moved" / "shotA"
    shutil.copytree(tmp_path / "shotA", moved)
    shutil.rmtree(tmp_path / "shotA")
    bpy.ops.wm.open_mainfile(filepath=str(moved / "A.blend"))
    ours = [i for i in bpy.data.images if i.name.startswith("Shot010.")]
    assert ours and all(i.filepath.startswith("//") for i in ours)
    for img in ours:
        path = Path(bpy.path.abspath(img.filepath))
        assert path.is_file() and path.is_relative_to(moved), img.filepath
    img = bpy.data.images["Shot010.Delight.Base Color"]
    img.reload()
    assert tuple(img.size) == (64, 64) and img.has_data                           # the moved file loads

    # the result list survived the restart; Load Result loads an entry again, replacing it in place
    s = bpy.context.scene.diffusion_renderer
    assert [r.name for r in s.results] == ["Shot010.Delight"]
    assert Path(bpy.path.abspath(s.results[0].path)).is_file()
    count = len(_datablock_names())
    assert bpy.ops.diffusion_renderer.load_result(index=0) == {"FINISHED"}
    assert len(_datablock_names()) == count and not _numbered(_datablock_names())


@needs_engine
def test_a_second_run_replaces_the_first(addon, tiny_ckpts, plate, tmp_path):
    _new_file(tmp_path / "proj" / "shot.blend")
    bpy.context.scene.name = "Shot020"
    _delight_settings(tiny_ckpts, plate)
    st = _status()
    assert bpy.ops.diffusion_renderer.delight() == {"FINISHED"}
    first = Path(st.last_manifest).parent
    names = sorted(_datablock_names())
    assert bpy.ops.diffusion_renderer.delight() == {"FINISHED"}
    second = Path(st.last_manifest).parent
    assert second != first and sorted(_datablock_names()) == names
    assert not _numbered(_datablock_names()), _datablock_names()
    img = bpy.data.images["Shot020.Delight.Base Color"]
    assert Path(bpy.path.abspath(img.filepath)).is_relative_to(second)          # files switched to the re-run
    s = bpy.context.scene.diffusion_renderer
    assert [r.name for r in s.results] == ["Shot020.Delight"]
    assert Path(bpy.path.abspath(s.results[0].path)).parent == second


def _render(path: Path) -> list:
    bpy.context.scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    img = bpy.data.images.load(str(path), check_existing=False)
    try:
        return list(img.pixels[:])
    finally:
        bpy.data.images.remove(img)


@needs_engine
def test_f12_still_renders_the_scene_after_a_neural_render(addon, tiny_ckpts, tmp_path):
    import importlib

    _new_file()
    demo = importlib.import_module(PKG + ".demo_scene")
    scene = demo.build_demo_scene(frames=3, resolution=(48, 32), name="Shot030")
    (tmp_path / "proj").mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "proj" / "shot.blend"))
    scene.cycles.samples, scene.cycles.use_denoising = 4, False
    scene.render.image_settings.file_format = "PNG"
    assert scene.render.use_sequencer                                   # Post Processing › Sequencer on
    before = _render(tmp_path / "before.png")

    s = scene.diffusion_renderer
    hdri = bpy.data.images.new("sky", 32, 16, float_buffer=True)
    hdri.pixels[:] = [2.0, 1.5, 1.0, 1.0] * (32 * 16)
    hdri.filepath_raw, hdri.file_format = str(tmp_path / "sky.hdr"), "HDR"
    hdri.save()
    bpy.data.images.remove(hdri)
    s.forward_model, s.hdri_source, s.hdri_path = str(tiny_ckpts["forward"]), "FILE", str(tmp_path / "sky.hdr")
    s.frames, s.overlap, s.steps, s.previews, s.lora_scale = 3, 0, 2, False, 0.0
    s.resolution_mode, s.res_x, s.res_y = "CUSTOM", 64, 64
    assert bpy.ops.diffusion_renderer.neural_render() == {"FINISHED"}
    assert [r.name for r in s.results] == ["Shot030.Neural Render"]
    relit = json.loads(Path(_status().last_manifest).read_text())
    assert relit["kind"] == "relit" and bpy.data.images.get("Shot030.Neural Render.Relit") is not None
    ed = scene.sequence_editor
    assert ed is None or len(ed.strips_all if hasattr(ed, "strips_all") else ed.sequences_all) == 0

    after = _render(tmp_path / "after.png")
    assert after == before, "F12 no longer renders the scene"
