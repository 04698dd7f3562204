"""Environment-map encoder of the forward model (MODEL_SPEC §3), built from diffusers' ``DownEncoderBlock2D``.

Input: the three VAE latents of the env maps (each already multiplied by the VAE scaling factor),
concatenated on channels in ``in_labels`` order -> ``(N, in_channels, H, W)``.
Output: one feature map per block (block 0 keeps the resolution, blocks 1.. end in a stride-2
``Downsample2D``), e.g. at 64x64 latents: (N,320,64,64), (N,640,32,32), (N,1280,16,16), (N,1280,8,8).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_blocks import DownEncoderBlock2D

from ._config import build_from_config

DEFAULT_IN_LABELS = ("env_ldr", "env_log", "env_nrm")


class EnvEncoder(ModelMixin, ConfigMixin):
    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        in_channels: int = 12,
        channels: Sequence[int] = (320, 640, 1280, 1280),
        num_res_blocks: int = 2,
        latent_encoder: bool = True,
        in_labels: Sequence[str] = DEFAULT_IN_LABELS,
    ):
        super().__init__()
        if not latent_encoder:
            raise NotImplementedError("EnvEncoder with latent_encoder=false (pixel input) is not supported; "
                                      "the released forward checkpoints use latent_encoder=true")
        channels = list(channels)
        self.conv_in = nn.Conv2d(in_channels, channels[0], kernel_size=3, padding=1)
        blocks = []
        prev = channels[0]
        for i, ch in enumerate(channels):
            blocks.append(
                DownEncoderBlock2D(
                    in_channels=prev,
                    out_channels=ch,
                    num_layers=num_res_blocks,
                    resnet_eps=1e-6,
                    resnet_groups=32,
                    resnet_act_fn="silu",
                    add_downsample=i > 0,
                    downsample_padding=1,
                )
            )
            prev = ch
        self.down_blocks = nn.ModuleList(blocks)

    @property
    def in_labels(self) -> tuple[str, ...]:
        return tuple(self.config.in_labels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x`` (N, in_channels, H, W) -> list of one feature map per block (finest first)."""
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"EnvEncoder expects (N, {self.config.in_channels}, H, W), got {tuple(x.shape)}")
        # torch's CPU GroupNorm is less accurate on channels-last tensors (golden README §6.5).
        h = self.conv_in(x.contiguous())
        features = []
        for block in self.down_blocks:
            h = block(h.contiguous())
            features.append(h)
        return features

    @staticmethod
    def to_tokens(features: Sequence[torch.Tensor], batch_size: int, num_frames: int) -> list[torch.Tensor]:
        """Flatten each level ``(B*F, C, H, W)`` -> ``(B, F, H*W, C)`` (the UNet's multi-res token input)."""
        return [f.flatten(2).transpose(1, 2).reshape(batch_size, num_frames, -1, f.shape[1]) for f in features]


def build_env_encoder_from_config(config: Mapping[str, Any], device: str | torch.device = "meta",
                                  dtype: torch.dtype | None = None) -> EnvEncoder:
    return build_from_config(EnvEncoder, config, device, dtype)
