"""Transformer feed-forwards evaluated over fewer tokens at a time (exact).

A diffusers ``FeedForward`` (GEGLU: a ``4·C``-wide gate and value per token) acts on every token alone,
so splitting its input rows gives the same numbers. Its intermediate is the largest tensor of a UNet
step: at 512², 24 frames it is ≈ 0.5 GB (fp16) per clip, ×5 for five inverse passes in one batch.

* :func:`chunk_feed_forward` (every mode, installed by the renderers) caps a call at
  :data:`FF_MAX_TOKENS` tokens — one 24-frame 512² clip — so a batch keeps one clip's intermediate;
  each chunk is still one large matmul, so speed is unchanged.
* :func:`chunk_feed_forward_per_frame` (the low-VRAM memory modes) is diffusers' own
  ``set_chunk_feed_forward``: one frame (spatial blocks) / one frame position (temporal blocks) per call.

Why the first is not diffusers' ``set_chunk_feed_forward`` too: diffusers splits one tensor dimension
into pieces of a fixed size that must divide it (``_chunked_feed_forward`` raises otherwise), so it
cannot express "at most N tokens, whatever the batch": chunking the batch dimension by one clip would
leave ``batch × frames`` not divisible for a temporal block, and per-frame chunks make many small
matmuls (slower at full size). Splitting the flattened rows keeps the bound exact for any batch.
The instance's ``forward`` is wrapped (not the module replaced), so state-dict keys stay the checkpoint's.
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


def chunk_feed_forward_per_frame(unet: torch.nn.Module) -> int:
    """diffusers' ``set_chunk_feed_forward`` on every transformer block: one frame at a time (spatial
    blocks: rows are batch×frames) / one frame position at a time (temporal blocks: rows are
    batch×pixels, tokens are frames). Exact; the GEGLU intermediate then exists for one frame."""
    from diffusers.models.attention import TemporalBasicTransformerBlock

    n = 0
    for m in unet.modules():
        if hasattr(m, "set_chunk_feed_forward") and hasattr(m, "ff"):
            if isinstance(m, TemporalBasicTransformerBlock):
                m.set_chunk_feed_forward(1)       # diffusers fixes dim 1 (frames) for temporal blocks
            else:
                m.set_chunk_feed_forward(1, dim=0)
            n += 1
    return n
