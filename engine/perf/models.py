"""Random-weight models for benchmarks: the published full-size configurations (same FLOPs and memory
as the real weights, nothing downloaded) or the tiny test ones, built in memory.

The full-size configurations are those of the published checkpoints (``unet/config.json`` of the
inverse and forward repositories, SVD's ``vae/config.json``, the EnvEncoder arguments of the forward
model); ``tests/test_perf.py`` checks them against the parameter counts of the golden manifests.
"""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch

from engine.random_checkpoint import SCHEDULER, TINY, _random_lora

_FULL_UNET = {
    "_class_name": "UNetCustomSpatioTemporalConditionModel", "sample_size": 96, "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlockSpatioTemporal"] * 3 + ["DownBlockSpatioTemporal"],
    "up_block_types": ["UpBlockSpatioTemporal"] + ["CrossAttnUpBlockSpatioTemporal"] * 3,
    "block_out_channels": [320, 640, 1280, 1280], "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 768, "layers_per_block": 2, "transformer_layers_per_block": 1,
    "num_attention_heads": [5, 10, 20, 20], "num_frames": 14, "context_vocab_size": 16,
}
FULL = {
    "inverse_unet": {**_FULL_UNET, "in_channels": 8, "cross_attention_dim": 1024, "temporal_cross_attention_dim": 1024,
                     "multi_res_encoder_hidden_states": False, "context_embedding_type": "clip"},
    "forward_unet": {**_FULL_UNET, "in_channels": 24, "cross_attention_dim": [320, 640, 1280, 1280],
                     "temporal_cross_attention_dim": None, "multi_res_encoder_hidden_states": True,
                     "context_embedding_type": None},
    "vae": {"_class_name": "AutoencoderKLTemporalDecoder", "in_channels": 3, "out_channels": 3,
            "down_block_types": ["DownEncoderBlock2D"] * 4, "block_out_channels": [128, 256, 512, 512],
            "layers_per_block": 2, "latent_channels": 4, "sample_size": 768, "scaling_factor": 0.18215,
            "force_upcast": True},
    "env_encoder": {"_class_name": "EnvEncoder", "in_channels": 12, "channels": [320, 640, 1280, 1280],
                    "num_res_blocks": 2, "latent_encoder": True},
}
FULL_PARAMETERS = {"inverse_unet": 1524639466, "forward_unet": 1473513642, "vae": 97742847, "env_encoder": 161462720}
BENCH_LORA_RANK = 16  # the released LoRA's rank is not known here; its cost is small either way


def configs_for(size: str) -> dict:
    if size not in ("full", "tiny"):
        raise ValueError(f"model size must be 'full' or 'tiny', not {size!r}")
    return copy.deepcopy(FULL if size == "full" else TINY)


def build_components(kind: str, size: str = "full", *, device=None, dtype=None, lora: bool = True, seed: int = 0):
    """Random-weight :class:`~engine.pipelines.components.Components` of ``kind`` ("inverse"/"forward"),
    built directly on the device in the pipelines' dtypes (VAE in float32 as ``force_upcast`` asks)."""
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
            state = _random_lora(unet, rank, torch.Generator("cpu").manual_seed(seed + 1))
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "pytorch_lora_weights.safetensors"
                save_file(state, str(path))
                load_lora(unet, path, adapter_name="bench-lora")
            comps.lora_path = Path(f"<random rank-{rank} LoRA>")
    comps.info = {"root": str(comps.root), "device": str(dev), "dtype": str(dt).replace("torch.", ""),
                  "lora": str(comps.lora_path) if comps.lora_path else None}
    return comps


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
