"""Exact FLOPs and activation memory of a model call without running it: the module is built on
PyTorch's ``meta`` device (shapes only, no storage, no arithmetic) and the call is traced.

* FLOPs: torch's flop formulas (``torch.utils.flop_counter.flop_registry``: matmuls, convolutions,
  attention) applied to every op of the meta call — in the same dispatch mode, without
  ``FlopCounterMode``'s global module hooks, so tracing is safe beside a job running in another thread.
* Activation peak: a dispatch mode adds the bytes of every new (non-view, non-in-place) tensor an
  op returns and subtracts them when Python frees the tensor; the maximum is the peak of live
  activations (weights and inputs made before the call are not counted). Attention is counted as
  memory-efficient SDPA does it on a GPU (no materialised score matrix).
* Autocast: the pipelines run on CUDA under ``torch.autocast`` (fp16/bf16), which the meta device does
  not support; ``trace(fn, autocast=dtype)`` applies CUDA autocast's casting policy for the ops these
  models use — convolutions and matmuls in the low dtype, group/layer norms in float32 — so activation
  dtypes (and bytes) are those of the real run, the cast copies counted while their op runs.
"""
from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


LOW_PRECISION = {F.conv1d, F.conv2d, F.conv3d, F.conv_transpose2d, F.linear, torch.matmul, torch.Tensor.matmul,
                 torch.Tensor.__matmul__, torch.mm, torch.bmm, torch.baddbmm, torch.addmm,
                 F.scaled_dot_product_attention}               # CUDA autocast: computed in fp16/bf16
FLOAT32 = {F.group_norm, F.layer_norm, F.softmax, torch.softmax, torch.Tensor.softmax}   # CUDA autocast: in fp32


def _cast_floats(args, kwargs, dtype):
    from torch.utils._pytree import tree_map

    def cast(t):
        return t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != dtype else t

    return tree_map(cast, args), tree_map(cast, kwargs)


class _FusedAttention(TorchFunctionMode):
    """SDPA as one fused kernel: only the output is allocated; its FLOPs are counted here. With
    ``autocast`` set, the inputs of the listed functions are cast as CUDA autocast casts them (the cast
    copies are new tensors, so the byte tracker below sees them live while their op runs)."""

    def __init__(self, autocast: torch.dtype | None = None):
        super().__init__()
        self.flops = 0
        self.autocast = autocast

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.autocast is not None and func in LOW_PRECISION:
            args, kwargs = _cast_floats(args, kwargs, self.autocast)
        elif self.autocast is not None and func in FLOAT32:
            args, kwargs = _cast_floats(args, kwargs, torch.float32)
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


def trace(fn, autocast: torch.dtype | None = None) -> tuple[int, int]:
    """(FLOPs, peak live activation bytes) of ``fn()`` run on meta tensors; ``autocast``: the low dtype
    of a CUDA ``torch.autocast`` region the real call runs in (None: no autocast)."""
    attention, tracker = _FusedAttention(autocast), _LiveBytes()
    with torch.no_grad(), attention, tracker:
        fn()
    return int(tracker.flops + attention.flops), tracker.peak
