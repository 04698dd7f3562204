"""G-buffer inputs of the forward job, in any of three layouts, as model inputs.

- a **G-buffer set** (``manifest.json``, docs/GBUFFER_SET.md) — from the add-on or the inverse job;
- a folder of **Blender multilayer EXRs** (4.2/4.5 single-part short names, 5.x multi-part long
  names, or File Output node files) with AOVs ``basecolor``/``roughness``/``metallic`` and the Normal
  and Depth passes. Blender's Normal pass is world-space, so the folder needs ``cameras.json``
  (``{"frames": {"<frame>": {"matrix_world": 4×4}}}``) to bring normals into camera space;
- the reference's **PNG layout** ``<clip>/<chunk>.<frame>.<pass>.png`` (already model-encoded).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

REQUIRED = ("basecolor", "normal", "depth", "roughness", "metallic")
_REF_PNG = re.compile(r"^(?P<key>[^.]+)\.(?P<frame>\d+)\.(?P<pass>[a-z_]+)\.png$", re.IGNORECASE)


class GBufferInputError(ValueError):
    """The G-buffer input cannot be used; the message names the file and the fix."""


@dataclass
class GBufferClip:
    name: str
    source: str
    layout: str                               # gbuffer-set | blender-exr | reference-png
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


def _blender_cameras(folder: Path, numbers: list) -> list:
    path = folder / "cameras.json"
    if not path.is_file():
        raise GBufferInputError(f"{folder}: Blender's Normal pass is in world space; add cameras.json with each "
                                "frame's camera matrix_world ({\"frames\": {\"1\": {\"matrix_world\": [[...]]}}}), "
                                "or export a G-buffer set with the add-on")
    try:
        frames = json.loads(path.read_text())["frames"]
        return [np.asarray(frames[str(n)]["matrix_world"], dtype=np.float64) for n in numbers]
    except (ValueError, KeyError, TypeError) as exc:
        raise GBufferInputError(f"{path}: unreadable or missing a frame's matrix_world ({exc})") from None


def _from_blender(folder: Path, files: list) -> GBufferClip:
    from engine.gbuffer import (
        compute_depth_range,
        encode_normal,
        encode_scalar,
        linear_to_srgb,
        normalise_depth,
    )
    from engine.io import frame_number, read_blender_passes

    numbers = [frame_number(f) for f in files]
    if None in numbers:
        raise GBufferInputError(f"{files[numbers.index(None)]}: no frame number in the file name")
    passes = [read_blender_passes(f) for f in files]
    warnings = []
    first = passes[0]
    if "basecolor" not in first and "diffuse_color" in first:
        warnings.append("no basecolor AOV: using the Diffuse Color pass (base colour × (1 − metallic))")
    for name in ("normal", "depth", "roughness", "metallic"):
        if name not in first:
            raise GBufferInputError(f"{files[0]}: missing required G-buffer pass {name!r} "
                                    f"(found: {', '.join(sorted(first))})")
    cams = _blender_cameras(folder, numbers)
    base = np.stack([p.get("basecolor", p.get("diffuse_color"))[..., :3] for p in passes]).astype(np.float32)
    normal_w = np.stack([p["normal"][..., :3] for p in passes]).astype(np.float32)
    normal_c = np.einsum("fij,fhwj->fhwi", np.stack([c[:3, :3].T for c in cams]).astype(np.float32), normal_w)
    depth = np.stack([p["depth"][..., 0] for p in passes]).astype(np.float32)
    rng = compute_depth_range(depth)
    inputs = {"basecolor": linear_to_srgb(base), "normal": encode_normal(normal_c),
              "depth": np.repeat(normalise_depth(depth, *rng)[..., None], 3, -1) if rng else np.ones_like(base),
              "roughness": encode_scalar(np.stack([p["roughness"][..., :1] for p in passes])),
              "metallic": encode_scalar(np.stack([p["metallic"][..., :1] for p in passes]))}
    clip = GBufferClip(folder.name, str(folder), "blender-exr", numbers, 24.0,
                       {k: np.asarray(v, np.float32) for k, v in inputs.items()}, [c.tolist() for c in cams],
                       warnings)
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
    """Every G-buffer clip at ``path`` (a set, a Blender EXR folder, a reference PNG folder, or a
    folder of such folders)."""
    from engine.io import detect_layout

    path = Path(path)
    if not path.exists():
        raise GBufferInputError(f"{path}: G-buffer input not found")
    if not path.is_dir():
        raise GBufferInputError(f"{path}: expected a folder (a G-buffer set, Blender EXRs or reference PNGs)")
    if (path / "manifest.json").is_file():
        return [_from_set(path)]
    exrs = sorted(p for p in path.iterdir() if p.suffix.lower() == ".exr")
    if exrs:
        layout = detect_layout(exrs[0])
        if layout == "plain":
            raise GBufferInputError(f"{exrs[0]}: a plain EXR, not a Blender multilayer render (no pass layers); "
                                    "a G-buffer set needs its manifest.json")
        from engine.io import frame_number

        exrs.sort(key=lambda p: (frame_number(p) is None, frame_number(p) or 0))
        return [_from_blender(path, exrs)]
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
        raise GBufferInputError(f"{path}: no G-buffers found (no manifest.json, Blender EXRs or "
                                "<chunk>.<frame>.<pass>.png files)")
    return clips
