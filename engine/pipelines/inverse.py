"""Inverse rendering (de-lighting): video → G-buffer passes.

Faithful to the reference's ``rgbx`` flow (MODEL_SPEC §4.2): RGB → ``2x−1`` → VAE posterior mean
(unscaled) as the condition latent, zero cross-attention tokens plus the pass embedding, no
classifier-free guidance, Euler v-prediction sampler, chunked temporal decode. Unlike the reference,
several passes run as one UNet batch and the RGB is encoded once for all of them; every pass starts
from the same noise, exactly as the reference's fresh-generator-per-pass calls do.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Optional, Sequence

import torch

from engine.contract.gbuffer_set import DEFAULT_PASSES, MODEL_PASSES
from engine.models.ff_chunk import chunk_feed_forward
from engine.models.temporal_conv import default_fold, fold_temporal_convs
from engine.pipelines import sampling
from engine.pipelines.components import Components, load_components, resolve_checkpoint
from engine.pipelines.memory import MemoryModes
from engine.pipelines.samplers import local_sampler
from engine.pipelines.vae_codec import decode_frames, encode_mean, to_frames_tensor, vae_scale_factor
from engine.pipelines.windows import decode_clip, plan_windows
from engine.pipelines.zero_context import install_zero_context_skip

PASS_INDEX = {name: i for i, name in enumerate(MODEL_PASSES)}   # the model's pass-context index


def autocast_for(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def check_size(h: int, w: int, multiple: int, what: str) -> None:
    if h % multiple or w % multiple:
        raise ValueError(f"{what}: size {w}x{h} is not a multiple of {multiple}; resize or crop the input "
                         f"(e.g. to {max(multiple, round(w / multiple) * multiple)}x"
                         f"{max(multiple, round(h / multiple) * multiple)})")


class InverseRenderer(MemoryModes):
    """De-light a clip into G-buffer passes.

    >>> r = InverseRenderer.from_pretrained("inverse")            # or a checkpoint folder; memory="low-vram"
    >>> out = r(frames, passes=["basecolor", "normal"])           # frames (F, H, W, 3) in [0, 1]
    >>> out["normal"].shape                                       # (F, H, W, 3) float32 in [0, 1]
    """

    def __init__(self, components: Components):
        self.c = components
        self.unet, self.vae = components.unet, components.vae
        self.device, self.dtype = components.device, components.dtype
        self.vae_factor = vae_scale_factor(self.vae)
        n_down = len(self.unet.config.block_out_channels) - 1
        self.size_multiple = self.vae_factor * 2 ** n_down
        install_zero_context_skip(self.unet)  # exact: one context token per pass
        chunk_feed_forward(self.unet)          # exact: feed-forwards over ≤ one clip's tokens at a time
        if default_fold(self.device):  # temporal Conv3d as Conv2d: exact, 2-4x faster on CPUs
            fold_temporal_convs(self.unet, self.vae)
        self.vocab = self.unet.context_embedding.num_embeddings if getattr(self.unet, "context_embedding", None) is not None else 0

    @classmethod
    def from_pretrained(cls, path_or_name="inverse", *, revision: Optional[str] = None, device=None, dtype=None,
                        allow_download: bool = False, memory: str = "default") -> "InverseRenderer":
        """Load a published model or checkpoint folder, set up for the memory mode ``memory``
        (:mod:`engine.pipelines.memory`)."""
        root = resolve_checkpoint(path_or_name, revision=revision, allow_download=allow_download)
        renderer = cls(load_components(root, kind="inverse", device=device, dtype=dtype))
        renderer.enable_memory_mode(memory)
        return renderer

    def encode_video(self, frames) -> torch.Tensor:
        """frames (F, H, W, 3) in [0, 1] → unscaled condition latents (1, F, 4, h, w)."""
        x = to_frames_tensor(frames, "frames")
        check_size(x.shape[-2], x.shape[-1], self.size_multiple, "frames")
        with autocast_for(self.device, self.dtype):
            lat = encode_mean(self.vae, x, self.encode_chunk, self.device)
        return lat.unsqueeze(0)

    @torch.no_grad()
    def __call__(self, frames, passes: Sequence[str] = DEFAULT_PASSES, *, num_inference_steps: int = 20,
                 seed: Optional[int] = 0, noise: Optional[torch.Tensor] = None, decode_chunk_size: int = 8,
                 fps: int = 7, motion_bucket_id: int = 127, noise_aug_strength: float = 0.0,
                 pass_batch: Optional[int] = None, cond_latents: Optional[torch.Tensor] = None,
                 window: Optional[int] = None, overlap: int = 0, blend: str = "latent", decode_overlap: int = 0,
                 callback: Optional[sampling.StepCallback] = None, should_cancel=None,
                 output: str = "np", sampler=None) -> dict:
        """Returns {pass: (F, H, W, 3) float32 in [0, 1]} (``output="pt"``: torch tensors).

        ``window``: frames the model sees at once (None: the whole clip, as one reference call);
        longer clips are covered by windows overlapping by ``overlap`` frames, blended per ``blend``
        (see :mod:`engine.pipelines.windows`). ``pass_batch`` (passes per UNet batch) and the decode
        chunk are capped by the renderer's memory mode. ``sampler``: who runs the denoising loop
        (:mod:`engine.pipelines.samplers`; default this process)."""
        passes = list(dict.fromkeys(passes))
        unknown = [p for p in passes if p not in PASS_INDEX]
        if unknown or not passes:
            raise ValueError(f"unknown pass(es) {unknown or passes}; choose from {', '.join(PASS_INDEX)}")
        if self.vocab and max(PASS_INDEX[p] for p in passes) >= self.vocab:
            raise ValueError(f"this checkpoint knows {self.vocab} passes; cannot produce {passes}")
        if noise_aug_strength:
            raise ValueError("noise_aug_strength must be 0 (the published models were run with 0)")
        if cond_latents is None:
            cond_latents = self.encode_video(frames)
        cond_latents = cond_latents.to(self.device)
        _, f, _, h, w = cond_latents.shape
        plan = plan_windows(f, window or f, overlap if window and window < f else 0)
        base_noise = sampling.initial_noise((1, f, 4, h, w), seed, noise).to(self.device)
        results = {}
        batch = max(1, int(pass_batch or self.plan.unet_items or len(passes)))
        if self.plan.unet_items:
            batch = min(batch, self.plan.unet_items)
        decode_chunk_size, decode_overlap = self.plan.decode(decode_chunk_size, decode_overlap)
        for s in range(0, len(passes), batch):
            group = passes[s:s + batch]
            result = self._sample(group, cond_latents, base_noise, num_inference_steps, fps, motion_bucket_id,
                                  noise_aug_strength, plan, blend, callback, should_cancel, sampler)
            with autocast_for(self.device, self.dtype):
                video = decode_clip(lambda lat: decode_frames(self.vae, lat, decode_chunk_size, decode_overlap,
                                                              self.device),
                                    result, plan, blend)
            for i, name in enumerate(group):
                results[name] = video[i] if output == "pt" else video[i].cpu().numpy()
        return results

    def _sample(self, group, cond_latents, base_noise, steps, fps, motion_bucket_id, noise_aug, plan, blend,
                callback, should_cancel, sampler=None):
        noise = base_noise.expand(len(group), *base_noise.shape[1:]).contiguous()
        return (sampler or local_sampler)(self, functools.partial(sampling.make_scheduler, self.c.scheduler_config),
                                          steps, noise, inverse_window_fn,
                                          (tuple(group), cond_latents, fps, motion_bucket_id, noise_aug), plan, blend,
                                          callback=callback, should_cancel=should_cancel)


def inverse_window_fn(renderer: InverseRenderer, passes: Sequence[str], cond_latents: torch.Tensor, fps: int,
                      motion_bucket_id: int, noise_aug: float):
    """The inverse model's ``window_fn(x, t, s, e)`` for :func:`windows.sample_clip`: the passes ``passes`` of
    the condition latents ``cond_latents`` (1, F, 4, h, w) as one UNet batch (a sampler's ``make_window_fn``)."""
    p = len(passes)
    device, dtype, unet = renderer.device, renderer.dtype, renderer.unet
    unet_dtype = next(unet.parameters()).dtype
    cond_latents = cond_latents.to(device)
    cond = cond_latents.expand(p, *cond_latents.shape[1:])
    ctx = torch.tensor([PASS_INDEX[n] for n in passes], dtype=torch.long, device=device)
    dim = unet.config.cross_attention_dim
    dim = dim[0] if isinstance(dim, (list, tuple)) else dim
    ehs = torch.zeros(p, 1, 1, dim, device=device, dtype=torch.float32)
    time_ids = sampling.added_time_ids(fps, motion_bucket_id, noise_aug, p, device, torch.float32)

    def window_fn(scaled, t, s, e):
        x = torch.cat([scaled, cond[:, s:e].to(scaled.dtype)], dim=2)
        with autocast_for(device, dtype):
            if dtype != torch.float32:
                x = x.to(unet_dtype)
            out = unet(x, t, ehs, time_ids, input_context=ctx)
        return out.float()

    return window_fn
