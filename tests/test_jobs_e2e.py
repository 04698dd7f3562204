"""End to end on tiny random checkpoints: footage → G-buffer set → relit sets; resume; input layouts."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "blender_exr"


@pytest.fixture(scope="module")
def mp4_30(tmp_path_factory):
    from engine.io import write_mp4

    path = tmp_path_factory.mktemp("clip") / "plate.mp4"
    yy, xx = np.mgrid[0:96, 0:160] / np.array([96.0, 160.0])[:, None, None]
    frames = [np.stack([xx, yy, 0.5 + 0.4 * np.sin(xx * 6 + t / 4)], -1).clip(0, 1) for t in range(30)]
    write_mp4(path, frames, 24)
    return path


@pytest.fixture(scope="module")
def gbuffer_set(ckpts, mp4_30, tmp_path_factory):
    out = tmp_path_factory.mktemp("inv") / "set"
    code = main(["inverse", str(mp4_30), "--out", str(out), "--model", str(ckpts[0]), "--resolution", "128x64",
                 "--steps", "2", "--frames", "12", "--overlap", "4", "--device", "cpu", "--passes",
                 "basecolor,metallic,roughness,normal,depth,diffuse_albedo"])
    assert code == 0
    return out


def test_inverse_mp4_writes_every_frame_of_every_pass(gbuffer_set):
    from engine.gbuffer import open_gbuffer_set
    from engine.io import read_exr

    gset = open_gbuffer_set(gbuffer_set)
    assert gset.frame_numbers == list(range(1, 31))
    for p in ("rgb", "basecolor", "metallic", "roughness", "normal", "depth", "diffuse_albedo"):
        files = sorted((gbuffer_set / p).glob(f"{p}.*.exr"))
        assert len(files) == 30, p
        assert files[0].name == f"{p}.0001.exr" and files[-1].name == f"{p}.0030.exr"
    assert sorted(read_exr(gbuffer_set / "normal" / "normal.0007.exr")) == ["X", "Y", "Z"]
    assert sorted(read_exr(gbuffer_set / "roughness" / "roughness.0007.exr")) == ["V"]
    n = gset.read("normal", 7)
    assert n.shape == (64, 128, 3)
    np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0, atol=2e-3)
    m = json.loads((gbuffer_set / "manifest.json").read_text())
    assert m["resolution"] == [128, 64] and m["depth"]["kind"] == "normalised"
    assert m["provenance"]["producer"] == "inverse-model"
    assert (gbuffer_set / "contact_sheet.mp4").is_file()
    assert len(list((gbuffer_set / "previews" / "depth").glob("*.png"))) == 30
    assert not list(gbuffer_set.rglob("*.tmp*")) and not (gbuffer_set / ".dr-resume").exists()


def test_rerun_is_up_to_date_and_changed_setting_recomputes(gbuffer_set, ckpts, mp4_30, capsys):
    args = ["inverse", str(mp4_30), "--out", str(gbuffer_set), "--model", str(ckpts[0]), "--resolution", "128x64",
            "--frames", "12", "--overlap", "4", "--device", "cpu", "--passes",
            "basecolor,metallic,roughness,normal,depth,diffuse_albedo", "--json"]
    assert main([*args, "--steps", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["clips"][0]["status"] == "up-to-date"
    before = (gbuffer_set / "depth" / "depth.0005.exr").read_bytes()
    assert main([*args, "--steps", "1", "--no-previews"]) == 0
    assert json.loads(capsys.readouterr().out)["clips"][0]["status"] == "done"
    assert (gbuffer_set / "depth" / "depth.0005.exr").read_bytes() != before


def test_forward_two_hdris_from_the_set(gbuffer_set, ckpts, hdri_dir, tmp_path):
    from engine.envmap import write_hdr
    from engine.gbuffer import open_gbuffer_set

    sky = np.ones((16, 32, 3), np.float32)
    sky[3:5, 10:12] = 300.0
    write_hdr(tmp_path / "studio.hdr", sky)
    out = tmp_path / "relit"
    code = main(["forward", str(gbuffer_set), "--hdri", str(hdri_dir / "pink_sunrise_1k.hdr"), "--hdri",
                 str(tmp_path / "studio.hdr"), "--out", str(out), "--model", str(ckpts[1]), "--steps", "1",
                 "--frames", "12", "--overlap", "4", "--env-resolution", "32x32", "--device", "cpu"])
    assert code == 0
    for name in ("pink_sunrise_1k", "studio"):
        rs = open_gbuffer_set(out / name)
        assert rs.kind == "relit" and len(list((out / name / "relit").glob("relit.*.exr"))) == 30
        assert (out / name / "relit.mp4").stat().st_size > 0
        assert rs.read("relit", 30).shape == (64, 128, 3)
    a = open_gbuffer_set(out / "pink_sunrise_1k").read("relit", 3)
    b = open_gbuffer_set(out / "studio").read("relit", 3)
    assert np.abs(a - b).max() > 1e-4, "different lights give different pictures"


def test_interrupted_job_resumes_finished_segments(ckpts, mp4_30, tmp_path):
    from engine.jobs.inverse_job import InverseSettings, run_clip
    from engine.pipelines import Cancelled, InverseRenderer

    r = InverseRenderer.from_pretrained(ckpts[0], device="cpu")
    s = InverseSettings(passes=("depth",), frames=8, overlap=2, steps=1, resolution=(128, 64),
                        windows_per_segment=1, previews=False)
    calls = []

    def cancel_after_two_segments():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        run_clip(mp4_30, tmp_path / "a", s, r, should_cancel=cancel_after_two_segments, show_progress=False)
    assert not (tmp_path / "a" / "manifest.json").exists(), "an interrupted set never looks complete"
    assert not list((tmp_path / "a").rglob("*.tmp*"))
    res = run_clip(mp4_30, tmp_path / "a", s, r, show_progress=False)
    assert res.segments == 5 and res.resumed_segments == 2
    clean = run_clip(mp4_30, tmp_path / "b", s, r, show_progress=False)
    from engine.gbuffer import open_gbuffer_set

    a, b = open_gbuffer_set(tmp_path / "a"), open_gbuffer_set(tmp_path / "b")
    np.testing.assert_allclose(a.read_all("depth"), b.read_all("depth"), atol=2e-3)
    assert clean.resumed_segments == 0


def _copy_blender(tmp_path, version):
    d = tmp_path / version
    d.mkdir()
    for f in sorted(FIXTURES.glob(f"{version}_render_*.exr")):
        shutil.copy(f, d / f.name.replace(f"{version}_render_", "gbuf_"))
    cam = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 6.0], [0, 0, 0, 1]]
    return d, cam


@pytest.mark.parametrize("version", ["blender42", "blender50"])
def test_blender_multilayer_exrs_read_as_model_inputs(tmp_path, version):
    from engine.jobs.gbuffer_inputs import GBufferInputError, load_gbuffer_clips

    folder, cam = _copy_blender(tmp_path, version)
    with pytest.raises(GBufferInputError, match="cameras.json"):
        load_gbuffer_clips(folder)
    (folder / "cameras.json").write_text(json.dumps({"frames": {"1": {"matrix_world": cam},
                                                                "2": {"matrix_world": cam}}}))
    (clip,) = load_gbuffer_clips(folder)
    assert clip.layout == "blender-exr" and clip.frame_numbers == [1, 2]
    exp = json.loads((FIXTURES / f"{version}_expected.json").read_text())["materials"]["floor"]
    corner = (0, 3, 12)  # a floor pixel (depth 6, away from the sphere)
    rough = clip.inputs["roughness"][corner]
    np.testing.assert_allclose(rough, exp["roughness"], atol=2e-3)
    np.testing.assert_allclose(clip.inputs["normal"][corner], [0.5, 0.5, 1.0], atol=2e-3)  # floor faces the camera
    from engine.gbuffer import linear_to_srgb

    np.testing.assert_allclose(clip.inputs["basecolor"][corner], linear_to_srgb(np.array(exp["basecolor"])),
                               atol=3e-3)
    d = clip.inputs["depth"][..., 0]
    assert d.min() >= 0 and d.max() <= 1 and np.allclose(clip.inputs["depth"][..., 0], clip.inputs["depth"][..., 2])


def test_reference_png_layout(tmp_path):
    from engine.frames_io import write_png
    from engine.jobs.gbuffer_inputs import GBufferInputError, load_gbuffer_clips

    clip = tmp_path / "demo1"
    rng = np.random.default_rng(0)
    for f in range(3):
        for p in ("basecolor", "normal", "depth", "roughness", "metallic"):
            write_png(clip / f"0000.{f:04d}.{p}.png", rng.random((64, 64, 3)))
    (c,) = load_gbuffer_clips(clip)
    assert c.layout == "reference-png" and c.inputs["depth"].shape == (3, 64, 64, 3)
    (clip / "0000.0002.metallic.png").unlink()
    with pytest.raises(GBufferInputError, match="different frame counts.*metallic 2"):
        load_gbuffer_clips(clip)
    for f in clip.glob("*.metallic.png"):
        f.unlink()
    with pytest.raises(GBufferInputError, match="missing required G-buffer pass.*metallic"):
        load_gbuffer_clips(clip)


def test_seams_command_reports_every_pass(gbuffer_set, capsys):
    assert main(["seams", str(gbuffer_set), "--frames", "12", "--overlap", "4"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["frames"] == 30 and rep["boundaries"] == [10, 18, 23]
    assert set(rep["passes"]) == {"basecolor", "metallic", "roughness", "normal", "depth", "diffuse_albedo"}
    assert all(v > 0 for v in rep["passes"].values())
