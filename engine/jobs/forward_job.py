"""The forward job: G-buffers + one or more HDRIs → relit sets (linear EXR + PNG + mp4), one per light."""
from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from engine.contract.params import default as param_default
from engine.contract.params import parse_size
from engine.jobs.common import (JobError, JobSettings, Progress, ResumeCache, check_writable, cover_resolution,
                               decode_settings, file_identity, job_summary, load_renderer, settings_key)
from engine.jobs.framing import check_settings, from_processing, plan_framing, to_processing
from engine.jobs.gbuffer_inputs import GBufferInputError, load_gbuffer_clips
from engine.jobs.inverse_job import (
    ClipResult,
    _model_identity,
    _up_to_date,
    denoise_calls,
)
from engine.jobs.segments import noise_for, plan_segments, run_segments
from engine.jobs.disk_space import cache_bytes, check_disk_space, disk_full_reported, pass_sizes, set_bytes
from engine.jobs.out_lock import OutLock, locked_outputs


@dataclass
class ForwardSettings(JobSettings):
    model: str = param_default("model", "forward")
    lora_scale: float = param_default("lora_scale")
    guidance: float | list = param_default("guidance")   # or [min, max]: ramped over each window's frames
    rotate_light: bool = param_default("rotate_light")
    fixed_frame: Optional[int] = param_default("fixed_frame")
    elevation: float = param_default("elevation")
    elevation_convention: str = param_default("elevation_convention")
    env_rotation: float = param_default("env_rotation")
    env_strength: float = param_default("env_strength")
    env_flip: bool = param_default("env_flip")
    hdri_settings: Optional[list] = param_default("hdri_settings")   # per HDRI: {rotation, strength, flip}
    camera_follow: bool = param_default("camera_follow")
    env_resolution: tuple = parse_size(param_default("env_resolution"))[::-1]   # (H, W)


# model-encoded G-buffer inputs → how they are resampled to the processing size (engine/jobs/framing.py):
# normals renormalised, depth nearest (background is encoded far = 1; averaging would invent depths)
_INPUT_KINDS = {"normal": "normal-encoded", "depth": "nearest"}


def _light_for(clip, hdri: Path, settings: ForwardSettings, n: int, warnings: list | None = None):
    from engine.envmap import env_rotation_from_blender, load_envmap
    from engine.pipelines import EnvLight

    try:
        hdr = load_envmap(hdri, warnings=warnings)      # NaN/Inf texels replaced, with a warning
    except (FileNotFoundError, ValueError) as exc:
        raise JobError(f"--hdri {hdri}: {exc}") from None
    cams = None
    if settings.camera_follow:
        if not clip.cameras:
            raise JobError(f"--camera-follow: {clip.source} has no per-frame camera matrices (export the G-buffers "
                           "with the add-on, or drop --camera-follow)")
        cams = env_rotation_from_blender(np.asarray(clip.cameras, dtype=np.float64)[:, :3, :3]).numpy()
        if settings.fixed_frame is not None:
            cams = np.repeat(cams[settings.fixed_frame:settings.fixed_frame + 1], n, 0)
    return EnvLight(hdr, rotate=settings.rotate_light, elevation=0.0 if cams is not None else settings.elevation,
                    elevation_convention=settings.elevation_convention, rotation=settings.env_rotation,
                    flip=settings.env_flip, strength=settings.env_strength, cam_rotations=cams)


def run_forward_clip(clip, hdri: Path, out: Path, settings: ForwardSettings, renderer, *, listener=None,
                     should_cancel: Optional[Callable[[], bool]] = None, show_progress: bool = True,
                     light_of: tuple = (1, 1), exclude=()) -> ClipResult:
    """Relight one clip under one HDRI into the set ``out`` (locked while it runs); ``light_of`` = (index, count)
    of this HDRI among the job's (progress); ``exclude``: further output folders left out of the input's
    identity (``out`` itself always is)."""
    with OutLock(out):
        return _run_forward_clip(clip, hdri, out, settings, renderer, listener=listener, should_cancel=should_cancel,
                                 show_progress=show_progress, light_of=light_of, exclude=exclude)


def _run_forward_clip(clip, hdri: Path, out: Path, settings: ForwardSettings, renderer, *, listener,
                      should_cancel, show_progress, light_of, exclude) -> ClipResult:
    from engine.gbuffer import GBufferSetWriter, srgb_to_linear, write_pass_video, write_previews
    from engine.gbuffer import make_provenance

    t0 = time.monotonic()
    n = len(clip.frame_numbers)
    if settings.fixed_frame is not None and not 0 <= settings.fixed_frame < n:
        raise JobError(f"--fixed-frame {settings.fixed_frame}: the clip has frames 0..{n - 1}")
    size = settings.resolution or (clip.size if all(v % 64 == 0 for v in clip.size) else cover_resolution(*clip.size))
    framing = plan_framing(clip.size, size, settings.fit, settings.output_size)
    seed = settings.seed if settings.seed is not None else secrets.randbelow(2**31)
    key = settings_key({"input": clip.source, "files": file_identity(Path(clip.source), exclude=(out, *exclude)), "clip": clip.name,
                        "hdri": [str(hdri.resolve()), file_identity(hdri)], "job": "forward",
                        "model": _model_identity(renderer), "seed": seed, "resolution": list(size),
                        **{k: v for k, v in asdict(settings).items() if k not in ("overwrite", "device", "previews")}})
    result = ClipResult(clip.source, str(out), n, tuple(framing.output), ["relit"], fps=float(clip.fps),
                        frame_numbers=list(clip.frame_numbers), framing=framing.record())
    if _up_to_date(out, key):
        result.status = "up-to-date"
        return result
    check_writable(out)
    light_warnings: list = []
    light = _light_for(clip, hdri, settings, n, light_warnings)
    env_ldr, env_log = light.maps(n, settings.env_resolution)
    cache = ResumeCache(out, key)
    segments = plan_segments(n, settings.frames, settings.overlap, settings.windows_per_segment)
    result.segments = len(segments)
    ow, oh = framing.output
    need = (set_bytes(ow, oh, n, pass_sizes(["relit"]), previews=settings.previews)
            + cache_bytes(ow, oh, segments, 3))
    check_disk_space(out, need, f"{n} relit frames at {ow}x{oh}")
    w, h = size
    noise = noise_for((1, n, 4, h // renderer.vae_factor, w // renderer.vae_factor), seed)
    progress = Progress(denoise_calls(segments, settings), f"forward {clip.name} × {hdri.stem}", listener,
                        show_progress, extra={"light": int(light_of[0]), "lights": int(light_of[1])})
    computed = []
    dec_chunk, dec_overlap = decode_settings(settings)

    def compute(k, s, e):
        if settings.fixed_frame is not None:
            gb = {p: np.repeat(v[settings.fixed_frame:settings.fixed_frame + 1], e - s, 0) for p, v in clip.inputs.items()}
        else:
            gb = {p: v[s:e] for p, v in clip.inputs.items()}
        gb = {p: to_processing(v, framing, _INPUT_KINDS.get(p, "color")) for p, v in gb.items()}
        video = renderer(gb, {"env_ldr": env_ldr[s:e], "env_log": env_log[s:e]},
                         num_inference_steps=settings.steps, guidance_scale=settings.guidance,
                         lora_scale=settings.lora_scale, seed=None, noise=noise[:, s:e],
                         decode_chunk_size=dec_chunk, decode_overlap=dec_overlap,
                         window=settings.frames, overlap=settings.overlap, blend=settings.blend,
                         should_cancel=should_cancel, callback=lambda i, *_: progress.step("denoise", k))
        computed.append(k)
        return {"relit": from_processing(video, framing)}

    base = {"fps": clip.fps, "kind": "relit",
            "provenance": make_provenance("forward-model", model=settings.model, revision=settings.revision,
                                          settings={**{k: (list(v) if isinstance(v, tuple) else v)
                                                       for k, v in asdict(settings).items()},
                                                    "key": key, "seed": seed, "hdri": str(hdri.resolve()),
                                                    "framing": framing.record()},
                                          source=f"{clip.source}#{clip.name}")}
    if clip.camera_entries:  # the relit set keeps the source set's cameras (complete manifest entries)
        base["camera"] = clip.camera_entries
    try:
        writer = GBufferSetWriter(out, base, overwrite=settings.overwrite)
    except ValueError as exc:
        raise JobError(str(exc)) from None
    with disk_full_reported(out, need):    # a full disk: one line with the path and the need
        for idx, frame in run_segments(segments, compute, cache):
            writer.write_frame("relit", clip.frame_numbers[idx], srgb_to_linear(frame["relit"]))
        progress.stage("write")
        progress.close()
        gset = writer.finish()
        if settings.previews:
            write_previews(gset)
            write_pass_video(gset, "relit")
    cache.clear()
    result.resumed_segments = len(segments) - len(computed)
    result.warnings = list(clip.warnings) + light_warnings + framing.warnings() + list(writer.warnings)
    result.seconds = {"total": round(time.monotonic() - t0, 2)}
    return result


def light_settings(settings: ForwardSettings, n: int) -> list:
    """The settings of each of ``n`` HDRIs: ``hdri_settings[i]``'s rotation / strength / flip over the job's
    env_rotation / env_strength / env_flip."""
    items = settings.hdri_settings
    if items is None:
        return [settings] * n
    if len(items) != n:
        raise JobError(f"hdri_settings has {len(items)} entries for {n} HDRIs (one per HDRI, in order)")
    return [replace(settings, hdri_settings=None,
                    env_rotation=float(item.get("rotation", settings.env_rotation)),
                    env_strength=float(item.get("strength", settings.env_strength)),
                    env_flip=bool(item.get("flip", settings.env_flip))) for item in items]


def run_forward(gbuffers, hdris, out, settings: ForwardSettings, *, renderer=None, listener=None,
                should_cancel=None, show_progress: bool = True) -> dict:
    """Relight every G-buffer clip at ``gbuffers`` under every HDRI; ``out/<hdri>`` (or
    ``out/<clip>/<hdri>`` for several clips). Returns a JSON-able summary."""
    t0 = time.monotonic()
    check_settings(settings)
    hdris = [Path(h) for h in hdris]
    if not hdris:
        raise JobError("give at least one --hdri FILE (.hdr or .exr)")
    for h in hdris:
        if not h.is_file():
            raise JobError(f"--hdri {h}: file not found")
        if h.suffix.lower() not in (".hdr", ".exr"):
            raise JobError(f"--hdri {h}: not an HDR environment map (use a Radiance .hdr or an OpenEXR .exr)")
    if len({h.stem for h in hdris}) != len(hdris):
        raise JobError("--hdri files must have distinct names (each gets its own output folder)")
    try:
        clips = load_gbuffer_clips(gbuffers)
    except GBufferInputError as exc:
        raise JobError(str(exc)) from None
    out = Path(out)
    check_writable(out)
    lights = light_settings(settings, len(hdris))
    jobs = [(clip, i, hdri, (out / clip.name if len(clips) > 1 else out) / hdri.stem)
            for clip in clips for i, hdri in enumerate(hdris, 1)]
    with locked_outputs([target for *_, target in jobs]):   # another run into these sets fails here, at once
        t_load = 0.0
        if renderer is None:
            renderer, t_load = load_renderer("forward", settings)
        results = []
        for clip, i, hdri, target in jobs:
            results.append(run_forward_clip(clip, hdri, target, lights[i - 1], renderer, listener=listener,
                                            should_cancel=should_cancel, show_progress=show_progress,
                                            light_of=(i, len(hdris)), exclude=(out,)))
    return job_summary("forward", gbuffers, out, t0, t_load, results)
