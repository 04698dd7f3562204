"""Refuse a job whose predicted peak memory exceeds the machine, before its model is loaded.

The prediction is the cost model's (``engine/perf/cost_model.py``: weights in the memory mode + the largest
traced activation peak) for one window of the job at its processing size, compared with the device's
memory (the CUDA card's total, or the RAM on a CPU). Tracing a new shape takes seconds, so predictions are
cached in memory and on disk (``<user cache>/perf/peak_memory.json``), keyed by everything they depend on;
a job of an already seen shape is checked in milliseconds.

Only the published model size is predicted: a checkpoint of another size (a fine-tune with other widths,
the tests' tiny random ones) and weights that are not on disk yet are not checked here (loading reports
the latter). A job left at the automatic resolution is checked at 512×512, the smallest size the cover
rule yields, so the check never refuses a job that could fit.

:func:`check_inputs` (inverse jobs, also before any model is loaded) opens the footage (a video's probe is
cached for the job) and checks it at its real processing size: a size beyond the contract's ``MAX_SIDE``
(a 10000×10 image covers 512 at 512000×512) is refused naming the size and the fix, and so is a job whose
host buffers — the whole clip's noise and one segment's outputs (``host_bytes``: a cheap bound on pixels ×
frames that holds for every checkpoint size) — exceed the machine's RAM; then :func:`check_memory` runs at
the largest processing size found."""
from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from engine.errors import ModelMemoryError

log = logging.getLogger(__name__)
MARGIN = 0.95            # the share of the device's memory a job may plan to use (as cost_model's "fits")
_lock = threading.Lock()
_memo: dict = {}


def device_memory_gb(device) -> float | None:
    """Total memory of ``device`` in GiB: the CUDA card's, or the machine's RAM for the CPU."""
    import torch

    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(device).total_memory / 2**30
    if device.type == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        except (ValueError, OSError, AttributeError):   # not POSIX (Windows): no check
            return None
    return None


def _published_size(kind: str, settings) -> bool:
    """True when the job's weights are on disk and have the published model's widths."""
    from engine.hub import resolve_model
    from engine.models.published_configs import FULL

    try:
        folder = resolve_model(settings.model, settings.revision, allow_download=False)
        config = json.loads((Path(folder) / "unet" / "config.json").read_text())
    except Exception:  # noqa: BLE001 - no local weights or an unreadable folder: loading reports it
        return False
    full = FULL.get(f"{kind}_unet", {})
    return config.get("block_out_channels") == full.get("block_out_channels")


def _cache_file() -> Path:
    from engine.user_cache import user_cache_dir

    return user_cache_dir() / "perf" / "peak_memory.json"


def predicted_peak_gb(kind: str, args: dict) -> float:
    """The cost model's peak memory (GiB) for ``estimate(kind, **args)``, cached in memory and on disk."""
    import torch

    key = json.dumps({"kind": kind, "torch": torch.__version__, **args}, sort_keys=True, default=str)
    with _lock:
        if key in _memo:
            return _memo[key]
        path = _cache_file()
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            stored = {}
        if not isinstance(stored, dict):
            stored = {}
        if isinstance(stored.get(key), (int, float)):
            _memo[key] = float(stored[key])
            return _memo[key]
        from engine.perf.cost_model import estimate

        peak = float(estimate(kind, **args)["peak_memory_gb"])
        _memo[key] = stored[key] = peak
        try:
            from engine.atomic import atomic_write_text

            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(stored, indent=1, sort_keys=True) + "\n")
        except OSError as exc:
            log.debug("could not cache the memory prediction in %s (%s)", path, exc)
        return peak


def estimate_args(kind: str, settings, device, dtype, size=None) -> dict:
    """The cost model's arguments for one window of the job (the peak does not grow with the clip)."""
    width, height = size or settings.resolution or (512, 512)
    args = dict(width=int(width), height=int(height), frames=int(settings.frames), steps=1,
                window=int(settings.frames), overlap=int(settings.overlap), decode_chunk=int(settings.decode_chunk),
                decode_overlap=int(settings.decode_overlap), memory=settings.memory, device=str(device),
                dtype=str(dtype).replace("torch.", ""))
    if kind == "inverse":
        args["passes"] = len(settings.passes)
    else:
        guidance = getattr(settings, "guidance", 1.2)
        guidance = max(guidance) if isinstance(guidance, (list, tuple)) else guidance
        args.update(lights=1, guidance=float(guidance), rotate_light=bool(getattr(settings, "rotate_light", False)))
        env = getattr(settings, "env_resolution", None)
        if env:
            args["env_resolution"] = tuple(int(v) for v in env)      # (H, W), as the settings hold it
    return args


def ram_gb() -> float | None:
    """The machine's RAM in GiB (None where it cannot be told)."""
    import torch

    return device_memory_gb(torch.device("cpu"))


def host_bytes(frames: int, processing: tuple, output: tuple, settings, items: int) -> int:
    """A lower bound of the host memory a job holds: the whole clip's latent noise (float32, 4 channels at
    1/8 size) and one resumable segment's results (``items`` float32 RGB images per frame at the larger of
    the output and processing sizes)."""
    from engine.jobs.segments import plan_segments

    pw, ph = processing
    segment = max((e - s for s, e in plan_segments(frames, settings.frames, settings.overlap,
                                                   settings.windows_per_segment)), default=frames)
    noise = frames * 4 * (ph // 8) * (pw // 8) * 4
    return noise + segment * items * max(pw * ph, output[0] * output[1]) * 3 * 4


def check_inputs(kind: str, settings, src, *, total_gb=None) -> None:
    """Refuse footage beyond the processing-size limit or the machine's RAM, then check the model's memory at
    its real processing size (see the module docstring). Footage that cannot be opened is left to the job,
    which reports it in its own words."""
    from engine.contract.params import MAX_SIDE
    from engine.errors import UserError
    from engine.io import VIDEO_SUFFIXES, find_clips, open_clip
    from engine.jobs.framing import plan_framing, processing_size

    if kind != "inverse":
        return
    try:
        clips = find_clips(src)
    except (OSError, ValueError):
        return
    largest = None
    ram = ram_gb() if total_gb is None else total_gb
    for path in clips:
        first = settings.first_frame
        if first is None and Path(path).is_file() and Path(path).suffix.lower() in VIDEO_SUFFIXES:
            first = 1                                    # as the job numbers a video (inverse_job.run_clip)
        try:
            with open_clip(path, frame_range=settings.frame_range, fps=settings.fps,
                           source_fps=settings.source_fps, first_number=first) as clip:
                size, n = tuple(clip.size), len(clip)
        except Exception:  # noqa: BLE001 - unreadable or damaged footage: the job names the problem
            continue
        proc = processing_size(size, settings.resolution)
        if max(proc) > MAX_SIDE:
            raise UserError(f"{path}: a {size[0]}x{size[1]} input is processed at {proc[0]}x{proc[1]} (the automatic "
                            f"resolution covers 512×512 keeping its aspect), beyond {MAX_SIDE} pixels per side",
                            hint="set the processing resolution (--resolution, e.g. 512x64; in Blender: Resolution) "
                                 "with fit pad or crop, or crop the footage")
        try:
            output = plan_framing(size, proc, settings.fit, settings.output_size).output
        except Exception:  # noqa: BLE001 - a bad fit/output size is reported by the job
            output = proc
        need = host_bytes(n, proc, output, settings, len(settings.passes) + 1) / 2**30
        if ram and need > ram * MARGIN:
            raise ModelMemoryError(f"{path}: this {kind} job holds about {need:.1f} GB of frames ({n} frames processed "
                                   f"at {proc[0]}x{proc[1]}, output {output[0]}x{output[1]}), more than the "
                                   f"{ram:.1f} GB RAM",
                                   hint="lower the resolution or the output size, use fewer frames (frame range) "
                                        "or fewer windows per segment")
        if largest is None or proc[0] * proc[1] > largest[0] * largest[1]:
            largest = proc
    if largest is not None and settings.resolution is None:
        check_memory(kind, settings, size=largest)


def check_memory(kind: str, settings, *, total_gb=None, size=None) -> None:
    """Raise ModelMemoryError (code out_of_memory) with the estimate and the fix when the job's predicted
    peak exceeds the device's memory; return quietly when it fits or cannot be predicted. ``size``: the
    processing (W, H) when known (default: the resolution setting, or 512×512 for the automatic one)."""
    from engine.pipelines.components import pick_device, pick_dtype

    try:
        device = pick_device(settings.device)
        dtype = pick_dtype(settings.dtype, device)
    except (ValueError, RuntimeError):
        return                                  # a bad device/dtype is reported by loading, in its words
    total = device_memory_gb(device) if total_gb is None else total_gb
    if not total or not _published_size(kind, settings):
        return
    size = tuple(size or settings.resolution or (512, 512))
    peak = predicted_peak_gb(kind, estimate_args(kind, settings, device, dtype, size))
    if peak <= total * MARGIN:
        return
    where = "RAM" if device.type == "cpu" else f"memory of {device}"
    fix = "lower the resolution" + (" or the frames per window" if settings.frames > 1 else "")
    if settings.memory == "default" and device.type == "cuda":
        fix += ", or choose the low-VRAM memory mode (memory: low-vram)"
    raise ModelMemoryError(f"this {kind} job needs about {peak:.1f} GB at {size[0]}x{size[1]} with {settings.frames} "
                           f"frames per window (memory mode {settings.memory}), more than the {total:.1f} GB {where}",
                           hint=fix)
