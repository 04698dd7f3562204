"""The gbuffers job: Blender render folder(s) (render.json + multilayer EXRs) → G-buffer set(s), no model.

``diffusion-renderer gbuffers RENDER_DIR --out SET`` and the protocol's job kind ``gbuffers`` run
:func:`run_gbuffers`; the conversion itself is :mod:`engine.gbuffer.blender_render`. A folder of render
folders converts each into ``<out>/<name>``. A set already converted from the same files with the same
settings is left as it is (status ``up-to-date``).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from engine.contract import render_json
from engine.jobs.common import JobError, Progress, check_writable, file_identity, job_summary, settings_key
from engine.jobs.disk_space import check_disk_space, disk_full_reported
from engine.jobs.out_lock import OutLock, locked_outputs


@dataclass
class GBuffersSettings:
    overwrite: bool = False
    previews: bool = True


@dataclass
class GBuffersClipResult:
    clip: str
    out: str
    frames: int
    resolution: tuple
    passes: list
    status: str = "done"          # done | up-to-date
    seconds: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)


def find_render_folders(path: Path) -> list[Path]:
    """``path`` itself when it holds render.json, else its sub-folders that do (sorted by name)."""
    if not path.exists():
        raise JobError(f"{path}: render folder not found")
    if not path.is_dir():
        raise JobError(f"{path}: expected a Blender render folder (with {render_json.FILE_NAME}), got a file")
    if render_json.is_render_folder(path):
        return [path]
    subs = [p for p in sorted(path.iterdir()) if p.is_dir() and render_json.is_render_folder(p)]
    if subs:
        return subs
    if any(p.suffix.lower() == ".exr" for p in path.iterdir()):
        raise JobError(f"{path}: Blender EXRs without {render_json.FILE_NAME}; export them with the add-on's "
                       f"Neural Render, or write a {render_json.FILE_NAME} beside them (docs/GBUFFER_SET.md §8)")
    raise JobError(f"{path}: no {render_json.FILE_NAME} here or in its sub-folders (not a Blender render folder; "
                   "export with the add-on's Neural Render)")


def _key(folder: Path, settings: GBuffersSettings, exclude=()) -> str:
    from engine import __version__

    return settings_key({"job": "gbuffers", "input": str(folder.resolve()), "files": file_identity(folder, exclude),
                         "previews": settings.previews, "engine": __version__})


def _up_to_date(out: Path, key: str, previews: bool) -> bool:
    from engine.gbuffer import open_gbuffer_set

    try:
        gset = open_gbuffer_set(out)
    except Exception:  # noqa: BLE001 - anything unreadable is simply redone
        return False
    prov = gset.manifest.data.get("provenance") or {}
    if prov.get("job_key") != key or (previews and "previews" not in gset.manifest.data):
        return False
    return all(gset.path(p, f).is_file() for p in gset.passes for f in gset.frame_numbers)


def _record_key(out: Path, key: str) -> None:
    from engine.gbuffer import open_gbuffer_set

    gset = open_gbuffer_set(out)
    gset.manifest.data["provenance"]["job_key"] = key
    gset.manifest.save(gset.folder / "manifest.json")


def output_bytes(folder: Path, previews: bool) -> int:
    """Predicted disk use of a converted set: at most its render folder's EXRs (32-bit there, mostly half in the
    set), and with previews an 8-bit PNG per EXR pass frame (bounded by the same)."""
    exrs = sum(p.stat().st_size for p in folder.glob("*.exr") if p.is_file())
    return exrs * (2 if previews else 1)


def convert_clip(folder: Path, out: Path, settings: GBuffersSettings, *, listener=None,
                 should_cancel: Optional[Callable[[], bool]] = None, show_progress: bool = False,
                 exclude=()) -> GBuffersClipResult:
    """Convert one render folder into the set ``out`` (locked while it runs); ``exclude``: further output folders
    left out of the render folder's identity (``out`` itself always is)."""
    with OutLock(out):
        return _convert_clip(folder, out, settings, listener=listener, should_cancel=should_cancel,
                             show_progress=show_progress, exclude=exclude)


def _convert_clip(folder: Path, out: Path, settings: GBuffersSettings, *, listener, should_cancel, show_progress,
                  exclude) -> GBuffersClipResult:
    from engine.gbuffer import GBufferSetError
    from engine.gbuffer.blender_render import convert

    t0 = time.monotonic()
    key = _key(folder, settings, (out, *exclude))
    if _up_to_date(out, key, settings.previews):
        from engine.gbuffer import open_gbuffer_set

        gset = open_gbuffer_set(out)
        return GBuffersClipResult(str(folder), str(out), len(gset.frame_numbers), tuple(gset.resolution),
                                  list(gset.passes), "up-to-date", {"total": round(time.monotonic() - t0, 2)})
    check_writable(out)
    need = output_bytes(folder, settings.previews)
    check_disk_space(out, need, f"the set converted from {folder}")
    bar: list[Progress] = []

    def progress(done: int, total: int) -> None:
        if should_cancel is not None and should_cancel():
            from engine.pipelines.sampling import Cancelled

            raise Cancelled(f"gbuffers {folder.name}: cancelled after {done} of {total} frames")
        if not bar:
            bar.append(Progress(total, f"gbuffers {folder.name}", listener, show_progress))
        elif done:
            bar[0].step("convert", 0)

    try:
        with disk_full_reported(out, need):
            report = convert(folder, out, overwrite=settings.overwrite, previews=settings.previews,
                             progress=progress)
    except GBufferSetError as exc:
        raise JobError(str(exc)) from None
    finally:
        if bar:
            bar[0].close()
    _record_key(out, key)
    return GBuffersClipResult(str(folder), str(out), len(report.frame_numbers), tuple(report.resolution),
                              list(report.passes), "done", {**report.seconds, "total": round(time.monotonic() - t0, 2)},
                              list(report.warnings))


def run_gbuffers(render_dir, out, settings: GBuffersSettings, *, renderer=None, listener=None,
                 should_cancel: Optional[Callable[[], bool]] = None, show_progress: bool = False) -> dict:
    """Convert a render folder (or a folder of them) into G-buffer set(s); returns a JSON-able summary of
    the shape of run_inverse's. ``renderer`` is accepted for the uniform job signature and unused."""
    del renderer
    t0 = time.monotonic()
    render_dir, out = Path(render_dir), Path(out)
    folders = find_render_folders(render_dir)
    batch = folders != [render_dir]
    targets = [out / f.name if batch else out for f in folders]
    with locked_outputs(targets):          # another run into these sets fails here, before any work
        results = [convert_clip(f, t, settings, listener=listener, should_cancel=should_cancel,
                                show_progress=show_progress, exclude=(out,)) for f, t in zip(folders, targets)]
    summary = job_summary("gbuffers", render_dir, out, t0, 0.0, results)
    summary["settings"] = asdict(settings)
    return summary
