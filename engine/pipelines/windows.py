"""Long clips: overlapping temporal windows, blended so neighbouring chunks agree.

The models see ``window`` frames at a time (24 in the reference). A longer clip is covered by windows
of exactly that length (the last one aligned to the clip's end, so no padding frame is ever made)
that overlap by ``overlap`` frames. Blend modes:

- ``"latent"`` (default): all windows are denoised *together*; at every step each window's model
  output is computed and, per frame, the outputs of the windows covering it are averaged with
  weights that ramp linearly across the overlap (MultiDiffusion-style fusion). Since the Euler step is
  linear in the model output, this equals fusing the windows' latents at every step, so the chunks
  agree where they meet.
- ``"crossfade"``: windows are sampled independently (each from its slice of the clip's noise) and the
  decoded frames are cross-faded over the overlap with the same ramps.
- ``"none"``: independent windows, hard cut in the middle of each overlap (the reference's behaviour,
  kept for comparison).

A clip no longer than one window is a single window: identical to the reference.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

BLEND_MODES = ("latent", "crossfade", "none")


def plan_windows(total: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """Windows ``[(start, end), ...]`` of length ``min(window, total)`` covering ``range(total)``."""
    if total < 1:
        raise ValueError("a clip needs at least one frame")
    if window < 1:
        raise ValueError(f"window (frames per chunk) must be at least 1, got {window}")
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be between 0 and frames per chunk − 1 ({window - 1}), got {overlap}")
    if total <= window:
        return [(0, total)]
    stride = window - overlap
    starts = list(range(0, total - window + 1, stride))
    if starts[-1] + window < total:
        starts.append(total - window)
    return [(s, s + window) for s in starts]


def window_weights(plan: Sequence[tuple[int, int]], total: int, mode: str = "ramp") -> list[torch.Tensor]:
    """Per-window frame weights (each (len,)) summing to 1 per frame.

    ``ramp``: linear ramps across every overlap; ``hard``: each frame from one window, the cut in the
    middle of the overlap."""
    raw = []
    if mode == "hard":
        cuts = [0, *chunk_boundaries(plan), total]
        for i, (s, e) in enumerate(plan):
            w = torch.zeros(e - s, dtype=torch.float64)
            w[cuts[i] - s:cuts[i + 1] - s] = 1.0
            raw.append(w)
    else:
        for i, (s, e) in enumerate(plan):
            w = torch.ones(e - s, dtype=torch.float64)
            if i > 0 and plan[i - 1][1] > s:  # overlap with the previous window
                ov = plan[i - 1][1] - s
                w[:ov] = torch.arange(1, ov + 1, dtype=torch.float64) / (ov + 1)
            if i + 1 < len(plan) and e > plan[i + 1][0]:  # overlap with the next window
                ov = e - plan[i + 1][0]
                w[-ov:] = torch.minimum(w[-ov:], torch.arange(ov, 0, -1, dtype=torch.float64) / (ov + 1))
            raw.append(w)
    norm = torch.zeros(total, dtype=torch.float64)
    for (s, e), w in zip(plan, raw):
        norm[s:e] += w
    if (norm <= 0).any():
        raise AssertionError("window weights leave a frame uncovered")
    return [(w / norm[s:e]).float() for (s, e), w in zip(plan, raw)]


def blend(parts: Sequence[torch.Tensor], plan, weights, frame_dim: int = 1) -> torch.Tensor:
    """Weighted sum of per-window tensors into one clip tensor along ``frame_dim``."""
    total = plan[-1][1]
    shape = list(parts[0].shape)
    shape[frame_dim] = total
    out = torch.zeros(shape, dtype=parts[0].dtype, device=parts[0].device)
    for (s, e), part, w in zip(plan, parts, weights):
        view = [1] * len(shape)
        view[frame_dim] = e - s
        out.narrow(frame_dim, s, e - s).add_(part * w.to(part.device, part.dtype).view(view))
    return out


def fused_model_fn(window_fn: Callable[[torch.Tensor, torch.Tensor, int, int], torch.Tensor], plan, weights):
    """Model function over the whole clip's latents (B, F, C, h, w) that evaluates ``window_fn(x, t, s, e)``
    on every window and blends the outputs per frame (latent fusion at every step)."""
    if len(plan) == 1:
        s, e = plan[0]
        return lambda x, t: window_fn(x, t, s, e)

    def model_fn(x, t):
        return blend([window_fn(x[:, s:e], t, s, e) for s, e in plan], plan, weights)

    return model_fn


def seam_metric(video: torch.Tensor, boundaries: Sequence[int]) -> float:
    """Mean frame-to-frame change across chunk boundaries ÷ median change within chunks.

    video (F, H, W, C); ``boundaries`` are the first frames of every chunk after the first. 1.0 means
    a boundary looks like any other frame step; the reference's unblended chunks score well above."""
    v = torch.as_tensor(video, dtype=torch.float64)
    diffs = (v[1:] - v[:-1]).abs().flatten(1).mean(1)        # diffs[i] = |f[i+1] - f[i]|
    at = [b - 1 for b in boundaries if 0 < b < v.shape[0]]
    if not at:
        return float("nan")
    inside = [d for i, d in enumerate(diffs.tolist()) if i not in set(at)]
    base = torch.tensor(inside).median().item() if inside else float("nan")
    return float(diffs[at].mean().item() / max(base, 1e-12))


def chunk_boundaries(plan) -> list[int]:
    """First frame taken from each later window when cutting in the middle of the overlaps."""
    bounds = []
    for (s0, e0), (s1, _) in zip(plan, plan[1:]):
        ov = e0 - s1
        bounds.append(s1 + ov // 2 + ov % 2 if ov > 0 else s1)
    return bounds


def sample_clip(scheduler_factory, num_steps: int, noise: torch.Tensor, window_fn, plan, mode: str = "latent", *,
                callback=None, should_cancel=None):
    """Denoise a whole clip covered by ``plan``. Returns ``("clip", latents)`` for latent fusion or a
    single window, else ``("windows", [latents per window])`` (decode each, then blend frames)."""
    from engine.pipelines.sampling import denoise

    if mode not in BLEND_MODES:
        raise ValueError(f"blend mode must be one of {', '.join(BLEND_MODES)}, not {mode!r}")
    if len(plan) == 1 or mode == "latent":
        fn = fused_model_fn(window_fn, plan, window_weights(plan, plan[-1][1]))
        return "clip", denoise(scheduler_factory(), num_steps, noise, fn, callback=callback,
                               should_cancel=should_cancel)
    parts = []
    for s, e in plan:
        parts.append(denoise(scheduler_factory(), num_steps, noise[:, s:e].contiguous(),
                             lambda x, t, s=s, e=e: window_fn(x, t, s, e), callback=callback,
                             should_cancel=should_cancel))
    return "windows", parts


def decode_clip(decode, result, plan, mode: str = "latent") -> torch.Tensor:
    """Decode ``sample_clip``'s result with ``decode(latents) -> frames (B, F, H, W, 3)``; independent
    windows are cross-faded (ramps) or hard-cut (``mode="none"``)."""
    kind, value = result
    if kind == "clip":
        return decode(value)
    weights = window_weights(plan, plan[-1][1], "hard" if mode == "none" else "ramp")
    return blend([decode(v) for v in value], plan, weights)
