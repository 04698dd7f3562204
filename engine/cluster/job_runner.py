"""The jobs on a cluster (``--cluster``): segments of every (clip × HDRI) as units on the worker pool.

The driver (the job's process, no model, no GPU needed) plans every clip exactly as a local run does
(engine/jobs/units.py; the renderer facts come from a worker), hands the segments the resume cache does not
hold yet to the workers as units — ``compute_segment(renderer, ctx, plan, k)``, the function a local run
calls — and puts every result into the resume cache as it arrives. It then assembles each clip as a local
run does: ``run_segments`` finds every segment in the cache, blends, and writes the outputs. A driver killed
mid-run therefore resumes from the cache when the command is run again.

``split``: ``segments`` — one unit per segment, as many at once as there are workers; ``windows`` — one
segment at a time, its windows split across a window group of all workers (engine/cluster/window_group.py);
``auto`` — windows when there are fewer segments to compute than workers (and the segments have several
fused windows), else segments."""
from __future__ import annotations

import time
from typing import Callable, Optional

from engine.cluster.actors import RendererSpec, Unit, WorkerPool
from engine.cluster.runtime import connect
from engine.jobs.units import ClipPlan, RendererFacts, compute_segment, renderer_facts

SPLITS = ("segments", "windows", "auto")


def renderer_spec(kind: str, settings) -> RendererSpec:
    """The renderer a job's settings ask for, as the workers load it (``device auto``: each worker's own)."""
    device = settings.device if settings.device not in (None, "", "auto") else None
    if device and device.startswith("cuda"):
        device = None                         # a worker sees its own GPU as cuda:0
    return RendererSpec(kind, str(settings.model), settings.revision, device, settings.dtype, settings.memory,
                        allow_download=True)


class ClusterRunner:
    """A connected cluster and its warm worker pool, used by one job (CLI) or many (``serve --cluster``).

    ``threads``: the workers' intra-op thread count on CPUs; default the driver's (``torch.get_num_threads()``),
    so a CPU cluster's result is bit-identical to a run of the same command without ``--cluster`` on the
    driver's machine (CPU GEMM blocking, hence rounding, depends on the thread count)."""

    def __init__(self, spec: str, *, threads: Optional[int] = None):
        import torch

        self.spec = spec
        self.cluster = connect(spec)
        try:
            self.pool = WorkerPool(self.cluster.workers, num_gpus=self.cluster.gpus_per_worker,
                                   threads=threads or torch.get_num_threads())
        except BaseException:
            self.cluster.shutdown()
            raise
        self._group_queue = None
        self._facts: dict = {}
        self.stats: dict = {"connect_s": round(self.cluster.started_s, 3)}

    @property
    def workers(self) -> int:
        return len(self.pool.actors)

    def describe(self) -> dict:
        return self.cluster.describe()

    def facts(self, kind: str, settings) -> RendererFacts:
        spec = renderer_spec(kind, settings)
        if spec not in self._facts:
            t0 = time.perf_counter()
            self._facts[spec] = self.pool.map([Unit(("facts", kind), renderer_facts, spec)])[0]
            self.stats["first_load_s"] = round(time.perf_counter() - t0, 3)
        return self._facts[spec]

    def _group_sampler(self, spec: RendererSpec):
        from engine.cluster.actors import driver_queue
        from engine.cluster.group_sampler import GroupSampler

        if self._group_queue is None:
            self._group_queue = driver_queue()
        return GroupSampler(self.pool.live(), self._group_queue, spec)

    def choose_split(self, split: str, work: list[tuple[ClipPlan, int]]) -> str:
        if split != "auto":
            return split
        from engine.pipelines.windows import plan_windows

        if self.workers < 2 or len(work) >= self.workers:
            return "segments"
        several = all(p.settings.blend == "latent" and
                      len(plan_windows(e - s, p.settings.frames, p.settings.overlap)) > 1
                      for p, k in work for s, e in [p.segments[k]])
        return "windows" if several else "segments"

    def compute(self, kind: str, work: list[tuple[ClipPlan, int]], on_result: Callable[[ClipPlan, int, dict], None],
                *, split: str = "auto", on_progress: Optional[Callable[[float], None]] = None,
                should_cancel: Optional[Callable[[], bool]] = None, on_event=None) -> str:
        """Compute segment ``k`` of each ``(plan, k)`` on the workers; ``on_result(plan, k, result)`` as each
        arrives (the driver puts it into the resume cache). ``on_progress(fraction)``: the share of the units'
        steps done, never decreasing; ``on_event(progress_event)``: every worker report (tests kill workers from
        it). Returns the split used."""
        if not work:
            return "none"
        split = self.choose_split(split, work)
        specs = {renderer_spec(kind, p.settings) for p, _ in work}
        samplers = {s: self._group_sampler(s) for s in specs} if split == "windows" else {}
        units = [Unit((p.key, k), compute_segment, renderer_spec(kind, p.settings),
                      (p, k, None, samplers.get(renderer_spec(kind, p.settings))))
                 for p, k in work]

        def progress(ev, fraction):
            if on_event is not None:
                on_event(ev)
            if on_progress is not None:
                on_progress(fraction)

        def result(i, value):
            plan, k = work[i]
            on_result(plan, k, value)

        t0 = time.perf_counter()
        self.pool.map(units, on_progress=progress, should_cancel=should_cancel, on_result=result,
                      max_inflight=1 if split == "windows" else None)
        self.stats.update(split=split, units=len(units), compute_s=round(time.perf_counter() - t0, 3))
        return split

    def close(self) -> None:
        try:
            self.pool.close()
            if self._group_queue is not None:
                self._group_queue.shutdown()
        finally:
            self.cluster.shutdown()
