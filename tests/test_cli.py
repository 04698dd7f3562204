"""CLI behaviour: the inverse command end to end on a random tiny checkpoint, and its errors."""
import subprocess
import sys

import pytest

from engine.cli import main
from engine.demo_clip import make_demo_clip


@pytest.fixture(scope="module")
def inv_ckpt(ckpts):
    return ckpts[0]


def test_inverse_command_on_a_frame_folder(inv_ckpt, tmp_path, capsys):
    clip = tmp_path / "clip"
    make_demo_clip(clip, frames=5, width=64, height=32)
    out = tmp_path / "out"
    out.mkdir()
    keep = out / "notes.txt"
    keep.write_text("mine")
    code = main(["inverse", str(clip), "--out", str(out), "--model", str(inv_ckpt), "--passes", "normal,depth",
                 "--frames", "3", "--overlap", "1", "--steps", "2", "--device", "cpu", "--resolution", "64x64"])
    assert code == 0
    for p in ("normal", "depth", "rgb"):
        files = sorted((out / p).glob("*.exr"))
        assert [f.name for f in files] == [f"{p}.{i:04d}.exr" for i in range(5)], "frame numbers from the names"
    assert keep.read_text() == "mine", "existing files in the output folder are left alone"
    out_text = capsys.readouterr().out
    assert "5 frames × 2 passes at 64x32, processed at 64x64 (padded 0,16,0,16)" in out_text, \
        "the set has the input's size; the padding to the processing size is reported"
    assert not list(out.rglob("*.tmp*")), "no temporary files left behind"


@pytest.mark.parametrize("argv_tail,message", [
    (["--passes", "albedo"], "--passes: unknown pass albedo"),
    (["--frames", "0"], "must be at least 1"),
    (["--overlap", "24"], "--overlap must be between 0 and --frames"),
])
def test_inverse_bad_options(inv_ckpt, tmp_path, capsys, argv_tail, message):
    make_demo_clip(tmp_path / "c", frames=1, width=64, height=32)
    code = main(["inverse", str(tmp_path / "c"), "--out", str(tmp_path / "o"), "--model", str(inv_ckpt), *argv_tail])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0]
    assert "Traceback" not in err[0]


def test_inverse_missing_and_empty_input(tmp_path, capsys):
    assert main(["inverse", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "input not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["inverse", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no clips found" in capsys.readouterr().err


def test_inverse_bad_model_folder(tmp_path, capsys):
    make_demo_clip(tmp_path / "c", frames=1, width=64, height=32)
    (tmp_path / "m").mkdir()
    assert main(["inverse", str(tmp_path / "c"), "--out", str(tmp_path / "o"), "--model", str(tmp_path / "m")]) == 2
    assert "unet/config.json" in capsys.readouterr().err


def test_published_model_without_hub_says_how_to_provide_weights(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    make_demo_clip(tmp_path / "c", frames=1, width=64, height=64)
    assert main(["inverse", str(tmp_path / "c"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "download" in err and "--model" in err


def test_python_dash_m_engine_runs():
    res = subprocess.run([sys.executable, "-m", "engine", "--version"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.startswith("diffusion-renderer ")
