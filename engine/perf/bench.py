"""``diffusion-renderer bench``: speed, memory and FLOPs of our pipelines against the reference's call
pattern, on random-weight models of the published sizes (or tiny ones), in one run.

Cases (each timed ``repeats`` times after one warm-up call; the fastest run is reported):

| case | what runs |
|---|---|
| ``inverse_1`` / ``inverse_5`` | our inverse renderer, 1 pass / the 5 default passes in one UNet batch |
| ``forward_1`` / ``forward_2`` | our forward renderer, 1 HDRI / 2 HDRIs sampled together |
| ``ref_*`` | the same work in the reference's call pattern (:mod:`.reference_pattern`) |
| ``bench --preview`` | :func:`run_preview_bench`: the live preview's update after a rotation vs its denoising loop |
| variants | ``preview`` (forward, guidance 1.0), ``channels_last``, ``full_decode`` (one decoder call for the clip), ``no_sdpa`` (classic attention), ``temporal_conv`` (temporal convolutions in the device's non-default form), ``low_vram`` / ``minimal`` (memory modes), ``compile`` (torch.compile of the UNet) |
"""
from __future__ import annotations

import contextlib
import gc
import platform
import time

import numpy as np
import torch

from engine.contract.gbuffer_set import DEFAULT_PASSES, FORWARD_PASSES
from engine.perf.instrument import PeakMemory, StageClock, count_flops, device_peak_tflops
from engine.pipelines.random_components import build_components
from engine.perf.reference_pattern import reference_forward, reference_inverse

FIVE = DEFAULT_PASSES          # the inverse job's default passes
VARIANTS = ("preview", "channels_last", "full_decode", "no_sdpa", "temporal_conv", "low_vram", "minimal", "compile")
DEFAULT_VARIANTS = ("preview", "channels_last", "full_decode", "no_sdpa", "temporal_conv", "low_vram")


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
    gb = {p: rng.random((frames, height, width, 3), dtype=np.float32) for p in FORWARD_PASSES}
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
    walls = []
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
        walls.append(wall)
        if best is None or wall < best[0]:
            best = (wall, clock, cpu)
    wall, clock, cpu = best
    out = {"wall_seconds": round(wall, 4), "wall_seconds_runs": [round(w, 4) for w in walls],
           "wall_spread": round(max(walls) / wall - 1.0, 4), "cpu_seconds": round(cpu, 4), "stages": clock.summary(wall), "unet_evals": clock.unet_calls,
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


@contextlib.contextmanager
def _other_temporal_conv(renderer):
    """The temporal convolutions in the state the device does *not* use by default (stock Conv3d where
    they are folded into Conv2d, and the other way round); yields the case suffix."""
    from engine.models.temporal_conv import fold_temporal_convs, unfold_temporal_convs

    mods = (renderer.unet, renderer.vae)
    if unfold_temporal_convs(*mods):
        try:
            yield "stock_conv3d"
        finally:
            fold_temporal_convs(*mods)
    else:
        fold_temporal_convs(*mods)
        try:
            yield "conv3d_as_conv2d"
        finally:
            unfold_temporal_convs(*mods)


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


def run_bench(*, size: str = "full", width: int = 512, height: int = 512, frames: int = 24, steps: int = 20,
              device=None, dtype=None, repeats: int = 1, variants=DEFAULT_VARIANTS, reference: bool = True,
              flops: bool = True, env_resolution=None, log=print) -> dict:
    """Run the benchmark; returns one JSON-able dict (see docs/PERFORMANCE.md for the keys)."""
    from engine.pipelines import EnvLight, ForwardRenderer, InverseRenderer
    from engine.pipelines.components import pick_device, pick_dtype

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    env_res = tuple(env_resolution) if env_resolution else ((512, 512) if size == "full" else (height, width))
    video, gb = _inputs(frames, width, height)
    hdrs = [synthetic_hdri(1), synthetic_hdri(2)]
    peak, peak_src = device_peak_tflops(dev, dt)
    report = {"size": size, "resolution": [width, height], "frames": frames, "steps": steps,
              "env_resolution": list(env_res), "device": str(dev),
              "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
              "dtype": str(dt).replace("torch.", ""), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "repeats": repeats, "peak_tflops": peak, "peak_source": peak_src, "cases": {}}
    cases = report["cases"]
    kw = {"num_inference_steps": steps, "seed": 0, "decode_chunk_size": 8}

    def case(name, renderer, fn, one_step_fn=None):
        log(f"  {name} …")
        cases[name] = run_case(name, renderer, fn, dev, repeats, one_step_fn if flops else None)
        log(f"  {name}: {cases[name]['wall_seconds']:.3f} s")

    # ---------------------------------------------------------------- inverse
    t0 = time.perf_counter()
    inv = InverseRenderer(build_components("inverse", size, device=dev, dtype=dt))
    report["load_seconds"] = {"inverse": round(time.perf_counter() - t0, 2)}
    report["attention"] = _attention_kinds(inv.unet)
    one = {**kw, "num_inference_steps": 1}
    case("inverse_1", inv, lambda: inv(video, passes=FIVE[:1], **kw), lambda: inv(video, passes=FIVE[:1], **one))
    case("inverse_5", inv, lambda: inv(video, passes=FIVE, **kw), lambda: inv(video, passes=FIVE, **one))
    if reference:
        case("ref_inverse_1", inv, lambda: reference_inverse(inv, video, FIVE[:1], **kw))
        case("ref_inverse_5", inv, lambda: reference_inverse(inv, video, FIVE, **kw))
    if "full_decode" in variants:
        case("inverse_5_full_decode", inv, lambda: inv(video, passes=FIVE, **{**kw, "decode_chunk_size": frames}))
    if "no_sdpa" in variants:
        with _classic_attention(inv.unet):
            case("inverse_1_no_sdpa", inv, lambda: inv(video, passes=FIVE[:1], **kw))
    if "temporal_conv" in variants:
        with _other_temporal_conv(inv) as suffix:
            case(f"inverse_1_{suffix}", inv, lambda: inv(video, passes=FIVE[:1], **kw))
    if "channels_last" in variants:
        set_channels_last(inv.unet)
        case("inverse_1_channels_last", inv, lambda: inv(video, passes=FIVE[:1], **kw))
        set_channels_last(inv.unet, False)
    inv = None  # free the model before the next one is built
    _clear(dev)

    # ---------------------------------------------------------------- forward
    def fwd_call(r, lights, **extra):
        return r(gb, [EnvLight(h) for h in lights], env_resolution=env_res, **{**kw, **extra})

    t0 = time.perf_counter()
    fwd = ForwardRenderer(build_components("forward", size, device=dev, dtype=dt))
    report["load_seconds"]["forward"] = round(time.perf_counter() - t0, 2)
    case("forward_1", fwd, lambda: fwd_call(fwd, hdrs[:1]), lambda: fwd_call(fwd, hdrs[:1], num_inference_steps=1))
    case("forward_2", fwd, lambda: fwd_call(fwd, hdrs), lambda: fwd_call(fwd, hdrs, num_inference_steps=1))
    if reference:
        ref_kw = {"num_inference_steps": steps, "env_resolution": env_res}
        case("ref_forward_1", fwd, lambda: reference_forward(fwd, gb, hdrs[:1], **ref_kw))
        case("ref_forward_2", fwd, lambda: reference_forward(fwd, gb, hdrs, **ref_kw))
    if "preview" in variants:
        case("forward_1_preview", fwd, lambda: fwd_call(fwd, hdrs[:1], guidance_scale=1.0))
    if "temporal_conv" in variants:
        with _other_temporal_conv(fwd) as suffix:
            case(f"forward_1_{suffix}", fwd, lambda: fwd_call(fwd, hdrs[:1]))
    if "channels_last" in variants:
        set_channels_last(fwd.unet)
        case("forward_1_channels_last", fwd, lambda: fwd_call(fwd, hdrs[:1]))
        set_channels_last(fwd.unet, False)
    if "compile" in variants:
        compiled, eager = torch.compile(fwd.unet), fwd.unet
        fwd.unet = compiled
        try:
            t0 = time.perf_counter()
            fwd_call(fwd, hdrs[:1], num_inference_steps=1)
            report["compile_seconds"] = round(time.perf_counter() - t0, 2)
            case("forward_1_compile", fwd, lambda: fwd_call(fwd, hdrs[:1]))
        finally:
            fwd.unet = eager
    fwd = None
    _clear(dev)
    for mode in ("low_vram", "minimal"):
        if mode not in variants:
            continue
        r = ForwardRenderer(build_components("forward", size, device=dev, dtype=dt))
        plan = r.enable_memory_mode(mode.replace("_", "-"))
        extra = {"decode_chunk_size": plan.decode_chunk or 8, "decode_overlap": plan.decode_overlap or 0}
        case(f"forward_1_{mode}", r, lambda: fwd_call(r, hdrs[:1], **extra))
        r = None
        _clear(dev)
    _ratios(report)
    return report


def _ratios(report: dict) -> None:
    c = report["cases"]

    def ratio(a, b):
        return round(c[a]["wall_seconds"] / c[b]["wall_seconds"], 3) if a in c and b in c else None

    report["forward_over_inverse"] = ratio("forward_1", "inverse_1")
    report["batched_speedup_5_passes"] = ratio("ref_inverse_5", "inverse_5")
    report["reference_forward_over_inverse"] = ratio("ref_forward_1", "ref_inverse_1")
    report["speedups"] = {k: ratio(f"ref_{k}", k) for k in ("inverse_1", "inverse_5", "forward_1", "forward_2")
                          if f"ref_{k}" in c}
    report["five_passes_over_one"] = ratio("inverse_5", "inverse_1")
    report["two_hdris_over_one"] = ratio("forward_2", "forward_1")
    for v in c.values():
        if report.get("peak_tflops") and v.get("unet_tflops_per_s"):
            v["unet_utilisation"] = round(v["unet_tflops_per_s"] / report["peak_tflops"], 4)


# ---------------------------------------------------------------- the live preview (bench --preview)
def run_preview_bench(*, size: str = "full", width: int = 384, height: int = 256, frames: int = 8, steps: int = 8,
                      device=None, dtype=None, repeats: int = 3, env_resolution=None, log=print) -> dict:
    """Seconds per live-preview update (engine/jobs/preview_job.py), warm, after a rotation of the light,
    against the denoising loop alone inside the same update. A synthetic G-buffer set of ``frames`` frames
    at ``width``×``height`` and a synthetic HDRI are written to a temporary folder; the first preview fills
    the caches (reported as ``first_s``), then each of ``repeats`` updates turns the light by 15°."""
    import tempfile
    from pathlib import Path

    from engine.envmap import write_hdr
    from engine.gbuffer import GBufferSetWriter, make_provenance
    from engine.jobs.preview_job import Previewer
    from engine.pipelines import ForwardRenderer
    from engine.pipelines.components import pick_device, pick_dtype

    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    env_res = tuple(env_resolution) if env_resolution else ((512, 512) if size == "full" else (height, width))
    renderer = ForwardRenderer(build_components("forward", size, device=dev, dtype=dt))
    _, gb = _inputs(frames, width, height)
    params = {"preview_size": f"{width}x{height}", "preview_frames": frames, "frames": max(frames, 1), "steps": steps,
              "env_resolution": f"{env_res[1]}x{env_res[0]}", "overlap": 0}
    report = {"size": size, "resolution": [width, height], "frames": frames, "steps": steps,
              "env_resolution": list(env_res), "device": str(dev), "dtype": str(dt).replace("torch.", ""),
              "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
              "threads": torch.get_num_threads(), "torch": torch.__version__, "repeats": repeats}
    with tempfile.TemporaryDirectory(prefix="dr-bench-preview-") as tmp:
        root = Path(tmp)
        w = GBufferSetWriter(root / "set", {"fps": 24, "depth": {"kind": "normalised"},
                                            "provenance": make_provenance("bench", source="synthetic")})
        for i in range(frames):
            for p in FORWARD_PASSES:
                value = {"normal": gb[p][i] * 2 - 1}.get(p, gb[p][i])
                w.write_frame(p, i + 1, value if p in ("basecolor", "normal") else value[..., 0])
        w.finish()
        write_hdr(root / "sky.hdr", synthetic_hdri(1))
        previewer = Previewer(lambda settings: renderer)
        frame = (frames + 1) // 2

        def update(rotation: float) -> dict:
            _clear(dev)
            out = previewer.preview(root / "set", root / "sky.hdr", frame, root / "p.exr",
                                    {**params, "env_rotation": rotation})
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            return out

        log("  preview (first: fills the caches) …")
        first = update(0.0)
        runs = []
        for k in range(max(1, repeats)):
            runs.append(update(15.0 * (k + 1)))
            log(f"  preview after a rotation: {runs[-1]['latency_s']:.3f} s (denoise "
                f"{runs[-1]['seconds']['denoise']:.3f} s)")
    best = min(runs, key=lambda r: r["latency_s"])
    report.update(first_s=first["latency_s"], update_s=best["latency_s"], denoise_s=best["seconds"]["denoise"],
                  update_over_denoise=round(best["latency_s"] / max(best["seconds"]["denoise"], 1e-9), 3),
                  stages=best["seconds"], cached=best["cached"],
                  updates=[{"latency_s": r["latency_s"], "denoise_s": r["seconds"]["denoise"]} for r in runs])
    return report
