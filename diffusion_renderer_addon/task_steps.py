"""What each task exports and submits: a step takes the context and the previous step's finished job and
returns ``(kind, params, job_dir)`` for the engine (Neural Render: Blender renders a render folder, then a
forward job; Delight: the footage as it is, an inverse job; Relight Preview: a forward job per HDRI list on a
G-buffer set). Also the job folder rule and the jobs a task plans, for the checks made before any export."""
from __future__ import annotations

import json
import os
import time

import bpy

from . import hdri_list, properties, results, task_progress
from . import preferences as prefs_mod
from .contract import gbuffer_set

FORWARD_PASSES = gbuffer_set.FORWARD_PASSES   # what a forward job reads


def settings(context):
    return context.scene.diffusion_renderer


def abspath(path: str) -> str:
    return os.path.abspath(bpy.path.abspath(path)) if path else path


def model_name(name: str) -> str:
    """A published model name stays as it is; a folder becomes absolute."""
    name = (name or "").strip()
    if name and (os.sep in name or "/" in name or name.startswith("//") or os.path.isdir(abspath(name))):
        return abspath(name)
    return name


def job_folder(context, task: str) -> str:
    """A new job folder under the scene's Output Folder (default ``//neural/`` beside the saved .blend;
    ValueError on an unsaved file, see :func:`.results.output_root`)."""
    base = results.output_root(context)
    path = os.path.join(base, f"{task}-{time.strftime('%Y%m%d-%H%M%S')}-{int(time.time() * 1000) % 1000:03d}")
    os.makedirs(path, exist_ok=True)
    return path


def planned_jobs(context, steps) -> list:
    """The (kind, params without inputs) of each job the steps will submit, for :func:`.validate.check_task`."""
    s, out = settings(context), []
    for step in steps:
        if step in (delight_step, delight_for_relight):
            passes = [p for p in properties.PASS_NAMES if p in properties.passes(s)
                      or (step is delight_for_relight and p in FORWARD_PASSES)]
            out.append(("inverse", {**common_params(context), "passes": passes, "model": model_name(s.inverse_model)}))
        else:
            extra = {"camera_follow": bool(s.camera_follow)} if step is render_step else None
            out.append(("forward", {k: v for k, v in forward_params(context, None, None, extra).items()
                                    if v is not None}))
    return out


def common_params(context) -> dict:
    return {**properties.shared_params(settings(context)), **prefs_mod.job_options(prefs_mod.get(context))}


def delight_step(context, prev, required=()):
    """De-light the chosen footage into the ticked passes plus ``required`` ones."""
    from .export import export_footage
    s = settings(context)
    folder = job_folder(context, "delight")
    source = {"CLIP": s.movie_clip, "IMAGE": s.image, "STRIP": None}[s.footage_source]
    if s.footage_source != "STRIP" and source is None:
        raise ValueError(f"Choose {'a Movie Clip' if s.footage_source == 'CLIP' else 'an Image Sequence'} to delight "
                         f"in Delight › {'Clip' if s.footage_source == 'CLIP' else 'Image'}.")
    chosen = properties.passes(s)
    passes = [p for p in properties.PASS_NAMES if p in chosen or p in required]
    if not passes:
        raise ValueError("Tick at least one pass to compute in the Delight panel.")
    # the engine reads the footage itself (movie file or sequence pattern, frame numbers, rate, colour
    # space); Blender renders frames into <job>/footage only when its colour management must be applied
    footage = export_footage(source, os.path.join(folder, "footage"), scene=context.scene)
    params = {**common_params(context), **footage["params"], "passes": passes, "model": model_name(s.inverse_model)}
    return "inverse", params, folder


def delight_for_relight(context, prev):
    """Relight preview's first step: every pass the forward model needs, whatever is ticked."""
    return delight_step(context, prev, required=FORWARD_PASSES)


def set_passes(folder: str):
    """The pass names of the G-buffer set in ``folder``; None when it has no readable manifest."""
    try:
        with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as fh:
            return set((json.load(fh) or {}).get("passes") or {})
    except (OSError, ValueError, AttributeError):
        return None


def forward_params(context, gbuffers, hdris, extra=None) -> dict:
    s = settings(context)
    return {**common_params(context), "gbuffers": gbuffers, "hdri": hdris, "model": model_name(s.forward_model),
            "lora_scale": s.lora_scale, "guidance": properties.guidance(s), "rotate_light": s.rotate_light, **(extra or {})}


def render_step(context, prev):
    """Blender renders the scene's G-buffers into a render folder (frame EXRs + render.json); the forward
    job reads that folder itself (the engine converts it, docs/GBUFFER_SET.md). Light Follows World
    (``camera_follow``, on by default): the engine turns the light with the folder's per-frame cameras, so it
    stays fixed in the world as Blender's World does; the World's Mapping rotation and Background strength
    are its env_rotation / env_strength (docs/ENVMAP.md, "Relation to Blender world coordinates")."""
    from .export import export_environment, export_gbuffers
    s = settings(context)
    folder = job_folder(context, "render")
    render_dir = export_gbuffers(context.scene, os.path.join(folder, "render"), samples=s.render_samples,
                                 progress=task_progress.export_progress(context))
    extra = {"camera_follow": bool(s.camera_follow)}
    if s.hdri_source == "WORLD":
        env = export_environment(context.scene, os.path.join(folder, "env"))
        hdri = env["path"]
        extra.update({"env_rotation": float(env.get("env_rotation", 180.0)),
                      "env_strength": float(env.get("env_strength", 1.0)),
                      "env_flip": bool(env.get("env_flip", False))})
    else:
        hdri = abspath(s.hdri_path)
        if not hdri or not os.path.isfile(hdri):
            raise ValueError(f"The HDRI file {s.hdri_path} was not found; choose another in Neural Render › HDRI."
                             if s.hdri_path else "Choose an HDRI file in Neural Render › HDRI.")
    return "forward", forward_params(context, str(render_dir), [hdri], extra), folder


def relight_step(context, prev):
    s = settings(context)
    gbuffers = os.path.dirname(prev.manifest) if prev is not None and prev.manifest else abspath(s.gbuffer_set)
    if not gbuffers or not os.path.isdir(gbuffers):
        raise ValueError("There is no G-buffer set to relight: run Delight first, or choose a set in Relight "
                         "Preview › G-Buffer Set.")
    items = [h for h in s.hdris if h.path]
    hdris = [abspath(h.path) for h in items]
    missing = [h for h in hdris if not os.path.isfile(h)]
    if not hdris or missing:
        raise ValueError(f"The HDRI {missing[0]} was not found; remove it from the Relight Preview list or add "
                         "another." if missing else "Add at least one HDRI to the Relight Preview list.")
    extra = {"hdri_settings": hdri_list.hdri_settings(items)}     # each HDRI's rotation, strength, flip
    return "forward", forward_params(context, gbuffers, hdris, extra), job_folder(context, "relight")
