"""The add-on's engine client without a running engine: interpreter checks (invalid engine Pythons, venv
folders) and units (clean environment, error translation, job registry, cancel deadlines, job folders,
imports without bpy, module size).
"""
from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from addon_client_helpers import CLIENT_DIR, POSIX, REPO, dr


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
        assert "Set Up Engine" in info.value.hint and c.state == "failed" and c.proc is None


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
    assert e.code == "internal" and "Lower the Resolution" in dr.errors._pattern_hint(e.message)[1]
    e = dr.errors.from_engine({"code": "weights_unavailable", "message": "inverse: not in the local cache"})
    assert e.code == "weights_missing" and "Model Weights › Download" in e.hint and "local checkpoint folder" in e.hint
    e = dr.errors.from_engine({"code": "input_error", "message": "x: not found", "hint": "fix it"})
    assert (e.code, e.hint) == ("input_error", "fix it")
    e = dr.errors.engine_crashed(-9, ["loading", "Killed"], "/l.log")
    assert "SIGKILL" in e.message and "Last output: Killed" in e.message and e.details == "loading\nKilled"
    e = dr.errors.engine_crashed(1, ["torch.OutOfMemoryError: CUDA out of memory."])
    assert e.code == "out_of_memory" and "Lower the Resolution" in e.hint
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
    from diffusion_renderer_addon.client import events

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
    """The client imports bpy nothing, and of the engine only its stdlib contract package."""
    code = ("import sys; import diffusion_renderer_addon.client as c; "
            "import diffusion_renderer_addon.client.process, diffusion_renderer_addon.client.timer; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('bpy', 'torch', 'numpy') "
            "or (m.split('.')[0] == 'engine' and m != 'engine' and not m.startswith('engine.contract'))]; "
            "print(bad, c.session.protocol.__name__)")
    out = subprocess.run([sys.executable, "-c", code], check=True, cwd=str(REPO), capture_output=True, text=True)
    assert out.stdout.split() == ["[]", "engine.contract.protocol"]


def test_kept_small():
    for path in CLIENT_DIR.glob("*.py"):
        assert len(path.read_text().splitlines()) < 300, path
