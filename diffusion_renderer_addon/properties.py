"""Scene settings of the three tasks (saved with the .blend) and the WindowManager job status (not saved,
no undo steps): ``scene.diffusion_renderer`` and ``context.window_manager.diffusion_renderer``.

The settings that are job parameters take their default, limits and tooltip from the contract's parameter
table (``engine/contract/params.py``, through ``.contract``): the add-on, the CLI and the engine agree."""
from __future__ import annotations

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty,
                       StringProperty)

from .contract import gbuffer_set, params

PASS_NAMES = gbuffer_set.MODEL_PASSES
_PASS_LABELS = {"basecolor": "Base Color", "diffuse_albedo": "Diffuse Albedo"}   # as Blender spells them


INT_MAX = 2**31 - 1


def _param_prop(name: str, label: str, kind: str | None = None, **extra):
    """A property for job parameter ``name``: the table's default, minimum/maximum (or the add-on's limit,
    ``ui_max``) and help as the tooltip; ``extra`` adds Blender-only options."""
    p = params.param(name, kind)
    value = p.default_for(kind)
    prop = {"num": FloatProperty, "int": IntProperty, "bool": BoolProperty}.get(p.type.split("|")[0], StringProperty)
    kw = {"name": label, "default": value, "description": p.help}
    cast = float if prop is FloatProperty else int
    if p.minimum is not None:
        kw["min"] = cast(p.minimum)
    if p.maximum is not None or p.ui_max is not None:
        kw["max"] = cast(p.maximum if p.maximum is not None else p.ui_max)
        if prop is IntProperty:
            kw["max"] = min(kw["max"], INT_MAX)       # Blender's int properties are 32-bit (e.g. seed)
    return prop(**kw, **extra)


# Blender 4.5+ marks a path property that may start with ``//`` (relative to the .blend); without the flag
# its field shows ``//`` as invalid. Absent in 4.2, where every path property accepts ``//``.
REL_PATH = {"PATH_SUPPORTS_BLEND_RELATIVE"} if "is_path_supports_blend_relative" in bpy.types.Property.bl_rna.properties \
    else set()


class DR_ResultItem(bpy.types.PropertyGroup):
    """A result loaded into this .blend (``name``: ``<scene>.<task>``, the prefix of its datablocks)."""
    path: StringProperty(name="Manifest", subtype="FILE_PATH", options=REL_PATH,
                         description="The result set's manifest.json (relative to the .blend when it is saved)")
    task: StringProperty(name="Task", description="The task that made the result (render, delight, relight)")
    kind: StringProperty(name="Kind", description="gbuffer: G-buffers; relit: a relit sequence")
    finished: StringProperty(name="Finished", description="When the result was loaded")


class DR_HdriItem(bpy.types.PropertyGroup):
    """One HDRI of Relight Preview (``name``: its file name, shown in the list) and its light settings."""
    path: StringProperty(name="File", subtype="FILE_PATH", description="Environment map file (.hdr or .exr)")
    rotation: FloatProperty(name="Rotation", subtype="ANGLE", unit="ROTATION", default=0.0,
                            description="Turns the HDRI around the vertical axis, as the Z rotation of a World's "
                                        "Mapping node (0° = unrotated)")
    strength: FloatProperty(name="Strength", default=1.0, min=0.0, soft_max=10.0,
                            description="Multiplier on the HDRI's brightness, as a World's Background Strength")
    flip: BoolProperty(name="Flip", default=False, description="Mirror the HDRI left to right")


class DR_SceneSettings(bpy.types.PropertyGroup):
    # ---- shared window / sampling settings (engine job params of the same names)
    frames: _param_prop("frames", "Frames per Window")
    overlap: _param_prop("overlap", "Overlap")
    steps: _param_prop("steps", "Steps")
    seed: _param_prop("seed", "Seed")
    resolution_mode: EnumProperty(name="Resolution", default="AUTO", description="Size the models work at", items=[
        ("AUTO", "Auto", "Cover 512 pixels keeping the aspect ratio"), ("CUSTOM", "Custom", "Width × height")])
    res_x: IntProperty(name="Width", default=512, min=64, max=4096, step=64,
                       description="Width the models work at, a multiple of 64")
    res_y: IntProperty(name="Height", default=512, min=64, max=4096, step=64,
                       description="Height the models work at, a multiple of 64")
    previews: _param_prop("previews", "Previews")
    output_dir: StringProperty(name="Output Folder", subtype="DIR_PATH", default="//neural/", options=REL_PATH,
                               description="Folder of the job folders and their results; // is the folder of the "
                                           "saved .blend file (the default //neural/ needs the file saved)")
    # ---- neural render (forward)
    hdri_source: EnumProperty(name="Light", default="WORLD", description="What lights the neural render",
                              items=[
        ("WORLD", "Scene World", "Use the scene's world (its environment texture, or rendered to an HDRI)"),
        ("FILE", "HDRI File", "An environment map file")])
    hdri_path: StringProperty(name="HDRI", subtype="FILE_PATH", default="",
                              description="Environment map file (.hdr or .exr) that lights the neural render")
    forward_model: _param_prop("model", "Model", "forward")
    lora_scale: _param_prop("lora_scale", "LoRA Scale")
    guidance: _param_prop("guidance", "Guidance")
    guidance_ramp: BoolProperty(name="Guidance Ramp", default=False,
                                description="Vary the guidance linearly over each window's frames, from Guidance "
                                            "to Guidance End, as the original's minimum/maximum guidance")
    guidance_end: _param_prop("guidance", "Guidance End")
    rotate_light: _param_prop("rotate_light", "Rotate Light")
    # the job parameter camera_follow, on by default for the scene (its cameras are always exported)
    camera_follow: BoolProperty(name="Light Follows World", default=True,
                                description="Keep the light fixed in the world as the camera moves, as the "
                                            "scene's World is (uses the exported camera of every frame)")
    # ---- live preview (both tasks): the preview request's own settings (kind "preview" of the table)
    live_steps: _param_prop("steps", "Preview Steps", "preview")
    live_frames: _param_prop("preview_frames", "Preview Frames", "preview")
    render_samples: IntProperty(name="G-Buffer Samples", default=1, min=1, max=1024,
                                description="Render samples per pixel of the G-buffer passes (1 is usually enough)")
    # ---- delight (inverse)
    footage_source: EnumProperty(name="Footage", default="CLIP", description="Where the footage to delight comes from",
                                 items=[
        ("CLIP", "Movie Clip", "A Movie Clip data-block"), ("IMAGE", "Image Sequence", "An image / image sequence"),
        ("STRIP", "Sequencer Strip", "The active strip of the Video Sequencer")])
    movie_clip: PointerProperty(name="Clip", type=bpy.types.MovieClip, description="The movie clip to delight")
    image: PointerProperty(name="Image", type=bpy.types.Image, description="The image sequence to delight")
    inverse_model: _param_prop("model", "Model", "inverse")
    # ---- relight preview
    hdris: CollectionProperty(type=DR_HdriItem, name="HDRIs", description="The lights of Relight Preview, one "
                                                                           "relit sequence each")
    hdri_index: IntProperty(name="HDRI", default=0, description="The selected HDRI")
    gbuffer_set: StringProperty(name="G-Buffer Set", subtype="DIR_PATH", default="", options=REL_PATH,
                                description="G-buffers to relight (set by Delight; empty: delight the footage first)")
    # ---- results of this .blend (12a)
    results: CollectionProperty(type=DR_ResultItem, name="Results", description="The results loaded into this file")
    results_index: IntProperty(name="Result", default=0, description="The selected result")
    add_strip: BoolProperty(name="Add Sequencer Strip", default=False,
                            description="Also add each result as a muted strip in the Video Sequencer "
                                        "(unmute it to watch; F12 keeps rendering the scene while it is muted)")


# one tick box per pass of the model's vocabulary, ticked for the inverse job's default passes
DR_SceneSettings.__annotations__.update({
    f"pass_{p}": BoolProperty(name=_PASS_LABELS.get(p, p.capitalize()), default=p in params.default("passes", "inverse"),
                              description=f"Compute the {_PASS_LABELS.get(p, p.capitalize())} pass")
    for p in PASS_NAMES})


# No methods (nor properties/staticmethods) on the PropertyGroups: bpy 4.2 keeps a reference to every
# registered PropertyGroup class forever, and a Python function in the class keeps this module's globals —
# and with them the bpy module — alive at interpreter exit. bpy-as-a-module then never runs its exit
# (WM_exit) and the process segfaults in C++ static destructors (exit code 139; fixed in 4.5).
# tests/blender/test_addon_lifecycle.py guards this. Helpers take the settings as an argument instead.
def passes(s) -> list:
    """The G-buffer passes ticked in scene settings ``s``."""
    return [p for p in PASS_NAMES if getattr(s, f"pass_{p}")]


def guidance(s):
    """The forward job's ``guidance``: one number, or ``[first, last]`` with Guidance Ramp on."""
    return [s.guidance, s.guidance_end] if s.guidance_ramp else s.guidance


def shared_params(s) -> dict:
    """The window / sampling job parameters shared by every task."""
    return {"frames": s.frames, "overlap": min(s.overlap, s.frames - 1), "steps": s.steps, "seed": s.seed,
            "previews": s.previews,
            "resolution": f"{s.res_x}x{s.res_y}" if s.resolution_mode == "CUSTOM" else "auto"}


class DR_Status(bpy.types.PropertyGroup):
    running: BoolProperty(name="Running", default=False, description="A task is running")
    job_id: StringProperty(name="Job", default="", description="The engine's id of the running job")
    task: StringProperty(name="Task", default="", description="The running task")
    progress: FloatProperty(name="Progress", default=0.0, min=0.0, max=1.0, subtype="FACTOR",
                            description="How far the running task is")
    status: StringProperty(name="Status", default="", description="What the task is doing now")
    last_error: StringProperty(name="Last Error", default="", description="Why the last task failed")
    last_manifest: StringProperty(name="Last Result", default="", subtype="FILE_PATH",
                                  description="The manifest.json of the last result")
    engine_info: StringProperty(name="Engine", default="", description="The engine's versions and device")
    estimate: StringProperty(name="Estimate", default="", description="The last estimate of the Neural Render task")
    live_status: StringProperty(name="Live Preview", default="",
                                description="The last live preview: its frame and how long it took")
    live_error: StringProperty(name="Live Preview Error", default="", description="Why the last live preview failed")


classes = (DR_ResultItem, DR_HdriItem, DR_SceneSettings, DR_Status)


def register_props() -> None:
    bpy.types.Scene.diffusion_renderer = PointerProperty(type=DR_SceneSettings)
    bpy.types.WindowManager.diffusion_renderer = PointerProperty(type=DR_Status)


def unregister_props() -> None:
    for owner in (bpy.types.Scene, bpy.types.WindowManager):
        if hasattr(owner, "diffusion_renderer"):
            del owner.diffusion_renderer
