"""Render a Blender scene's G-buffers into a *Blender render folder*, without changing the scene.

Blender only renders; the engine converts. ``export_gbuffers(scene, out_dir, …)`` leaves in ``out_dir``::

    frame_000001.exr …   one multilayer EXR per frame, written by Blender itself (32-bit float)
    render.json          frames, fps, per-frame cameras, view layer, AOV names, colour management …
                         (engine/contract/render_json.py; written last: its presence = complete)

and the engine turns the folder into a G-buffer set (``diffusion-renderer gbuffers RENDER_DIR --out SET``,
``engine.gbuffer.blender_render``) or reads it directly as forward's input. No pixel is read or written
by this module: the normal rotation to camera space, the depth background, the AOV defaults and the
per-clip depth range are all the engine's work (docs/GBUFFER_SET.md, "Blender render folders").

1. **Set-up** (every change through a :class:`~.restore.ChangeLog`): render engine, samples, a narrow
   pixel filter (``filter_width`` 0.01 px by default so edge pixels hold one surface: exact AOVs, unit
   normals), transparent film (alpha = coverage, background alpha 0), no denoising, motion blur,
   border, multiview, freestyle, compositor or sequencer; the Combined, Z and Normal passes; three
   shader AOVs injected into every material (:mod:`.aov_injection`); the render output as a 32-bit
   multilayer EXR with codec :data:`EXR_CODEC`, colour management following the scene.
2. **Per frame**: ``scene.frame_set(f)``, the camera's ``matrix_world``/lens/sensor/clip range recorded,
   ``render.render(write_still=True)`` of the one view layer into a hidden temporary name in
   ``out_dir``, renamed to ``frame_NNNNNN.exr`` once Blender has written it. The previous
   ``render.json`` is removed before the first frame, so an interrupted export is recognisably
   incomplete.
3. **Finally** (also after an error or cancel): the change log restores every setting, pass, AOV,
   material and node group; the frame is set back; "Render Result" is removed again when the file had
   none, and when it had one the export rendered into a slot of its own (:data:`EXPORT_SLOT`) and the
   artist's slot is active again, so the artist's render is untouched.

Only the chosen view layer renders: every other enabled layer is switched off through the change log for
the export (restored afterwards), on every Blender version. Only then is ``render.json`` written (``render_json.write``: validated, atomic).

``progress(done, total, message)`` is called before each frame and may raise to cancel. The export
renders with the scene as context scene (``temp_override``), so image sequences and movies used in
materials follow the frame.

When ``bpy.app.binary_path`` is a real Blender executable (not the ``bpy`` module, where it is ``''``),
``background=None`` exports from a saved copy of the file in a background Blender
(``blender -b copy.blend --python background_runner.py -- job.json``, :mod:`.background_export`), so the
open file is not touched at all; ``export_gbuffers`` then waits for it, while
:func:`start_export_gbuffers` returns a pollable :class:`~.background_export.BackgroundExport`.
``background=False`` forces the in-process path.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import bpy

from .. import compat
from ..contract import render_json
from . import aov_injection
from .render_request import (ExportError, camera_entry, check_output_folder, check_request, frame_numbers_for,
                             frame_size, pick_view_layer)
from .restore import ChangeLog

__all__ = ["ExportError", "export_gbuffers", "start_export_gbuffers", "frame_numbers_for", "camera_entry",
           "EXR_CODEC"]

# The fastest lossless codec for Blender to write (and the engine to read), measured with
# `bin/bench-export --codecs NONE,RLE,ZIP,ZIPS,PIZ` (bpy 5.0.1, Cycles CPU, 512², 1 spp, 3 frames, 2 busy
# cores; export CPU s / MB per frame): NONE 0.61 / 14.7, RLE 0.68 / 6.2, ZIP 0.71 / 2.2, ZIPS 0.77 / 2.4,
# PIZ 0.97 / 2.6. The price is disk space in the job folder (≈ 56 bytes per pixel per frame).
EXR_CODEC = "NONE"
EXPORT_SLOT = "DiffusionRenderer Export"   # the Render Result slot the in-process export renders into


def start_export_gbuffers(*args, **kwargs):
    """See :func:`.background_export.start_export_gbuffers`."""
    from .background_export import start_export_gbuffers as start

    return start(*args, **kwargs)


def _configure(scene, vl, log: ChangeLog, *, engine: str, samples: int, resolution, filter_width):
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
        raise ExportError(f"render engine {engine!r} cannot render G-buffers; choose Cycles or EEVEE "
                          "(Render properties → Render Engine)")
    if resolution is not None:
        w, h = (int(v) for v in resolution)
        if w <= 0 or h <= 0:
            raise ExportError(f"resolution must be positive, got {resolution!r}; fix Output properties → Resolution")
        log.set(r, "resolution_x", w)
        log.set(r, "resolution_y", h)
        log.set(r, "resolution_percentage", 100)
    log.set(r, "film_transparent", True)
    for attr, value in (("use_motion_blur", False), ("use_border", False), ("use_multiview", False),
                        ("use_freestyle", False), ("use_compositing", False), ("use_sequencer", False),
                        ("use_file_extension", True)):
        if hasattr(r, attr):
            log.set(r, attr, value)
    log.snapshot("render.filepath", lambda: r.filepath, lambda v: setattr(r, "filepath", v))  # set per frame
    settings = r.image_settings
    log.snapshot("render.image_settings", lambda: compat.image_format(settings),
                 lambda snap: compat.restore_image_format(settings, snap))
    compat.set_exr_format(settings, multilayer=True, color_depth="32", codec=EXR_CODEC)
    compat.follow_scene_colour_management(settings)
    log.set(vl, "use", True)
    # the one view layer only: Blender renders every enabled layer into the frame's EXR (5.0 then fails with
    # "Each part should have a unique name", 4.2 takes twice the time)
    for other in scene.view_layers:
        if other.name != vl.name and other.use:
            log.set(other, "use", False)
    for attr in ("use_pass_combined", "use_pass_z", "use_pass_normal"):
        log.set(vl, attr, True)
    if getattr(vl, "material_override", None) is not None:
        log.set(vl, "material_override", None)


def colour_management(scene) -> dict:
    """The scene's colour management (informative in render.json: the EXR passes are scene-linear)."""
    vs, ds = scene.view_settings, scene.display_settings
    out = {"display_device": ds.display_device, "view_transform": vs.view_transform, "look": vs.look,
           "exposure": float(vs.exposure), "gamma": float(vs.gamma),
           "sequencer": scene.sequencer_colorspace_settings.name}
    cs = getattr(bpy.data, "colorspace", None)  # 5.0+: the blend file's scene-linear working space
    if cs is not None and getattr(cs, "working_space", ""):
        out["working_space"] = cs.working_space
    return out


# ------------------------------------------------------------------------------------------ main entry
def export_gbuffers(scene, out_dir, *, frame_range=None, resolution=None, samples: int = 1, engine: str = "CYCLES",
                    view_layer=None, filter_width: float | None = 0.01, overwrite: bool = False,
                    background: bool | None = None, blender_binary: str | None = None, progress=None,
                    timeout: float | None = None, source: str | None = None) -> Path:
    """Render ``scene`` into a Blender render folder ``out_dir`` (frame EXRs + render.json); returns it.

    ``frame_range``: None (scene range and step), a tuple ``(start, end)`` inclusive, or any other
    iterable of frame numbers (a list, a range).
    ``resolution``: ``(width, height)`` overriding the scene's (else its resolution × percentage).
    ``samples``: render samples (1 is enough for the data passes; the rgb pass is noisier).
    ``engine``: 'CYCLES' or 'EEVEE'. ``view_layer``: name (default: the context's / first enabled).
    ``filter_width``: pixel filter in px while exporting (None keeps the scene's).
    ``overwrite``: replace the render of a different clip already in ``out_dir``.
    ``background``: None = a background Blender when ``bpy.app.binary_path`` is a real executable,
    True = require it (``blender_binary`` overrides the executable), False = render in this process.
    ``progress``: optional ``callable(done, total, message)``; raising from it cancels.
    ``source``: the provenance source (default: the open .blend file; unsaved files have none).
    Raises :class:`ExportError`; the scene is restored in every case."""
    out_dir = Path(out_dir).resolve()
    frames = check_request(scene, frame_range)
    binary = bpy.app.binary_path if blender_binary is None else blender_binary
    can_bg = bool(binary) and os.path.isfile(binary) and os.access(binary, os.X_OK)
    if background is None:
        background = can_bg and not bpy.app.background
    if background:
        if not can_bg:
            raise ExportError(f"no Blender executable to export in the background (binary_path {binary!r}); "
                              "export in this process instead (background=False)")
        job = start_export_gbuffers(scene, out_dir, frame_range=frames, resolution=resolution, samples=samples,
                                    engine=engine, view_layer=view_layer, filter_width=filter_width,
                                    overwrite=overwrite, blender_binary=binary, source=source)
        return job.wait(progress, timeout)
    return _export_in_process(scene, out_dir, frames=frames, resolution=resolution, samples=samples, engine=engine,
                              view_layer=view_layer, filter_width=filter_width, overwrite=overwrite,
                              progress=progress, source=source)


def _render_frame(scene, vl, tmp: Path, final: Path) -> None:
    scene.render.filepath = str(tmp)
    result = bpy.ops.render.render(write_still=True, layer=vl.name)
    if "FINISHED" not in result or not tmp.is_file():
        raise ExportError(f"rendering frame {scene.frame_current} failed (Blender wrote no {final.name}; see the "
                          "console)")
    os.replace(tmp, final)


def _keep_render_result(log: ChangeLog) -> None:
    """Leave the artist's render in "Render Result" alone: the export renders into a slot of its own
    (:data:`EXPORT_SLOT`, added once, reused), and the slot the artist was looking at is made active again
    afterwards. Without a Render Result there is nothing to keep (it is removed again afterwards)."""
    img = next((i for i in bpy.data.images if i.type == "RENDER_RESULT"), None)
    if img is None:
        return
    slots = img.render_slots
    index = next((i for i, slot in enumerate(slots) if slot.name == EXPORT_SLOT), -1)   # (find() misses it)
    if index < 0:
        slots.new(name=EXPORT_SLOT)
        index = len(slots) - 1
    log.set(slots, "active_index", index)


def _remove_render_results(had_render_result: bool) -> None:
    if had_render_result:
        return
    for img in [i for i in bpy.data.images if i.type == "RENDER_RESULT"]:
        try:
            bpy.data.images.remove(img)
        except (ReferenceError, RuntimeError):
            pass


def _export_in_process(scene, out_dir: Path, *, frames, resolution, samples, engine, view_layer, filter_width,
                       overwrite, progress, source=None) -> Path:
    engine_id = compat.engine_id(engine)
    vl = pick_view_layer(scene, view_layer)
    if source is None and bpy.data.filepath:
        source = bpy.path.abspath(bpy.data.filepath)
    size = tuple(int(v) for v in resolution) if resolution is not None else frame_size(scene)
    check_output_folder(out_dir, source=source, frames=frames, size=size, overwrite=overwrite)
    log = ChangeLog()
    frame_before, subframe_before = scene.frame_current, scene.frame_subframe
    cameras, report, tmp = [], None, None
    had_render_result = any(img.type == "RENDER_RESULT" for img in bpy.data.images)
    t0 = time.perf_counter()
    try:
        _keep_render_result(log)
        _configure(scene, vl, log, engine=engine_id, samples=samples, resolution=resolution,
                   filter_width=filter_width)
        size = frame_size(scene)
        aov_names = aov_injection.choose_aov_names(vl)
        aov_injection.add_view_layer_aovs(vl, aov_names, log)
        report = aov_injection.inject_materials(aov_names, log, engine=engine_id)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / render_json.FILE_NAME).unlink(missing_ok=True)  # incomplete until written again
        # the scene as context scene: render.render(scene=…) of another scene skips parts of the frame
        # update (image sequences / movies in materials would show the context scene's frame)
        with bpy.context.temp_override(scene=scene, view_layer=vl):
            for i, f in enumerate(frames):
                if progress is not None:
                    progress(i, len(frames), f"frame {f}")
                scene.frame_set(f)
                cam = scene.camera
                if cam is None:
                    raise ExportError(f"frame {f}: the scene has no active camera (a camera marker switches it "
                                      "off?); set one in Scene properties → Camera")
                cameras.append(camera_entry(cam, f))
                final = out_dir / render_json.frame_file({}, f)
                tmp = out_dir / f".{final.stem}.partial.exr"
                _render_frame(scene, vl, tmp, final)
                tmp = None
        seconds = time.perf_counter() - t0
        camera_name = scene.camera.name if scene.camera else None
    finally:
        try:
            log.restore()
        finally:
            scene.frame_set(frame_before, subframe=subframe_before)
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            _remove_render_results(had_render_result)
    if progress is not None:
        progress(len(frames), len(frames), "writing render.json")
    r = scene.render
    notes = (report.skipped + report.warnings) if report is not None else []
    data = render_json.new(
        frames=frames, fps=r.fps / r.fps_base, resolution=size, view_layer=vl.name, aovs=aov_names, cameras=cameras,
        scene=scene.name, camera=camera_name, render_engine=engine_id, samples=int(samples),
        filter_width=filter_width, colour_management=colour_management(scene), source=source,
        blender_version=compat.version_string(), seconds=round(seconds, 3), notes=notes or None)
    render_json.write(out_dir, data)
    return out_dir
