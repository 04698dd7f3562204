"""Tone mappings used for the environment-map conditions (MODEL_SPEC §6.5).

All functions are per channel, operate on linear radiance ``E >= 0`` and accept numpy arrays or
torch tensors (returning the same kind).  They reproduce the original's float32 arithmetic:

* :func:`srgb_oetf` – the sRGB opto-electronic transfer function, *not* clamped (values above 1 map
  above 1, e.g. 65504 -> 107.1045).
* :func:`reinhard16` – extended Reinhard with white point 16: ``E (1 + E/256) / (1 + E)`` (unclamped).
* :func:`encode_ldr` – ``sRGB(clamp(reinhard16(E), 0, 1))``: the model's ``env_ldr`` input.
* :func:`encode_log` – ``clamp(sRGB(ln(1+E) / ln(1+log_scale)), 0, 1)``: the model's ``env_log`` input
  (note the OETF is applied to the log-encoded value, as in the original).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["SRGB_THRESHOLD", "encode_ldr", "encode_log", "reinhard16", "srgb_oetf"]

SRGB_THRESHOLD = 0.0031308


def _as_tensor(x):
    if isinstance(x, torch.Tensor):
        return x, False
    return torch.from_numpy(np.asarray(x, dtype=np.float32)), True


def _ret(t: torch.Tensor, was_numpy: bool):
    return t.numpy() if was_numpy else t


def srgb_oetf(x):
    """sRGB OETF: ``12.92 x`` for ``x <= 0.0031308`` else ``1.055 x^(1/2.4) - 0.055`` (no clamping)."""
    t, np_in = _as_tensor(x)
    lin = t * 12.92
    # clamp only inside the power branch so negative inputs do not produce NaN in the unused branch
    gam = 1.055 * torch.pow(torch.clamp(t, min=SRGB_THRESHOLD), 1.0 / 2.4) - 0.055
    return _ret(torch.where(t <= SRGB_THRESHOLD, lin, gam), np_in)


def reinhard16(x):
    """Extended Reinhard, white point 16 (per channel, unclamped): ``E (1 + E/256) / (1 + E)``."""
    t, np_in = _as_tensor(x)
    return _ret(t * (1.0 + t / 256.0) / (1.0 + t), np_in)


def encode_ldr(x):
    """``env_ldr`` encoding: ``sRGB(clamp(reinhard16(E), 0, 1))`` -> [0, 1]."""
    t, np_in = _as_tensor(x)
    return _ret(srgb_oetf(torch.clamp(reinhard16(t), 0.0, 1.0)), np_in)


def encode_log(x, log_scale: float = 10000.0):
    """``env_log`` encoding: ``clamp(sRGB(ln(1+E) / ln(1+log_scale)), 0, 1)`` -> [0, 1]."""
    if not log_scale > 0:
        raise ValueError(f"log_scale must be > 0, got {log_scale!r}")
    t, np_in = _as_tensor(x)
    enc = torch.log1p(t) / math.log1p(float(log_scale))
    return _ret(torch.clamp(srgb_oetf(enc), 0.0, 1.0), np_in)
