"""The add-on as users get it: the extension zip built by tools/build_extension.py, installed with
``bpy.ops.extensions.package_install_files`` into the sandboxed user resources, registered, and driving the
engine subprocess (the zip's own engine copy, run by DR_ENGINE_PYTHON) through its operators: "Test engine"
and a blocking Delight job on a tiny image sequence with a tiny random inverse checkpoint.

Skipped without bpy; the engine tests also skip without DR_ENGINE_PYTHON (bin/test-blender sets it).
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path

import pytest

PKG = "bl_ext.user_default.diffusion_renderer"      # fixtures: conftest.py (addon, tiny_ckpts, plate)
bpy = pytest.importorskip("bpy", reason="bpy (Blender as a Python module) is not installed; run bin/test-blender")
needs_engine = pytest.mark.skipif(not os.environ.get("DR_ENGINE_PYTHON"),
                                  reason="DR_ENGINE_PYTHON (the engine's interpreter) is not set")


def test_installed_from_the_zip_with_the_bundled_engine(addon):
    root = Path(addon.__file__).parent
    assert root.parent.name == "user_default"
    assert (root / "engine" / "contract" / "protocol.py").is_file() and (root / "bin" / "_bootstrap.py").is_file()
    assert Path(addon.preferences.engine_root()) == root       # the engine copy inside the extension


def test_preferences_fields(addon):
    prefs = bpy.context.preferences.addons[PKG].preferences
    for name in ("engine_python", "weights_dir", "allow_download", "device", "precision", "keep_warm"):
        assert hasattr(prefs, name), name
    assert prefs.bl_rna.properties["engine_python"].subtype == "FILE_PATH"
    assert prefs.bl_rna.properties["weights_dir"].subtype == "DIR_PATH"
    assert {i.identifier for i in prefs.bl_rna.properties["device"].enum_items} == {"auto", "cuda", "cpu"}
    assert {i.identifier for i in prefs.bl_rna.properties["precision"].enum_items} == {"auto", "fp16", "bf16", "fp32"}
    prefs.weights_dir = "/tmp/dr-weights"
    prefs.allow_download = True
    cfg = addon.preferences.engine_config(prefs)
    assert cfg.env["HF_HOME"] == "/tmp/dr-weights"
    # bpy as a module has online access off: downloads stay disabled whatever the preference says
    assert cfg.env.get("HF_HUB_OFFLINE") == ("1" if not bpy.app.online_access else cfg.env.get("HF_HUB_OFFLINE"))
    prefs.weights_dir, prefs.allow_download = "", False
    assert addon.preferences.engine_config(prefs).env.get("HF_HUB_OFFLINE") == "1"


def test_operators_panels_and_properties_registered(addon):
    for op in ("neural_render", "delight", "relight_preview", "cancel", "load_result", "setup_engine", "test_engine",
               "hdri_add", "hdri_remove", "download_model"):
        assert hasattr(bpy.types, f"DIFFUSION_RENDERER_OT_{op}"), op
        assert hasattr(bpy.ops.diffusion_renderer, op)
    for panel in ("DR_PT_render_main", "DR_PT_render_delight", "DR_PT_view3d_main", "DR_PT_view3d_relight",
                  "DR_PT_image_result", "DR_PT_compositor_result"):
        assert hasattr(bpy.types, panel), panel
    assert bpy.types.DR_PT_render_main.bl_context == "render"
    assert bpy.types.DR_PT_view3d_main.bl_category == "Neural Render"
    s, st = bpy.context.scene.diffusion_renderer, bpy.context.window_manager.diffusion_renderer
    assert (s.lora_scale, s.guidance, s.steps, s.frames, s.overlap) == (pytest.approx(0.25), pytest.approx(1.2), 20, 24, 6)
    assert sys.modules[PKG + ".properties"].passes(s) == ["basecolor", "metallic", "roughness", "normal", "depth"]
    assert (st.running, st.progress, st.last_error) == (False, 0.0, "")
    assert sys.modules[PKG + ".client"].timer.is_registered()
    # a failing task reports into the status instead of raising
    s.footage_source, s.image, s.output_dir = "IMAGE", None, tempfile.mkdtemp(prefix="dr-ui-")   # file unsaved
    with pytest.raises(RuntimeError):
        bpy.ops.diffusion_renderer.delight()
    assert "Image Sequence" in st.last_error and "Delight" in st.last_error


class FakeLayout:
    """Records draw calls (no GPU drawing headless); checks every drawn property and operator exists."""

    def __init__(self):
        self.calls = []

    def prop(self, data, name, **kw):
        assert name in data.bl_rna.properties, name
        self.calls.append(("prop", name))
        return self

    def operator(self, idname, **kw):
        mod, op = idname.split(".")
        assert hasattr(getattr(bpy.ops, mod), op), idname
        self.calls.append(("operator", idname))
        return self                       # the operator's properties are set on it

    def __getattr__(self, name):
        return lambda *a, **k: self

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)


def test_scene_settings_follow_the_contracts_parameter_table(addon):
    """The job settings' defaults, limits and tooltips are the contract's (engine/contract/params.py), read
    by the installed extension from its own engine copy."""
    params = sys.modules[PKG + ".contract"].params
    rna = bpy.context.scene.diffusion_renderer.bl_rna.properties
    props = {"frames": "frames", "overlap": "overlap", "steps": "steps", "seed": "seed", "previews": "previews",
             "lora_scale": "lora_scale", "guidance": "guidance", "guidance_end": "guidance",
             "rotate_light": "rotate_light"}
    for prop, name in props.items():
        p, r = params.param(name), rna[prop]
        assert r.default == pytest.approx(p.default_for(None)), prop
        assert r.description == p.help, prop
        if p.minimum is not None:
            assert r.hard_min == pytest.approx(p.minimum), prop
        limit = p.maximum if p.maximum is not None else p.ui_max
        if limit is not None:      # Blender's int properties are 32-bit: larger limits are clamped
            assert r.hard_max == pytest.approx(min(limit, 2**31 - 1) if r.type == "INT" else limit), prop
    assert rna["forward_model"].default == params.default("model", "forward") == "forward"
    assert rna["inverse_model"].default == params.default("model", "inverse") == "inverse"
    ticked = [n for n in params.param("passes").choices if rna[f"pass_{n}"].default]
    assert ticked == params.default("passes") and rna["guidance"].hard_max == 20.0
    assert sys.modules[PKG + ".contract"].protocol.__name__ == PKG + ".engine.contract.protocol"


def test_guidance_ramp_is_sent_as_the_contracts_min_max_pair(addon):
    """Guidance Ramp on: the forward job's guidance is [Guidance, Guidance End], which the contract accepts."""
    props, params = sys.modules[PKG + ".properties"], sys.modules[PKG + ".contract"].params
    s = bpy.context.scene.diffusion_renderer
    s.guidance, s.guidance_end, s.guidance_ramp = 1.0, 3.0, False
    assert props.guidance(s) == pytest.approx(1.0)
    s.guidance_ramp = True
    assert props.guidance(s) == pytest.approx([1.0, 3.0])
    assert params.problems("forward", {"gbuffers": "g", "hdri": ["h.hdr"], "guidance": props.guidance(s)}) == []


def test_panels_draw(addon):
    s, st = bpy.context.scene.diffusion_renderer, bpy.context.window_manager.diffusion_renderer
    s.hdris.add().path = "/tmp/x.hdr"
    st.running, st.last_error, st.last_manifest = True, "boom\nsecond line", "/tmp/m.json"
    try:
        drawn = set()
        for name in dir(bpy.types):
            if name.startswith("DR_PT_"):
                panel = getattr(bpy.types, name)
                layout = FakeLayout()
                fake = type("P", (), {"layout": layout})()
                fake.drawer = getattr(panel, "drawer", None)
                panel.draw(fake, bpy.context)
                drawn.update(c[1] for c in layout.calls)
        assert {"diffusion_renderer.delight", "diffusion_renderer.neural_render", "diffusion_renderer.cancel",
                "diffusion_renderer.relight_preview", "diffusion_renderer.load_result", "lora_scale"} <= drawn
    finally:
        st.running, st.last_error, st.last_manifest = False, "", ""
        s.hdris.clear()


@needs_engine
def test_test_engine_round_trip(addon):
    assert bpy.ops.diffusion_renderer.test_engine(timeout=240.0) == {"FINISHED"}
    info = bpy.context.window_manager.diffusion_renderer.engine_info
    assert "torch" in info and "device cpu" in info, info
    assert "torch" in addon.preferences.test_info()["text"]


@needs_engine
def test_delight_operator_blocking_end_to_end(addon, tiny_ckpts, plate, tmp_path):
    img = bpy.data.images.load(str(plate / "plate.0001.png"))
    img.source = "SEQUENCE"
    s = bpy.context.scene.diffusion_renderer
    s.footage_source, s.image, s.inverse_model = "IMAGE", img, str(tiny_ckpts["inverse"])
    s.pass_metallic = s.pass_roughness = s.pass_depth = False
    s.frames, s.overlap, s.steps, s.previews = 3, 0, 2, False
    s.resolution_mode, s.res_x, s.res_y = "CUSTOM", 64, 64
    s.output_dir = str(tmp_path / "jobs")
    assert bpy.ops.diffusion_renderer.delight() == {"FINISHED"}        # EXEC_DEFAULT: the blocking path
    st = bpy.context.window_manager.diffusion_renderer
    assert st.last_error == "" and not st.running and st.progress == pytest.approx(1.0)
    manifest = Path(st.last_manifest)
    assert manifest.is_file() and manifest.is_relative_to(tmp_path / "jobs")
    data = json.loads(manifest.read_text())
    assert "basecolor" in json.dumps(data) and "normal" in json.dumps(data)
    assert Path(s.gbuffer_set) == manifest.parent                          # ready for Relight Preview
    request = json.loads((manifest.parent.parent / "request.json").read_text())
    assert request["params"]["model"] == str(tiny_ckpts["inverse"]) and request["params"]["device"] == "cpu"
    if importlib.util.find_spec(PKG + ".reimport") is not None:
        assert bpy.ops.diffusion_renderer.load_result(filepath=str(manifest)) == {"FINISHED"}
