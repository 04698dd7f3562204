"""Memory modes of the renderers: trade speed for device memory without changing what the models compute.

| mode | what it does | cost |
|---|---|---|
| ``default`` | all models resident on the device; VAE encode 4 images per call, decode in chunks of 8 frames (the reference's) | — |
| ``low-vram`` | *model CPU offload* (each of UNet / VAE / EnvEncoder on the GPU only while it runs), UNet feed-forward chunking per frame (exact), one inverse pass per UNet batch, encode 1 image per call, decode chunks of 2 frames with a 1-frame overlap | PCIe transfers per stage; more, smaller decoder calls |
| ``minimal`` | *sequential offload* (accelerate's ``cpu_offload``: every sub-module's weights streamed to the GPU for its own forward), feed-forward chunking, encode 1 image and decode 1 frame per call | much slower; the last resort for small cards |

The renderers own their mode, as diffusers pipelines do: ``Renderer.from_pretrained(..., memory="low-vram")``
or ``renderer.enable_memory_mode("low-vram")`` (:class:`MemoryModes`), and the renderer passes its encode
chunk and execution device to the VAE codec itself. Every mode also caps each transformer feed-forward at
one clip's tokens (:mod:`engine.models.ff_chunk`). Smaller decode chunks change the temporal decoder's
context at chunk borders (as the reference's own ``decode_chunk_size`` does); the overlap cross-fades them.
On a CPU-only machine the offload parts have nothing to offload to and are skipped (chunking still applies).
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import torch

from engine.contract.params import MEMORY_MODES
from engine.models.ff_chunk import chunk_feed_forward_per_frame
from engine.pipelines.vae_codec import ENCODE_CHUNK   # images per VAE encoder call in the default mode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemoryPlan:
    mode: str
    decode_chunk: int | None      # None: keep the caller's setting
    decode_overlap: int | None
    encode_chunk: int             # images per VAE encoder call (exact at any size)
    unet_items: int | None        # inverse passes per UNet batch (None: all at once)
    ff_chunking: bool             # feed-forwards one frame at a time
    offload: str | None           # None, "model", "sequential"

    def decode(self, chunk: int, overlap: int) -> tuple[int, int]:
        """A job's (decode_chunk, decode_overlap), capped by this mode's."""
        chunk = min(chunk, self.decode_chunk) if self.decode_chunk else chunk
        overlap = overlap if self.decode_overlap is None else min(overlap, self.decode_overlap)
        return chunk, min(overlap, max(0, chunk - 1))


PLANS = {
    "default": MemoryPlan("default", None, None, ENCODE_CHUNK, None, False, None),
    "low-vram": MemoryPlan("low-vram", 2, 1, 1, 1, True, "model"),
    "minimal": MemoryPlan("minimal", 1, 0, 1, 1, True, "sequential"),
}
assert tuple(PLANS) == MEMORY_MODES, "engine/contract/params.py MEMORY_MODES and the plans differ"


def memory_plan(mode: str) -> MemoryPlan:
    try:
        return PLANS[mode]
    except KeyError:
        raise ValueError(f"memory mode must be one of {', '.join(MEMORY_MODES)}, not {mode!r}") from None


class MemoryModes:
    """Mixin of the renderers (needs ``unet``, ``vae``, optional ``env_encoder`` and ``device``)."""

    plan: MemoryPlan = PLANS["default"]

    @property
    def memory(self) -> str:
        return self.plan.mode

    @property
    def encode_chunk(self) -> int:
        return self.plan.encode_chunk

    @property
    def offloaded(self) -> bool:
        """True once the weights live on the CPU and accelerate hooks move them for each call."""
        return getattr(self, "_offload", None) is not None

    def _models(self) -> list[torch.nn.Module]:
        return [m for m in (getattr(self, "env_encoder", None), self.vae, self.unet) if m is not None]

    def enable_memory_mode(self, mode: str) -> MemoryPlan:
        """Set this freshly loaded renderer up for ``mode`` (once; the default mode changes nothing)."""
        plan = memory_plan(mode)
        if plan == self.plan:
            return plan
        if self.plan.mode != "default":
            raise ValueError(f"this renderer already runs in memory mode {self.plan.mode!r}; load it again "
                             f"for {mode!r}")
        self.plan = plan
        if plan.ff_chunking:
            self.enable_feed_forward_chunking()
        if plan.offload == "model":
            self.enable_model_cpu_offload()
        elif plan.offload == "sequential":
            self.enable_sequential_cpu_offload()
        return plan

    def enable_feed_forward_chunking(self) -> int:
        """UNet feed-forwards one frame at a time (exact; diffusers' ``set_chunk_feed_forward``)."""
        return chunk_feed_forward_per_frame(self.unet)

    def _offload_device(self) -> torch.device | None:
        device = torch.device(self.device)
        if device.type != "cuda":
            log.info("memory mode %s: no CUDA device, nothing to offload", self.plan.mode)
            return None
        return device

    def enable_model_cpu_offload(self) -> None:
        """Each model on the device only while it runs; the others wait on the CPU.

        Not accelerate's ``cpu_offload_with_hook`` chain (as diffusers' ``enable_model_cpu_offload``):
        that offloads only the *previous* model of a fixed order and relies on the pipeline freeing the
        rest at the end of a call, so the VAE decode after the UNet would run with the UNet still
        resident, breaking the low-VRAM peak (weights of one model + its activations) the cost model
        predicts. The hook below (an accelerate ``ModelHook``) moves the others off whatever the order."""
        device = self._offload_device()
        if device is None:
            return
        from accelerate.hooks import add_hook_to_module

        models = self._models()
        for model in models:
            model.to("cpu")
            add_hook_to_module(model, _exclusive_hook_class()(device, models))
        self._offload = "model"
        torch.cuda.empty_cache()

    def enable_sequential_cpu_offload(self) -> None:
        """Every sub-module's weights streamed to the device for its own forward (accelerate ``cpu_offload``)."""
        device = self._offload_device()
        if device is None:
            return
        import accelerate

        for model in self._models():
            accelerate.cpu_offload(model, execution_device=device)
        self._offload = "sequential"
        torch.cuda.empty_cache()


def _on_device(module: torch.nn.Module, device: torch.device) -> bool:
    p = next(module.parameters(), None)
    return p is not None and p.device.type == device.type


@functools.lru_cache(maxsize=1)
def _exclusive_hook_class():
    from accelerate.hooks import ModelHook
    from accelerate.utils import send_to_device

    class ExclusiveOnDevice(ModelHook):
        """Before a model runs (forward, or the VAE's encode/decode through diffusers'
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
