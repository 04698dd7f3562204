"""``--split windows``: one segment's windows split across a group of worker actors, bit-identical to one process.

:func:`engine.pipelines.windows.sample_clip` (mode ``"latent"``) evaluates every window's model output at
each step, blends them per frame (``windows.blend``: zeros, then ``+= output·weight`` in window order) and
takes one Euler step, which is elementwise per frame. Here rank r owns a contiguous run of windows and
keeps the latents of the frames they cover; at each step it computes its windows (first those another
rank needs), exchanges only the overlap frames' raw outputs with its neighbours through
``torch.distributed`` (gloo on CPU, NCCL on GPUs; point-to-point, batched), blends its frames with the
same weights in the same global window order, and steps. Every frame therefore sees the same operations
on the same values as in one process: the result is bit-identical (on the same device type and with the
same intra-op thread count, which CPU GEMM blocking depends on). The cancel check is a MAX all-reduce of
the ranks' flags, so all ranks stop at the same step. The driver collects each rank's own frames.

A lost member makes the others' exchange fail (or time out): :func:`sample_clip_group` raises
:class:`WindowGroupLost`; the caller re-forms the group and reruns the segment (units are idempotent)."""
from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Optional, Sequence

import torch

from engine.errors import InternalError
from engine.pipelines.windows import window_weights

EXCHANGE_TIMEOUT_S = 120.0


class WindowGroupLost(InternalError):
    """A member of a window group died (or stopped answering) mid-segment: re-form the group and rerun it."""


@dataclass(frozen=True)
class Layout:
    """Who owns which windows, the frames each rank keeps, and the overlap slices they exchange.

    ``frames[r] = (S, E)``: the union of rank r's windows; ``core[r]``: the frames rank r hands back (a
    partition of the clip); ``links[r]``: ``(peer, window, a, b)`` — rank r receives window ``window``'s
    output on frames ``[a, b)`` from ``peer`` (its owner); the owner sends the same slices in the same order."""
    plan: tuple
    owner: tuple
    frames: tuple
    core: tuple
    links: tuple

    @property
    def ranks(self) -> int:
        return len(self.frames)

    def recvs(self, rank: int):
        return [link for link in self.links[rank]]

    def sends(self, rank: int):
        """``(dst, window, a, b)`` in global window order, then by destination."""
        out = [(dst, j, a, b) for dst in range(self.ranks) for (src, j, a, b) in self.links[dst] if src == rank]
        return sorted(out, key=lambda x: (x[1], x[0]))


def make_layout(plan: Sequence[tuple[int, int]], ranks: int) -> Layout:
    """Split ``plan``'s windows into ``ranks`` contiguous runs of near-equal length."""
    plan = tuple((int(s), int(e)) for s, e in plan)
    n = len(plan)
    if not 1 <= ranks <= n:
        raise ValueError(f"a window group needs 1 to {n} ranks for {n} windows, got {ranks}")
    bounds = [round(r * n / ranks) for r in range(ranks + 1)]
    owner = tuple(r for r in range(ranks) for _ in range(bounds[r], bounds[r + 1]))
    frames = tuple((plan[bounds[r]][0], max(e for _, e in plan[bounds[r]:bounds[r + 1]])) for r in range(ranks))
    total = plan[-1][1]
    core = tuple((frames[r][0], frames[r + 1][0] if r + 1 < ranks else total) for r in range(ranks))
    links = []
    for r, (S, E) in enumerate(frames):
        mine = []
        for j, (s, e) in enumerate(plan):
            a, b = max(s, S), min(e, E)
            if owner[j] != r and a < b:
                mine.append((owner[j], j, a, b))
        links.append(tuple(mine))
    return Layout(plan, owner, frames, core, tuple(links))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def leader_address(renderer, ctx) -> tuple[str, int]:
    """Run on the group leader's worker: its node address and a free port for the TCP store."""
    return ctx.node_ip, free_port()


class _RankModel:
    """Rank r's model function over its frames ``[S, E)``: its windows, the overlap exchange, the blend."""

    def __init__(self, layout: Layout, rank: int, window_fn, weights, group):
        self.layout, self.rank, self.window_fn, self.weights, self.group = layout, rank, window_fn, weights, group
        self.S, self.E = layout.frames[rank]
        self.mine = [j for j, o in enumerate(layout.owner) if o == rank]
        sends = layout.sends(rank)
        first = list(dict.fromkeys(j for _, j, _, _ in sends)) or self.mine[:1]
        self.order = first + [j for j in self.mine if j not in first]
        self.post_after = len(first) - 1
        self.send_list, self.recv_list = sends, layout.recvs(rank)
        # every window touching [S, E), in global order, with the frames [a, b) it adds there
        self.touch = [(j, max(s, self.S), min(e, self.E)) for j, (s, e) in enumerate(layout.plan)
                      if max(s, self.S) < min(e, self.E)]
        self.exchange_s = 0.0

    def _post(self, outs, received, like):
        import torch.distributed as dist

        plan, ops = self.layout.plan, []
        for dst, w, a, b in self.send_list:
            ws = plan[w][0]
            ops.append(dist.P2POp(dist.isend, outs[w][:, a - ws:b - ws].contiguous(), dst, self.group, tag=w))
        for src, w, a, b in self.recv_list:
            shape = list(like.shape)
            shape[1] = b - a
            received[w] = torch.empty(shape, dtype=like.dtype, device=like.device)
            ops.append(dist.P2POp(dist.irecv, received[w], src, self.group, tag=w))
        return dist.batch_isend_irecv(ops) if ops else []

    def __call__(self, x, t):
        import time

        S, plan = self.S, self.layout.plan
        outs, received, reqs = {}, {}, []
        for k, j in enumerate(self.order):
            s, e = plan[j]
            outs[j] = self.window_fn(x[:, s - S:e - S], t, s, e)
            if k == self.post_after:         # what the neighbours need is ready: exchange while computing on
                t0 = time.perf_counter()
                reqs = self._post(outs, received, outs[j])
                self.exchange_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        for req in reqs:
            req.wait()
        self.exchange_s += time.perf_counter() - t0
        like = outs[self.mine[0]]
        shape = list(like.shape)
        shape[1] = self.E - S
        fused = torch.zeros(shape, dtype=like.dtype, device=like.device)
        view = [1] * len(shape)
        for j, a, b in self.touch:
            s = plan[j][0]
            part = outs[j][:, a - s:b - s] if j in outs else received[j]
            w = self.weights[j][a - s:b - s].to(part.device, part.dtype)
            view[1] = b - a
            fused.narrow(1, a - S, b - a).add_(part * w.view(view))
        return fused


def run_rank(renderer, ctx, rank: int, layout: Layout, leader: tuple[str, int], scheduler_factory, num_steps: int,
             noise: torch.Tensor, make_window_fn, window_args: tuple, timeout_s: float = EXCHANGE_TIMEOUT_S):
    """A unit function (see :mod:`engine.cluster.actors`): rank ``rank`` of the group denoises its frames.

    ``noise`` is the clip's noise on this rank's frames ``layout.frames[rank]``; ``make_window_fn(renderer,
    *window_args)`` returns the ``window_fn(x, t, s, e)`` of :func:`windows.sample_clip` (entered when it is a
    context manager, :func:`engine.pipelines.samplers.entered`). Returns
    ``(core_start, latents of the core frames, exchange seconds)``."""
    import torch.distributed as dist

    from engine.pipelines.samplers import entered
    from engine.pipelines.sampling import denoise

    device = torch.device(getattr(renderer, "device", None) or ctx.device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    host, port = leader
    store = dist.TCPStore(host, port, layout.ranks, rank == 0, timeout=timedelta(seconds=timeout_s))
    dist.init_process_group(backend, store=store, rank=rank, world_size=layout.ranks,
                            timeout=timedelta(seconds=timeout_s))
    try:
        group = dist.group.WORLD
        weights = window_weights(layout.plan, layout.plan[-1][1])
        flag = torch.zeros(1, dtype=torch.int32, device=device)

        def should_cancel():
            flag.fill_(1 if ctx.should_cancel() else 0)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
            return bool(flag.item())

        def callback(i, n, t, out, latents):
            if rank == 0:
                ctx.report(i + 1, n)

        with entered(make_window_fn(renderer, *window_args)) as window_fn:   # e.g. the forward LoRA folded in
            model = _RankModel(layout, rank, window_fn, weights, group)
            latents = denoise(scheduler_factory(), num_steps, noise.to(device), model, callback=callback,
                              should_cancel=should_cancel)
        S = layout.frames[rank][0]
        c0, c1 = layout.core[rank]
        return c0, latents[:, c0 - S:c1 - S].cpu(), model.exchange_s
    finally:
        dist.destroy_process_group()


def sample_clip_group(pool, scheduler_factory, num_steps: int, noise: torch.Tensor, make_window_fn,
                      window_args: tuple, plan, *, renderer=None, ranks: Optional[int] = None,
                      on_progress: Optional[Callable] = None, should_cancel: Optional[Callable[[], bool]] = None,
                      timeout_s: float = EXCHANGE_TIMEOUT_S, stats: Optional[dict] = None) -> torch.Tensor:
    """``windows.sample_clip(scheduler_factory, num_steps, noise, window_fn, plan, "latent")[1]`` computed by
    ``ranks`` workers of ``pool`` (:class:`~engine.cluster.actors.WorkerPool`), each holding ``renderer`` (a
    RendererSpec, or None). Returns the clip's latents (on the CPU). ``stats`` (a dict) receives the
    per-rank exchange seconds."""
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    from engine.cluster.actors import Unit, task_cause
    from engine.pipelines.sampling import Cancelled

    ranks = min(int(ranks or len(pool.actors)), len(plan), len(pool.actors))
    layout = make_layout(plan, ranks)
    actors = pool.actors[:ranks]
    ray.get([a.reset.remote() for a in actors])
    leader = ray.get(actors[0].run.remote(Unit("leader", leader_address)))
    refs = []
    for r, actor in enumerate(actors):
        S, E = layout.frames[r]
        unit = Unit(("window-rank", r), run_rank, renderer,
                    (r, layout, leader, scheduler_factory, num_steps, noise[:, S:E].contiguous(), make_window_fn,
                     tuple(window_args), timeout_s))
        refs.append(actor.run.remote(unit, 0, pool.queue))
    pending, cancelled = list(refs), False
    while pending:
        if should_cancel is not None and not cancelled and should_cancel():
            cancelled = True
            for a in actors:
                a.cancel.remote()
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=0.05)
        for ev in pool.drain():
            if on_progress is not None:
                on_progress(ev, ev.done / ev.total if ev.total else 0.0)
    parts, lost, errors = [], [], []
    for r, ref in enumerate(refs):
        try:
            parts.append(ray.get(ref))
        except RayActorError:
            lost.append(r)
        except RayTaskError as exc:
            errors.append(task_cause(exc))
    if any(isinstance(e, Cancelled) for e in errors) and not lost:
        raise Cancelled("cancelled: the window group stopped at its next step")
    if not lost:
        lost = [e for e in errors if isinstance(e, torch.distributed.DistError)]  # a peer stopped answering
    if errors and not lost:
        raise errors[0] from None
    if lost:
        raise WindowGroupLost(f"window group lost rank(s) {lost} mid-segment; re-form the group and rerun the "
                              "segment")
    if stats is not None:
        stats["exchange_s"] = [p[2] for p in parts]
    return torch.cat([p[1] for p in parts], dim=1)
