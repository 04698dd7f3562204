"""Render a Blender scene into a G-buffer set (docs/GBUFFER_SET.md), without changing the scene.

``export_gbuffers(scene, out_dir, …)`` writes ``rgb``, ``basecolor``, ``normal``, ``depth``,
``roughness``, ``metallic`` and ``alpha`` as one single-layer EXR per pass per frame plus
``manifest.json`` (written last; producer ``"blender"``):

1. **Set-up** (every change through a :class:`~.restore.ChangeLog`): render engine, samples, a narrow
   pixel filter (``filter_width`` 0.01 px by default so edge pixels hold one surface: exact AOVs, unit
   normals), transparent film (alpha = coverage, background alpha 0), no denoising, motion blur,
   border, multiview, freestyle, compositor or sequencer; the Combined, Z and Normal passes; three
   shader AOVs injected into every material (:mod:`.aov_injection`); the render output as a 32-bit
   multilayer EXR (codec NONE: fastest to write and to read back) into a temporary folder.
2. **Per frame**: ``scene.frame_set(f)``, the camera's ``matrix_world``/lens/sensor/clip range recorded,
   ``render.render(write_still=True)`` of the one view layer, the multilayer EXR read back with the
   stdlib reader of :mod:`.exr_io` and split:

   | pass | from | conversion |
   |---|---|---|
   | rgb | Combined RGB | linear, as rendered (premultiplied) |
   | alpha | Combined A | coverage |
   | basecolor / roughness / metallic | the AOVs | + default × (alpha − AOV coverage) for surfaces without an injectable material |
   | normal | Normal (world space) | ``n_cam = R_wc · n_world``, ``R_wc = matrix_world.to_3x3().normalized().transposed()``, renormalised; background (0, 0, 0) |
   | depth | Z (planar, metric) | float32; background (alpha 0) 1e10 as Cycles writes it (EEVEE writes ≈ clip_end: replaced); NaN/Inf → 1e10 |

   Each file is written under a temporary name and renamed; the old ``manifest.json`` of the folder is
   removed before the first file.
3. **Finally** (also after an error or cancel): the change log restores every setting, pass, AOV,
   material and node group; the frame is set back; the temporary folder is removed. Only then is
   ``manifest.json`` written, with the per-clip depth range (``clip-min-p98``), the per-frame cameras and
   the provenance.

Rendering is in-process and blocking; ``progress(done, total, message)`` is called before each frame and
may raise to cancel (the scene is restored, the set is left without a manifest, i.e. incomplete).

EXR files are written by :mod:`.exr_io` (stdlib only) — see its docstring for why not Blender's image
writers. Per-pixel work (normal rotation, half packing, ZIP) is plain Python on the main thread; on a 2-core
CPU it costs ≈ 5 ms per 64×64 frame and ≈ 0.25 s per 512×512 frame.

Also "Render Result" holds the export's last frame afterwards (it is removed again when the file had
none). The export renders with the scene as context scene (``temp_override``), so image sequences and
movies used in materials follow the frame.

When ``bpy.app.binary_path`` is a real Blender executable (not the ``bpy`` module, where it is ``''``),
``background=None`` exports from a saved copy of the file in a background Blender
(``blender -b copy.blend --python background_runner.py -- job.json``), so the open file is not
touched at all; ``export_gbuffers`` then waits for it (blocking), while :func:`start_export_gbuffers`
returns a :class:`BackgroundExport` to ``poll()`` from a modal operator or timer (UI stays live).
``background=False`` forces the in-process path.
"""
from __future__ import annotations

import heapq
import json
import math
import operator
import os
import shutil
import subprocess
import tempfile
import time
from array import array
from itertools import compress, repeat
from datetime import datetime, timezone
from pathlib import Path

import bpy

from .. import compat
from . import aov_injection
from .exr_io import read_exr, write_exr
from .restore import ChangeLog

__all__ = ["PASSES", "ExportError", "export_gbuffers", "start_export_gbuffers", "BackgroundExport",
           "frame_numbers_for", "camera_entry"]

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
def _pick_view_layer(scene, view_layer):
    if view_layer is not None:
        vl = scene.view_layers.get(view_layer) if isinstance(view_layer, str) else view_layer
        if vl is None:
            raise ExportError(f"scene {scene.name!r} has no view layer {view_layer!r}")
        return vl
    ctx_vl = getattr(bpy.context, "view_layer", None)
    if ctx_vl is not None and getattr(bpy.context, "scene", None) == scene:
        return ctx_vl
    return next((v for v in scene.view_layers if v.use), scene.view_layers[0])


def _configure(scene, vl, log: ChangeLog, *, engine: str, samples: int, resolution, filter_width, tmp_dir: Path):
    r = scene.render
    log.set(r, "engine", engine)
    if engine == "CYCLES":
        cy = scene.cycles
        log.set(cy, "samples", int(samples))
        log.set(cy, "use_denoising", False)
        if filter_width is not None:
            log.set(cy, "filter_width", float(filter_width))
        if hasattr(vl, "samples"):
            log.set(vl, "samples", 0)
    elif compat.is_eevee(engine):
        ee = scene.eevee
        log.set(ee, "taa_render_samples", int(samples))
        if filter_width is not None:
            log.set(r, "filter_size", max(float(filter_width), 0.0))
    else:
        raise ExportError(f"render engine {engine!r} cannot render G-buffers; use CYCLES or EEVEE")
    if resolution is not None:
        w, h = (int(v) for v in resolution)
        if w <= 0 or h <= 0:
            raise ExportError(f"resolution must be positive, got {resolution!r}")
        log.set(r, "resolution_x", w)
        log.set(r, "resolution_y", h)
        log.set(r, "resolution_percentage", 100)
    log.set(r, "film_transparent", True)
    for attr, value in (("use_motion_blur", False), ("use_border", False), ("use_multiview", False),
                        ("use_freestyle", False), ("use_compositing", False), ("use_sequencer", False)):
        if hasattr(r, attr):
            log.set(r, attr, value)
    log.set(r, "filepath", str(tmp_dir / "frame"))
    settings = r.image_settings
    log.snapshot("render.image_settings", lambda: compat.image_format(settings),
                 lambda snap: compat.restore_image_format(settings, snap))
    compat.set_exr_format(settings, multilayer=True, color_depth="32", codec="NONE")
    log.set(vl, "use", True)
    for attr in ("use_pass_combined", "use_pass_z", "use_pass_normal"):
        log.set(vl, attr, True)
    if getattr(vl, "material_override", None) is not None:
        log.set(vl, "material_override", None)


def _frame_size(scene) -> tuple[int, int]:
    r = scene.render
    return (max(1, int(r.resolution_x * r.resolution_percentage / 100)),
            max(1, int(r.resolution_y * r.resolution_percentage / 100)))


# ------------------------------------------------------------------------------------------ main entry
def export_gbuffers(scene, out_dir, *, frame_range=None, resolution=None, samples: int = 1, engine: str = "CYCLES",
                    passes=None, view_layer=None, filter_width: float | None = 0.01, overwrite: bool = False,
                    background: bool | None = None, blender_binary: str | None = None, progress=None,
                    timeout: float | None = None, source: str | None = None) -> Path:
    """Render ``scene`` into a G-buffer set in ``out_dir`` and return the folder.

    ``frame_range``: None (scene range and step), a tuple ``(start, end)`` inclusive, or any other
    iterable of frame numbers (a list, a range).
    ``resolution``: ``(width, height)`` overriding the scene's (else its resolution × percentage).
    ``samples``: render samples (1 is enough for the data passes; the rgb pass is noisier).
    ``engine``: 'CYCLES' or 'EEVEE'. ``passes``: subset of :data:`PASSES` (default all).
    ``filter_width``: pixel filter in px while exporting (None keeps the scene's).
    ``overwrite``: replace a set of a different clip already in ``out_dir``.
    ``background``: None = a background Blender when ``bpy.app.binary_path`` is a real executable,
    True = require it, False = render in this process (settings restored afterwards).
    ``progress``: optional ``callable(done, total, message)``. ``source``: the provenance source
    (default: the open .blend file; unsaved files have none).
    Raises :class:`ExportError`; the scene is restored in every case."""
    out_dir = Path(out_dir).resolve()
    passes = list(PASSES if passes is None else passes)
    unknown = [p for p in passes if p not in PASSES]
    if unknown:
        raise ExportError(f"unknown pass(es) {unknown}; known: {', '.join(PASSES)}")
    if scene.camera is None:
        raise ExportError(f"scene {scene.name!r} has no active camera; set one (Scene properties → Camera)")
    frames = frame_numbers_for(scene, frame_range)
    binary = bpy.app.binary_path if blender_binary is None else blender_binary
    can_bg = bool(binary) and os.path.isfile(binary) and os.access(binary, os.X_OK)
    if background is None:
        background = can_bg and not bpy.app.background
    if background:
        if not can_bg:
            raise ExportError(f"no Blender executable to export in the background (binary_path {binary!r}); "
                              "export in this process instead (background=False)")
        job = start_export_gbuffers(scene, out_dir, frame_range=frames, resolution=resolution, samples=samples,
                                    engine=engine, passes=passes, view_layer=view_layer, filter_width=filter_width,
                                    overwrite=overwrite, blender_binary=binary, source=source)
        return job.wait(progress, timeout)
    return _export_in_process(scene, out_dir, frames=frames, resolution=resolution, samples=samples, engine=engine,
                              passes=passes, view_layer=view_layer, filter_width=filter_width, overwrite=overwrite,
                              progress=progress, source=source)


def _render_frame(scene, vl, path: Path) -> None:
    scene.render.filepath = str(path)
    result = bpy.ops.render.render(write_still=True, layer=vl.name)
    if "FINISHED" not in result or not path.is_file():
        raise ExportError(f"rendering frame {scene.frame_current} failed (no {path.name} written; see the console)")


def _export_in_process(scene, out_dir: Path, *, frames, resolution, samples, engine, passes, view_layer,
                       filter_width, overwrite, progress, source=None) -> Path:
    engine_id = compat.engine_id(engine)
    vl = _pick_view_layer(scene, view_layer)
    if source is None and bpy.data.filepath:
        source = bpy.path.abspath(bpy.data.filepath)
    size = tuple(int(v) for v in resolution) if resolution is not None else _frame_size(scene)
    writer = _SetWriter(out_dir, passes, source, overwrite, frames, size)
    log = ChangeLog()
    frame_before, subframe_before = scene.frame_current, scene.frame_subframe
    tmp_dir = Path(tempfile.mkdtemp(prefix="dr_gbuffer_"))
    cameras, depth_range, report = [], _DepthRange(), None
    had_render_result = any(img.type == "RENDER_RESULT" for img in bpy.data.images)
    t0 = time.perf_counter()
    try:
        _configure(scene, vl, log, engine=engine_id, samples=samples, resolution=resolution,
                   filter_width=filter_width, tmp_dir=tmp_dir)
        width, height = _frame_size(scene)
        aov_names = aov_injection.choose_aov_names(vl)
        aov_injection.add_view_layer_aovs(vl, aov_names, log)
        report = aov_injection.inject_materials(aov_names, log, engine=engine_id)
        # Everything runs on the calling (main) thread. A worker thread that split frame i while frame i+1
        # rendered was ≈ 20 % faster but crashed Blender 4.5.15 (segfault in the worker's pure-Python
        # code during render.render): Blender's render does not make Python threads safe.
        vl_name = vl.name

        def process(f, exr, r_wc, clip_end):
            w, h, chans = read_exr(exr)
            exr.unlink()
            if (w, h) != (width, height):
                raise ExportError(f"frame {f}: rendered {w}×{h}, expected {width}×{height}")
            planes = _split_frame(chans, vl_name, aov_names, r_wc, passes, w, h)
            for name, pl in planes.items():
                writer.write(name, f, w, h, pl)
            if "depth" in planes:
                depth_range.add(planes["depth"][0], _find(chans, vl_name + ".", compat.pass_layer_names("combined"), "A"),
                                clip_end)

        # the scene as context scene: render.render(scene=…) of another scene skips parts of the frame
        # update (image sequences / movies in materials would show the context scene's frame)
        with bpy.context.temp_override(scene=scene, view_layer=vl):
            for i, f in enumerate(frames):
                if progress is not None:
                    progress(i, len(frames), f"frame {f}")
                scene.frame_set(f)
                cam = scene.camera
                if cam is None:
                    raise ExportError(f"frame {f}: the scene has no active camera")
                cameras.append(camera_entry(cam, f))
                r_wc = [tuple(row) for row in cam.matrix_world.to_3x3().normalized().transposed()]
                exr = tmp_dir / f"frame_{f:06d}.exr"
                _render_frame(scene, vl, exr)
                process(f, exr, r_wc, cameras[-1]["clip_end"])
    finally:
        try:
            log.restore()
        finally:
            scene.frame_set(frame_before, subframe=subframe_before)
            shutil.rmtree(tmp_dir, ignore_errors=True)
            if not had_render_result:  # the render created the "Render Result" image: remove it again
                for img in [i for i in bpy.data.images if i.type == "RENDER_RESULT"]:
                    try:
                        bpy.data.images.remove(img)
                    except (ReferenceError, RuntimeError):
                        pass
    if progress is not None:
        progress(len(frames), len(frames), "writing manifest")
    r = scene.render
    manifest = {
        "format": FORMAT, "version": VERSION, "kind": "gbuffer",
        "frame_numbers": frames, "fps": r.fps / r.fps_base, "resolution": [width, height],
        "passes": writer.pass_entries(),
    }
    if "alpha" in passes:
        manifest["alpha"] = "alpha"
    if "depth" in passes:
        depth = {"kind": "metric", "invert": False}
        rng = depth_range.range()
        if rng is not None:
            depth.update(near=rng[0], far=rng[1], range_rule="clip-min-p98")
        manifest["depth"] = depth
    manifest["camera"] = cameras
    settings = {"scene": scene.name, "view_layer": vl.name, "camera": scene.camera.name if scene.camera else None,
                "render_engine": engine_id, "samples": int(samples), "filter_width": filter_width,
                "frames": [frames[0], frames[-1]], "aovs": aov_names,
                "seconds": round(time.perf_counter() - t0, 3)}
    prov = {"producer": "blender", "blender_version": compat.version_string(), "created": _utc_now(),
            "settings": settings}
    if source:
        prov["source"] = source
    if report is not None and (report.skipped or report.warnings):
        prov["notes"] = report.skipped + report.warnings
    if writer.warnings:
        prov.setdefault("notes", []).extend(writer.warnings)
    manifest["provenance"] = prov
    _dump_json(out_dir / MANIFEST, manifest)
    return out_dir


# ------------------------------------------------------------------------------------------ background
class BackgroundExport:
    """A G-buffer export running in a background Blender on a saved copy of the open file.

    Start it with :func:`start_export_gbuffers`; then either ``wait(progress)`` (blocking) or, from a
    modal operator / timer, ``poll()`` regularly: it returns the latest ``(done, total, message)`` and
    never blocks (a reader thread collects the child's stdout into a queue; no bpy access off the main
    thread). ``finished`` tells when the child has exited; ``result()`` then returns the set folder or
    raises :class:`ExportError`. ``cancel()`` terminates the child; the folder is left without a
    manifest (incomplete). The open file is never modified."""

    def __init__(self, cmd: list[str], tmp_dir: Path, out_dir: Path):
        import queue
        import threading

        self.out_dir = out_dir
        self._tmp_dir = tmp_dir
        self._queue: "queue.Queue" = queue.Queue()
        self._tail: list[str] = []
        self._result = None
        self._progress = (0, 0, "starting Blender")
        self._cancelled = False
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     errors="replace", stdin=subprocess.DEVNULL)
        self._reader = threading.Thread(target=self._read, name="dr-gbuffer-bg", daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def _drain(self):
        import queue

        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return
            if line is None:
                continue
            if line.startswith("DR_PROGRESS "):
                try:
                    msg = json.loads(line[len("DR_PROGRESS "):])
                    self._progress = (int(msg["done"]), int(msg["total"]), str(msg.get("message", "")))
                except (ValueError, KeyError):
                    pass
            elif line.startswith("DR_RESULT "):
                try:
                    self._result = json.loads(line[len("DR_RESULT "):])
                except ValueError:
                    self._result = {"ok": False, "error": line}
            else:
                self._tail = (self._tail + [line])[-40:]

    @property
    def finished(self) -> bool:
        return self.proc.poll() is not None and not self._reader.is_alive()

    def poll(self) -> tuple[int, int, str]:
        """The latest progress ``(done, total, message)``; non-blocking."""
        self._drain()
        return self._progress

    def cancel(self) -> None:
        self._cancelled = True
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(10)  # stdout closes with the child
        self._cleanup()

    def wait(self, progress=None, timeout: float | None = None) -> Path:
        """Block until the child exits, calling ``progress(done, total, message)`` on every update."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = None
        try:
            while not self.finished:
                cur = self.poll()
                if progress is not None and cur != last:
                    progress(*cur)
                    last = cur
                if deadline is not None and time.monotonic() > deadline:
                    self.cancel()
                    raise ExportError(f"background export timed out after {timeout:g} s")
                time.sleep(0.05)
        except BaseException:
            self.cancel()
            raise
        cur = self.poll()
        if progress is not None and cur != last:
            progress(*cur)
        return self.result()

    def result(self) -> Path:
        if not self.finished:
            raise ExportError("the background export is still running")
        self._drain()
        self._cleanup()
        if self._cancelled:
            raise ExportError(f"export cancelled; {self.out_dir} is incomplete (no manifest)")
        if self._result is None or not self._result.get("ok"):
            why = (self._result or {}).get("error") or f"exit code {self.proc.returncode}"
            raise ExportError(f"background export failed: {why}\n" + "\n".join(self._tail[-15:]))
        return Path(self._result["out_dir"])

    def _cleanup(self):
        shutil.rmtree(self._tmp_dir, ignore_errors=True)


def start_export_gbuffers(scene, out_dir, *, frame_range=None, resolution=None, samples: int = 1,
                          engine: str = "CYCLES", passes=None, view_layer=None, filter_width: float | None = 0.01,
                          overwrite: bool = False, blender_binary: str | None = None,
                          source: str | None = None) -> BackgroundExport:
    """Save a copy of the open file and start exporting it in ``blender -b`` (returns at once). The
    options are those of :func:`export_gbuffers`. Raises ExportError when there is no Blender executable
    (the ``bpy`` module build: use ``export_gbuffers(..., background=False)``)."""
    binary = bpy.app.binary_path if blender_binary is None else blender_binary
    if not (binary and os.path.isfile(binary) and os.access(binary, os.X_OK)):
        raise ExportError(f"no Blender executable to export in the background (binary_path {binary!r}); "
                          "export in this process instead (background=False)")
    passes = list(PASSES if passes is None else passes)
    unknown = [p for p in passes if p not in PASSES]
    if unknown:
        raise ExportError(f"unknown pass(es) {unknown}; known: {', '.join(PASSES)}")
    if scene.camera is None:
        raise ExportError(f"scene {scene.name!r} has no active camera; set one (Scene properties → Camera)")
    frames = frame_numbers_for(scene, frame_range)
    out_dir = Path(out_dir).resolve()
    vl = _pick_view_layer(scene, view_layer)
    tmp_dir = Path(tempfile.mkdtemp(prefix="dr_gbuffer_bg_"))
    try:
        blend = tmp_dir / "scene_copy.blend"
        bpy.ops.wm.save_as_mainfile(filepath=str(blend), copy=True, relative_remap=True)
        job = {"scene": scene.name, "out_dir": str(out_dir), "frames": frames,
               "resolution": list(resolution) if resolution is not None else None, "samples": samples,
               "engine": engine, "passes": passes, "view_layer": vl.name, "filter_width": filter_width,
               "overwrite": overwrite,
               "source": source or (bpy.path.abspath(bpy.data.filepath) if bpy.data.filepath else None)}
        job_path = tmp_dir / "job.json"
        job_path.write_text(json.dumps(job), encoding="utf-8")
        runner = Path(__file__).with_name("background_runner.py")
        # no --factory-startup: the user's preferences hold the Cycles GPU set-up
        cmd = [binary, "-b", str(blend), "--python-exit-code", "3", "--python", str(runner), "--", str(job_path)]
        return BackgroundExport(cmd, tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
