"""The live relight preview: one frame of a G-buffer set (or Blender render folder) relit under one HDRI,
fast enough to follow an artist turning the light (docs/ENGINE.md "Preview").

A :class:`Previewer` keeps, per set, what does not change when only the light does:

- the set's clip (``load_gbuffer_clips``), keyed by the folder and its files' names/sizes/mtimes;
- the encoded G-buffer latents per (set, window, size, fit, fixed_frame, model) — ``stats["gbuffer_encodes"]``;
- the HDRI as loaded, per file identity, and the env tokens per (HDRI, rotation, strength, flip, posing,
  window, model) — ``stats["env_encodes"]`` (a rotation re-projects and re-encodes the light: cheap next to
  the denoising loop, docs/PERFORMANCE.md);
- the clip's noise per (frames, size, seed).

An update then costs the denoising loop over the window (``preview_frames`` frames centred on the frame,
``engine.contract.preview.preview_window``) plus the VAE decode of the one decode chunk holding the frame
(the temporal decoder needs its chunk; the job decodes the same chunks, so the frame is the job's).

Same computation as the forward job: the window's G-buffers, light maps (sliced from the whole clip's
when they vary per frame) and noise (``segments.noise_for`` over the whole clip, sliced) are what the job
feeds its model, so with the job's settings and ``preview_frames`` = the clip's length (a clip of one
segment) the preview's frame equals the job's (tests/test_preview.py, within 1e-5)."""
from __future__ import annotations

import secrets
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from engine.contract import params as P
from engine.contract.preview import preview_window
from engine.jobs.common import JobError, decode_settings, file_identity
from engine.jobs.forward_job import ForwardSettings
from engine.jobs.units import INPUT_KINDS, posed_light
from engine.jobs.framing import check_settings, from_processing, plan_framing, to_processing
from engine.jobs.gbuffer_inputs import GBufferInputError, load_gbuffer_clips
from engine.jobs.segments import noise_for
from engine.jobs.settings import to_setting

LONG_SIDE = 384          # preview_size "auto": the long side (docs/PERFORMANCE.md "Preview")
CACHE_ENTRIES = 4        # per cache: sets, latents, HDRIs, tokens kept (least recently used dropped)
STAGES = ("load_model", "encode", "denoise", "write")


@dataclass
class PreviewOptions:
    """What a preview adds to the forward job's settings."""
    size: Optional[tuple] = None      # (W, H) processing size; None: auto (LONG_SIDE)
    frames: int = P.default("preview_frames", P.PREVIEW)


def preview_settings(params: dict) -> tuple[ForwardSettings, PreviewOptions]:
    """A preview request's params (validated: ``params.problems("preview", …)``) → the forward job's settings
    (its fields, with the preview's defaults) and the preview's own options."""
    from engine.jobs.common import parse_resolution

    values = {**P.defaults(P.PREVIEW), **params}
    names = {f.name for f in fields(ForwardSettings)}
    settings = ForwardSettings(**{n: to_setting(n, v, "forward") for n, v in values.items() if n in names})
    size = values["preview_size"]
    opts = PreviewOptions(None if size in (None, "", "auto") else parse_resolution(size), int(values["preview_frames"]))
    check_settings(settings)
    return settings, opts


def auto_size(source: tuple, long_side: int = LONG_SIDE, multiple: int = 64) -> tuple[int, int]:
    """The preview's processing size: the source's aspect with the long side ``long_side``, the short side
    rounded up to a multiple of ``multiple`` (the rest is padded): 1920×1080 → 384×256."""
    w, h = source
    s = long_side / max(w, h)
    up = lambda v: max(multiple, -(-round(v * s) // multiple) * multiple)  # noqa: E731
    return (long_side, up(h)) if w >= h else (up(w), long_side)


def _light(clip, hdr: np.ndarray, settings: ForwardSettings, n: int):
    """The forward job's light (engine/jobs/units.py ``posed_light``) on an HDRI already loaded."""
    return posed_light(clip, hdr, settings, n, option="field 'params.camera_follow'",
                       fix="turn Light Follows World off")


class _LRU(OrderedDict):
    def __init__(self, size: int = CACHE_ENTRIES):
        super().__init__()
        self.size = size

    def get_or(self, key, build):
        if key in self:
            self.move_to_end(key)
            return self[key], True
        value = build()
        self[key] = value
        while len(self) > self.size:
            self.popitem(last=False)
        return value, False


def _decode_frame(renderer, latents: torch.Tensor, index: int, chunk: int, overlap: int) -> torch.Tensor:
    """Frame ``index`` of ``vae_codec.decode_frames(latents, chunk, overlap)`` decoding only the chunk(s) that
    hold it (the same chunks, in the same order and with the same cross-fade weights) → (H, W, 3)."""
    from engine.pipelines.inverse import autocast_for
    from engine.pipelines.vae_codec import weights_device
    from engine.pipelines.windows import plan_windows, window_weights

    vae = renderer.vae
    f = latents.shape[1]
    chunk = max(1, int(chunk or f))
    if overlap and f > chunk:
        plan = plan_windows(f, chunk, min(overlap, chunk - 1))
        weights = window_weights(plan, f)
    else:
        plan, weights = [(s, min(s + chunk, f)) for s in range(0, f, chunk)], None
    device = renderer.device if renderer.device is not None else weights_device(vae)
    param = next(vae.parameters())
    z = latents.to(device=device, dtype=param.dtype) / vae.config.scaling_factor
    out = None
    with torch.no_grad(), autocast_for(renderer.device, renderer.dtype):
        for k, (s, e) in enumerate(plan):
            if not s <= index < e:
                continue
            dec = vae.decode(z[0, s:e], num_frames=e - s).sample[index - s]      # (3, H, W)
            frame = (dec.float() / 2 + 0.5).clamp(0, 1)
            if weights is None:
                return frame.permute(1, 2, 0).contiguous()
            part = frame * weights[k][index - s].to(frame.device, frame.dtype)
            out = part if out is None else out + part
    return out.permute(1, 2, 0).contiguous()


class Previewer:
    """Relights single frames, caching per set and HDRI (module docstring). ``renderer_for(settings)``
    returns the forward renderer for a preview's settings (the CLI loads one; the server's ModelCache
    keeps it warm). Not thread-safe: one preview at a time (the server runs one preview thread)."""

    def __init__(self, renderer_for: Callable[[ForwardSettings], object]):
        self.renderer_for = renderer_for
        self.stats: Counter = Counter()
        self._clips, self._latents, self._hdris, self._tokens, self._noise = (_LRU() for _ in range(5))
        self.lock = threading.Lock()

    # -- cached pieces ------------------------------------------------------------------------------
    def _clip(self, set_path: Path):
        key = (str(set_path.resolve()), repr(file_identity(set_path)))

        def load():
            self.stats["clip_loads"] += 1
            try:
                clips = load_gbuffer_clips(set_path)
            except GBufferInputError as exc:
                raise JobError(f"field 'set': {exc}") from None
            if len(clips) != 1:
                raise JobError(f"field 'set': {set_path} holds {len(clips)} clips; choose one G-buffer set or "
                               "Blender render folder")
            return clips[0]
        return self._clips.get_or(key, load)[0], key

    def _hdri(self, hdri: Path):
        from engine.envmap import load_envmap

        if not hdri.is_file():
            raise JobError(f"field 'hdri': {hdri}: file not found")
        if hdri.suffix.lower() not in (".hdr", ".exr"):
            raise JobError(f"field 'hdri': {hdri}: not an HDR environment map (use a Radiance .hdr or an OpenEXR .exr)")
        key = (str(hdri.resolve()), repr(file_identity(hdri)))

        def load():
            self.stats["hdri_loads"] += 1
            try:
                return load_envmap(hdri)
            except (FileNotFoundError, ValueError) as exc:
                raise JobError(f"field 'hdri': {hdri}: {exc}") from None
        return self._hdris.get_or(key, load)[0], key

    # -- one preview --------------------------------------------------------------------------------
    def preview(self, set_path, hdri, frame: int, out, params: dict | None = None, *,
                should_cancel: Optional[Callable[[], bool]] = None,
                listener: Optional[Callable[[dict], None]] = None) -> dict:
        """Relight frame number ``frame`` of ``set_path`` under ``hdri`` into ``out`` (.exr, linear) and the
        .png beside it (sRGB), both written atomically. Returns the summary (the protocol's result summary,
        plus ``"image"``: the linear frame as written)."""
        from engine.jobs.units import model_identity

        t0 = time.monotonic()
        seconds: dict = {}
        problems = P.problems(P.PREVIEW, dict(params or {}))
        if problems:
            raise JobError(problems[0])
        settings, opts = preview_settings(dict(params or {}))
        set_path, hdri, out = Path(set_path), Path(hdri), Path(out)
        if out.suffix.lower() != ".exr":
            raise JobError(f"field 'out': {out} must end in .exr (the .png is written beside it)")
        if not out.parent.is_dir():
            raise JobError(f"field 'out': folder {out.parent} does not exist; create it or choose another file")
        report = listener or (lambda info: None)

        clip, clip_key = self._clip(set_path)
        numbers = list(clip.frame_numbers)
        if frame not in numbers:
            raise JobError(f"field 'frame': frame {frame} is not in {set_path} (frames {numbers[0]}..{numbers[-1]})")
        first, last = preview_window(frame, numbers[0], numbers[-1], opts.frames)
        idx = [i for i, n in enumerate(numbers) if first <= n <= last]
        s, e = idx[0], idx[-1] + 1
        n = len(numbers)
        if settings.fixed_frame is not None and not 0 <= settings.fixed_frame < n:
            raise JobError(f"field 'params.fixed_frame': {settings.fixed_frame}: the clip has frames 0..{n - 1}")
        hdr, hdri_key = self._hdri(hdri)
        seconds["inputs"] = round(time.monotonic() - t0, 4)

        t = time.monotonic()
        report({"stage": "load_model", "step": 0, "total": 0})
        renderer = self.renderer_for(settings)
        seconds["load_model"] = round(time.monotonic() - t, 4)
        model_key = repr(model_identity(renderer))
        size = opts.size or auto_size(clip.size)
        framing = plan_framing(clip.size, size, settings.fit, "processing")

        t = time.monotonic()
        report({"stage": "encode", "step": 0, "total": 2})
        with torch.no_grad():
            cond, cached_gb = self._latents.get_or(
                (clip_key, s, e, size, settings.fit, settings.fixed_frame, model_key),
                lambda: self._encode_gbuffers(renderer, clip, s, e, framing, settings))
            report({"stage": "encode", "step": 1, "total": 2})
            tokens, cached_env = self._tokens.get_or(
                (hdri_key, clip_key, s, e, settings.env_rotation, settings.env_strength, settings.env_flip,
                 settings.elevation, settings.elevation_convention, settings.rotate_light, settings.camera_follow,
                 settings.fixed_frame, tuple(settings.env_resolution), model_key),
                lambda: self._encode_light(renderer, clip, hdr, s, e, settings))
        report({"stage": "encode", "step": 2, "total": 2})
        seconds["encode"] = round(time.monotonic() - t, 4)

        seed = settings.seed if settings.seed is not None else secrets.randbelow(2**31)
        vf = renderer.vae_factor
        noise, _ = self._noise.get_or((n, size, vf, seed),
                                      lambda: noise_for((1, n, 4, size[1] // vf, size[0] // vf), seed))
        t = time.monotonic()
        frame_srgb = self._denoise_decode(renderer, cond, tokens, noise[:, s:e], numbers.index(frame) - s, settings,
                                          should_cancel, report, seconds)
        seconds["denoise"] = round(time.monotonic() - t - seconds["decode"], 4)

        t = time.monotonic()
        report({"stage": "write", "step": 0, "total": 1})
        image = self._write(out, frame_srgb, framing)
        seconds["write"] = round(time.monotonic() - t, 4)
        report({"stage": "write", "step": 1, "total": 1})
        latency = time.monotonic() - t0
        return {"frame": int(frame), "frames": [int(first), int(last)], "size": [int(v) for v in framing.output],
                "processing": list(size), "steps": int(settings.steps), "seed": int(seed),
                "latency_s": round(latency, 4), "seconds": seconds,
                "cached": {"gbuffer_latents": cached_gb, "env_tokens": cached_env},
                "out": str(out), "outputs": [str(out), str(out.with_suffix(".png"))], "image": image}

    def _encode_gbuffers(self, renderer, clip, s: int, e: int, framing, settings) -> torch.Tensor:
        """The window's G-buffers as the forward job feeds them (fixed_frame, framing) → condition latents."""
        self.stats["gbuffer_encodes"] += 1
        if settings.fixed_frame is not None:
            ff = settings.fixed_frame
            gb = {p: np.repeat(v[ff:ff + 1], e - s, 0) for p, v in clip.inputs.items()}
        else:
            gb = {p: v[s:e] for p, v in clip.inputs.items()}
        gb = {p: to_processing(v, framing, INPUT_KINDS.get(p, "color")) for p, v in gb.items()}
        return renderer.encode_gbuffers(gb).to(renderer.device)

    def _encode_light(self, renderer, clip, hdr, s: int, e: int, settings) -> list:
        """The window's env tokens, from the light maps the forward job computes for the whole clip (a light
        that is the same on every frame is projected once and repeated: the same values)."""
        from engine.pipelines.lighting import as_env_maps

        self.stats["env_encodes"] += 1
        n = len(clip.frame_numbers)
        varies = settings.rotate_light or settings.camera_follow
        light = _light(clip, hdr, settings, n)
        if varies:
            ldr, logm = light.maps(n, settings.env_resolution)
            ldr, logm = ldr[s:e], logm[s:e]
        else:
            ldr, logm = light.maps(1, settings.env_resolution)
        maps = as_env_maps({"env_ldr": ldr, "env_log": logm}, e - s, settings.env_resolution, device=renderer.device)
        return renderer.env_tokens(*maps)

    def _denoise_decode(self, renderer, cond, tokens, noise, index: int, settings, should_cancel, report,
                        seconds) -> np.ndarray:
        """The forward renderer's sampling of the window (its ``sample_clip``, as its ``__call__``) and the
        decode of frame ``index`` only → (H, W, 3) display-encoded in [0, 1] at the processing size."""
        from engine.pipelines.inverse import autocast_for
        from engine.pipelines.vae_codec import decode_frames
        from engine.pipelines.windows import decode_clip, plan_windows

        f = cond.shape[1]
        window = settings.frames
        plan = plan_windows(f, window or f, settings.overlap if window and window < f else 0)
        dec_chunk, dec_overlap = renderer.plan.decode(*decode_settings(settings))
        steps = int(settings.steps)
        with torch.no_grad():
            result = renderer.sample_clip(cond.expand(1, -1, -1, -1, -1), tokens, plan, settings.blend,
                                          num_inference_steps=steps, guidance_scale=settings.guidance,
                                          lora_scale=settings.lora_scale, seed=None, noise=noise,
                                          callback=lambda i, *_: report({"stage": "denoise", "step": i + 1,
                                                                         "total": steps}),
                                          should_cancel=should_cancel)
            t = time.monotonic()
            self.stats["decodes"] += 1
            if result[0] == "clip":
                frame = _decode_frame(renderer, result[1], index, dec_chunk, dec_overlap)
            else:   # independent windows (blend crossfade/none over several): decoded whole, as the job
                with autocast_for(renderer.device, renderer.dtype):
                    video = decode_clip(lambda lat: decode_frames(renderer.vae, lat, dec_chunk, dec_overlap,
                                                                  renderer.device), result, plan, settings.blend)
                frame = video[0, index]
        seconds["decode"] = round(time.monotonic() - t, 4)
        return frame.cpu().numpy()

    @staticmethod
    def _write(out: Path, frame_srgb: np.ndarray, framing) -> np.ndarray:
        """EXR (linear, float) and PNG (sRGB) of the frame at the preview's output size, each written
        atomically (temporary name, then rename). Returns the linear image."""
        from engine.gbuffer import srgb_to_linear
        from engine.io.exr import write_exr_rgb
        from engine.io.images import write_png

        display = from_processing(frame_srgb[None], framing)[0]
        linear = np.asarray(srgb_to_linear(display), dtype=np.float32)
        write_exr_rgb(out, linear, dtype="float")
        write_png(out.with_suffix(".png"), display)
        return linear


def run_preview(set_path, hdri, frame: int, out, params: dict | None = None, *, previewer: Previewer | None = None,
                should_cancel=None, listener=None) -> dict:
    """One preview with a renderer loaded for it (the CLI); returns the summary without the image."""
    from engine.jobs.common import load_renderer

    holder: dict = {}

    def renderer_for(settings):
        if "r" not in holder:
            holder["r"], holder["load_s"] = load_renderer("forward", settings)
        return holder["r"]

    previewer = previewer or Previewer(renderer_for)
    summary = previewer.preview(set_path, hdri, frame, out, params, should_cancel=should_cancel, listener=listener)
    summary.pop("image", None)
    return summary
