"""Random-weight checkpoints in the published folder layout (tests, smoke runs, benchmarks).

``write_random_checkpoint(folder, "inverse"|"forward", size="tiny")`` writes ``unet/``, ``vae/``,
``scheduler/`` (+ ``env_encoder/`` and a random ``lora/`` for forward) exactly as the published
repositories lay them out, so every loader path is exercised. ``size="tiny"`` uses the structure of
the real models with 32 channels everywhere (seconds on a CPU); the full-size configurations live
with the benchmark. Weights are random: outputs are noise-like pictures, not renderings.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "beta_start": 0.00085, "clip_sample": False, "final_sigmas_type": "zero", "interpolation_type": "linear",
    "num_train_timesteps": 1000, "prediction_type": "v_prediction", "rescale_betas_zero_snr": False,
    "set_alpha_to_one": False, "sigma_max": 700.0, "sigma_min": 0.002, "skip_prk_steps": True,
    "steps_offset": 1, "timestep_spacing": "leading", "timestep_type": "continuous", "trained_betas": None,
    "use_karras_sigmas": True,
}
_UNET_COMMON = {
    "_class_name": "UNetCustomSpatioTemporalConditionModel", "addition_time_embed_dim": 32,
    "block_out_channels": [32, 32, 32, 32], "context_vocab_size": 16,
    "down_block_types": ["CrossAttnDownBlockSpatioTemporal"] * 3 + ["DownBlockSpatioTemporal"],
    "layers_per_block": 2, "num_attention_heads": [1, 2, 4, 4], "num_frames": 14, "out_channels": 4,
    "projection_class_embeddings_input_dim": 96, "sample_size": 16, "transformer_layers_per_block": 1,
    "up_block_types": ["UpBlockSpatioTemporal"] + ["CrossAttnUpBlockSpatioTemporal"] * 3,
}
TINY = {
    "inverse_unet": {**_UNET_COMMON, "in_channels": 8, "cross_attention_dim": 32, "temporal_cross_attention_dim": 32,
                     "context_embedding_type": "clip", "multi_res_encoder_hidden_states": False},
    "forward_unet": {**_UNET_COMMON, "in_channels": 24, "cross_attention_dim": [32, 32, 32, 32],
                     "temporal_cross_attention_dim": None, "context_embedding_type": None,
                     "multi_res_encoder_hidden_states": True},
    "vae": {"_class_name": "AutoencoderKLTemporalDecoder", "block_out_channels": [32, 32, 32],
            "down_block_types": ["DownEncoderBlock2D"] * 3, "force_upcast": True, "in_channels": 3,
            "latent_channels": 4, "layers_per_block": 2, "out_channels": 3, "sample_size": 64,
            "scaling_factor": 0.18215},
    "env_encoder": {"_class_name": "EnvEncoder", "channels": [32, 32, 32, 32], "in_channels": 12,
                    "latent_encoder": True, "num_res_blocks": 2},
}
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


def _save_module(module: torch.nn.Module, config: dict, folder: Path, dtype: torch.dtype) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    state = {k: v.detach().to(dtype).contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(folder / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})


def random_lora(unet: torch.nn.Module, rank: int, gen: torch.Generator) -> dict:
    """diffusers-format LoRA (``unet.<path>.lora.down/up.weight``) on every attention projection."""
    state = {}
    for name, mod in unet.named_modules():
        if isinstance(mod, torch.nn.Linear) and any(name.endswith(t) for t in LORA_TARGETS) and ".attn" in name:
            down = torch.randn(rank, mod.in_features, generator=gen) * 0.1
            up = torch.randn(mod.out_features, rank, generator=gen) * 0.1
            state[f"unet.{name}.lora.down.weight"] = down
            state[f"unet.{name}.lora.up.weight"] = up
    return state


def write_random_checkpoint(folder, kind: str, *, size: str = "tiny", seed: int = 0, configs: dict | None = None,
                            weight_dtype: torch.dtype = torch.float16, lora_rank: int | None = 4) -> Path:
    """Write a random-weight ``kind`` ("inverse"/"forward") checkpoint into ``folder`` (atomically:
    built in a temporary sibling folder, then renamed). Returns the folder."""
    from safetensors.torch import save_file

    from engine.models import build_env_encoder_from_config, build_unet_from_config, build_vae_from_config

    if kind not in ("inverse", "forward"):
        raise ValueError(f"kind must be 'inverse' or 'forward', not {kind!r}")
    if configs is None:
        if size != "tiny":
            raise ValueError("only size='tiny' has built-in configs; pass configs= for other sizes")
        configs = TINY
    folder = Path(folder)
    if folder.exists():
        raise FileExistsError(f"{folder} already exists; choose a new folder")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        torch.manual_seed(seed)
        unet_cfg = configs[f"{kind}_unet"]
        unet = build_unet_from_config(unet_cfg, device="cpu")
        if kind == "inverse" and getattr(unet, "context_embedding", None) is not None:
            with torch.no_grad():  # distinct passes (the class initialises the embedding near zero)
                unet.context_embedding.weight.normal_(0.0, 1.0)
        _save_module(unet, unet_cfg, tmp / "unet", weight_dtype)
        vae = build_vae_from_config(configs["vae"], device="cpu")
        _save_module(vae, configs["vae"], tmp / "vae", weight_dtype)
        (tmp / "scheduler").mkdir()
        (tmp / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER, indent=2))
        index = {"_class_name": "RGBXVideoDiffusionPipeline", "env_encoder": [None, None],
                 "feature_extractor": [None, None], "image_encoder": [None, None],
                 "scheduler": ["diffusers", "EulerDiscreteScheduler"],
                 "unet": ["src.models.custom_unet_st", "UNetCustomSpatioTemporalConditionModel"],
                 "vae": ["diffusers", "AutoencoderKLTemporalDecoder"]}
        if kind == "forward":
            enc = build_env_encoder_from_config(configs["env_encoder"], device="cpu")
            _save_module(enc, configs["env_encoder"], tmp / "env_encoder", weight_dtype)
            index["env_encoder"] = ["src.models.env_encoder", "EnvEncoder"]
            if lora_rank:
                gen = torch.Generator("cpu").manual_seed(seed + 1)
                (tmp / "lora").mkdir()
                save_file(random_lora(unet, lora_rank, gen), str(tmp / "lora" / "pytorch_lora_weights.safetensors"),
                          metadata={"format": "pt"})
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
