"""Measurement helpers for the benchmark: per-stage wall time, UNet evaluation counts, peak memory
and FLOPs (torch's flop counter).

Stages are attributed *outermost first*: while a stage is running, wrapped calls nested inside it
(e.g. the VAE encodes inside the env encoding) count towards the outer stage. On CUDA every stage
boundary synchronises the device so the wall times are the device's.
"""
from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections import defaultdict

import torch

STAGES = ("envmap", "env_encode", "vae_encode", "unet", "decode")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StageClock:
    """Accumulates wall seconds per stage and UNet calls/batch sizes while installed on a renderer's
    modules (:meth:`install`), restoring the original methods on :meth:`uninstall`."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.seconds: dict[str, float] = defaultdict(float)
        self.unet_calls = 0
        self.unet_samples = 0          # Σ batch size over UNet calls (a CFG call counts 2)
        self.unet_shapes: list[tuple] = []
        self._active: str | None = None
        self._patched: list[tuple[object, str, object]] = []

    @contextlib.contextmanager
    def stage(self, name: str):
        if self._active is not None:       # nested: the outer stage owns the time
            yield
            return
        _sync(self.device)
        self._active = name
        t0 = time.perf_counter()
        try:
            yield
        finally:
            _sync(self.device)
            self.seconds[name] += time.perf_counter() - t0
            self._active = None

    def wrap(self, obj, attr: str, stage: str, on_call=None) -> None:
        original = getattr(obj, attr)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            if on_call is not None and self._active is None:
                on_call(args, kwargs)
            with self.stage(stage):
                return original(*args, **kwargs)

        had_own = attr in vars(obj)
        self._patched.append((obj, attr, original if had_own else None))
        setattr(obj, attr, timed)

    def _count_unet(self, args, kwargs):
        sample = args[0] if args else kwargs.get("sample")
        self.unet_calls += 1
        self.unet_samples += int(sample.shape[0])
        shape = tuple(sample.shape)
        if shape not in self.unet_shapes:
            self.unet_shapes.append(shape)

    def install(self, unet=None, vae=None, env_encoder=None) -> "StageClock":
        import engine.envmap

        self.wrap(engine.envmap, "process_environment_map", "envmap")
        if unet is not None:
            self.wrap(unet, "forward", "unet", on_call=self._count_unet)
        if vae is not None:
            self.wrap(vae, "encode", "vae_encode")
            self.wrap(vae, "decode", "decode")
        if env_encoder is not None:
            self.wrap(env_encoder, "forward", "env_encode")
        return self

    def uninstall(self) -> None:
        for obj, attr, original in reversed(self._patched):
            if original is None:
                with contextlib.suppress(AttributeError):
                    delattr(obj, attr)
            else:
                setattr(obj, attr, original)
        self._patched.clear()

    def summary(self, total: float) -> dict:
        out = {k: round(self.seconds.get(k, 0.0), 4) for k in STAGES}
        out["other"] = round(max(0.0, total - sum(self.seconds.values())), 4)
        return out


# ------------------------------------------------------------------------------------------ memory
def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import psutil

        return psutil.Process().memory_info().rss


class PeakMemory:
    """Peak memory of a block: CUDA max allocated on a GPU, else the process RSS sampled every 5 ms
    (``baseline`` = RSS at the start, so ``peak - baseline`` is what the block added)."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.peak = 0
        self.baseline = 0
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device)
        else:
            self.baseline = self.peak = _rss_bytes()
            self._stop.clear()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss_bytes())
        return False


# ------------------------------------------------------------------------------------------ FLOPs
def count_flops(fn) -> int:
    """FLOPs of one call of ``fn()`` (torch.utils.flop_counter: matmuls, convolutions, SDPA)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


# dense fp16/bf16 tensor-core peaks (TFLOP/s, without sparsity) of common cards
DEVICE_PEAK_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.0,
                      "A100": 312.0, "L40S": 362.0, "L40": 181.0, "RTX 6000 Ada": 364.0, "RTX 4090": 165.0,
                      "RTX 3090": 71.0, "A10": 125.0, "T4": 65.0, "V100": 125.0}


def device_peak_tflops(device: torch.device, dtype: torch.dtype) -> tuple[float | None, str]:
    """(peak TFLOP/s, where the figure comes from). CUDA: the card's published dense fp16/bf16 peak
    (fp32 runs are compared with it too: the point is how much of the card is used). CPU: a measured
    large fp32/bf16 matmul, i.e. what this machine's BLAS reaches."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key in sorted(DEVICE_PEAK_TFLOPS, key=len, reverse=True):
            if key.lower() in name.lower():
                return DEVICE_PEAK_TFLOPS[key], f"published dense fp16/bf16 peak of {name}"
        return None, f"unknown card {name!r}"
    n = 1024
    dt = dtype if dtype in (torch.float32, torch.bfloat16) else torch.float32
    a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
    a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 0.3:
        a @ b
        reps += 1
    rate = 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e12
    return round(rate, 4), f"measured {n}² {str(dt).replace('torch.', '')} matmul on {torch.get_num_threads()} thread(s)"
