"""The jobs on a cluster: a private Ray of 2 CPU workers (started once for the module), tiny random checkpoints,
a 40-frame clip, windows of 8 overlapping 2, 2 windows per segment (4 segments). "Identical" means every EXR
of the output folders has the same files and np.array_equal channels.

| case | expected |
|---|---|
| inverse, 5 passes, `--split segments` / `--split windows` | identical to the single-process run |
| forward, 2 HDRIs, `--split segments` / `--split windows` | identical to the single-process run |
| a worker SIGKILLed mid-run (from its progress event) | restarted, its unit retried; identical result |
| cancel after the first progress event | Cancelled; every unit stops before its last step; no outputs |
| `plan --json`, each task's `--only-segments` command in its own process, then the assemble command | identical to one run; the tasks write no outputs |
| the driver (`inverse --cluster local:2`) killed -9 from its progress line, then the command rerun | resumes from the cache; identical to one run |
| two-node cluster (`ray.cluster_utils.Cluster`), one node removed mid-run | the run completes, identical |
| `serve --cluster local:1` | `hello.cluster` reports 1 node / 1 worker; a job runs there, progress monotonic, ends with `write` |
| `--only-segments` out of range, `--split` without `--cluster` | one-line errors naming the option |
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "engine"]
COMMON = ["--steps", "2", "--frames", "8", "--overlap", "2", "--windows-per-segment", "2", "--resolution", "64x64",
          "--device", "cpu", "--no-previews"]
INV = COMMON + ["--passes", "basecolor,normal,depth,roughness,metallic"]
FWD = COMMON + ["--env-resolution", "32x32"]
# one intra-op thread everywhere (this process, its subprocesses, the workers, which take the driver's count): on
# a shared 2-core machine two threads per process make CPU steps erratically slower
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def runner(one_thread):
    from engine.cluster.job_runner import ClusterRunner

    r = ClusterRunner("local:2")
    yield r
    r.close()


@pytest.fixture(scope="module")
def clip40(tmp_path_factory):
    from engine.io import write_mp4

    path = tmp_path_factory.mktemp("clip40") / "plate.mp4"
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    write_mp4(path, [np.stack([xx, yy, 0.5 + 0.4 * np.sin(xx * 6 + t / 4)], -1).clip(0, 1) for t in range(40)], 24)
    return path


@pytest.fixture(scope="module")
def hdris(tmp_path_factory):
    from engine.envmap.hdr_io import write_hdr

    root = tmp_path_factory.mktemp("hdri")
    yy, xx = np.mgrid[0:16, 0:32] / np.array([16.0, 32.0])[:, None, None]
    paths = []
    for i, name in enumerate(("dawn", "noon")):
        img = np.stack([xx + i, yy * 2, 0.5 + 0.0 * xx], -1).astype(np.float32)
        write_hdr(root / f"{name}.hdr", img)
        paths.append(root / f"{name}.hdr")
    return paths


def job(kind, args, runner=None, **kw):
    """Run a job in this process as the CLI does (``runner``: the module's cluster)."""
    from engine.cli import build_parser
    from engine.cli_options import check_params, params_from_args
    from engine.jobs.settings import build_settings

    parsed = build_parser().parse_args([kind, *map(str, args)])
    params = params_from_args(kind, parsed)
    assert not check_params(kind, params)
    built = build_settings(kind, params)
    return built.run(*built.inputs, built.settings, show_progress=False,
                     **({"cluster": runner} if runner is not None else {}), **kw)


def exrs(folder: Path) -> dict:
    from engine.io import read_exr

    return {str(p.relative_to(folder)): read_exr(p) for p in sorted(Path(folder).rglob("*.exr"))}


def assert_identical(a: Path, b: Path) -> None:
    ea, eb = exrs(a), exrs(b)
    assert ea and sorted(ea) == sorted(eb)
    for name in ea:
        assert sorted(ea[name]) == sorted(eb[name]), name
        for ch in ea[name]:
            assert np.array_equal(ea[name][ch], eb[name][ch]), f"{name} {ch} differs"


@pytest.fixture(scope="module")
def inverse_ref(ckpts, clip40, tmp_path_factory):
    out = tmp_path_factory.mktemp("inv-ref") / "set"
    summary = job("inverse", [clip40, "--out", out, "--model", ckpts[0], *INV])
    assert summary["clips"][0]["segments"] == 4
    return out


@pytest.fixture(scope="module")
def forward_ref(ckpts, inverse_ref, hdris, tmp_path_factory):
    out = tmp_path_factory.mktemp("fwd-ref") / "relit"
    job("forward", [inverse_ref, "--out", out, "--model", ckpts[1], "--hdri", hdris[0], "--hdri", hdris[1], *FWD])
    return out


# -- bit-identical splits -----------------------------------------------------------------------------------
@pytest.mark.parametrize("split", ["segments", "windows"])
def test_inverse_on_the_cluster_is_bit_identical(runner, ckpts, clip40, inverse_ref, tmp_path, split):
    out = tmp_path / "set"
    summary = job("inverse", [clip40, "--out", out, "--model", ckpts[0], *INV, "--split", split], runner)
    assert summary["cluster"]["split"] == split and summary["cluster"]["units"] == 4
    assert_identical(inverse_ref, out)
    assert not (out / ".dr-resume").exists()


@pytest.mark.parametrize("split", ["segments", "windows"])
def test_forward_two_hdris_on_the_cluster_is_bit_identical(runner, ckpts, inverse_ref, forward_ref, hdris, tmp_path,
                                                             split):
    out = tmp_path / "relit"
    summary = job("forward", [inverse_ref, "--out", out, "--model", ckpts[1], "--hdri", hdris[0], "--hdri", hdris[1],
                              *FWD, "--split", split], runner)
    assert summary["cluster"]["units"] == 8 and summary["cluster"]["split"] == split     # 2 HDRIs × 4 segments
    assert sorted(p.name for p in out.iterdir()) == ["dawn", "noon"]
    assert_identical(forward_ref, out)


def test_worker_killed_mid_run_gives_the_identical_result(runner, ckpts, clip40, inverse_ref, tmp_path):
    killed = []

    def on_event(ev):
        if not killed and ev.attempt == 0 and ev.unit_id[1] == 1 and ev.done >= 1:
            killed.append(ev.pid)
            os.kill(ev.pid, signal.SIGKILL)

    runner.event_hook = on_event
    try:
        out = tmp_path / "set"
        job("inverse", [clip40, "--out", out, "--model", ckpts[0], *INV, "--split", "segments"], runner)
    finally:
        runner.event_hook = None
    assert killed, "segment 1 never reported a step"
    assert killed[0] not in [i["pid"] for i in runner.pool.infos()]      # the killed worker is a new process
    assert_identical(inverse_ref, out)


def test_cancel_stops_every_worker_at_its_next_step(runner, ckpts, clip40, tmp_path):
    from engine.pipelines.sampling import Cancelled

    seen = []
    runner.event_hook = seen.append
    try:
        out = tmp_path / "set"
        with pytest.raises(Cancelled):
            job("inverse", [clip40, "--out", out, "--model", ckpts[0], *INV, "--steps", "6", "--split", "segments"],
                runner, should_cancel=lambda: bool(seen))
    finally:
        runner.event_hook = None
    assert seen and max(ev.done for ev in seen) < 6          # no unit ran to its end
    assert not list(out.rglob("*.exr")) and not (out / "manifest.json").exists()


# -- render farm: plan + --only-segments + assemble -----------------------------------------------------------
def test_plan_only_segments_and_assemble_equal_one_run(ckpts, clip40, inverse_ref, tmp_path):
    out = tmp_path / "set"
    args = ["inverse", str(clip40), "--out", str(out), "--model", str(ckpts[0]), *INV]
    plan = subprocess.run([*CLI, "plan", *args, "--json"], cwd=tmp_path, capture_output=True, text=True, env=ENV,
                          timeout=300)
    assert plan.returncode == 0, plan.stderr[-2000:]
    plan = json.loads(plan.stdout)
    assert [u["frames"] for u in plan["units"]] == [[0, 14], [12, 26], [24, 38], [32, 40]]
    assert len(plan["tasks"]) == 4 and plan["units"][0]["key"] == plan["units"][3]["key"]
    assert plan["kind"] == "inverse" and all(t["command"][0] == "diffusion-renderer" for t in plan["tasks"])
    procs = [subprocess.Popen(CLI + task["command"][1:], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for task in plan["tasks"][:2]]
    for task in plan["tasks"][2:]:
        done = subprocess.run(CLI + task["command"][1:], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    assert not list(out.rglob("*.exr")) and not (out / "manifest.json").exists()       # no outputs yet
    assert len(list((out / ".dr-resume").rglob("seg_*.safetensors"))) == 4
    done = subprocess.run(CLI + plan["assemble"]["command"][1:], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_identical(inverse_ref, out)


# -- the driver killed -----------------------------------------------------------------------------------------
def _process_tree(pid):
    import psutil

    try:
        return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    except psutil.Error:
        return [pid]


def test_driver_killed_then_rerun_resumes_identically(ckpts, clip40, inverse_ref, tmp_path):
    out = tmp_path / "set"
    cmd = [*CLI, "-v", "inverse", str(clip40), "--out", str(out), "--model", str(ckpts[0]), *INV, "--cluster",
           "local:2", "--split", "segments"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    tree, seen = [], ""
    try:
        for line in proc.stderr:          # "cluster: segment 2/4 of plate.mp4 cached" (a progress line)
            seen += line
            if "cluster: segment" in line and "cached" in line:
                tree = _process_tree(proc.pid)
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in tree[1:]:              # Ray's processes started by the killed driver
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    assert tree, seen[-2000:]
    assert proc.returncode == -signal.SIGKILL
    cached = len(list((out / ".dr-resume").rglob("seg_*.safetensors")))
    assert 1 <= cached < 4 and not (out / "manifest.json").exists()
    again = subprocess.run([*CLI, "inverse", str(clip40), "--out", str(out), "--model", str(ckpts[0]), *INV,
                            "--json"], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["clips"][0]["resumed_segments"] == cached
    assert_identical(inverse_ref, out)


# -- two nodes, one removed mid-run ----------------------------------------------------------------------------
TWO_NODES = r"""
import json, sys, threading
from engine.cluster.runtime import _loopback_only
_loopback_only()                       # every node and the driver on 127.0.0.1
from ray.cluster_utils import Cluster
from engine.cluster.job_runner import ClusterRunner
from engine.jobs.settings import build_settings

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1",
                                                         "include_dashboard": False})
second = cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
cluster.wait_for_nodes()
runner = ClusterRunner(cluster.address)
assert runner.describe()["nodes"] == 2, runner.describe()
on_second = {i["pid"] for i in runner.pool.infos() if i["node_id"] == second.node_id}
removed = []

def on_event(ev):                      # the second node's worker reports a step: take its node away
    if not removed and ev.pid in on_second:
        removed.append(ev.unit_id)
        threading.Thread(target=cluster.remove_node, args=(second,)).start()

runner.event_hook = on_event
built = build_settings("inverse", json.loads(sys.argv[1]))
summary = built.run(*built.inputs, built.settings, show_progress=False, cluster=runner)
print("REMOVED", bool(removed), "NODES", runner.describe()["nodes"], "UNITS", summary["cluster"]["units"])
runner.close()
cluster.shutdown()
"""


def test_two_node_cluster_survives_losing_a_node(ckpts, clip40, inverse_ref, tmp_path):
    out = tmp_path / "set"
    params = {"input": str(clip40), "out": str(out), "model": str(ckpts[0]), "steps": 2, "frames": 8, "overlap": 2,
              "windows_per_segment": 2, "resolution": "64x64", "device": "cpu", "previews": False,
              "passes": ["basecolor", "normal", "depth", "roughness", "metallic"], "split": "segments"}
    done = subprocess.run([sys.executable, "-c", TWO_NODES, json.dumps(params)], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "REMOVED True NODES 1 UNITS 4" in done.stdout, done.stdout[-2000:]
    assert_identical(inverse_ref, out)


# -- serve --cluster ---------------------------------------------------------------------------------------------
def test_serve_with_a_cluster_reports_it_and_runs_jobs_on_it(ckpts, clip40, tmp_path):
    from test_server_engine import Engine

    engine = Engine(tmp_path / "engine", "--cluster", "local:1", "--log-file", str(tmp_path / "engine.log"),
                    env={"OMP_NUM_THREADS": "1"})
    try:
        assert engine.hello["cluster"]["workers"] == 1 and engine.hello["cluster"]["nodes"] == 1
        params = {"input": str(clip40), "model": str(ckpts[0]), "resolution": "64x64", "frames": 8, "overlap": 2,
                  "steps": 1, "device": "cpu", "previews": False, "passes": ["normal"], "frame_range": [1, 12]}
        ack, end, progress, _ = engine.run_job("c1", "inverse", tmp_path / "job", params, timeout=300)
        assert end["type"] == "result", end
        assert end["summary"]["cluster"]["workers"] == 1 and end["summary"]["cluster"]["units"] == 1
        steps = [(m["step"] / m["total"]) if m["total"] else 0.0 for m in progress if m["stage"] != "load_model"]
        assert steps and steps == sorted(steps) and progress[-1]["stage"] == "write"
        assert len(list((tmp_path / "job" / "out" / "normal").glob("*.exr"))) == 12
    finally:
        engine.send({"type": "shutdown", "id": "bye"})
        engine.proc.wait(60)
        engine.close()


# -- errors ------------------------------------------------------------------------------------------------------
def test_option_errors_are_one_line(ckpts, clip40, tmp_path, capsys):
    from engine.cli import main

    base = ["inverse", str(clip40), "--out", str(tmp_path / "o"), "--model", str(ckpts[0]), *INV]
    for extra, text in ((["--only-segments", "7"], "--only-segments 7: the clip has segments 0..3"),
                        (["--only-segments", "x"], "--only-segments"),
                        (["--split", "windows"], "--split windows needs --cluster")):
        assert main([*base, *extra]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and text in lines[0], lines
