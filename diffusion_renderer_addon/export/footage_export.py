"""Footage in Blender → a folder of frames for the engine's inverse renderer.

``export_footage(source, out_dir, scene=…)`` takes a **Movie Clip**, an **Image** (an image sequence, a
movie or a single file) or a **VSE strip** (movie, image or clip strip; ``source=None`` = the scene's
active strip) and writes ``<name>.####.png`` (16-bit RGB, sRGB-encoded, for 8/10-bit footage) or
``<name>.####.exr`` (float RGB, linear, for float sources) plus ``clip.json``:

* frame numbers are kept: an image sequence keeps its files' numbers, a movie or movie clip numbers its
  frames from the clip's start frame (1 by default), a VSE strip uses the scene frames where it is
  visible (its trimmed range), so results re-imported at those numbers line up with the timeline;
* fps: the movie's own rate for movies and movie clips, the scene's for image sequences and VSE
  strips (the sequencer plays everything at the scene rate);
* ``clip.json`` (written last): ``fps``, ``frame_numbers``, ``resolution``, ``pattern``, ``encoding``
  (``srgb`` / ``linear-rec709``), the source and the Blender version.

How: a temporary scene (removed afterwards; the user's scenes, strips and clips are not touched) holds
one sequencer strip with the source's content and renders it frame by frame with
``write_still`` under ``bpy.context.temp_override(scene=…)`` — rendering a scene other than the
context scene through ``render.render(scene=…)`` gives black frames for movies and image sequences
(verified on 4.2 and 5.0), the override does not. Colour: view transform *Standard*, no look, so a PNG
is the sRGB encoding of the linear render (8-bit sources round-trip exactly into 16 bits); EXR output
is linear, and the sequencer works in linear for float sources. Strip effects, transforms, modifiers
and retiming are not applied: the raw footage is exported.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import bpy

from .. import compat

__all__ = ["FootageExportError", "export_footage", "sequence_files"]

_DIGITS = re.compile(r"(\d+)(?!.*\d)")
_FLOAT_EXTS = {".exr", ".hdr"}


class FootageExportError(RuntimeError):
    """The footage cannot be exported; the message names the source and the reason."""


@dataclass
class _Plan:
    kind: str                      # "movie" | "images"
    label: str
    movie: str | None = None       # movie file
    directory: str | None = None   # image files: directory + names
    files: list[str] = field(default_factory=list)
    content: list[int] = field(default_factory=list)   # per exported frame: content index (1-based)
    frames: list[int] = field(default_factory=list)    # per exported frame: output frame number
    fps: float = 24.0
    size: tuple[int, int] = (0, 0)
    is_float: bool = False
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ sources
def sequence_files(first_path: str) -> list[tuple[int, str]]:
    """The files of the image sequence that ``first_path`` belongs to: same folder, same name apart from
    the last run of digits, same extension → ``[(frame number, file name)]`` sorted by number."""
    folder, name = os.path.split(first_path)
    stem, ext = os.path.splitext(name)
    m = _DIGITS.search(stem)
    if m is None:
        return [(1, name)] if os.path.isfile(first_path) else []
    pre, post = stem[:m.start()], stem[m.end():]
    pat = re.compile(re.escape(pre) + r"(\d+)" + re.escape(post) + re.escape(ext) + r"$", re.IGNORECASE)
    out = []
    for fn in os.listdir(folder or "."):
        mm = pat.match(fn)
        if mm:
            out.append((int(mm.group(1)), fn))
    return sorted(out)


def _abspath(path: str, library=None) -> str:
    return os.path.normpath(bpy.path.abspath(path, library=library))


def _image_info(path: str) -> tuple[tuple[int, int], bool]:
    """(size, is_float) of an image or movie file, through a temporary image datablock."""
    existing = {i.name for i in bpy.data.images}
    img = bpy.data.images.load(path, check_existing=False)
    try:
        size = tuple(int(v) for v in img.size)
        if size == (0, 0) and img.source == "MOVIE":
            img.pixels[0]  # noqa: B018 - forces the first frame to load
            size = tuple(int(v) for v in img.size)
        return size, bool(img.is_float)
    finally:
        if img.name not in existing:
            bpy.data.images.remove(img)


def _movie_info(path: str) -> tuple[int, float, tuple[int, int]]:
    """(frame count, fps, size) of a movie file via a temporary Movie Clip."""
    clip = bpy.data.movieclips.load(path, check_existing=False)
    try:
        return int(clip.frame_duration), float(clip.fps or 0.0), tuple(int(v) for v in clip.size)
    finally:
        bpy.data.movieclips.remove(clip)


def _images_plan(label, first_path, frames_and_files, fps, notes=()) -> _Plan:
    if not frames_and_files:
        raise FootageExportError(f"{label}: no image files found for {first_path}")
    directory = os.path.dirname(first_path)
    size, is_float = _image_info(os.path.join(directory, frames_and_files[0][1]))
    if size[0] <= 0 or size[1] <= 0:
        raise FootageExportError(f"{label}: cannot read {frames_and_files[0][1]}")
    return _Plan("images", label, directory=directory, files=[fn for _, fn in frames_and_files],
                 content=list(range(1, len(frames_and_files) + 1)), frames=[n for n, _ in frames_and_files],
                 fps=fps, size=size, is_float=is_float, notes=list(notes))


def _movie_plan(label, path, first_frame: int, fps_override=None, content=None, frames=None, notes=()) -> _Plan:
    if not os.path.isfile(path):
        raise FootageExportError(f"{label}: movie file not found: {path}")
    count, fps, size = _movie_info(path)
    if count <= 0 or size[0] <= 0:
        raise FootageExportError(f"{label}: cannot read the movie {path}")
    content = content or list(range(1, count + 1))
    frames = frames or [first_frame + k - 1 for k in content]
    return _Plan("movie", label, movie=path, content=content, frames=frames, fps=fps_override or fps or 24.0,
                 size=size, is_float=False, notes=list(notes))


def _scene_fps(scene) -> float:
    return scene.render.fps / scene.render.fps_base if scene is not None else 24.0


def _plan_for(source, scene) -> _Plan:
    if source is None:
        if scene is None or scene.sequence_editor is None or scene.sequence_editor.active_strip is None:
            raise FootageExportError("no footage given and the scene has no active sequencer strip")
        source = scene.sequence_editor.active_strip
    if isinstance(source, bpy.types.MovieClip):
        label = f"movie clip {source.name!r}"
        path = _abspath(source.filepath, source.library)
        if source.source == "SEQUENCE":
            return _images_plan(label, path, sequence_files(path), float(source.fps or _scene_fps(scene)))
        return _movie_plan(label, path, int(source.frame_start), fps_override=float(source.fps or 0) or None)
    if isinstance(source, bpy.types.Image):
        label = f"image {source.name!r}"
        if source.packed_file is not None:
            raise FootageExportError(f"{label}: packed images are not supported; unpack it first")
        path = _abspath(source.filepath, source.library)
        if source.source == "SEQUENCE":
            return _images_plan(label, path, sequence_files(path), _scene_fps(scene))
        if source.source == "MOVIE":
            return _movie_plan(label, path, 1)
        if source.source == "FILE":
            m = _DIGITS.search(Path(path).stem)
            return _images_plan(label, path, [(int(m.group(1)) if m else 1, os.path.basename(path))], _scene_fps(scene))
        raise FootageExportError(f"{label}: a {source.source.lower()} image is not footage")
    strip_type = getattr(source, "type", None)
    if strip_type is not None and any(k in source.bl_rna.properties for k in ("left_handle", "frame_final_start")):
        label = f"strip {source.name!r}"
        if scene is None:
            raise FootageExportError(f"{label}: pass the scene the strip belongs to")
        content_start, start, end = compat.strip_timing(source)
        fs = int(round(content_start))
        frames = list(range(start, end))
        notes = []
        if any(getattr(source, a, None) for a in ("use_flip_x", "use_flip_y", "use_reverse_frames")):
            notes.append("strip flips/reversal are not applied")
        if getattr(source, "modifiers", None) and len(source.modifiers):
            notes.append("strip modifiers are not applied")
        if strip_type == "MOVIE":
            path = _abspath(source.filepath)
            content = [f - fs + 1 for f in frames]
            return _movie_plan(label, path, fs, fps_override=_scene_fps(scene), content=content, frames=frames,
                               notes=notes)
        if strip_type == "IMAGE":
            directory = _abspath(source.directory)
            elems = [e.filename for e in source.elements]
            pairs = []
            for f in frames:
                idx = min(max(f - fs, 0), len(elems) - 1)
                pairs.append((f, elems[idx]))
            return _images_plan(label, os.path.join(directory, elems[0]), pairs, _scene_fps(scene), notes)
        if strip_type == "MOVIECLIP" and source.clip is not None:
            clip = source.clip
            path = _abspath(clip.filepath, clip.library)
            content = [f - fs + 1 for f in frames]
            if clip.source == "SEQUENCE":
                files = sequence_files(path)
                pairs = [(f, files[min(max(k - 1, 0), len(files) - 1)][1]) for f, k in zip(frames, content)]
                return _images_plan(label, path, pairs, _scene_fps(scene), notes)
            return _movie_plan(label, path, fs, fps_override=_scene_fps(scene), content=content, frames=frames,
                               notes=notes)
        raise FootageExportError(f"{label}: a {strip_type} strip has no footage to export (movie, image or clip)")
    raise FootageExportError(f"cannot export {source!r}: expected a Movie Clip, an Image or a sequencer strip")


# ------------------------------------------------------------------------------------------ rendering
def _set_fps(tmp, fps: float) -> None:
    r = tmp.render
    if abs(fps - round(fps)) < 1e-6:
        r.fps, r.fps_base = int(round(fps)), 1.0
    elif abs(fps * 1.001 - round(fps * 1.001)) < 1e-3:  # NTSC rates: 29.97 = 30 / 1.001
        r.fps, r.fps_base = int(round(fps * 1.001)), 1.001
    else:
        r.fps = max(1, int(round(fps)))
        r.fps_base = r.fps / fps


def _setup_scene(plan: _Plan, use_exr: bool):
    tmp = bpy.data.scenes.new("DR_footage_export")
    r = tmp.render
    r.resolution_x, r.resolution_y, r.resolution_percentage = plan.size[0], plan.size[1], 100
    r.use_sequencer, r.use_compositing = True, False
    r.film_transparent = False
    _set_fps(tmp, plan.fps)
    vs = tmp.view_settings
    vs.view_transform = "Standard"
    vs.look = "None"
    vs.exposure, vs.gamma = 0.0, 1.0
    if use_exr:
        compat.set_exr_format(r.image_settings, multilayer=False, color_depth="32", codec="ZIP", color_mode="RGB")
        for name in ("Linear Rec.709", "Linear"):
            try:
                tmp.sequencer_colorspace_settings.name = name
                break
            except TypeError:
                continue
    else:
        compat.set_image_format(r.image_settings, "PNG", color_depth="16", color_mode="RGB")
        r.image_settings.compression = 15
    se = tmp.sequence_editor_create()
    if plan.kind == "movie":
        strip = compat.vse_new_movie(se, "footage", plan.movie, 1, 1)
    else:
        strip = compat.vse_new_image(se, "footage", os.path.join(plan.directory, plan.files[0]), 1, 1)
        for fn in plan.files[1:]:
            strip.elements.append(fn)
    if hasattr(strip, "fit_method"):
        strip.fit_method = "ORIGINAL"
    return tmp


def export_footage(source, out_dir, *, scene=None, file_format: str = "AUTO", name: str = "frame",
                   frame_range=None, progress=None) -> dict:
    """Export footage to ``out_dir/<name>.####.<png|exr>`` + ``clip.json``; returns the clip.json dict.

    ``source``: a MovieClip, an Image, a sequencer strip, or None for ``scene``'s active strip.
    ``file_format``: 'AUTO' (EXR for float sources, else PNG 16-bit), 'PNG' or 'EXR'.
    ``frame_range``: optional ``(first, last)`` output frame numbers to keep (inclusive).
    ``progress``: optional ``callable(done, total, message)``."""
    if scene is None:
        scene = getattr(bpy.context, "scene", None)
    plan = _plan_for(source, scene)
    fmt = file_format.upper()
    if fmt not in ("AUTO", "PNG", "EXR"):
        raise FootageExportError(f"file_format must be AUTO, PNG or EXR, got {file_format!r}")
    use_exr = fmt == "EXR" or (fmt == "AUTO" and plan.is_float)
    ext = "exr" if use_exr else "png"
    pairs = list(zip(plan.content, plan.frames))
    if frame_range is not None:
        lo, hi = frame_range
        pairs = [(c, f) for c, f in pairs if lo <= f <= hi]
    if not pairs:
        raise FootageExportError(f"{plan.label}: no frames to export")
    if pairs[0][1] < 0:
        raise FootageExportError(f"{plan.label}: frame {pairs[0][1]} is negative; frame numbers must be ≥ 0")
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    old = out_dir / "clip.json"
    if old.is_file():
        old.unlink()  # a half-rewritten folder never looks complete
    had_render_result = any(img.type == "RENDER_RESULT" for img in bpy.data.images)
    tmp_dir = Path(tempfile.mkdtemp(prefix=".dr_footage_", dir=str(out_dir)))
    tmp = _setup_scene(plan, use_exr)
    try:
        with bpy.context.temp_override(scene=tmp):
            for i, (content, frame) in enumerate(pairs):
                if progress is not None:
                    progress(i, len(pairs), f"frame {frame}")
                tmp.frame_set(content)
                target = tmp_dir / f"{frame:06d}.{ext}"
                tmp.render.filepath = str(target)
                result = bpy.ops.render.render(write_still=True)
                if "FINISHED" not in result or not target.is_file():
                    raise FootageExportError(f"{plan.label}: extracting frame {frame} failed (see the console)")
                os.replace(target, out_dir / f"{name}.{frame:04d}.{ext}")
    finally:
        bpy.data.scenes.remove(tmp)
        if not had_render_result:
            for img in [i for i in bpy.data.images if i.type == "RENDER_RESULT"]:
                bpy.data.images.remove(img)
        shutil.rmtree(tmp_dir, ignore_errors=True)
    info = {
        "format": "diffusion-renderer/frames", "version": 1,
        "fps": plan.fps, "frame_numbers": [f for _, f in pairs], "resolution": list(plan.size),
        "pattern": f"{name}.####.{ext}", "encoding": "linear-rec709" if use_exr else "srgb",
        "dtype": "float" if use_exr else "uint16",
        "source": {"kind": plan.kind, "label": plan.label, "path": plan.movie or plan.directory},
        "producer": "blender", "blender_version": compat.version_string(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    if plan.notes:
        info["notes"] = plan.notes
    tmp_json = out_dir / f".clip.json.{os.getpid()}.tmp"
    tmp_json.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp_json, out_dir / "clip.json")
    if progress is not None:
        progress(len(pairs), len(pairs), "done")
    return info
