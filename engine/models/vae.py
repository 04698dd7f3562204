"""The SVD video VAE: diffusers' ``AutoencoderKLTemporalDecoder``, built from a ``vae/config.json`` dict."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from diffusers.models.autoencoders.autoencoder_kl_temporal_decoder import AutoencoderKLTemporalDecoder

from ._config import build_from_config


def build_vae_from_config(config: Mapping[str, Any], device: str | torch.device = "meta",
                          dtype: torch.dtype | None = None) -> AutoencoderKLTemporalDecoder:
    return build_from_config(AutoencoderKLTemporalDecoder, config, device, dtype)


def vae_scale_factor(vae: AutoencoderKLTemporalDecoder) -> int:
    """Spatial down-sampling factor of the VAE: 2**(levels-1) (8 for SVD, 4 for the tiny golden VAE)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def make_group_norm_inputs_contiguous(module: torch.nn.Module) -> list:
    """Feed every ``GroupNorm`` of ``module`` a contiguous tensor (returns the hook handles).

    torch's CPU GroupNorm uses a less accurate kernel on channels-last/transposed inputs (golden
    README §6.5); diffusers' VAE mid-block attention hands GroupNorm a transposed view.  The golden
    oracle made these inputs contiguous.  Same maths; only float rounding changes (~1e-6 here).
    """
    def _hook(_mod, args):
        return (args[0].contiguous(),) + tuple(args[1:])

    return [m.register_forward_pre_hook(_hook) for m in module.modules() if isinstance(m, torch.nn.GroupNorm)]
