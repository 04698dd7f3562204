"""The reference implementation's *call pattern*, rebuilt from our own pieces, so every speed-up the
benchmark reports is a ratio measured in the same run on the same models (MODEL_SPEC §4.2–4.3, §10.1):

* inverse — one pipeline call per pass; every call VAE-encodes the input video again, frame by frame
  (batch 1); the UNet batch is 1;
* forward — every call (one per HDRI) re-projects the environment map in all three formats the
  reference computes (``proj``, ``fixed``, ``ball``; two are thrown away; no cube-map cache), applies
  the LoRA unmerged (three matmuls per attention projection), VAE-encodes each of the five
  G-buffers and each of the three env images frame by frame (8 × F encoder calls), runs the EnvEncoder
  on every frame (no static-light shortcut) and doubles the UNet batch for guidance 1.2.

The sampler, UNet weights and decoder are the same as ours; inside these calls the model runs as the
reference's does (:func:`as_reference`: LoRA unmerged, attention over every context token), so the
ratios include our exact model-level shortcuts as well as the call pattern.
"""
from __future__ import annotations

import contextlib

import torch

from engine.pipelines.forward import GBUFFER_ORDER
from engine.pipelines.inverse import autocast_for
from engine.pipelines.vae_codec import encode_mean, to_frames_tensor


@contextlib.contextmanager
def as_reference(renderer):
    """The reference's model-level computation for the block: LoRA unmerged, attention over every context
    token (our exact shortcuts of :mod:`engine.pipelines.zero_context` unwrapped), stock Conv3d temporal
    convolutions; restored afterwards."""
    from engine.models.temporal_conv import fold_temporal_convs, unfold_temporal_convs
    from engine.pipelines.zero_context import ZeroContextSkip

    wrapped = [m for m in renderer.unet.modules() if isinstance(getattr(m, "processor", None), ZeroContextSkip)]
    merge = getattr(renderer, "merge_lora", None)
    for m in wrapped:
        m.set_processor(m.processor.inner)
    if merge is not None:
        renderer.merge_lora = False
    folded = unfold_temporal_convs(renderer.unet, renderer.vae)
    try:
        yield
    finally:
        if folded:
            fold_temporal_convs(renderer.unet, renderer.vae)
        for m in wrapped:
            m.set_processor(ZeroContextSkip(m.processor))
        if merge is not None:
            renderer.merge_lora = merge


def _encode_frame_by_frame(vae, frames: torch.Tensor) -> torch.Tensor:
    return torch.cat([encode_mean(vae, frames[i:i + 1]) for i in range(frames.shape[0])], 0)


@torch.no_grad()
def reference_inverse(renderer, frames, passes, **kwargs) -> dict:
    """One call per pass, each re-encoding the video frame by frame."""
    out = {}
    with as_reference(renderer):
        for name in passes:
            out.update(_reference_inverse_call(renderer, frames, name, kwargs))
    return out


def _reference_inverse_call(renderer, frames, name, kwargs) -> dict:
    x = to_frames_tensor(frames, "frames")
    with autocast_for(renderer.device, renderer.dtype):
        cond = _encode_frame_by_frame(renderer.vae, x).unsqueeze(0)
    return renderer(frames, passes=[name], cond_latents=cond, **kwargs)


@torch.no_grad()
def _reference_env_tokens(renderer, hdr, num_frames: int, env_resolution, light_kwargs: dict):
    from engine.envmap import env_direction_map, process_environment_map

    square = env_resolution[0] == env_resolution[1]   # the reference's mirror-ball format needs a square map
    maps = process_environment_map(hdr, resolution=tuple(env_resolution), num_frames=num_frames,
                                   env_format=("proj", "fixed", "ball") if square else ("proj", "fixed"),
                                   device=renderer.device, cache=False, **light_kwargs)
    ldr = maps["env_ldr"].to(renderer.device).permute(0, 3, 1, 2).float()
    logm = maps["env_log"].to(renderer.device).permute(0, 3, 1, 2).float()
    h, w = ldr.shape[-2:]
    nrm = env_direction_map(h, w, device=renderer.device).permute(2, 0, 1)[None].expand(num_frames, -1, -1, -1)
    with autocast_for(renderer.device, renderer.dtype):
        lat = [_encode_frame_by_frame(renderer.vae, x.contiguous()).float() * renderer.scaling for x in (ldr, logm, nrm)]
        x = torch.cat(lat, 1)
        enc_dtype = next(renderer.env_encoder.parameters()).dtype
        feats = renderer.env_encoder(x.to(enc_dtype).contiguous())
    return [t.float().flatten(2).transpose(1, 2).unsqueeze(0) for t in feats]


@torch.no_grad()
def reference_forward(renderer, gbuffers: dict, hdrs, *, num_inference_steps: int, guidance_scale: float = 1.2,
                      lora_scale: float = 0.25, seed: int = 0, env_resolution=(512, 512), decode_chunk_size: int = 8,
                      light_kwargs: dict | None = None) -> list:
    """One call per HDRI, each redoing the env projection and all condition encodes frame by frame."""
    with as_reference(renderer):
        return [_reference_forward_call(renderer, gbuffers, hdr, num_inference_steps, guidance_scale, lora_scale, seed,
                                        env_resolution, decode_chunk_size, light_kwargs) for hdr in hdrs]


def _reference_forward_call(renderer, gbuffers, hdr, num_inference_steps, guidance_scale, lora_scale, seed,
                            env_resolution, decode_chunk_size, light_kwargs):
    from engine.pipelines.vae_codec import decode_frames

    tensors = [to_frames_tensor(gbuffers[p], p) for p in GBUFFER_ORDER]
    f = tensors[0].shape[0]
    with autocast_for(renderer.device, renderer.dtype):
        lat = [_encode_frame_by_frame(renderer.vae, t).float() * renderer.scaling for t in tensors]
    cond = torch.cat(lat, 1).unsqueeze(0)
    tokens = _reference_env_tokens(renderer, hdr, f, env_resolution, light_kwargs or {})
    latents = renderer.sample(cond, tokens, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                              lora_scale=lora_scale, seed=seed)
    with autocast_for(renderer.device, renderer.dtype):
        return decode_frames(renderer.vae, latents, decode_chunk_size)[0]
