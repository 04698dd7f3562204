"""The live relight preview (engine/jobs/preview_job.py, the protocol's "preview", `diffusion-renderer preview`).

Tiny random checkpoints on the CPU, 64×64 G-buffers, a few steps. Nothing is timed.

| case | expected |
|---|---|
| preview_window | centred, clamped into the clip keeping the length, whole clip when shorter |
| two previews of one set, two rotations | different images; the second encodes no G-buffer (counter) |
| a preview with the forward job's settings and window | equals the job's frame within 1e-5 |
| frame outside the set / missing set / bad params | one-line error naming the field |
| CLI `preview --json` | exit 0, summary on stdout, EXR + PNG written |
| server: a preview superseded by a newer one | first ends `error` cancelled "superseded by preview <id>", second `result` |
| protocol: preview message | builder validates; bad frame type, relative paths, wrong suffix, bad params refused |
"""
import json
from pathlib import Path

import numpy as np
import pytest

from engine.contract import protocol as PR
from engine.contract.preview import preview_window

W = H = 64
FRAMES = [1, 2, 3, 4, 5, 6]


def _write_set(folder: Path) -> Path:
    from engine.gbuffer import GBufferSetWriter, make_provenance

    w = GBufferSetWriter(folder, {"fps": 24, "depth": {"kind": "metric"}, "alpha": "alpha",
                                  "provenance": make_provenance("blender", source="preview-test.blend")})
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32) / W
    for i, f in enumerate(FRAMES):
        n = np.stack([xx - 0.5, yy - 0.5, np.full_like(xx, 0.8)], -1)
        n /= np.linalg.norm(n, axis=-1, keepdims=True)
        w.write_frame("basecolor", f, np.stack([xx, yy, np.full_like(xx, 0.1 * i)], -1))
        w.write_frame("normal", f, n.astype(np.float32))
        w.write_frame("depth", f, (2.0 + xx + 0.1 * i).astype(np.float32))
        w.write_frame("roughness", f, (0.2 + 0.5 * yy).astype(np.float32))
        w.write_frame("metallic", f, (0.3 * xx).astype(np.float32))
        w.write_frame("alpha", f, np.ones((H, W), np.float32))
    w.finish()
    return folder


@pytest.fixture(scope="module")
def assets(tmp_path_factory, ckpts):
    from engine.envmap import write_hdr

    root = tmp_path_factory.mktemp("preview")
    yy, xx = np.mgrid[0:16, 0:32] / np.array([16.0, 32.0])[:, None, None]
    sky = np.stack([xx * 2, yy, 0.5 + 0 * xx], -1).astype(np.float32)
    sky[4:6, 5:8] = 200.0                                   # a sun: rotations move it
    write_hdr(root / "sky.hdr", sky)
    return {"set": _write_set(root / "set"), "hdri": root / "sky.hdr", "fwd": ckpts[1], "root": root}


def _params(assets, **extra):
    return {"model": str(assets["fwd"]), "device": "cpu", "preview_size": "64x64", "env_resolution": "32x32",
            "steps": 2, "preview_frames": 4, "frames": 4, "overlap": 0, **extra}


@pytest.fixture(scope="module")
def previewer(assets):
    from engine.jobs.preview_job import Previewer
    from engine.pipelines import ForwardRenderer

    r = ForwardRenderer.from_pretrained(assets["fwd"], device="cpu")
    return Previewer(lambda settings: r)


# ----------------------------------------------------------------------------- the window rule
@pytest.mark.parametrize("frame, first, last, frames, expected", [
    (10, 1, 100, 4, (9, 12)), (10, 1, 100, 5, (8, 12)), (1, 1, 100, 4, (1, 4)), (100, 1, 100, 4, (97, 100)),
    (3, 1, 3, 8, (1, 3)), (1001, 1001, 1001, 8, (1001, 1001)), (5, 1, 8, 8, (1, 8)), (7, 1, 8, 1, (7, 7))])
def test_preview_window(frame, first, last, frames, expected):
    assert preview_window(frame, first, last, frames) == expected


def test_preview_window_refuses_a_frame_outside_the_clip():
    with pytest.raises(ValueError, match="frame 9 is outside the clip's frames 1..8"):
        preview_window(9, 1, 8, 4)


# ----------------------------------------------------------------------------- the previewer
def test_two_rotations_give_different_images_and_reuse_the_gbuffer_latents(previewer, assets, tmp_path):
    from engine.io import read_exr

    before = previewer.stats["gbuffer_encodes"]
    a = previewer.preview(assets["set"], assets["hdri"], 3, tmp_path / "a.exr", _params(assets, env_rotation=0.0))
    assert previewer.stats["gbuffer_encodes"] == before + 1
    b = previewer.preview(assets["set"], assets["hdri"], 3, tmp_path / "b.exr", _params(assets, env_rotation=90.0))
    assert previewer.stats["gbuffer_encodes"] == before + 1, "the second preview encoded no G-buffer"
    assert b["cached"] == {"gbuffer_latents": True, "env_tokens": False}
    assert a["frames"] == [2, 5] and a["size"] == [W, H] and a["steps"] == 2
    assert np.abs(a["image"] - b["image"]).max() > 1e-4, "another rotation gives another picture"
    exr = read_exr(tmp_path / "b.exr")
    np.testing.assert_array_equal(np.stack([exr[c] for c in "RGB"], -1), b["image"])   # float EXR, linear
    assert (tmp_path / "b.png").is_file() and not list(tmp_path.glob("*.tmp*"))
    c = previewer.preview(assets["set"], assets["hdri"], 3, tmp_path / "c.exr", _params(assets, env_rotation=90.0))
    assert c["cached"] == {"gbuffer_latents": True, "env_tokens": True}
    np.testing.assert_array_equal(c["image"], b["image"])                              # same request, same picture


def test_preview_with_the_jobs_settings_equals_the_forward_jobs_frame(previewer, assets, tmp_path, monkeypatch):
    """Same window (the whole 6-frame clip, one segment), seed, size, steps, decode chunks: the same frame."""
    from engine.gbuffer import GBufferSetWriter
    from engine.jobs.forward_job import ForwardSettings, run_forward

    written = {}
    original = GBufferSetWriter.write_frame

    def capture(self, name, frame, data, *a, **k):
        written[frame] = np.array(data, np.float32)
        return original(self, name, frame, data, *a, **k)

    monkeypatch.setattr(GBufferSetWriter, "write_frame", capture)
    common = dict(steps=2, frames=6, overlap=0, seed=7, env_rotation=45.0, guidance=1.5, decode_chunk=4,
                  decode_overlap=1, device="cpu", model=str(assets["fwd"]))
    settings = ForwardSettings(**common, resolution=(64, 64), env_resolution=(32, 32), output_size="processing",
                               previews=False)
    run_forward(assets["set"], [assets["hdri"]], tmp_path / "job", settings, renderer=previewer.renderer_for(None),
                show_progress=False)
    monkeypatch.undo()
    for frame in (2, 5):
        res = previewer.preview(assets["set"], assets["hdri"], frame, tmp_path / f"p{frame}.exr",
                                {**common, "preview_size": "64x64", "env_resolution": "32x32", "preview_frames": 6})
        assert res["frames"] == [1, 6]
        np.testing.assert_allclose(res["image"], written[frame], atol=1e-5, rtol=0)


@pytest.mark.parametrize("frame, set_name, params, match", [
    (99, "set", {}, r"field 'frame': frame 99 is not in .* \(frames 1..6\)"),
    (3, "missing", {}, r"field 'set': .*missing: G-buffer input not found"),
    (3, "set", {"steps": 0}, r"field 'params.steps': must be at least 1, got 0"),
    (3, "set", {"hdri_settings": []}, r"field 'params.hdri_settings': unknown parameter"),
])
def test_bad_requests_get_one_line_errors_naming_the_field(previewer, assets, tmp_path, frame, set_name, params,
                                                           match):
    from engine.jobs.common import JobError

    path = assets["set"] if set_name == "set" else tmp_path / set_name
    with pytest.raises(JobError, match=match) as info:
        previewer.preview(path, assets["hdri"], frame, tmp_path / "x.exr", {**_params(assets), **params})
    assert "\n" not in str(info.value)
    assert not (tmp_path / "x.exr").exists()


def test_cli_preview_json(assets, tmp_path, capsys):
    from engine.cli import main

    out = tmp_path / "cli.exr"
    code = main(["preview", str(assets["set"]), "--hdri", str(assets["hdri"]), "--frame", "6", "--env-rotation", "30",
                 "--steps", "1", "--size", "64x64", "--out", str(out), "--model", str(assets["fwd"]), "--device", "cpu",
                 "--env-resolution", "32x32", "--preview-frames", "2", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frame"] == 6 and summary["frames"] == [5, 6] and summary["steps"] == 1
    assert summary["outputs"] == [str(out), str(out.with_suffix(".png"))]
    assert out.is_file() and out.with_suffix(".png").is_file()


def test_cli_preview_bad_frame_is_one_line(assets, tmp_path, capsys):
    from engine.cli import main

    code = main(["preview", str(assets["set"]), "--hdri", str(assets["hdri"]), "--frame", "0", "--out",
                 str(tmp_path / "x.exr"), "--model", str(assets["fwd"]), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "frame 0 is not in" in err and "\n" not in err


# ----------------------------------------------------------------------------- protocol
def test_protocol_preview_message():
    msg = PR.preview("p-1", "/shots/set", "/hdri/sky.hdr", 1001, "/tmp/p.exr", {"env_rotation": 90.0}, id=3)
    assert PR.validate(msg) == [] and msg["v"] == PR.VERSION == "1.3"
    assert PR.validate({**msg, "frame": "12"}) == ["field 'frame': expected int, got '12'"]
    assert PR.validate({**msg, "set": "set"}) == ["field 'set': must be an absolute path, got 'set'"]
    assert PR.validate({**msg, "out": "/tmp/p.png"}) == ["field 'out': '/tmp/p.png' must end in .exr"]
    assert PR.validate({**msg, "params": {"preview_size": "64"}}) == [
        "field 'params.preview_size': expected WIDTHxHEIGHT, e.g. 960x512, got '64'"]
    assert PR.validate({**msg, "params": {"input": "x"}}) == [
        "field 'params.input': unknown parameter for preview jobs"]
    res = PR.result("p-1", "preview", [], "/tmp/p.exr", {"frame": 1001}, outputs=["/tmp/p.exr", "/tmp/p.png"])
    assert PR.validate(res, PR.TO_CLIENT) == []
    assert PR.validate(PR.progress("p-1", "encode", 1, 2), PR.TO_CLIENT) == []


# ----------------------------------------------------------------------------- server
def test_server_newer_preview_supersedes_the_running_one(assets, tmp_path):
    from test_server_engine import Engine

    engine = Engine(tmp_path / "engine", "--log-file", str(tmp_path / "engine.log"))
    try:
        args = (str(assets["set"]), str(assets["hdri"]), 3)
        engine.send(PR.preview("p-1", *args, str(tmp_path / "p1.exr"), _params(assets, steps=500), id="r1"))
        assert engine.recv(lambda m: m["type"] in ("ack", "error") and m.get("job") == "p-1")["type"] == "ack"
        engine.recv(lambda m: m["type"] == "progress" and m["job"] == "p-1" and m["stage"] == "denoise", timeout=120)
        engine.send(PR.preview("p-2", *args, str(tmp_path / "p2.exr"), _params(assets, env_rotation=90.0), id="r2"))
        seen = []
        first = engine.recv(lambda m: m["type"] in ("result", "error") and m.get("job") == "p-1", 60, into=seen)
        assert first["type"] == "error" and first["code"] == "cancelled"
        assert first["message"] == "superseded by preview p-2" and first["reply_to"] == "r1"
        second = engine.recv(lambda m: m["type"] in ("result", "error") and m.get("job") == "p-2", 120, into=seen)
        assert second["type"] == "result" and second["kind"] == "preview", second
        assert second["outputs"] == [str(tmp_path / "p2.exr"), str(tmp_path / "p2.png")]
        assert second["summary"]["cached"]["gbuffer_latents"] is True    # p-1 encoded them before it was stopped
        assert (tmp_path / "p2.exr").is_file() and not (tmp_path / "p1.exr").exists()
        stages = [m["stage"] for m in seen if m["type"] == "progress" and m["job"] == "p-2"]
        assert "denoise" in stages and "write" in stages
        bad = engine.send(PR.preview("p-3", *args[:2], 99, str(tmp_path / "p3.exr"), _params(assets)))
        assert bad
        err = engine.recv(lambda m: m["type"] in ("result", "error") and m.get("job") == "p-3", 60)
        assert err["code"] == "input_error" and err["message"].startswith("field 'frame': frame 99 is not in")
    finally:
        engine.close()


# ----------------------------------------------------------------------------- bench and cost model
def test_bench_preview_json(capsys):
    from engine.cli import main

    code = main(["bench", "--preview", "--tiny", "--resolution", "64x64", "--frames", "2", "--steps", "1",
                 "--device", "cpu", "--json"])
    assert code == 0
    r = json.loads(capsys.readouterr().out)
    assert r["frames"] == 2 and r["steps"] == 1 and r["resolution"] == [64, 64] and len(r["updates"]) == 3
    assert r["cached"] == {"gbuffer_latents": True, "env_tokens": False}      # each update turned the light
    assert set(r["stages"]) == {"inputs", "load_model", "encode", "denoise", "decode", "write"}
    assert r["update_s"] >= r["denoise_s"] > 0 and r["update_over_denoise"] >= 1.0


def test_cost_model_predicts_a_preview_update():
    from engine.jobs.job_estimate import estimate_job

    shot = {"width": 1920, "height": 1080, "frames": 48}
    gpu = {"device": "cuda", "dtype": "fp16"}
    pv = estimate_job("preview", shot, gpu)
    job = estimate_job("forward", shot, gpu)
    assert pv["kind"] == "preview" and pv["unet_evals"] == 8 and pv["windows"] == 1     # 8 steps, one window of 8
    assert pv["denoise_seconds"] <= pv["seconds"] < pv["first_seconds"] < job["seconds"]
    more = estimate_job("preview", shot, {**gpu, "steps": 16})
    assert more["unet_evals"] == 16 and more["seconds"] > pv["seconds"]
