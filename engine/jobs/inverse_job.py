"""The inverse job: footage (video, frame folder, or a folder of clips) → G-buffer set(s)."""
from __future__ import annotations

import logging
import secrets
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from engine.contract.params import default as param_default
from engine.jobs.common import (JobError, JobSettings, Progress, ResumeCache, check_writable, decode_settings,
                               file_identity, job_summary, load_renderer, settings_key)
from engine.jobs.framing import check_settings, from_processing, plan_framing, processing_size, source_to_output, to_processing
from engine.jobs.segments import noise_for, plan_segments, run_segments
from engine.jobs.disk_space import cache_bytes, check_disk_space, disk_full_reported, pass_sizes, set_bytes
from engine.jobs.out_lock import OutLock, locked_outputs

log = logging.getLogger(__name__)


@dataclass
class InverseSettings(JobSettings):
    passes: tuple = tuple(param_default("passes"))
    model: str = param_default("model", "inverse")
    frame_range: Optional[tuple] = param_default("frame_range")   # (first, last) inclusive, in the set's frame numbers
    fps: Optional[float] = param_default("fps")                   # output rate by frame selection (None: the source's)
    source_fps: Optional[float] = param_default("source_fps")     # an image sequence's rate (a video's own when overridden)
    first_frame: Optional[int] = param_default("first_frame")     # number of a video's first frame (None: 1)
    colorspace: str = param_default("colorspace")                 # auto | srgb | linear | an OCIO name (engine/colour.py)
    allow_missing_frames: bool = param_default("allow_missing_frames")   # a video's undecodable frames: skip, not refuse


@dataclass
class ClipResult:
    clip: str
    out: str
    frames: int
    resolution: tuple
    passes: list
    status: str = "done"          # done | up-to-date
    resumed_segments: int = 0
    segments: int = 0
    seconds: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    fps: Optional[float] = None
    frame_numbers: list = field(default_factory=list)
    framing: dict = field(default_factory=dict)     # engine/jobs/framing.py Framing.record()


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


# model outputs (model encodings) → how they are resampled back to the output size
_OUTPUT_KINDS = {"normal": "normal-encoded"}


def input_colour(clip, colorspace: str):
    """The clip's colour space under the ``colorspace`` setting (engine/colour.py: ``linear`` — values are, or
    are converted to, scene-linear Rec.709; ``convert`` — the OpenColorIO conversion, None for sRGB/linear)."""
    from engine import colour

    try:
        return colour.input_colour(clip, colorspace)
    except ValueError as exc:
        raise JobError(str(exc)) from None


def check_colorspace(colorspace: str) -> None:
    from engine import colour

    try:
        colour.check(colorspace)
    except ValueError as exc:
        raise JobError(str(exc)) from None


def fps_warnings(clip) -> list[str]:
    if getattr(clip, "fps_origin", "") == "default":
        return [f"no frame rate given for this image sequence: {clip.fps:g} fps assumed (set source_fps)"]
    return []


def _model_identity(renderer) -> dict:
    root = Path(renderer.c.root)
    commit = root.name if len(root.name) == 40 else None  # HF snapshot folders are named by commit
    return {"root": str(root), "commit": commit, "dtype": str(renderer.dtype)}


def _up_to_date(out: Path, key: str) -> bool:
    from engine.gbuffer import open_gbuffer_set

    if not (out / "manifest.json").is_file():
        return False
    try:
        gset = open_gbuffer_set(out)
    except Exception:  # noqa: BLE001 - anything unreadable is simply redone
        return False
    if (gset.manifest.data.get("provenance") or {}).get("settings", {}).get("key") != key:
        return False
    return all(gset.path(p, f).is_file() for p in gset.passes for f in gset.frame_numbers)


def _identity_path(clip_path) -> Path:
    """What the resume key fingerprints: a sequence pattern's folder, else the path itself."""
    from engine.io.sequence import is_pattern

    p = Path(clip_path)
    return p.parent if is_pattern(p) and not p.exists() else p


def run_clip(clip_path: Path, out: Path, settings: InverseSettings, renderer, *, listener=None,
             should_cancel: Optional[Callable[[], bool]] = None, show_progress: bool = True,
             exclude=()) -> ClipResult:
    """De-light one clip into the set ``out`` (locked while it runs). ``exclude``: further output folders left
    out of the input's identity (``out`` itself always is)."""
    with OutLock(out):
        return _run_clip(clip_path, out, settings, renderer, listener=listener, should_cancel=should_cancel,
                         show_progress=show_progress, exclude=exclude)


def inverse_output_bytes(width: int, height: int, n: int, segments, settings) -> int:
    """Predicted disk use of an inverse set: its EXRs (+ previews) and the resume cache (engine/jobs/disk_space.py)."""
    sizes = pass_sizes([*settings.passes, "rgb"])
    return (set_bytes(width, height, n, sizes, previews=settings.previews)
            + cache_bytes(width, height, segments, 3 * (len(settings.passes) + 1)))


def _run_clip(clip_path: Path, out: Path, settings: InverseSettings, renderer, *, listener=None,
              should_cancel: Optional[Callable[[], bool]] = None, show_progress: bool = True,
              exclude=()) -> ClipResult:
    from engine.gbuffer import GBufferSetWriter, from_model_outputs, linear_to_srgb, srgb_to_linear
    from engine.gbuffer.encodings import depth_manifest
    from engine.gbuffer import make_provenance
    from engine.io import VIDEO_SUFFIXES, open_clip, open_video

    t0 = time.monotonic()
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
    with clip:
        n = len(clip)
        if n == 0:
            raise JobError(f"{clip_path}: the clip has zero frames")
        colour_in = input_colour(clip, settings.colorspace)
        linear = colour_in.linear
        size = processing_size(clip.size, settings.resolution)
        mult = renderer.size_multiple
        if size[0] % mult or size[1] % mult:
            raise JobError(f"--resolution {size[0]}x{size[1]}: sides must be multiples of {mult}")
        framing = plan_framing(clip.size, size, settings.fit, settings.output_size)
        seed = settings.seed if settings.seed is not None else secrets.randbelow(2**31)
        ident = {"input": str(Path(clip_path).resolve()), "files": file_identity(_identity_path(clip_path), exclude=(out, *exclude)),
                 "job": "inverse", "model": _model_identity(renderer),
                 **{k: v for k, v in asdict(settings).items() if k not in ("overwrite", "device", "previews")},
                 "seed": seed, "resolution": list(size)}
        key = settings_key(ident)
        result = ClipResult(str(clip_path), str(out), n, tuple(framing.output), list(settings.passes),
                            fps=float(clip.fps), frame_numbers=list(clip.frame_numbers), framing=framing.record())
        if _up_to_date(out, key):
            result.status = "up-to-date"
            return result
        check_writable(out)
        cache = ResumeCache(out, key)
        segments = plan_segments(n, settings.frames, settings.overlap, settings.windows_per_segment)
        result.segments = len(segments)
        need = inverse_output_bytes(*framing.output, n, segments, settings)
        check_disk_space(out, need, f"{n} frames of {len(settings.passes) + 1} passes at "
                                    f"{framing.output[0]}x{framing.output[1]}")
        w, h = size
        f_lat = renderer.vae_factor
        noise = noise_for((1, n, 4, h // f_lat, w // f_lat), seed)
        progress = Progress(denoise_calls(segments, settings), f"inverse {Path(clip_path).name}", listener,
                            show_progress)
        computed = []
        dec_chunk, dec_overlap = decode_settings(settings)

        def compute(k, s, e):
            raw = colour_in.convert(clip.read_range(s, e))      # → scene-linear Rec.709 when not sRGB/linear
            frames = to_processing(raw, framing)
            display = linear_to_srgb(frames) if linear else np.clip(frames, 0.0, 1.0)
            out_ = renderer(display, settings.passes, num_inference_steps=settings.steps, seed=None,
                            noise=noise[:, s:e], decode_chunk_size=dec_chunk,
                            decode_overlap=dec_overlap, window=settings.frames, pass_batch=pass_batch(settings),
                            overlap=settings.overlap, blend=settings.blend, should_cancel=should_cancel,
                            callback=lambda i, *_: progress.step("denoise", k) if i >= 0 else None)
            computed.append(k)
            res = {f"pass:{p}": from_processing(v, framing, _OUTPUT_KINDS.get(p, "color")) for p, v in out_.items()}
            plate = source_to_output(raw, framing)
            res["input"] = plate if linear else srgb_to_linear(np.clip(plate, 0.0, 1.0))
            return res

        manifest_base = {
            "fps": float(clip.fps or 24.0), "kind": "gbuffer", "depth": depth_manifest(None),
            **({"missing_frames": list(clip.missing_frames)} if clip.missing_frames else {}),
            "provenance": make_provenance("inverse-model", model=settings.model, revision=settings.revision,
                                          settings={**{k: (list(v) if isinstance(v, tuple) else v) for k, v in
                                                       asdict(settings).items()}, "key": key, "seed": seed,
                                                    "framing": framing.record(), "input_linear": linear,
                                                    "input_colour": colour_in.record()},
                                          source=str(Path(clip_path).resolve())),
        }
        t_compute = time.monotonic()
        try:
            writer = GBufferSetWriter(out, manifest_base, overwrite=settings.overwrite)
        except ValueError as exc:
            raise JobError(str(exc)) from None
        with disk_full_reported(out, need):    # a full disk: one line with the path and the need
            # a video's frames are numbered from first_frame (1 by default, like Blender); sequences keep theirs
            for idx, frame in run_segments(segments, compute, cache):
                number = clip.frame_numbers[idx]
                outputs = {k[5:]: v[None] for k, v in frame.items() if k.startswith("pass:")}
                for name, arr in from_model_outputs(outputs).items():
                    writer.write_frame(name, number, arr[0])
                writer.write_frame("rgb", number, frame["input"])
            progress.stage("write")
            progress.close()
            gset = writer.finish()
            t_write = time.monotonic()
            if settings.previews:
                from engine.gbuffer import write_contact_sheet, write_previews

                write_previews(gset)
                write_contact_sheet(gset)
        cache.clear()
        result.resumed_segments = len(segments) - len(computed)
        result.warnings = (fps_warnings(clip) + list(clip.warnings) + framing.warnings()
                           + list(writer.warnings)
                           + ([f"{clip.nonfinite_count} NaN/Inf input values replaced"] if clip.nonfinite_count else []))
        result.seconds = {"total": round(time.monotonic() - t0, 2), "compute_and_write": round(t_write - t_compute, 2),
                          "previews": round(time.monotonic() - t_write, 2)}
        return result


def run_inverse(input_path, out, settings: InverseSettings, *, renderer=None, listener=None, should_cancel=None,
                show_progress: bool = True) -> dict:
    """Run the inverse job on a clip or a batch folder; returns a JSON-able summary."""
    from engine.io import find_clips

    t0 = time.monotonic()
    input_path, out = Path(input_path), Path(out)
    check_settings(settings)
    check_colorspace(settings.colorspace)
    try:
        clips = find_clips(input_path)
    except (FileNotFoundError, ValueError) as exc:
        raise JobError(str(exc)) from None
    check_writable(out)
    batch = len(clips) > 1 or (input_path.is_dir() and clips[0] != input_path)
    targets = [out / (clip.stem if clip.is_file() else clip.name) if batch else out for clip in clips]
    with locked_outputs(targets):          # another run into these folders fails here, before any work
        t_load = 0.0
        if renderer is None:
            renderer, t_load = load_renderer("inverse", settings)
        results = []
        for clip, target in zip(clips, targets):
            results.append(run_clip(clip, target, settings, renderer, listener=listener, should_cancel=should_cancel,
                                    show_progress=show_progress, exclude=(out,)))
    return job_summary("inverse", input_path, out, t0, t_load, results)
