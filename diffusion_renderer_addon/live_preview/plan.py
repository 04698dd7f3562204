"""What a live preview relights, read from the scene on every timer tick: the task's input (Neural Render: the
scene, exported later; Relight Preview: its G-buffer set), the frame, the light (an HDRI file, or the World
to render first, with the engine's env_rotation / env_strength / env_flip) and the preview's job parameters
(the contract's ``preview`` kind). :func:`fingerprint` is that, as a comparable value: the loop previews again
when it changes. bpy + stdlib only; nothing here writes or renders."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

from ..contract import gbuffer_set, params, preview
from ..export.env_export import describe_world_lighting, engine_rotation_from_mapping
from ..task_steps import FORWARD_PASSES, abspath, forward_params, model_name

RENDER, RELIGHT = "render", "relight"
TASKS = (RENDER, RELIGHT)
KIND = "preview"                                   # the contract's parameter kind of a preview request
_NOT_SENT = ("frames", "overlap")                  # a preview's window is preview_frames, at the engine's defaults


@dataclass(frozen=True)
class Light:
    """The preview's light: ``hdri`` a .hdr/.exr file, or None when ``world`` (a World's name) has to be
    rendered to one first (a procedural world); rotation in the engine's convention (180 = unrotated)."""
    hdri: str | None
    env_rotation: float
    env_strength: float
    env_flip: bool
    world: str | None = None


@dataclass(frozen=True)
class Plan:
    """One preview request, before the Neural Render's G-buffers are exported (``set_path`` None)."""
    task: str
    scene: str
    frame: int
    light: Light
    params: tuple                                   # sorted (name, value) pairs: hashable
    set_path: str | None = None                     # Relight Preview: the G-buffer set
    first_last: tuple = (0, 0)                      # the frames the shot has (the window is chosen inside)

    def request_params(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.params}


_SET_FRAMES: dict = {}                              # G-buffer set folder → (manifest mtime, frame numbers)


def set_frames(folder: str) -> list:
    """The frame numbers of the G-buffer set in ``folder`` (cached per manifest version). ValueError naming
    the field when it is no set the forward model can relight."""
    path = os.path.join(folder, "manifest.json")
    try:
        mtime = os.path.getmtime(path)
    except OSError:
        raise ValueError("There is no G-buffer set to preview: run Delight first, or choose a set in Relight "
                         "Preview › G-Buffer Set.") from None
    cached = _SET_FRAMES.get(folder)
    if cached is None or cached[0] != mtime:
        try:
            manifest = gbuffer_set.Manifest.load(path)
        except (OSError, ValueError) as exc:
            raise ValueError(f"The G-buffer set {folder} cannot be read ({exc}); choose another in Relight "
                             "Preview › G-Buffer Set.") from None
        missing = [p for p in FORWARD_PASSES if p not in manifest.pass_names()]
        if missing:
            raise ValueError(f"The G-buffer set {folder} has no {', '.join(missing)} pass: clear Relight Preview › "
                             "G-Buffer Set to delight the footage again.")
        cached = _SET_FRAMES[folder] = (mtime, manifest.frame_numbers)
    return list(cached[1])


def nearest_frame(current: int, frames: list) -> int:
    """The frame of ``frames`` closest to ``current`` (the earlier one on a tie)."""
    return min(frames, key=lambda f: (abs(f - current), f))


def relight_light(s) -> Light:
    """The HDRI selected in the Relight Preview list, with its rotation / strength / flip."""
    if not len(s.hdris):
        raise ValueError("Add an HDRI to the Relight Preview list (the + button) to preview it live.")
    item = s.hdris[min(max(s.hdri_index, 0), len(s.hdris) - 1)]
    path = abspath(item.path)
    if not path or not os.path.isfile(path):
        raise ValueError(f"The HDRI {item.path or item.name} was not found; choose another file in the Relight "
                         "Preview list.")
    return Light(path, engine_rotation_from_mapping(math.degrees(item.rotation)), float(item.strength),
                 bool(item.flip))


def render_light(scene) -> Light:
    """Neural Render's light: the HDRI file, or the scene's World (its Environment Texture as it is, with the
    Mapping rotation and Background strength; any other world is rendered to an HDRI first)."""
    s = scene.diffusion_renderer
    if s.hdri_source == "FILE":
        path = abspath(s.hdri_path)
        if not path or not os.path.isfile(path):
            raise ValueError(f"The HDRI file {s.hdri_path} was not found; choose another in Neural Render › HDRI."
                             if s.hdri_path else "Choose an HDRI file in Neural Render › HDRI.")
        return Light(path, float(params.default("env_rotation", KIND)), float(params.default("env_strength", KIND)),
                     bool(params.default("env_flip", KIND)))
    desc = describe_world_lighting(scene)
    if desc["kind"] == "none":
        raise ValueError(f"The scene has no World light ({'; '.join(desc['notes'])}): give it a World, or choose "
                         "Neural Render › Light › HDRI File.")
    if desc["needs_render"]:
        return Light(None, 180.0, 1.0, False, world=desc["world"])
    return Light(desc["path"], float(desc["env_rotation"]), float(desc["env_strength"]), bool(desc["env_flip"]))


def _params(context, task: str, light: Light) -> tuple:
    s = context.scene.diffusion_renderer
    table = params.for_kind(KIND)
    extra = {"camera_follow": bool(s.camera_follow)} if task == RENDER else {}
    base = forward_params(context, None, None, extra)
    out = {k: v for k, v in base.items() if k in table and k not in _NOT_SENT and v is not None}
    out.update(model=model_name(s.forward_model), steps=int(s.live_steps), preview_frames=int(s.live_frames),
               env_rotation=float(light.env_rotation), env_strength=float(light.env_strength),
               env_flip=bool(light.env_flip))
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in out.items()))


def plan(context, task: str) -> Plan:
    """The preview the scene asks for now. ValueError (a message naming the field to fix) when it cannot."""
    scene = context.scene
    s = scene.diffusion_renderer
    if task == RELIGHT:
        folder = abspath(s.gbuffer_set)
        if not folder:
            raise ValueError("There is no G-buffer set to preview: run Delight first, or choose a set in Relight "
                             "Preview › G-Buffer Set.")
        frames = set_frames(folder)
        light = relight_light(s)
        return Plan(task, scene.name, nearest_frame(scene.frame_current, frames), light,
                    _params(context, task, light), folder, (frames[0], frames[-1]))
    if task != RENDER:
        raise ValueError(f"unknown live preview task {task!r}")
    if scene.camera is None:
        raise ValueError("The scene has no camera to preview: set one in Scene properties › Camera.")
    first, last = int(scene.frame_start), int(scene.frame_end)
    light = render_light(scene)
    frame = min(max(int(scene.frame_current), first), last)
    return Plan(task, scene.name, frame, light, _params(context, task, light), None, (first, last))


def fingerprint(context, task: str):
    """A comparable value of everything a preview depends on that the loop reads by polling: a change of it
    (or the error that stops the preview) asks for a new preview. Scene edits come from the depsgraph."""
    try:
        return plan(context, task)
    except ValueError as exc:
        return ("error", task, str(exc))


def window(plan_: Plan) -> tuple:
    """The inclusive frames (start, end) the engine relights for this preview (the contract's rule)."""
    first, last = plan_.first_last
    frames = int(dict(plan_.params).get("preview_frames", params.default("preview_frames", KIND)))
    return preview.preview_window(plan_.frame, first, last, frames)


__all__ = ["RENDER", "RELIGHT", "TASKS", "Light", "Plan", "plan", "fingerprint", "window", "set_frames",
           "nearest_frame"]
