"""Temporal convolutions evaluated as 2-D convolutions (exact up to floating-point rounding).

The SVD UNet's temporal resnets and the VAE's temporal decoder use ``nn.Conv3d`` with a ``(k, 1, 1)``
kernel: a 1-D convolution along the frames, the same for every pixel. On a CPU PyTorch runs such a
Conv3d through its generic ``slow_conv3d`` path (im2col + GEMM); the same arithmetic as a Conv2d with a
``(k, 1)`` kernel over ``(frames, pixels)`` goes through oneDNN and is 2–4× faster (tiny UNet shapes and
a full-size 320-channel 64² layer alike; 10–12 % of a tiny UNet step on the CPU was this op).

:func:`fold_temporal_convs` swaps the class of every such module to :class:`TemporalConv3d` (same
parameters, same state-dict keys, same results up to rounding); :func:`unfold_temporal_convs` undoes it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TemporalConv3d(nn.Conv3d):
    """A ``(k, 1, 1)``-kernel Conv3d computed as a ``(k, 1)`` Conv2d over (frames, height·width)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            return super().forward(x)
        b, c, f, h, w = x.shape
        y = F.conv2d(x.reshape(b, c, f, h * w), self.weight.flatten(3), self.bias, padding=(self.padding[0], 0))
        return y.reshape(b, y.shape[1], y.shape[2], h, w)


def _foldable(m: nn.Module) -> bool:
    return (type(m) is nn.Conv3d and m.kernel_size[1:] == (1, 1) and m.stride == (1, 1, 1)
            and m.dilation == (1, 1, 1) and m.groups == 1 and m.padding_mode == "zeros"
            and isinstance(m.padding, tuple) and m.padding[1:] == (0, 0))


def fold_temporal_convs(*modules: nn.Module) -> int:
    """Evaluate every foldable temporal Conv3d inside ``modules`` as a Conv2d; returns how many."""
    n = 0
    for module in modules:
        for m in (module.modules() if module is not None else ()):
            if _foldable(m):
                m.__class__ = TemporalConv3d
                n += 1
    return n


def unfold_temporal_convs(*modules: nn.Module) -> int:
    """Back to stock ``nn.Conv3d`` (the reference's computation); returns how many."""
    n = 0
    for module in modules:
        for m in (module.modules() if module is not None else ()):
            if type(m) is TemporalConv3d:
                m.__class__ = nn.Conv3d
                n += 1
    return n


def default_fold(device: torch.device) -> bool:
    """Fold on CPUs, where it was measured faster; CUDA keeps cuDNN's Conv3d until a GPU benchmark
    (``bench`` variant ``temporal_conv``) shows the fold wins there too."""
    return torch.device(device).type == "cpu"
