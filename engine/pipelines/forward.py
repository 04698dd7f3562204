"""Forward rendering (re-lighting): G-buffers + HDR environment map → video.

Faithful to the reference's ``xrgb`` flow (MODEL_SPEC §4.3): G-buffer latents ×scaling_factor in the
order basecolor, normal, depth, roughness, metallic; env maps (LDR, log, direction) VAE-encoded,
×scaling_factor, through the EnvEncoder into four token levels; classifier-free guidance with
all-zero negatives (unconditional half first); LoRA applied unmerged with a per-call scale.
Improvements that do not change the numbers: all G-buffers in one VAE call, static env maps
encoded once, G-buffer latents reused across several lights, several lights in one UNet batch, the
negatives' zero-token cross-attention reduced to one token (:mod:`.zero_context`).
"""
from __future__ import annotations

import contextlib
import functools
from typing import Mapping, Optional, Sequence

import torch

from engine.contract.gbuffer_set import FORWARD_PASSES
from engine.models.ff_chunk import chunk_feed_forward
from engine.models.temporal_conv import default_fold, fold_temporal_convs
from engine.pipelines import sampling
from engine.pipelines.components import Components, load_components, resolve_checkpoint
from engine.pipelines.inverse import autocast_for, check_size
from engine.pipelines.lighting import as_env_maps
from engine.pipelines.memory import MemoryModes
from engine.pipelines.samplers import local_sampler
from engine.pipelines.vae_codec import decode_frames, encode_mean, to_frames_tensor, vae_scale_factor
from engine.pipelines.windows import decode_clip, plan_windows
from engine.pipelines.zero_context import install_zero_context_skip, zero_context_rows

GBUFFER_ORDER = FORWARD_PASSES   # the model's latent order of its G-buffer inputs


class ForwardRenderer(MemoryModes):
    """Render G-buffers under an HDR environment map.

    >>> r = ForwardRenderer.from_pretrained("forward")              # memory="low-vram": engine.pipelines.memory
    >>> video = r({"basecolor": bc, "normal": n, "depth": d, "roughness": ro, "metallic": m},
    ...           light=EnvLight("studio.hdr", rotate=True))     # (F, H, W, 3) float32 in [0, 1]
    """

    def __init__(self, components: Components):
        self.c = components
        self.unet, self.vae, self.env_encoder = components.unet, components.vae, components.env_encoder
        self.device, self.dtype = components.device, components.dtype
        self.vae_factor = vae_scale_factor(self.vae)
        self.size_multiple = self.vae_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)
        self.scaling = self.vae.config.scaling_factor
        install_zero_context_skip(self.unet)  # exact: the CFG negatives' zero env tokens
        chunk_feed_forward(self.unet)          # exact: feed-forwards over ≤ one clip's tokens at a time
        if default_fold(self.device):  # temporal Conv3d as Conv2d: exact, 2-4x faster on CPUs
            fold_temporal_convs(self.unet, self.vae)
        self.merge_lora = True                # fold the LoRA into the weights per call (exact up to rounding)

    @classmethod
    def from_pretrained(cls, path_or_name="forward", *, revision: Optional[str] = None, device=None, dtype=None,
                        lora: bool = True, allow_download: bool = False, memory: str = "default") -> "ForwardRenderer":
        """Load a published model or checkpoint folder, set up for the memory mode ``memory``."""
        root = resolve_checkpoint(path_or_name, revision=revision, allow_download=allow_download)
        renderer = cls(load_components(root, kind="forward", device=device, dtype=dtype, lora=lora))
        renderer.enable_memory_mode(memory)
        return renderer

    @property
    def has_lora(self) -> bool:
        return self.c.lora_path is not None

    # -- conditioning -------------------------------------------------------------------------
    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        return encode_mean(self.vae, images, self.encode_chunk, self.device)

    def _encode_maybe_static(self, frames: torch.Tensor) -> torch.Tensor:
        """Encode (F, 3, H, W) frames; identical frames (a static light) are encoded once."""
        if frames.shape[0] > 1 and bool((frames == frames[:1]).all()):
            return self._encode(frames[:1]).expand(frames.shape[0], -1, -1, -1)
        return self._encode(frames)

    def encode_gbuffers(self, gbuffers: Mapping, fixed_frame: Optional[int] = None,
                        num_frames: Optional[int] = None) -> torch.Tensor:
        """{pass: (F, H, W, C) in [0, 1]} → scaled condition latents (1, F, 20, h, w)."""
        missing = [p for p in GBUFFER_ORDER if p not in gbuffers]
        if missing:
            raise ValueError(f"missing G-buffer pass(es): {', '.join(missing)} (the forward model needs "
                             f"{', '.join(GBUFFER_ORDER)})")
        tensors = [to_frames_tensor(gbuffers[p], p) for p in GBUFFER_ORDER]
        shapes = {p: tuple(t.shape) for p, t in zip(GBUFFER_ORDER, tensors)}
        if len(set(shapes.values())) != 1:
            raise ValueError("G-buffer passes differ in frame count or size: " +
                             ", ".join(f"{p} {s[0]} frames {s[3]}x{s[2]}" for p, s in shapes.items()))
        f, _, h, w = tensors[0].shape
        check_size(h, w, self.size_multiple, "G-buffers")
        if fixed_frame is not None:
            if not -f <= fixed_frame < f:
                raise ValueError(f"fixed_frame {fixed_frame} is outside the clip's {f} frames")
            tensors = [t[fixed_frame:fixed_frame + 1] for t in tensors]
        stacked = torch.cat(tensors, 0)  # all passes in one VAE batch
        with autocast_for(self.device, self.dtype):
            lat = self._encode(stacked).float() * self.scaling
        n = tensors[0].shape[0]
        lat = lat.unflatten(0, (len(GBUFFER_ORDER), n))            # (5, n, 4, h, w)
        lat = lat.permute(1, 0, 2, 3, 4).flatten(1, 2)               # (n, 20, h, w) in GBUFFER_ORDER
        if fixed_frame is not None:
            lat = lat.expand(num_frames or f, -1, -1, -1)
        return lat.unsqueeze(0).contiguous()

    def env_tokens(self, env_ldr: torch.Tensor, env_log: torch.Tensor) -> list[torch.Tensor]:
        """(F, h, w, 3) LDR and log maps → four token levels, each (1, F, N_i, C_i)."""
        from engine.envmap import env_direction_map

        f, h, w, _ = env_ldr.shape
        ldr = env_ldr.to(self.device).permute(0, 3, 1, 2).float()
        logm = env_log.to(self.device).permute(0, 3, 1, 2).float()
        nrm = env_direction_map(h, w, device=self.device).permute(2, 0, 1)[None].float()
        with autocast_for(self.device, self.dtype):
            lat = [self._encode_maybe_static(x).float() * self.scaling for x in (ldr, logm)]
            lat.append(self._encode(nrm).float().expand(f, -1, -1, -1) * self.scaling)
            x = torch.cat(lat, 1)
            enc_dtype = next(self.env_encoder.parameters()).dtype
            if bool((x == x[:1]).all()):
                feats = [t.expand(f, -1, -1, -1) for t in self.env_encoder(x[:1].to(enc_dtype).contiguous())]
            else:
                feats = self.env_encoder(x.to(enc_dtype).contiguous())
        return [t.float().flatten(2).transpose(1, 2).unsqueeze(0) for t in feats]

    # -- sampling ------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, gbuffers: Mapping, light, *, num_inference_steps: int = 20,
                 guidance_scale: sampling.Guidance = 1.2,
                 lora_scale: float = 0.25, seed: Optional[int] = 0, noise: Optional[torch.Tensor] = None,
                 env_resolution: Sequence[int] = (512, 512), fixed_frame: Optional[int] = None,
                 num_frames: Optional[int] = None, decode_chunk_size: int = 8, fps: int = 7,
                 motion_bucket_id: int = 127, cond_latents: Optional[torch.Tensor] = None,
                 window: Optional[int] = None, overlap: int = 0, blend: str = "latent", decode_overlap: int = 0,
                 light_batch: Optional[int] = None, callback: Optional[sampling.StepCallback] = None,
                 should_cancel=None, output: str = "np", sampler=None):
        """Returns (F, H, W, 3) float32 in [0, 1]; a list of lights returns a list of videos.

        ``guidance_scale``: one number, or ``(min, max)`` ramped ``linspace(min, max, F)`` over each
        window's F frames (the reference's per-call ``min/max_guidance_scale``); guidance runs iff max > 1.
        Several lights are sampled together, ``light_batch`` at a time (default: all in one UNet batch;
        each light starts from the same noise, so a light's video is what a call with it alone gives).
        ``window``/``overlap``/``blend``: long clips, see :mod:`engine.pipelines.windows`. ``sampler``: who runs
        the denoising loop (:mod:`engine.pipelines.samplers`; default this process)."""
        lights = light if isinstance(light, (list, tuple)) else [light]
        if cond_latents is None:
            cond_latents = self.encode_gbuffers(gbuffers, fixed_frame, num_frames)
        cond_latents = cond_latents.to(self.device)
        f = cond_latents.shape[1]
        plan = plan_windows(f, window or f, overlap if window and window < f else 0)
        batch = max(1, int(light_batch or len(lights)))
        decode_chunk_size, decode_overlap = self.plan.decode(decode_chunk_size, decode_overlap)
        videos = []
        for s in range(0, len(lights), batch):
            group = lights[s:s + batch]
            per_light = [self.env_tokens(*as_env_maps(one, f, env_resolution, device=self.device)) for one in group]
            tokens = [torch.cat(level, 0) for level in zip(*per_light)]
            result = self.sample_clip(cond_latents.expand(len(group), -1, -1, -1, -1), tokens, plan, blend,
                                      num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                                      lora_scale=lora_scale, seed=seed, noise=noise, fps=fps,
                                      motion_bucket_id=motion_bucket_id, callback=callback,
                                      should_cancel=should_cancel, sampler=sampler)
            with autocast_for(self.device, self.dtype):
                video = decode_clip(lambda lat: decode_frames(self.vae, lat, decode_chunk_size, decode_overlap,
                                                              self.device),
                                    result, plan, blend)
            videos.extend(v if output == "pt" else v.cpu().numpy() for v in video)
        return videos if isinstance(light, (list, tuple)) else videos[0]

    def sample(self, cond_latents: torch.Tensor, tokens: list[torch.Tensor], **kwargs) -> torch.Tensor:
        """Denoise latents (1, F, 4, h, w) for one light's tokens, the whole clip as one window."""
        f = cond_latents.shape[1]
        return self.sample_clip(cond_latents, tokens, [(0, f)], "latent", **kwargs)[1]

    def sample_clip(self, cond_latents: torch.Tensor, tokens: list[torch.Tensor], plan, blend: str = "latent", *,
                    num_inference_steps: int = 20, guidance_scale: sampling.Guidance = 1.2, lora_scale: float = 0.25,
                    seed: Optional[int] = 0, noise=None, fps: int = 7, motion_bucket_id: int = 127, callback=None,
                    should_cancel=None, sampler=None):
        """Denoise a clip over the windows ``plan``; returns :func:`windows.sample_clip`'s result.

        ``cond_latents`` (L, F, 20, h, w) and ``tokens`` (L, F, N, C) for L lights sampled together."""
        n_lights, f, _, h, w = cond_latents.shape
        base = sampling.initial_noise((1, f, 4, h, w), seed, noise).to(self.device)
        base = base.expand(n_lights, -1, -1, -1, -1).contiguous()
        # the reference switches the forward scheduler to "trailing" spacing (init sigma = sigma_max)
        scheduler = functools.partial(sampling.make_scheduler, self.c.scheduler_config, timestep_spacing="trailing")
        return (sampler or local_sampler)(self, scheduler, num_inference_steps, base, ForwardWindowFn,
                                          (cond_latents, list(tokens), guidance_scale, lora_scale, fps,
                                           motion_bucket_id), plan, blend, callback=callback,
                                          should_cancel=should_cancel)


class ForwardWindowFn:
    """The forward model's ``window_fn(x, t, s, e)`` for :func:`windows.sample_clip` (a sampler's
    ``make_window_fn``): ``cond_latents`` (L, F, 20, h, w) and ``tokens`` (L, F, N, C) for L lights, guidance
    and the LoRA scale. A context manager: while entered, the LoRA is folded into the weights for the call's
    fixed scale (one matmul per projection instead of three; not under offload, whose hooks own the weights);
    call it only inside ``with``."""

    def __init__(self, renderer: ForwardRenderer, cond_latents: torch.Tensor, tokens: Sequence[torch.Tensor],
                 guidance_scale: sampling.Guidance, lora_scale: float, fps: int, motion_bucket_id: int):
        self.renderer, self.guidance = renderer, guidance_scale
        device = renderer.device
        cond_latents = cond_latents.to(device)
        tokens = [t.to(device) for t in tokens]
        self.cfg = cfg = sampling.guidance_range(guidance_scale)[1] > 1.0   # the reference: CFG iff max > 1
        if cfg:
            self.cond = torch.cat([torch.zeros_like(cond_latents), cond_latents])
            ehs = [torch.cat([torch.zeros_like(t), t]) for t in tokens]
        else:
            self.cond, ehs = cond_latents, tokens
        self.unet_dtype = next(renderer.unet.parameters()).dtype
        if renderer.dtype != torch.float32:
            ehs = [t.to(self.unet_dtype) for t in ehs]
        self.ehs = ehs
        self.time_ids = sampling.added_time_ids(fps, motion_bucket_id, 0.0, self.cond.shape[0], device, torch.float32)
        scale = float(lora_scale) if renderer.has_lora else None
        self.merge = scale is not None and renderer.merge_lora and not renderer.offloaded
        self.merged_scale = scale if self.merge else None
        self.scale = None if self.merge else scale
        self._stack = None

    def __enter__(self):
        self._stack = contextlib.ExitStack()
        if self.merge:
            self._stack.enter_context(self.renderer.unet.lora_merged(self.merged_scale))
        return self

    def __exit__(self, *exc):
        stack, self._stack = self._stack, None
        return stack.__exit__(*exc)

    def __call__(self, scaled, t, s, e):
        r, cfg = self.renderer, self.cfg
        x = torch.cat([scaled, scaled]) if cfg else scaled
        x = torch.cat([x, self.cond[:, s:e].to(x.dtype)], dim=2)
        with autocast_for(r.device, r.dtype):
            if r.dtype != torch.float32:
                x = x.to(self.unet_dtype)
            with zero_context_rows(0.5 if cfg else 0.0):
                out = r.unet(x, t, [h_[:, s:e] for h_ in self.ehs], self.time_ids, lora_scale=self.scale).float()
        if cfg:   # per-frame linspace(min, max) over this window's frames, as one reference call
            out = sampling.apply_guidance(*out.chunk(2), self.guidance)
        return out
