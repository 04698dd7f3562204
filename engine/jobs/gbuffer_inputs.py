"""G-buffer inputs of the forward job, in any of three layouts, as model inputs.

- a **G-buffer set** (``manifest.json``, docs/GBUFFER_SET.md) — from the add-on or the inverse job;
- a **Blender render folder**: ``render.json`` + the multilayer EXRs Blender wrote (any 4.2–5.x layout),
  converted by ``engine.gbuffer.blender_render`` and encoded exactly as the set it converts to would be
  (docs/GBUFFER_SET.md §8); bare Blender EXRs without ``render.json`` are refused with the fix;
- the reference's **PNG layout** ``<clip>/<chunk>.<frame>.<pass>.png`` (already model-encoded).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from engine.contract.gbuffer_set import FORWARD_PASSES
from engine.contract.render_json import FILE_NAME as RENDER_JSON
from engine.errors import UserError

REQUIRED = FORWARD_PASSES   # the forward model's inputs
_REF_PNG = re.compile(r"^(?P<key>[^.]+)\.(?P<frame>\d+)\.(?P<pass>[a-z_]+)\.png$", re.IGNORECASE)


class GBufferInputError(UserError, ValueError):
    """The G-buffer input cannot be used; the message names the file and the fix."""


@dataclass
class GBufferClip:
    name: str
    source: str
    layout: str                               # gbuffer-set | blender-render | reference-png
    frame_numbers: list
    fps: float
    inputs: dict                              # {pass: (F, H, W, 3) float32 in [0, 1]} model encodings
    cameras: Optional[list] = None            # per-frame 4×4 camera matrix_world (Blender, Z-up) or None
    warnings: list = field(default_factory=list)
    camera_entries: Optional[list] = None     # the set's full manifest camera entries (lens, sensor …), if any

    @property
    def size(self) -> tuple[int, int]:
        f = self.inputs["basecolor"]
        return f.shape[2], f.shape[1]


def _check_complete(inputs: dict, where: str) -> None:
    missing = [p for p in REQUIRED if p not in inputs]
    if missing:
        raise GBufferInputError(f"{where}: missing required G-buffer pass(es): {', '.join(missing)} "
                                f"(the forward model needs {', '.join(REQUIRED)})")
    shapes = {p: inputs[p].shape[:3] for p in REQUIRED}
    if len(set(shapes.values())) != 1:
        raise GBufferInputError(f"{where}: passes differ in frame count or size: " +
                                ", ".join(f"{p} {s[0]} frames {s[2]}x{s[1]}" for p, s in shapes.items()))


def _from_set(folder: Path) -> GBufferClip:
    from engine.gbuffer import open_gbuffer_set, to_model_inputs

    gset = open_gbuffer_set(folder)
    missing = [p for p in REQUIRED if p not in gset.passes]
    if missing:
        raise GBufferInputError(f"{folder}: missing required G-buffer pass(es): {', '.join(missing)}")
    frames = {p: gset.read_all(p) for p in gset.passes if p in REQUIRED or p == gset.manifest.alpha}
    inputs = to_model_inputs(frames, gset.manifest)
    cams = gset.manifest.camera or None
    cameras = [c.get("matrix_world") for c in cams] if cams and all(c.get("matrix_world") for c in cams) else None
    clip = GBufferClip(folder.name, str(folder), "gbuffer-set", list(gset.frame_numbers), float(gset.fps),
                       {p: np.asarray(v, np.float32) for p, v in inputs.items()}, cameras, list(gset.warnings),
                       [dict(c) for c in cams] if cams else None)
    _check_complete(clip.inputs, str(folder))
    return clip


def _from_render_folder(folder: Path) -> GBufferClip:
    """A Blender render folder (render.json) through the converter, then the SAME encoding path as a set:
    each pass rounded as its set file stores it, a manifest built from the same data — so the model
    inputs equal those of the set `diffusion-renderer gbuffers` writes from this folder, bit for bit."""
    from engine.gbuffer import GBufferSetError, to_model_inputs
    from engine.gbuffer.blender_render import manifest_for, read_render_folder, round_to_set_dtypes

    try:
        rendered = read_render_folder(folder)
    except GBufferSetError as exc:
        raise GBufferInputError(str(exc)) from None
    manifest = manifest_for(rendered)
    frames = round_to_set_dtypes({p: v for p, v in rendered.passes.items() if p in REQUIRED or p == "alpha"})
    inputs = to_model_inputs(frames, manifest)
    cams = rendered.cameras
    clip = GBufferClip(folder.name, str(folder), "blender-render", list(rendered.frame_numbers), rendered.fps,
                       {p: np.asarray(v, np.float32) for p, v in inputs.items()},
                       [c["matrix_world"] for c in cams], list(rendered.warnings), [dict(c) for c in cams])
    _check_complete(clip.inputs, str(folder))
    return clip


def _from_reference_pngs(folder: Path, files: list) -> list[GBufferClip]:
    from engine.io import read_frame

    groups: dict = {}
    for f in files:
        m = _REF_PNG.match(f.name)
        if m:
            groups.setdefault(m["key"], {}).setdefault(m["pass"].lower(), {})[int(m["frame"])] = f
    clips = []
    for key, by_pass in sorted(groups.items()):
        where = f"{folder}/{key}.*"
        missing = [p for p in REQUIRED if p not in by_pass]
        if missing:
            raise GBufferInputError(f"{where}: missing required G-buffer pass(es): {', '.join(missing)}")
        counts = {p: len(by_pass[p]) for p in REQUIRED}
        if len(set(counts.values())) != 1:
            raise GBufferInputError(f"{where}: passes have different frame counts: " +
                                    ", ".join(f"{p} {n}" for p, n in counts.items()))
        numbers = sorted(by_pass["basecolor"])
        inputs = {}
        for p in REQUIRED:
            frames = [read_frame(by_pass[p][n]) for n in numbers]
            sizes = {f.shape[:2] for f in frames}
            if len(sizes) > 1 or (inputs and frames[0].shape[:2] != inputs["basecolor"].shape[1:3]):
                odd = next(by_pass[p][n] for n, f in zip(numbers, frames)
                           if f.shape[:2] != (inputs["basecolor"].shape[1:3] if inputs else frames[0].shape[:2]))
                raise GBufferInputError(f"{odd}: size differs from the other G-buffer frames of {where} "
                                        "(every pass and frame must have the same size)")
            inputs[p] = np.stack(frames).astype(np.float32)
        clip = GBufferClip(f"{folder.name}-{key}" if len(groups) > 1 else folder.name, str(folder),
                           "reference-png", [n + 1 for n in numbers], 24.0, inputs)
        _check_complete(clip.inputs, where)
        clips.append(clip)
    return clips


def load_gbuffer_clips(path) -> list[GBufferClip]:
    """Every G-buffer clip at ``path`` (a set, a Blender render folder, a reference PNG folder, or a
    folder of such folders)."""
    from engine.io import detect_layout

    path = Path(path)
    if not path.exists():
        raise GBufferInputError(f"{path}: G-buffer input not found")
    if not path.is_dir():
        raise GBufferInputError(f"{path}: expected a folder (a G-buffer set, a Blender render folder or "
                                "reference PNGs)")
    if (path / "manifest.json").is_file():
        return [_from_set(path)]
    if (path / RENDER_JSON).is_file():
        return [_from_render_folder(path)]
    exrs = sorted(p for p in path.iterdir() if p.suffix.lower() == ".exr")
    if exrs:
        if detect_layout(exrs[0]) == "plain":
            raise GBufferInputError(f"{exrs[0]}: a plain EXR, not a Blender multilayer render (no pass layers); "
                                    "a G-buffer set needs its manifest.json")
        raise GBufferInputError(f"{path}: Blender EXRs without {RENDER_JSON} (the cameras, frame rate and AOV names "
                                "the conversion needs); export them with the add-on's Neural Render, or write a "
                                f"{RENDER_JSON} beside them (docs/GBUFFER_SET.md §8)")
    pngs = sorted(p for p in path.iterdir() if p.suffix.lower() == ".png" and _REF_PNG.match(p.name))
    if pngs:
        return _from_reference_pngs(path, pngs)
    subs = [p for p in sorted(path.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    clips = []
    for sub in subs:
        try:
            clips.extend(load_gbuffer_clips(sub))
        except GBufferInputError as exc:
            if any(t in str(exc) for t in ("not found", "expected a folder", "no G-buffers found")):
                continue
            raise
    if not clips:
        raise GBufferInputError(f"{path}: no G-buffers found (no manifest.json, {RENDER_JSON} or "
                                "<chunk>.<frame>.<pass>.png files)")
    return clips
