"""`python -m engine serve` driven as a real subprocess through the protocol (docs/PROTOCOL.md).

Every line the engine writes on stdout must decode and validate as a to_client message (stdout purity);
tiny random checkpoints, 64×64 clips, a few steps — the whole file runs in well under a minute on 2 CPU
cores. The warm-job overhead is printed (run with -s to see it), never asserted on time."""
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.contract import protocol as P

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and pipes")


class Engine:
    """A `serve` subprocess with a reader thread; every stdout line is decoded and validated."""

    def __init__(self, tmp: Path, *args, env=None, cmd=None):
        tmp.mkdir(parents=True, exist_ok=True)
        # one torch thread: on a shared 2-core machine two threads make CPU steps erratically 10-50x slower
        self.env = {"OMP_NUM_THREADS": "1", **os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
                    "HF_HOME": str(tmp / "hf"), **(env or {})}
        self.stderr_path = tmp / "stderr.txt"
        self.proc = subprocess.Popen(
            (cmd or []) + [sys.executable, "-m", "engine", "serve", *args], cwd=REPO, env=self.env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(self.stderr_path, "wb"))
        self.q: queue.Queue = queue.Queue()
        self.impure: list = []
        self.eof = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        self.hello = self.recv(lambda m: m["type"] == "hello", timeout=60)

    def _read(self):
        for raw in self.proc.stdout:
            try:
                msg = P.decode(raw)
                problems = P.validate(msg, "to_client")
            except P.ProtocolError as exc:
                msg, problems = None, [str(exc)]
            if problems:
                self.impure.append((raw[:300], problems))
            else:
                self.q.put((time.monotonic(), msg))
        self.eof.set()
        self.q.put((time.monotonic(), None))

    def send(self, msg) -> float:
        return self.send_raw(P.encode(msg).encode() + b"\n")

    def send_raw(self, data: bytes) -> float:
        t = time.monotonic()
        self.proc.stdin.write(data)
        self.proc.stdin.flush()
        return t

    def recv(self, pred=lambda m: True, timeout=30.0, into=None):
        """The next message matching ``pred``; the skipped ones are appended to ``into``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                t, msg = self.q.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no matching message within {timeout} s; stderr:\n{self.stderr()}") from None
            if msg is None:
                self.q.put((t, None))
                raise AssertionError(f"engine closed stdout; stderr:\n{self.stderr()}")
            self.last_time = t
            if pred(msg):
                return msg
            if into is not None:
                into.append(msg)

    def run_job(self, job, kind, job_dir, params, timeout=60.0):
        """Submit and wait for the terminal message: (ack, terminal, progress list, wall seconds)."""
        t0 = self.send(P.submit(job, kind, str(job_dir), params, id=f"req-{job}"))
        ack = self.recv(lambda m: m["type"] in ("ack", "error") and m.get("job") == job)
        seen = []
        end = self.recv(lambda m: m["type"] in ("result", "error") and m.get("job") == job, timeout, into=seen)
        return ack, end, [m for m in seen if m["type"] == "progress" and m["job"] == job], self.last_time - t0

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-3000:]

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        assert not self.impure, f"non-protocol output on stdout: {self.impure[:3]}"


def _inv_params(ckpt, clip, **extra):
    return {"input": str(clip), "model": str(ckpt), "resolution": "64x64", "frames": 4, "overlap": 0, "steps": 2,
            "device": "cpu", "previews": False, **extra}


@pytest.fixture(scope="module")
def assets(tmp_path_factory, ckpts):
    import numpy as np

    from engine.demo_clip import make_demo_clip
    from engine.envmap import write_hdr

    root = tmp_path_factory.mktemp("server_assets")
    make_demo_clip(root / "clip", frames=4, width=64, height=64)
    yy, xx = np.mgrid[0:16, 0:32] / np.array([16.0, 32.0])[:, None, None]
    write_hdr(root / "sky.hdr", np.stack([xx * 2, yy, 0.5 + 0 * xx], -1))
    return {"clip": root / "clip", "hdri": root / "sky.hdr", "inv": ckpts[0], "fwd": ckpts[1]}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("engine")
    e = Engine(tmp, "--log-file", str(tmp / "engine.log"))
    e.tmp = tmp
    yield e
    e.close()


def _no_partial_output(out: Path):
    files = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert not (out / "manifest.json").exists()
    assert not [p for p in files if ".tmp" in p.name], files
    assert not [p for p in files if p.suffix == ".exr"], "a cancelled single-segment job writes no frames"


# ----------------------------------------------------------------------------- in-process pieces
def test_read_lines_bounds_memory_and_keeps_line_boundaries():
    from engine.server.lifecycle import Oversize, read_lines

    r, w = os.pipe()
    data = b"a\n\n" + b"x" * 300_000 + b"\nb" + b"y" * 70_000 + b"\n" + b"z" * 1000 + b"\nlast"
    threading.Thread(target=lambda: (os.write(w, data), os.close(w)), daemon=True).start()
    got = list(read_lines(r, 100_000))
    os.close(r)
    assert got[:2] == [b"a", b""] and isinstance(got[2], Oversize) and got[2].size == 300_000
    assert got[3] == b"b" + b"y" * 70_000 and got[4] == b"z" * 1000 and got[5] == b"last" and len(got) == 6


# ----------------------------------------------------------------------------- handshake
def test_hello_on_start_and_on_request(engine):
    h = engine.hello
    assert h["protocol"] == P.VERSION and h["engine"] == __import__("engine").__version__
    assert h["pid"] == engine.proc.pid and h["device"] in ("cpu", "cuda") and h["torch"]
    assert {m["name"] for m in h["models"]} >= {"inverse", "forward"}
    assert not any(m["cached"] for m in h["models"]), "HF_HOME is an empty folder"
    assert h["max_models"] == 1 and h["log_file"] == str(engine.tmp / "engine.log")
    assert (engine.tmp / "engine.log").is_file()
    engine.send(P.hello(client="pytest", id="h1"))
    reply = engine.recv(lambda m: m["type"] == "hello")
    assert reply["reply_to"] == "h1" and reply["pid"] == h["pid"]
    engine.send({"type": "hello", "v": "2.0", "id": "h2"})
    err = engine.recv()
    assert err["type"] == "error" and err["code"] == "version_mismatch" and err["reply_to"] == "h2"


# ----------------------------------------------------------------------------- jobs
def test_two_inverse_jobs_second_uses_the_loaded_model(engine, assets):
    params = _inv_params(assets["inv"], assets["clip"])
    ack, res1, prog1, _ = engine.run_job("inv-1", "inverse", engine.tmp / "inv-1", params)
    assert ack == {**ack, "type": "ack", "request": "submit", "state": "queued", "queue_position": 0,
                   "reply_to": "req-inv-1"}
    assert res1["type"] == "result", res1
    assert res1["summary"]["model_cached"] is False and res1["summary"]["model_load_seconds"] > 0
    assert prog1[0]["stage"] == "load_model"
    steps = [m["step"] for m in prog1 if m["stage"] == "denoise"]
    assert steps == sorted(steps) and steps[-1] == prog1[-1]["total"] == 2, "the last step is always reported"
    manifest = Path(res1["manifests"][0])
    assert manifest == engine.tmp / "inv-1" / "out" / "manifest.json" and manifest.is_file()
    assert json.loads(manifest.read_text())["provenance"]["producer"] == "inverse-model"
    assert json.loads((engine.tmp / "inv-1" / "result.json").read_text())["job"] == "inv-1"
    assert json.loads((engine.tmp / "inv-1" / "request.json").read_text())["params"] == params

    _, res2, prog2, wall = engine.run_job("inv-2", "inverse", engine.tmp / "inv-2", params)
    assert res2["type"] == "result", res2
    assert res2["summary"]["model_cached"] is True and res2["summary"]["model_load_seconds"] == 0
    assert res2["seconds"]["load_model"] == 0 and not [m for m in prog2 if m["stage"] == "load_model"]
    assert Path(res2["manifests"][0]).is_file()
    s = res2["seconds"]
    print(f"\nwarm inverse job (64x64, 4 frames, 2 steps): submit→result {wall:.3f} s, pipeline {s['pipeline']:.3f} s,"
          f" job function {s['job']:.3f} s → overhead excluding the pipeline {wall - s['pipeline']:.3f} s, "
          f"excluding the job function (protocol, queue, threads) {wall - s['job']:.3f} s")


def test_forward_job_on_the_inverse_output(engine, assets):
    params = {"gbuffers": str(engine.tmp / "inv-1" / "out"), "hdri": [str(assets["hdri"])], "model": str(assets["fwd"]),
              "frames": 4, "overlap": 0, "steps": 2, "device": "cpu", "env_resolution": "32x16", "guidance": 1.0,
              "previews": False}
    _, res, prog, _ = engine.run_job("fwd-1", "forward", engine.tmp / "fwd-1", params)
    assert res["type"] == "result", res
    assert prog[0]["stage"] == "load_model" and prog[-1]["step"] == prog[-1]["total"] == 2
    assert res["kind"] == "forward" and res["summary"]["model_cached"] is False
    manifest = Path(res["manifests"][0])
    assert manifest == engine.tmp / "fwd-1" / "out" / "sky" / "manifest.json" and manifest.is_file()
    assert json.loads(manifest.read_text())["kind"] == "relit"
    engine.send(P.status(id="s"))
    st = engine.recv(lambda m: m["type"] == "status")
    assert st["running"] is None and st["queued"] == []
    assert [m["kind"] for m in st["loaded_models"]] == ["forward"], "--max-models 1 dropped the inverse model"


def test_forward_progress_names_the_light_and_the_write_stage(engine, assets):
    """Two HDRIs: denoise reports carry light 1/2 then 2/2, each light ends with a 'write' report (after its
    last denoise step, before the result); an inverse job ends with 'write' too."""
    import shutil

    second = assets["hdri"].with_name("dusk.hdr")
    shutil.copyfile(assets["hdri"], second)
    params = {"gbuffers": str(engine.tmp / "inv-1" / "out"), "hdri": [str(assets["hdri"]), str(second)],
              "model": str(assets["fwd"]), "frames": 4, "overlap": 0, "steps": 2, "device": "cpu",
              "env_resolution": "32x16", "guidance": 1.0, "previews": False}
    _, res, prog, _ = engine.run_job("fwd-2", "forward", engine.tmp / "fwd-2", params)
    assert res["type"] == "result", res
    work = [(m["stage"], m.get("light"), m.get("lights"), m["step"]) for m in prog if m["stage"] != "load_model"]
    assert work == [("denoise", 1, 2, 1), ("denoise", 1, 2, 2), ("write", 1, 2, 2),
                    ("denoise", 2, 2, 1), ("denoise", 2, 2, 2), ("write", 2, 2, 2)], work
    assert all("light" not in m for m in prog if m["stage"] == "load_model")

    _, res, prog, _ = engine.run_job("inv-w", "inverse", engine.tmp / "inv-w",
                                     _inv_params(assets["inv"], assets["clip"], seed=3))
    assert res["type"] == "result", res
    assert prog[-1]["stage"] == "write" and prog[-2]["stage"] == "denoise" and "light" not in prog[-1]


def test_bad_submissions_get_actionable_errors(engine, assets):
    engine.send(P.submit("bad", "inverse", str(engine.tmp / "bad"), {"input": "x", "steps": 0, "stpes": 1}))
    err = engine.recv()
    assert err["type"] == "error" and err["code"] == "invalid_params" and err["job"] == "bad"
    assert any("params.steps" in p for p in err["problems"]) and any("params.stpes" in p for p in err["problems"])
    engine.send(P.submit("rel", "inverse", "relative/dir", {"input": "x"}))
    err = engine.recv()
    assert err["code"] == "invalid_params" and "absolute" in err["message"]

    _, err, _, _ = engine.run_job("missing", "inverse", engine.tmp / "missing",
                                  _inv_params(assets["inv"], engine.tmp / "nope.mp4"))
    assert err["type"] == "error" and err["code"] == "input_error" and "not found" in err["message"]
    assert json.loads((engine.tmp / "missing" / "error.json").read_text())["code"] == "input_error"

    _, err, _, _ = engine.run_job("weights", "inverse", engine.tmp / "weights",
                                  {**_inv_params(assets["inv"], assets["clip"]), "model": "inverse"})
    assert err["code"] == "weights_unavailable" and "download" in err["hint"]


def test_cancel_ends_the_running_job_within_one_step_and_removes_a_queued_one(engine, assets):
    out = engine.tmp / "long" / "out"
    engine.send(P.submit("long", "inverse", str(engine.tmp / "long"), _inv_params(assets["inv"], assets["clip"],
                                                                                steps=500)))
    engine.send(P.submit("next", "inverse", str(engine.tmp / "next"), _inv_params(assets["inv"], assets["clip"])))
    acks = {}
    while len(acks) < 2:
        m = engine.recv(lambda m: m["type"] == "ack")
        acks[m["job"]] = m
    assert acks["next"]["queue_position"] == 1
    engine.recv(lambda m: m["type"] == "progress" and m["job"] == "long" and m["step"] >= 2)
    engine.send(P.cancel("next", id="c1"))
    ack = engine.recv(lambda m: m["type"] == "ack" and m["job"] == "next")
    assert ack["state"] == "removed" and ack["reply_to"] == "c1"
    assert engine.recv(lambda m: m.get("job") == "next")["code"] == "cancelled"

    engine.send(P.cancel("long", id="c2"))
    ack = engine.recv(lambda m: m["type"] == "ack" and m["job"] == "long")
    assert ack["state"] == "cancelling" and ack["step"] >= 2
    after = []
    err = engine.recv(lambda m: m["type"] in ("error", "result") and m.get("job") == "long", into=after)
    late = [m["step"] for m in after if m["type"] == "progress"]
    assert err["type"] == "error" and err["code"] == "cancelled", err
    assert err["step"] <= ack["step"] + 1 and all(s <= ack["step"] + 1 for s in late), (ack, late, err)
    print(f"\ncancel acknowledged at step {ack['step']}/500, job ended after step {err['step']}")
    _no_partial_output(out)
    assert (out / ".dr-resume").is_dir(), "the resume cache is kept so a rerun resumes"
    engine.send(P.cancel("long", id="c3"))
    assert engine.recv(lambda m: m["type"] == "ack")["state"] == "unknown", "cancelling a finished job is harmless"
    engine.send(P.status())
    assert engine.recv(lambda m: m["type"] == "status")["running"] is None


def test_sigint_cancels_the_running_job_and_the_engine_stays(engine, assets):
    engine.proc.send_signal(signal.SIGINT)
    idle = engine.recv(lambda m: m["type"] == "ack")
    assert idle["request"] == "interrupt" and idle["state"] == "idle"
    engine.send(P.submit("sig", "inverse", str(engine.tmp / "sig"), _inv_params(assets["inv"], assets["clip"],
                                                                              steps=500)))
    engine.recv(lambda m: m["type"] == "progress" and m["job"] == "sig" and m["step"] >= 1)
    engine.proc.send_signal(signal.SIGINT)
    ack = engine.recv(lambda m: m["type"] == "ack" and m["request"] == "interrupt")
    assert ack["job"] == "sig" and ack["state"] == "cancelling"
    err = engine.recv(lambda m: m["type"] in ("error", "result") and m.get("job") == "sig")
    assert err["code"] == "cancelled" and "SIGINT" in err["message"] and err["step"] <= ack["step"] + 1
    _no_partial_output(engine.tmp / "sig" / "out")
    engine.send(P.hello(id="alive"))
    assert engine.recv(lambda m: m["type"] == "hello")["reply_to"] == "alive"
    assert engine.proc.poll() is None


def _fuzz_lines(n=1000, seed=7):
    rng = random.Random(seed)
    valid = [P.encode(m) for m in (P.hello(id=1), P.cancel("zz"), P.submit("j", "inverse", "/tmp/j", {"input": "x"}),
                                   P.status())]
    lines = []
    for i in range(n):
        k = i % 8
        if k == 0:
            line = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))).replace(b"\n", b"?")
        elif k == 1:
            v = rng.choice(valid)
            line = v[:rng.randrange(1, len(v) - 1)].encode()            # truncated JSON
        elif k == 2:
            line = json.dumps({"type": "cancel", "v": "1.0", "job": rng.choice([5, None, [], {}, True, ""])}).encode()
        elif k == 3:
            line = json.dumps({"type": f"no_such_{i}", "v": "1.0"}).encode()
        elif k == 4:
            line = json.dumps(rng.choice([[1, 2], "hello", 3, None, True, {"v": "1.0"}, {"type": "hello"}])).encode()
        elif k == 5:
            line = json.dumps({"type": "hello", "v": rng.choice(["2.0", "0.9", "x", 7])}).encode()
        elif k == 6:
            line = json.dumps({"type": "submit", "v": "1.0", "job": "f", "kind": "inverse", "job_dir": "/tmp/f",
                               "params": rng.choice([{}, [], {"input": 3}, {"input": "x", "steps": "2"},
                                                     {"input": "x", "resolution": 64}])}).encode()
        else:
            line = rng.choice([b"\xff\xfe\xfd", b"{" * 50000, b'{"type":"hello","v":"1.0","x":NaN}',
                               b'{"type": "shutdown", "v": "1.0",}', b"\x00" * 100])
        lines.append(line)
    lines[500] = b'{"type":"hello","v":"1.0","pad":"' + b"x" * (2 << 20) + b'"}'   # a 2 MiB line
    return lines


def test_1000_malformed_lines_leave_it_alive_and_answering(engine):
    lines = _fuzz_lines()
    expected = sum(1 for line in lines if line.strip())
    writer = threading.Thread(target=engine.send_raw, args=(b"\n".join(lines) + b"\n",))
    writer.start()
    errors = [engine.recv(lambda m: True, timeout=30) for _ in range(expected)]
    writer.join(10)
    assert all(m["type"] == "error" for m in errors), [m for m in errors if m["type"] != "error"][:3]
    codes = {m["code"] for m in errors}
    assert codes == {"bad_message", "unknown_type", "version_mismatch", "invalid_params"}, codes
    assert any("exceeds" in m["message"] for m in errors)
    engine.send(P.hello(id="after-fuzz"))
    assert engine.recv()["reply_to"] == "after-fuzz"
    engine.send(P.status())
    st = engine.recv()
    assert st["type"] == "status" and st["running"] is None and st["queued"] == []


def test_unload_frees_the_cached_models(engine):
    engine.send(P.unload(id="u"))
    ack = engine.recv(lambda m: m["type"] == "ack")
    assert ack["request"] == "unload" and ack["reply_to"] == "u" and ack["unloaded"]
    engine.send(P.status())
    assert engine.recv(lambda m: m["type"] == "status")["loaded_models"] == []


# ----------------------------------------------------------------------------- bounds and containment
def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return int(next(line.split()[1] for line in fh if line.startswith("Threads:")))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/status")
def test_a_flood_of_estimates_gets_one_reply_each_from_a_few_threads(engine):
    """40 real estimates sent at once: each is answered exactly once (an estimate or `busy`), and the engine
    never runs more than the pool's 2 estimate threads (before the pool: 40 threads, RSS 0.4 → 1.3 GB)."""
    from engine.server.serve import ESTIMATE_WAITING, ESTIMATE_WORKERS

    baseline = _threads(engine.proc.pid)
    size = {"width": 96, "height": 64, "frames": 4}
    engine.send_raw(b"".join(P.encode(P.estimate("inverse", size, {"steps": 2}, id=f"e{i}")).encode() + b"\n"
                             for i in range(40)))
    replies, most, t0 = {}, baseline, time.monotonic()
    while len(replies) < 40:
        m = engine.recv(lambda m: str(m.get("reply_to", "")).startswith("e"), timeout=120)
        assert m["reply_to"] not in replies, f"two replies to {m['reply_to']}"
        replies[m["reply_to"]] = m
        most = max(most, _threads(engine.proc.pid))
    kinds = [m["type"] if m["type"] == "estimate" else m["code"] for m in replies.values()]
    assert set(kinds) <= {"estimate", "busy"} and kinds.count("busy") <= 40 - ESTIMATE_WORKERS - ESTIMATE_WAITING
    assert kinds.count("estimate") >= ESTIMATE_WORKERS + ESTIMATE_WAITING, kinds
    assert most - baseline <= ESTIMATE_WORKERS, (baseline, most)
    print(f"\n40 estimates: {kinds.count('estimate')} served, {kinds.count('busy')} busy in "
          f"{time.monotonic() - t0:.1f} s; threads {baseline} → {most}")


def test_a_job_folder_inside_the_engine_is_refused_and_nothing_is_written(engine, assets):
    job_dir = REPO / "engine" / "dr-test-job"
    engine.send(P.submit("inside", "inverse", str(job_dir), _inv_params(assets["inv"], assets["clip"]), id="in"))
    err = engine.recv(lambda m: m.get("job") == "inside")
    assert err["type"] == "error" and err["code"] == "invalid_params" and "'job_dir'" in err["message"], err
    assert not job_dir.exists()

def test_stdin_eof_cancels_the_running_job_and_exits_cleanly(engine, assets):
    engine.send(P.submit("eof", "inverse", str(engine.tmp / "eof"), _inv_params(assets["inv"], assets["clip"],
                                                                              steps=500)))
    engine.send(P.submit("eof-queued", "inverse", str(engine.tmp / "eofq"), _inv_params(assets["inv"], assets["clip"])))
    engine.recv(lambda m: m["type"] == "progress" and m["job"] == "eof" and m["stage"] == "denoise")
    t0 = time.monotonic()
    engine.proc.stdin.close()
    ends = {}
    while len(ends) < 2:
        m = engine.recv(lambda m: m["type"] in ("error", "result"), timeout=10)
        ends[m["job"]] = m
    assert {m["code"] for m in ends.values()} == {"cancelled"} and "stdin closed" in ends["eof"]["message"]
    assert engine.proc.wait(10) == 0
    assert engine.eof.wait(5) and time.monotonic() - t0 < 5
    _no_partial_output(engine.tmp / "eof" / "out")
    assert not (engine.tmp / "eofq" / "out").exists(), "the queued job never started"
    assert "stopping: stdin closed" in (engine.tmp / "engine.log").read_text()


# ----------------------------------------------------------------------------- process lifecycle
def test_sigkill_mid_job_then_a_new_engine_starts(tmp_path, assets):
    e = Engine(tmp_path / "a", "--log-file", str(tmp_path / "a.log"))
    try:
        e.send(P.submit("k", "inverse", str(tmp_path / "k"), _inv_params(assets["inv"], assets["clip"], steps=500)))
        e.recv(lambda m: m["type"] == "progress" and m["stage"] == "denoise")
        e.proc.kill()
        assert e.eof.wait(5), "the client's reader sees EOF"
        assert e.proc.wait(5) == -signal.SIGKILL
        assert not (tmp_path / "k" / "out" / "manifest.json").exists()
    finally:
        e.close()
    f = Engine(tmp_path / "b", env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    try:
        assert f.hello["pid"] == f.proc.pid
        assert f.hello["log_file"] == str(tmp_path / "cache" / "diffusion-renderer" / "logs" / f"engine-{f.proc.pid}.log")
        f.send(P.shutdown(id="bye"))
        assert f.recv()["request"] == "shutdown"
        assert f.proc.wait(10) == 0
    finally:
        f.close()


def test_parent_death_stops_the_engine(tmp_path):
    # the engine's parent is a small Python process; the test keeps the engine's stdin open, so only the
    # parent's death can make it exit
    launcher = ["-c", "import subprocess, sys, time; subprocess.Popen(sys.argv[1:]); time.sleep(600)"]
    e = Engine(tmp_path, "--log-file", str(tmp_path / "engine.log"), cmd=[sys.executable, *launcher])
    try:
        assert e.hello["pid"] != e.proc.pid
        e.proc.kill()          # the launcher dies; the engine is re-parented
        e.proc.wait(5)
        assert e.eof.wait(10), "the engine exited (its stdout closed) although stdin stayed open"
        assert "parent process" in (tmp_path / "engine.log").read_text()
    finally:
        e.close()


def test_parent_pid_option(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    e = Engine(tmp_path, "--parent-pid", str(parent.pid), "--log-file", str(tmp_path / "engine.log"))
    try:
        parent.kill()
        parent.wait(5)
        assert e.proc.wait(10) == 0
        assert "--parent-pid" in (tmp_path / "engine.log").read_text()
    finally:
        e.close()
