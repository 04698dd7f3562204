"""Segments computed apart from the job's own loop: on a cluster (``--cluster``), or only some of them
(``--only-segments``, a render-farm task).

Both fill the clips' resume caches (engine/jobs/common.py ResumeCache); the job's loop then finds the
segments there, blends them and writes the outputs (``--only-segments`` stops before: no outputs). Ray is
imported only when a cluster is asked for."""
from __future__ import annotations

import logging
import secrets
from dataclasses import replace
from typing import Callable, Optional

from engine.jobs.common import JobError, Progress, ResumeCache, check_writable
from engine.jobs.units import ClipPlan, LocalContext, compute_segment, up_to_date

log = logging.getLogger(__name__)


def check_run_settings(settings, cluster=None) -> None:
    """``--split`` needs a cluster; ``--only-segments`` indices are whole numbers ≥ 0."""
    if getattr(settings, "split", "auto") != "auto" and not (settings.cluster or cluster is not None):
        raise JobError(f"--split {settings.split} needs --cluster (local[:N], auto or a Ray head's HOST:PORT); "
                       "without a cluster a job runs in this process")


def open_runner(settings, cluster=None):
    """``(runner, owned)``: the cluster given (the server's), one started for ``settings.cluster``, or None."""
    check_run_settings(settings, cluster)
    if cluster is not None:
        return cluster, False
    if not getattr(settings, "cluster", None):
        return None, False
    from engine.cluster.job_runner import ClusterRunner

    return ClusterRunner(settings.cluster), True


def fixed_seed(settings):
    """A random seed (``--seed -1``) drawn once for the whole job, so every process planning it agrees."""
    return settings if settings.seed is not None else replace(settings, seed=secrets.randbelow(2**31))


def selected(plan: ClipPlan, only) -> list[int]:
    """The segment indices of ``plan`` to compute: all, or those of ``only`` (``--only-segments``) it has."""
    if only is None:
        return list(range(len(plan.segments)))
    return [k for k in sorted(set(only)) if 0 <= k < len(plan.segments)]


def check_only(plans: list[ClipPlan], only) -> None:
    if only is None or not plans:
        return
    most = max(len(p.segments) for p in plans)
    bad = [k for k in only if not 0 <= k < most]
    if bad:
        raise JobError(f"--only-segments {','.join(map(str, bad))}: the clip has segments 0..{most - 1} (see "
                       "`diffusion-renderer plan … --json`)")


def missing(plan: ClipPlan, cache: ResumeCache, only) -> list[int]:
    return [k for k in selected(plan, only) if cache.get(plan.segment_name(k)) is None]


def compute_locally(plan: ClipPlan, renderer, source, cache: ResumeCache, only, *, listener=None,
                    should_cancel: Optional[Callable[[], bool]] = None, show_progress: bool = True) -> int:
    """``--only-segments`` without a cluster: compute the listed segments the cache lacks into it. Returns how
    many were computed."""
    todo = missing(plan, cache, only)
    progress = Progress(sum(plan.segment_steps(k) for k in todo), f"{plan.kind} {plan.unit_label} segments",
                        listener, show_progress)
    for k in todo:
        cache.put(plan.segment_name(k), compute_segment(renderer, LocalContext(progress, k, should_cancel), plan, k,
                                                        source=source))
        log.info("segment %d/%d of %s cached", k + 1, len(plan.segments), plan.unit_label)
    progress.stage("write")
    progress.close()
    return len(todo)


def compute_on_cluster(runner, kind: str, plans: list[ClipPlan], only=None, *, listener=None,
                       should_cancel: Optional[Callable[[], bool]] = None, show_progress: bool = True,
                       split: str = "auto") -> dict:
    """Compute every segment of ``plans`` (those of ``only``) that their caches lack on ``runner``'s workers;
    each result goes into its plan's resume cache as it arrives. Returns the summary's ``cluster`` entry."""
    caches, work = {}, []
    for plan in plans:
        if up_to_date(plan.out, plan.key):
            continue
        check_writable(plan.out)
        cache = caches[plan.key] = ResumeCache(plan.out, plan.key)
        work += [(plan, k) for k in missing(plan, cache, only)]
    total = sum(p.segment_steps(k) for p, k in work)
    progress = Progress(total, f"{kind} on {runner.workers} workers", listener, show_progress,
                        extra={"workers": runner.workers})
    done_units = [0]

    def on_progress(fraction: float) -> None:
        target = min(total, int(round(fraction * total)))
        if target > progress.done:
            progress.step("denoise", n=target - progress.done)

    def on_result(plan: ClipPlan, k: int, result: dict) -> None:
        caches[plan.key].put(plan.segment_name(k), result)
        done_units[0] += 1
        log.info("cluster: segment %d/%d of %s cached (%d/%d units)", k + 1, len(plan.segments), plan.unit_label,
                 done_units[0], len(work))

    used = runner.compute(kind, work, on_result, split=split, on_progress=on_progress, should_cancel=should_cancel,
                          on_event=getattr(runner, "event_hook", None))
    if progress.done < total:
        progress.step("denoise", n=total - progress.done)
    progress.close()
    computed: dict = {}
    for plan, _ in work:
        computed[plan.key] = computed.get(plan.key, 0) + 1
    return {"spec": runner.spec, "workers": runner.workers, "split": used, "units": len(work), "computed": computed,
            **{k: v for k, v in runner.stats.items() if k.endswith("_s")}}
