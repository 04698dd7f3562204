"""Transformer feed-forwards evaluated over a bounded number of tokens at a time (exact).

A diffusers ``FeedForward`` (GEGLU: a ``4·C``-wide gate and value per token) acts on every token alone,
so splitting its input rows gives the same numbers. Its intermediate is the largest tensor of a UNet
step: at 512², 24 frames it is ≈ 0.5 GB (fp16) per clip, ×5 for five inverse passes in one batch.
:func:`chunk_feed_forward` caps a call at :data:`FF_MAX_TOKENS` tokens — one 24-frame 512² clip — so a
batch keeps one clip's intermediate; each chunk is still one large matmul, so speed is unchanged. The
renderers install it; the low-VRAM memory modes chunk further (one frame at a time, engine.perf.memory).
"""
from __future__ import annotations

import functools

import torch

FF_MAX_TOKENS = 24 * 64 * 64


def _token_chunked(ff, max_tokens: int, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    rows = hidden_states.numel() // max(1, hidden_states.shape[-1])
    forward = type(ff).forward
    if rows <= max_tokens:
        return forward(ff, hidden_states, *args, **kwargs)
    flat = hidden_states.reshape(rows, hidden_states.shape[-1])
    out = torch.cat([forward(ff, part, *args, **kwargs) for part in flat.split(max_tokens)])
    return out.reshape(*hidden_states.shape[:-1], out.shape[-1])


def chunk_feed_forward(unet: torch.nn.Module, max_tokens: int = FF_MAX_TOKENS) -> int:
    """Evaluate every diffusers ``FeedForward`` of ``unet`` over at most ``max_tokens`` tokens per call
    (exact: the feed-forward acts on each token alone). Returns how many were set up."""
    from diffusers.models.attention import FeedForward

    n = 0
    for m in unet.modules():
        if isinstance(m, FeedForward):
            m.forward = functools.partial(_token_chunked, m, int(max_tokens))
            n += 1
    return n
