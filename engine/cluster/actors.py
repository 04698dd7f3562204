"""Worker actors holding warm renderers, and a pool that hands units to them.

A unit is ``(unit_id, fn, renderer, args)``: the worker loads (or reuses) the renderer described by a
:class:`RendererSpec` and calls ``fn(renderer, ctx, *args)`` — ``fn`` a top-level function of the job code
(e.g. ``compute_segment``), ``ctx`` a :class:`UnitContext` (progress reports, the cancel check, where the
worker runs). Units are idempotent: when a worker dies mid-unit (``RayActorError``), Ray restarts it and
the pool hands the unit out again; a worker that keeps dying is dropped and its units go to the others.
Progress travels from the workers to the driver through one Ray queue and is aggregated monotonically;
cancel sets a flag that the running unit's ``should_cancel`` sees at its next step (the worker is a
threaded actor, so ``cancel`` runs beside ``run``)."""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError
from ray.util.queue import Queue

from engine.errors import InternalError
from engine.pipelines.sampling import Cancelled

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3          # a unit is tried this often before the run fails
RESTART_WAIT_S = 120.0    # how long a restarting worker is waited for before it is dropped
WARM_RENDERERS = 2        # renderers a worker keeps loaded (most recently used)
LIVE_GRACE_S = 15.0       # once a worker answers, how long a run waits for the others before leaving them out


@dataclass(frozen=True)
class RendererSpec:
    """What :func:`engine.pipelines.loading.load_renderer` needs; also the warm cache's key."""
    kind: str
    model: str
    revision: Optional[str] = None
    device: Optional[str] = None      # None: the worker's GPU, else the CPU
    dtype: Optional[str] = None       # "fp16" | "bf16" | "fp32" (or "float16" ...) | "auto"/None: the device's default
    memory: str = "default"
    allow_download: bool = False      # fetch missing published weights on the worker


@dataclass(frozen=True)
class Unit:
    unit_id: Any
    fn: Callable
    renderer: Optional[RendererSpec] = None
    args: tuple = ()


@dataclass(frozen=True)
class Progress:
    """One report from a worker: ``done``/``total`` steps of ``unit_id`` (attempt ``attempt``) on ``pid``."""
    unit_id: Any
    attempt: int
    done: int
    total: int
    pid: int
    info: Optional[dict] = None


class UnitContext:
    """Given to a unit's function on the worker: ``report(done, total)``, ``should_cancel()``, ``device``,
    ``node_ip``, ``pid``, ``renderer(spec)`` (another warm renderer)."""

    def __init__(self, worker: "Worker", unit_id, attempt: int, queue: Optional[Queue]):
        self._worker, self.unit_id, self.attempt, self._queue = worker, unit_id, attempt, queue
        self.pid = os.getpid()
        self.device = worker.device
        self.node_ip = ray.util.get_node_ip_address()

    def report(self, done: int, total: int, **info) -> None:
        if self._queue is not None:
            try:
                self._queue.put(Progress(self.unit_id, self.attempt, int(done), int(total), self.pid, info or None))
            except Exception:  # noqa: BLE001 - progress is best-effort: a lost queue must not fail the unit
                self._queue = None

    def should_cancel(self) -> bool:
        return self._worker.cancel_event.is_set()

    def renderer(self, spec: RendererSpec):
        return self._worker.renderer(spec)


class Worker:
    """The actor's body (wrapped by :func:`worker_class`): one per GPU, or one per CPU slot."""

    def __init__(self, threads: Optional[int] = None):
        import torch

        if threads:
            torch.set_num_threads(int(threads))
        gpus = ray.get_gpu_ids()
        self.device = "cuda" if gpus and torch.cuda.is_available() else "cpu"
        self.cancel_event = threading.Event()
        self._renderers: dict[RendererSpec, Any] = {}
        self._lock = threading.Lock()

    def renderer(self, spec: Optional[RendererSpec]):
        if spec is None:
            return None
        with self._lock:
            if spec in self._renderers:
                self._renderers[spec] = self._renderers.pop(spec)   # most recently used last
                return self._renderers[spec]
            while len(self._renderers) >= WARM_RENDERERS:
                self._renderers.pop(next(iter(self._renderers)))
            from engine.pipelines.loading import load_renderer

            r = load_renderer(spec.kind, spec.model, revision=spec.revision, device=spec.device or self.device,
                              dtype=spec.dtype, memory=spec.memory, allow_download=spec.allow_download)
            self._renderers[spec] = r
            return r

    def run(self, unit: Unit, attempt: int = 0, queue: Optional[Queue] = None):
        ctx = UnitContext(self, unit.unit_id, attempt, queue)
        return unit.fn(self.renderer(unit.renderer), ctx, *unit.args)

    def warm(self, spec: RendererSpec) -> float:
        t0 = time.perf_counter()
        self.renderer(spec)
        return time.perf_counter() - t0

    def cancel(self) -> None:
        self.cancel_event.set()

    def reset(self) -> None:
        self.cancel_event.clear()

    def info(self) -> dict:
        return {"pid": os.getpid(), "node": ray.util.get_node_ip_address(),
                "node_id": ray.get_runtime_context().get_node_id(), "device": self.device,
                "gpus": [str(g) for g in ray.get_gpu_ids()]}


_WORKER_CLASS = None


def driver_queue() -> Queue:
    """A Ray queue living on the driver's node (it survives the loss of any worker node)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    return Queue(actor_options={"num_cpus": 0,
                                "scheduling_strategy": NodeAffinitySchedulingStrategy(here, soft=True)})


def worker_class():
    """``ray.remote(Worker)``: restarted by Ray when its process dies (its units are resubmitted by the pool)."""
    global _WORKER_CLASS
    if _WORKER_CLASS is None:
        _WORKER_CLASS = ray.remote(max_restarts=-1, max_task_retries=0, max_concurrency=4)(Worker)
    return _WORKER_CLASS


def task_cause(err: RayTaskError) -> BaseException:
    try:
        return err.as_instanceof_cause()
    except Exception:  # noqa: BLE001 - an unpicklable cause: keep Ray's error
        return err


class WorkerPool:
    """``workers`` actors (``num_gpus`` each, one CPU slot each) and a progress queue; :meth:`map` runs units."""

    def __init__(self, workers: int, *, num_gpus: float = 0.0, threads: Optional[int] = None,
                 max_attempts: int = MAX_ATTEMPTS):
        cls = worker_class().options(num_cpus=1, num_gpus=num_gpus)
        self.actors = [cls.remote(threads) for _ in range(int(workers))]
        self.queue = driver_queue()
        self.max_attempts = int(max_attempts)

    def infos(self, timeout_s: float = RESTART_WAIT_S) -> list[dict]:
        """Each worker's pid, node, device and GPUs (waiting for restarting workers)."""
        return [self._ask(a, timeout_s) for a in self.actors]

    @staticmethod
    def _ask(actor, timeout_s: float):
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return ray.get(actor.info.remote(), timeout=timeout_s)
            except ActorUnavailableError:        # restarting: ask again
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def warm(self, spec: RendererSpec) -> list[float]:
        """Load ``spec`` on every worker (seconds per worker)."""
        return ray.get([a.warm.remote(spec) for a in self.actors])

    def live(self, timeout_s: float = RESTART_WAIT_S, grace_s: float = LIVE_GRACE_S) -> list:
        """The workers that answer (their cancel flag cleared): every one that answers within ``timeout_s``, but
        once one has answered the others get ``grace_s`` more (a worker whose node is gone stays pending in Ray
        and is left out). InternalError when none answers."""
        refs = {a.reset.remote(): a for a in self.actors}
        pending, alive = list(refs), set()
        deadline, first = time.monotonic() + timeout_s, None
        while pending:
            now = time.monotonic()
            limit = deadline if first is None else min(deadline, first + grace_s)
            if now >= limit:
                break
            ready, pending = ray.wait(pending, num_returns=1, timeout=limit - now)
            for ref in ready:
                try:
                    ray.get(ref)
                    alive.add(id(refs[ref]))
                    first = first or time.monotonic()
                except (RayActorError, ActorUnavailableError):
                    pass
        if not alive:
            raise InternalError("no cluster worker answers (their nodes are gone?); restart the cluster")
        return [a for a in self.actors if id(a) in alive]

    def cancel(self) -> None:
        for a in self.actors:
            a.cancel.remote()

    def drain(self) -> list[Progress]:
        try:
            return self.queue.get_nowait_batch(self.queue.qsize()) if self.queue.qsize() else []
        except Exception:  # noqa: BLE001 - an empty or closed queue
            return []

    def map(self, units: Sequence[Unit], *, on_progress: Optional[Callable[[Progress, float], None]] = None,
            should_cancel: Optional[Callable[[], bool]] = None, poll_s: float = 0.05,
            on_result: Optional[Callable[[int, Any], None]] = None, max_inflight: Optional[int] = None) -> list:
        """Results of ``units`` in their order. ``on_progress(event, fraction)``: ``fraction`` of all units'
        steps done, never decreasing (a retried unit keeps the progress it had reached). ``on_result(index,
        result)``: called as each unit finishes, which then keeps no copy (its entry in the list is None).
        ``max_inflight``: at most this many units at once (a window group's unit uses every worker). A unit
        whose window group lost a member (:class:`~engine.cluster.window_group.WindowGroupLost`) is retried like
        one whose worker died."""
        from engine.cluster.window_group import WindowGroupLost

        units = list(units)
        actors = self.live()
        todo = list(range(len(units)))
        attempts = [0] * len(units)
        best = [0.0] * len(units)
        results: list = [None] * len(units)
        idle = list(actors)
        failures = {id(a): 0 for a in actors}
        inflight: dict = {}                       # ref -> (index, actor)
        recovering: dict = {}                     # ref of a ping -> (actor, deadline): a worker Ray restarts
        fraction = 0.0
        cancelled = False
        index_of = {u.unit_id: i for i, u in enumerate(units)}
        done_units: set = set()

        def report():
            nonlocal fraction
            for ev in self.drain():
                i = index_of.get(ev.unit_id)
                if i is not None and ev.total and i not in done_units:
                    best[i] = max(best[i], min(1.0, ev.done / ev.total))
                fraction = max(fraction, sum(best) / len(units))
                if on_progress is not None:
                    on_progress(ev, fraction)

        while todo or inflight:
            if should_cancel is not None and should_cancel() and not cancelled:
                cancelled = True
                todo.clear()
                self.cancel()
            while todo and idle and (max_inflight is None or len(inflight) < max_inflight):
                i, actor = todo.pop(0), idle.pop(0)
                inflight[actor.run.remote(units[i], attempts[i], self.queue)] = (i, actor)
            if not inflight and not recovering:
                if todo:
                    raise InternalError("every cluster worker died; the run cannot go on (see the Ray logs)")
                break
            done, _ = ray.wait([*inflight, *recovering], num_returns=1, timeout=poll_s)
            report()
            for ref in [r for r in done if r in recovering]:
                actor, deadline = recovering.pop(ref)
                try:
                    ray.get(ref)
                    idle.append(actor)
                except (RayActorError, ActorUnavailableError):
                    if time.monotonic() < deadline:  # still restarting: ask again on the next round
                        recovering[actor.info.remote()] = (actor, deadline)
            done = [r for r in done if r in inflight]
            for ref in done:
                i, actor = inflight.pop(ref)
                try:
                    value = ray.get(ref)
                    best[i] = 1.0
                    failures[id(actor)] = 0
                    idle.append(actor)
                    if on_result is not None:
                        report()                       # the unit's last steps before its result
                        on_result(i, value)
                        done_units.add(i)
                    else:
                        results[i] = value
                        done_units.add(i)
                except RayTaskError as exc:              # the unit raised (the worker itself is fine)
                    cause = task_cause(exc)
                    if isinstance(cause, Cancelled):
                        cancelled = True
                        idle.append(actor)
                        continue
                    # a window-group member or another actor the unit used died: rerun it (the group re-forms)
                    if (isinstance(cause, (WindowGroupLost, RayActorError)) and not cancelled
                            and attempts[i] + 1 < self.max_attempts):
                        log.warning("cluster unit %r failed (%s); retrying it", units[i].unit_id,
                                    type(cause).__name__)
                        attempts[i] += 1
                        idle.append(actor)
                        todo.insert(0, i)
                        continue
                    self.cancel()
                    raise cause from None
                except (RayActorError, ActorDiedError, ActorUnavailableError) as exc:
                    log.warning("cluster unit %r: its worker died (%s); retrying it", units[i].unit_id,
                                type(exc).__name__)
                    attempts[i] += 1
                    failures[id(actor)] += 1
                    if attempts[i] >= self.max_attempts:
                        self.cancel()
                        raise InternalError(f"cluster unit {units[i].unit_id!r} failed {attempts[i]} times: its "
                                            f"worker died each time ({type(exc).__name__})") from None
                    if failures[id(actor)] < 2:         # Ray restarts it: more work once it answers
                        recovering[actor.info.remote()] = (actor, time.monotonic() + RESTART_WAIT_S)
                    if not cancelled:
                        todo.insert(0, i)
            fraction = max(fraction, sum(best) / len(units))
        report()
        if cancelled:
            raise Cancelled("cancelled: the cluster workers stopped at their next step")
        return results

    def close(self) -> None:
        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.actors = []
        try:
            self.queue.shutdown()
        except Exception:  # noqa: BLE001 - already gone with the cluster
            pass
