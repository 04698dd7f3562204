"""DiffusionRenderer spatio-temporal UNet (inverse and forward models), built on diffusers' SVD UNet.

One class, :class:`DRUNet`, covers both released architectures (MODEL_SPEC §1.5, §2):

* **inverse** (de-lighting): stock SVD structure plus a top-level pass-index embedding
  ``context_embedding = nn.Embedding(context_vocab_size, cross_attention_dim, max_norm=10)``
  (``context_embedding_type="clip"``) whose row is added to the (all-zero) encoder hidden states;
* **forward** (re-lighting): per-level ``cross_attention_dim`` (one width per resolution level),
  ``temporal_cross_attention_dim=None`` (the temporal transformer blocks have no ``attn2``/``norm2``)
  and ``multi_res_encoder_hidden_states=True`` (a list of four token tensors, one per level).

The module tree is diffusers' ``UNetSpatioTemporalConditionModel`` (so parameter names equal the
released checkpoints); only the temporal cross-attention is rebuilt/removed and the pass embedding is
appended.  The forward pass is re-implemented here (routing per level, LoRA scale, and a
spatio-temporal transformer forward that never materialises the broadcast temporal context when no
temporal block can use it, MODEL_SPEC §2.4); every sub-block (resnets, attention, feed-forward,
up/down samplers, time embeddings) is diffusers' own module.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import torch
import torch.nn as nn
from diffusers.configuration_utils import register_to_config
from diffusers.models.attention_processor import Attention
from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionModel

from ._config import build_from_config
from .unet_blocks import down_cross, mid, up_cross
from .unet_lora import LoraControls

#: Pass-index vocabulary of the inverse model (MODEL_SPEC §4.2).
GBUFFER_INDEX = {"basecolor": 0, "metallic": 1, "roughness": 2, "normal": 3, "depth": 4, "diffuse_albedo": 5}

#: ``max_norm`` of the pass-index embedding (a constructor argument of the original, not stored).
CONTEXT_EMBEDDING_MAX_NORM = 10.0

_DEFAULT_DOWN = (
    "CrossAttnDownBlockSpatioTemporal",
    "CrossAttnDownBlockSpatioTemporal",
    "CrossAttnDownBlockSpatioTemporal",
    "DownBlockSpatioTemporal",
)
_DEFAULT_UP = (
    "UpBlockSpatioTemporal",
    "CrossAttnUpBlockSpatioTemporal",
    "CrossAttnUpBlockSpatioTemporal",
    "CrossAttnUpBlockSpatioTemporal",
)


def _per_level(value, n_levels: int, name: str) -> list:
    """int/None -> n copies; list/tuple -> checked copy."""
    if value is None or isinstance(value, int):
        return [value] * n_levels
    value = list(value)
    if len(value) != n_levels:
        raise ValueError(f"{name} has {len(value)} entries but the UNet has {n_levels} levels: {value}")
    return value


class DRUNet(LoraControls, UNetSpatioTemporalConditionModel):
    """DiffusionRenderer UNet (``UNetCustomSpatioTemporalConditionModel`` of the original release).

    Extra config fields over diffusers' ``UNetSpatioTemporalConditionModel``:

    ``temporal_cross_attention_dim``
        int, per-level list, or ``None``: key/value width of the temporal blocks' ``attn2``.
        ``None`` removes ``attn2``/``norm2`` from every temporal block.  The default (1024) is the
        original class default.
    ``multi_res_encoder_hidden_states``
        if true, ``encoder_hidden_states`` is a list with one token tensor per level; down block i
        uses level i, the mid block the last level and up block i level ``-i-1``.
    ``context_embedding_type`` / ``context_vocab_size``
        ``"clip"`` adds ``nn.Embedding(vocab, cross_attention_dim[0], max_norm=10)`` whose row
        ``input_context`` is added to the encoder hidden states; ``None`` disables it.
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int | None = None,
        in_channels: int = 8,
        out_channels: int = 4,
        down_block_types: tuple[str, ...] = _DEFAULT_DOWN,
        up_block_types: tuple[str, ...] = _DEFAULT_UP,
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        addition_time_embed_dim: int = 256,
        projection_class_embeddings_input_dim: int = 768,
        layers_per_block: int | tuple[int] = 2,
        cross_attention_dim: int | tuple[int] = 1024,
        transformer_layers_per_block: int | tuple[int] = 1,
        num_attention_heads: int | tuple[int, ...] = (5, 10, 20, 20),
        num_frames: int = 25,
        temporal_cross_attention_dim: int | tuple[int] | None = 1024,
        multi_res_encoder_hidden_states: bool = False,
        context_embedding_type: str | None = None,
        context_vocab_size: int = 16,
    ):
        n_levels = len(block_out_channels)
        # JSON gives lists; diffusers' stock constructor only length-checks `list`, accept tuples too.
        if not isinstance(cross_attention_dim, int):
            cross_attention_dim = list(cross_attention_dim)
        super().__init__(
            sample_size=sample_size,
            in_channels=in_channels,
            out_channels=out_channels,
            down_block_types=tuple(down_block_types),
            up_block_types=tuple(up_block_types),
            block_out_channels=tuple(block_out_channels),
            addition_time_embed_dim=addition_time_embed_dim,
            projection_class_embeddings_input_dim=projection_class_embeddings_input_dim,
            layers_per_block=layers_per_block,
            cross_attention_dim=cross_attention_dim,
            transformer_layers_per_block=transformer_layers_per_block,
            num_attention_heads=num_attention_heads,
            num_frames=num_frames,
        )

        cross_dims = _per_level(cross_attention_dim, n_levels, "cross_attention_dim")
        temporal_dims = _per_level(temporal_cross_attention_dim, n_levels, "temporal_cross_attention_dim")
        # Per-level routing of the temporal cross-attention width, the same as diffusers does for
        # `cross_attention_dim`: down block i -> level i, mid -> last level, up block i -> reversed[i].
        for i, block in enumerate(self.down_blocks):
            self._rebuild_temporal_cross_attention(block, temporal_dims[i], cross_dims[i])
        self._rebuild_temporal_cross_attention(self.mid_block, temporal_dims[-1], cross_dims[-1])
        for i, block in enumerate(self.up_blocks):
            self._rebuild_temporal_cross_attention(block, temporal_dims[n_levels - 1 - i], cross_dims[n_levels - 1 - i])

        if context_embedding_type is None:
            self.context_embedding = None
        elif context_embedding_type == "clip":
            # Registered last, so `context_embedding.weight` is the last state-dict entry (as released).
            self.context_embedding = nn.Embedding(
                context_vocab_size, cross_dims[0], max_norm=CONTEXT_EMBEDDING_MAX_NORM
            )
        elif context_embedding_type == "time":
            raise NotImplementedError(
                'context_embedding_type "time" is not supported: the original forward pass is broken for it '
                "(MODEL_SPEC §2.2 step 5) and no released checkpoint uses it"
            )
        else:
            raise ValueError(f"unknown context_embedding_type {context_embedding_type!r} (expected 'clip' or null)")

    # ------------------------------------------------------------------ construction helpers
    @staticmethod
    def _rebuild_temporal_cross_attention(block: nn.Module, temporal_dim: int | None, spatial_dim: int) -> None:
        """Make the temporal blocks' ``attn2`` match ``temporal_dim`` (diffusers builds it with the spatial width)."""
        for transformer in getattr(block, "attentions", None) or []:
            for tblock in transformer.temporal_transformer_blocks:
                if temporal_dim is None:
                    # Assigning None keeps the module slot (and thus the state-dict order of the rest).
                    tblock.attn2 = None
                    tblock.norm2 = None
                elif temporal_dim != spatial_dim:
                    old = tblock.attn2
                    tblock.attn2 = Attention(
                        query_dim=old.query_dim,
                        cross_attention_dim=temporal_dim,
                        heads=old.heads,
                        dim_head=old.inner_dim // old.heads,
                    )

    # ------------------------------------------------------------------ convenience properties
    @property
    def is_forward(self) -> bool:
        """True for the forward (re-lighting) model, which takes a multi-resolution env-token list."""
        return bool(self.config.multi_res_encoder_hidden_states)

    @property
    def has_pass_embedding(self) -> bool:
        return self.context_embedding is not None

    @property
    def num_passes(self) -> int:
        """Rows of the pass-index embedding (0 when the model has none)."""
        return 0 if self.context_embedding is None else int(self.context_embedding.num_embeddings)

    @property
    def num_levels(self) -> int:
        return len(self.config.block_out_channels)

    @property
    def has_temporal_cross_attention(self) -> bool:
        return any(
            tb.attn2 is not None for t in self._st_transformers() for tb in t.temporal_transformer_blocks
        )

    def _st_transformers(self) -> Iterable[nn.Module]:
        for block in [*self.down_blocks, self.mid_block, *self.up_blocks]:
            yield from getattr(block, "attentions", None) or []

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor | Sequence[torch.Tensor],
        added_time_ids: torch.Tensor,
        input_context: torch.Tensor | int | None = None,
        lora_scale: float | None = None,
        time_context: torch.Tensor | None = None,
        skip_temporal: bool = False,
    ) -> torch.Tensor:
        """Denoiser call.

        Args:
            sample: ``(B, F, C_in, h, w)``.
            timestep: scalar (tensor or number) or ``(B,)``.
            encoder_hidden_states: ``(B, S, C)``, ``(B, 1, S, C)`` or ``(B, F, S, C)``; for the forward
                model a list with one such tensor per level (level 0 = finest).
            added_time_ids: ``(B, 3)`` = [fps-1, motion bucket, noise aug].
            input_context: ``(B,)`` (or ``(1,)``/int) long pass indices, inverse model only.
            lora_scale: multiplies every LoRA layer's scaling for this call only; ``None`` = 1.
            time_context: explicit temporal cross-attention context (only used by models whose temporal
                blocks have ``attn2``); ``None`` = first frame's encoder tokens (stock behaviour).
            skip_temporal: image-only mode (``image_only_indicator`` = 1), training use only.

        Returns:
            ``(B, F, out_channels, h, w)``.
        """
        with self.lora_scale_applied(lora_scale):
            return self._forward_impl(
                sample, timestep, encoder_hidden_states, added_time_ids, input_context, time_context, skip_temporal
            )

    def _prepare_encoder_hidden_states(self, ehs: torch.Tensor, batch_size: int, num_frames: int) -> torch.Tensor:
        """Normalise one token tensor to ``(B*F, S, C)`` (MODEL_SPEC §2.2 step 4)."""
        if ehs.ndim == 3:
            if ehs.shape[0] != batch_size:
                raise ValueError(f"encoder_hidden_states {tuple(ehs.shape)}: batch {ehs.shape[0]} != sample batch {batch_size}")
            return ehs.repeat_interleave(num_frames, dim=0)
        if ehs.ndim == 4:
            if ehs.shape[0] != batch_size:
                raise ValueError(f"encoder_hidden_states {tuple(ehs.shape)}: batch {ehs.shape[0]} != sample batch {batch_size}")
            if ehs.shape[1] == num_frames:
                return ehs.flatten(0, 1)
            if ehs.shape[1] == 1:
                return ehs.flatten(0, 1).repeat_interleave(num_frames, dim=0)
            raise ValueError(
                f"encoder_hidden_states {tuple(ehs.shape)}: dim 1 must be 1 or the number of frames ({num_frames})"
            )
        raise ValueError(f"encoder_hidden_states must be 3-D or 4-D, got shape {tuple(ehs.shape)}")

    def _forward_impl(self, sample, timestep, encoder_hidden_states, added_time_ids, input_context, time_context,
                      skip_temporal):
        if sample.ndim != 5:
            raise ValueError(f"sample must be (B, F, C, h, w), got shape {tuple(sample.shape)}")
        batch_size, num_frames = sample.shape[:2]
        n_levels = self.num_levels

        # 1. time embedding (as diffusers' SVD UNet)
        timesteps = timestep
        if not torch.is_tensor(timesteps):
            dtype = torch.float64 if isinstance(timestep, float) else torch.int64
            if sample.device.type == "mps" and dtype == torch.float64:
                dtype = torch.float32
            timesteps = torch.tensor([timesteps], dtype=dtype, device=sample.device)
        elif timesteps.ndim == 0:
            timesteps = timesteps[None].to(sample.device)
        else:
            timesteps = timesteps.to(sample.device)
        timesteps = timesteps.expand(batch_size)
        t_emb = self.time_proj(timesteps).to(dtype=sample.dtype)
        emb = self.time_embedding(t_emb)

        # 2. added time ids
        time_embeds = self.add_time_proj(added_time_ids.flatten())
        time_embeds = time_embeds.reshape((batch_size, -1)).to(emb.dtype)
        emb = emb + self.add_embedding(time_embeds)

        sample = sample.flatten(0, 1)
        emb = emb.repeat_interleave(num_frames, dim=0)

        # 3. encoder hidden states, per level
        if self.config.multi_res_encoder_hidden_states:
            if torch.is_tensor(encoder_hidden_states) or len(encoder_hidden_states) != n_levels:
                raise ValueError(
                    f"this UNet takes a list of {n_levels} encoder_hidden_states tensors (one per level), got "
                    f"{type(encoder_hidden_states).__name__}"
                    + ("" if torch.is_tensor(encoder_hidden_states) else f" of length {len(encoder_hidden_states)}")
                )
            if input_context is not None:
                raise ValueError("input_context (pass index) is not supported with multi-resolution encoder states")
            levels = [self._prepare_encoder_hidden_states(e, batch_size, num_frames) for e in encoder_hidden_states]
        else:
            if not torch.is_tensor(encoder_hidden_states):
                raise ValueError("this UNet takes a single encoder_hidden_states tensor, not a list")
            ehs = self._prepare_encoder_hidden_states(encoder_hidden_states, batch_size, num_frames)
            if input_context is not None:
                if self.context_embedding is None:
                    raise ValueError("input_context given, but this UNet has no pass-index embedding")
                idx = torch.as_tensor(input_context, device=self.context_embedding.weight.device).long().reshape(-1)
                if idx.numel() == 1 and batch_size > 1:
                    idx = idx.expand(batch_size)
                if idx.numel() != batch_size:
                    raise ValueError(f"input_context has {idx.numel()} entries for a batch of {batch_size}")
                ctx = self.context_embedding(idx)[:, None, :]  # (B, 1, C); renormalises rows > max_norm in place
                ehs = ehs + ctx.repeat_interleave(num_frames, dim=0).to(device=ehs.device)
            levels = [ehs] * n_levels

        # 4. spatial path
        sample = self.conv_in(sample)
        indicator = torch.ones if skip_temporal else torch.zeros
        image_only_indicator = indicator(batch_size, num_frames, dtype=sample.dtype, device=sample.device)

        default_overall_up_factor = 2 ** self.num_upsamplers
        forward_upsample_size = any(s % default_overall_up_factor != 0 for s in sample.shape[-2:])
        upsample_size = None

        down_block_res_samples = (sample,)
        for i, block in enumerate(self.down_blocks):
            if getattr(block, "has_cross_attention", False):
                sample, res = down_cross(block, sample, emb, levels[i], image_only_indicator, time_context)
            else:
                sample, res = block(hidden_states=sample, temb=emb, image_only_indicator=image_only_indicator)
            down_block_res_samples += res

        sample = mid(self.mid_block, sample, emb, levels[-1], image_only_indicator, time_context)

        for i, block in enumerate(self.up_blocks):
            is_final_block = i == len(self.up_blocks) - 1
            res = down_block_res_samples[-len(block.resnets):]
            down_block_res_samples = down_block_res_samples[: -len(block.resnets)]
            if not is_final_block and forward_upsample_size:
                upsample_size = down_block_res_samples[-1].shape[2:]
            if getattr(block, "has_cross_attention", False):
                sample = up_cross(block, sample, res, emb, levels[n_levels - 1 - i], image_only_indicator,
                                        time_context, upsample_size)
            else:
                sample = block(hidden_states=sample, temb=emb, res_hidden_states_tuple=res,
                               upsample_size=upsample_size, image_only_indicator=image_only_indicator)

        # 5. output
        sample = self.conv_out(self.conv_act(self.conv_norm_out(sample)))
        return sample.reshape(batch_size, num_frames, *sample.shape[1:])


# ---------------------------------------------------------------------- config -> module
def build_unet_from_config(config: Mapping[str, Any], device: str | torch.device = "meta",
                           dtype: torch.dtype | None = None) -> DRUNet:
    """Construct a :class:`DRUNet` from a ``unet/config.json`` dict (unknown keys ignored), without weights
    when ``device="meta"``."""
    return build_from_config(DRUNet, config, device, dtype)
