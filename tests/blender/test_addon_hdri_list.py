"""The Relight Preview HDRI list: several files per Add, names in the rows, per-HDRI rotation (the World's
Mapping convention), strength and flip sent to the forward job as ``hdri_settings``."""
from __future__ import annotations

import sys

import pytest

PKG = "bl_ext.user_default.diffusion_renderer"
bpy = pytest.importorskip("bpy", reason="bpy (Blender as a Python module) is not installed; run bin/test-blender")


@pytest.fixture
def hdris(tmp_path):
    files = []
    for name in ("studio.hdr", "sunset.exr"):
        (tmp_path / name).write_bytes(b"#?RADIANCE\n")
        files.append(tmp_path / name)
    yield files
    bpy.context.scene.diffusion_renderer.hdris.clear()


def test_add_several_files_at_once_with_their_names(addon, hdris):
    s = bpy.context.scene.diffusion_renderer
    s.hdris.clear()
    assert bpy.ops.diffusion_renderer.hdri_add(directory=str(hdris[0].parent),
                                               files=[{"name": p.name} for p in hdris]) == {"FINISHED"}
    assert [h.name for h in s.hdris] == ["studio.hdr", "sunset.exr"] and s.hdri_index == 1
    hl = sys.modules[PKG + ".hdri_list"]
    assert [hl.display_name(h) for h in s.hdris] == ["studio.hdr", "sunset.exr"]
    with pytest.raises(RuntimeError, match="not an HDRI"):
        bpy.ops.diffusion_renderer.hdri_add(directory=str(hdris[0].parent), files=[{"name": "notes.txt"}])
    assert len(s.hdris) == 2


def test_rows_draw_the_file_name(addon, hdris):
    hl = sys.modules[PKG + ".hdri_list"]
    s = bpy.context.scene.diffusion_renderer
    item = s.hdris.add()
    item.path = str(hdris[0])
    texts = []

    class Row:
        def row(self, **kw):
            return self

        def label(self, text="", **kw):
            texts.append(text)

    hl.DR_UL_hdris.draw_item(None, bpy.context, Row(), s, item, 0, s, "hdri_index", 0)
    assert texts[0] == "studio.hdr"


def test_per_hdri_settings_reach_the_forward_request(addon, hdris, tmp_path):
    s = bpy.context.scene.diffusion_renderer
    s.hdris.clear()
    for path in hdris:
        s.hdris.add().path = str(path)
    rna = s.hdris[0].bl_rna.properties["rotation"]
    assert (rna.subtype, rna.unit) == ("ANGLE", "ROTATION")         # degrees in the UI, as the Mapping node
    s.hdris[0].rotation, s.hdris[0].strength = 1.5707963267948966, 2.0      # 90°
    s.hdris[1].flip = True
    (tmp_path / "set").mkdir()
    s.gbuffer_set, s.output_dir = str(tmp_path / "set"), str(tmp_path / "out")
    steps = sys.modules[PKG + ".task_steps"]
    kind, params, _ = steps.relight_step(bpy.context, None)
    assert kind == "forward" and params["hdri"] == [str(p) for p in hdris]
    assert params["hdri_settings"] == [{"rotation": pytest.approx(270.0), "strength": 2.0, "flip": False},
                                       {"rotation": pytest.approx(180.0), "strength": 1.0, "flip": True}]
    protocol = sys.modules[PKG + ".contract"].protocol
    assert protocol.validate(protocol.submit("j", kind, str(tmp_path), params)) == []
