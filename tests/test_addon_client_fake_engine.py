"""The add-on's engine client against fake engines (tiny ``engine`` packages written per test): protocol
version checks, cancel escalation (SIGINT, then kill), engines failing before their hello, and
re-configuring the engine while it is idle or busy.
"""
from __future__ import annotations

import re
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

