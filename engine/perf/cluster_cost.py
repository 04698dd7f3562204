"""Predicted time of a job on N GPUs (``estimate --gpus N``): the one-GPU estimate of the traced cost model
(:func:`engine.perf.cost_model.estimate`) cut into the units the cluster schedules (docs/CLUSTER.md), those
units placed on N workers, plus the cluster's start-up.

* **units** — one per (clip × HDRI) job × segment (``engine.jobs.segments.plan_segments``). A unit's time is
  its share of the job's UNet time (by its windows) plus its share of the encode/decode time (by its
  frames), plus a small per-unit overhead (dispatch, the driver's resume-cache write).
* ``--split segments`` — the units are handed out in order to whichever worker is free (``WorkerPool.map``):
  the time is the list schedule's makespan.
* ``--split windows`` — the units run one after the other, each segment's windows split over a group of
  ``min(N, windows)`` workers in contiguous runs (``window_group.make_layout``): the UNet part shrinks to the
  busiest rank's windows, plus the per-step exchange of the overlap frames' model outputs (latency + the
  bytes both ways); encoding and decoding are not split.
* ``auto`` — the faster of the two (the prediction says which).
* **start-up** — Ray's start, the worker processes (import torch + diffusers) and each worker's model load,
  the workers in parallel: paid once per run.

One GPU is the plain job (no cluster, no start-up): exactly :func:`estimate`'s number.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import asdict, dataclass

SPLITS = ("segments", "windows", "auto")
LATENT_CHANNELS = 4
LATENT_FACTOR = 8          # the VAE's spatial factor (512² frames → 64² latents)


@dataclass(frozen=True)
class ClusterCosts:
    """Cluster overheads. Measured on the CPU where noted (docs/CLUSTER.md); the rest are assumptions."""
    ray_init_s: float = 2.2              # connect("local:N"): ray.init on an idle machine (measured)
    actor_start_s: float = 19.0          # worker processes up, torch + diffusers imported (measured, under load)
    load_gb_per_s: float = 2.0           # each worker reads the weights (NVMe / page cache; assumed)
    unit_overhead_s: float = 0.05        # per unit: dispatch, result to the driver, resume-cache write (assumed)
    exchange_latency_s: float = 1.5e-3   # per step and rank (gloo on the CPU measured 0.35–1.5 ms)
    exchange_gb_per_s: float = 10.0      # overlap outputs between ranks (NCCL over PCIe / 100 Gb network; assumed)


def _makespan(durations: list[float], workers: int) -> float:
    """Units handed out in order to the first free worker (the pool's queue)."""
    free = [0.0] * max(1, workers)
    for d in durations:
        heapq.heapreplace(free, free[0] + d)
    return max(free)


def cluster_estimate(one: dict, *, frames: int, window: int, overlap: int, windows_per_segment: int, steps: int,
                     jobs: int = 1, exchange_items: int = 1, latent_hw: tuple[int, int] = (64, 64), gpus: int = 2,
                     split: str = "auto", costs: ClusterCosts | None = None) -> dict:
    """``one``: the cost model's estimate of ONE (clip × HDRI) job (with ``seconds_by_part``); ``jobs`` such
    jobs (forward: the HDRIs). ``exchange_items``: model outputs per overlap frame exchanged each step (the
    passes of a UNet batch; 1 forward). Returns the prediction for ``gpus`` workers."""
    from engine.jobs.segments import plan_segments
    from engine.pipelines.windows import plan_windows

    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    if gpus < 1:
        raise ValueError(f"gpus must be at least 1, not {gpus}")
    costs = costs or ClusterCosts()
    window = min(window, frames)
    overlap = min(overlap, max(0, window - 1))
    segments = plan_segments(frames, window, overlap, windows_per_segment)
    seg_windows = [len(plan_windows(e - s, window, overlap)) for s, e in segments]
    seg_frames = [e - s for s, e in segments]
    parts = one["seconds_by_part"]
    unet, other = parts["unet"], parts["encode_decode"] + parts.get("transfer", 0.0)
    unet_of = [unet * w / sum(seg_windows) for w in seg_windows]
    other_of = [other * f / sum(seg_frames) for f in seg_frames]
    groups = max(1, round(one["unet_evals"] / max(1, steps * one["windows"])))   # UNet batches per step

    by_segments = _makespan([u + o + costs.unit_overhead_s for u, o in zip(unet_of, other_of)] * jobs, gpus)
    boundary_bytes = overlap * LATENT_CHANNELS * latent_hw[0] * latent_hw[1] * 4 * exchange_items   # fp32 outputs
    by_windows = 0.0
    for u, o, w in zip(unet_of, other_of, seg_windows):
        g = min(gpus, w)
        exchange = 0.0
        if g > 1:
            exchange = steps * groups * (costs.exchange_latency_s + 2 * boundary_bytes / (costs.exchange_gb_per_s * 1e9))
        by_windows += u * math.ceil(w / g) / w + exchange + o + costs.unit_overhead_s
    by_windows *= jobs
    chosen = split if split != "auto" else ("segments" if by_segments <= by_windows else "windows")
    compute = by_segments if chosen == "segments" else by_windows
    startup = costs.ray_init_s + costs.actor_start_s + one["weights_gb"] * 2**30 / 1e9 / costs.load_gb_per_s
    single = one["seconds"] * jobs
    total = startup + compute
    return {"gpus": gpus, "split": chosen, "units": len(segments) * jobs, "segments": len(segments),
            "windows_per_segment": seg_windows, "startup_s": round(startup, 2), "compute_s": round(compute, 2),
            "seconds": round(total, 2), "seconds_one_gpu": round(single, 2),
            "speedup": round(single / total, 2), "efficiency": round(single / total / gpus, 3),
            "by_split": {"segments": round(by_segments, 2), "windows": round(by_windows, 2)},
            "exchange_mb_per_boundary_step": round(boundary_bytes / 1e6, 3), "costs": asdict(costs)}
