"""The add-on's engine client against fake engines (tiny ``engine`` packages written per test): protocol
version checks, cancel escalation (SIGINT, then kill), engines failing before their hello, and
re-configuring the engine while it is idle or busy.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from addon_client_helpers import REPO, dr, wait_for


# ----------------------------------------------------------------------------- version mismatch
FAKE_MAIN = r'''
import json, sys
print(json.dumps({"type": "hello", "v": "99.0", "protocol": "99.0", "engine": "9.9.9", "pid": 1}), flush=True)
for line in sys.stdin:
    pass
'''


def fake_config(tmp_path, **kw):
    return dr.EngineConfig(python=sys.executable, jobs_dir=str(tmp_path / "jobs"), **kw)


def fake_engine(root: Path, main: str = FAKE_MAIN) -> Path:
    """A folder holding a tiny ``engine`` package whose ``python -m engine`` runs ``main``."""
    pkg = root / "engine"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('__version__ = "9.9.9"\n')
    (pkg / "__main__.py").write_text(main)
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


def test_engine_of_an_older_major_is_refused_at_its_hello(tmp_path):
    main = FAKE_MAIN.replace('"99.0"', '"0.3"')
    c = dr.EngineClient(fake_config(tmp_path, engine_root=str(fake_engine(tmp_path / "old", main))),
                        registry=dr.JobRegistry())
    with pytest.raises(dr.ClientError) as info:
        c.submit("inverse", {"input": str(tmp_path)})
        c.wait_ready(30)
    assert info.value.code == "protocol_mismatch" and "0.3" in info.value.message
    assert "Set Up Engine" in info.value.hint
    wait_for(c, lambda: c.proc is None, timeout=10)
    assert c.registry.latest().state == "failed"


def test_client_speaks_the_contracts_protocol():
    """No protocol module is loaded from the engine folder: the add-on and the engine import the same
    contract package, and the engine's version is checked at its hello."""
    from engine.contract import protocol

    from diffusion_renderer_addon.client import session

    assert session.protocol is protocol and dr.CLIENT_PROTOCOL_MAJOR == protocol.PROTOCOL_VERSION[0]
    assert not hasattr(dr, "load_protocol")


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
            # its stderr line comes through another pipe and reader thread than the cancel reply: wait for it
            wait_for(c, lambda: "fake engine: SIGINT" in "\n".join(c.stderr_tail()), timeout=10)
            assert c.state == "ready" and c.proc.pid == pid
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
    assert "bin/diffusion-renderer info" in err.hint and "Set Up Engine" in err.hint
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
    from diffusion_renderer_addon.client import session

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

