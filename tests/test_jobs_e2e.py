"""End to end on tiny random checkpoints: footage → G-buffer set → relit sets; resume; input layouts."""
import json
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
    assert n.shape == (96, 160, 3)                       # the plate's own size (output_size=source)
    np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0, atol=2e-3)
    m = json.loads((gbuffer_set / "manifest.json").read_text())
    assert m["resolution"] == [160, 96] and m["depth"]["kind"] == "normalised"
    framing = m["provenance"]["settings"]["framing"]       # 160×96 padded into 128×64: 107×64 + 10/11 px
    assert framing["fit"] == "pad" and framing["processing"] == [128, 64] and framing["scaled"] == [107, 64]
    assert framing["content"] == [10, 0, 117, 64] and framing["output"] == [160, 96]
    assert m["fps"] == 24
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
                 "--resolution", "128x64",
                 "--frames", "12", "--overlap", "4", "--env-resolution", "32x32", "--device", "cpu"])
    assert code == 0
    for name in ("pink_sunrise_1k", "studio"):
        rs = open_gbuffer_set(out / name)
        assert rs.kind == "relit" and len(list((out / name / "relit").glob("relit.*.exr"))) == 30
        assert (out / name / "relit.mp4").stat().st_size > 0
        assert rs.read("relit", 30).shape == (96, 160, 3) and rs.fps == 24   # the set's size and rate
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


@pytest.mark.parametrize("version", ["blender42", "blender50"])
def test_forward_on_a_blender_render_folder(ckpts, tmp_path, version):
    """Blender's own EXRs + render.json straight into forward: frame numbers and fps from render.json
    (the model inputs equal the converted set's: tests/test_jobs_gbuffers.py)."""
    from engine.envmap import write_hdr
    from engine.gbuffer import open_gbuffer_set

    write_hdr(tmp_path / "sky.hdr", np.ones((16, 32, 3), np.float32))
    out = tmp_path / "relit"
    code = main(["forward", str(FIXTURES / version), "--hdri", str(tmp_path / "sky.hdr"), "--out", str(out),
                 "--model", str(ckpts[1]), "--steps", "1", "--resolution", "64x64", "--frames", "2", "--overlap",
                 "0", "--env-resolution", "32x32", "--device", "cpu"])
    assert code == 0
    rs = open_gbuffer_set(out / "sky")
    assert rs.kind == "relit" and rs.frame_numbers == [1, 2] and rs.fps == 25


def test_reference_png_layout(tmp_path):
    from engine.io.images import write_png
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


# --------------------------------------------------------------------------- frame rate, numbers, framing
@pytest.fixture(scope="module")
def tiny_inverse(ckpts):
    from engine.pipelines import InverseRenderer

    return InverseRenderer.from_pretrained(ckpts[0], device="cpu")


def _settings(**kw):
    from engine.jobs.inverse_job import InverseSettings

    base = dict(passes=("basecolor", "normal"), frames=8, overlap=2, steps=1, resolution=(64, 64))
    return InverseSettings(**{**base, **kw})


def test_25_fps_video_keeps_its_rate_numbers_and_size(tiny_inverse, tmp_path):
    from engine.gbuffer import open_gbuffer_set
    from engine.io import open_clip, probe_video, write_mp4
    from engine.jobs.inverse_job import run_inverse

    yy, xx = np.mgrid[0:54, 0:96] / np.array([54.0, 96.0])[:, None, None]
    write_mp4(tmp_path / "plate.mp4", [np.stack([xx, yy, np.full_like(xx, t / 30)], -1) for t in range(30)], 25)
    out = tmp_path / "set"
    summary = run_inverse(tmp_path / "plate.mp4", out, _settings(first_frame=1001, frame_range=(1003, 1012)),
                          renderer=tiny_inverse, show_progress=False)
    gset = open_gbuffer_set(out)
    assert gset.frame_numbers == list(range(1003, 1013)) and gset.fps == 25 and gset.resolution == (96, 54)
    clip = summary["clips"][0]
    assert clip["fps"] == 25 and clip["frame_numbers"] == list(range(1003, 1013)) and clip["resolution"] == (96, 54)
    assert clip["framing"]["content"] == [0, 14, 64, 50] and clip["warnings"] == []
    assert probe_video(out / "contact_sheet.mp4").fps == 25
    # the rgb pass is the plate as decoded (video frame 1003 - 1001 = 2), not a resampled copy
    from engine.gbuffer import linear_to_srgb

    with open_clip(tmp_path / "plate.mp4") as video:
        np.testing.assert_allclose(linear_to_srgb(gset.read("rgb", 1003)), video.read(2), atol=2e-3)


def test_numbered_sequence_keeps_numbers_and_takes_source_fps(tiny_inverse, tmp_path):
    from engine.io.images import write_png
    from engine.gbuffer import open_gbuffer_set
    from engine.jobs.inverse_job import run_inverse

    seq = tmp_path / "seq"
    rng = np.random.default_rng(3)
    for f in (11, 12, 13, 14):
        write_png(seq / f"shot_{f:04d}.png", rng.random((40, 60, 3)))
    write_png(seq / "other_0001.png", rng.random((40, 60, 3)))   # a second sequence in the same folder
    summary = run_inverse(seq / "shot_####.png", tmp_path / "a", _settings(source_fps=30.0), renderer=tiny_inverse,
                          show_progress=False)
    a = open_gbuffer_set(tmp_path / "a")
    assert a.frame_numbers == [11, 12, 13, 14] and a.fps == 30 and a.resolution == (60, 40)
    assert summary["clips"][0]["warnings"] == []
    (seq / "other_0001.png").unlink()
    summary = run_inverse(seq, tmp_path / "b", _settings(previews=False), renderer=tiny_inverse, show_progress=False)
    assert open_gbuffer_set(tmp_path / "b").fps == 24
    assert any("24 fps assumed (set source_fps)" in w for w in summary["clips"][0]["warnings"])


def test_colorspace_decides_the_input_conversion_and_crop_is_reported(tiny_inverse, tmp_path):
    from engine.io.images import write_png
    from engine.gbuffer import open_gbuffer_set, srgb_to_linear
    from engine.jobs.common import JobError
    from engine.jobs.inverse_job import run_inverse

    seq = tmp_path / "seq"
    img = np.random.default_rng(4).random((32, 96, 3))
    for f in (1, 2):
        write_png(seq / f"p_{f:02d}.png", img)
    stored = np.round(img * 255) / 255
    run_inverse(seq, tmp_path / "srgb", _settings(previews=False), renderer=tiny_inverse, show_progress=False)
    np.testing.assert_allclose(open_gbuffer_set(tmp_path / "srgb").read("rgb", 1), srgb_to_linear(stored), atol=1e-3)
    summary = run_inverse(seq, tmp_path / "lin", _settings(previews=False, colorspace="linear", fit="crop"),
                          renderer=tiny_inverse, show_progress=False)
    lin = open_gbuffer_set(tmp_path / "lin")
    assert lin.resolution == (32, 32)                   # crop: the centre 32×32 of the 96×32 plate
    np.testing.assert_allclose(lin.read("rgb", 1), stored[:, 32:64], atol=1e-3)
    assert any("cropped to its centre 32x32" in w for w in summary["clips"][0]["warnings"])
    with pytest.raises(JobError, match="colorspace 'rec2020'"):
        run_inverse(seq, tmp_path / "x", _settings(colorspace="rec2020"), renderer=tiny_inverse)
