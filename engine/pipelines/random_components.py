"""Random-weight :class:`~engine.pipelines.components.Components` built in memory, of the published sizes
(:mod:`engine.models.published_configs`) or the tiny test ones (:mod:`engine.random_checkpoint`): the
benchmark, the cost model and the tests run the renderers on them without any download."""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch

from engine.models.published_configs import FULL
from engine.random_checkpoint import SCHEDULER, TINY, random_lora

BENCH_LORA_RANK = 16  # the released LoRA's rank is not known here; its cost is small either way


def configs_for(size: str) -> dict:
    if size not in ("full", "tiny"):
        raise ValueError(f"model size must be 'full' or 'tiny', not {size!r}")
    return copy.deepcopy(FULL if size == "full" else TINY)


def build_components(kind: str, size: str = "full", *, device=None, dtype=None, lora: bool = True, seed: int = 0):
    """Random-weight components of ``kind`` ("inverse"/"forward"), built directly on the device in the
    pipelines' dtypes (VAE in float32 as ``force_upcast`` asks)."""
    from engine.models import build_env_encoder_from_config, build_unet_from_config, build_vae_from_config
    from engine.models.lora import load_lora
    from engine.pipelines.components import Components, pick_device, pick_dtype

    if kind not in ("inverse", "forward"):
        raise ValueError(f"kind must be 'inverse' or 'forward', not {kind!r}")
    cfg = configs_for(size)
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    torch.manual_seed(seed)
    unet = build_unet_from_config(cfg[f"{kind}_unet"], device=dev, dtype=dt).eval()
    if kind == "inverse" and getattr(unet, "context_embedding", None) is not None:
        with torch.no_grad():
            unet.context_embedding.weight.normal_(0.0, 1.0)
    vae_dt = torch.float32 if cfg["vae"].get("force_upcast") else dt
    vae = build_vae_from_config(cfg["vae"], device=dev, dtype=vae_dt).eval()
    comps = Components(root=Path(f"<random {size} {kind}>"), unet=unet, vae=vae, scheduler_config=dict(SCHEDULER),
                       device=dev, dtype=dt)
    if kind == "forward":
        comps.env_encoder = build_env_encoder_from_config(cfg["env_encoder"], device=dev, dtype=dt).eval()
        if lora:
            from safetensors.torch import save_file

            rank = 4 if size == "tiny" else BENCH_LORA_RANK
            state = random_lora(unet, rank, torch.Generator("cpu").manual_seed(seed + 1))
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "pytorch_lora_weights.safetensors"
                save_file(state, str(path))
                load_lora(unet, path, adapter_name="bench-lora")
            comps.lora_path = Path(f"<random rank-{rank} LoRA>")
    comps.info = {"root": str(comps.root), "device": str(dev), "dtype": str(dt).replace("torch.", ""),
                  "lora": str(comps.lora_path) if comps.lora_path else None}
    return comps
