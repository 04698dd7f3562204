"""Fault matrix — numbers, sizes, memory and checkpoints (issue 15, Build 5 and 7).

| case | expected behaviour |
|---|---|
| the parameter table | every int/num parameter (and hdri_settings' rotation/strength) has a finite minimum and maximum |
| `--frames 100000`, `--env-rotation 1e308`, `--env-strength 1e30`, `--first-frame 2**40`, `--decode-chunk 5000` | refused by the CLI naming the option, and by `submit` / `estimate` (invalid_params) naming the field |
| `hdri_settings` strength 1e30 / rotation 1e9 | refused naming the entry and the range |
| a 10000×10 image at the automatic resolution (512000×512) | exit 2 before a model is loaded, naming the processing size, the 4096 limit and the fix |
| `--resolution 4096x4096` on a machine with too little RAM for the clip's buffers | exit 2 (out_of_memory through the server) before a model is loaded, with the estimate and the fix |
| the allocators' messages (DefaultCPUAllocator, "not enough memory", CUDA/HIP/cuDNN) | classified out_of_memory with the memory hint; other errors mentioning memory are not |
| NaN/Inf texels in an EXR HDRI | replaced (NaN → 0, +Inf → brightest finite) with a warning naming the file and the count |
| a checkpoint whose config.json no longer matches its weights (1 missing key; 1385 mismatched shapes; invalid JSON) | one line naming the folder, the counts, the first keys and the fix; every key only under -v (exception notes) |
"""
import json
import shutil

import numpy as np
import pytest

from engine.cli import main
from engine.contract import params as P
from engine.contract import protocol
from engine.errors import classify, describe
from engine.io.images import write_png


def _one_line(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "Traceback" not in err[0] and "Error:" not in err[0], err
    return err[0]


@pytest.fixture()
def clip(tmp_path):
    folder = tmp_path / "clip"
    for i in range(2):
        write_png(folder / f"f_{i + 1:04d}.png", np.full((64, 64, 3), 0.2 * (i + 1)))
    return folder


def _inv_argv(ckpts, clip, out, *extra):
    return ["inverse", str(clip), "--out", str(out), "--model", str(ckpts[0]), "--steps", "1", "--device", "cpu",
            "--no-previews", *extra]


@pytest.fixture()
def no_model(monkeypatch):
    """Loading a model fails the test: the refusals must come before it."""
    import engine.jobs.inverse_job as inverse_job

    def load(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(inverse_job, "load_renderer", load)


# ----------------------------------------------------------------------------- ranges
def test_every_numeric_parameter_has_a_range():
    for kind in P.KINDS:
        for p in P.for_kind(kind).values():
            if p.type.split("|")[0] in ("int", "num", "list[int]", "list[num]"):
                assert p.minimum is not None and p.maximum is not None, (kind, p.name)
                assert float("-inf") < p.minimum < p.maximum < float("inf"), (kind, p.name)


@pytest.mark.parametrize("kind,name,value", [
    ("inverse", "frames", 100000), ("inverse", "first_frame", 2**40), ("inverse", "decode_chunk", 5000),
    ("inverse", "windows_per_segment", 10**9), ("inverse", "fps", 1e9), ("forward", "env_rotation", 1e308),
    ("forward", "env_strength", 1e30), ("forward", "fixed_frame", 2**62),
])
def test_huge_numbers_are_refused_everywhere_naming_the_option(kind, name, value):
    from engine.cli_options import check_params

    flag = P.param(name, kind).flag
    problems = check_params(kind, {name: value})
    assert any(p.startswith(f"{flag} must be at most") for p in problems), problems
    base = {"input": "/x.mp4"} if kind == "inverse" else {"gbuffers": "/g", "hdri": ["/a.hdr"]}
    submit = protocol.submit("j", kind, "/tmp/j", {**base, "out": "/o", name: value})
    assert any(f"params.{name}" in p and "at most" in p for p in protocol.validate(submit)), submit
    estimate = {"type": "estimate", "v": protocol.VERSION, "id": "e", "kind": kind,
                "size": {"width": 64, "height": 64, "frames": 2}, "params": {name: value}}
    assert any(f"params.{name}" in p for p in protocol.validate(estimate))


def test_hdri_settings_are_range_checked():
    base = {"gbuffers": "/g", "hdri": ["/a.hdr"], "out": "/o"}
    for entry, text in (({"strength": 1e30}, "strength must be between 0 and"),
                        ({"rotation": 1e9}, "rotation must be between -3600 and 3600")):
        problems = P.problems("forward", {**base, "hdri_settings": [entry]})
        assert len(problems) == 1 and text in problems[0], problems


# ----------------------------------------------------------------------------- sizes and memory
def test_a_10000x10_image_is_refused_before_a_model_loads(ckpts, tmp_path, capsys, no_model):
    wide = tmp_path / "wide"
    write_png(wide / "f_0001.png", np.zeros((10, 10000, 3)))
    line = _one_line(capsys, _inv_argv(ckpts, wide, tmp_path / "out"))
    assert "10000x10" in line and "512000x512" in line and "4096 pixels per side" in line, line
    assert "--resolution" in line, line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_buffers_beyond_the_ram_are_refused_before_a_model_loads(ckpts, clip, tmp_path, capsys, monkeypatch,
                                                                  no_model):
    import engine.jobs.memory_check as mc

    monkeypatch.setattr(mc, "ram_gb", lambda: 0.5)
    line = _one_line(capsys, _inv_argv(ckpts, clip, tmp_path / "out", "--resolution", "4096x4096"))
    assert "GB of frames" in line and "4096x4096" in line and "0.5 GB RAM" in line, line
    assert "lower the resolution" in line, line
    need = float(line.split("holds about ")[1].split(" GB")[0])
    assert need > 0.5 * mc.MARGIN
    from test_errors import _server

    params = {"input": str(clip), "out": str(tmp_path / "out2"), "model": str(ckpts[0]), "steps": 1,
              "device": "cpu", "resolution": "4096x4096", "previews": False}
    msg = _server("inverse", params, tmp_path / "srv")
    assert msg["code"] == "out_of_memory" and "GB of frames" in msg["message"], msg


def test_the_maximum_processing_size_is_4096():
    problems = P.problems("inverse", {"input": "/x", "resolution": "4160x64"})
    assert len(problems) == 1 and "4096" in problems[0], problems
    assert P.problems("inverse", {"input": "/x", "resolution": "4096x64"}) == []


@pytest.mark.parametrize("text", [
    "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate "
    "1099511627776 bytes. Error code 12 (Cannot allocate memory)",
    "[enforce fail at C:\\actions-runner\\alloc_cpu.cpp:72] data. DefaultCPUAllocator: not enough memory: you tried "
    "to allocate 4294967296 bytes.",
    "CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported at some other API call",
    "HIP out of memory. Tried to allocate 2.00 GiB",
    "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
])
def test_allocator_messages_are_out_of_memory(text):
    c = classify(RuntimeError(text))
    assert c.code == "out_of_memory" and "low-vram" in c.hint, c
    assert describe(RuntimeError(text)).startswith("out of memory (")
    assert classify(RuntimeError("the memory cache is stale")).code == "internal"


# ----------------------------------------------------------------------------- HDRI texels
def test_nan_and_inf_texels_in_an_exr_hdri_warn(tmp_path, caplog):
    from engine.envmap import load_envmap
    from engine.io.exr import write_exr_rgb

    img = np.full((8, 16, 3), 2.0, np.float32)
    img[0, 0] = np.nan
    img[1, 1, 0] = np.inf
    img[2, 2, 2] = -np.inf
    write_exr_rgb(tmp_path / "sky.exr", img, dtype="float")
    warnings = []
    out = load_envmap(tmp_path / "sky.exr", warnings=warnings)
    assert np.isfinite(out).all()
    assert out[0, 0].tolist() == [0.0, 0.0, 0.0] and out[1, 1, 0] == 2.0 and out[2, 2, 2] == 0.0
    assert len(warnings) == 1 and "sky.exr" in warnings[0] and "3 NaN/Inf texels" in warnings[0], warnings
    clean = []
    img[np.isnan(img) | np.isinf(img)] = 1.0
    write_exr_rgb(tmp_path / "ok.exr", img, dtype="float")
    load_envmap(tmp_path / "ok.exr", warnings=clean)
    assert clean == []


def test_the_forward_job_reports_the_hdri_warning(tmp_path, monkeypatch):
    import engine.jobs.forward_job as fj
    from engine.jobs.units import light_for
    from engine.io.exr import write_exr_rgb

    img = np.ones((8, 16, 3), np.float32)
    img[3, 3] = np.nan
    write_exr_rgb(tmp_path / "sky.exr", img, dtype="float")

    class _Clip:
        cameras = None

    warnings = []
    light = light_for(_Clip(), tmp_path / "sky.exr", fj.ForwardSettings(), 2, warnings)
    assert np.isfinite(light.hdr).all() and len(warnings) == 1 and "sky.exr" in warnings[0]


# ----------------------------------------------------------------------------- checkpoints: one cause, one line
def _break(ckpts, tmp_path, how):
    folder = tmp_path / "ckpt"
    shutil.copytree(ckpts[0], folder)
    unet = folder / "unet"
    if how == "missing key":
        from safetensors.torch import load_file, save_file

        tensors = load_file(unet / "diffusion_pytorch_model.safetensors")
        tensors.pop(sorted(tensors)[0])
        save_file(tensors, unet / "diffusion_pytorch_model.safetensors")
    elif how == "wider config":
        config = json.loads((unet / "config.json").read_text())
        config["block_out_channels"] = [2 * c for c in config["block_out_channels"]]
        (unet / "config.json").write_text(json.dumps(config))
    elif how == "invalid json":
        (folder / "vae" / "config.json").write_text("{not json")
    return folder


@pytest.mark.parametrize("how,text", [
    ("missing key", "1 missing keys ("), ("wider config", "shape-mismatched keys ("), ("invalid json", "not valid JSON"),
])
def test_a_broken_checkpoint_is_one_line(ckpts, clip, tmp_path, capsys, how, text):
    folder = _break(ckpts, tmp_path, how)
    argv = ["inverse", str(clip), "--out", str(tmp_path / "out"), "--model", str(folder), "--steps", "1",
            "--device", "cpu", "--resolution", "64x64", "--no-previews"]
    line = _one_line(capsys, argv)
    assert str(folder) in line and text in line and "re-download the checkpoint" in line, line
    if how != "invalid json":
        assert "rerun with -v" in line and len(line) < 700, line
        with pytest.raises(Exception) as info:                    # -v: the traceback carries every key
            main(["-v", *argv])
        assert len(getattr(info.value, "__notes__", [])) >= 1
        assert info.value.details and all(d in info.value.__notes__ for d in info.value.details)
