"""What a G-buffer export renders, checked before anything changes: the frame numbers, the view layer,
the output folder (a Blender render folder, ``engine/contract/render_json.py``) and each frame's camera
entry for ``render.json``. Every problem is an :class:`ExportError` whose one line names the setting or
file and the fix (in the add-on's terms: a Blender field or button)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import bpy

from ..contract import render_json

__all__ = ["ExportError", "frame_numbers_for", "check_request", "pick_view_layer", "frame_size",
           "check_output_folder", "camera_entry"]


class ExportError(RuntimeError):
    """The export could not run; the message says why and what to change. The scene is restored."""


def frame_numbers_for(scene, frame_range=None) -> list[int]:
    """``None`` → the scene's frame_start..frame_end by frame_step; ``(start, end)`` → inclusive range;
    any other iterable → those frames (sorted, unique)."""
    if frame_range is None:
        frames = list(range(scene.frame_start, scene.frame_end + 1, max(1, scene.frame_step)))
    elif isinstance(frame_range, tuple) and len(frame_range) == 2:
        start, end = (int(v) for v in frame_range)
        if end < start:
            raise ExportError(f"frame range {start}–{end}: the end is before the start; fix Output properties → "
                              "Frame Range")
        frames = list(range(start, end + 1))
    else:
        frames = sorted({int(f) for f in frame_range})
    if not frames:
        raise ExportError("no frames to export (empty frame range); set Output properties → Frame Range")
    if frames[0] < 0:
        raise ExportError(f"frame {frames[0]}: G-buffer exports need non-negative frame numbers; move the animation "
                          "to start at 0 or later (Output properties → Frame Start)")
    return frames


def check_request(scene, frame_range) -> list[int]:
    """Validate an export request; returns its frame numbers."""
    if scene.camera is None:
        raise ExportError(f"scene {scene.name!r} has no active camera; set one (Scene properties → Camera)")
    return frame_numbers_for(scene, frame_range)


def pick_view_layer(scene, view_layer):
    """The view layer to render: the named one, the context's (when ``scene`` is the context scene), else
    the first enabled one."""
    if view_layer is not None:
        vl = scene.view_layers.get(view_layer) if isinstance(view_layer, str) else view_layer
        if vl is None:
            raise ExportError(f"scene {scene.name!r} has no view layer {view_layer!r}; pick one of "
                              f"{', '.join(v.name for v in scene.view_layers)} (View Layer properties)")
        return vl
    ctx_vl = getattr(bpy.context, "view_layer", None)
    if ctx_vl is not None and getattr(bpy.context, "scene", None) == scene:
        return ctx_vl
    return next((v for v in scene.view_layers if v.use), scene.view_layers[0])


def frame_size(scene) -> tuple[int, int]:
    """The rendered size: resolution × percentage."""
    r = scene.render
    return (max(1, int(r.resolution_x * r.resolution_percentage / 100)),
            max(1, int(r.resolution_y * r.resolution_percentage / 100)))


def check_output_folder(folder: Path, *, source, frames, size, overwrite: bool) -> None:
    """Refuse a folder that holds something else: a G-buffer set (``manifest.json``), or a render folder of a
    different clip (other source, frames or size) unless ``overwrite``. Nothing is changed here."""
    if folder.exists() and not folder.is_dir():
        raise ExportError(f"{folder}: is a file, not a folder; choose an output folder")
    if (folder / "manifest.json").is_file():
        raise ExportError(f"{folder}: holds a G-buffer set (manifest.json), not a Blender render; choose another "
                          "output folder")
    old = folder / render_json.FILE_NAME
    if overwrite or not old.is_file():
        return
    try:
        data = json.loads(old.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise ExportError(f"{old}: unreadable ({exc}); choose another output folder or overwrite it") from None
    osrc = data.get("source")
    same = (source and osrc and os.path.normpath(str(osrc)) == os.path.normpath(str(source))
            and list(data.get("frame_numbers") or []) == list(frames)
            and list(data.get("resolution") or []) == list(size))
    if not same:
        raise ExportError(f"{folder}: already holds the render of a different clip ({osrc or 'unknown source'}, "
                          f"frames {_span(data.get('frame_numbers'))}); choose another output folder or overwrite it")


def _span(frames) -> str:
    return f"{frames[0]}–{frames[-1]}" if isinstance(frames, list) and frames else "?"


def _matrix_rows(m) -> list[list[float]]:
    return [[float(v) for v in row] for row in m]


def camera_entry(cam_obj, frame: int) -> dict:
    """The camera of one frame for ``render.json`` (as evaluated at the current frame): the G-buffer
    manifest's camera entry (docs/GBUFFER_SET.md)."""
    cd = cam_obj.data
    entry = {"frame": int(frame), "matrix_world": _matrix_rows(cam_obj.matrix_world),
             "lens_mm": float(cd.lens), "sensor_width_mm": float(cd.sensor_width),
             "sensor_height_mm": float(cd.sensor_height), "sensor_fit": cd.sensor_fit,
             "clip_start": float(cd.clip_start), "clip_end": float(cd.clip_end), "type": cd.type}
    if cd.shift_x or cd.shift_y:
        entry["shift"] = [float(cd.shift_x), float(cd.shift_y)]
    if cd.type == "ORTHO":
        entry["ortho_scale"] = float(cd.ortho_scale)
    return entry
