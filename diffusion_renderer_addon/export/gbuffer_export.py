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

import os
import shutil
import tempfile
import time
from pathlib import Path

import bpy

from .. import compat
from . import aov_injection
from .exr_io import read_exr
from .restore import ChangeLog

__all__ = ["PASSES", "ExportError", "export_gbuffers", "start_export_gbuffers", "frame_numbers_for", "camera_entry"]

from .set_writer import (check_request, ExportError, FORMAT, MANIFEST, PASSES, VERSION, camera_entry, frame_numbers_for, _DepthRange,
                         _SetWriter, _dump_json, _find, _split_frame, _utc_now)


def start_export_gbuffers(*args, **kwargs):
    """See :func:`.background_export.start_export_gbuffers`."""
    from .background_export import start_export_gbuffers as start

    return start(*args, **kwargs)


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
    passes, frames = check_request(scene, passes, frame_range)
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
