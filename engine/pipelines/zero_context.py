"""Exact shortcuts for cross-attention whose context makes the attention trivial.

1. **One context token** (the inverse model: zero tokens plus the pass embedding, one token per pass,
   spatial and temporal): softmax over a single key is exactly 1, so the output is ``to_out(to_v(token))``
   for every query — the query projection and the attention are skipped and the value is broadcast.
2. **All-zero context rows** (the forward model's classifier-free-guidance negatives, MODEL_SPEC §3,
   "Unconditional branch"): see below.

With a context of N identical tokens every key and every value is the same vector, so softmax is
uniform and the attention output is that one value: attending to a single one of the N tokens gives
the same result. For the negatives (up to 4,096 zero tokens per frame at 512²) this removes the
quadratic part of the cross-attention for half the CFG batch; the query and output projections (with
LoRA) still run, so the numbers are those of the full computation up to floating-point rounding.

The caller says which rows are negatives — ``with zero_context_rows(0.5):`` around a UNet call whose
leading half of the batch has zero tokens — so no device synchronisation is needed to find them.
"""
from __future__ import annotations

import contextlib
import contextvars

import torch

_LEADING_FRACTION: contextvars.ContextVar[float] = contextvars.ContextVar("dr_zero_context_fraction", default=0.0)


@contextlib.contextmanager
def zero_context_rows(fraction: float):
    """Inside the block, the leading ``fraction`` of every cross-attention's batch rows have all-zero
    context tokens (0.5 for CFG with the negatives first)."""
    token = _LEADING_FRACTION.set(float(fraction))
    try:
        yield
    finally:
        _LEADING_FRACTION.reset(token)


class ZeroContextSkip:
    """Wraps an attention processor; the rows announced by :func:`zero_context_rows` attend to a single
    (zero) token."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        if (encoder_hidden_states is not None and encoder_hidden_states.shape[1] == 1 and attention_mask is None
                and hidden_states.ndim == 3 and _plain(attn)):
            return _one_token(attn, encoder_hidden_states, hidden_states.shape[1])
        fraction = _LEADING_FRACTION.get()
        rows = hidden_states.shape[0]
        n_zero = int(round(rows * fraction))
        if (not n_zero or encoder_hidden_states is None or attention_mask is not None or hidden_states.ndim != 3
                or encoder_hidden_states.shape[1] <= 1 or encoder_hidden_states.shape[0] != rows):
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        if _plain(attn):   # one (zero) token: the output is to_out(to_v(token)) for every query
            out_z = _one_token(attn, encoder_hidden_states[:n_zero, :1], hidden_states.shape[1])
        else:
            out_z = self.inner(attn, hidden_states[:n_zero], encoder_hidden_states[:n_zero, :1], None, temb,
                               *args, **kwargs)
        if n_zero == rows:
            return out_z
        out_c = self.inner(attn, hidden_states[n_zero:], encoder_hidden_states[n_zero:], None, temb, *args, **kwargs)
        return torch.cat([out_z.to(out_c.dtype), out_c])


def _one_token(attn, token: torch.Tensor, n_queries: int) -> torch.Tensor:
    """Attention over a single context token: ``to_out(to_v(token))`` for every one of ``n_queries``."""
    return attn.to_out[1](attn.to_out[0](attn.to_v(token))).expand(-1, n_queries, -1)


def _plain(attn) -> bool:
    """An attention without the extras that would make the one-token shortcut inexact."""
    return (attn.norm_cross is None and not attn.residual_connection and attn.rescale_output_factor == 1.0
            and getattr(attn, "spatial_norm", None) is None and getattr(attn, "group_norm", None) is None)


def install_zero_context_skip(unet: torch.nn.Module) -> int:
    """Wrap the processors of every cross-attention (``attn2``) of ``unet``; returns how many."""
    n = 0
    for module in unet.modules():
        if getattr(module, "is_cross_attention", False) and hasattr(module, "set_processor"):
            proc = module.get_processor() if hasattr(module, "get_processor") else module.processor
            if not isinstance(proc, ZeroContextSkip):
                module.set_processor(ZeroContextSkip(proc))
                n += 1
    return n
