"""DiffusionRenderer models: UNet (inverse/forward), EnvEncoder, SVD VAE, verified loading, LoRA."""
from .checkpoint import (
    CheckpointFileMissingError,
    CheckpointMismatchError,
    find_weight_files,
    load_env_encoder,
    load_unet,
    load_vae,
    read_config,
    read_root_config,
    read_safetensors_header,
    verified_header,
    verify_header_against_module,
)
from .env_encoder import DEFAULT_IN_LABELS, EnvEncoder, build_env_encoder_from_config
from .lora import LoraLoadError, load_lora
from .unet import GBUFFER_INDEX, DRUNet, build_unet_from_config
from .unet_blocks import spatio_temporal_transformer_forward
from .vae import build_vae_from_config, make_group_norm_inputs_contiguous, vae_scale_factor

__all__ = [
    "CheckpointFileMissingError",
    "CheckpointMismatchError",
    "DEFAULT_IN_LABELS",
    "DRUNet",
    "EnvEncoder",
    "GBUFFER_INDEX",
    "LoraLoadError",
    "build_env_encoder_from_config",
    "build_unet_from_config",
    "build_vae_from_config",
    "find_weight_files",
    "load_env_encoder",
    "load_lora",
    "load_unet",
    "load_vae",
    "make_group_norm_inputs_contiguous",
    "read_config",
    "read_root_config",
    "read_safetensors_header",
    "spatio_temporal_transformer_forward",
    "vae_scale_factor",
    "verified_header",
    "verify_header_against_module",
]
