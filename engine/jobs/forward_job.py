"""The forward job: G-buffers + one or more HDRIs → relit sets (linear EXR + PNG + mp4), one per light."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

from engine.contract.params import default as param_default
from engine.contract.params import parse_size
from engine.jobs.common import JobError, JobSettings, Progress, ResumeCache, check_writable, job_summary, load_renderer
from engine.jobs.disk_space import cache_bytes, check_disk_space, disk_full_reported, pass_sizes, set_bytes
from engine.jobs.framing import check_settings
from engine.jobs.gbuffer_inputs import GBufferInputError, load_gbuffer_clips
from engine.jobs.inverse_job import ClipResult, provenance_settings
from engine.jobs.out_lock import OutLock, locked_outputs
from engine.jobs.segments import run_segments
from engine.jobs.unit_runs import check_only, compute_locally, compute_on_cluster, fixed_seed, open_runner
from engine.jobs.units import (ClipPlan, LocalContext, RendererFacts, compute_segment, denoise_calls, forward_plan,
                               open_forward_source, up_to_date)


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


def run_forward_clip(clip, hdri: Path, out: Path, settings: ForwardSettings, renderer, *, listener=None,
                     should_cancel: Optional[Callable[[], bool]] = None, show_progress: bool = True,
                     light_of: tuple = (1, 1), exclude=(), plan: Optional[ClipPlan] = None, cluster=None,
                     computed_elsewhere: int = 0) -> ClipResult:
    """Relight one clip under one HDRI into the set ``out`` (locked while it runs, except for an
    ``--only-segments`` task); ``light_of`` = (index, count) of this HDRI among the job's (progress);
    ``exclude``: further output folders left out of the input's identity (``out`` itself always is);
    ``plan``/``cluster``/``computed_elsewhere``: a cluster run's (inverse_job.run_clip)."""
    with contextlib.nullcontext() if settings.only_segments is not None else OutLock(out):
        return _run_forward_clip(clip, hdri, out, settings, renderer, listener=listener, should_cancel=should_cancel,
                                 show_progress=show_progress, light_of=light_of, exclude=exclude, plan=plan,
                                 cluster=cluster, computed_elsewhere=computed_elsewhere)


def _run_forward_clip(clip, hdri: Path, out: Path, settings: ForwardSettings, renderer, *, listener,
                      should_cancel, show_progress, light_of, exclude, plan, cluster, computed_elsewhere) -> ClipResult:
    from engine.gbuffer import GBufferSetWriter, srgb_to_linear, write_pass_video, write_previews
    from engine.gbuffer import make_provenance

    t0 = time.monotonic()
    if plan is None:
        plan = forward_plan(clip, hdri, out, settings, RendererFacts.of(renderer), exclude=exclude)
    n, framing, key, seed, segments = plan.frames, plan.framing, plan.key, plan.seed, list(plan.segments)
    result = ClipResult(clip.source, str(out), n, tuple(framing.output), ["relit"], fps=float(clip.fps),
                        frame_numbers=list(clip.frame_numbers), framing=framing.record())
    if up_to_date(out, key):
        result.status = "up-to-date"
        return result
    check_writable(out)
    source = open_forward_source(clip, hdri, settings)       # the HDRI is read (and checked) here
    cache = ResumeCache(out, key)
    result.segments = len(segments)
    ow, oh = framing.output
    need = (set_bytes(ow, oh, n, pass_sizes(["relit"]), previews=settings.previews)
            + cache_bytes(ow, oh, segments, 3))
    check_disk_space(out, need, f"{n} relit frames at {ow}x{oh}")
    if settings.only_segments is not None:           # a render-farm task: into the cache, no outputs
        check_only([plan], settings.only_segments)
        if cluster is None:
            compute_locally(plan, renderer, source, cache, settings.only_segments, listener=listener,
                            should_cancel=should_cancel, show_progress=show_progress)
        result.status = "segments-cached"
        result.cached_segments = [k for k in range(len(segments)) if cache.get(plan.segment_name(k)) is not None]
        result.warnings = list(source.warnings)
        result.seconds = {"total": round(time.monotonic() - t0, 2)}
        return result
    progress = Progress(denoise_calls(segments, settings), f"forward {clip.name} × {hdri.stem}", listener,
                        show_progress, extra={"light": int(light_of[0]), "lights": int(light_of[1])})
    if cluster is not None:
        progress.done = progress.total              # the cluster did the denoising: what is left is writing
    computed = []

    def compute(k, s, e):
        computed.append(k)
        if cluster is not None:                     # lost from the cache since the cluster put it there: again
            got = {}
            cluster.compute("forward", [(plan, k)], lambda _p, _k, value: got.update(value), split="segments",
                            should_cancel=should_cancel)
            return got
        return compute_segment(renderer, LocalContext(progress, k, should_cancel), plan, k, source=source)

    base = {"fps": clip.fps, "kind": "relit",
            "provenance": make_provenance("forward-model", model=settings.model, revision=settings.revision,
                                          settings={**{k: (list(v) if isinstance(v, tuple) else v)
                                                       for k, v in provenance_settings(settings).items()},
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
    result.resumed_segments = len(segments) - len(computed) - computed_elsewhere
    result.warnings = list(clip.warnings) + source.warnings + framing.warnings() + list(writer.warnings)
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
                should_cancel=None, show_progress: bool = True, cluster=None) -> dict:
    """Relight every G-buffer clip at ``gbuffers`` under every HDRI; ``out/<hdri>`` (or
    ``out/<clip>/<hdri>`` for several clips). Returns a JSON-able summary. ``cluster``: as run_inverse's."""
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
    only = settings.only_segments
    # another run into these sets fails here, at once (the tasks of a render farm's job run at once: no lock)
    with contextlib.nullcontext() if only is not None else locked_outputs([target for *_, target in jobs]):
        runner, owned = open_runner(settings, cluster)
        try:
            t_load, plans, extra = 0.0, [None] * len(jobs), {}
            if runner is not None:
                lights = light_settings(fixed_seed(settings), len(hdris))
                facts = runner.facts("forward", settings)
                plans = [forward_plan(clip, hdri, target, lights[i - 1], facts, exclude=(out,))
                         for clip, i, hdri, target in jobs]
                check_only(plans, only)
                extra["cluster"] = compute_on_cluster(runner, "forward", plans, only, listener=listener,
                                                      should_cancel=should_cancel, show_progress=show_progress,
                                                      split=settings.split)
            elif renderer is None:
                renderer, t_load = load_renderer("forward", settings)
            computed = extra.get("cluster", {}).pop("computed", {})
            results = []
            for (clip, i, hdri, target), plan in zip(jobs, plans):
                results.append(run_forward_clip(clip, hdri, target, lights[i - 1], renderer, listener=listener,
                                                should_cancel=should_cancel, show_progress=show_progress,
                                                light_of=(i, len(hdris)), exclude=(out,), plan=plan, cluster=runner,
                                                computed_elsewhere=computed.get(plan.key, 0) if plan else 0))
        finally:
            if owned:
                runner.close()
    return {**job_summary("forward", gbuffers, out, t0, t_load, results), **extra}
