"""The add-on's engine client inside Blender's Python (pip ``bpy``), driving the real engine.

Run by ``bin/test-blender`` (its own venv with bpy 5.0.1 + pytest; DR_ENGINE_PYTHON = the engine's
interpreter). Skipped in the engine's test run, where bpy is not installed.

The client starts the engine with the engine's own interpreter, handshakes, runs a tiny inverse job
pumped by the add-on's persistent timer function — called directly in a loop, because timers do not
fire when bpy runs as a module — across a factory reset (as if another .blend were loaded), loads the
result into Blender, cancels a second job, and shuts the engine down.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENGINE_PY = os.environ.get("DR_ENGINE_PYTHON", "")

if importlib.util.find_spec("bpy") is None:
    pytest.skip("bpy (Blender as a Python module) is not installed here; run bin/test-blender",
                allow_module_level=True)
if not ENGINE_PY:
    pytest.skip("DR_ENGINE_PYTHON is not set (the engine's interpreter; bin/test-blender sets it)",
                allow_module_level=True)
os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="dr-blender-user-"))
import bpy  # noqa: E402  (after BLENDER_USER_RESOURCES: keep the user's Blender config out of the tests)


def load_client():
    """The add-on's client as the add-on imports it (its package; the contract from this checkout)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return importlib.import_module("diffusion_renderer_addon.client")


dr = load_client()


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Random tiny inverse weights and a 3-frame 64×64 clip, made by the engine's interpreter (bpy's
    venv has no torch)."""
    root = tmp_path_factory.mktemp("bpy_assets")
    env = dr.clean_env(str(REPO), {"HF_HUB_OFFLINE": "1"})
    code = "import sys; from engine.random_checkpoint import write_random_checkpoint as w; w(sys.argv[1], 'inverse')"
    subprocess.run([ENGINE_PY, "-c", code, str(root / "ckpt")], check=True, cwd=REPO, env=env)
    subprocess.run([ENGINE_PY, "-m", "engine.demo_clip", str(root / "clip"), "--frames", "3", "--size", "64x64"],
                   check=True, cwd=REPO, env=env)
    return root


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bpy_client")
    config = dr.EngineConfig(python=ENGINE_PY, engine_root=str(REPO), env={"HF_HUB_OFFLINE": "1"},
                             jobs_dir=str(tmp / "jobs"), args=["--log-file", str(tmp / "engine.log")],
                             cancel_grace=5.0, kill_grace=5.0)
    c = dr.configure(config)
    dr.timer.register()
    yield c
    dr.shutdown_all()
    dr.timer.unregister()


def params(assets, steps):
    return {"input": str(assets / "clip"), "model": str(assets / "ckpt"), "passes": ["basecolor"], "steps": steps,
            "frames": 3, "overlap": 0, "resolution": "64x64", "device": "cpu", "previews": False}


def pump_with_timer(until, timeout=180.0, on_tick=None):
    """What Blender's event loop would do: call the registered timer function at its interval."""
    deadline = time.monotonic() + timeout
    intervals = set()
    while not until():
        assert time.monotonic() < deadline, "timed out"
        interval = dr.timer.tick()
        intervals.add(interval)
        if on_tick is not None:
            on_tick()
        time.sleep(min(interval, 0.05))
    return intervals


def test_job_pumped_by_the_persistent_timer_survives_a_file_load(client, assets):
    assert bpy.app.timers.is_registered(dr.timer.tick) and dr.current() is client
    job = client.submit("inverse", params(assets, steps=2))        # starts the engine; sent after its hello
    assert job.state == "queued" and client.state == "starting"
    reset = []

    def load_other_file():
        if job.state == "running" and not reset:
            bpy.ops.wm.read_factory_settings(use_empty=True)     # what loading another .blend does to add-ons
            reset.append(bpy.app.timers.is_registered(dr.timer.tick))

    intervals = pump_with_timer(lambda: job.is_terminal, on_tick=load_other_file)
    assert reset == [True], "the persistent timer must survive loading a file"
    assert dr.current() is client and client.registry.get(job.id) is job
    info = client.info
    assert info["protocol"].split(".")[0] == str(dr.CLIENT_PROTOCOL_MAJOR) and info["pid"] == client.proc.pid
    assert info["engine"] and info["torch"] and info["device"] in ("cpu", "cuda")
    assert job.state == "done", job.error and job.error.full_text()
    assert job.history == ["queued", "running", "done"] and dr.timer.ACTIVE_INTERVAL in intervals
    steps = [p["step"] for p in job.progress_log if p["stage"] == "denoise"]
    assert steps == sorted(steps) and steps[-1] == 2
    manifest = Path(job.manifest)
    assert manifest.is_file()
    first = sorted((manifest.parent / "basecolor").glob("*.exr"))[0]
    image = bpy.data.images.load(str(first))
    assert tuple(image.size) == (64, 64)
    assert dr.timer.tick() == dr.timer.IDLE_INTERVAL                # idle again: slow polling


def test_cancel_a_running_job(client, assets):
    job = client.submit("inverse", params(assets, steps=200))
    pump_with_timer(lambda: job.stage == "denoise" or job.is_terminal)
    assert job.state == "running"
    client.cancel(job.id)
    pump_with_timer(lambda: job.is_terminal, timeout=60)
    assert job.state == "cancelled" and job.history[-2:] == ["cancelling", "cancelled"]
    assert not (Path(job.folder) / "out" / "manifest.json").exists()
    assert client.state == "ready"


def test_blenders_own_python_is_refused_with_a_clear_message():
    other = dr.EngineClient(dr.EngineConfig(python=sys.executable), registry=dr.JobRegistry())
    with pytest.raises(dr.ClientError) as info:
        other.start()
    assert info.value.code == "engine_not_importable" and "No module named 'engine'" in info.value.message
    assert info.value.hint.startswith("That is Blender's own Python") and other.proc is None


def test_shutdown_stops_the_engine(client):
    proc = client.proc.proc
    dr.shutdown_all()
    assert proc.poll() is not None and dr.current() is None
    assert dr.timer.tick() == dr.timer.IDLE_INTERVAL                # safe with no engine
