"""bin/demo's checks before any rendering (tools/demo.py): the forward weights are checked first, a missing
model offline gives ONE message whose options the demo accepts, and every run starts from a clean work folder."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import demo  # noqa: E402


@pytest.fixture
def offline_empty_cache(tmp_path, monkeypatch):
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_missing_weights_offline_stop_with_one_message(offline_empty_cache):
    with pytest.raises(demo._Stop) as err:
        demo.check_weights(sys.executable, "forward")
    text = str(err.value)
    assert err.value.code == 2 and "\n" not in text and "HF_HUB_OFFLINE" in text
    assert "download forward" in text and "--tiny" in text


def test_the_message_only_offers_options_the_demo_takes():
    flags = set(re.findall(r"bin/demo (--[a-z-]+)", demo.weights_message("x")))
    known = {a for action in demo.parser()._actions for a in action.option_strings}
    assert flags == {"--model", "--tiny"} and flags <= known


def test_a_missing_local_checkpoint_is_named(tmp_path):
    with pytest.raises(demo._Stop, match="--model .*nowhere") as err:
        demo.check_weights(sys.executable, str(tmp_path / "nowhere"))
    assert err.value.code == 2


def test_work_folder_is_cleaned_of_an_earlier_run(tmp_path):
    work = tmp_path / "work"
    for rel in ("render/frame_0001.exr", "render/frame_0099.exr", "env/sky.hdr", "jobs/forward-1/out/a.exr",
                "tiny-forward/unet/config.json"):
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text("x")
    (work / "engine.log").write_text("old")
    demo.clean_work(work)
    assert sorted(p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file()) == \
        ["tiny-forward/unet/config.json"]


def _bpy_python() -> Path | None:
    py = Path(os.environ.get("DR_BLENDER_VENV") or REPO / ".venv-blender") / "bin" / "python"
    return py if py.is_file() else None


def test_bin_demo_offline_stops_before_rendering(tmp_path):
    if _bpy_python() is None:
        pytest.skip("no bpy venv (.venv-blender or DR_BLENDER_VENV); run bin/test-blender once")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
               DR_ENGINE_PYTHON=os.environ.get("DR_ENGINE_PYTHON") or sys.executable)
    env.pop("HF_HUB_CACHE", None)
    r = subprocess.run([str(REPO / "bin" / "demo"), "--out", str(tmp_path / "demo")], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    messages = [ln for ln in r.stderr.splitlines() if ln.startswith("demo:")]
    assert len(messages) == 1 and "weights are not available" in messages[0], r.stderr
    assert "rendering G-buffers" not in r.stderr and not (tmp_path / "demo" / "work" / "render").exists()
