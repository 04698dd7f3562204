"""Build a diffusers model class from a config.json dict, directly on a device (``meta`` = no memory)."""
from __future__ import annotations

from typing import Any, Mapping


def build_from_config(cls, config: Mapping[str, Any], device="meta", dtype=None):
    """``cls.from_config(config)`` (diffusers: unknown keys are logged and ignored, private ``_*`` keys
    dropped) with the parameters created directly on ``device``.

    Some diffusers modules (``AlphaBlender``) create their parameter with the legacy ``torch.Tensor([..])``
    constructor, which ignores the default-device context, so stragglers are moved afterwards.
    """
    import torch

    device = torch.device(device)
    with device:
        model = cls.from_config(dict(config))
    stray = [t for t in [*model.parameters(), *model.buffers()] if t.device != device]
    if stray:
        torch.nn.Module.to(model, device)
    if dtype is not None:
        torch.nn.Module.to(model, dtype)
    return model
