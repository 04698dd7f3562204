"""One error hierarchy and one mapping (engine/errors.py): every user mistake is one line with the right
protocol code on the command line (exit 2) and through the server (the worker's error message), never
"internal"; out-of-memory is recognised by type; the CLI and the server say the same for the same error."""
import errno
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.cli import main
from engine.contract import protocol
from engine.errors import EngineError, ModelMemoryError, UserError, classify, describe
from engine.io.images import write_png


# ----------------------------------------------------------------------------- helpers
@pytest.fixture()
def assets(tmp_path, ckpts):
    from engine.envmap import write_hdr

    clip = tmp_path / "clip"
    for i in range(2):
        write_png(clip / f"f_{i + 1:04d}.png", np.full((64, 64, 3), 0.2 * (i + 1)))
    write_hdr(tmp_path / "sky.hdr", np.ones((8, 16, 3), np.float32))
    (tmp_path / "afile").write_text("keep me")
    return {"clip": clip, "hdri": tmp_path / "sky.hdr", "file": tmp_path / "afile", "inv": ckpts[0],
            "fwd": ckpts[1], "tmp": tmp_path}


def _inv(a, **extra):
    return {"input": str(a["clip"]), "out": str(a["tmp"] / "out"), "model": str(a["inv"]), "steps": 1,
            "device": "cpu", "resolution": "64x64", "previews": False, **extra}


def _fwd(a, **extra):
    return {"gbuffers": str(a["tmp"] / "nope"), "hdri": [str(a["hdri"])], "out": str(a["tmp"] / "out"),
            "model": str(a["fwd"]), "steps": 1, "device": "cpu", "previews": False, **extra}


def _argv(kind: str, params: dict) -> list:
    """The command line of a params dict (positionals first)."""
    from engine.contract import params as P

    argv = [kind]
    table = P.for_kind(kind)
    for name, value in params.items():
        p = table[name]
        if p.cli == "positional":
            argv.insert(1, str(value))
        elif p.cli == "no-flag":
            argv += [] if value else [p.flag]
        elif p.cli == "append":
            for v in value:
                argv += [p.flag, str(v)]
        else:
            argv += [p.flag, str(value)]
    return argv


def _cli(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


class _FakeCache:
    """The worker's model cache, handing out ``renderer`` (no model is loaded)."""
    needs_empty_cache = False

    def __init__(self, renderer=None):
        self.renderer = renderer

    def get(self, *args, **kwargs):
        return self.renderer, 0.0, False


def _server(kind: str, params: dict, tmp: Path, renderer=None) -> dict:
    """The terminal message of one submit through the server's own line handler and worker (run in this
    thread, no subprocess; with ``renderer``, the model cache hands it out instead of loading a model)."""
    import os

    from engine.server.serve import Server

    tmp.mkdir(parents=True, exist_ok=True)
    r, w = os.pipe()
    try:
        srv = Server(r, w, tmp / "engine.log")
        sent = []
        srv.send = srv.worker.send = sent.append
        if renderer is not None:
            srv.worker.cache = _FakeCache(renderer)
        srv.handle_line(protocol.encode(protocol.submit("j1", kind, str(tmp / "jobdir"), params, id="r1")))
        if sent[-1]["type"] == "error":          # refused by the protocol's checks
            msg = sent[-1]
        else:
            msg = srv.worker._execute(srv.worker._queue.popleft())
    finally:
        os.close(r)
        os.close(w)
    assert protocol.validate(msg, protocol.TO_CLIENT) == [], msg
    return msg


# ----------------------------------------------------------------------------- user mistakes, CLI and server
def _mistakes(a):
    """(name, kind, params, text the one line must contain, code through the server: the protocol's
    invalid_params for a number the submit's own check refuses, input_error for the rest)."""
    return [
        ("output path is a file", "inverse", _inv(a, out=str(a["file"])), "is an existing file", "input_error"),
        ("missing input folder", "inverse", _inv(a, input=str(a["tmp"] / "no-such-folder")), "not found",
         "input_error"),
        ("model is a file", "inverse", _inv(a, model=str(a["file"])), "is a file, not a checkpoint folder",
         "input_error"),
        ("model folder missing", "inverse", _inv(a, model=str(a["tmp"] / "no-model")), "does not exist",
         "input_error"),
        ("character device as input", "inverse", _inv(a, input="/dev/zero"), "not a regular file or folder",
         "input_error"),
        ("seed beyond 64 bits", "inverse", _inv(a, seed=2**70), "at most 9223372036854775807", "invalid_params"),
        ("decode overlap >= chunk", "inverse", _inv(a, decode_chunk=2, decode_overlap=4), "decode", "invalid_params"),
        ("resolution beyond 4096", "inverse", _inv(a, resolution="4160x64"), "4096", "invalid_params"),
    ]


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs a character device")
def test_each_user_mistake_is_one_line_exit_2_and_input_error_through_the_server(assets, capsys):
    for name, kind, params, text, code in _mistakes(assets):
        status, err = _cli(capsys, _argv(kind, params))
        assert status == 2, (name, err)
        assert len(err) == 1 and text in err[0], (name, err)
        assert "Traceback" not in err[0] and "Error:" not in err[0], (name, err)   # no `ExceptionType: …`
        msg = _server(kind, params, assets["tmp"] / name.replace(" ", "_"))
        assert msg["code"] == code and text in msg["message"], (name, msg)
        assert "\n" not in msg["message"] and "Error:" not in msg["message"], (name, msg)
    assert assets["file"].read_text() == "keep me"


@pytest.mark.parametrize("option,value", [("elevation", "nan"), ("env_rotation", "inf"), ("guidance", "nan"),
                                          ("elevation", "120"), ("env_rotation", "-inf")])
def test_non_finite_or_out_of_range_numbers_name_the_option(assets, capsys, option, value):
    status, err = _cli(capsys, _argv("forward", _fwd(assets)) + [f"--{option.replace('_', '-')}={value}"])
    assert status == 2 and len(err) == 1, err
    assert f"--{option.replace('_', '-')}" in err[0] and "Traceback" not in err[0], err
    assert "Error:" not in err[0], err
    problems = protocol.validate(protocol.submit("j", "forward", "/tmp/j", {**_fwd(assets), option: float(value)}))
    assert any(f"params.{option}" in p for p in problems), problems


def test_submit_numbers_are_checked_like_the_cli(assets):
    """The protocol refuses what the CLI refuses: a seed past int64, an overlap not below the decode chunk."""
    for extra in ({"seed": 2**63}, {"decode_chunk": 3, "decode_overlap": 3}, {"resolution": "64x9000"},
                  {"env_resolution": "16x16x16"}):
        kind = "forward" if "env_resolution" in extra else "inverse"
        params = {**(_fwd(assets) if kind == "forward" else _inv(assets)), **extra}
        problems = protocol.validate(protocol.submit("j", kind, "/tmp/j", params))
        assert len(problems) == 1 and f"params.{list(extra)[-1]}" in problems[0], (extra, problems)
    assert protocol.validate(protocol.submit("j", "inverse", "/tmp/j", _inv(assets, seed=2**63 - 1))) == []


def test_full_disk_while_writing_is_a_user_error(assets, capsys, monkeypatch):
    import engine.gbuffer.gbuffer_set as gs

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(assets["tmp"] / "out" / "depth.0001.exr"))

    monkeypatch.setattr(gs, "write_exr", disk_full, raising=False)
    monkeypatch.setattr(gs.GBufferSetWriter, "write_frame", disk_full)
    status, err = _cli(capsys, _argv("inverse", _inv(assets)))
    assert status == 2 and len(err) == 1, err
    assert "no space left on the disk" in err[0] and "depth.0001.exr" in err[0] and "free disk space" in err[0]
    msg = _server("inverse", _inv(assets, out=str(assets["tmp"] / "out2")), assets["tmp"])
    assert msg["code"] == "input_error" and "no space left" in msg["message"] and "free disk space" in msg["hint"]


# ----------------------------------------------------------------------------- out of memory, by type
class _OomRenderer:
    """A renderer that fails as a CUDA allocation does (the message does not say "out of memory")."""

    def __getattr__(self, name):
        raise torch.OutOfMemoryError("CUDA error: allocation of 2.00 GiB failed")

    def __call__(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA error: allocation of 2.00 GiB failed")


def test_out_of_memory_is_classified_by_type(assets):
    msg = _server("inverse", _inv(assets), assets["tmp"], renderer=_OomRenderer())
    assert msg["code"] == "out_of_memory" and "allocation of 2.00 GiB failed" in msg["message"]
    assert "low-vram" in msg["hint"]
    assert classify(MemoryError()).code == "out_of_memory"
    # a text that merely mentions memory is not an out-of-memory error
    assert classify(RuntimeError("ran out of memory in a test")).code == "internal"
    assert classify(ValueError("the budget is out of memory")).code == "input_error"


# ----------------------------------------------------------------------------- one mapping
@pytest.mark.parametrize("exc", [
    UserError("frame 3 of x.mov cannot be read"), FileNotFoundError("x.exr: not found"),
    OSError(errno.ENOSPC, "No space left on device", "/o/a.exr"), OSError(errno.EROFS, "Read-only", "/o"),
    NotADirectoryError(errno.ENOTDIR, "Not a directory", "/a/b"), torch.OutOfMemoryError("CUDA: 2 GiB"),
    ModelMemoryError("needs 90 GB", hint="lower it"), KeyError("unet"), RuntimeError("boom"),
    ValueError("first line\nsecond line"),
])
def test_cli_and_server_use_the_one_mapping(exc):
    from engine.server.worker import classify as server_classify

    c = classify(exc)
    code, message, hint, problems = server_classify(exc, None)
    assert (code, message) == (c.code, c.message)
    line = describe(exc).splitlines()[0]
    assert line.startswith(c.message)
    assert (c.code == "internal") == ("rerun with --verbose" in line)
    assert "\n" not in message and code in protocol.ERROR_CODES
    if c.details:
        assert problems == list(c.details)


def test_the_engines_error_classes_are_in_the_hierarchy():
    from engine.cli import UserError as CliUserError
    from engine.cli_options import OptionError
    from engine.hub import WeightsUnavailableError
    from engine.jobs.common import JobError
    from engine.jobs.gbuffer_inputs import GBufferInputError
    from engine.models.checkpoint import CheckpointFileMissingError, CheckpointMismatchError
    from engine.models.lora import LoraLoadError
    from engine.pipelines import Cancelled

    assert CliUserError is UserError
    for cls, code in [(JobError, "input_error"), (OptionError, "input_error"), (GBufferInputError, "input_error"),
                      (CheckpointMismatchError, "input_error"), (LoraLoadError, "input_error"),
                      (WeightsUnavailableError, "weights_unavailable"), (Cancelled, "cancelled")]:
        assert issubclass(cls, EngineError) and cls.code == code, cls
    weights = WeightsUnavailableError("inverse", "offline")
    assert classify(weights).code == "weights_unavailable" and "download inverse" in classify(weights).hint
    missing = CheckpointFileMissingError("/ckpt", "/ckpt/unet/config.json")
    assert isinstance(missing, FileNotFoundError) and classify(missing).code == "input_error"
    assert classify(Cancelled("stop")).code == "cancelled"
    assert classify(JobError("x")).message == "x"


# ----------------------------------------------------------------------------- predicted memory
def _full_size_folder(root: Path, kind: str) -> Path:
    """A checkpoint folder with the published widths (config only: the check never loads weights)."""
    from engine.models.published_configs import FULL

    folder = root / f"full-{kind}"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "config.json").write_text(json.dumps(FULL[f"{kind}_unet"]))
    return folder


def test_a_job_predicted_beyond_the_machine_is_refused_with_the_estimate(assets, capsys, monkeypatch, tmp_path):
    import engine.jobs.memory_check as mc

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    mc._memo.clear()
    calls = []
    real = mc.predicted_peak_gb

    def counted(kind, args):
        calls.append(args)
        return real(kind, args)

    monkeypatch.setattr(mc, "predicted_peak_gb", counted)
    monkeypatch.setattr(mc, "device_memory_gb", lambda device: 4.0)     # a 4 GB machine
    folder = _full_size_folder(tmp_path, "inverse")
    params = _inv(assets, model=str(folder), resolution="512x512", frames=8)
    status, err = _cli(capsys, _argv("inverse", params))
    assert status == 2 and len(err) == 1, err
    assert "needs about" in err[0] and "GB at 512x512" in err[0] and "4.0 GB" in err[0], err
    assert "lower the resolution" in err[0]
    peak = float(err[0].split("needs about ")[1].split(" GB")[0])
    assert peak > 4.0 * mc.MARGIN
    msg = _server("inverse", params, tmp_path)
    assert msg["code"] == "out_of_memory" and f"{peak:.1f} GB" in msg["message"]
    # the prediction was traced once and is cached on disk for the next process
    stored = json.loads((tmp_path / "cache" / "diffusion-renderer" / "perf" / "peak_memory.json").read_text())
    assert list(stored.values()) == [peak] or pytest.approx(list(stored.values())[0], abs=0.05) == peak
    mc._memo.clear()
    assert mc.predicted_peak_gb("inverse", calls[0]) == list(stored.values())[0]


def test_memory_check_skips_what_it_cannot_predict(assets, monkeypatch):
    """Tiny/custom checkpoints and weights not on disk are not predicted (loading reports those)."""
    import engine.jobs.memory_check as mc
    from engine.jobs.settings import build_settings

    monkeypatch.setattr(mc, "device_memory_gb", lambda device: 0.001)
    monkeypatch.setattr(mc, "predicted_peak_gb", lambda *a: pytest.fail("no prediction expected"))
    build_settings("inverse", _inv(assets))                       # the tiny test checkpoint
    monkeypatch.setenv("HF_HOME", str(assets["tmp"] / "empty-hf"))
    build_settings("inverse", _inv(assets, model="inverse"))      # published, not downloaded


def test_refusal_is_a_model_memory_error(monkeypatch, tmp_path):
    import engine.jobs.memory_check as mc
    from engine.jobs.inverse_job import InverseSettings

    monkeypatch.setattr(mc, "device_memory_gb", lambda device: 8.0)
    monkeypatch.setattr(mc, "predicted_peak_gb", lambda kind, args: 30.0 if args["width"] > 512 else 2.0)
    folder = _full_size_folder(tmp_path, "inverse")
    mc.check_memory("inverse", InverseSettings(model=str(folder), resolution=(512, 512), device="cpu"))
    with pytest.raises(ModelMemoryError) as info:
        mc.check_memory("inverse", InverseSettings(model=str(folder), resolution=(1024, 512), device="cpu"))
    c = classify(info.value)
    assert c.code == "out_of_memory" and "30.0 GB at 1024x512" in c.message and "8.0 GB RAM" in c.message
    assert "lower the resolution" in c.hint
