"""Fault matrix, containment class: where the server writes and which files it may replace (issue 15,
Build 6; engine/server/containment.py, engine/server/worker.py).

The job-folder cases run the worker's job step in-process (``Worker._execute``) with the job's work replaced
by a fake, so they test exactly the files the server itself writes.

| case | expected behaviour |
|---|---|
| a `result.json` the engine did not write appears in the job folder while the job runs | left as it is; the result goes to `result.engine-1.json` beside it |
| a job folder used again: the first run succeeded, the second fails | the first run's `result.json` is gone, `error.json` says failed (the folder never reports another run's outcome) |
| a job folder used again after a failure, then a success | the earlier `error.json` is gone, `result.json` present |
| the engine's own `request.json`/`result.json` from an earlier run | not foreign: the folder may be submitted to again (regression: passed before) |
| `job_dir` / `out` inside the engine's Python environment (`sys.prefix`), `/lib*`, `/proc`, `/dev`, or `/` itself | refused, naming the field, what the folder is, and the fix |
| a folder under /tmp, a relative `out` inside the job folder | allowed (regression: passed before) |
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.fault_matrix.test_server_faults import read_replies, server  # noqa: F401 - the fixture



class FakeJobs:
    """engine.jobs.settings.build_settings replaced: the job 'runs' by calling ``work(out)``."""

    def __init__(self, monkeypatch):
        self.work = lambda out: None
        monkeypatch.setattr("engine.jobs.settings.build_settings", self.build)

    def build(self, kind, params, job_dir, default_out):
        out = Path(default_out)

        def run(settings, **kwargs):
            self.work(out)
            return {"out": str(out), "clips": []}

        return SimpleNamespace(settings=SimpleNamespace(), inputs=(), run=run)


def _execute(job_dir: Path, job_id: str = "j1") -> dict:
    from engine.server.model_cache import ModelCache
    from engine.server.worker import Job, Worker

    worker = Worker(lambda msg: True, ModelCache(0))
    return worker._execute(Job(job_id, "gbuffers", job_dir, {"input": "/x"}))


def test_a_foreign_result_json_appearing_mid_job_is_not_replaced(tmp_path, monkeypatch):
    jobs = FakeJobs(monkeypatch)
    foreign = tmp_path / "job" / "result.json"
    jobs.work = lambda out: foreign.write_text("my notes\n")
    msg = _execute(tmp_path / "job")
    assert msg["type"] == "result"
    assert foreign.read_text() == "my notes\n"
    written = json.loads((tmp_path / "job" / "result.engine-1.json").read_text())
    assert written["type"] == "result" and written["job"] == "j1"


def test_a_reused_job_folder_never_reports_the_earlier_runs_outcome(tmp_path, monkeypatch):
    from diffusion_renderer_addon.client.jobs import read_job_folder

    jobs = FakeJobs(monkeypatch)
    job_dir = tmp_path / "job"
    assert _execute(job_dir)["type"] == "result"
    assert read_job_folder(job_dir)["state"] == "done"

    def fail(out):
        raise ValueError("the render folder is gone")

    jobs.work = fail
    assert _execute(job_dir)["code"] == "input_error"
    assert not (job_dir / "result.json").exists(), "the first run's result would say 'done'"
    assert read_job_folder(job_dir)["state"] == "failed"

    jobs.work = lambda out: None
    assert _execute(job_dir)["type"] == "result"
    assert not (job_dir / "error.json").exists() and read_job_folder(job_dir)["state"] == "done"


def test_the_engines_own_job_files_are_not_foreign(tmp_path, monkeypatch, server):  # noqa: F811
    from engine.contract import protocol as P

    FakeJobs(monkeypatch)
    job_dir = tmp_path / "job"
    _execute(job_dir)
    assert {p.name for p in job_dir.iterdir()} == {"request.json", "result.json"}
    (job_dir / "old-request.json").write_text(json.dumps({"job": "j0", "kind": "inverse", "params": {}}))
    server.handle_line(P.encode(P.submit("j2", "gbuffers", str(job_dir), {"input": "/x"}, id=1)))
    ack, = read_replies(server, 1)
    assert ack["type"] == "ack", ack


@pytest.mark.parametrize("where", ["prefix", "lib", "proc", "dev", "root"])
def test_check_output_path_refuses_installation_and_system_folders(tmp_path, monkeypatch, where):
    from engine.server import containment

    venv = tmp_path / "venv"
    monkeypatch.setattr(sys, "prefix", str(venv))
    libs = sorted(p for p in Path("/").iterdir() if p.name.startswith("lib")) or [Path("/lib")]
    path = {"prefix": venv / "jobs" / "j1", "lib": libs[0] / "dr", "proc": Path("/proc/self/dr"),
            "dev": Path("/dev/shm/dr"), "root": Path("/")}[where]
    problem = containment.check_output_path(path, "job_dir")
    assert problem and problem.startswith("field 'job_dir': ") and "choose a folder of your own" in problem
    what = {"prefix": "Python environment", "root": "root of a file system"}.get(where, "system folder")
    assert what in problem


def test_check_output_path_allows_ordinary_folders(tmp_path):
    from engine.server import containment

    assert containment.check_output_path(tmp_path / "jobs" / "j1", "job_dir") is None
    assert containment.check_output_path("out/relit", "params.out", base=tmp_path / "j1") is None
    assert containment.submit_problems(tmp_path / "j1", {"out": "out"}) == []
    # a checkout's git-ignored out/ (bin/demo's default out/demo) is not the engine's installation
    checkout = Path(containment.__file__).resolve().parents[2]
    if (checkout / ".git").exists():
        assert containment.check_output_path(checkout / "out" / "demo" / "neural" / "j1", "job_dir") is None
        assert containment.check_output_path(checkout / "outside", "job_dir") is not None
