"""G-buffer export of the analytic scene (bpy_scene.build_export_scene): a 3-frame 64×64 Cycles render into a
Blender render folder (frame EXRs written by Blender + render.json), converted by the engine and checked
against the known materials and geometry; forward's model inputs from the raw folder and from the converted
set identical; the scene left exactly as it was (also after a failure or cancel midway)."""
from __future__ import annotations

import json
import os

import pytest

import bpy_scene as S
from bpy_scene import bpy

np = pytest.importorskip("numpy")

from diffusion_renderer_addon.contract import render_json  # noqa: E402
from diffusion_renderer_addon.export import ExportError, export_gbuffers  # noqa: E402
from diffusion_renderer_addon.export import gbuffer_export  # noqa: E402

FRAMES = [1, 2, 3]
SIZE = 64
PASS_CHANNELS = {"rgb": 3, "basecolor": 3, "normal": 3, "depth": 1, "roughness": 1, "metallic": 1, "alpha": 1}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    scene = S.build_export_scene(frames=(1, 3), size=SIZE)
    before = S.fingerprint(scene)
    root = tmp_path_factory.mktemp("gbuf")
    seen = []
    result = export_gbuffers(scene, root / "render", samples=1, progress=lambda d, t, m: seen.append((d, t, m)))
    after = S.fingerprint(scene)
    manifest, passes, warnings = S.convert_render(root / "render", root / "set")
    return {"scene": scene, "out": root / "render", "set": root / "set", "result": result, "before": before,
            "after": after, "manifest": manifest, "passes": passes, "warnings": warnings, "progress": seen}


def test_scene_restored_exactly(exported):
    assert S.diff(exported["before"], exported["after"]) == []


def test_render_folder_and_render_json(exported):
    out = exported["out"]
    assert exported["result"] == out
    files = [out / f"frame_{f:06d}.exr" for f in FRAMES]
    assert sorted(p.name for p in out.iterdir()) == sorted([p.name for p in files] + ["render.json"])
    data = render_json.load(out)  # validates, and every frame's EXR is there
    assert data["format"] == render_json.FORMAT and data["version"] == render_json.VERSION
    assert data["frame_numbers"] == FRAMES and data["resolution"] == [SIZE, SIZE] and data["fps"] == 24
    assert data["pattern"] == render_json.FRAME_PATTERN and data["view_layer"] == "ViewLayer"
    assert data["aovs"] == {"basecolor": "basecolor", "roughness": "roughness", "metallic": "metallic"}
    assert data["render_engine"] == "CYCLES" and data["samples"] == 1 and data["filter_width"] == 0.01
    assert data["blender_version"] == bpy.app.version_string and data["created"].endswith("Z")
    assert data["scene"] == exported["scene"].name and data["camera"] == "Camera" and data["source"] is None
    assert data["colour_management"]["view_transform"] == exported["scene"].view_settings.view_transform
    assert data["seconds"] > 0 and "notes" not in data  # every material of the scene was injected
    # cameras: per frame, the keyed translation along the camera's X
    assert [c["frame"] for c in data["cameras"]] == FRAMES
    rot = np.array(S._rot())
    for i, cam in enumerate(data["cameras"]):
        mw = np.array(cam["matrix_world"])
        assert np.allclose(mw[:3, :3], rot, atol=1e-6)
        assert np.allclose(mw[:3, 3], np.array(S.CAM_LOC) + rot[:, 0] * S.STEP * i, atol=1e-5)
        assert cam["lens_mm"] == 50.0 and cam["sensor_width_mm"] == 36.0 and cam["sensor_fit"] == "AUTO"
        assert cam["clip_start"] == pytest.approx(0.1) and cam["clip_end"] == 100.0 and cam["type"] == "PERSP"
    # the frames are Blender's own multilayer EXRs (magic number, 32-bit float: depth needs it); render.json last
    for p in files:
        assert p.read_bytes()[:4] == b"\x76\x2f\x31\x01"
    assert os.path.getmtime(out / "render.json") >= max(os.path.getmtime(p) for p in files)
    assert exported["progress"][0] == (0, 3, "frame 1") and exported["progress"][-1][:2] == (3, 3)


def test_converted_set_manifest(exported):
    m = exported["manifest"]
    assert m["format"] == "diffusion-renderer/gbuffer-set" and m["kind"] == "gbuffer" and not exported["warnings"]
    assert m["frame_numbers"] == FRAMES and m["resolution"] == [SIZE, SIZE] and m["fps"] == 24
    assert set(m["passes"]) == set(PASS_CHANNELS) and m["alpha"] == "alpha"
    assert m["depth"]["kind"] == "metric" and m["depth"]["range_rule"] == "clip-min-p98"
    assert m["depth"]["near"] == pytest.approx(2.0 - 0.15, abs=1e-3)   # the cube's front face
    assert m["depth"]["far"] == pytest.approx(S.PLANE_DEPTH, abs=1e-3)  # the plane (≥ 2 % of pixels)
    assert m["provenance"]["producer"] == "blender"
    assert m["camera"] == render_json.load(exported["out"])["cameras"]


def _classes(depth, alpha):
    covered = alpha[..., 0] >= 1.0 - 1e-3
    d = depth[..., 0]
    return {k: covered & (d >= lo) & (d <= hi) for k, (_, _, _, (lo, hi)) in S.EXPECTED.items()}


@pytest.mark.parametrize("frame", FRAMES)
def test_analytic_values(exported, frame):
    i = FRAMES.index(frame)
    p = {n: exported["passes"][n][i] for n in PASS_CHANNELS}
    assert {n: v.shape for n, v in p.items()} == {n: (SIZE, SIZE, c) for n, c in PASS_CHANNELS.items()}
    alpha = p["alpha"][..., 0]
    classes = _classes(p["depth"], p["alpha"])
    for name, mask in classes.items():
        assert mask.sum() >= 8, f"{name}: only {mask.sum()} pixels found at frame {frame}"
        base, rough, metal, _ = S.EXPECTED[name]
        # AOV values (the cube has no material: the defaults, filled by the engine): exact up to half precision
        assert np.abs(p["basecolor"][mask] - np.array(base)).max() < 1e-3, name
        assert np.abs(p["roughness"][mask][:, 0] - rough).max() < 1e-3, name
        assert np.abs(p["metallic"][mask][:, 0] - metal).max() < 1e-3, name
    # every covered pixel belongs to one of the surfaces; background is alpha 0 and empty
    covered = alpha > 0
    assert (sum(classes.values()) == covered).all()
    bg = ~covered
    assert bg.sum() > 100
    for key in ("basecolor", "roughness", "metallic", "normal", "rgb"):
        assert np.abs(p[key][bg]).max() == 0.0, key
    assert (p["depth"][bg] == 1e10).all()
    assert set(np.unique(alpha)) <= {0.0, 1.0}  # narrow pixel filter: no partial coverage
    # planar depth: the plane (tilted far from the image centre) is exactly 5 everywhere
    assert np.abs(p["depth"][classes["plane"]] - S.PLANE_DEPTH).max() < 1e-4
    cube_front = classes["cube_nomat"] & (np.abs(p["depth"][..., 0] - 1.85) < 1e-3)
    assert cube_front.sum() >= 8 and np.abs(p["depth"][cube_front] - 1.85).max() < 1e-4
    # normals: unit camera-space vectors facing the camera; the plane and the cube face → (0, 0, 1)
    n = p["normal"]
    assert np.abs(np.linalg.norm(n[covered], axis=-1) - 1).max() < 2e-3
    for flat in (classes["plane"], cube_front):
        assert np.abs(n[flat] - np.array([0, 0, 1.0])).max() < 2e-3
    # the spheres: compare with the analytic sphere normal through each pixel's depth
    off = S.camera_centre_offset(i)
    ii, jj = np.mgrid[0:SIZE, 0:SIZE]
    x_ndc = ((jj + 0.5) / SIZE * 2 - 1) * S.HALF_FOV
    y_ndc = (1 - (ii + 0.5) / SIZE * 2) * S.HALF_FOV
    d = p["depth"][..., 0]
    pos = np.stack([x_ndc * d, y_ndc * d, -d], -1)
    assert ((n * -pos).sum(-1)[covered] > -1e-3).all()  # every visible normal faces the camera
    for name in ("sphere_group", "sphere_diffuse"):
        expect = pos - (np.array(S.OBJECTS[name][0]) - np.array(off))
        expect /= np.linalg.norm(expect, axis=-1, keepdims=True)
        dots = (expect[classes[name]] * n[classes[name]]).sum(-1)
        assert np.median(dots) > 0.999 and dots.min() > 0.98, name
    # the linear render: finite, lit where covered
    assert np.isfinite(p["rgb"]).all() and (p["rgb"][covered] > 0).any()


FORWARD_INPUTS = r"""
import json, sys
import numpy as np
from engine.jobs.gbuffer_inputs import load_gbuffer_clips
raw, = load_gbuffer_clips(sys.argv[1])
conv, = load_gbuffer_clips(sys.argv[2])
print(json.dumps({"layouts": [raw.layout, conv.layout], "frames": [raw.frame_numbers, conv.frame_numbers],
  "fps": [raw.fps, conv.fps], "cameras_equal": raw.cameras == conv.cameras, "keys": sorted(raw.inputs),
  "entries_equal": raw.camera_entries == conv.camera_entries, "warnings": raw.warnings + conv.warnings,
  "identical": {k: bool(np.array_equal(raw.inputs[k], conv.inputs[k])) for k in raw.inputs},
  "same_keys": sorted(raw.inputs) == sorted(conv.inputs),
  "model": {k: [list(v.shape), float(v.min()), float(v.max())] for k, v in raw.inputs.items()},
  "plane_base": raw.inputs["basecolor"][0, 32, 32].tolist()}))
"""


def test_forward_inputs_from_the_raw_render_equal_the_converted_set(exported):
    """forward on the raw Blender EXRs and forward on the converted set see identical model inputs."""
    r = json.loads(S.run_engine(FORWARD_INPUTS, exported["out"], exported["set"]))
    assert r["same_keys"] and set(r["keys"]) >= {"basecolor", "normal", "depth", "roughness", "metallic"}
    assert r["identical"] == {k: True for k in r["keys"]}
    assert r["frames"] == [FRAMES, FRAMES] and r["fps"] == [24.0, 24.0] and not r["warnings"]
    assert r["cameras_equal"] and r["entries_equal"] and r["layouts"][1] == "gbuffer-set"
    for name, (shape, lo, hi) in r["model"].items():
        assert shape == [3, SIZE, SIZE, 3] and 0.0 <= lo <= hi <= 1.0, name
    assert r["plane_base"] != [0.8, 0.2, 0.1]  # model encoding (sRGB), not the linear value


# ------------------------------------------------------------------------------------------ failures
def _partial_files(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")] if folder.is_dir() else []


def test_failure_midway_restores_everything(tmp_path, monkeypatch):
    scene = S.build_export_scene(frames=(1, 3), size=32)
    before = S.fingerprint(scene)
    calls = {"n": 0}
    real = gbuffer_export._render_frame

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("injected failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(gbuffer_export, "_render_frame", failing)
    out = tmp_path / "render"
    with pytest.raises(RuntimeError, match="injected failure"):
        export_gbuffers(scene, out)
    assert S.diff(before, S.fingerprint(scene)) == []
    assert not (out / "render.json").exists()  # incomplete: no render.json
    assert (out / "frame_000001.exr").is_file() and not (out / "frame_000002.exr").exists()
    assert _partial_files(out) == []
    assert not [i for i in bpy.data.images if i.type == "RENDER_RESULT"]  # the file had none


def test_cancel_removes_the_previous_render_json_and_restores(tmp_path):
    scene = S.build_export_scene(frames=(1, 3), size=16)
    out = export_gbuffers(scene, tmp_path / "render")
    before = S.fingerprint(scene)

    class Cancelled(Exception):
        pass

    def progress(done, total, message):
        if done == 1:
            raise Cancelled

    with pytest.raises(Cancelled):
        export_gbuffers(scene, out, overwrite=True, progress=progress)
    assert S.diff(before, S.fingerprint(scene)) == []
    assert not (out / "render.json").exists()
    with pytest.raises(render_json.RenderJsonError, match="incomplete"):
        render_json.load(out)


def test_failure_during_injection_restores(tmp_path, monkeypatch):
    from diffusion_renderer_addon.export import aov_injection

    scene = S.build_export_scene(frames=(1, 1), size=16)
    before = S.fingerprint(scene)
    calls = {"n": 0}
    real = aov_injection._Injector.material

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # two materials already injected, the group exposed
            raise RuntimeError("injected failure in injection")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(aov_injection._Injector, "material", failing)
    with pytest.raises(RuntimeError, match="injection"):
        export_gbuffers(scene, tmp_path / "render")
    assert calls["n"] == 3
    assert S.diff(before, S.fingerprint(scene)) == []
    assert not (tmp_path / "render").exists()


def test_render_failure_is_an_export_error_and_restores(tmp_path, monkeypatch):
    scene = S.build_export_scene(frames=(1, 2), size=16)
    before = S.fingerprint(scene)

    class FakeRender:  # bpy.ops.render.render returning CANCELLED without writing a file
        @staticmethod
        def render(**kw):
            return {"CANCELLED"}

    monkeypatch.setattr(bpy.ops, "render", FakeRender, raising=False)
    with pytest.raises(ExportError, match="rendering frame 1 failed .*frame_000001.exr"):
        export_gbuffers(scene, tmp_path / "render")
    monkeypatch.undo()
    assert S.diff(before, S.fingerprint(scene)) == []
    assert not (tmp_path / "render" / "render.json").exists()


# ------------------------------------------------------------------------------------------ options
def test_frame_selection_and_resolution(tmp_path):
    scene = S.build_export_scene(frames=(1, 3), size=64)
    out = export_gbuffers(scene, tmp_path / "a", frame_range=[1, 3], resolution=(32, 24))
    data = render_json.load(out)
    assert data["frame_numbers"] == [1, 3] and data["resolution"] == [32, 24]
    assert [c["frame"] for c in data["cameras"]] == [1, 3]
    assert not (out / "frame_000002.exr").exists()
    passes, info = S.render_passes(out)
    assert passes["depth"].shape == (2, 24, 32, 1) and info["frame_numbers"] == [1, 3]
    out = export_gbuffers(scene, tmp_path / "b", frame_range=(2, 3))
    assert render_json.load(out)["frame_numbers"] == [2, 3]
    assert scene.render.resolution_x == 64 and scene.frame_current == 1


def test_big_frame_numbers_and_errors(tmp_path):
    scene = S.build_export_scene(frames=(1, 1), size=16)
    out = export_gbuffers(scene, tmp_path / "a", frame_range=[12345])
    assert (out / "frame_012345.exr").is_file() and render_json.load(out)["frame_numbers"] == [12345]
    with pytest.raises(ExportError, match="non-negative"):
        export_gbuffers(scene, tmp_path / "b", frame_range=(-2, 1))
    with pytest.raises(ExportError, match="end is before the start"):
        export_gbuffers(scene, tmp_path / "b", frame_range=(3, 1))
    with pytest.raises(ExportError, match="cannot render G-buffers; choose Cycles or EEVEE"):
        export_gbuffers(scene, tmp_path / "b", engine="BLENDER_WORKBENCH")
    with pytest.raises(ExportError, match="no view layer 'nope'"):
        export_gbuffers(scene, tmp_path / "b", view_layer="nope")
    cam = scene.camera
    scene.camera = None
    with pytest.raises(ExportError, match="no active camera"):
        export_gbuffers(scene, tmp_path / "b")
    scene.camera = cam
    assert not (tmp_path / "b" / "render.json").exists()


def test_refuses_a_different_clip_unless_overwrite(tmp_path):
    scene = S.build_export_scene(frames=(1, 1), size=16)
    out = tmp_path / "render"
    out.mkdir()
    other = render_json.new(frames=[5], fps=24, resolution=[16, 16], view_layer="ViewLayer",
                            aovs={k: k for k in render_json.AOV_KEYS}, cameras=[{"frame": 5, "matrix_world": [
                                [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]}], source="/elsewhere/shot.blend")
    render_json.write(out, other)
    with pytest.raises(ExportError, match="different clip .*/elsewhere/shot.blend.*overwrite"):
        export_gbuffers(scene, out)
    assert render_json.dumps(json.loads((out / "render.json").read_text())) == render_json.dumps(other)  # untouched
    export_gbuffers(scene, out, overwrite=True)
    assert json.loads((out / "render.json").read_text())["frame_numbers"] == [1]
    # the same clip again (same source, frames and size): no overwrite needed
    export_gbuffers(scene, out, source="/here/shot.blend", overwrite=True)
    export_gbuffers(scene, out, source="/here/shot.blend")
    # a G-buffer set is never mixed with a render
    gset = tmp_path / "set"
    gset.mkdir()
    (gset / "manifest.json").write_text("{}")
    for ow in (False, True):
        with pytest.raises(ExportError, match="holds a G-buffer set"):
            export_gbuffers(scene, gset, overwrite=ow)
    assert sorted(p.name for p in gset.iterdir()) == ["manifest.json"]


def test_user_aov_named_basecolor_is_not_reused(tmp_path):
    scene = S.build_export_scene(frames=(1, 1), size=32)
    a = scene.view_layers[0].aovs.add()
    a.name, a.type = "basecolor", "COLOR"
    before = S.fingerprint(scene)
    out = export_gbuffers(scene, tmp_path / "render")
    assert render_json.load(out)["aovs"]["basecolor"] == "DR_basecolor"
    p, _info = S.render_passes(out)
    cls = _classes(p["depth"][0], p["alpha"][0])
    assert np.abs(p["basecolor"][0][cls["plane"]] - np.array([0.8, 0.2, 0.1])).max() < 1e-3
    assert S.diff(before, S.fingerprint(scene)) == []


def test_output_colour_management_override_is_not_used(tmp_path):
    """An output colour-management override would change the EXR's linear space: the export follows the
    scene, and restores the override."""
    scene = S.build_export_scene(frames=(1, 1), size=16)
    settings = scene.render.image_settings
    if "color_management" not in settings.bl_rna.properties:
        pytest.skip("no output colour management override in this Blender")
    settings.color_management = "OVERRIDE"
    before = S.fingerprint(scene)
    seen = {}
    real = gbuffer_export._render_frame

    def spy(scn, *args):
        seen["cm"] = scn.render.image_settings.color_management
        return real(scn, *args)

    gbuffer_export._render_frame = spy
    try:
        export_gbuffers(scene, tmp_path / "render")
    finally:
        gbuffer_export._render_frame = real
    assert seen["cm"] == "FOLLOW_SCENE" and settings.color_management == "OVERRIDE"
    assert S.diff(before, S.fingerprint(scene)) == []


@pytest.mark.skipif(not os.environ.get("DR_TEST_EEVEE"), reason="EEVEE renders through software GL here "
                    "(≈ 20–40 s of shader compilation); set DR_TEST_EEVEE=1 to run")
def test_eevee_export(tmp_path):
    scene = S.build_export_scene(frames=(1, 1), size=32)
    before = S.fingerprint(scene)
    out = export_gbuffers(scene, tmp_path / "render", engine="EEVEE")
    assert S.diff(before, S.fingerprint(scene)) == []
    assert render_json.load(out)["render_engine"] in ("BLENDER_EEVEE", "BLENDER_EEVEE_NEXT")
    _m, p, _w = S.convert_render(out, tmp_path / "set")
    p = {k: v[0] for k, v in p.items()}
    bg = p["alpha"][..., 0] == 0
    assert bg.any() and (p["depth"][bg] == 1e10).all()  # EEVEE's clip_end background recorded as 1e10
    plane = (np.abs(p["depth"][..., 0] - S.PLANE_DEPTH) < 1e-3) & (p["alpha"][..., 0] > 0.99)
    assert plane.sum() > 50
    assert np.abs(p["basecolor"][plane] - np.array([0.8, 0.2, 0.1])).max() < 2e-3
    assert np.abs(p["normal"][plane] - np.array([0, 0, 1.0])).max() < 2e-3


def test_two_enabled_view_layers_export_the_active_one_only(tmp_path):
    """Blender 5.0 cannot write one frame of two enabled layers ("Each part should have a unique name");
    4.2 renders both. The export renders the active layer alone and re-enables the other afterwards."""
    scene = S.build_export_scene(frames=(1, 2), size=16)
    second = scene.view_layers.new("Second")
    assert second.use and bpy.context.view_layer.name == "ViewLayer"
    before = S.fingerprint(scene)
    out = export_gbuffers(scene, tmp_path / "render")
    data = render_json.load(out)
    assert data["view_layer"] == "ViewLayer" and data["frame_numbers"] == [1, 2]
    assert S.diff(before, S.fingerprint(scene)) == [] and second.use
    passes, _ = S.render_passes(out)
    assert passes["depth"].shape == (2, 16, 16, 1)


def _render_result_digest(tmp_path, name):
    """The pixels the artist sees in Render Result (its active slot), saved by Blender."""
    import hashlib

    path = tmp_path / f"{name}.png"
    bpy.data.images["Render Result"].save_render(str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_render_result_is_left_as_the_artist_rendered_it(tmp_path):
    scene = S.build_export_scene(frames=(1, 2), size=16)
    bpy.ops.render.render()                                  # the artist's F12
    slots = bpy.data.images["Render Result"].render_slots
    slots.active_index = 1
    bpy.ops.render.render()
    before = _render_result_digest(tmp_path, "before")
    for run in ("a", "b"):                                   # a second export reuses the export's slot
        export_gbuffers(scene, tmp_path / run)
        assert _render_result_digest(tmp_path, f"after-{run}") == before
        assert slots.active_index == 1
    assert [s.name for s in slots].count(gbuffer_export.EXPORT_SLOT) == 1
