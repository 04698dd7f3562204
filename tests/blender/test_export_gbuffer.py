"""G-buffer export of the analytic scene (bpy_scene.build_export_scene): a 3-frame 64×64 Cycles render
checked against the known materials and geometry, the set contract, the engine's reader, and the
scene being left exactly as it was (also after a failure midway)."""
from __future__ import annotations

import json
import os
import time

import pytest

import bpy_scene as S
from bpy_scene import bpy

np = pytest.importorskip("numpy")

from diffusion_renderer_addon.export import ExportError, export_gbuffers, start_export_gbuffers  # noqa: E402
from diffusion_renderer_addon.export import gbuffer_export  # noqa: E402
from diffusion_renderer_addon.export.exr_io import read_exr, read_exr_header  # noqa: E402

FRAMES = [1, 2, 3]
SIZE = 64
PASS_CHANNELS = {"rgb": (["R", "G", "B"], "half"), "basecolor": (["R", "G", "B"], "half"),
                 "normal": (["X", "Y", "Z"], "half"), "depth": (["V"], "float"), "roughness": (["V"], "half"),
                 "metallic": (["V"], "half"), "alpha": (["V"], "half")}


def load(folder, name, frame):
    w, h, ch = read_exr(folder / name / f"{name}.{frame:04d}.exr")
    chans = PASS_CHANNELS[name][0]
    return np.stack([np.frombuffer(ch[c], dtype=np.float32).reshape(h, w) for c in chans], -1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    scene = S.build_export_scene(frames=(1, 3), size=SIZE)
    before = S.fingerprint(scene)
    out = tmp_path_factory.mktemp("gbuf") / "set"
    result = export_gbuffers(scene, out, samples=1)
    after = S.fingerprint(scene)
    return {"scene": scene, "out": out, "result": result, "before": before, "after": after}


def test_scene_restored_exactly(exported):
    assert S.diff(exported["before"], exported["after"]) == []


def test_set_layout_and_manifest(exported):
    out = exported["out"]
    assert exported["result"] == out
    m = json.loads((out / "manifest.json").read_text())
    assert m["format"] == "diffusion-renderer/gbuffer-set" and m["version"] == 1 and m["kind"] == "gbuffer"
    assert m["frame_numbers"] == FRAMES and m["resolution"] == [SIZE, SIZE] and m["fps"] == 24
    assert set(m["passes"]) == set(PASS_CHANNELS)
    for name, (chans, dtype) in PASS_CHANNELS.items():
        entry = m["passes"][name]
        assert entry["path"] == f"{name}/{name}.####.exr"
        assert entry["channels"] == chans and entry["dtype"] == dtype
    assert m["passes"]["depth"]["encoding"] == "depth-planar-metric"
    assert m["alpha"] == "alpha"
    assert m["depth"]["kind"] == "metric" and m["depth"]["invert"] is False
    assert m["depth"]["range_rule"] == "clip-min-p98"
    assert m["depth"]["near"] == pytest.approx(2.0 - 0.15, abs=1e-3)   # the cube's front face
    assert m["depth"]["far"] == pytest.approx(S.PLANE_DEPTH, abs=1e-3)  # the plane (≥ 2 % of pixels)
    prov = m["provenance"]
    assert prov["producer"] == "blender" and prov["blender_version"] == bpy.app.version_string
    assert prov["settings"]["samples"] == 1 and prov["created"].endswith("Z")
    # cameras: per frame, the keyed translation along the camera's X
    assert [c["frame"] for c in m["camera"]] == FRAMES
    rot = np.array(S._rot())
    for i, cam in enumerate(m["camera"]):
        mw = np.array(cam["matrix_world"])
        assert np.allclose(mw[:3, :3], rot, atol=1e-6)
        expect = np.array(S.CAM_LOC) + rot[:, 0] * S.STEP * i
        assert np.allclose(mw[:3, 3], expect, atol=1e-5)
        assert cam["lens_mm"] == 50.0 and cam["sensor_width_mm"] == 36.0 and cam["sensor_fit"] == "AUTO"
        assert cam["clip_start"] == pytest.approx(0.1) and cam["clip_end"] == 100.0
    # every listed file exists; the manifest was written last
    files = [out / n / f"{n}.{f:04d}.exr" for n in PASS_CHANNELS for f in FRAMES]
    assert all(p.is_file() for p in files)
    assert os.path.getmtime(out / "manifest.json") >= max(os.path.getmtime(p) for p in files)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_channel_names_and_types_exact(exported):
    for name, (chans, dtype) in PASS_CHANNELS.items():
        for f in FRAMES:
            h = read_exr_header(exported["out"] / name / f"{name}.{f:04d}.exr")
            assert not h["multipart"] and (h["width"], h["height"]) == (SIZE, SIZE)
            assert h["parts"][0]["channels"] == {c: dtype for c in chans}
            assert h["parts"][0]["compression"] == "ZIP"


def _classes(depth, alpha):
    covered = alpha[..., 0] >= 1.0 - 1e-3
    d = depth[..., 0]
    return {k: covered & (d >= lo) & (d <= hi) for k, (_, _, _, (lo, hi)) in S.EXPECTED.items()}


@pytest.mark.parametrize("frame", FRAMES)
def test_analytic_values(exported, frame):
    out = exported["out"]
    p = {n: load(out, n, frame) for n in PASS_CHANNELS}
    alpha = p["alpha"][..., 0]
    classes = _classes(p["depth"], p["alpha"])
    for name, mask in classes.items():
        assert mask.sum() >= 8, f"{name}: only {mask.sum()} pixels found at frame {frame}"
        base, rough, metal, _ = S.EXPECTED[name]
        # AOV values: exact up to half precision
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
    assert (p["depth"][bg] >= 1e9).all()
    assert set(np.unique(alpha)) <= {0.0, 1.0}  # narrow pixel filter: no partial coverage
    # planar depth: the plane (tilted far from the image centre) is exactly 5 everywhere
    assert np.abs(p["depth"][classes["plane"]] - S.PLANE_DEPTH).max() < 1e-4
    cube_front = classes["cube_nomat"] & (np.abs(p["depth"][..., 0] - 1.85) < 1e-3)
    assert cube_front.sum() >= 8 and np.abs(p["depth"][cube_front] - 1.85).max() < 1e-4
    # normals: unit camera-space vectors facing the camera; the plane and the cube face → (0, 0, 1)
    n = p["normal"]
    length = np.linalg.norm(n[covered], axis=-1)
    assert np.abs(length - 1).max() < 2e-3
    for flat in (classes["plane"], cube_front):
        assert np.abs(n[flat] - np.array([0, 0, 1.0])).max() < 2e-3
    # the spheres: compare with the analytic sphere normal through each pixel's depth
    off = S.camera_centre_offset(FRAMES.index(frame))
    ii, jj = np.mgrid[0:SIZE, 0:SIZE]
    x_ndc = ((jj + 0.5) / SIZE * 2 - 1) * S.HALF_FOV
    y_ndc = (1 - (ii + 0.5) / SIZE * 2) * S.HALF_FOV
    d = p["depth"][..., 0]
    pos = np.stack([x_ndc * d, y_ndc * d, -d], -1)
    assert ((n * -pos).sum(-1)[covered] > -1e-3).all()  # every visible normal faces the camera
    for name in ("sphere_group", "sphere_diffuse"):
        centre = np.array(S.OBJECTS[name][0]) - np.array(off)
        expect = pos - centre
        expect /= np.linalg.norm(expect, axis=-1, keepdims=True)
        dots = (expect[classes[name]] * n[classes[name]]).sum(-1)
        assert np.median(dots) > 0.999 and dots.min() > 0.98, name


def test_rgb_is_linear_render(exported):
    rgb = load(exported["out"], "rgb", 1)
    alpha = load(exported["out"], "alpha", 1)[..., 0]
    assert np.isfinite(rgb).all() and (rgb[alpha > 0] > 0).any()


def test_engine_reader_opens_the_set(exported):
    code = r"""
import json, sys
import numpy as np
from engine.gbuffer import open_gbuffer_set, to_model_inputs
from engine.io.exr import read_exr_header
s = open_gbuffer_set(sys.argv[1])
frames = s.read_frames()
inp = to_model_inputs(frames, s.manifest)
hdr = {n: read_exr_header(s.path(n, 1))["channels"] for n in s.passes}
print(json.dumps({"passes": s.passes, "frames": s.frame_numbers, "warnings": s.warnings,
  "shapes": {k: list(v.shape) for k, v in frames.items()},
  "model": {k: [list(v.shape), float(v.min()), float(v.max())] for k, v in inp.items()},
  "headers": hdr, "depth_range": list(s.manifest.depth_range),
  "plane_base": frames["basecolor"][0, 32, 32].tolist(), "plane_depth": float(frames["depth"][0, 32, 32, 0])}))
"""
    r = json.loads(S.run_engine(code, exported["out"]))
    assert r["frames"] == FRAMES and not r["warnings"]
    assert set(r["passes"]) == set(PASS_CHANNELS)
    for name, (chans, dtype) in PASS_CHANNELS.items():
        assert r["headers"][name] == {c: dtype for c in chans}
        assert r["shapes"][name] == [3, SIZE, SIZE, len(chans)]
    assert set(r["model"]) == set(PASS_CHANNELS) - {"alpha"}
    for name, (shape, lo, hi) in r["model"].items():
        assert shape == [3, SIZE, SIZE, 3] and 0.0 <= lo <= hi <= 1.0, name
    assert r["plane_depth"] == pytest.approx(S.PLANE_DEPTH, abs=1e-4)
    assert r["plane_base"] == pytest.approx([0.8, 0.2, 0.1], abs=1e-3)


# ------------------------------------------------------------------------------------------ failures
def test_failure_midway_restores_everything(tmp_path, monkeypatch):
    scene = S.build_export_scene(frames=(1, 3), size=32)
    before = S.fingerprint(scene)
    calls = {"n": 0}
    real = gbuffer_export._split_frame

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("injected failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(gbuffer_export, "_split_frame", failing)
    out = tmp_path / "set"
    with pytest.raises(RuntimeError, match="injected failure"):
        export_gbuffers(scene, out)
    assert S.diff(before, S.fingerprint(scene)) == []
    assert not (out / "manifest.json").exists()  # incomplete set: no manifest
    assert (out / "rgb" / "rgb.0001.exr").is_file()


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
        export_gbuffers(scene, tmp_path / "set")
    assert calls["n"] == 3
    assert S.diff(before, S.fingerprint(scene)) == []
    assert not (tmp_path / "set").exists()


def test_render_failure_is_an_export_error_and_restores(tmp_path, monkeypatch):
    scene = S.build_export_scene(frames=(1, 2), size=16)
    before = S.fingerprint(scene)
    class FakeRender:  # bpy.ops.render.render returning CANCELLED without writing a file
        @staticmethod
        def render(**kw):
            return {"CANCELLED"}

    monkeypatch.setattr(bpy.ops, "render", FakeRender, raising=False)
    with pytest.raises(ExportError, match="rendering frame 1 failed"):
        export_gbuffers(scene, tmp_path / "set")
    monkeypatch.undo()
    assert S.diff(before, S.fingerprint(scene)) == []


# ------------------------------------------------------------------------------------------ options
def test_frame_selection_resolution_and_passes(tmp_path):
    scene = S.build_export_scene(frames=(1, 3), size=64)
    out = export_gbuffers(scene, tmp_path / "a", frame_range=[1, 3], resolution=(32, 24),
                          passes=["basecolor", "depth"])
    m = json.loads((out / "manifest.json").read_text())
    assert m["frame_numbers"] == [1, 3] and m["resolution"] == [32, 24]
    assert set(m["passes"]) == {"basecolor", "depth"} and "alpha" not in m
    assert load(out, "depth", 3).shape == (24, 32, 1)
    assert not (out / "basecolor" / "basecolor.0002.exr").exists()
    out = export_gbuffers(scene, tmp_path / "b", frame_range=(2, 3), passes=["normal"])
    assert json.loads((out / "manifest.json").read_text())["frame_numbers"] == [2, 3]
    assert scene.render.resolution_x == 64 and scene.frame_current == 1


def test_big_frame_numbers_and_errors(tmp_path):
    scene = S.build_export_scene(frames=(1, 1), size=16)
    out = export_gbuffers(scene, tmp_path / "a", frame_range=[12345], passes=["alpha"])
    assert (out / "alpha" / "alpha.12345.exr").is_file()
    with pytest.raises(ExportError, match="non-negative"):
        export_gbuffers(scene, tmp_path / "b", frame_range=(-2, 1))
    with pytest.raises(ExportError, match="unknown pass"):
        export_gbuffers(scene, tmp_path / "b", passes=["albedo"])
    with pytest.raises(ExportError, match="cannot render G-buffers"):
        export_gbuffers(scene, tmp_path / "b", engine="BLENDER_WORKBENCH")
    cam = scene.camera
    scene.camera = None
    with pytest.raises(ExportError, match="no active camera"):
        export_gbuffers(scene, tmp_path / "b")
    scene.camera = cam


def test_refuses_a_different_set_unless_overwrite(tmp_path):
    scene = S.build_export_scene(frames=(1, 1), size=16)
    out = tmp_path / "set"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"format": "diffusion-renderer/gbuffer-set", "version": 1,
                                                   "provenance": {"producer": "inverse-model",
                                                                  "source": "/elsewhere/clip.mp4"}}))
    with pytest.raises(ExportError, match="different clip"):
        export_gbuffers(scene, out, passes=["alpha"])
    export_gbuffers(scene, out, passes=["alpha"], overwrite=True)
    assert json.loads((out / "manifest.json").read_text())["provenance"]["producer"] == "blender"


def test_user_aov_named_basecolor_is_not_reused(tmp_path):
    scene = S.build_export_scene(frames=(1, 1), size=32)
    a = scene.view_layers[0].aovs.add()
    a.name, a.type = "basecolor", "COLOR"
    before = S.fingerprint(scene)
    out = export_gbuffers(scene, tmp_path / "set", passes=["basecolor", "alpha", "depth"])
    m = json.loads((out / "manifest.json").read_text())
    assert m["provenance"]["settings"]["aovs"]["basecolor"] == "DR_basecolor"
    p = {n: load(out, n, 1) for n in ("basecolor", "alpha", "depth")}
    cls = _classes(p["depth"], p["alpha"])
    assert np.abs(p["basecolor"][cls["plane"]] - np.array([0.8, 0.2, 0.1])).max() < 1e-3
    assert S.diff(before, S.fingerprint(scene)) == []


# ------------------------------------------------------------------------------------------ background path
def test_background_blender_path_with_a_stand_in_binary(tmp_path):
    """The background path (save a copy, run ``blender -b copy --python runner -- job``) with a stand-in
    'blender' that runs this interpreter's bpy; the real binary is absent in the module build."""
    import sys

    scene = S.build_export_scene(frames=(1, 2), size=16)
    before = S.fingerprint(scene)
    fake = tmp_path / "blender"
    fake.write_text(f"""#!{sys.executable}
import sys, runpy
args = sys.argv[1:]
blend = args[args.index('-b') + 1]
script = args[args.index('--python') + 1]
import bpy
bpy.ops.wm.open_mainfile(filepath=blend)
sys.argv = ['blender'] + args
runpy.run_path(script, run_name='__main__')
""")
    fake.chmod(0o755)
    seen = []
    out = export_gbuffers(scene, tmp_path / "set", background=True, blender_binary=str(fake),
                          progress=lambda d, t, msg: seen.append((d, t)), timeout=300)
    m = json.loads((out / "manifest.json").read_text())
    assert m["frame_numbers"] == [1, 2] and m["provenance"]["producer"] == "blender"
    assert seen and seen[-1] == (2, 2)
    assert S.diff(before, S.fingerprint(scene)) == []
    # the pollable job (what a modal operator uses): poll until finished, then the result
    job = start_export_gbuffers(scene, tmp_path / "polled", blender_binary=str(fake), frame_range=[2])
    states = []
    deadline = time.monotonic() + 300
    while not job.finished and time.monotonic() < deadline:
        states.append(job.poll())
        time.sleep(0.05)
    assert job.result() == tmp_path / "polled" and job.poll()[:2] == (1, 1)
    assert states[0][2] == "starting Blender"
    # cancelled at once: no manifest, a clear error
    job = start_export_gbuffers(scene, tmp_path / "cancelled", blender_binary=str(fake))
    job.cancel()
    assert job.finished
    with pytest.raises(ExportError, match="cancelled"):
        job.result()
    assert not (tmp_path / "cancelled" / "manifest.json").exists()
    assert S.diff(before, S.fingerprint(scene)) == []
    # a failure inside the background Blender is reported with its message
    with pytest.raises(ExportError, match="background export failed"):
        export_gbuffers(scene, tmp_path / "set2", background=True, blender_binary=str(fake), engine="BLENDER_WORKBENCH")
    with pytest.raises(ExportError, match="no Blender executable"):
        export_gbuffers(scene, tmp_path / "set3", background=True, blender_binary="")


@pytest.mark.skipif(not os.environ.get("DR_TEST_EEVEE"), reason="EEVEE renders through software GL here "
                    "(≈ 20–40 s of shader compilation); set DR_TEST_EEVEE=1 to run")
def test_eevee_export(tmp_path):
    scene = S.build_export_scene(frames=(1, 1), size=32)
    before = S.fingerprint(scene)
    out = export_gbuffers(scene, tmp_path / "set", engine="EEVEE")
    assert S.diff(before, S.fingerprint(scene)) == []
    m = json.loads((out / "manifest.json").read_text())
    assert m["provenance"]["settings"]["render_engine"] in ("BLENDER_EEVEE", "BLENDER_EEVEE_NEXT")
    p = {n: load(out, n, 1) for n in PASS_CHANNELS}
    bg = p["alpha"][..., 0] == 0
    assert bg.any() and (p["depth"][bg] == 1e10).all()  # EEVEE's clip_end background recorded as 1e10
    plane = (np.abs(p["depth"][..., 0] - S.PLANE_DEPTH) < 1e-3) & (p["alpha"][..., 0] > 0.99)
    assert plane.sum() > 50
    assert np.abs(p["basecolor"][plane] - np.array([0.8, 0.2, 0.1])).max() < 2e-3
    assert np.abs(p["normal"][plane] - np.array([0, 0, 1.0])).max() < 2e-3
