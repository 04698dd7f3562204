"""Predict a job's time and peak device memory from its size, before running it.

FLOPs and activation memory are *traced*, not guessed: the full-size models are built on the meta
device and each distinct call of the job (UNet batch per window, VAE encode/decode chunks, EnvEncoder)
is traced once by :mod:`.meta_trace` (≈ 1–5 s the first time for a shape, cached afterwards). Time
then comes from the device's *throughput profile*:

    seconds = UNet FLOPs / unet_tflops + VAE & EnvEncoder FLOPs / vae_tflops
              + UNet evaluations × step_overhead_s + frames × env pixels × envmap_s_per_mpx

``diffusion-renderer bench`` measures those rates on the machine and saves them
(:func:`save_profile`); without a saved profile the defaults below are used (a fraction of the
card's published peak, or of a measured matmul on a CPU). Peak memory = the weights resident in the
memory mode + the largest traced activation peak + 8 % allocator margin (CUDA context not included).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import torch

GBUFFERS = 5
PCIE_BYTES_PER_S = 16e9


@dataclass
class Profile:
    device: str
    unet_tflops: float
    vae_tflops: float
    step_overhead_s: float
    envmap_s_per_mpx: float
    source: str = "default"


def profile_path(device_key: str) -> Path:
    from engine.user_cache import user_cache_dir

    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in device_key)
    return user_cache_dir() / "perf" / f"{safe}.json"


def device_key(device, dtype) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device) if torch.cuda.is_available() else "cuda"
    else:
        name = "cpu"
    return f"{name}-{str(dtype).replace('torch.', '')}"


def default_profile(device, dtype) -> Profile:
    from engine.perf.instrument import device_peak_tflops

    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():   # estimating for a GPU from elsewhere
        return Profile(device_key(device, dtype), 0.45 * 312.0, 0.08 * 312.0, 0.01, 0.05, "default (A100-class GPU)")
    peak, _ = device_peak_tflops(device, dtype)
    if device.type == "cuda":
        peak = peak or 100.0
        return Profile(device_key(device, dtype), 0.45 * peak, 0.08 * peak, 0.01, 0.05, "default (card peak)")
    return Profile(device_key(device, dtype), 0.6 * peak, 0.5 * peak, 0.005, 0.6, "default (measured matmul)")


def load_profile(device, dtype) -> Profile:
    path = profile_path(device_key(device, dtype))
    try:
        return Profile(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return default_profile(device, dtype)


def save_profile(profile: Profile) -> Path:
    from engine.atomic import atomic_write_text

    path = profile_path(profile.device)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(asdict(profile), indent=2) + "\n")
    return path


def profile_from_bench(report: dict) -> Profile:
    """Throughput measured by ``diffusion-renderer bench`` (full-size models) → a :class:`Profile`."""
    if report.get("size") != "full":
        raise ValueError("a throughput profile needs a full-size bench run (without --tiny)")
    c = report["cases"]
    ours = [v for k, v in c.items() if not k.startswith("ref_") and v.get("unet_flops") and v["stages"]["unet"] > 0]
    if not ours:
        raise ValueError("the bench report has no FLOP counts (run without --no-flops)")
    unet = sum(v["unet_flops"] for v in ours) / sum(v["stages"]["unet"] for v in ours) / 1e12
    w, h = report["resolution"]
    f = report["frames"]
    inv5 = c["inverse_5"]["stages"]
    vae_flops = vae_cost("full", "encode", 1, h, w)[0] * f + vae_cost("full", "decode", 8, h, w)[0] / 8 * f * 5
    vae = vae_flops / max(1e-9, inv5["vae_encode"] + inv5["decode"]) / 1e12
    fwd = c["forward_1"]
    eh, ew = report["env_resolution"]
    return Profile(device_key(report["device"], getattr(torch, report["dtype"])), round(unet, 3), round(vae, 3),
                   round(fwd["stages"]["other"] / max(1, fwd["unet_evals"]), 4),
                   round(fwd["stages"]["envmap"] / (eh * ew / 1e6), 4), f"measured by bench ({report['device_name']})")


# ------------------------------------------------------------------------------------------ tracing
@lru_cache(maxsize=8)
def _meta_model(part: str, size: str, dtype_name: str, ff_chunking: bool):
    from engine.models import build_env_encoder_from_config, build_unet_from_config, build_vae_from_config
    from engine.models.ff_chunk import chunk_feed_forward, chunk_feed_forward_per_frame
    from engine.pipelines.random_components import configs_for
    from engine.pipelines.zero_context import install_zero_context_skip

    cfg = configs_for(size)
    dtype = getattr(torch, dtype_name)
    if part.endswith("_unet"):
        m = build_unet_from_config(cfg[part], device="meta", dtype=dtype)
        install_zero_context_skip(m)   # as the pipelines run it (exact shortcuts)
        chunk_feed_forward(m)
        if ff_chunking:
            chunk_feed_forward_per_frame(m)
    elif part == "vae":
        m = build_vae_from_config(cfg["vae"], device="meta", dtype=torch.float32)
    else:
        m = build_env_encoder_from_config(cfg["env_encoder"], device="meta", dtype=dtype)
    return m.eval()


def _meta(*shape, dtype=torch.float32):
    return torch.zeros(*shape, device="meta", dtype=dtype)


@lru_cache(maxsize=256)
def unet_cost(kind: str, size: str, dtype_name: str, ff_chunking: bool, items: int, frames: int, h: int, w: int,
              tokens: str = "full") -> tuple[int, int]:
    """(FLOPs, activation bytes) of one UNet call on ``items`` × ``frames`` latents of h × w, with
    ``dtype_name`` weights (under autocast to that dtype unless float32, as the pipelines run).
    ``tokens="one"``: the forward negatives (one env token per level, see pipelines.zero_context)."""
    from engine.perf.meta_trace import trace

    unet = _meta_model(f"{kind}_unet", size, dtype_name, ff_chunking)
    dt = getattr(torch, dtype_name)
    ac = _autocast(dtype_name)
    x = _meta(items, frames, unet.config.in_channels, h, w, dtype=dt)
    ids = _meta(items, 3)
    if kind == "inverse":
        dim = unet.config.cross_attention_dim
        ehs = _meta(items, 1, 1, dim if isinstance(dim, int) else dim[0], dtype=dt)
        ctx = torch.zeros(items, dtype=torch.long, device="meta")
        return trace(lambda: unet(x, torch.tensor(1.0), ehs, ids, input_context=ctx), ac)
    chans = unet.config.block_out_channels
    ehs = [_meta(items, frames, 1 if tokens == "one" else (h >> i) * (w >> i), c, dtype=dt) for i, c in enumerate(chans)]
    return trace(lambda: unet(x, torch.tensor(1.0), ehs, ids), ac)


@lru_cache(maxsize=256)
def vae_cost(size: str, op: str, n: int, height: int, width: int, dtype_name: str = "float32") -> tuple[int, int]:
    """(FLOPs, activation bytes) of one VAE ``encode`` of n images or ``decode`` of n frames: float32
    weights (``force_upcast``), computing under autocast to ``dtype_name`` unless that is float32."""
    from engine.perf.meta_trace import trace

    vae = _meta_model("vae", size, "float32", False)
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    if op == "encode":
        x = _meta(n, 3, height, width)
        return trace(lambda: vae.encode(x), _autocast(dtype_name))
    z = _meta(n, 4, height // f, width // f)
    return trace(lambda: vae.decode(z, num_frames=n), _autocast(dtype_name))


@lru_cache(maxsize=64)
def env_encoder_cost(size: str, dtype_name: str, n: int, height: int, width: int) -> tuple[int, int]:
    from engine.perf.meta_trace import trace

    enc = _meta_model("env_encoder", size, dtype_name, False)
    return trace(lambda: enc(_meta(n, 12, height, width, dtype=getattr(torch, dtype_name))), _autocast(dtype_name))


def _autocast(dtype_name: str):
    """The pipelines compute under ``torch.autocast`` whenever their dtype is not float32."""
    return None if dtype_name == "float32" else getattr(torch, dtype_name)


# ------------------------------------------------------------------------------------------ estimate
def _params(part: str, size: str) -> int:
    return sum(p.numel() for p in _meta_model(part, size, "float32", False).parameters())


def estimate(kind: str, *, width: int, height: int, frames: int, steps: int = 20, passes: int = 5, lights: int = 1,
             guidance: float = 1.2, window: int = 24, overlap: int = 6, decode_chunk: int = 8, decode_overlap: int = 2,
             env_resolution=(512, 512), rotate_light: bool = False, memory: str = "default", device="auto",
             dtype="auto", size: str = "full", profile: Profile | None = None, device_memory_gb=None) -> dict:
    """Predicted seconds and peak device memory of an inverse (``passes``) or forward (``lights``) job."""
    from engine.pipelines.memory import memory_plan
    from engine.pipelines.components import pick_device, pick_dtype
    from engine.pipelines.windows import plan_windows

    if kind not in ("inverse", "forward"):
        raise ValueError(f"kind must be 'inverse' or 'forward', not {kind!r}")
    dev = pick_device(device) if device in (None, "", "auto") else torch.device(device)  # may be a GPU elsewhere
    dt = pick_dtype(dtype, dev)
    dname = str(dt).replace("torch.", "")
    plan_mem = memory_plan(memory)
    prof = profile or load_profile(dev, dt)
    vae_f = 2 ** (len(_meta_model("vae", size, "float32", False).config.block_out_channels) - 1)
    n_down = 2 ** 3
    if width % (vae_f * n_down) or height % (vae_f * n_down):
        raise ValueError(f"size {width}x{height} is not a multiple of {vae_f * n_down}")
    h, w = height // vae_f, width // vae_f
    plan = plan_windows(frames, min(window, frames), min(overlap, max(0, min(window, frames) - 1)))
    wlen = plan[0][1] - plan[0][0]
    cfg = kind == "forward" and guidance > 1.0
    ff = plan_mem.ff_chunking
    if kind == "inverse":
        group = min(passes, plan_mem.unet_items or passes)
        call = [unet_cost("inverse", size, dname, ff, group, wlen, h, w)]
        items, images, groups, batch = passes, frames, math.ceil(passes / group), group
    else:
        call = [unet_cost("forward", size, dname, ff, lights, wlen, h, w)]
        if cfg:
            call.append(unet_cost("forward", size, dname, ff, lights, wlen, h, w, "one"))
        items, images, groups, batch = lights, GBUFFERS * frames, 1, lights * (2 if cfg else 1)
    evals = steps * len(plan) * groups
    unet_flops = sum(c[0] for c in call) * evals
    unet_act = call[0][1] + (call[1][1] if cfg else 0)
    enc_one = vae_cost(size, "encode", 1, height, width, dname)
    enc_act = vae_cost(size, "encode", min(plan_mem.encode_chunk, images), height, width, dname)[1]
    vae_flops = enc_one[0] * images
    env_seconds = 0.0
    if kind == "forward":
        eh, ew = env_resolution
        env_images = (2 * frames if rotate_light else 2) + 1
        vae_flops += vae_cost(size, "encode", 1, eh, ew, dname)[0] * env_images * lights
        enc_env = env_encoder_cost(size, dname, 1, eh // vae_f, ew // vae_f)
        vae_flops += enc_env[0] * (frames if rotate_light else 1) * lights
        env_seconds = prof.envmap_s_per_mpx * (frames if rotate_light else 1) * eh * ew / 1e6 * lights
    chunk = min(plan_mem.decode_chunk or decode_chunk, frames)
    dec_overlap = plan_mem.decode_overlap if plan_mem.decode_overlap is not None else decode_overlap
    dec_frames = frames if chunk >= frames else math.ceil(frames * chunk / max(1, chunk - min(dec_overlap, chunk - 1)))
    dec = vae_cost(size, "decode", chunk, height, width, dname)
    vae_flops += dec[0] / chunk * dec_frames * items
    dec_act = dec[1]  # clips are decoded one at a time (vae_codec.decode_frames)
    wbytes = {"unet": _params(f"{kind}_unet", size) * dt.itemsize, "vae": _params("vae", size) * 4}
    if kind == "forward":
        wbytes["env_encoder"] = _params("env_encoder", size) * dt.itemsize
    transfer = 0.0  # offload: weights over PCIe (≈ 16 GB/s): once per stage, or every call for sequential
    if dev.type == "cuda" and plan_mem.offload == "model":
        transfer = 2 * sum(wbytes.values()) / PCIE_BYTES_PER_S
    elif dev.type == "cuda" and plan_mem.offload == "sequential":
        transfer = (evals * wbytes["unet"] + 3 * (sum(wbytes.values()) - wbytes["unet"])) / PCIE_BYTES_PER_S
    parts = {"unet": unet_flops / (prof.unet_tflops * 1e12) + evals * prof.step_overhead_s,   # per window × step
             "encode_decode": vae_flops / (prof.vae_tflops * 1e12) + env_seconds, "transfer": transfer}
    seconds = sum(parts.values())
    if plan_mem.offload is None or dev.type != "cuda":
        peak = sum(wbytes.values()) + max(unet_act, dec_act, enc_act)
    elif plan_mem.offload == "model":
        peak = max(wbytes["unet"] + unet_act, wbytes["vae"] + max(dec_act, enc_act))
    else:
        peak = max(unet_act, dec_act, enc_act) + 0.25 * 2**30
    peak_gb = peak * 1.08 / 2**30
    out = {"kind": kind, "seconds": round(seconds, 2), "peak_memory_gb": round(peak_gb, 2), "unet_evals": evals,
           "unet_batch": batch, "windows": len(plan), "unet_tflop": round(unet_flops / 1e12, 1),
           "vae_tflop": round(vae_flops / 1e12, 1), "memory": memory, "device": str(dev), "dtype": dname,
           "profile": prof.source, "weights_gb": round(sum(wbytes.values()) / 2**30, 2),
           "seconds_by_part": {k: round(v, 3) for k, v in parts.items()},   # engine/perf/cluster_cost.py splits them
           "activation_gb": {"unet": round(unet_act / 2**30, 2), "decode": round(dec_act / 2**30, 2),
                             "encode": round(enc_act / 2**30, 2)}}
    if device_memory_gb is None and dev.type == "cuda" and torch.cuda.is_available():
        device_memory_gb = torch.cuda.get_device_properties(dev).total_memory / 2**30
    if device_memory_gb:
        out["device_memory_gb"] = round(float(device_memory_gb), 2)
        out["fits"] = peak_gb <= float(device_memory_gb) * 0.95
    return out


def estimate_preview(*, width: int, height: int, frames: int, steps: int = 8, guidance: float = 1.2,
                     decode_chunk: int = 8, env_resolution=(512, 512), memory: str = "default", device="auto",
                     dtype="auto", size: str = "full", profile: Profile | None = None, device_memory_gb=None) -> dict:
    """One live-preview update after a rotation of the light (engine/jobs/preview_job.py): the window's
    denoising loop (``frames`` frames, one model window), the light's re-projection and encode, and the decode
    of the one chunk holding the frame; the G-buffer latents are cached (not counted). ``seconds`` is that
    update; ``denoise_seconds`` the loop alone; ``first_seconds`` adds the G-buffer encode of a first preview."""
    from engine.pipelines.components import pick_device, pick_dtype

    full = estimate("forward", width=width, height=height, frames=frames, steps=steps, guidance=guidance,
                    window=frames, overlap=0, decode_chunk=decode_chunk, decode_overlap=0,
                    env_resolution=env_resolution, memory=memory, device=device, dtype=dtype, size=size,
                    profile=profile, device_memory_gb=device_memory_gb)
    dev = pick_device(device) if device in (None, "", "auto") else torch.device(device)
    dt = pick_dtype(dtype, dev)
    dname = str(dt).replace("torch.", "")
    prof = profile or load_profile(dev, dt)
    chunk = min(memory_plan_chunk(memory, decode_chunk), frames)
    dec_full = vae_cost(size, "decode", chunk, height, width, dname)[0] / chunk * frames
    dec_one = vae_cost(size, "decode", chunk, height, width, dname)[0]
    gb_encode = vae_cost(size, "encode", 1, height, width, dname)[0] * GBUFFERS * frames
    vae_rate = prof.vae_tflops * 1e12
    update = full["seconds"] - (gb_encode + dec_full - dec_one) / vae_rate
    unet_seconds = full["unet_tflop"] * 1e12 / (prof.unet_tflops * 1e12) + full["unet_evals"] * prof.step_overhead_s
    out = dict(full, kind="preview", seconds=round(max(update, unet_seconds), 3),
               denoise_seconds=round(unet_seconds, 3), first_seconds=round(update + gb_encode / vae_rate, 3),
               vae_tflop=round(max(0.0, full["vae_tflop"] - (gb_encode + dec_full - dec_one) / 1e12), 2))
    out.pop("seconds_by_part", None)      # the forward job's split; not this update's
    return out


def memory_plan_chunk(memory: str, decode_chunk: int) -> int:
    """The decode chunk a memory mode uses (its own cap, else the job's)."""
    from engine.pipelines.memory import memory_plan

    return memory_plan(memory).decode_chunk or decode_chunk
