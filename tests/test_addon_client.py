"""The add-on's engine client (diffusion_renderer_addon/client) in plain Python, against the real engine.

The client is loaded by file path as a stand-alone package (addon_client_helpers.py). The engine runs as
the add-on runs it: ``<python> -m engine serve`` with this interpreter (the engine's environment),
PYTHONPATH = the checkout, HF_HUB_OFFLINE=1. Jobs are 64×64, 3 frames, one pass, random tiny weights.
Fake engines: test_addon_client_fake_engine.py; start-up checks and units: test_addon_client_units.py.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from addon_client_helpers import POSIX, REPO, dr, wait_for


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A random tiny inverse checkpoint and a 3-frame 64×64 clip."""
    root = tmp_path_factory.mktemp("client_assets")
    from engine.random_checkpoint import write_random_checkpoint

    write_random_checkpoint(root / "ckpt", "inverse")
    subprocess.run([sys.executable, "-m", "engine.demo_clip", str(root / "clip"), "--frames", "3", "--size", "64x64"],
                   check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    return root


def job_params(assets, steps=1, **extra):
    return {"input": str(assets / "clip"), "model": str(assets / "ckpt"), "passes": ["basecolor"], "steps": steps,
            "frames": 3, "overlap": 0, "resolution": "64x64", "device": "cpu", "previews": False, **extra}


def make_config(tmp, **kw):
    kw.setdefault("env", {"HF_HUB_OFFLINE": "1"})
    return dr.EngineConfig(python=sys.executable, engine_root=str(REPO), jobs_dir=str(tmp / "jobs"),
                           args=["--log-file", str(tmp / "engine.log")], cancel_grace=5.0, kill_grace=5.0, **kw)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("client")
    c = dr.EngineClient(make_config(tmp), registry=dr.JobRegistry())
    c.wait_ready(120)
    yield c
    c.shutdown()


# ----------------------------------------------------------------------------- handshake and jobs
def test_handshake_reports_engine_protocol_and_devices(client, tmp_path_factory):
    import engine
    import torch

    info = client.info
    assert client.state == "ready"
    assert info["protocol"].split(".")[0] == str(dr.CLIENT_PROTOCOL_MAJOR)
    assert info["engine"] == engine.__version__
    assert info["pid"] == client.proc.pid
    assert info["torch"] == torch.__version__
    assert info["device"] in ("cpu", "cuda") and isinstance(info["cuda_available"], bool)
    assert isinstance(info["devices"], list) and isinstance(info["models"], list)
    assert info["python"].startswith(f"{sys.version_info[0]}.{sys.version_info[1]}")
    assert info["log_file"].endswith("engine.log") and Path(info["log_file"]).is_file()
    assert client.log_path == info["log_file"]
    if POSIX:  # its own session/process group: a cancel signal can never reach us
        assert os.getpgid(client.proc.pid) == client.proc.pid != os.getpgid(0)


def test_inverse_job_queued_running_done_with_monotonic_progress(client, assets):
    seen, done_calls = [], []
    job = dr.blocking.run_job("inverse", job_params(assets, steps=2), client=client, timeout=180,
                              on_progress=lambda j: seen.append((j.state, j.fraction)))
    job.on_done(done_calls.append)                            # already finished: called at once
    assert job.state == "done" and job.history == ["queued", "running", "done"]
    assert job.accepted and job.started and job.finished >= job.started
    denoise = [p for p in job.progress_log if p["stage"] == "denoise"]
    assert [p["total"] for p in denoise] == [2] * len(denoise) and denoise[-1]["step"] == 2
    assert [p["step"] for p in denoise] == sorted(p["step"] for p in denoise)
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and job.fraction == 1.0
    manifest = Path(job.manifest)
    assert manifest.is_file() and json.loads(manifest.read_text())["passes"].keys() >= {"basecolor"}
    assert job.result["kind"] == "inverse" and Path(job.result["out"]) == manifest.parent
    assert dr.jobs.read_job_folder(job.folder)["manifests"] == [str(manifest)]   # recoverable from disk
    assert done_calls == [job]
    assert not [line for line in client.stderr_tail(200) if line.startswith("[client]")]   # all messages valid


def test_cancel_running_job_leaves_no_manifest_and_engine_keeps_serving(client, assets):
    pid = client.proc.pid
    job = client.submit("inverse", job_params(assets, steps=200))
    wait_for(client, lambda: job.stage == "denoise" or job.is_terminal)
    assert job.state == "running"
    assert client.cancel(job.id) and job.state == "cancelling"
    dr.blocking.wait(job, client, timeout=60, raise_on_error=False)
    assert job.state == "cancelled" and job.history[-3:] == ["running", "cancelling", "cancelled"]
    assert job.step < 200 and not (Path(job.folder) / "out" / "manifest.json").exists()
    assert dr.jobs.read_job_folder(job.folder)["state"] == "cancelled"
    assert client.state == "ready" and client.proc.pid == pid
    with pytest.raises(dr.blocking.JobFailed) as info:
        dr.blocking.wait(job, client)
    assert info.value.code == "cancelled"


def test_cancel_queued_job_never_runs(client, assets):
    first = client.submit("inverse", job_params(assets, steps=200))
    second = client.submit("inverse", job_params(assets, steps=1))
    wait_for(client, lambda: second.accepted)
    assert second.queue_position == 1
    client.cancel(second.id)
    wait_for(client, lambda: second.is_terminal)
    assert second.state == "cancelled" and "running" not in second.history
    client.cancel(first.id)
    dr.blocking.wait(first, client, timeout=60, raise_on_error=False)
    assert first.state == "cancelled"


def test_engine_job_error_is_reported_with_its_message(client, tmp_path):
    missing = tmp_path / "no-such-clip"
    job = dr.blocking.run_job("inverse", {"input": str(missing)}, client=client, raise_on_error=False, timeout=60)
    assert job.state == "failed" and job.history == ["queued", "failed"]
    assert job.error.code == "input_error" and str(missing) in job.error.message
    assert job.error.log_path == client.log_path


def test_estimate_before_submitting(client):
    est = client.estimate("inverse", {"width": 1920, "height": 1080, "frames": 48, "passes": 5},
                          {"memory": "low-vram", "device": "cuda"})
    assert est["type"] == "estimate" and est["kind"] == "inverse"
    d = est["detail"]
    assert d["windows"] == 3 and d["unet_batch"] == 1 and d["unet_evals"] == 20 * 3 * 5 and d["memory"] == "low-vram"
    assert 0 < est["peak_memory_gb"] < 8 and est["seconds"] > 0
    with pytest.raises(dr.ClientError, match="size.width"):
        client.estimate("inverse", {"width": 0, "height": 64, "frames": 2})
    with pytest.raises(dr.ClientError, match="cannot estimate"):       # refused by the engine: not a multiple of 64
        client.estimate("inverse", {"width": 64, "height": 64, "frames": 2}, {"resolution": "96x64"})
    assert client.state == "ready" and not client._estimates


def test_invalid_params_are_refused_before_sending(client, assets):
    with pytest.raises(dr.ClientError) as info:
        client.submit("inverse", {**job_params(assets), "stepz": 3})
    assert info.value.code == "invalid_params" and "stepz" in info.value.message
    job = client.registry.get(info.value.job)
    assert job.state == "failed" and job.error is info.value


def test_timer_tick_pumps_without_bpy_and_without_engine(client, monkeypatch):
    from diffusion_renderer_addon.client import session, timer

    monkeypatch.setattr(session, "_CLIENT", None)
    assert timer.tick() == timer.IDLE_INTERVAL
    monkeypatch.setattr(session, "_CLIENT", client)
    client.request_status()
    wait_for(client, lambda: (timer.tick() or True) and client.last_status is not None, timeout=30)
    assert client.last_status["running"] is None and timer.tick() == timer.IDLE_INTERVAL


# ----------------------------------------------------------------------------- crash and restart
@pytest.mark.skipif(not POSIX, reason="SIGKILL and /proc are POSIX")
def test_engine_killed_mid_job_fails_the_job_with_stderr_tail_then_restarts(tmp_path, assets, monkeypatch):
    # Blender's interpreter variables must not reach the engine (a leaked PYTHONHOME would break it)
    monkeypatch.setenv("PYTHONHOME", str(tmp_path / "bogus-home"))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "bogus-path"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    c = dr.EngineClient(make_config(tmp_path), registry=dr.JobRegistry())
    try:
        job = c.submit("inverse", job_params(assets, steps=200))      # starts the engine; sent after hello
        wait_for(c, lambda: job.state != "queued")                    # running: loading the model
        old_pid = c.proc.pid
        env = dict(v.split("=", 1) for v in Path(f"/proc/{old_pid}/environ").read_text().split("\0") if "=" in v)
        assert "PYTHONHOME" not in env and env["PYTHONPATH"] == str(REPO)
        assert env["HF_HOME"] == str(tmp_path / "hf") and env["HF_HUB_OFFLINE"] == "1"
        os.kill(old_pid, signal.SIGKILL)
        dr.blocking.wait(job, c, timeout=30, raise_on_error=False)
        assert job.state == "failed" and job.history == ["queued", "running", "failed"]
        err = job.error
        assert err.code == "engine_crashed" and "SIGKILL" in err.message
        assert job.id in err.details                                   # the engine's own log lines (stderr tail)
        assert Path(err.log_path) == (tmp_path / "engine.log").resolve()
        assert "Engine output (last lines)" in err.full_text() and c.state == "crashed"
        again = dr.blocking.run_job("inverse", job_params(assets, steps=1), client=c, timeout=180)
        assert again.state == "done" and Path(again.manifest).is_file()
        assert c.state == "ready" and c.proc.pid != old_pid
    finally:
        c.shutdown()
    assert c.state == "stopped" and c.proc is None
