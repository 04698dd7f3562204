"""VAE encode (posterior mean of ``2x−1`` images) and chunked temporal decode."""
from __future__ import annotations


import numpy as np
import torch


def vae_scale_factor(vae) -> int:
    """Pixels per latent cell, from the VAE's own config (8 for SVD's VAE, 4 for the tiny test one)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


ENCODE_CHUNK = 4


def weights_device(module) -> torch.device:
    """The device of ``module``'s weights (where it computes unless a renderer offloads it)."""
    return next(module.parameters()).device


def to_frames_tensor(frames, name: str = "frames") -> torch.Tensor:
    """(F, H, W, C) array/tensor (uint8 or float in [0, 1]) → float32 (F, 3, H, W) in [0, 1].

    One-channel inputs are replicated to RGB, as the models were trained on grey RGB images."""
    if isinstance(frames, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(frames))
    elif isinstance(frames, torch.Tensor):
        t = frames.detach()
    else:
        t = torch.as_tensor(np.asarray(frames))
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    elif t.dtype == torch.uint16:
        t = t.float() / 65535.0
    else:
        t = t.float()
    if t.ndim == 3:
        t = t[..., None]
    if t.ndim != 4 or t.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{name}: expected an array shaped (frames, height, width, channels) with 1, 3 or 4 "
                         f"channels, got {tuple(t.shape)}")
    if t.shape[-1] == 4:
        t = t[..., :3] * t[..., 3:4]  # RGBA composited over black, as the reference
    if t.shape[-1] == 1:
        t = t.expand(*t.shape[:-1], 3)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: contains NaN or Inf values")
    if t.min() < -1e-6 or t.max() > 1 + 1e-6:
        raise ValueError(f"{name}: values must lie in [0, 1] (got {float(t.min()):.4g}..{float(t.max()):.4g}); "
                         "pass display-encoded images, not linear HDR")
    return t.permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def encode_mean(vae, images: torch.Tensor, chunk: int = ENCODE_CHUNK, device=None) -> torch.Tensor:
    """images (N, 3, H, W) in [0, 1] → posterior mean latents (N, 4, h, w) in the VAE's dtype.

    Encoded ``chunk`` images at a time (the renderer's memory mode chooses; the encoder has no temporal
    layers, so chunking is exact). At 512² one fp32 image needs ≈ 0.6 GB of encoder activations.
    ``device``: where the VAE computes (default: its weights' device; an offloading renderer passes its own)."""
    chunk = max(1, int(chunk))
    device = weights_device(vae) if device is None else device
    param = next(vae.parameters())
    outs = []
    for s in range(0, images.shape[0], chunk):
        x = images[s:s + chunk].to(device=device, dtype=param.dtype) * 2.0 - 1.0
        outs.append(vae.encode(x.contiguous()).latent_dist.mode())
    return torch.cat(outs, 0)


@torch.no_grad()
def decode_frames(vae, latents: torch.Tensor, decode_chunk_size: int = 8, overlap: int = 0,
                  device=None) -> torch.Tensor:
    """latents (B, F, 4, h, w) → frames (B, F, H, W, 3) float32 in [0, 1].

    Like the reference, each chunk of ``decode_chunk_size`` frames is an independent call of the
    temporal decoder (this changes results; the whole clip in one call is ``decode_chunk_size >= F``).
    ``overlap > 0`` decodes overlapping chunks and cross-fades them, removing the flicker the
    reference shows at chunk boundaries (frames 7|8, 15|16). ``device``: as :func:`encode_mean`."""
    from engine.pipelines.windows import blend, plan_windows, window_weights

    b, f = latents.shape[:2]
    param = next(vae.parameters())
    device = weights_device(vae) if device is None else device
    z = latents.to(device=device, dtype=param.dtype) / vae.config.scaling_factor
    chunk = max(1, int(decode_chunk_size or f))
    if overlap and f > chunk:
        plan = plan_windows(f, chunk, min(overlap, chunk - 1))
    else:
        plan = [(s, min(s + chunk, f)) for s in range(0, f, chunk)]
    out = []
    for s, e in plan:  # each clip of the batch on its own: the decoder's activations scale with frames per call
        dec = torch.stack([vae.decode(z[i, s:e], num_frames=e - s).sample for i in range(b)])  # (B, n, 3, H, W)
        out.append((dec.float() / 2 + 0.5).clamp(0, 1))
    video = torch.cat(out, 1) if not overlap or f <= chunk else blend(out, plan, window_weights(plan, f))
    return video.permute(0, 1, 3, 4, 2).contiguous()
