"""Fault matrix, server class: a client that floods or abuses `serve` (issue 15, Build 5 and 6).

Driven through the server's line handler in-process (engine/server/serve.py ``Server.handle_line``), with
the estimate / download work replaced by fakes that block until the test releases them, so the counts are
exact (no timing).

| case | expected behaviour |
|---|---|
| 40 `estimate` requests at once | at most ESTIMATE_WORKERS (2) threads run estimates; ESTIMATE_WAITING (8) more wait; the other 30 get one `error` `busy` naming the limit; every request gets exactly one reply |
| a second `download` of a model while one runs | `error` `busy` for that job (no `ack`, no thread); another model downloads beside it; each job ends with one terminal message |
| garbage, a 2 MiB line, a submit with bad params | one error reply each; the engine then still answers (regression: passed before) |
| `submit` whose `job_dir` is `/etc/…`, inside the engine's package or the repository | `error` `invalid_params` naming `job_dir` and the fix; nothing created there |
| `submit` whose `params.out` is in `/usr`, or escapes the job folder into `/etc` (`../../…`) | `error` `invalid_params` naming `params.out`; nothing created |
| `submit` into a job folder holding a foreign `request.json` / `result.json` | `error` `invalid_params` naming `job_dir` and the file; the file is unchanged |
| `submit` into a fresh folder under /tmp | `ack` queued (the rules refuse nothing ordinary) |
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from engine.contract import protocol as P

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def server():
    from engine.server.serve import Server

    rfd, wfd = os.pipe()
    srv = Server(os.open(os.devnull, os.O_RDONLY), wfd, None)
    srv.read_fd = rfd
    srv._buf = b""
    os.set_blocking(rfd, False)
    yield srv
    os.close(wfd)
    os.close(rfd)


def read_replies(srv, count: int, timeout: float = 30.0) -> list:
    """The next ``count`` messages the server wrote, each decoded and validated against the table."""
    out, deadline = [], time.monotonic() + timeout
    while len(out) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"only {len(out)} of {count} replies within {timeout} s: {out}")
        try:
            srv._buf += os.read(srv.read_fd, 1 << 16)
        except BlockingIOError:
            time.sleep(0.01)
        *lines, srv._buf = srv._buf.split(b"\n")
        out += [P.check(P.decode(line), P.TO_CLIENT) for line in lines]
    return out


def no_more_replies(srv) -> list:
    try:
        srv._buf += os.read(srv.read_fd, 1 << 16)
    except BlockingIOError:
        pass
    return [line for line in srv._buf.split(b"\n") if line]


class Gate:
    """A fake unit of work: counts the callers inside it and blocks them until ``open()``."""

    def __init__(self, result=None):
        self.result, self.released = result, threading.Event()
        self.lock, self.inside, self.most, self.threads = threading.Lock(), 0, 0, set()

    def __call__(self, *args, **kwargs):
        with self.lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
            self.threads.add(threading.get_ident())
        try:
            assert self.released.wait(30), "the test never released the gate"
            return self.result(*args, **kwargs) if callable(self.result) else self.result
        finally:
            with self.lock:
                self.inside -= 1

    def wait_inside(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.inside < n and time.monotonic() < deadline:
            time.sleep(0.01)


# ----------------------------------------------------------------------------- bounded requests
def test_40_estimates_use_a_bounded_pool_and_each_gets_one_reply(server, monkeypatch):
    from engine.server import serve

    workers, waiting = getattr(serve, "ESTIMATE_WORKERS", 2), getattr(serve, "ESTIMATE_WAITING", 8)
    gate = Gate({"seconds": 1.5, "peak_memory_gb": 2.0})
    monkeypatch.setattr("engine.jobs.job_estimate.estimate_job", gate)
    before = threading.active_count()
    for i in range(40):
        server.handle_line(P.encode(P.estimate("inverse", {"width": 64, "height": 64, "frames": 4}, id=i)))
    gate.wait_inside(workers)
    time.sleep(0.2)      # a pool that starts more threads than it should has had time to
    alive = threading.active_count() - before
    inside = gate.inside
    busy = read_replies(server, 40 - workers - waiting, timeout=5)
    gate.released.set()
    served = read_replies(server, workers + waiting)
    assert inside == workers and alive <= workers, f"{alive} new threads, {inside} estimates running at once"
    assert gate.most <= workers and len(gate.threads) <= workers
    assert {m["type"] for m in busy} == {"error"} and {m["code"] for m in busy} == {"busy"}
    assert f"{workers + waiting} estimate requests are already running or waiting" in busy[0]["message"]
    assert "again" in busy[0]["hint"]
    assert {m["type"] for m in served} == {"estimate"} and all(m["seconds"] == 1.5 for m in served)
    replies = sorted(m["reply_to"] for m in busy + served)
    assert replies == list(range(40)), "every request gets exactly one reply"
    time.sleep(0.1)
    assert no_more_replies(server) == []
    # the pool is free again: a later estimate is served
    server.handle_line(P.encode(P.estimate("inverse", {"width": 64, "height": 64, "frames": 4}, id="later")))
    later, = read_replies(server, 1)
    assert later["type"] == "estimate" and later["reply_to"] == "later"


def test_a_second_download_of_the_same_model_is_busy(server, monkeypatch, tmp_path):
    gate = Gate(lambda name, *a, **k: tmp_path / name / "0123abcd")
    monkeypatch.setattr("engine.hub.download", gate)
    server.handle_line(P.encode(P.download("dl-1", "forward", id=1)))
    server.handle_line(P.encode(P.download("dl-2", "forward", id=2)))
    server.handle_line(P.encode(P.download("dl-3", "inverse", id=3)))
    first = read_replies(server, 3)
    by_job = {m["job"]: m for m in first}
    assert by_job["dl-1"]["type"] == "ack" and by_job["dl-3"]["type"] == "ack"
    refused = by_job["dl-2"]
    assert (refused["type"], refused["code"], refused["reply_to"]) == ("error", "busy", 2), refused
    assert "forward" in refused["message"] and "already running" in refused["message"]
    gate.wait_inside(2)
    assert gate.inside == 2
    gate.released.set()
    ends = read_replies(server, 2)
    assert sorted((m["type"], m["job"]) for m in ends) == [("result", "dl-1"), ("result", "dl-3")]
    time.sleep(0.1)
    assert no_more_replies(server) == [], "dl-2 got exactly one reply (its busy error)"
    assert gate.most == 2


def test_garbage_and_huge_lines_still_leave_it_answering(server):
    from engine.server.lifecycle import Oversize

    server.handle_line(b"\xff\xfe not json")
    server.handle_line(Oversize(3 << 20))
    server.handle_line(b'{"type":"submit","v":"1.2","job":"j","kind":"inverse","job_dir":"/tmp/j","params":[]}')
    errors = read_replies(server, 3)
    assert [m["code"] for m in errors] == ["bad_message", "bad_message", "invalid_params"]
    assert "exceeds" in errors[1]["message"]
    server.handle_line(P.encode(P.status(id="s")))
    status, = read_replies(server, 1)
    assert status["type"] == "status" and status["reply_to"] == "s"


# ----------------------------------------------------------------------------- where a job may write
def _submit(server, job_dir, **params):
    server.handle_line(P.encode(P.submit("j1", "gbuffers", str(job_dir), {"input": "/nonexistent/render", **params},
                                         id="r1")))
    reply, = read_replies(server, 1)
    return reply


@pytest.mark.parametrize("where", ["etc", "engine", "repo"])
def test_job_folder_in_system_or_engine_folders_is_refused(server, where):
    job_dir = {"etc": Path("/etc/dr-fault-job"), "engine": REPO / "engine" / "dr-fault-job",
               "repo": REPO / "dr-fault-job"}[where]
    reply = _submit(server, job_dir)
    assert (reply["type"], reply["code"], reply["job"]) == ("error", "invalid_params", "j1"), reply
    assert "'job_dir'" in reply["message"] and "choose a folder of your own" in reply["message"]
    assert not job_dir.exists()


@pytest.mark.parametrize("out", ["/usr/local/dr-fault-out", "../../../../../../../etc/dr-fault-out"])
def test_output_folder_in_system_folders_is_refused(server, tmp_path, out):
    reply = _submit(server, tmp_path / "a" / "job", out=out)
    assert (reply["type"], reply["code"]) == ("error", "invalid_params"), reply
    assert "'params.out'" in reply["message"] and "system folder" in reply["message"]
    assert not (tmp_path / "a").exists()


def test_output_folder_linked_into_the_engine_is_refused(server, tmp_path):
    (tmp_path / "link").symlink_to(REPO / "engine")
    reply = _submit(server, tmp_path / "job", out=str(tmp_path / "link" / "gbuffers"))
    assert reply["code"] == "invalid_params" and "engine's own package folder" in reply["message"], reply
    assert not (REPO / "engine" / "gbuffers").exists()


@pytest.mark.parametrize("name", ["request.json", "result.json"])
def test_a_job_folder_with_a_foreign_job_file_is_refused(server, tmp_path, name):
    job_dir = tmp_path / "mine"
    job_dir.mkdir()
    (job_dir / name).write_text('{"my": "own notes"}\n')
    reply = _submit(server, job_dir)
    assert (reply["type"], reply["code"]) == ("error", "invalid_params"), reply
    assert name in reply["message"] and "did not write" in reply["message"] and "'job_dir'" in reply["message"]
    assert (job_dir / name).read_text() == '{"my": "own notes"}\n'


def test_an_ordinary_job_folder_is_accepted(server, tmp_path):
    reply = _submit(server, tmp_path / "jobs" / "j1", out="relit")
    assert (reply["type"], reply["request"], reply["state"]) == ("ack", "submit", "queued"), reply
