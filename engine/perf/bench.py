"""``diffusion-renderer bench``: speed, memory and FLOPs of our pipelines against the reference's call
pattern, on random-weight models of the published sizes (or tiny ones), in one run.

Cases (each timed ``repeats`` times after one warm-up call; the fastest run is reported):

| case | what runs |
|---|---|
| ``inverse_1`` / ``inverse_5`` | our inverse renderer, 1 pass / the 5 default passes in one UNet batch |
| ``forward_1`` / ``forward_2`` | our forward renderer, 1 HDRI / 2 HDRIs sampled together |
| ``ref_*`` | the same work in the reference's call pattern (:mod:`.reference_pattern`) |
| variants | ``preview`` (forward, guidance 1.0), ``channels_last``, ``full_decode`` (one decoder call for the clip), ``no_sdpa`` (classic attention), ``low_vram`` / ``minimal`` (memory modes), ``compile`` (torch.compile of the UNet) |
"""
from __future__ import annotations

import contextlib
import gc
import platform
import time

import numpy as np
import torch

from engine.perf.instrument import PeakMemory, StageClock, count_flops, device_peak_tflops
from engine.perf.models import build_components
from engine.perf.reference_pattern import reference_forward, reference_inverse

FIVE = ("basecolor", "metallic", "roughness", "normal", "depth")
VARIANTS = ("preview", "channels_last", "full_decode", "no_sdpa", "low_vram", "minimal", "compile")
DEFAULT_VARIANTS = ("preview", "channels_last", "full_decode", "no_sdpa", "low_vram")


def synthetic_hdri(seed: int, height: int = 256) -> np.ndarray:
    """A lat-long sky (gradient, ground, one sun) standing in for an HDRI: the projection and encoders
    cost the same whatever the picture."""
    rng = np.random.default_rng(seed)
    h, w = height, 2 * height
    v = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    sky = np.concatenate([0.3 + 0.7 * (1 - v), 0.4 + 0.6 * (1 - v), np.ones_like(v)], 2) * np.ones((1, w, 1), np.float32)
    sky[h // 2:] *= 0.2
    cy, cx = rng.integers(h // 8, h // 3), rng.integers(0, w)
    sky[max(0, cy - 2):cy + 3, max(0, cx - 2):cx + 3] = 500.0
    return sky.astype(np.float32)


def _inputs(frames: int, width: int, height: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    video = rng.random((frames, height, width, 3), dtype=np.float32)
    gb = {p: rng.random((frames, height, width, 3), dtype=np.float32) for p in ("basecolor", "normal", "depth",
                                                                               "roughness", "metallic")}
    return video, gb


def _clear(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _unet_flops_per_eval(renderer, fn) -> float:
    """UNet FLOPs per evaluation, counted on one extra (untimed) call of ``fn``."""
    unet = renderer.unet
    original = unet.forward
    totals = []

    def counted(*args, **kwargs):
        box = {}
        totals.append(count_flops(lambda: box.setdefault("out", original(*args, **kwargs))))
        return box["out"]

    unet.forward = counted
    try:
        fn()
    finally:
        del unet.forward
    return sum(totals) / max(1, len(totals))


def run_case(name: str, renderer, fn, device, repeats: int, flops_fn=None) -> dict:
    """Warm up once, then time ``fn`` ``repeats`` times; report the fastest run."""
    fn()
    best = None
    peak = 0
    for _ in range(max(1, repeats)):
        _clear(device)
        clock = StageClock(device).install(renderer.unet, renderer.vae, getattr(renderer, "env_encoder", None))
        try:
            with PeakMemory(device) as mem:
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        finally:
            clock.uninstall()
        peak = max(peak, mem.peak)
        if best is None or wall < best[0]:
            best = (wall, clock, cpu)
    wall, clock, cpu = best
    out = {"wall_seconds": round(wall, 4), "cpu_seconds": round(cpu, 4), "stages": clock.summary(wall), "unet_evals": clock.unet_calls,
           "unet_batch_items": clock.unet_samples, "peak_memory_gb": round(peak / 2**30, 3),
           "peak_memory_kind": "cuda_max_allocated" if device.type == "cuda" else "process_rss"}
    if flops_fn is not None:
        per_eval = _unet_flops_per_eval(renderer, flops_fn)
        total = per_eval * clock.unet_calls
        out["unet_flops"] = total
        unet_s = clock.seconds.get("unet", 0.0)
        out["unet_tflops_per_s"] = round(total / unet_s / 1e12, 4) if unet_s else None
    return out


@contextlib.contextmanager
def _classic_attention(unet):
    """Swap SDPA for diffusers' classic processor (materialised attention scores; the exact context
    shortcuts stay), then restore."""
    from diffusers.models.attention_processor import AttnProcessor

    from engine.pipelines.zero_context import ZeroContextSkip

    saved = unet.attn_processors
    unet.set_attn_processor({k: ZeroContextSkip(AttnProcessor()) if isinstance(p, ZeroContextSkip) else AttnProcessor()
                             for k, p in saved.items()})
    try:
        yield
    finally:
        unet.set_attn_processor(saved)


def set_channels_last(module: torch.nn.Module, on: bool = True) -> None:
    """Convolution weights in channels-last (NHWC) layout, or back to contiguous."""
    fmt = torch.channels_last if on else torch.contiguous_format
    for m in module.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.weight.data = m.weight.data.contiguous(memory_format=fmt)


def _attention_kinds(unet) -> list[str]:
    def name(p):
        inner = getattr(p, "inner", None)
        return f"{type(p).__name__}({type(inner).__name__})" if inner is not None else type(p).__name__

    return sorted({name(p) for p in unet.attn_processors.values()})
