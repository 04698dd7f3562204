"""A clip's work as picklable units: the plan of one (clip × HDRI) and the computation of one of its segments.

The inverse and forward jobs, the cluster (``--cluster``) and the render-farm path (``plan`` +
``--only-segments``) share this module, so a segment is computed by ONE function wherever it runs:

* :class:`ClipPlan` — what a clip's run is (input, settings, processing size, framing, seed, settings key,
  segments, output folder), built by :func:`inverse_plan` / :func:`forward_plan` from an opened *source*
  (:func:`open_inverse_source` / :func:`open_forward_source`) and the renderer's :class:`RendererFacts`;
* :func:`compute_segment` ``(renderer, ctx, plan, k)`` — segment ``k``'s outputs, the dict that
  ``segments.run_segments`` blends and the resume cache stores. ``ctx`` reports progress
  (``ctx.report(done, total)``) and says when to stop (``ctx.should_cancel()``): :class:`LocalContext` in
  the job's own process, ``engine.cluster.actors.UnitContext`` on a cluster worker. A worker opens the
  plan's source itself (kept for the next segment of the same plan).

Every segment takes its slice of the whole clip's noise (``segments.noise_for``), so where a segment is
computed does not change it."""
from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from engine.jobs.common import JobError, file_identity, settings_key
from engine.jobs.framing import Framing, from_processing, plan_framing, processing_size, to_processing
from engine.jobs.segments import noise_for, plan_segments

# settings that change how a job runs, not what it computes: left out of the settings key
RUN_ONLY_SETTINGS = ("overwrite", "device", "previews", "cluster", "split", "only_segments")
# model outputs (model encodings) → how they are resampled back to the output size
OUTPUT_KINDS = {"normal": "normal-encoded"}
# model-encoded G-buffer inputs → how they are resampled to the processing size (engine/jobs/framing.py):
# normals renormalised, depth nearest (background is encoded far = 1; averaging would invent depths)
INPUT_KINDS = {"normal": "normal-encoded", "depth": "nearest"}


# -- the renderer, as far as a plan needs it ---------------------------------------------------------------
@dataclass(frozen=True)
class RendererFacts:
    """What planning needs from a renderer: its latent factor, its size multiple and its identity (the
    settings key's ``model``), so a driver without the model (a cluster's) plans like the workers."""
    vae_factor: int
    size_multiple: int
    identity: dict

    @classmethod
    def of(cls, renderer) -> "RendererFacts":
        return cls(int(renderer.vae_factor), int(renderer.size_multiple), model_identity(renderer))

    @classmethod
    def from_checkpoint(cls, kind: str, settings) -> "RendererFacts":
        """The facts of the renderer ``settings`` ask for, from its checkpoint's configs (no weights loaded;
        the dtype is this machine's for ``device auto``)."""
        import json

        from engine.pipelines.components import pick_device, pick_dtype, resolve_checkpoint

        try:
            root = resolve_checkpoint(settings.model, revision=settings.revision, allow_download=True)
            vae = json.loads((root / "vae" / "config.json").read_text())
            unet = json.loads((root / "unet" / "config.json").read_text())
            dtype = pick_dtype(settings.dtype, pick_device(settings.device))
        except (OSError, ValueError) as exc:
            raise JobError(f"--model {settings.model}: {exc}") from None
        factor = 2 ** (len(vae["block_out_channels"]) - 1)
        commit = root.name if len(root.name) == 40 else None
        return cls(factor, factor * 2 ** (len(unet["block_out_channels"]) - 1),
                   {"root": str(root), "commit": commit, "dtype": str(dtype)})


def renderer_facts(renderer, ctx) -> RendererFacts:
    """A unit function: the facts of the worker's renderer."""
    return RendererFacts.of(renderer)


def model_identity(renderer) -> dict:
    root = Path(renderer.c.root)
    commit = root.name if len(root.name) == 40 else None  # HF snapshot folders are named by commit
    return {"root": str(root), "commit": commit, "dtype": str(renderer.dtype)}


# -- plans -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClipPlan:
    """One (clip × HDRI) of a job: everything a process needs to compute any of its segments."""
    kind: str                      # "inverse" | "forward"
    input: str                     # inverse: the clip (file, folder or pattern); forward: the G-buffer source
    out: str
    settings: object               # InverseSettings | ForwardSettings (forward: this HDRI's)
    size: tuple                    # processing (W, H)
    framing: Framing
    seed: int
    key: str                       # the settings key (resume cache folder, manifest provenance)
    segments: tuple                # ((start, end), ...) frame ranges
    frames: int
    noise_shape: tuple
    clip: Optional[str] = None     # forward: the clip's name in its source
    hdri: Optional[str] = None     # forward: the HDRI file

    def segment_name(self, k: int) -> str:
        return f"seg_{k:04d}"

    def segment_steps(self, k: int) -> int:
        """Denoising calls segment ``k`` makes (its progress total)."""
        return denoise_calls([self.segments[k]], self.settings)

    @property
    def unit_label(self) -> str:
        parts = [Path(self.input).name if self.clip is None else self.clip]
        if self.hdri:
            parts.append(Path(self.hdri).stem)
        return "/".join(parts)


def up_to_date(out, key: str) -> bool:
    """Whether ``out`` holds a complete set written with the settings key ``key`` (nothing to do)."""
    from engine.gbuffer import open_gbuffer_set

    out = Path(out)
    if not (out / "manifest.json").is_file():
        return False
    try:
        gset = open_gbuffer_set(out)
    except Exception:  # noqa: BLE001 - anything unreadable is simply redone
        return False
    if (gset.manifest.data.get("provenance") or {}).get("settings", {}).get("key") != key:
        return False
    return all(gset.path(p, f).is_file() for p in gset.passes for f in gset.frame_numbers)


def denoise_calls(segments, settings) -> int:
    """Denoising steps a job makes (progress total): per segment, steps × windows unless fused."""
    from engine.pipelines.windows import plan_windows

    total = 0
    for s, e in segments:
        windows = len(plan_windows(e - s, settings.frames, settings.overlap))
        total += settings.steps * (windows if settings.blend != "latent" else 1)
    passes = getattr(settings, "passes", None)   # forward jobs have one UNet batch per step
    return total * (len(range(0, len(passes), pass_batch(settings))) if passes else 1)


def pass_batch(settings) -> int:
    """Passes per UNet batch: all of them, or as the memory mode allows."""
    from engine.pipelines.memory import memory_plan

    return memory_plan(settings.memory).unet_items or len(settings.passes)


def _key_settings(settings) -> dict:
    return {k: v for k, v in asdict(settings).items() if k not in RUN_ONLY_SETTINGS}


def _seed(settings) -> int:
    return settings.seed if settings.seed is not None else secrets.randbelow(2**31)


# -- inverse -----------------------------------------------------------------------------------------------
def input_colour(clip, colorspace: str):
    """The clip's colour space under the ``colorspace`` setting (engine/colour.py: ``linear`` — values are, or
    are converted to, scene-linear Rec.709; ``convert`` — the OpenColorIO conversion, None for sRGB/linear)."""
    from engine import colour

    try:
        return colour.input_colour(clip, colorspace)
    except ValueError as exc:
        raise JobError(str(exc)) from None


def identity_path(clip_path) -> Path:
    """What the resume key fingerprints: a sequence pattern's folder, else the path itself."""
    from engine.io.sequence import is_pattern

    p = Path(clip_path)
    return p.parent if is_pattern(p) and not p.exists() else p


@dataclass
class InverseSource:
    """An opened inverse input: the clip (frames read per segment) and its colour space."""
    clip: object
    colour: object
    noise_cache: dict = field(default_factory=dict)

    def noise(self, plan: ClipPlan):
        if plan.key not in self.noise_cache:
            self.noise_cache.clear()
            self.noise_cache[plan.key] = noise_for(plan.noise_shape, plan.seed)
        return self.noise_cache[plan.key]

    def close(self) -> None:
        self.clip.__exit__(None, None, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_inverse_source(clip_path, settings) -> InverseSource:
    """Open the footage at ``clip_path`` as the settings ask (frame range, rates, colour space)."""
    from engine.io import VIDEO_SUFFIXES, open_clip, open_video

    first = settings.first_frame
    is_video = Path(clip_path).is_file() and Path(clip_path).suffix.lower() in VIDEO_SUFFIXES
    if first is None and is_video:
        first = 1                                   # a video's frames are numbered from 1, like Blender's
    try:
        # a video whose frames do not all decode is refused unless allow_missing_frames (engine/io/video.py)
        opener = partial(open_video, allow_missing_frames=True) if is_video and settings.allow_missing_frames \
            else open_clip
        clip = opener(clip_path, frame_range=settings.frame_range, fps=settings.fps,
                      source_fps=settings.source_fps, first_number=first)
    except (FileNotFoundError, ValueError, IndexError) as exc:
        raise JobError(str(exc)) from None
    clip.__enter__()
    try:
        if len(clip) == 0:
            raise JobError(f"{clip_path}: the clip has zero frames")
        return InverseSource(clip, input_colour(clip, settings.colorspace))
    except BaseException:
        clip.__exit__(None, None, None)
        raise


def inverse_plan(clip_path, out, settings, facts: RendererFacts, source: InverseSource, exclude=()) -> ClipPlan:
    """The plan of the clip at ``clip_path`` into the set ``out``; ``exclude``: further output folders left out
    of the input's identity (``out`` itself always is)."""
    clip = source.clip
    n = len(clip)
    size = processing_size(clip.size, settings.resolution)
    mult = facts.size_multiple
    if size[0] % mult or size[1] % mult:
        raise JobError(f"--resolution {size[0]}x{size[1]}: sides must be multiples of {mult}")
    framing = plan_framing(clip.size, size, settings.fit, settings.output_size)
    seed = _seed(settings)
    ident = {"input": str(Path(clip_path).resolve()),
             "files": file_identity(identity_path(clip_path), exclude=(out, *exclude)),
             "job": "inverse", "model": facts.identity, **_key_settings(settings), "seed": seed,
             "resolution": list(size)}
    segments = plan_segments(n, settings.frames, settings.overlap, settings.windows_per_segment)
    w, h = size
    f = facts.vae_factor
    return ClipPlan("inverse", str(clip_path), str(out), settings, tuple(size), framing, seed, settings_key(ident),
                    tuple(map(tuple, segments)), n, (1, n, 4, h // f, w // f))


def _inverse_segment(renderer, plan: ClipPlan, k: int, source: InverseSource, callback, should_cancel, sampler):
    from engine.gbuffer import linear_to_srgb, srgb_to_linear
    from engine.jobs.common import decode_settings
    from engine.jobs.framing import source_to_output

    settings, framing = plan.settings, plan.framing
    s, e = plan.segments[k]
    linear = source.colour.linear
    raw = source.colour.convert(source.clip.read_range(s, e))      # → scene-linear Rec.709 when not sRGB/linear
    frames = to_processing(raw, framing)
    display = linear_to_srgb(frames) if linear else np.clip(frames, 0.0, 1.0)
    dec_chunk, dec_overlap = decode_settings(settings)
    out_ = renderer(display, settings.passes, num_inference_steps=settings.steps, seed=None,
                    noise=source.noise(plan)[:, s:e], decode_chunk_size=dec_chunk, decode_overlap=dec_overlap,
                    window=settings.frames, pass_batch=pass_batch(settings), overlap=settings.overlap,
                    blend=settings.blend, should_cancel=should_cancel, callback=callback, sampler=sampler)
    res = {f"pass:{p}": from_processing(v, framing, OUTPUT_KINDS.get(p, "color")) for p, v in out_.items()}
    plate = source_to_output(raw, framing)
    res["input"] = plate if linear else srgb_to_linear(np.clip(plate, 0.0, 1.0))
    return res


# -- forward -----------------------------------------------------------------------------------------------
def light_for(clip, hdri: Path, settings, n: int, warnings: list | None = None):
    """The EnvLight of ``hdri`` for ``clip`` under the (per-HDRI) settings."""
    from engine.envmap import load_envmap

    try:
        hdr = load_envmap(hdri, warnings=warnings)      # NaN/Inf texels replaced, with a warning
    except (FileNotFoundError, ValueError) as exc:
        raise JobError(f"--hdri {hdri}: {exc}") from None
    return posed_light(clip, hdr, settings, n)


def posed_light(clip, hdr, settings, n: int, *, option: str = "--camera-follow",
                fix: str = "drop --camera-follow"):
    """The EnvLight of an HDRI already loaded, posed by the settings (rotation, elevation, flip, strength, the
    camera's per-frame rotation with camera_follow); ``option``/``fix`` name the setting in errors."""
    from engine.envmap import env_rotation_from_blender
    from engine.pipelines import EnvLight

    cams = None
    if settings.camera_follow:
        if not clip.cameras:
            raise JobError(f"{option}: {clip.source} has no per-frame camera matrices (export the G-buffers "
                           f"with the add-on, or {fix})")
        cams = env_rotation_from_blender(np.asarray(clip.cameras, dtype=np.float64)[:, :3, :3]).numpy()
        if settings.fixed_frame is not None:
            cams = np.repeat(cams[settings.fixed_frame:settings.fixed_frame + 1], n, 0)
    return EnvLight(hdr, rotate=settings.rotate_light, elevation=0.0 if cams is not None else settings.elevation,
                    elevation_convention=settings.elevation_convention, rotation=settings.env_rotation,
                    flip=settings.env_flip, strength=settings.env_strength, cam_rotations=cams)


@dataclass
class ForwardSource:
    """A loaded G-buffer clip and its light (the light's per-frame maps are made when first needed)."""
    clip: object
    light: object
    settings: object
    warnings: list = field(default_factory=list)
    _maps: Optional[tuple] = None
    noise_cache: dict = field(default_factory=dict)

    def maps(self):
        if self._maps is None:
            self._maps = self.light.maps(len(self.clip.frame_numbers), self.settings.env_resolution)
        return self._maps

    noise = InverseSource.noise

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def open_forward_source(clip, hdri, settings) -> ForwardSource:
    """``clip``: a loaded G-buffer clip (engine/jobs/gbuffer_inputs.py); ``hdri``: its light's file."""
    warnings: list = []
    light = light_for(clip, Path(hdri), settings, len(clip.frame_numbers), warnings)
    return ForwardSource(clip, light, settings, warnings)


def forward_plan(clip, hdri, out, settings, facts: RendererFacts, exclude=()) -> ClipPlan:
    """The plan of the G-buffer clip ``clip`` under ``hdri`` into the set ``out`` (``exclude``: as inverse_plan)."""
    from engine.jobs.common import cover_resolution

    hdri = Path(hdri)
    n = len(clip.frame_numbers)
    if settings.fixed_frame is not None and not 0 <= settings.fixed_frame < n:
        raise JobError(f"--fixed-frame {settings.fixed_frame}: the clip has frames 0..{n - 1}")
    size = settings.resolution or (clip.size if all(v % 64 == 0 for v in clip.size) else cover_resolution(*clip.size))
    framing = plan_framing(clip.size, size, settings.fit, settings.output_size)
    seed = _seed(settings)
    key = settings_key({"input": clip.source, "files": file_identity(Path(clip.source), exclude=(out, *exclude)),
                        "clip": clip.name,
                        "hdri": [str(hdri.resolve()), file_identity(hdri)], "job": "forward",
                        "model": facts.identity, "seed": seed, "resolution": list(size), **_key_settings(settings)})
    segments = plan_segments(n, settings.frames, settings.overlap, settings.windows_per_segment)
    w, h = size
    f = facts.vae_factor
    return ClipPlan("forward", str(clip.source), str(out), settings, tuple(size), framing, seed, key,
                    tuple(map(tuple, segments)), n, (1, n, 4, h // f, w // f), clip=clip.name, hdri=str(hdri))


def _forward_segment(renderer, plan: ClipPlan, k: int, source: ForwardSource, callback, should_cancel, sampler):
    from engine.jobs.common import decode_settings

    settings, framing, clip = plan.settings, plan.framing, source.clip
    s, e = plan.segments[k]
    if settings.fixed_frame is not None:
        gb = {p: np.repeat(v[settings.fixed_frame:settings.fixed_frame + 1], e - s, 0) for p, v in clip.inputs.items()}
    else:
        gb = {p: v[s:e] for p, v in clip.inputs.items()}
    gb = {p: to_processing(v, framing, INPUT_KINDS.get(p, "color")) for p, v in gb.items()}
    env_ldr, env_log = source.maps()
    dec_chunk, dec_overlap = decode_settings(settings)
    video = renderer(gb, {"env_ldr": env_ldr[s:e], "env_log": env_log[s:e]},
                     num_inference_steps=settings.steps, guidance_scale=settings.guidance,
                     lora_scale=settings.lora_scale, seed=None, noise=source.noise(plan)[:, s:e],
                     decode_chunk_size=dec_chunk, decode_overlap=dec_overlap,
                     window=settings.frames, overlap=settings.overlap, blend=settings.blend,
                     should_cancel=should_cancel, callback=callback, sampler=sampler)
    return {"relit": from_processing(video, framing)}


# -- one segment, wherever it runs ---------------------------------------------------------------------------
class LocalContext:
    """``ctx`` of a segment computed in the job's own process: steps go to the job's Progress."""

    def __init__(self, progress, chunk: int, should_cancel: Optional[Callable[[], bool]] = None):
        self.progress, self.chunk, self._cancel, self._done = progress, chunk, should_cancel, 0
        self.attempt = 0

    def report(self, done: int, total: int) -> None:
        if done > self._done and self.progress is not None:
            self.progress.step("denoise", self.chunk, n=done - self._done)
        self._done = max(self._done, done)

    def should_cancel(self) -> bool:
        return bool(self._cancel is not None and self._cancel())


_SOURCES: "OrderedDict[str, object]" = OrderedDict()   # a worker's opened sources, by plan key
_KEEP_SOURCES = 2


def open_source(plan: ClipPlan):
    """Open ``plan``'s input as the job does (a worker's or a farm task's own copy)."""
    if plan.kind == "inverse":
        return open_inverse_source(plan.input, plan.settings)
    from engine.jobs.gbuffer_inputs import GBufferInputError, load_gbuffer_clips

    try:
        clips = [c for c in load_gbuffer_clips(plan.input) if c.name == plan.clip]
    except GBufferInputError as exc:
        raise JobError(str(exc)) from None
    if not clips:
        raise JobError(f"{plan.input}: no G-buffer clip named {plan.clip!r} any more; plan the job again")
    return open_forward_source(clips[0], plan.hdri, plan.settings)


def _worker_source(plan: ClipPlan):
    source = _SOURCES.pop(plan.key, None) or open_source(plan)
    _SOURCES[plan.key] = source
    while len(_SOURCES) > _KEEP_SOURCES:
        _SOURCES.popitem(last=False)[1].close()
    return source


def compute_segment(renderer, ctx, plan: ClipPlan, k: int, source=None, sampler=None) -> dict:
    """Segment ``k`` of ``plan``: ``{name: array (frames, H, W, C)}`` at the output size — what
    ``segments.run_segments`` blends and the resume cache stores. ``source``: the opened input (None: this
    process opens it and keeps it for the plan's next segment); ``sampler``: who runs the denoising loop
    (engine/pipelines/samplers.py; ``--split windows`` passes a window group's)."""
    source = source if source is not None else _worker_source(plan)
    total = plan.segment_steps(k)
    done = 0

    def callback(i, *_):
        nonlocal done
        done += 1
        ctx.report(done, total)

    fn = _inverse_segment if plan.kind == "inverse" else _forward_segment
    return fn(renderer, plan, k, source, callback, ctx.should_cancel, sampler)
