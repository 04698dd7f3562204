"""Segments: the resumable units of a long job.

A clip is covered by model windows (``engine.pipelines.windows``); consecutive windows are grouped
into segments of ``windows_per_segment`` windows. Inside a segment the windows are fused at every
denoising step; neighbouring segments share the frames of their boundary windows' overlap and are
cross-faded there. Each finished segment is cached (``ResumeCache``, in the precision it is computed in and
verified at load), so an interrupted job resumes where it stopped with a result bit-identical to an
uninterrupted run, and frames are written as soon as every segment covering them is done, so memory
does not grow with the clip length.
"""
from __future__ import annotations

from typing import Callable, Iterator, Optional

import numpy as np

from engine.pipelines.windows import plan_windows, window_weights


def plan_segments(total: int, window: int, overlap: int, windows_per_segment: int) -> list[tuple[int, int]]:
    plan = plan_windows(total, window, overlap)
    k = max(1, int(windows_per_segment))
    return [(plan[i][0], plan[min(i + k, len(plan)) - 1][1]) for i in range(0, len(plan), k)]


def run_segments(segments: list[tuple[int, int]], compute: Callable[[int, int, int], dict],
                 cache, cache_prefix: str = "seg") -> Iterator[tuple[int, dict]]:
    """Yield ``(frame_index, {name: frame})`` in order, each frame once, blending segment overlaps.

    ``compute(k, start, end)`` returns ``{name: array (end-start, ...)}`` for segment k; results are
    taken from / stored in ``cache`` (None: no caching)."""
    total = segments[-1][1]
    weights = window_weights(segments, total, "ramp")
    acc: dict[int, dict] = {}
    for k, (s, e) in enumerate(segments):
        name = f"{cache_prefix}_{k:04d}"
        result = cache.get(name) if cache is not None else None
        if result is not None and any(len(v) != e - s for v in result.values()):
            result = None                          # an entry of another segmentation: recomputed
        if result is None:
            result = compute(k, s, e)
            if cache is not None:
                cache.put(name, result)
        w = weights[k].numpy()
        for i in range(e - s):
            f = s + i
            slot = acc.setdefault(f, {})
            for key, arr in result.items():
                val = np.asarray(arr[i], dtype=np.float32) * w[i]
                slot[key] = slot[key] + val if key in slot else val
        final_until = segments[k + 1][0] if k + 1 < len(segments) else total
        for f in sorted(list(acc)):
            if f < final_until:
                yield f, acc.pop(f)


def noise_for(total_shape: tuple, seed: Optional[int]):
    """The whole clip's noise (every segment takes its slice, so segments agree with one long run)."""
    from engine.pipelines.sampling import initial_noise

    return initial_noise(total_shape, seed)
