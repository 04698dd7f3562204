"""Seam metric of a written set: how much more frames change across chunk boundaries than inside chunks.

`diffusion-renderer seams SET --frames 24 --overlap 6` reads a G-buffer or relit set and reports, per
pass, ``seam_metric`` (engine.pipelines.windows) at the boundaries a job with those window settings
has: the hard cuts between independent windows (``--blend none``), i.e. where unblended chunks jump.
1.0 means a boundary step looks like any other frame step.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def seam_report(folder, frames: int = 24, overlap: int = 6, passes=None) -> dict:
    from engine.gbuffer import display_frames, open_gbuffer_set
    from engine.pipelines.windows import chunk_boundaries, plan_windows, seam_metric

    gset = open_gbuffer_set(Path(folder))
    n = len(gset.frame_numbers)
    plan = plan_windows(n, frames, overlap)
    bounds = chunk_boundaries(plan)
    out = {"frames": n, "windows": len(plan), "boundaries": bounds, "passes": {}}
    for name in passes or [p for p in gset.passes if p not in ("rgb", "alpha")]:
        video = np.stack(list(display_frames(gset, name)))
        out["passes"][name] = seam_metric(video, bounds) if bounds else None
    return out
