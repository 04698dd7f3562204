"""Footage in Blender → what the engine's inverse job needs to read it itself (no re-encode).

``export_footage(source, out_dir, scene=…)`` takes a **Movie Clip**, an **Image** (an image sequence, a
movie or a single file) or a **VSE strip** (movie, image or clip strip; ``source=None`` = the scene's
active strip) and returns a description whose ``params`` are the inverse job's input parameters:

* ``input`` — the source itself, absolute: the movie file, or the image sequence as a pattern
  ``folder/name_####.ext`` (the engine reads exactly those files, whatever else the folder holds);
* ``first_frame`` / ``frame_range`` — the frame numbers the results must land on: an image sequence keeps
  its files' numbers, a movie or movie clip numbers its frames from the clip's start frame (1 by default),
  a VSE strip uses the scene frames where it is visible (its trimmed range); ``first_frame`` is the number
  the source's first frame (a sequence's first file) gets, ``frame_range`` the kept numbers (inclusive);
* ``source_fps`` — the scene's rate for image sequences and VSE strips (the sequencer plays one source
  frame per scene frame); a movie or movie clip carries its own rate, which the engine reads;
* ``colorspace`` — from the source's ``colorspace_settings.name`` through the contract's table
  (``engine/contract/footage.py`` ``BLENDER_COLORSPACES``): ``sRGB`` (and ``Non-Color``: values as stored)
  → ``srgb``; ``Linear Rec.709`` / ``Linear`` → ``linear``; ``ACEScg``, ``ACES2065-1``, ``ACEScct``,
  ``Linear Rec.2020`` … → the engine's OpenColorIO name, converted by the engine. A DPX left at Blender's
  default (``Linear Rec.709``, which Blender gives every DPX whatever its header says) → ``auto``: the
  engine reads the file's transfer characteristic (log → Cineon). Any other colour space (Filmic Log, AgX
  Log, Display P3 …) needs Blender's colour management: then — and only then, or when an image strip's
  files are not one numbered sequence — Blender renders the frames once, as half-float linear EXR
  ``out_dir/frames/frame.####.exr`` numbered by the result frames, and that folder is the input
  (``rendered: True`` and a note say so). A sequence alone in its folder is passed as the folder.

The description also carries ``frame_numbers``, ``fps``, ``size``, ``kind``, ``label``, ``colorspace_name``
and ``notes`` (what is not applied: strip flips, modifiers). Nothing here reads pixels: sizes come from
Blender's datablocks (a temporary image datablock for strips).

The render itself is :mod:`.footage_render` (a temporary scene, removed afterwards; the user's scenes,
strips and clips are not touched). Strip effects, transforms, modifiers and retiming are not applied.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import bpy

from .. import compat
from ..contract import footage
from .footage_render import render_frames

__all__ = ["FootageExportError", "export_footage", "sequence_files", "engine_colorspace", "sequence_pattern"]

_DIGITS = re.compile(r"(\d+)(?!.*\d)")


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
    colorspace: str = "sRGB"       # the source's Blender colour space name
    own_fps: bool = False          # a movie's own rate (the engine reads it): no source_fps


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


def _movie_plan(label, path, first_frame: int, fps_override=None, content=None, frames=None, notes=(),
                info=None) -> _Plan:
    if not os.path.isfile(path):
        raise FootageExportError(f"{label}: movie file not found: {path}")
    count, fps, size = info or _movie_info(path)
    if count <= 0 or size[0] <= 0:
        raise FootageExportError(f"{label}: cannot read the movie {path}")
    content = content or list(range(1, count + 1))
    frames = frames or [first_frame + k - 1 for k in content]
    return _Plan("movie", label, movie=path, content=content, frames=frames, fps=fps_override or fps or 24.0,
                 size=size, is_float=False, notes=list(notes), own_fps=not fps_override)


def _scene_fps(scene) -> float:
    return scene.render.fps / scene.render.fps_base if scene is not None else 24.0


def _colorspace_of(item) -> str:
    """The Blender colour-space name of a datablock or strip; '' while Blender has not resolved it (a movie
    image before its first frame is loaded reads as no name)."""
    cs = getattr(item, "colorspace_settings", None)
    return (cs.name or "") if cs is not None else ""


def _plan_for(source, scene) -> _Plan:
    plan = _plan_source(source, scene)
    if not plan.colorspace:                    # unresolved: Blender's own default for such a file
        plan.colorspace = "Linear Rec.709" if plan.is_float else "sRGB"
    return plan


def _plan_source(source, scene) -> _Plan:
    if source is None:
        if scene is None or scene.sequence_editor is None or scene.sequence_editor.active_strip is None:
            raise FootageExportError("no footage given and the scene has no active sequencer strip")
        source = scene.sequence_editor.active_strip
    if isinstance(source, bpy.types.MovieClip):
        label = f"movie clip {source.name!r}"
        path = _abspath(source.filepath, source.library)
        if source.source == "SEQUENCE":
            plan = _images_plan(label, path, sequence_files(path), float(source.fps or _scene_fps(scene)))
            plan.colorspace = _colorspace_of(source)
            return plan
        plan = _movie_plan(label, path, int(source.frame_start),
                           info=(int(source.frame_duration), float(source.fps or 0.0), tuple(int(v) for v in source.size))
                           if source.frame_duration > 0 and source.size[0] > 0 else None)
        plan.colorspace = _colorspace_of(source)
        return plan
    if isinstance(source, bpy.types.Image):
        label = f"image {source.name!r}"
        if source.packed_file is not None:
            raise FootageExportError(f"{label}: packed images are not supported; unpack it first")
        path = _abspath(source.filepath, source.library)
        if source.source == "SEQUENCE":
            plan = _images_plan(label, path, sequence_files(path), _scene_fps(scene))
        elif source.source == "MOVIE":
            plan = _movie_plan(label, path, 1)
        elif source.source == "FILE":
            m = _DIGITS.search(Path(path).stem)
            plan = _images_plan(label, path, [(int(m.group(1)) if m else 1, os.path.basename(path))],
                                _scene_fps(scene))
        else:
            raise FootageExportError(f"{label}: a {source.source.lower()} image is not footage")
        plan.colorspace = _colorspace_of(source)
        return plan
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
            plan = _movie_plan(label, path, fs, fps_override=_scene_fps(scene), content=content, frames=frames,
                               notes=notes)
            plan.colorspace = _colorspace_of(source)
            return plan
        if strip_type == "IMAGE":
            directory = _abspath(source.directory)
            elems = [e.filename for e in source.elements]
            pairs = []
            for f in frames:
                idx = min(max(f - fs, 0), len(elems) - 1)
                pairs.append((f, elems[idx]))
            plan = _images_plan(label, os.path.join(directory, elems[0]), pairs, _scene_fps(scene), notes)
            plan.colorspace = _colorspace_of(source)
            return plan
        if strip_type == "MOVIECLIP" and source.clip is not None:
            clip = source.clip
            path = _abspath(clip.filepath, clip.library)
            content = [f - fs + 1 for f in frames]
            if clip.source == "SEQUENCE":
                files = sequence_files(path)
                pairs = [(f, files[min(max(k - 1, 0), len(files) - 1)][1]) for f, k in zip(frames, content)]
                plan = _images_plan(label, path, pairs, _scene_fps(scene), notes)
            else:
                plan = _movie_plan(label, path, fs, fps_override=_scene_fps(scene), content=content, frames=frames,
                                   notes=notes)
            plan.colorspace = _colorspace_of(clip)
            return plan
        raise FootageExportError(f"{label}: a {strip_type} strip has no footage to export (movie, image or clip)")
    raise FootageExportError(f"cannot export {source!r}: expected a Movie Clip, an Image or a sequencer strip")



# ------------------------------------------------------------------------------------------ description
def engine_colorspace(name: str, suffix: str = "") -> str | None:
    """The engine's ``colorspace`` for a Blender colour-space name (of a file with extension ``suffix``):
    ``srgb``, ``linear``, an OpenColorIO name, ``auto`` for a DPX at Blender's default, or None when only
    Blender's colour management can convert it (the frames are then rendered to linear EXR)."""
    if footage.HEADER_DECIDES.get(suffix.lower()) == name:
        return "auto"
    return footage.BLENDER_COLORSPACES.get(name)


def sequence_pattern(path: str) -> str | None:
    """``folder/shot_0005.png`` → ``folder/shot_####.png`` (the engine's sequence pattern: the last run of
    digits, as many ``#`` as digits); None for a name without digits."""
    folder, name = os.path.split(path)
    stem, ext = os.path.splitext(name)
    m = _DIGITS.search(stem)
    if m is None:
        return None
    return os.path.join(folder, stem[:m.start()] + "#" * len(m.group()) + stem[m.end():] + ext)


def _number(name: str) -> int | None:
    m = _DIGITS.search(os.path.splitext(name)[0])
    return int(m.group(1)) if m else None


def _sequence_params(plan: _Plan, frames: list[int], files: list[str]) -> dict | None:
    """Pattern input + renumbering for image files, or None when they are not one numbered sequence
    read in order (then Blender renders them)."""
    first_path = os.path.join(plan.directory, files[0])
    numbers = [_number(f) for f in files]
    if len(files) == 1 and numbers[0] is None:
        return {"input": first_path, "first_frame": frames[0]}    # one file without a number
    pattern = sequence_pattern(first_path)
    if pattern is None or None in numbers:
        return None
    offset = frames[0] - numbers[0]
    if any(f - n != offset for f, n in zip(frames, numbers)):
        return None                                    # retimed, reordered or repeated files
    pad = pattern.count("#")
    every = [(n, fn) for n, fn in sequence_files(first_path)    # what the engine lists for the pattern
             if len(_DIGITS.search(os.path.splitext(fn)[0]).group()) >= pad]
    if [n for n, _ in every if numbers[0] <= n <= numbers[-1]] != numbers:
        return None                                    # the folder's files in that range differ from these
    params = {"input": pattern}
    if {fn for _, fn in every} == _frame_files(plan.directory):
        params["input"] = plan.directory               # the folder holds just this sequence: name the folder
    if offset:
        params["first_frame"] = every[0][0] + offset
    if (every[0][0], every[-1][0]) != (numbers[0], numbers[-1]):
        params["frame_range"] = [frames[0], frames[-1]]
    return params


def _frame_files(folder: str) -> set[str]:
    """The names the engine takes for frames in a folder (engine.io.clip.FRAME_SUFFIXES, not hidden)."""
    return {fn for fn in os.listdir(folder) if not fn.startswith(".") and os.path.isfile(os.path.join(folder, fn))
            and os.path.splitext(fn)[1].lower() in footage.FRAME_SUFFIXES}


def export_footage(source, out_dir=None, *, scene=None, frame_range=None, progress=None,
                   render: bool = False) -> dict:
    """Describe ``source`` for the engine's inverse job (see the module docstring); returns
    ``{"params": {input, first_frame?, frame_range?, source_fps?, colorspace}, "frame_numbers", "fps",
    "size", "kind", "label", "source", "colorspace_name", "rendered", "notes"}``.

    ``source``: a MovieClip, an Image, a sequencer strip, or None for ``scene``'s active strip.
    ``out_dir``: where frames are rendered when they must be (``<out_dir>/frames``); needed only then.
    ``frame_range``: optional ``(first, last)`` result frame numbers to keep (inclusive).
    ``render``: render the frames even when the engine could read the source itself.
    ``progress``: optional ``callable(done, total, message)`` while rendering."""
    if scene is None:
        scene = getattr(bpy.context, "scene", None)
    plan = _plan_for(source, scene)
    pairs = list(zip(plan.content, plan.frames))
    files = list(plan.files)
    if frame_range is not None:
        lo, hi = frame_range
        keep = [i for i, (_, f) in enumerate(pairs) if lo <= f <= hi]
        pairs = [pairs[i] for i in keep]
        files = [files[i] for i in keep] if files else files
    if not pairs:
        raise FootageExportError(f"{plan.label}: no frames in the chosen range")
    if pairs[0][1] < 0:
        raise FootageExportError(f"{plan.label}: frame {pairs[0][1]} is negative; frame numbers must be ≥ 0 "
                                 "(move the clip or strip to frame 0 or later)")
    frames = [f for _, f in pairs]
    colorspace = engine_colorspace(plan.colorspace, os.path.splitext(files[0] if files else plan.movie or "")[1])
    notes = list(plan.notes)
    params = None
    if not render and colorspace is not None:
        if plan.kind == "movie":
            first = frames[0] - (pairs[0][0] - 1)      # the number movie frame 1 gets
            params = {"input": plan.movie}
            if first != 1:
                params["first_frame"] = first
            if [c for c, _ in pairs] != list(range(1, len(pairs) + 1)) or frame_range is not None:
                params["frame_range"] = [frames[0], frames[-1]]
        else:
            params = _sequence_params(plan, frames, files)
            if params is None:
                notes.append("the image files are not one numbered sequence in timeline order: rendered to EXR")
    rendered = params is None
    if rendered:
        if colorspace is None:
            notes.append(f"colour space {plan.colorspace!r} needs Blender's colour management: "
                         "the frames were rendered once to linear half-float EXR")
        if out_dir is None:
            raise FootageExportError(f"{plan.label}: the frames must be rendered by Blender; give a folder for them")
        folder = Path(out_dir).resolve() / "frames"
        render_frames(plan, pairs, folder, progress, FootageExportError)
        params, colorspace = {"input": str(folder)}, "linear"     # the folder holds just these frames
    params["colorspace"] = colorspace
    if rendered or not plan.own_fps:
        params["source_fps"] = float(plan.fps)
    if progress is not None:
        progress(len(pairs), len(pairs), "done")
    return {"params": params, "frame_numbers": frames, "fps": float(plan.fps), "size": list(plan.size),
            "kind": plan.kind, "label": plan.label, "source": plan.movie or plan.directory,
            "colorspace_name": plan.colorspace, "rendered": rendered, "notes": notes}
