"""Block routing of the DiffusionRenderer UNet forward, on diffusers' spatio-temporal blocks.

Each cross-attention block receives its own level's encoder tokens (per-level routing of the
forward model); the spatio-temporal transformer never builds the broadcast temporal context when
no temporal block consumes it (MODEL_SPEC §2.4).
"""
from __future__ import annotations

import torch
import torch.nn as nn


def down_cross(block, hidden_states, temb, ehs, image_only_indicator, time_context):
    output_states = ()
    for resnet, attn in zip(block.resnets, block.attentions):
        hidden_states = resnet(hidden_states, temb, image_only_indicator=image_only_indicator)
        hidden_states = spatio_temporal_transformer_forward(attn, hidden_states, ehs, image_only_indicator,
                                                            time_context)
        output_states = output_states + (hidden_states,)
    if block.downsamplers is not None:
        for downsampler in block.downsamplers:
            hidden_states = downsampler(hidden_states)
        output_states = output_states + (hidden_states,)
    return hidden_states, output_states


def mid(block, hidden_states, temb, ehs, image_only_indicator, time_context):
    hidden_states = block.resnets[0](hidden_states, temb, image_only_indicator=image_only_indicator)
    for attn, resnet in zip(block.attentions, block.resnets[1:]):
        hidden_states = spatio_temporal_transformer_forward(attn, hidden_states, ehs, image_only_indicator,
                                                            time_context)
        hidden_states = resnet(hidden_states, temb, image_only_indicator=image_only_indicator)
    return hidden_states


def up_cross(block, hidden_states, res_hidden_states_tuple, temb, ehs, image_only_indicator,
             time_context, upsample_size):
    for resnet, attn in zip(block.resnets, block.attentions):
        res_hidden_states = res_hidden_states_tuple[-1]
        res_hidden_states_tuple = res_hidden_states_tuple[:-1]
        hidden_states = torch.cat([hidden_states, res_hidden_states], dim=1)
        hidden_states = resnet(hidden_states, temb, image_only_indicator=image_only_indicator)
        hidden_states = spatio_temporal_transformer_forward(attn, hidden_states, ehs, image_only_indicator,
                                                            time_context)
    if block.upsamplers is not None:
        for upsampler in block.upsamplers:
            hidden_states = upsampler(hidden_states, upsample_size)
    return hidden_states


def spatio_temporal_transformer_forward(
    module: nn.Module,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    image_only_indicator: torch.Tensor,
    time_context: torch.Tensor | None = None,
) -> torch.Tensor:
    """Forward of a diffusers ``TransformerSpatioTemporalModel`` (same maths), except for the temporal context.

    The temporal context (the first frame's encoder tokens broadcast to every spatial position,
    ``(B*h*w, S, C)``) is only built when some temporal block has an ``attn2`` that consumes it, and
    only when no explicit ``time_context`` is given.  For the forward model (no temporal ``attn2``)
    it is never built: with multi-resolution env tokens it would be ~21 GB at 512² (MODEL_SPEC §2.4).
    """
    batch_frames, _, height, width = hidden_states.shape
    num_frames = image_only_indicator.shape[-1]
    batch_size = batch_frames // num_frames

    temporal_blocks = module.temporal_transformer_blocks
    needs_context = any(tb.attn2 is not None for tb in temporal_blocks)
    if not needs_context:
        temporal_context = None
    elif torch.is_tensor(time_context):
        temporal_context = time_context
    else:
        first = encoder_hidden_states.reshape(batch_size, num_frames, -1, encoder_hidden_states.shape[-1])[:, 0]
        temporal_context = first[:, None].broadcast_to(batch_size, height * width, first.shape[-2], first.shape[-1])
        temporal_context = temporal_context.reshape(batch_size * height * width, -1, first.shape[-1])

    residual = hidden_states
    hidden_states = module.norm(hidden_states)
    inner_dim = hidden_states.shape[1]
    hidden_states = hidden_states.permute(0, 2, 3, 1).reshape(batch_frames, height * width, inner_dim)
    hidden_states = module.proj_in(hidden_states)

    frame_index = torch.arange(num_frames, device=hidden_states.device).repeat(batch_size, 1).reshape(-1)
    t_emb = module.time_proj(frame_index).to(dtype=hidden_states.dtype)
    emb = module.time_pos_embed(t_emb)[:, None, :]

    for block, temporal_block in zip(module.transformer_blocks, temporal_blocks):
        hidden_states = block(hidden_states, encoder_hidden_states=encoder_hidden_states)
        hidden_states_mix = temporal_block(hidden_states + emb, num_frames=num_frames,
                                           encoder_hidden_states=temporal_context)
        hidden_states = module.time_mixer(x_spatial=hidden_states, x_temporal=hidden_states_mix,
                                          image_only_indicator=image_only_indicator)

    hidden_states = module.proj_out(hidden_states)
    hidden_states = hidden_states.reshape(batch_frames, height, width, inner_dim).permute(0, 3, 1, 2).contiguous()
    return hidden_states + residual
