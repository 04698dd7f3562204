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
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENGINE_PY = os.environ.get("DR_ENGINE_PYTHON", "")
PKG = "bl_ext.user_default.diffusion_renderer"

os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="dr-blender-user-"))
bpy = pytest.importorskip("bpy", reason="bpy (Blender as a Python module) is not installed; run bin/test-blender")
import addon_utils  # noqa: E402

needs_engine = pytest.mark.skipif(not ENGINE_PY, reason="DR_ENGINE_PYTHON (the engine's interpreter) is not set")


def _builder():
    spec = importlib.util.spec_from_file_location("dr_build_extension", REPO / "tools" / "build_extension.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def zip_path(tmp_path_factory):
    return _builder().build(tmp_path_factory.mktemp("dist"), python=sys.executable)


def _repo_index(module: str = "user_default") -> int:
    for i, repo in enumerate(bpy.context.preferences.extensions.repos):
        if repo.module == module:
            return i
    raise AssertionError("no user_default extension repository")


@pytest.fixture(scope="module")
def addon(zip_path):
    bpy.ops.wm.read_factory_settings(use_empty=True)   # before enabling: a reset disables add-ons
    result = bpy.ops.extensions.package_install_files(filepath=str(zip_path), repo="user_default",
                                                      enable_on_install=True)
    assert "FINISHED" in result
    assert PKG in bpy.context.preferences.addons, "the installed extension was not enabled"
    mod = sys.modules[PKG]
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


def test_installed_from_the_zip_with_the_bundled_engine(addon):
    root = Path(addon.__file__).parent
    assert root.parent.name == "user_default"
    assert (root / "engine" / "protocol.py").is_file() and (root / "bin" / "_bootstrap.py").is_file()
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
               "hdri_add", "hdri_remove"):
        assert hasattr(bpy.types, f"DIFFUSION_RENDERER_OT_{op}"), op
        assert hasattr(bpy.ops.diffusion_renderer, op)
    for panel in ("DR_PT_render_main", "DR_PT_render_delight", "DR_PT_view3d_main", "DR_PT_view3d_relight",
                  "DR_PT_image_result", "DR_PT_compositor_result"):
        assert hasattr(bpy.types, panel), panel
    assert bpy.types.DR_PT_render_main.bl_context == "render"
    assert bpy.types.DR_PT_view3d_main.bl_category == "Neural Render"
    s, st = bpy.context.scene.diffusion_renderer, bpy.context.window_manager.diffusion_renderer
    assert (s.lora_scale, s.guidance, s.steps, s.frames, s.overlap) == (pytest.approx(0.25), pytest.approx(1.2), 20, 24, 6)
    assert s.passes() == ["basecolor", "metallic", "roughness", "normal", "depth"]
    assert (st.running, st.progress, st.last_error) == (False, 0.0, "")
    assert sys.modules[PKG + ".client"].timer.is_registered()
    # a failing task reports into the status instead of raising
    s.footage_source, s.image = "IMAGE", None
    with pytest.raises(RuntimeError):
        bpy.ops.diffusion_renderer.delight()
    assert "image sequence" in st.last_error


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

    def __getattr__(self, name):
        return lambda *a, **k: self

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)


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


@pytest.fixture(scope="module")
def tiny_assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui_assets")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    code = "import sys; from engine.random_checkpoint import write_random_checkpoint as w; w(sys.argv[1], 'inverse')"
    subprocess.run([ENGINE_PY, "-c", code, str(root / "ckpt")], check=True, cwd=REPO, env=env)
    seq = root / "plate"
    seq.mkdir()
    for f in (1, 2, 3):
        img = bpy.data.images.new(f"plate{f}", 64, 64)
        img.pixels[:] = [0.2 * f, 0.5, 0.3, 1.0] * (64 * 64)
        img.filepath_raw, img.file_format = str(seq / f"plate.{f:04d}.png"), "PNG"
        img.save()
        bpy.data.images.remove(img)
    return root


@needs_engine
def test_delight_operator_blocking_end_to_end(addon, tiny_assets, tmp_path):
    img = bpy.data.images.load(str(tiny_assets / "plate" / "plate.0001.png"))
    img.source = "SEQUENCE"
    s = bpy.context.scene.diffusion_renderer
    s.footage_source, s.image, s.inverse_model = "IMAGE", img, str(tiny_assets / "ckpt")
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
    assert request["params"]["model"] == str(tiny_assets / "ckpt") and request["params"]["device"] == "cpu"
    if importlib.util.find_spec(PKG + ".reimport") is not None:
        assert bpy.ops.diffusion_renderer.load_result(filepath=str(manifest)) == {"FINISHED"}
