"""Everything a task needs, checked before it does any work (before the first frame is exported).

:func:`check_task` is the one place the three task operators (Neural Render, Delight, Relight Preview) call:
cheap checks first — the camera, the light (HDRI files), the settings (the contract's ``params.problems``),
the output folder and its free disk space — then the engine (started and its hello awaited: reachable and
protocol-compatible) and the weights each job needs (listed as cached in the engine's hello, or downloadable
because Preferences allow it and Blender may go online). The first problem raises :class:`ValidationError`
with one message that names the fix in Blender's UI (the button or field), never a command-line flag.
"""
from __future__ import annotations

import os
import shutil

import bpy

from . import client as dr
from . import model_manager
from .contract import params as params_mod

__all__ = ["ValidationError", "check_task", "SET_UP_ENGINE", "MODEL_WEIGHTS"]

SET_UP_ENGINE = "Preferences › Add-ons › DiffusionRenderer › Set Up Engine"
MODEL_WEIGHTS = "Preferences › Add-ons › DiffusionRenderer › Model Weights › Download"
HDRI_EXTENSIONS = (".hdr", ".exr")
# Bytes per pixel and frame on disk: the Blender render folder (32-bit multilayer EXR, uncompressed, see
# export.gbuffer_export.EXR_CODEC) and a result set per relit light / per de-lit pass (EXR + PNG preview).
EXPORT_BYTES_PER_PIXEL = 56
RELIT_BYTES_PER_PIXEL = 16
PASS_BYTES_PER_PIXEL = 12
DISK_MARGIN = 1.2
ENGINE_TIMEOUT_S = 60.0
# the panel field of each job parameter a user can set (messages name the field, not the parameter)
FIELDS = {"frames": "Frames per Window", "overlap": "Overlap", "steps": "Steps", "seed": "Seed",
          "resolution": "Resolution", "lora_scale": "LoRA Scale", "guidance": "Guidance", "model": "Model",
          "passes": "the pass tick boxes", "device": "Preferences › Device", "dtype": "Preferences › Precision",
          "memory": "Preferences › GPU Memory"}
PANELS = {"render": "Neural Render", "delight": "Delight", "relight": "Relight Preview"}


class ValidationError(ValueError):
    """A task cannot start; the message says what to change and where in Blender."""


def check_task(context, client, task: str, jobs: list, out_base: str) -> None:
    """Check a task before any work. ``jobs``: the (kind, params) of each job the task will submit, params
    without their inputs (footage, G-buffers, HDRIs: exported later); ``out_base``: the folder the job
    folders go into. Raises :class:`ValidationError`."""
    s = context.scene.diffusion_renderer
    panel = PANELS.get(task, task)
    if task == "render" and context.scene.camera is None:
        raise ValidationError(f"The scene {context.scene.name!r} has no active camera: set one in Scene "
                              "Properties › Camera.")
    _check_light(context.scene, s, task)
    if task == "delight" or (task == "relight" and any(kind == "inverse" for kind, _ in jobs)):
        _check_footage(s)
    for kind, p in jobs:
        problems = params_mod.problems(kind, p, inputs=False, label=_field_label(panel))
        if problems:
            raise ValidationError(f"{problems[0][0].upper()}{problems[0][1:]}.")
    _check_disk(context.scene, s, task, jobs, out_base)
    info = _check_engine(client)
    for kind, p in jobs:
        _check_weights(kind, p, info, client, panel)


def _field_label(panel: str):
    def label(name: str) -> str:
        field = FIELDS.get(name, name.replace("_", " ").title())
        where = field if field.startswith(("Preferences", "the ")) else f"{panel} › {field}"
        return f"{where}:"
    return label


def _abs(path: str) -> str:
    return os.path.abspath(bpy.path.abspath(path)) if path else ""


def _hdri_problem(path: str, raw: str, where: str) -> str | None:
    if not raw:
        return f"Choose an HDRI file in {where}."
    if not os.path.isfile(path):
        return f"The HDRI {raw} was not found: choose another in {where}."
    if os.path.splitext(path)[1].lower() not in HDRI_EXTENSIONS:
        return f"The HDRI {raw} is not a Radiance .hdr or OpenEXR .exr environment map: choose one in {where}."
    if not os.access(path, os.R_OK):
        return f"The HDRI {raw} cannot be read (permissions): choose another in {where}."
    return None


def _check_light(scene, s, task: str) -> None:
    if task == "render":
        if s.hdri_source == "FILE":
            problem = _hdri_problem(_abs(s.hdri_path), s.hdri_path, "Neural Render › HDRI")
            if problem:
                raise ValidationError(problem)
        elif scene.world is None:
            raise ValidationError(f"The scene {scene.name!r} has no World to light it: add one in World Properties, "
                                  "or set Neural Render › Light to HDRI File.")
    elif task == "relight":
        items = [h for h in s.hdris if h.path]
        if not items:
            raise ValidationError("Add at least one HDRI to the Relight Preview list (the HDRI list).")
        for item in items:
            problem = _hdri_problem(_abs(item.path), item.path, "the HDRI list of Relight Preview")
            if problem:
                raise ValidationError(problem)


def _check_footage(s) -> None:
    if s.footage_source == "CLIP" and s.movie_clip is None:
        raise ValidationError("Choose a Movie Clip to delight in Delight › Clip.")
    if s.footage_source == "IMAGE" and s.image is None:
        raise ValidationError("Choose an Image Sequence to delight in Delight › Image.")


def _frames_and_size(scene, s, task: str) -> tuple[int, int, int]:
    """How many frames the task renders and their size (outputs come back at the source's size)."""
    r = scene.render
    frames = len(range(scene.frame_start, scene.frame_end + 1, max(1, scene.frame_step)))
    size = (int(r.resolution_x * r.resolution_percentage / 100), int(r.resolution_y * r.resolution_percentage / 100))
    if task != "render":
        source = {"CLIP": s.movie_clip, "IMAGE": s.image}.get(s.footage_source)
        if source is not None and tuple(source.size) != (0, 0):
            size = tuple(int(v) for v in source.size)
            frames = max(1, int(getattr(source, "frame_duration", 0) or 1))
    return frames, max(1, size[0]), max(1, size[1])


def _existing_parent(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _check_disk(scene, s, task: str, jobs: list, out_base: str) -> None:
    where = _existing_parent(out_base)
    if not os.path.isdir(where) or not os.access(where, os.W_OK):
        raise ValidationError(f"The Output Folder {out_base} cannot be written ({where} is not a writable "
                              "folder): choose another Output Folder.")
    frames, w, h = _frames_and_size(scene, s, task)
    need = 0
    for kind, p in jobs:
        if kind == "forward":
            lights = len([x for x in s.hdris if x.path]) if task == "relight" else 1
            need += frames * w * h * RELIT_BYTES_PER_PIXEL * max(1, lights)
        else:
            need += frames * w * h * PASS_BYTES_PER_PIXEL * (len(p.get("passes") or ()) + 1)
    if task == "render":
        need += frames * w * h * EXPORT_BYTES_PER_PIXEL
    need = int(need * DISK_MARGIN)
    free = shutil.disk_usage(where).free
    if free < need:
        raise ValidationError(f"Not enough disk space for {frames} frames at {w}×{h}: about {_size(need)} needed, "
                              f"{_size(free)} free in {where}. Free some space or choose another Output Folder.")


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def _check_engine(client) -> dict:
    """Start the engine if needed and wait for its hello (an incompatible protocol fails the start)."""
    try:
        return client.wait_ready(ENGINE_TIMEOUT_S) or {}
    except dr.ClientError as exc:
        reason = (exc.message or "").strip().rstrip(".")
        raise ValidationError(f"The engine is not ready ({reason}). Press {SET_UP_ENGINE}, or choose the "
                              "engine's Python there (Engine Python), then press Test Engine.") from None


def _is_folder_model(name: str) -> bool:
    return bool(name) and (os.sep in name or "/" in name or name.startswith("//") or os.path.isdir(_abs(name)))


def _check_weights(kind: str, p: dict, info: dict, client, panel: str) -> None:
    name = (p.get("model") or "").strip()
    field = f"{panel} › Model"
    if _is_folder_model(name):
        if not os.path.isdir(name):
            raise ValidationError(f"The model folder {name} does not exist: choose a checkpoint folder or a "
                                  f"published model name ({', '.join(model_manager.MODELS)}) in {field}.")
        return          # what the folder holds is the engine's to judge (its error names the file)
    known = [m.get("name") for m in (info.get("models") or ()) if isinstance(m, dict)]
    if known and name not in known:
        raise ValidationError(f"{name!r} is not a published model ({', '.join(known)}): choose one, or a "
                              f"checkpoint folder, in {field}.")
    have = model_manager.cached(name, client)
    if have is False and not p.get("allow_download"):
        if not model_manager.online_access():
            raise ValidationError(f"The {name} model weights are not downloaded and Blender may not go online: "
                                  f"turn on {model_manager.ONLINE_SETTING}, then press {MODEL_WEIGHTS}.")
        raise ValidationError(f"The {name} model weights are not downloaded: press {MODEL_WEIGHTS} (about 3 GB), "
                              "or tick Download Missing Weights During Jobs there.")
