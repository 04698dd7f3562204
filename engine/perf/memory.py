"""Memory modes: trade speed for device memory without changing what the models compute.

| mode | what it does | cost |
|---|---|---|
| ``default`` | all models resident on the device; VAE encode 4 images per call, decode in chunks of 8 frames (the reference's) | — |
| ``low-vram`` | *model CPU offload* (each of UNet / VAE / EnvEncoder moved to the GPU only while it runs, via accelerate hooks), UNet feed-forward chunking (exact), one inverse pass per UNet batch, encode 1 image per call, decode chunks of 2 frames with a 1-frame overlap | PCIe transfers per stage; more, smaller decoder calls |
| ``minimal`` | *sequential offload* (every sub-module's weights streamed to the GPU for its own forward), feed-forward chunking, encode 1 image and decode 1 frame per call | much slower; the last resort for small cards |

Every mode evaluates each transformer feed-forward over at most :data:`FF_MAX_TOKENS` tokens at a time
(:func:`chunk_feed_forward`, installed by the renderers): one 24-frame 512² clip's worth, so a batch of
five inverse passes keeps one pass's GEGLU intermediate instead of five, at no cost in speed (each
chunk is still a large matmul). The low-VRAM modes chunk further, one frame at a time. Feed-forward
chunking is exact (the feed-forward is row-wise: same numbers).
Smaller decode chunks change the temporal decoder's context at chunk borders (as the reference's own
``decode_chunk_size`` does); the overlap cross-fades them. On a CPU-only machine the offload parts
have nothing to offload to and are skipped (chunking still applies).
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import torch

from engine.contract.params import MEMORY_MODES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemoryPlan:
    mode: str
    decode_chunk: int | None      # None: keep the caller's setting
    decode_overlap: int | None
    encode_chunk: int             # images per VAE encoder call (exact at any size)
    unet_items: int | None        # inverse passes per UNet batch (None: all at once)
    ff_chunking: bool
    offload: str | None           # None, "model", "sequential"


PLANS = {
    "default": MemoryPlan("default", None, None, 4, None, False, None),
    "low-vram": MemoryPlan("low-vram", 2, 1, 1, 1, True, "model"),
    "minimal": MemoryPlan("minimal", 1, 0, 1, 1, True, "sequential"),
}


def memory_plan(mode: str) -> MemoryPlan:
    try:
        return PLANS[mode]
    except KeyError:
        raise ValueError(f"memory mode must be one of {', '.join(MEMORY_MODES)}, not {mode!r}") from None


def enable_ff_chunking(unet: torch.nn.Module) -> int:
    """Feed-forward layers one frame at a time (spatial blocks: rows are batch×frames) / one frame
    position at a time (temporal blocks: rows are batch×pixels, tokens are frames). Exact; the
    GEGLU intermediate (8 × channels per token) then exists for one frame instead of the whole batch."""
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


def _models(components) -> list[torch.nn.Module]:
    return [m for m in (components.env_encoder, components.vae, components.unet) if m is not None]


def apply_memory_mode(components, mode: str) -> MemoryPlan:
    """Set up ``components`` (freshly loaded, on their device) for ``mode``; returns the plan, whose
    decode settings the caller applies. Offload needs a CUDA device and ``accelerate``."""
    plan = memory_plan(mode)
    components.vae._dr_encode_chunk = plan.encode_chunk
    if plan.ff_chunking:
        enable_ff_chunking(components.unet)
    device = torch.device(components.device)
    if plan.offload is None:
        return plan
    if device.type != "cuda":
        log.info("memory mode %s: no CUDA device, nothing to offload (feed-forward chunking only)", mode)
        return plan
    import accelerate
    from accelerate.hooks import add_hook_to_module

    models = _models(components)
    for model in models:
        model._dr_execution_device = device      # where the pipelines put the inputs (vae_codec.execution_device)
    if plan.offload == "model":
        for model in models:
            model.to("cpu")
            add_hook_to_module(model, _exclusive_hook_class()(device, models))
    else:
        for model in models:
            accelerate.cpu_offload(model, execution_device=device)
    torch.cuda.empty_cache()
    return plan


def _on_device(module: torch.nn.Module, device: torch.device) -> bool:
    p = next(module.parameters(), None)
    return p is not None and p.device.type == device.type


@functools.lru_cache(maxsize=1)
def _exclusive_hook_class():
    from accelerate.hooks import ModelHook
    from accelerate.utils import send_to_device

    class ExclusiveOnDevice(ModelHook):
        """Model CPU offload: before a model runs (forward, or the VAE's encode/decode through diffusers'
        ``apply_forward_hook``) every other model of the group goes back to the CPU and this one to the
        device, so only one model's weights occupy the device at a time."""

        def __init__(self, device, group):
            super().__init__()
            self.device, self.group = device, group

        def pre_forward(self, module, *args, **kwargs):
            moved = False
            for other in self.group:
                if other is not module and _on_device(other, self.device):
                    other.to("cpu")
                    moved = True
            if not _on_device(module, self.device):
                module.to(self.device)
            if moved:
                torch.cuda.empty_cache()
            return send_to_device(args, self.device), send_to_device(kwargs, self.device)

    return ExclusiveOnDevice
