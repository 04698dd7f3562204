"""Fault matrix — resume (issue 15, Build 2): an interrupted job resumed equals an uninterrupted one bit for bit.

| case | expected behaviour |
|---|---|
| inverse interrupted after 2 of 5 segments (in-process), rerun | 2 segments resumed; every EXR equals a clean run's bit for bit |
| forward interrupted after 2 of 5 segments (in-process), rerun | 2 segments resumed; relit EXRs equal a clean run's bit for bit |
| CLI process killed with SIGKILL after segment 2 is cached, rerun | rerun resumes; every EXR equals a clean CLI run's bit for bit |
| a cached segment is damaged (bytes flipped / truncated) | verified at load: recomputed, result equals a clean run |
| a cached segment of another job / another segment copied in place | verified at load (key, name): recomputed |
| the cache stores what the run computes in | float32 entries, key/name/checksum in the safetensors metadata |
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.fault_matrix.plates import write_plate

REPO = Path(__file__).resolve().parents[2]


class Interrupt(BaseException):
    """Stands in for a kill: raised from the progress listener, nothing below catches it."""


@pytest.fixture(scope="module")
def plate(tmp_path_factory):
    return write_plate(tmp_path_factory.mktemp("plate") / "plate.mp4", 12)


@pytest.fixture(scope="module")
def inverse_renderer(ckpts):
    from engine.pipelines import InverseRenderer

    return InverseRenderer.from_pretrained(ckpts[0], device="cpu")


def inv_settings(**kw):
    from engine.jobs.inverse_job import InverseSettings

    base = dict(passes=("basecolor", "normal", "depth", "roughness", "metallic"), frames=4, overlap=2, steps=1,
                resolution=(64, 64), windows_per_segment=1, previews=False, seed=3)
    return InverseSettings(**{**base, **kw})


def interrupt_at_segment(k: int):
    def listener(event):
        if event.get("stage") == "denoise" and event.get("chunk") == k:
            raise Interrupt(f"killed while segment {k} runs")
    return listener


def exr_arrays(folder: Path) -> dict:
    from engine.io import read_exr

    files = sorted(p for p in Path(folder).rglob("*.exr") if ".dr-" not in str(p))
    assert files, f"no EXRs under {folder}"
    return {str(p.relative_to(folder)): read_exr(p) for p in files}


def assert_bit_identical(a: Path, b: Path) -> None:
    fa, fb = exr_arrays(a), exr_arrays(b)
    assert sorted(fa) == sorted(fb)
    differ = [name for name in fa if any(not np.array_equal(fa[name][c], fb[name][c]) for c in fa[name])]
    assert not differ, f"{len(differ)} of {len(fa)} EXRs differ, e.g. {differ[:3]}"


@pytest.fixture(scope="module")
def clean_inverse(plate, inverse_renderer, tmp_path_factory):
    from engine.jobs.inverse_job import run_clip

    out = tmp_path_factory.mktemp("clean") / "set"
    res = run_clip(plate, out, inv_settings(), inverse_renderer, show_progress=False)
    assert res.segments == 5 and res.resumed_segments == 0
    return out


def test_inverse_interrupted_then_resumed_equals_a_clean_run_bit_for_bit(plate, inverse_renderer, clean_inverse,
                                                                        tmp_path):
    from engine.jobs.inverse_job import run_clip

    out = tmp_path / "set"
    with pytest.raises(Interrupt):
        run_clip(plate, out, inv_settings(), inverse_renderer, listener=interrupt_at_segment(2), show_progress=False)
    assert not (out / "manifest.json").exists()
    res = run_clip(plate, out, inv_settings(), inverse_renderer, show_progress=False)
    assert res.resumed_segments == 2
    assert_bit_identical(out, clean_inverse)


def test_the_cache_stores_float32_with_its_key_and_checksum(tmp_path):
    import torch
    from safetensors import safe_open

    from engine.jobs.common import ResumeCache

    cache = ResumeCache(tmp_path, "k1")
    value = np.linspace(0, 1, 24, dtype=np.float32).reshape(2, 3, 4) + np.float32(1e-4)
    cache.put("seg_0000", {"pass:depth": value})
    path = tmp_path / ".dr-resume" / "k1" / "seg_0000.safetensors"
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata()
        assert fh.get_tensor("pass:depth").dtype == torch.float32
    assert meta["key"] == "k1" and meta["name"] == "seg_0000" and "pass:depth" in meta["checksums"]
    got = cache.get("seg_0000")
    assert np.array_equal(np.asarray(got["pass:depth"]), value)


@pytest.mark.parametrize("damage", ["flip", "truncate", "other-key", "other-name"])
def test_a_damaged_or_foreign_cache_entry_is_recomputed(plate, inverse_renderer, clean_inverse, tmp_path, damage):
    from engine.jobs.inverse_job import run_clip

    out = tmp_path / "set"
    with pytest.raises(Interrupt):
        run_clip(plate, out, inv_settings(), inverse_renderer, listener=interrupt_at_segment(2), show_progress=False)
    (key_dir,) = (out / ".dr-resume").iterdir()
    seg0, seg1 = key_dir / "seg_0000.safetensors", key_dir / "seg_0001.safetensors"
    if damage == "flip":
        data = bytearray(seg0.read_bytes())
        data[-7] ^= 0x55                                       # inside the tensor data: safetensors still loads it
        seg0.write_bytes(bytes(data))
    elif damage == "truncate":
        seg0.write_bytes(seg0.read_bytes()[:-100])
    elif damage == "other-name":
        seg0.write_bytes(seg1.read_bytes())                    # segment 1's entry under segment 0's name
    else:
        from engine.jobs.common import ResumeCache

        other = ResumeCache(tmp_path / "elsewhere", "another-key")
        other.put("seg_0000", {k: np.zeros_like(v) for k, v in ResumeCache(out, key_dir.name).get("seg_0001").items()})
        seg0.write_bytes((tmp_path / "elsewhere" / ".dr-resume" / "another-key" / "seg_0000.safetensors").read_bytes())
    res = run_clip(plate, out, inv_settings(), inverse_renderer, show_progress=False)
    assert res.resumed_segments == 1, "only the intact entry is reused"
    assert_bit_identical(out, clean_inverse)


def test_forward_interrupted_then_resumed_equals_a_clean_run_bit_for_bit(clean_inverse, ckpts, tmp_path):
    from engine.io.exr import write_exr_rgb
    from engine.jobs.forward_job import ForwardSettings, run_forward
    from engine.pipelines import ForwardRenderer

    hdri = tmp_path / "sky.exr"
    yy, xx = np.mgrid[0:16, 0:32] / np.array([16.0, 32.0])[:, None, None]
    write_exr_rgb(hdri, np.stack([xx * 4, yy * 2, 1 - yy], -1).astype(np.float32), dtype="float")
    r = ForwardRenderer.from_pretrained(ckpts[1], device="cpu")
    s = ForwardSettings(frames=4, overlap=2, steps=1, resolution=(64, 64), windows_per_segment=1, previews=False,
                        seed=5, model=str(ckpts[1]))
    with pytest.raises(Interrupt):
        run_forward(clean_inverse, [hdri], tmp_path / "a", s, renderer=r, listener=interrupt_at_segment(2),
                    show_progress=False)
    summary = run_forward(clean_inverse, [hdri], tmp_path / "a", s, renderer=r, show_progress=False)
    assert summary["clips"][0]["resumed_segments"] == 2
    clean = run_forward(clean_inverse, [hdri], tmp_path / "b", s, renderer=r, show_progress=False)
    assert clean["clips"][0]["resumed_segments"] == 0
    assert_bit_identical(tmp_path / "a" / "sky", tmp_path / "b" / "sky")


def _cli(plate, out, ckpt):
    return [sys.executable, "-m", "engine", "inverse", str(plate), "--out", str(out), "--model", str(ckpt),
            "--resolution", "64x64", "--steps", "1", "--frames", "4", "--overlap", "2", "--windows-per-segment", "1",
            "--device", "cpu", "--passes", "basecolor,depth", "--seed", "3", "--no-previews"]


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def test_cli_killed_with_sigkill_then_rerun_equals_a_clean_run_bit_for_bit(plate, ckpts, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli(plate, out, ckpts[0]), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        import time

        deadline = time.monotonic() + 300          # a deadline against hanging only, never asserted on
        while not list(out.glob(".dr-resume/*/seg_0001.safetensors")):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert not (out / "manifest.json").exists()
    rerun = subprocess.run(_cli(plate, out, ckpts[0]) + ["--json"], cwd=REPO, env=_env(), check=True,
                           capture_output=True, text=True)
    assert json.loads(rerun.stdout)["clips"][0]["resumed_segments"] >= 2
    subprocess.run(_cli(plate, tmp_path / "clean", ckpts[0]), cwd=REPO, env=_env(), check=True, capture_output=True)
    assert_bit_identical(out, tmp_path / "clean")
