"""G-buffer set writing for the exporter: the set's pass table, the per-pass single-layer EXR files and
manifest (docs/GBUFFER_SET.md), the per-clip depth range and the split of Blender's multilayer render
EXRs into camera-space passes. Split from gbuffer_export.py (which orchestrates rendering)."""
from __future__ import annotations

import heapq
import json
import math
import operator
import os
from array import array
from itertools import compress, repeat
from datetime import datetime, timezone
from pathlib import Path


from .. import compat
from . import aov_injection
from .exr_io import write_exr



PASSES = ("rgb", "basecolor", "normal", "depth", "roughness", "metallic", "alpha")
FORMAT = "diffusion-renderer/gbuffer-set"
VERSION = 1
MANIFEST = "manifest.json"
BACKGROUND_DEPTH = 1e10
_BG_THRESHOLD = 1e9
_MAX_SAMPLES_PER_FRAME = 1 << 18
_SPECS = {  # pass → (channels, encoding, dtype)
    "rgb": (("R", "G", "B"), "linear-rec709", "half"),
    "basecolor": (("R", "G", "B"), "linear-rec709", "half"),
    "normal": (("X", "Y", "Z"), "camera-normal", "half"),
    "depth": (("V",), "depth-planar-metric", "float"),
    "roughness": (("V",), "non-color", "half"),
    "metallic": (("V",), "non-color", "half"),
    "alpha": (("V",), "non-color", "half"),
}


class ExportError(RuntimeError):
    """The export could not run; the message says why and what to change. The scene is restored."""


# ------------------------------------------------------------------------------------------ helpers
def frame_numbers_for(scene, frame_range=None) -> list[int]:
    """``None`` → the scene's frame_start..frame_end by frame_step; ``(start, end)`` → inclusive range;
    any other iterable → those frames (sorted, unique)."""
    if frame_range is None:
        frames = list(range(scene.frame_start, scene.frame_end + 1, max(1, scene.frame_step)))
    elif isinstance(frame_range, tuple) and len(frame_range) == 2:
        start, end = (int(v) for v in frame_range)
        if end < start:
            raise ExportError(f"frame range {start}–{end}: the end is before the start")
        frames = list(range(start, end + 1))
    else:
        frames = sorted({int(f) for f in frame_range})
    if not frames:
        raise ExportError("no frames to export (empty frame range)")
    if frames[0] < 0:
        raise ExportError(f"frame {frames[0]}: G-buffer sets need non-negative frame numbers; move the animation "
                          "to start at 0 or later")
    return frames


def _matrix_rows(m) -> list[list[float]]:
    return [[float(v) for v in row] for row in m]


def camera_entry(cam_obj, frame: int) -> dict:
    """The manifest camera block of one frame (the camera as evaluated at the current frame)."""
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


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _dumps(obj, level: int = 0) -> str:
    """JSON with 2-space indentation, lists without objects (frame numbers, matrices) on one line."""
    pad, inner = "  " * level, "  " * (level + 1)
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(str(k))}: {_dumps(v, level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(obj, list) and any(isinstance(v, dict) for v in obj):
        return "[\n" + ",\n".join(inner + _dumps(v, level + 1) for v in obj) + f"\n{pad}]"
    return json.dumps(obj, allow_nan=False)


def _dump_json(path: Path, data: dict) -> None:
    text = _dumps(data) + "\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class _DepthRange:
    """The per-clip depth range rule ``clip-min-p98`` of docs/GBUFFER_SET.md §4, in plain Python:
    near = minimum, far = 98th percentile (linear interpolation, as numpy) of every frame's covered,
    finite pixels; frames with more than 2^18 covered pixels are subsampled (every k-th pixel) for the
    percentile. Samples are kept as float32 (4 bytes each); the percentile needs only the top 2 %."""

    def __init__(self):
        self.samples = array("f")
        self.min = math.inf

    def add(self, depth: array, alpha: array | None, clip_end: float | None):
        thr = min(_BG_THRESHOLD, clip_end * (1 - 1e-6)) if clip_end else _BG_THRESHOLD
        # background: ≤ 0, ≥ 1e9, at clip_end, non-finite (NaN/±Inf fail the comparisons), alpha < 0.5
        keep = map(operator.and_, map(operator.gt, depth, repeat(0.0)), map(operator.lt, depth, repeat(thr)))
        if alpha is not None:
            keep = map(operator.and_, keep, map(operator.ge, alpha, repeat(0.5)))
        valid = array("f", compress(depth, keep))
        if not valid:
            return
        self.min = min(self.min, min(valid))
        step = max(1, -(-len(valid) // _MAX_SAMPLES_PER_FRAME))
        self.samples.extend(valid[::step] if step > 1 else valid)

    def range(self):
        n = len(self.samples)
        if not n:
            return None
        pos = (n - 1) * 0.98
        lo = int(math.floor(pos))
        top = heapq.nlargest(n - lo, self.samples)  # descending: top[n-1-lo] is the lo-th smallest
        s_lo = top[n - 1 - lo]
        s_hi = top[n - 2 - lo] if n - 2 - lo >= 0 else s_lo
        far = s_lo + (s_hi - s_lo) * (pos - lo)
        near = self.min
        if not far > near:
            far = near + max(abs(near) * 1e-3, 1e-6)
        return float(near), float(far)


def _clean(values: array, fill: float) -> tuple[array, int]:
    """NaN/±Inf → ``fill`` (on a copy, only when there are any)."""
    if math.isfinite(sum(values)):  # float32 values: their float64 sum cannot overflow, NaN/Inf propagate
        return values, 0
    out = array("f", values)
    bad = 0
    for i, v in enumerate(out):
        if not math.isfinite(v):
            out[i] = fill
            bad += 1
    return out, bad


# ------------------------------------------------------------------------------------------ output set
class _SetWriter:
    def __init__(self, folder: Path, passes, source: str | None, overwrite: bool, frames, size):
        self.folder = folder
        self.passes = list(passes)
        self.warnings: list[str] = []
        self._started = False
        old = folder / MANIFEST
        if old.is_file() and not overwrite:
            try:
                data = json.loads(old.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ExportError(f"{folder}: holds an unreadable {MANIFEST} ({exc}); choose another folder or "
                                  "overwrite it") from None
            osrc = (data.get("provenance") or {}).get("source")
            same = (data.get("kind", "gbuffer") == "gbuffer" and source and osrc
                    and os.path.normpath(str(osrc)) == os.path.normpath(str(source))
                    and list(data.get("frame_numbers", frames)) == list(frames)
                    and list(data.get("resolution", size)) == list(size))
            if not same:
                raise ExportError(f"{folder}: already holds a set of a different clip ({osrc or 'unknown source'}); "
                                  "choose another output folder or overwrite it")

    def path(self, name: str, frame: int) -> Path:
        return self.folder / name / f"{name}.{frame:04d}.exr"

    def write(self, name: str, frame: int, width: int, height: int, planes: list[array]) -> None:
        if not self._started:
            self.folder.mkdir(parents=True, exist_ok=True)
            old = self.folder / MANIFEST
            if old.is_file():
                old.unlink()
            self._started = True
        chans, enc, dtype = _SPECS[name]
        fill = BACKGROUND_DEPTH if name == "depth" else 0.0
        out = {}
        for c, plane in zip(chans, planes):
            plane, bad = _clean(plane, fill)
            if bad:
                self.warnings.append(f"{name} frame {frame}: {bad} NaN/Inf value(s) written as {fill:g}")
            out[c] = plane
        write_exr(self.path(name, frame), width, height, out, dtype=dtype, compression="ZIP")

    def pass_entries(self) -> dict:
        return {n: {"path": f"{n}/{n}.####.exr", "channels": list(_SPECS[n][0]), "encoding": _SPECS[n][1],
                    "dtype": _SPECS[n][2]} for n in PASSES if n in self.passes}


# ------------------------------------------------------------------------------------------ splitting
def _find(chans: dict, layer_prefix: str, names, suffix: str):
    for n in names:
        key = f"{layer_prefix}{n}.{suffix}"
        if key in chans:
            return chans[key]
    for n in names:  # a file without the view-layer prefix (single-layer render, other writers)
        for key, val in chans.items():
            if key.endswith(f".{n}.{suffix}") or key == f"{n}.{suffix}":
                return val
    return None


def _normals_to_camera(nx: array, ny: array, nz: array, r_wc) -> list[array]:
    """World-space normals → camera space (``n_cam = R_wc · n_world``), renormalised (anti-aliased
    edges), zero vectors (background) kept zero. One plain loop: background pixels cost a test only."""
    (a, b, c), (d, e, f), (g, h, i) = r_wc
    n = len(nx)
    xs, ys, zs = array("f", bytes(4 * n)), array("f", bytes(4 * n)), array("f", bytes(4 * n))
    sqrt = math.sqrt
    for k, (x, y, z) in enumerate(zip(nx, ny, nz)):
        if x or y or z:
            cx, cy, cz = a * x + b * y + c * z, d * x + e * y + f * z, g * x + h * y + i * z
            q = cx * cx + cy * cy + cz * cz
            if q > 1e-16:  # (NaN fails this test too)
                s = 1.0 / sqrt(q)
                xs[k], ys[k], zs[k] = cx * s, cy * s, cz * s
    return [xs, ys, zs]


def _split_frame(chans: dict, vl_name: str, aov_names: dict, r_wc, passes, width: int, height: int) -> dict:
    """The rendered channels of one frame → {pass: [planes]} in the set's conventions."""
    pre = vl_name + "."
    npx = width * height

    def need(canonical_or_aov, suffix, aov=False):
        names = (canonical_or_aov,) if aov else compat.pass_layer_names(canonical_or_aov)
        v = _find(chans, pre, names, suffix)
        if v is None:
            raise ExportError(f"the render has no {canonical_or_aov}.{suffix} channel (found: "
                              f"{', '.join(sorted(chans)[:12])}…)")
        return v

    alpha = need("combined", "A")
    out = {}
    if "rgb" in passes:
        out["rgb"] = [need("combined", c) for c in "RGB"]
    if "alpha" in passes:
        out["alpha"] = [alpha]
    if "depth" in passes:
        depth = need("depth", "Z")
        # uncovered pixels are background: 1e10 as Cycles writes it (EEVEE writes ≈ clip_end there)
        empty = list(compress(range(npx), map(operator.eq, alpha, repeat(0.0))))
        if empty and any(depth[i] < _BG_THRESHOLD for i in empty):
            depth = array("f", depth)
            for i in empty:
                depth[i] = BACKGROUND_DEPTH
        out["depth"] = [depth]
    if "normal" in passes:
        out["normal"] = _normals_to_camera(*(need("normal", c) for c in "XYZ"), r_wc)
    want_aov = [p for p in ("basecolor", "roughness", "metallic") if p in passes]
    if want_aov:
        bc_a = _find(chans, pre, (aov_names["basecolor"],), "A")
        # pixels covered (Combined alpha) beyond the AOV coverage: objects without a (node) material;
        # they get the defaults, weighted by the missing coverage (usually few pixels: sparse update)
        fill = []
        if bc_a is not None and any(map(operator.gt, alpha, bc_a)):
            idx = list(compress(range(len(alpha)), map(operator.gt, alpha, bc_a)))
            fill = [(i, alpha[i] - bc_a[i]) for i in idx]
        defaults = aov_injection.DEFAULTS

        def filled(plane, dv):
            if not fill or not dv:
                return plane
            plane = array("f", plane)
            for i, m in fill:
                plane[i] += m * dv
            return plane

        if "basecolor" in passes:
            out["basecolor"] = [filled(need(aov_names["basecolor"], c, aov=True), defaults["basecolor"][ci])
                                for ci, c in enumerate("RGB")]
        for key in ("roughness", "metallic"):
            if key not in passes:
                continue
            p = _find(chans, pre, (aov_names[key],), "X")
            if p is None:
                p = _find(chans, pre, (aov_names[key],), "V")
            if p is None:
                p = need(aov_names[key], "R", aov=True)
            out[key] = [filled(p, defaults[key])]
    return out


# ------------------------------------------------------------------------------------------ set-up


def check_request(scene, passes, frame_range) -> tuple[list, list]:
    """Validate an export request: (passes, frame numbers), or :class:`ExportError` naming the fix."""
    passes = list(PASSES if passes is None else passes)
    unknown = [p for p in passes if p not in PASSES]
    if unknown:
        raise ExportError(f"unknown pass(es) {unknown}; known: {', '.join(PASSES)}")
    if scene.camera is None:
        raise ExportError(f"scene {scene.name!r} has no active camera; set one (Scene properties → Camera)")
    return passes, frame_numbers_for(scene, frame_range)
