"""The cluster core (engine/cluster): a private Ray of 2 CPU workers, started once for the module.

| case | expected |
|---|---|
| window group, 2 ranks, toy model, 40 frames, windows 8/overlap 2 and 5 | torch.equal to windows.sample_clip |
| window group, 2 ranks, tiny random inverse UNet (its own window_fn) | torch.equal to the renderer's _sample |
| worker SIGKILLed mid-unit (from its progress event) | restarted, unit retried, identical results |
| progress across units | fraction never decreases, ends at 1 |
| cancel while units run | Cancelled, workers usable afterwards |
| bad --cluster values, unreachable address, second connect | ClusterError, one line naming the fix |
| importing engine.cli / running a job without --cluster | ray not in sys.modules |
"""
import functools
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from diffusers import EulerDiscreteScheduler

from engine.cluster.window_group import make_layout
from engine.pipelines import windows
from engine.pipelines.sampling import Cancelled, make_scheduler

REPO = Path(__file__).resolve().parents[1]
SCHED = dict(EulerDiscreteScheduler(prediction_type="v_prediction", use_karras_sigmas=True).config)


@pytest.fixture(scope="module")
def cluster():
    from engine.cluster.actors import WorkerPool
    from engine.cluster.runtime import connect

    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])   # the toy units travel by value
    c = connect("local:2")
    pool = WorkerPool(2, threads=1)
    assert len({i["pid"] for i in pool.infos()}) == 2      # both workers up before the first test
    yield c, pool
    pool.close()
    c.shutdown()


# -- toy model and units (top-level: they travel to the workers) -----------------------------------------
def toy_window_fn(renderer, scale):
    def window_fn(x, t, s, e):
        pos = torch.arange(s, e, dtype=x.dtype).view(1, -1, 1, 1, 1)
        return torch.sin(x * scale + pos * 0.37) * 0.8 + torch.cos(pos * x) * 0.1 + float(t) * 1e-3
    return window_fn


def toy_reference(noise, plan, steps, scale):
    fn = toy_window_fn(None, scale)
    return windows.sample_clip(functools.partial(make_scheduler, SCHED), steps, noise, fn, plan, "latent")[1]


def toy_unit(renderer, ctx, seed, hold_first_attempt=False):
    """A whole toy clip per unit; reports every step. ``hold_first_attempt``: after step 2 of attempt 0,
    wait (for the test's kill, or its cancel)."""
    noise = torch.randn((1, 12, 2, 4, 4), generator=torch.Generator().manual_seed(seed))
    fn = toy_window_fn(None, 1.0 + seed / 10)

    def callback(i, n, t, out, lat):
        ctx.report(i + 1, n)
        if hold_first_attempt and ctx.attempt == 0 and i == 1:
            deadline = threading.Event()
            while not ctx.should_cancel() and not deadline.wait(0.01):
                pass

    return windows.sample_clip(functools.partial(make_scheduler, SCHED), 4, noise, fn, windows.plan_windows(12, 6, 2),
                               "latent", callback=callback, should_cancel=ctx.should_cancel)[1]


def tiny_inverse_window_fn(renderer, group, cond_latents, steps):
    """The inverse renderer's own window function (engine.pipelines.inverse.inverse_window_fn)."""
    from engine.pipelines.inverse import inverse_window_fn

    return inverse_window_fn(renderer, group, cond_latents, 7, 127, 0.0)


# -- window group ----------------------------------------------------------------------------------------
def test_layout_partitions_windows_and_links_overlaps():
    plan = windows.plan_windows(40, 8, 2)
    lay = make_layout(plan, 2)
    assert lay.owner == (0, 0, 0, 0, 1, 1, 1)
    assert lay.frames == ((0, 26), (24, 40)) and lay.core == ((0, 24), (24, 40))
    assert lay.recvs(0) == [(1, 4, 24, 26)] and lay.recvs(1) == [(0, 3, 24, 26)]
    assert lay.sends(0) == [(1, 3, 24, 26)]
    deep = make_layout(windows.plan_windows(40, 8, 5), 2)     # frames under three windows
    assert {w for _, w, _, _ in deep.recvs(1)} == {deep.owner.index(1) - 2, deep.owner.index(1) - 1}
    with pytest.raises(ValueError, match="1 to 1 ranks"):
        make_layout([(0, 8)], 2)


@pytest.mark.parametrize("overlap", [2, 5])
def test_window_group_toy_is_bit_identical(cluster, overlap):
    from engine.cluster.window_group import sample_clip_group

    _, pool = cluster
    noise = torch.randn((2, 40, 3, 4, 4), generator=torch.Generator().manual_seed(overlap))
    plan = windows.plan_windows(40, 8, overlap)
    ref = toy_reference(noise, plan, 5, 1.3)
    events, stats = [], {}
    got = sample_clip_group(pool, functools.partial(make_scheduler, SCHED), 5, noise, toy_window_fn, (1.3,), plan,
                            on_progress=lambda ev, f: events.append(ev.done), stats=stats)
    assert torch.equal(got, ref)
    assert got.shape == noise.shape and len(stats["exchange_s"]) == 2
    assert events == sorted(events) and events[-1] == 5


def test_window_group_tiny_inverse_model_is_bit_identical(cluster, ckpts):
    from engine.cluster.actors import RendererSpec
    from engine.cluster.window_group import sample_clip_group
    from engine.pipelines.loading import load_renderer

    _, pool = cluster
    renderer = load_renderer("inverse", str(ckpts[0]), device="cpu", dtype=torch.float32)
    group, steps = ["basecolor", "normal"], 2
    cond = torch.randn((1, 40, 4, 8, 8), generator=torch.Generator().manual_seed(3))
    base = torch.randn((1, 40, 4, 8, 8), generator=torch.Generator().manual_seed(4))
    plan = windows.plan_windows(40, 8, 2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # the workers' intra-op thread count (CPU GEMM blocking depends on it)
    try:
        kind, ref = renderer._sample(group, cond, base, steps, 7, 127, 0.0, plan, "latent", None, None)
    finally:
        torch.set_num_threads(threads)
    assert kind == "clip"
    noise = base.expand(len(group), -1, -1, -1, -1).contiguous()
    spec = RendererSpec("inverse", str(ckpts[0]), device="cpu", dtype="float32")
    got = sample_clip_group(pool, functools.partial(make_scheduler, renderer.c.scheduler_config), steps, noise,
                            tiny_inverse_window_fn, (group, cond, steps), plan, renderer=spec)
    assert torch.equal(got, ref)


# -- pool: retry, progress, cancel -----------------------------------------------------------------------
def test_worker_killed_mid_unit_is_restarted_and_unit_retried(cluster):
    from engine.cluster.actors import Unit

    _, pool = cluster
    units = [Unit(("seg", k), toy_unit, None, (k, k == 1)) for k in range(4)]
    killed, fractions = [], []

    def on_progress(ev, fraction):
        fractions.append(fraction)
        if ev.unit_id == ("seg", 1) and ev.attempt == 0 and ev.done == 2 and not killed:
            killed.append(ev.pid)
            os.kill(ev.pid, signal.SIGKILL)

    got = pool.map(units, on_progress=on_progress)
    assert killed, "the held unit never reported step 2"
    for k, g in enumerate(got):
        assert torch.equal(g, toy_unit(None, _LocalCtx(), k))
    assert fractions == sorted(fractions)
    assert ray_pids(pool) and killed[0] not in ray_pids(pool)   # the killed worker came back as a new process


def test_cancel_stops_running_units(cluster):
    from engine.cluster.actors import Unit

    _, pool = cluster
    units = [Unit(("c", k), toy_unit, None, (k, True)) for k in range(3)]
    seen = []
    with pytest.raises(Cancelled):
        pool.map(units, on_progress=lambda ev, f: seen.append(ev), should_cancel=lambda: bool(seen))
    assert pool.map([Unit("after", toy_unit, None, (0,))])[0].shape == (1, 12, 2, 4, 4)


class _LocalCtx:
    attempt = 0

    def report(self, done, total):
        pass

    def should_cancel(self):
        return False


def ray_pids(pool):
    return [i["pid"] for i in pool.infos()]


# -- runtime ---------------------------------------------------------------------------------------------
def test_describe_reports_the_local_cluster(cluster):
    c, _ = cluster
    d = c.describe()
    assert d["nodes"] == 1 and d["workers"] == 2
    assert d["devices"] == [{"node": "127.0.0.1", "kind": "cpu", "count": 2, "name": None}]
    assert c.started_s > 0


@pytest.mark.parametrize("spec", ["", "local:0", "local:x", "cluster", "host:99999", "http://x:1"])
def test_bad_cluster_specs_are_one_line_errors(spec):
    from engine.cluster.runtime import ClusterError, parse_spec

    with pytest.raises(ClusterError, match="local\\[:N\\]") as exc:
        parse_spec(spec)
    assert "\n" not in str(exc.value)


def test_unreachable_address_and_second_connect_are_errors(cluster):
    import socket

    from engine.cluster.runtime import ClusterError, connect

    with socket.socket() as s:            # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ClusterError, match=f"no Ray head answers.*ray start --head --port {port}"):
        connect(f"127.0.0.1:{port}")
    with pytest.raises(ClusterError, match="already connected"):
        connect("local:1")


def test_no_ray_without_cluster(tmp_path, ckpts):
    code = f"""
import sys
import engine.cli, engine.cluster
from engine.cli import main
rc = main(["inverse", {str(REPO / 'examples' / 'clip')!r}, "--out", {str(tmp_path / 'o')!r}, "--model",
           {str(ckpts[0])!r}, "--passes", "normal", "--steps", "1", "--resolution", "64x64", "--no-previews"])
assert rc == 0, rc
bad = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
print("RAY", bad)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "RAY []" in out.stdout
