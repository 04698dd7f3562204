"""LoRA controls of :class:`~engine.models.unet.DRUNet` (a mixin): the LoRA layers peft injected, a
per-call scale, and a per-call merge of the LoRA into the weights."""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn


class LoraControls:
    @property
    def has_lora(self) -> bool:
        return bool(self.lora_layers())

    def lora_layers(self) -> list[nn.Module]:
        from peft.tuners.lora import LoraLayer

        return [m for m in self.modules() if isinstance(m, LoraLayer) and len(m.lora_A) > 0]

    # ------------------------------------------------------------------ LoRA scale
    @contextlib.contextmanager
    def lora_scale_applied(self, scale: float | None):
        """Multiply every LoRA layer's scaling by ``scale`` inside the block; restore it exactly afterwards."""
        if scale is None or float(scale) == 1.0:
            yield
            return
        layers = self.lora_layers()
        saved = [(layer, dict(layer.scaling)) for layer in layers]
        try:
            for layer, scalings in saved:
                for name, value in scalings.items():
                    layer.scaling[name] = value * float(scale)
            yield
        finally:
            for layer, scalings in saved:
                layer.scaling.clear()
                layer.scaling.update(scalings)

    @contextlib.contextmanager
    def lora_merged(self, scale: float | None = None):
        """Inside the block every LoRA layer runs as one matmul with ``W + scale·ΔW`` (its delta folded
        into a merged copy of the base weight) instead of three; the original weight objects are put
        back afterwards, so nothing drifts across jobs. Exact up to rounding; costs one copy of the
        LoRA-targeted weights while active. Do not combine with per-call ``lora_scale``."""
        layers = self.lora_layers()
        s = 1.0 if scale is None else float(scale)
        saved = []
        try:
            with torch.no_grad():
                for layer in layers:
                    names = [n for n in layer.active_adapters if n in layer.lora_A and n not in layer.merged_adapters]
                    base = layer.get_base_layer()
                    if not names or not isinstance(getattr(base, "weight", None), nn.Parameter):
                        continue
                    weight = base.weight
                    delta = sum(layer.get_delta_weight(n).to(torch.float32) for n in names) * s
                    merged = nn.Parameter((weight.to(torch.float32) + delta).to(weight.dtype), requires_grad=False)
                    saved.append((layer, base, weight, names))
                    base.weight = merged
                    layer.merged_adapters.extend(names)
            yield
        finally:
            for layer, base, weight, names in saved:
                base.weight = weight
                for n in names:
                    layer.merged_adapters.remove(n)
