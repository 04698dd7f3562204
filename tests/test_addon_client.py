"""The add-on's engine client (diffusion_renderer_addon/client) in plain Python, against the real engine.

The client is stdlib-only; it is loaded here by file path as a stand-alone package (the add-on's own
__init__ needs bpy). The engine runs as the add-on runs it: ``<python> -m engine serve`` with this
interpreter (the engine's environment), PYTHONPATH = the checkout, HF_HUB_OFFLINE=1. Jobs are 64×64,
3 frames, one pass, random tiny weights.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLIENT_DIR = REPO / "diffusion_renderer_addon" / "client"
POSIX = os.name == "posix"


def load_client():
    name = "dr_addon_client_under_test"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, CLIENT_DIR / "__init__.py",
                                                  submodule_search_locations=[str(CLIENT_DIR)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


dr = load_client()


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


def wait_for(client, predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        client.pump(timeout=0.05)


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
    from dr_addon_client_under_test import session, timer

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


# ----------------------------------------------------------------------------- version mismatch
FAKE_MAIN = r'''
import json, sys
print(json.dumps({"type": "hello", "v": "99.0", "protocol": "99.0", "engine": "9.9.9", "pid": 1}), flush=True)
for line in sys.stdin:
    pass
'''


def fake_config(tmp_path, **kw):
    return dr.EngineConfig(python=sys.executable, jobs_dir=str(tmp_path / "jobs"), **kw)


def fake_engine(root: Path, main: str = FAKE_MAIN, protocol_version=None, with_protocol=True) -> Path:
    pkg = root / "engine"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('__version__ = "9.9.9"\n')
    (pkg / "__main__.py").write_text(main)
    if with_protocol:
        text = (REPO / "engine" / "protocol.py").read_text()
        if protocol_version:
            text, n = re.subn(r"^PROTOCOL_VERSION = \(\d+, \d+\)", f"PROTOCOL_VERSION = {protocol_version!r}", text,
                              flags=re.MULTILINE)
            assert n == 1, "engine/protocol.py no longer has a 'PROTOCOL_VERSION = (M, m)' line"
        (pkg / "protocol.py").write_text(text)
        (pkg / "protocol_fields.py").write_text((REPO / "engine" / "protocol_fields.py").read_text())
    return root


def test_engine_answering_hello_with_major_99_gets_a_clear_message(tmp_path):
    c = dr.EngineClient(fake_config(tmp_path, engine_root=str(fake_engine(tmp_path / "fake"))),
                        registry=dr.JobRegistry())
    with pytest.raises(dr.ClientError) as info:
        c.wait_ready(30)
    err = info.value
    assert err.code == "protocol_mismatch" and c.state == "failed"
    assert "99.0" in err.message and "protocol 1.x" in err.message and "9.9.9" in err.message
    assert "update the DiffusionRenderer add-on" in err.hint
    wait_for(c, lambda: c.proc is None, timeout=10)                   # the fake engine was stopped


def test_engine_protocol_module_of_another_major_is_refused_before_starting(tmp_path):
    root = fake_engine(tmp_path / "old", protocol_version=(0, 3))
    c = dr.EngineClient(fake_config(tmp_path, engine_root=str(root)), registry=dr.JobRegistry())
    with pytest.raises(dr.ClientError) as info:
        c.submit("inverse", {"input": str(tmp_path)})
    assert info.value.code == "protocol_mismatch" and "0.3" in info.value.message
    assert "update the engine" in info.value.hint and c.proc is None
    assert c.registry.latest().state == "failed"


def test_engine_without_protocol_module(tmp_path):
    root = fake_engine(tmp_path / "ancient", with_protocol=False)
    c = dr.EngineClient(fake_config(tmp_path, engine_root=str(root)), registry=dr.JobRegistry())
    with pytest.raises(dr.ClientError, match="predates the add-on protocol"):
        c.start()


def test_protocol_is_loaded_from_the_engine_folder_not_imported(tmp_path):
    proto = dr.load_protocol(str(REPO / "engine"))
    assert proto.PROTOCOL_VERSION[0] == dr.CLIENT_PROTOCOL_MAJOR and proto.__name__.startswith("_dr_engine_protocol_")
    assert dr.load_protocol(str(REPO / "engine")) is proto
    other = dr.load_protocol(str(fake_engine(tmp_path / "x", protocol_version=(7, 1)) / "engine"))
    assert other.PROTOCOL_VERSION == (7, 1) and proto.PROTOCOL_VERSION != other.PROTOCOL_VERSION


STUBBORN_MAIN = r"""
import json, signal, sys, threading
MODE = sys.argv[sys.argv.index("--mode") + 1]
def send(**m):
    print(json.dumps({"v": "1.0", **m}), flush=True)
running = []
def on_sigint(*_):
    print("fake engine: SIGINT", file=sys.stderr, flush=True)
    if MODE == "sigint" and running:
        send(type="error", code="cancelled", message="cancelled by SIGINT", job=running.pop())
signal.signal(signal.SIGINT, on_sigint if MODE == "sigint" else signal.SIG_IGN)
send(type="hello", protocol="1.0", engine="0.0.1", pid=0)
for line in sys.stdin:
    msg = json.loads(line)
    if msg["type"] == "submit":
        running.append(msg["job"])
        send(type="ack", request="submit", job=msg["job"], state="queued", queue_position=0, reply_to=msg["id"])
        send(type="progress", job=msg["job"], stage="denoise", step=1, total=100)
    elif msg["type"] == "cancel":
        send(type="ack", request="cancel", job=msg["job"], state="cancelling", reply_to=msg["id"])  # ...and ignore it
"""


@pytest.mark.parametrize("mode", ["sigint", "stubborn"])
def test_cancel_escalates_to_sigint_then_kill(tmp_path, mode):
    root = fake_engine(tmp_path / "fake", main=STUBBORN_MAIN)
    c = dr.EngineClient(fake_config(tmp_path, engine_root=str(root), args=["--mode", mode],
                                        cancel_grace=0.3, kill_grace=0.3), registry=dr.JobRegistry())
    try:
        job = c.submit("inverse", {"input": str(tmp_path)})
        wait_for(c, lambda: job.state == "running", timeout=30)
        pid = c.proc.pid
        t0 = time.monotonic()
        c.cancel(job.id)
        dr.blocking.wait(job, c, timeout=30, raise_on_error=False)
        assert job.state == "cancelled" and time.monotonic() - t0 >= 0.3
        if mode == "sigint":      # the engine obeyed SIGINT and keeps serving
            assert c.state == "ready" and c.proc.pid == pid and "fake engine: SIGINT" in c.stderr_tail()
        else:                     # ignored SIGINT too: killed; the next job starts a new engine
            assert c.state == "stopped" and c.proc is None
            nxt = c.submit("inverse", {"input": str(tmp_path)})
            wait_for(c, lambda: nxt.state == "running", timeout=30)
            assert c.proc.pid != pid
    finally:
        c.shutdown(timeout=4)


NO_TORCH_MAIN = r"""
import json, sys
print("Traceback (most recent call last):\nModuleNotFoundError: No module named 'torch'", file=sys.stderr, flush=True)
print(json.dumps({"type": "error", "v": "1.0", "code": "internal", "log_file": "/x/engine-1.log",
                  "message": "engine start-up failed: ModuleNotFoundError: No module named 'torch'",
                  "hint": "check the engine's Python environment (bin/diffusion-renderer info)"}), flush=True)
sys.exit(1)
"""
CRASH_MAIN = r"""
import sys
print("Fatal Python error: Segmentation fault", file=sys.stderr, flush=True)
sys.exit(3)
"""


def test_engine_failing_before_its_hello_is_explained(tmp_path):
    c = dr.EngineClient(fake_config(tmp_path, engine_root=str(fake_engine(tmp_path / "a",
                                                                                           NO_TORCH_MAIN))),
                        registry=dr.JobRegistry())
    job = c.submit("inverse", {"input": str(tmp_path)})
    with pytest.raises(dr.ClientError) as info:
        c.wait_ready(30)
    err = info.value
    assert err.code == "engine_start_failed" and "No module named 'torch'" in err.message
    assert "bin/diffusion-renderer info" in err.hint and "bin/_bootstrap.py" in err.hint
    assert err.log_path == "/x/engine-1.log" and "ModuleNotFoundError" in err.details
    assert job.state == "failed" and job.error.code == "engine_start_failed" and c.state == "failed"

    c = dr.EngineClient(fake_config(tmp_path, engine_root=str(fake_engine(tmp_path / "b",
                                                                                           CRASH_MAIN))),
                        registry=dr.JobRegistry())
    with pytest.raises(dr.ClientError) as info:
        c.wait_ready(30)
    assert "exited with code 3 before its hello" in info.value.message
    assert "Segmentation fault" in info.value.details


def test_configure_replaces_the_engine_when_idle(tmp_path, monkeypatch):
    from dr_addon_client_under_test import session

    monkeypatch.setattr(session, "_CLIENT", None)
    root = str(fake_engine(tmp_path / "fake", main=STUBBORN_MAIN))

    def config(mode):
        return fake_config(tmp_path, engine_root=root, args=["--mode", mode], cancel_grace=0.2,
                               kill_grace=0.2)

    c = dr.configure(config("stubborn"))
    assert dr.current() is c and dr.configure(config("stubborn")) is c
    c.wait_ready(30)
    first = c.proc.pid
    dr.configure(config("sigint"))                    # idle: stopped at once
    assert c.proc is None and c.state == "stopped"
    job = c.submit("inverse", {"input": str(tmp_path)})
    wait_for(c, lambda: job.state == "running", timeout=30)
    second = c.proc.pid
    assert second != first
    dr.configure(config("stubborn"))                  # busy: kept until its job ends
    assert c.proc.pid == second
    c.cancel(job.id)                                  # this engine obeys SIGINT and keeps running…
    dr.blocking.wait(job, c, timeout=30, raise_on_error=False)
    assert job.state == "cancelled" and c.proc.pid == second and c.state == "ready"
    nxt = c.submit("inverse", {"input": str(tmp_path)})   # …and is replaced before the next job
    wait_for(c, lambda: nxt.state == "running", timeout=30)
    assert c.proc.pid not in (first, second) and c.config.args == ["--mode", "stubborn"]
    dr.shutdown_all(4)
    assert dr.current() is None


# ----------------------------------------------------------------------------- invalid python
def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.mark.skipif(not POSIX, reason="fake interpreters are shell scripts")
def test_invalid_engine_python_gets_clear_messages(tmp_path):
    (tmp_path / "venv").mkdir()
    plain = tmp_path / "plain.txt"
    plain.write_text("")
    old = _script(tmp_path / "py38", 'echo \'DR-PROBE {"python": [3, 8, 10]}\'')
    no_engine = _script(tmp_path / "py312", 'echo \'DR-PROBE {"python": [3, 12, 1], '
                                            '"import_error": "ModuleNotFoundError: No module named engine"}\'')
    hangs = _script(tmp_path / "hang", "sleep 30")
    broken = _script(tmp_path / "broken", "echo 'boom: cannot start' >&2; exit 3")
    cases = [("", "no engine Python is set"), (str(tmp_path / "missing" / "python"), "not found"),
             (str(tmp_path / "venv"), "is a folder"), (str(plain), "not executable"),
             (old, "is Python 3.8.10; the engine needs Python 3.11"), (hangs, "did not answer within 1 s"),
             (broken, "failed the engine check (boom: cannot start)"),
             (no_engine, "cannot be imported"), (sys.executable, "has no engine/ folder")]
    for python, expected in cases:
        root = str(tmp_path) if python == sys.executable else None
        c = dr.EngineClient(dr.EngineConfig(python=python, engine_root=root, probe_timeout=1.0),
                            registry=dr.JobRegistry())
        with pytest.raises(dr.ClientError) as info:
            c.start()
        assert expected in info.value.message, (python, info.value.message)
        assert info.value.code in ("invalid_python", "engine_not_importable")
        assert "bin/_bootstrap.py" in info.value.hint and c.state == "failed" and c.proc is None


def test_a_venv_folder_is_accepted_for_its_interpreter(tmp_path):
    venv = Path(sys.executable).parent.parent
    if not (venv / "pyvenv.cfg").is_file():
        pytest.skip("the tests do not run in a virtual environment")
    assert dr.probe_python(dr.process.resolve_python(str(venv)), str(REPO))["engine_dir"] == str(REPO / "engine")


# ----------------------------------------------------------------------------- units
def test_clean_environment_drops_blenders_python_variables():
    base = {"PYTHONHOME": "/blender/python", "PYTHONPATH": "/blender/scripts", "PYTHONSTARTUP": "x", "PATH": "/bin",
            "HOME": "/home/me", "HF_HOME": "/hf", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "1"}
    env = dr.clean_env("/engine/root", {"DR_X": 1, "DROP": None}, base=base)
    assert "PYTHONHOME" not in env and "PYTHONSTARTUP" not in env and "DROP" not in env
    assert env["PYTHONPATH"] == "/engine/root" and env["PYTHONUNBUFFERED"] == "1" and env["DR_X"] == "1"
    assert {k: env[k] for k in ("PATH", "HOME", "HF_HOME", "HF_HUB_OFFLINE", "CUDA_VISIBLE_DEVICES")} == \
        {k: base[k] for k in ("PATH", "HOME", "HF_HOME", "HF_HUB_OFFLINE", "CUDA_VISIBLE_DEVICES")}
    assert "PYTHONPATH" not in dr.clean_env(None, base=base)


def test_error_translation():
    e = dr.errors.from_engine({"type": "error", "code": "out_of_memory", "job": "j1", "log_file": "/l.log",
                               "message": "out of memory: CUDA out of memory. Tried to allocate 2.00 GiB"})
    assert e.code == "out_of_memory" and e.job == "j1" and e.log_path == "/l.log"
    e = dr.errors.from_engine({"code": "internal", "message": "RuntimeError: CUDA out of memory. Tried to allocate"})
    assert e.code == "internal" and "Lower the resolution" in dr.errors._pattern_hint(e.message)[1]
    e = dr.errors.from_engine({"code": "weights_unavailable", "message": "inverse: not in the local cache"})
    assert e.code == "weights_missing" and "download" in e.hint and "local checkpoint folder" in e.hint
    e = dr.errors.from_engine({"code": "input_error", "message": "x: not found", "hint": "fix it"})
    assert (e.code, e.hint) == ("input_error", "fix it")
    e = dr.errors.engine_crashed(-9, ["loading", "Killed"], "/l.log")
    assert "SIGKILL" in e.message and "Last output: Killed" in e.message and e.details == "loading\nKilled"
    e = dr.errors.engine_crashed(1, ["torch.OutOfMemoryError: CUDA out of memory."])
    assert e.code == "out_of_memory" and "Lower the resolution" in e.hint
    assert "exited with code 3" in dr.errors.describe_returncode(3)


def test_registry_states_callbacks_and_pruning():
    reg = dr.JobRegistry(keep_finished=2)
    events = []
    job = reg.add("inverse", {"input": "x"}).on_update(lambda j: events.append(j.state))
    job.on_done(lambda j: events.append("done-callback"))
    reg.progress(job, "denoise", 1, 4)
    reg.progress(job, "denoise", 0, 4)                          # a late/out-of-order report never moves the bar back
    assert job.state == "running" and job.fraction == 0.25
    reg.set_state(job, "done", result={"manifests": ["/a/manifest.json"]})
    reg.set_state(job, "failed")                                # terminal states are final
    assert job.state == "done" and job.manifest == "/a/manifest.json" and events[-1] == "done-callback"
    assert job.history == ["queued", "running", "done"]
    for _ in range(3):
        reg.set_state(reg.add("forward", {}), "cancelled")
    assert len(reg) == 2 and job.id not in reg                  # only the newest finished jobs are kept
    with pytest.raises(ValueError):
        reg.set_state(reg.add("inverse", {}), "exploded")


def test_cancel_escalation_waits_two_steps_and_never_during_load_or_write():
    from dr_addon_client_under_test import events

    reg = dr.JobRegistry()
    c = dr.EngineClient(dr.EngineConfig(python="x", cancel_grace=1.0, finish_grace=100.0), registry=reg)
    job = reg.add("inverse", {})
    reg.progress(job, "load_model", 0, 0)
    t0 = job.progress_log[-1]["t"]
    assert c._cancel_deadline(job, t0) == t0 + 100.0                 # loading: a cancel waits for the load
    reg.progress(job, "denoise", 1, 10)
    reg.progress(job, "denoise", 3, 10)
    job.progress_log[-2]["t"], job.progress_log[-1]["t"] = t0 + 10, t0 + 20    # 5 s per step
    assert events.step_seconds(job) == 5.0
    assert c._cancel_deadline(job, t0 + 21) == t0 + 21 + 10.0           # two steps after the cancel
    reg.progress(job, "denoise", 10, 10)                               # last step done: decoding/writing
    assert c._cancel_deadline(job, time.time()) >= time.time() + 99


def test_job_folder_tells_what_happened(tmp_path):
    read = dr.jobs.read_job_folder
    assert read(tmp_path / "nothing")["state"] == "unknown"
    (tmp_path / "request.json").write_text("{}")
    assert read(tmp_path)["state"] == "incomplete"
    (tmp_path / "error.json").write_text(json.dumps({"type": "error", "code": "cancelled", "message": "x"}))
    assert read(tmp_path)["state"] == "cancelled"
    (tmp_path / "m.json").write_text("{}")
    (tmp_path / "result.json").write_text(json.dumps({"manifests": [str(tmp_path / "m.json"), "/gone/m.json"]}))
    assert read(tmp_path)["state"] == "done" and read(tmp_path)["manifests"] == [str(tmp_path / "m.json")]


def test_client_modules_import_without_bpy():
    code = ("import sys, importlib.util; d = sys.argv[1]; "
            "s = importlib.util.spec_from_file_location('c', d + '/__init__.py', submodule_search_locations=[d]); "
            "m = importlib.util.module_from_spec(s); sys.modules['c'] = m; s.loader.exec_module(m); "
            "import c.process, c.reader, c.jobs, c.errors, c.blocking, c.timer; "
            "assert 'bpy' not in sys.modules and 'torch' not in sys.modules and 'engine' not in sys.modules")
    subprocess.run([sys.executable, "-c", code, str(CLIENT_DIR)], check=True, cwd=str(CLIENT_DIR.parent.parent.parent))


def test_kept_small():
    for path in CLIENT_DIR.glob("*.py"):
        assert len(path.read_text().splitlines()) < 300, path
