"""engine.gbuffer.blender_render: a Blender render folder (render.json + Blender's EXRs) → G-buffer set.

Conventions are checked by value on synthetic folders with hand-derived answers (tests/render_folder_helpers.py)
and on the real Blender 4.2 / 5.0 render folders of tests/fixtures/blender_exr/."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import render_folder_helpers as rf
from engine.contract import render_json
from engine.gbuffer import open_gbuffer_set
from engine.gbuffer.blender_render import (RenderFolderError, convert, convert_render_folder, read_render_folder,
                                           round_to_set_dtypes)

FIX = Path(__file__).parent / "fixtures" / "blender_exr"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return read_render_folder(rf.make_folder(tmp_path_factory.mktemp("rf") / "shot"))


def _expected(frame):
    raw = rf.frame_data(frame)
    alpha = raw["combined"][..., 3]
    cov = raw["basecolor"][..., 3].astype(np.float16).astype(np.float32)
    gap = np.where(alpha > cov, alpha - cov, 0)
    return alpha, cov, gap


def test_fps_frames_cameras_and_provenance_carried(synthetic):
    assert synthetic.fps == rf.FPS and synthetic.frame_numbers == rf.FRAMES and synthetic.resolution == (rf.W, rf.H)
    assert [c["matrix_world"] for c in synthetic.cameras] == [rf.matrix_world(f) for f in rf.FRAMES]
    assert synthetic.cameras[0]["lens_mm"] == 50.0
    prov = synthetic.provenance
    assert prov["producer"] == "blender" and prov["source"] == "/shots/a.blend"
    s = prov["settings"]
    assert (s["scene"], s["view_layer"], s["render_engine"], s["samples"], s["filter_width"]) == \
        ("Scene", "ViewLayer", "CYCLES", 16, 1.5)
    assert s["aovs"] == rf.AOVS and s["blender_version"] == "5.0.1" and s["seconds"] == 1.25
    assert s["notes"] == ["1 material without nodes"] and s["colour_management"] == {"view": "AgX"}
    for name, arr in synthetic.passes.items():
        assert arr.dtype == np.float32 and arr.shape[:3] == (2, rf.H, rf.W), name


@pytest.mark.parametrize("i,frame", list(enumerate(rf.FRAMES)))
def test_normals_in_camera_space_unit_and_background_zero(synthetic, i, frame):
    n = synthetic.passes["normal"][i]
    for row, (_world, cam) in enumerate(rf.NORMAL_CASES[frame], start=1):
        np.testing.assert_allclose(n[row, 3], cam, atol=1e-6, err_msg=f"world {_world}")
    np.testing.assert_allclose(n[4, 3], rf.NORMAL_CASES[frame][0][1], atol=1e-6)    # ×0.5 input → unit
    np.testing.assert_array_equal(n[5, 3], 0)          # zero stays zero
    np.testing.assert_array_equal(n[6, 3], 0)          # NaN → 0
    np.testing.assert_array_equal(n[:, 0], 0)          # background
    length = np.linalg.norm(n, axis=-1)
    np.testing.assert_allclose(length[length > 0], 1.0, atol=1e-6)
    assert f"normal frame {frame}: 3 NaN/Inf value(s) replaced by 0" in synthetic.warnings   # X, Y, Z


def test_depth_background_from_alpha_cycles_and_eevee(synthetic):
    d = synthetic.passes["depth"][..., 0]
    for i, frame in enumerate(rf.FRAMES):
        want = rf.frame_data(frame)["depth"][..., 0].copy()        # 2 + 0.1·(row + col) (+1 on frame 4)
        assert want[3, 4] == pytest.approx(2.7 + (frame == 4)) and np.isfinite(want[1, 0])
        want[:, 0] = 1e10                 # frame 3: Cycles 1e10 and a finite 5.0 under alpha 0; frame 4: clip_end
        if frame == 4:
            want[2, 5] = 1e10             # NaN
        np.testing.assert_array_equal(d[i], want)
    assert "depth frame 4: 1 NaN/Inf value(s) replaced by 1e+10" in synthetic.warnings
    assert not any("depth frame 3" in w or "Transparent" in w for w in synthetic.warnings)


def test_depth_range_is_min_and_p98_of_covered_pixels_of_the_clip(synthetic):
    d = synthetic.passes["depth"][..., 0]
    a = synthetic.passes["alpha"][..., 0]
    covered = d[(a >= 0.5) & (d < 1e9)]
    assert covered.size == 2 * rf.H * (rf.W - 1) - 1          # both frames, minus the NaN pixel
    assert synthetic.depth_range == (pytest.approx(2.1), pytest.approx(float(np.percentile(covered, 98)), rel=1e-6))
    assert synthetic.depth_range[1] < covered.max()            # the far 2 % clip


@pytest.mark.parametrize("i,frame", list(enumerate(rf.FRAMES)))
def test_aov_defaults_fill_uncovered_surfaces_weighted_by_coverage(synthetic, i, frame):
    alpha, cov, gap = _expected(frame)
    p = {k: v[i] for k, v in synthetic.passes.items()}
    np.testing.assert_array_equal(p["alpha"][..., 0], alpha)
    bc_half = np.float16([0.2, 0.4, 0.6]).astype(np.float32)
    want_bc = bc_half * cov[..., None] + gap[..., None] * np.float32(rf.DEFAULTS["basecolor"])
    np.testing.assert_allclose(p["basecolor"], want_bc, atol=2e-3)
    np.testing.assert_allclose(p["basecolor"][3, 9], rf.DEFAULTS["basecolor"], atol=1e-6)    # no material: default
    np.testing.assert_allclose(p["basecolor"][7, 11], 0.25 * bc_half + 0.75 * np.float32(rf.DEFAULTS["basecolor"]),
                               atol=2e-3)
    np.testing.assert_allclose(p["basecolor"][0, 1], 0.5 * bc_half, atol=2e-3)               # edge: no fill
    np.testing.assert_allclose(p["roughness"][..., 0], 0.3 * cov + rf.DEFAULTS["roughness"] * gap, atol=1e-6)
    np.testing.assert_allclose(p["metallic"][..., 0], 0.7 * cov + rf.DEFAULTS["metallic"] * gap, atol=1e-6)
    np.testing.assert_array_equal(p["rgb"], rf.frame_data(frame)["combined"][..., :3])


def test_default_aov_values_from_the_contract_when_render_json_has_none(tmp_path):
    folder = rf.make_folder(tmp_path / "s")
    data = json.loads((folder / "render.json").read_text())
    del data["aov_defaults"]
    render_json.write(str(folder), data)
    clip = read_render_folder(folder)
    np.testing.assert_allclose(clip.passes["basecolor"][0, 3, 9], render_json.AOV_DEFAULTS["basecolor"], atol=1e-6)
    assert clip.passes["roughness"][0, 3, 9, 0] == pytest.approx(render_json.AOV_DEFAULTS["roughness"])


def test_every_blender_layout_gives_the_same_passes(synthetic, tmp_path):
    for layout in ("5x", "fileout"):
        other = read_render_folder(rf.make_folder(tmp_path / layout, layout))
        for name, arr in synthetic.passes.items():
            np.testing.assert_array_equal(other.passes[name], arr, err_msg=f"{layout} {name}")
        assert other.depth_range == synthetic.depth_range


def test_opaque_film_is_reported_and_background_not_filled(tmp_path):
    data = {f: rf.frame_data(f) for f in rf.FRAMES}
    for d in data.values():
        d["combined"][..., 3] = 1.0          # Film › Transparent off: alpha 1 on the background too
        d["depth"][:, 0] = 1e10
    clip = read_render_folder(rf.make_folder(tmp_path / "s", data=data))
    np.testing.assert_array_equal(clip.passes["basecolor"][:, :, 0], 0)    # background stays empty
    np.testing.assert_array_equal(clip.passes["depth"][:, :, 0], 1e10)
    assert any("Film › Transparent was off" in w for w in clip.warnings)


def test_converted_set_holds_the_same_values_and_manifest(synthetic, tmp_path):
    folder = rf.make_folder(tmp_path / "shot")
    report = convert(folder, tmp_path / "set", previews=False)
    gset = open_gbuffer_set(tmp_path / "set")
    m = gset.manifest
    assert m.frame_numbers == rf.FRAMES and m.fps == rf.FPS and m.resolution == (rf.W, rf.H)
    assert m.alpha == "alpha" and m.depth["kind"] == "metric" and m.depth["range_rule"] == "clip-min-p98"
    assert m.depth_range == report.depth_range == synthetic.depth_range
    assert [c["matrix_world"] for c in m.camera] == [rf.matrix_world(f) for f in rf.FRAMES]
    assert m.provenance["producer"] == "blender" and m.provenance["settings"]["scene"] == "Scene"
    assert {n: e["dtype"] for n, e in m.passes.items()} == {"rgb": "half", "basecolor": "half", "normal": "half",
                                                             "depth": "float", "roughness": "half",
                                                             "metallic": "half", "alpha": "half"}
    rounded = round_to_set_dtypes(synthetic.passes)
    for name in m.passes:
        np.testing.assert_array_equal(gset.read_all(name), rounded[name], err_msg=name)
    assert rounded["rgb"][0, 2, 2, 0] == 65504.0                  # clipped to the half range, not infinite
    assert set(report.seconds) >= {"read", "convert", "write", "previews", "total"}
    assert any("normal frame 3" in w for w in report.warnings)
    assert not list((tmp_path / "set").rglob("*.tmp*"))


def test_real_blender_folders_convert_and_agree(tmp_path):
    clips = {}
    for version in ("blender42", "blender50"):
        clip = read_render_folder(FIX / version)
        exp = json.loads((FIX / version / "expected.json").read_text())
        assert clip.fps == exp["fps"] == 25 and clip.frame_numbers == [1, 2] and not clip.warnings
        a, d, n = clip.passes["alpha"][..., 0], clip.passes["depth"][..., 0], clip.passes["normal"]
        floor = np.all(np.abs(clip.passes["basecolor"] - exp["materials"]["floor"]["basecolor"]) < 1e-3, -1)
        np.testing.assert_allclose(d[floor], exp["floor_depth"], rtol=1e-6)
        np.testing.assert_allclose(n[floor], np.broadcast_to([0, 0, 1], n[floor].shape), atol=1e-5)
        assert (d[a == 0] == 1e10).all() and (n[a == 0] == 0).all() and (a == 0).sum() > 20
        np.testing.assert_allclose(clip.passes["roughness"][floor, 0], 0.75, atol=1e-6)
        # the sphere's normals point away from its centre on screen (+X right, +Y up) whatever the yaw
        sphere = np.all(np.abs(clip.passes["basecolor"] - exp["materials"]["sphere"]["basecolor"]) < 1e-3, -1)
        for f in range(2):
            rows, cols = np.nonzero(sphere[f])
            cy, cx = rows.mean(), cols.mean()
            far_x, far_y = np.abs(cols - cx) >= 1.5, np.abs(rows - cy) >= 1.5
            assert far_x.sum() >= 4 and far_y.sum() >= 4
            nx, ny = n[f, rows, cols, 0], n[f, rows, cols, 1]
            assert (np.sign(nx[far_x]) == np.sign(cols - cx)[far_x]).all()
            assert (np.sign(ny[far_y]) == -np.sign(rows - cy)[far_y]).all()
        clips[version] = clip
    for k in ("depth", "basecolor", "roughness", "metallic", "alpha"):
        np.testing.assert_allclose(clips["blender42"].passes[k], clips["blender50"].passes[k], atol=1e-3, err_msg=k)
    np.testing.assert_allclose(clips["blender42"].passes["normal"], clips["blender50"].passes["normal"], atol=1e-2)
    # Blender's File Output route of frame 1 converts to the same frame
    fo = tmp_path / "fo"
    fo.mkdir()
    shutil.copy(FIX / "blender50" / "fileout_0001.exr", fo / "frame_000001.exr")
    data = json.loads((FIX / "blender50" / "render.json").read_text())
    data.update(frame_numbers=[1], cameras=data["cameras"][:1])
    render_json.write(str(fo), data)
    one = read_render_folder(fo)
    for k, v in one.passes.items():
        np.testing.assert_allclose(v[0], clips["blender50"].passes[k][0], atol=1e-3, err_msg=k)


def test_previews_and_progress(tmp_path):
    calls = []
    out = convert_render_folder(FIX / "blender42", tmp_path / "set", progress=lambda d, t: calls.append((d, t)))
    assert out == tmp_path / "set" and calls == [(0, 2), (1, 2), (2, 2)]
    gset = open_gbuffer_set(out)
    assert (out / "previews" / "normal" / "normal.0002.png").is_file() and "previews" in gset.manifest.data
    assert (out / gset.manifest.data["contact_sheet"]).is_file()


def _broken(tmp_path, what):
    folder = rf.make_folder(tmp_path / what)
    data = json.loads((folder / "render.json").read_text())
    if what == "missing-frame":
        (folder / "frame_000004.exr").unlink()
    elif what == "no-normal":
        rf.write_frame(folder / "frame_000003.exr", rf.frame_data(3), "4x", drop=("normal",))
    elif what == "no-aov":
        data["aovs"]["roughness"] = "Rough2"
    elif what == "size":
        data["resolution"] = [rf.W + 4, rf.H]
    elif what == "view-layer":
        data["view_layer"] = "Front"
    elif what == "camera":
        del data["cameras"][1]["lens_mm"]
    elif what == "bare":
        (folder / "render.json").unlink()
        return folder
    elif what == "empty":
        shutil.rmtree(folder)
        folder.mkdir()
        return folder
    render_json.write(str(folder), data)
    return folder


@pytest.mark.parametrize("what,match", [
    ("missing-frame", r"1 frame EXR\(s\) missing, first frame_000004.exr \(render the G-buffers again\)"),
    ("no-normal", r"frame_000003.exr: no Normal pass \(found passes: Combined, DR Roughness, DR_BaseColor, "
                  r"DR_Metallic, Depth\); export again with the add-on's Neural Render, or fix render.json"),
    ("no-aov", r"frame_000003.exr: no shader AOV 'Rough2' \(roughness, render.json aovs.roughness\) "
               r"\(found passes: .*DR Roughness"),
    ("size", r"frame_000003.exr: frame is 12×8 but render.json resolution is 16×8"),
    ("view-layer", r"no view layer 'Front' \(found: ViewLayer\).*render.json field 'view_layer'"),
    ("camera", r"render.json: field 'cameras': frame 4 needs positive lens_mm"),
    ("bare", r"Blender EXRs without render.json; export them with the add-on's Neural Render"),
    ("empty", r"no render.json \(not a Blender render folder\)"),
])
def test_bad_folders_are_refused_with_one_line(tmp_path, what, match):
    folder = _broken(tmp_path, what)
    with pytest.raises(RenderFolderError, match=match) as err:
        read_render_folder(folder)
    assert "\n" not in str(err.value)
    with pytest.raises(RenderFolderError):
        convert_render_folder(folder, tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()
