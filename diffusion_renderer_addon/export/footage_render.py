"""Blender renders footage frames to half-float linear EXR — used by :mod:`.footage_export` only when the
engine cannot read the source itself (a colour space that needs Blender's colour management, image files
that are not one numbered sequence). A temporary scene (removed afterwards) holds one sequencer strip with
the source's content and colour space and renders it frame by frame with ``write_still`` under
``bpy.context.temp_override(scene=…)`` — ``render.render(scene=…)`` on a scene other than the context
scene gives black frames for movies and image sequences (4.2 and 5.0), the override does not. The
sequencer works in linear, view transform *Standard*; EXR output is scene-linear."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import bpy

from .. import compat

__all__ = ["render_frames"]


def _set_fps(tmp, fps: float) -> None:
    r = tmp.render
    if abs(fps - round(fps)) < 1e-6:
        r.fps, r.fps_base = int(round(fps)), 1.0
    elif abs(fps * 1.001 - round(fps * 1.001)) < 1e-3:  # NTSC rates: 29.97 = 30 / 1.001
        r.fps, r.fps_base = int(round(fps * 1.001)), 1.001
    else:
        r.fps = max(1, int(round(fps)))
        r.fps_base = r.fps / fps


def _setup_scene(plan):
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
    compat.set_exr_format(r.image_settings, multilayer=False, color_depth="16", codec="ZIP", color_mode="RGB")
    for name in ("Linear Rec.709", "Linear"):
        try:
            tmp.sequencer_colorspace_settings.name = name
            break
        except TypeError:
            continue
    se = tmp.sequence_editor_create()
    if plan.kind == "movie":
        strip = compat.vse_new_movie(se, "footage", plan.movie, 1, 1)
    else:
        strip = compat.vse_new_image(se, "footage", os.path.join(plan.directory, plan.files[0]), 1, 1)
        for fn in plan.files[1:]:
            strip.elements.append(fn)
    if hasattr(strip, "fit_method"):
        strip.fit_method = "ORIGINAL"
    if hasattr(strip, "colorspace_settings"):
        try:
            strip.colorspace_settings.name = plan.colorspace
        except TypeError:
            pass
    return tmp


def render_frames(plan, pairs, folder: Path, progress=None, error=RuntimeError) -> None:
    """Blender renders ``pairs`` [(content index, frame number)] to ``folder/frame.####.exr`` (half float,
    linear) through a temporary scene; files appear under their final names only when complete."""
    folder.mkdir(parents=True, exist_ok=True)
    had_render_result = any(img.type == "RENDER_RESULT" for img in bpy.data.images)
    tmp_dir = Path(tempfile.mkdtemp(prefix=".dr_footage_", dir=str(folder)))
    tmp = _setup_scene(plan)
    try:
        with bpy.context.temp_override(scene=tmp):
            for i, (content, frame) in enumerate(pairs):
                if progress is not None:
                    progress(i, len(pairs), f"frame {frame}")
                tmp.frame_set(content)
                target = tmp_dir / f"{frame:06d}.exr"
                tmp.render.filepath = str(target)
                result = bpy.ops.render.render(write_still=True)
                if "FINISHED" not in result or not target.is_file():
                    raise error(f"{plan.label}: rendering frame {frame} failed (see the console)")
                os.replace(target, folder / f"frame.{frame:04d}.exr")
    finally:
        bpy.data.scenes.remove(tmp)
        if not had_render_result:
            for img in [i for i in bpy.data.images if i.type == "RENDER_RESULT"]:
                bpy.data.images.remove(img)
        shutil.rmtree(tmp_dir, ignore_errors=True)
