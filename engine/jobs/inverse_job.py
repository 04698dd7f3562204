"""The inverse job: footage (video, frame folder, or a folder of clips) → G-buffer set(s)."""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from engine.contract.params import default as param_default
from engine.jobs.common import JobError, JobSettings, Progress, ResumeCache, check_writable, job_summary, load_renderer
from engine.jobs.disk_space import cache_bytes, check_disk_space, disk_full_reported, pass_sizes, set_bytes
from engine.jobs.framing import check_settings
from engine.jobs.out_lock import OutLock, locked_outputs
from engine.jobs.segments import run_segments
from engine.jobs.unit_runs import check_only, compute_locally, compute_on_cluster, fixed_seed, open_runner
from engine.jobs.units import (ClipPlan, LocalContext, RendererFacts, compute_segment, denoise_calls, inverse_plan,
                               open_inverse_source, up_to_date)

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
    status: str = "done"          # done | up-to-date | segments-cached (--only-segments: no outputs written)
    resumed_segments: int = 0
    cached_segments: list = field(default_factory=list)   # --only-segments: the segments now in the resume cache
    segments: int = 0
    seconds: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    fps: Optional[float] = None
    frame_numbers: list = field(default_factory=list)
    framing: dict = field(default_factory=dict)     # engine/jobs/framing.py Framing.record()


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


def run_clip(clip_path: Path, out: Path, settings: InverseSettings, renderer, *, listener=None,
             should_cancel: Optional[Callable[[], bool]] = None, show_progress: bool = True,
             exclude=(), plan: Optional[ClipPlan] = None, cluster=None, computed_elsewhere: int = 0) -> ClipResult:
    """De-light one clip into the set ``out`` (locked while it runs; an ``--only-segments`` task takes no lock:
    the farm's tasks of one set run at once, each writing its own cache entries). ``exclude``: further output
    folders left out of the input's identity (``out`` itself always is). A cluster run passes the clip's
    ``plan``, the ``cluster`` that computed its segments into the cache (``renderer`` None) and how many it
    computed."""
    with contextlib.nullcontext() if settings.only_segments is not None else OutLock(out):
        return _run_clip(clip_path, out, settings, renderer, listener=listener, should_cancel=should_cancel,
                         show_progress=show_progress, exclude=exclude, plan=plan, cluster=cluster,
                         computed_elsewhere=computed_elsewhere)


def inverse_output_bytes(width: int, height: int, n: int, segments, settings) -> int:
    """Predicted disk use of an inverse set: its EXRs (+ previews) and the resume cache (engine/jobs/disk_space.py)."""
    sizes = pass_sizes([*settings.passes, "rgb"])
    return (set_bytes(width, height, n, sizes, previews=settings.previews)
            + cache_bytes(width, height, segments, 3 * (len(settings.passes) + 1)))


def _run_clip(clip_path: Path, out: Path, settings: InverseSettings, renderer, *, listener=None,
              should_cancel: Optional[Callable[[], bool]] = None, show_progress: bool = True,
              exclude=(), plan: Optional[ClipPlan] = None, cluster=None, computed_elsewhere: int = 0) -> ClipResult:
    from engine.gbuffer import GBufferSetWriter, from_model_outputs
    from engine.gbuffer.encodings import depth_manifest
    from engine.gbuffer import make_provenance

    t0 = time.monotonic()
    with open_inverse_source(clip_path, settings) as source:
        clip, colour_in = source.clip, source.colour
        linear = colour_in.linear
        if plan is None:
            plan = inverse_plan(clip_path, out, settings, RendererFacts.of(renderer), source, exclude=exclude)
        n, framing, key, seed, segments = plan.frames, plan.framing, plan.key, plan.seed, list(plan.segments)
        result = ClipResult(str(clip_path), str(out), n, tuple(framing.output), list(settings.passes),
                            fps=float(clip.fps), frame_numbers=list(clip.frame_numbers), framing=framing.record())
        if up_to_date(out, key):
            result.status = "up-to-date"
            return result
        check_writable(out)
        cache = ResumeCache(out, key)
        result.segments = len(segments)
        need = inverse_output_bytes(*framing.output, n, segments, settings)
        check_disk_space(out, need, f"{n} frames of {len(settings.passes) + 1} passes at "
                                    f"{framing.output[0]}x{framing.output[1]}")
        if settings.only_segments is not None:      # a render-farm task: into the cache, no outputs
            check_only([plan], settings.only_segments)
            if cluster is None:
                compute_locally(plan, renderer, source, cache, settings.only_segments, listener=listener,
                                should_cancel=should_cancel, show_progress=show_progress)
            result.status = "segments-cached"
            result.cached_segments = [k for k in range(len(segments)) if cache.get(plan.segment_name(k)) is not None]
            result.seconds = {"total": round(time.monotonic() - t0, 2)}
            return result
        progress = Progress(denoise_calls(segments, settings), f"inverse {Path(clip_path).name}", listener,
                            show_progress)
        if cluster is not None:
            progress.done = progress.total          # the cluster did the denoising: what is left is writing
        computed = []

        def compute(k, s, e):
            computed.append(k)
            if cluster is not None:                 # lost from the cache since the cluster put it there: again
                got = {}
                cluster.compute("inverse", [(plan, k)], lambda _p, _k, value: got.update(value),
                                split="segments", should_cancel=should_cancel)
                return got
            return compute_segment(renderer, LocalContext(progress, k, should_cancel), plan, k, source=source)

        manifest_base = {
            "fps": float(clip.fps or 24.0), "kind": "gbuffer", "depth": depth_manifest(None),
            **({"missing_frames": list(clip.missing_frames)} if clip.missing_frames else {}),
            "provenance": make_provenance("inverse-model", model=settings.model, revision=settings.revision,
                                          settings={**{k: (list(v) if isinstance(v, tuple) else v) for k, v in
                                                       provenance_settings(settings).items()}, "key": key,
                                                    "seed": seed, "framing": framing.record(),
                                                    "input_linear": linear, "input_colour": colour_in.record()},
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
        result.resumed_segments = len(segments) - len(computed) - computed_elsewhere
        result.warnings = (fps_warnings(clip) + list(clip.warnings) + framing.warnings()
                           + list(writer.warnings)
                           + ([f"{clip.nonfinite_count} NaN/Inf input values replaced"] if clip.nonfinite_count else []))
        result.seconds = {"total": round(time.monotonic() - t0, 2), "compute_and_write": round(t_write - t_compute, 2),
                          "previews": round(time.monotonic() - t_write, 2)}
        return result


def provenance_settings(settings) -> dict:
    """The settings a manifest records: what was computed, not where (``cluster``, ``split``: run options)."""
    return {k: v for k, v in asdict(settings).items() if k not in ("cluster", "split", "only_segments")}


def run_inverse(input_path, out, settings: InverseSettings, *, renderer=None, listener=None, should_cancel=None,
                show_progress: bool = True, cluster=None) -> dict:
    """Run the inverse job on a clip or a batch folder; returns a JSON-able summary. ``cluster``: a connected
    engine.cluster.job_runner.ClusterRunner (the server's); else ``settings.cluster`` starts one for the job."""
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
    only = settings.only_segments
    with contextlib.nullcontext() if only is not None else locked_outputs(targets):
        # another run into these folders fails here, before any work (farm tasks of one set run at once)
        runner, owned = open_runner(settings, cluster)
        try:
            t_load, plans, extra = 0.0, [None] * len(clips), {}
            if runner is not None:
                settings = fixed_seed(settings)
                facts = runner.facts("inverse", settings)
                for i, (clip, target) in enumerate(zip(clips, targets)):
                    with open_inverse_source(clip, settings) as source:
                        plans[i] = inverse_plan(clip, target, settings, facts, source, exclude=(out,))
                check_only(plans, only)
                extra["cluster"] = compute_on_cluster(runner, "inverse", plans, only, listener=listener,
                                                      should_cancel=should_cancel, show_progress=show_progress,
                                                      split=settings.split)
            elif renderer is None:
                renderer, t_load = load_renderer("inverse", settings)
            computed = extra.get("cluster", {}).pop("computed", {})
            results = []
            for clip, target, plan in zip(clips, targets, plans):
                results.append(run_clip(clip, target, settings, renderer, listener=listener,
                                        should_cancel=should_cancel, show_progress=show_progress, exclude=(out,),
                                        plan=plan, cluster=runner,
                                        computed_elsewhere=computed.get(plan.key, 0) if plan else 0))
        finally:
            if owned:
                runner.close()
    return {**job_summary("inverse", input_path, out, t0, t_load, results), **extra}

