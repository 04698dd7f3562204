"""A Blender render folder (``render.json`` + the multilayer EXRs Blender wrote) → G-buffer set passes.

The add-on only sets the scene up and lets Blender render; THIS is the one conversion to the set's
conventions (docs/GBUFFER_SET.md §2, §8), used by the add-on's export (through the engine), by
``forward`` on a render folder and by ``diffusion-renderer gbuffers``:

=============  =================================================================================
``rgb``        Combined RGB (linear, premultiplied); ``alpha`` = Combined A (1 without an A)
``normal``     ``R_wc · n_world``, R_wc = the camera's matrix_world 3×3 with its columns normalised
               (scale removed), transposed; renormalised; zero (background) stays zero; NaN → 0
``depth``      planar Z; background (alpha == 0, Z ≥ 1e9, Z ≥ clip_end·(1 − 1e-6), non-finite) → 1e10
``basecolor``  the colour AOV's RGB, ``roughness``/``metallic`` the value AOVs' first channel
               (X / V / R, whatever the layout gives); where alpha exceeds the colour AOV's A
               (surfaces without an injectable material) + default × (alpha − AOV coverage), never
               on depth background (an opaque film's alpha 1 there is reported, not filled)
=============  =================================================================================

NaN/Inf in a pass are replaced (0; depth: 1e10) with a warning naming pass, frame and count. The
depth range is per clip (``clip-min-p98``, :class:`DepthRangeAccumulator`, alpha rounded to the set's
half precision as a reader of the set sees it). Frames are converted one at a time (vectorised numpy).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from engine.contract import render_json

from .encodings import DEPTH_RANGE_RULE, DepthRangeAccumulator
from .gbuffer_set import DEPTH_BACKGROUND
from engine.contract.gbuffer_set import (FORMAT, PASS_SPECS, RENDER_PASSES, VERSION, GBufferSetError, default_pass_entry,
                                         make_provenance)

__all__ = ["RenderFolderError", "RenderedClip", "ConversionReport", "SET_PASSES", "read_render_folder",
           "convert_render_folder", "convert", "round_to_set_dtypes", "manifest_for"]

SET_PASSES = RENDER_PASSES
_BG_Z = 1e9                       # Z at or beyond this is background (Cycles writes 1e10)
_HALF_MAX = 65504.0
_CAMERA_KEYS = ("lens_mm", "sensor_width_mm", "clip_start", "clip_end")
_PROVENANCE_KEYS = ("scene", "view_layer", "camera", "render_engine", "samples", "filter_width", "aovs",
                    "aov_defaults", "seconds", "blender_version", "source", "notes", "colour_management")
_FIX = "export again with the add-on's Neural Render, or fix render.json (docs/GBUFFER_SET.md §8)"


class RenderFolderError(GBufferSetError):
    """A render folder that cannot be converted; the message names the file and the fix."""


@dataclass
class RenderedClip:
    """A whole render folder converted to the set's conventions (``passes``: float32 (F, H, W, C))."""
    folder: Path
    frame_numbers: list
    fps: float
    resolution: tuple                 # (W, H)
    cameras: list                     # render.json camera entries = the manifest's "camera" list
    passes: dict
    depth_range: Optional[tuple]      # (near, far) of the clip, None when nothing is covered
    provenance: dict
    warnings: list = field(default_factory=list)
    render: dict = field(default_factory=dict)   # render.json as read


@dataclass
class ConversionReport:
    out: Path
    frame_numbers: list
    resolution: tuple
    passes: list
    depth_range: Optional[tuple]
    warnings: list
    seconds: dict                     # read / convert / write / previews / total


# ------------------------------------------------------------------------------------------ per frame
def camera_rotation(matrix_world) -> np.ndarray:
    """R_wc (3×3 float32): world → camera rotation of a 4×4 matrix_world, scale removed."""
    m = np.asarray(matrix_world, dtype=np.float64)[:3, :3]
    norms = np.linalg.norm(m, axis=0, keepdims=True)
    return (m / np.where(norms > 0, norms, 1.0)).T.astype(np.float32)


def _finite(arr: np.ndarray, fill: float, what: str, warnings: list) -> np.ndarray:
    bad = ~np.isfinite(arr)
    n = int(np.count_nonzero(bad))
    if not n:
        return arr
    warnings.append(f"{what}: {n} NaN/Inf value(s) replaced by {fill:g}")
    return np.where(bad, np.float32(fill), arr)


class _FrameConverter:
    """Everything per clip that the per-frame conversion needs (AOV names, defaults, cameras)."""

    def __init__(self, folder: Path, data: dict):
        self.folder, self.data = folder, data
        from engine.io.blender_exr import canonical_pass_name

        self.aovs = {k: canonical_pass_name(data["aovs"][k]) for k in render_json.AOV_KEYS}
        given = data.get("aov_defaults") or {}
        self.defaults = {k: given.get(k, render_json.AOV_DEFAULTS[k]) for k in render_json.AOV_KEYS}
        bc = self.defaults["basecolor"]
        if not (isinstance(bc, list) and len(bc) == 3 and all(isinstance(v, (int, float)) for v in bc)) or \
                not all(isinstance(self.defaults[k], (int, float)) for k in ("roughness", "metallic")):
            raise RenderFolderError(f"{folder / render_json.FILE_NAME}: field 'aov_defaults': expected "
                                    "{basecolor: [r, g, b], roughness: number, metallic: number}")
        self.w, self.h = data["resolution"]
        cams = data["cameras"]
        for c in cams:
            bad = [k for k in _CAMERA_KEYS if not (isinstance(c.get(k), (int, float)) and c[k] > 0)]
            if bad:
                raise RenderFolderError(f"{folder / render_json.FILE_NAME}: field 'cameras': frame {c['frame']} "
                                        f"needs positive {', '.join(bad)}; {_FIX}")
        self.rotations = [camera_rotation(c["matrix_world"]) for c in cams]
        self.clip_ends = [float(c["clip_end"]) for c in cams]
        self.opaque_frames: list[int] = []

    def clip_warnings(self) -> list[str]:
        f = self.opaque_frames
        if not f:
            return []
        return [f"{len(f)} frame(s) (first {f[0]}) have alpha > 0 on the background: the render's Film › "
                "Transparent was off, so the alpha pass does not mark the background (turn it on and render again)"]

    def read(self, i: int):
        from engine.io.blender_exr import read_blender_passes
        from engine.io.exr import ExrError

        frame = self.data["frame_numbers"][i]
        path = self.folder / render_json.frame_file(self.data, frame)
        try:
            passes = read_blender_passes(path, view_layer=self.data["view_layer"])
        except ExrError as exc:
            raise RenderFolderError(f"{exc} (render the frame again)") from None
        except ValueError as exc:   # unknown view layer
            raise RenderFolderError(f"{exc}: render.json field 'view_layer' names a layer the render does not "
                                    f"have; {_FIX}") from None
        return path, passes

    def convert(self, i: int, path: Path, passes) -> tuple[dict, list]:
        frame = self.data["frame_numbers"][i]
        warnings: list[str] = []
        vl = f"{passes.view_layer}." if passes.view_layer else ""
        found = ", ".join(sorted(src[len(vl):] if src.startswith(vl) else src for src in passes.sources.values()))

        def need(name: str, what: str) -> np.ndarray:
            if name not in passes:
                raise RenderFolderError(f"{path}: no {what} (found passes: {found}); {_FIX}")
            arr = passes[name]
            if arr.shape[:2] != (self.h, self.w):
                raise RenderFolderError(f"{path}: frame is {arr.shape[1]}×{arr.shape[0]} but render.json resolution "
                                        f"is {self.w}×{self.h}; render the G-buffers again")
            fill = DEPTH_BACKGROUND if name == "depth" else 0.0
            return _finite(arr, fill, f"{name} frame {frame}", warnings)

        combined = need("combined", "Combined pass")
        z = need("depth", "Depth (Z) pass")[..., 0]
        n_world = need("normal", "Normal pass")[..., :3]
        aov = {k: need(self.aovs[k], f"shader AOV {self.data['aovs'][k]!r} ({k}, render.json aovs.{k})")
               for k in render_json.AOV_KEYS}

        rgb = combined[..., :3]
        alpha = combined[..., 3] if combined.shape[-1] >= 4 else np.ones(rgb.shape[:2], np.float32)
        z_bg = ~(z < min(_BG_Z, self.clip_ends[i] * (1 - 1e-6)))        # NaN fails '<' too
        depth = np.where((alpha == 0) | z_bg, np.float32(DEPTH_BACKGROUND), z)
        if z_bg.any() and alpha.min() > 0:  # background but no pixel without alpha: an opaque film
            self.opaque_frames.append(frame)

        normal = np.einsum("hwj,ij->hwi", n_world, self.rotations[i])   # (einsum: no BLAS threads, fast here)
        length = np.sqrt(np.einsum("hwi,hwi->hw", normal, normal))
        normal *= np.divide(1.0, length, out=np.zeros_like(length), where=length > 1e-8)[..., None]

        basecolor = aov["basecolor"][..., :3]
        rough, metal = aov["roughness"][..., 0], aov["metallic"][..., 0]
        if aov["basecolor"].shape[-1] >= 4:   # coverage of the colour AOV: fill the gap with the defaults
            gap = alpha - aov["basecolor"][..., 3]
            idx = np.nonzero((gap > 0) & ~z_bg)     # never on the background (an opaque film's alpha)
            if idx[0].size:
                g = gap[idx]
                basecolor, rough, metal = basecolor.copy(), rough.copy(), metal.copy()
                basecolor[idx] += g[:, None] * np.asarray(self.defaults["basecolor"], np.float32)
                rough[idx] += g * np.float32(self.defaults["roughness"])
                metal[idx] += g * np.float32(self.defaults["metallic"])
        out = {"rgb": rgb, "basecolor": basecolor, "normal": normal, "depth": depth[..., None],
               "roughness": rough[..., None], "metallic": metal[..., None], "alpha": alpha[..., None]}
        return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}, warnings


def round_to_set_dtypes(passes: dict) -> dict:
    """Each pass as a set file stores it: half passes clipped to ±65504 and rounded through float16,
    depth (float) unchanged — so values equal what :class:`GBufferSet` reads back."""

    out = {}
    for name, arr in passes.items():
        if PASS_SPECS[name].dtype == "half":
            arr = np.clip(arr, -_HALF_MAX, _HALF_MAX).astype(np.float16).astype(np.float32)
        out[name] = arr
    return out


# ------------------------------------------------------------------------------------------ the folder
def _load(folder) -> tuple[Path, dict]:
    folder = Path(folder)
    if not folder.is_dir():
        raise RenderFolderError(f"{folder}: no such folder (a Blender render folder with render.json)")
    if not render_json.is_render_folder(folder):
        if any(p.suffix.lower() == ".exr" for p in folder.iterdir()):
            raise RenderFolderError(f"{folder}: Blender EXRs without {render_json.FILE_NAME}; export them with the "
                                    f"add-on's Neural Render, or write a {render_json.FILE_NAME} beside them "
                                    "(docs/GBUFFER_SET.md §8)")
        raise RenderFolderError(f"{folder}: no {render_json.FILE_NAME} (not a Blender render folder); export with "
                                "the add-on's Neural Render")
    try:
        return folder, render_json.load(folder)
    except render_json.RenderJsonError as exc:
        raise RenderFolderError(str(exc)) from None


def _provenance(folder: Path, data: dict) -> dict:
    settings = {k: data[k] for k in _PROVENANCE_KEYS if k in data}
    return make_provenance("blender", settings=settings, source=data.get("source") or str(folder.resolve()),
                           render_folder=str(folder.resolve()))


def _manifest_base(folder: Path, data: dict, depth_range, provenance: dict) -> dict:
    depth = {"kind": "metric", "invert": False}
    if depth_range is not None:
        depth.update(near=float(depth_range[0]), far=float(depth_range[1]), range_rule=DEPTH_RANGE_RULE)
    return {"fps": float(data["fps"]), "kind": "gbuffer", "depth": depth, "alpha": "alpha",
            "camera": [dict(c) for c in data["cameras"]], "provenance": provenance}


def manifest_for(clip: RenderedClip) -> dict:
    """The manifest a set converted from ``clip`` has (without previews): what forward's loader uses so the
    render folder and its converted set give the same model inputs."""
    base = _manifest_base(clip.folder, clip.render, clip.depth_range, clip.provenance)
    passes = {n: default_pass_entry(n, depth_kind="metric") for n in SET_PASSES}
    data = {"format": FORMAT, "version": VERSION, "kind": "gbuffer", "frame_numbers": list(clip.frame_numbers),
            "fps": base["fps"], "resolution": list(clip.resolution), "passes": passes}
    data.update({k: v for k, v in base.items() if k not in data})
    return data


def _depth_add(acc: DepthRangeAccumulator, frame: dict, clip_end: float) -> None:
    alpha = frame["alpha"].astype(np.float16).astype(np.float32)   # as the set's half file reads back
    acc.add(frame["depth"], alpha=alpha, clip_end=clip_end)


def read_render_folder(folder) -> RenderedClip:
    """The whole clip of a render folder, converted (module docstring); RenderFolderError when unusable."""
    folder, data = _load(folder)
    conv = _FrameConverter(folder, data)
    frames, warnings, acc = [], [], DepthRangeAccumulator()
    for i in range(len(data["frame_numbers"])):
        out, warn = conv.convert(i, *conv.read(i))
        _depth_add(acc, out, conv.clip_ends[i])
        frames.append(out)
        warnings.extend(warn)
    passes = {k: np.stack([f[k] for f in frames]) for k in SET_PASSES}
    warnings.extend(conv.clip_warnings())
    return RenderedClip(folder, list(data["frame_numbers"]), float(data["fps"]), (conv.w, conv.h),
                        [dict(c) for c in data["cameras"]], passes, acc.range(), _provenance(folder, data),
                        warnings, data)


def convert(folder, out_dir, *, overwrite: bool = False, previews: bool = True,
            progress: Optional[Callable[[int, int], None]] = None) -> ConversionReport:
    """Convert a render folder into a G-buffer set at ``out_dir``, one frame at a time (read, convert,
    write); the manifest is written last. ``progress(done, total)`` is called before the first and after
    every frame (an exception from it, e.g. a cancel, stops the conversion: no manifest)."""
    from .gbuffer_set import GBufferSetWriter

    t0 = time.monotonic()
    folder, data = _load(folder)
    conv = _FrameConverter(folder, data)
    numbers = data["frame_numbers"]
    base = _manifest_base(folder, data, None, _provenance(folder, data))
    writer = GBufferSetWriter(out_dir, base, overwrite=overwrite)
    acc, warnings = DepthRangeAccumulator(), []
    secs = {"read": 0.0, "convert": 0.0, "write": 0.0}
    if progress:
        progress(0, len(numbers))
    for i, frame in enumerate(numbers):
        t = time.monotonic()
        path, passes = conv.read(i)
        t1 = time.monotonic()
        out, warn = conv.convert(i, path, passes)
        _depth_add(acc, out, conv.clip_ends[i])
        t2 = time.monotonic()
        for name in SET_PASSES:
            writer.write_frame(name, frame, out[name])
        t3 = time.monotonic()
        secs["read"] += t1 - t
        secs["convert"] += t2 - t1
        secs["write"] += t3 - t2
        warnings.extend(warn)
        if progress:
            progress(i + 1, len(numbers))
    rng = acc.range()
    if rng is not None:
        writer.base["depth"].update(near=float(rng[0]), far=float(rng[1]), range_rule=DEPTH_RANGE_RULE)
    gset = writer.finish()
    warnings.extend(conv.clip_warnings() + writer.warnings)
    t_prev = time.monotonic()
    if previews:
        from .previews import write_contact_sheet, write_previews

        write_previews(gset)
        write_contact_sheet(gset)
    secs = {k: round(v, 4) for k, v in secs.items()}
    secs.update(previews=round(time.monotonic() - t_prev, 4), total=round(time.monotonic() - t0, 4))
    return ConversionReport(Path(out_dir), list(numbers), (conv.w, conv.h), list(SET_PASSES), rng, warnings, secs)


def convert_render_folder(folder, out_dir, *, overwrite: bool = False, previews: bool = True,
                          progress: Optional[Callable[[int, int], None]] = None) -> Path:
    """:func:`convert`, returning the set folder."""
    return convert(folder, out_dir, overwrite=overwrite, previews=previews, progress=progress).out
