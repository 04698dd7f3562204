"""Sampler, noise and guidance shared by the inverse and forward pipelines.

The reference samples with diffusers' ``EulerDiscreteScheduler`` (v-prediction, Karras sigmas,
continuous timesteps ``0.25·ln σ``). Noise convention: a *fresh* generator per pipeline call, the
initial latents being its first draw, always drawn in float32 on the CPU so that a seed gives the
same picture on every device; ``noise=`` injects a tensor instead.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
from diffusers import EulerDiscreteScheduler

from engine.errors import EngineError

StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor, torch.Tensor], None]
"""callback(step_index, num_steps, timestep, model_output, latents_after_step)."""


class Cancelled(EngineError, RuntimeError):
    """Raised from inside the denoising loop when the caller's cancel check fires."""
    code = "cancelled"


def make_scheduler(config: dict, timestep_spacing: Optional[str] = None) -> EulerDiscreteScheduler:
    """A fresh scheduler per call (its step index is stateful)."""
    cfg = {k: v for k, v in config.items() if not k.startswith("_")}
    if timestep_spacing is not None:
        cfg["timestep_spacing"] = timestep_spacing
    return EulerDiscreteScheduler.from_config(cfg)


def initial_noise(shape: tuple, seed: Optional[int], noise: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Noise for one call: injected, or the first float32 draw of ``Generator('cpu').manual_seed(seed)``."""
    if noise is not None:
        noise = torch.as_tensor(noise, dtype=torch.float32)
        if tuple(noise.shape) != tuple(shape):
            raise ValueError(f"injected noise has shape {tuple(noise.shape)}, expected {tuple(shape)}")
        return noise
    gen = torch.Generator("cpu")
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed))
    return torch.randn(shape, generator=gen, dtype=torch.float32)


Guidance = Union[float, Sequence[float]]
"""A guidance scale: one number for every frame, or ``(min, max)``, ramped over a window's frames."""


def guidance_range(guidance: Guidance) -> tuple[float, float]:
    """``1.2`` → (1.2, 1.2); ``(1.0, 3.0)`` or ``[1.0, 3.0]`` → (1.0, 3.0) (the reference's
    ``min_guidance_scale`` / ``max_guidance_scale``). Classifier-free guidance runs iff max > 1."""
    if isinstance(guidance, (int, float)) and not isinstance(guidance, bool):
        return float(guidance), float(guidance)
    values = [float(v) for v in guidance]
    if len(values) != 2:
        raise ValueError(f"guidance must be one number or (min, max), got {list(values)}")
    return values[0], values[1]


def frame_guidance(min_scale: float, max_scale: float, num_frames: int, device, dtype) -> torch.Tensor:
    """Per-frame guidance ``linspace(min, max, F)`` shaped (1, F, 1, 1, 1), as the reference."""
    return torch.linspace(min_scale, max_scale, num_frames, device=device, dtype=dtype).view(1, num_frames, 1, 1, 1)


def apply_guidance(uncond: torch.Tensor, cond: torch.Tensor, guidance: Guidance) -> torch.Tensor:
    """Classifier-free guidance ``u + g·(c − u)`` with ``g = linspace(min, max, F)`` over the frames (dim 1)
    of (B, F, C, h, w) outputs, exactly as the reference computes it."""
    lo, hi = guidance_range(guidance)
    g = frame_guidance(lo, hi, cond.shape[1], cond.device, cond.dtype)
    return uncond + g * (cond - uncond)


def added_time_ids(fps: int, motion_bucket_id: int, noise_aug_strength: float, batch: int, device, dtype):
    """SVD micro-conditioning ``[[fps-1, motion_bucket_id, noise_aug]]`` repeated over the batch."""
    ids = torch.tensor([[fps - 1, motion_bucket_id, noise_aug_strength]], dtype=dtype, device=device)
    return ids.repeat(batch, 1)


def denoise(scheduler: EulerDiscreteScheduler, num_steps: int, noise: torch.Tensor,
            model_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *,
            callback: Optional[StepCallback] = None,
            should_cancel: Optional[Callable[[], bool]] = None) -> torch.Tensor:
    """Run the Euler sampler from ``noise`` (B, F, C, h, w); ``model_fn(scaled_latents, t)`` returns
    the (guided) v-prediction for the latents. Returns the final latents."""
    scheduler.set_timesteps(num_steps, device=noise.device)
    latents = noise * scheduler.init_noise_sigma
    for i, t in enumerate(scheduler.timesteps):
        if should_cancel is not None and should_cancel():
            raise Cancelled(f"cancelled before denoising step {i + 1}/{num_steps}")
        scaled = scheduler.scale_model_input(latents, t)
        out = model_fn(scaled, t)
        latents = scheduler.step(out, t, latents).prev_sample
        if callback is not None:
            callback(i, num_steps, t, out, latents)
    return latents
