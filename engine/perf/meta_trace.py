"""Exact FLOPs and activation memory of a model call without running it: the module is built on
PyTorch's ``meta`` device (shapes only, no storage, no arithmetic) and the call is traced.

* FLOPs: torch's flop formulas (``torch.utils.flop_counter.flop_registry``: matmuls, convolutions,
  attention) applied to every op of the meta call — in the same dispatch mode, without
  ``FlopCounterMode``'s global module hooks, so tracing is safe beside a job running in another thread.
* Activation peak: a dispatch mode adds the bytes of every new (non-view, non-in-place) tensor an
  op returns and subtracts them when Python frees the tensor; the maximum is the peak of live
  activations (weights and inputs made before the call are not counted). Attention is counted as
  memory-efficient SDPA does it on a GPU (no materialised score matrix).
"""
from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class _FusedAttention(TorchFunctionMode):
    """SDPA as one fused kernel: only the output is allocated; its FLOPs are counted here."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            from torch.utils.flop_counter import sdpa_flop_count

            q = args[0] if args else kwargs["query"]
            k = args[1] if len(args) > 1 else kwargs["key"]
            v = args[2] if len(args) > 2 else kwargs["value"]
            self.flops += sdpa_flop_count(q.shape, k.shape, v.shape)
            return torch.empty((*q.shape[:-1], v.shape[-1]), dtype=q.dtype, device=q.device)
        return func(*args, **kwargs)


class _LiveBytes(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        from torch.utils.flop_counter import flop_registry

        self.registry = flop_registry
        self.live = 0
        self.peak = 0
        self.flops = 0

    def _free(self, n):
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = self.registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        if func.is_view or func._schema.is_mutable:
            return out
        inputs = {id(t) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and id(t) not in inputs:
                n = t.numel() * t.element_size()
                self.live += n
                weakref.finalize(t, self._free, n)
        self.peak = max(self.peak, self.live)
        return out


def trace(fn) -> tuple[int, int]:
    """(FLOPs, peak live activation bytes) of ``fn()`` run on meta tensors."""
    attention, tracker = _FusedAttention(), _LiveBytes()
    with torch.no_grad(), attention, tracker:
        fn()
    return int(tracker.flops + attention.flops), tracker.peak
