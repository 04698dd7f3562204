"""Config-dict helpers shared by the model builders."""
from __future__ import annotations

import inspect
from typing import Any, Mapping


def init_kwargs_from_config(cls, config: Mapping[str, Any]) -> tuple[dict, list]:
    """Split a config.json dict into (constructor kwargs of ``cls``, ignored unknown public keys).

    Keys starting with ``_`` (``_class_name``, ``_diffusers_version``, ``_name_or_path``) are dropped
    silently; other unknown keys are returned so the caller can log them.
    """
    params = inspect.signature(cls.__init__).parameters
    accepted = {k: v for k, v in config.items() if k in params and k != "self" and not k.startswith("_")}
    ignored = sorted(k for k in config if k not in params and not k.startswith("_"))
    return accepted, ignored


def construct_on(cls, kwargs: Mapping[str, Any], device, dtype=None):
    """Instantiate ``cls(**kwargs)`` with parameters created directly on ``device`` (``meta`` = no memory).

    Some diffusers modules (``AlphaBlender``) create their parameter with the legacy ``torch.Tensor([..])``
    constructor, which ignores the default-device context, so stragglers are moved afterwards.
    """
    import torch

    device = torch.device(device)
    with device:
        model = cls(**kwargs)
    stray = [t for t in [*model.parameters(), *model.buffers()] if t.device != device]
    if stray:
        torch.nn.Module.to(model, device)
    if dtype is not None:
        torch.nn.Module.to(model, dtype)
    return model
