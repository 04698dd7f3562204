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
_PASS_LABELS = {"basecolor": "Base colour", "diffuse_albedo": "Diffuse albedo"}


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
    return prop(**kw, **extra)


class DR_HdriItem(bpy.types.PropertyGroup):
    path: StringProperty(name="HDRI", subtype="FILE_PATH", description="Environment map (.hdr / .exr)")


class DR_SceneSettings(bpy.types.PropertyGroup):
    # ---- shared window / sampling settings (engine job params of the same names)
    frames: _param_prop("frames", "Frames per window")
    overlap: _param_prop("overlap", "Overlap")
    steps: _param_prop("steps", "Steps")
    seed: _param_prop("seed", "Seed")
    resolution_mode: EnumProperty(name="Resolution", default="AUTO", items=[
        ("AUTO", "Auto", "Cover 512 pixels keeping the aspect ratio"), ("CUSTOM", "Custom", "Width × height")])
    res_x: IntProperty(name="Width", default=512, min=64, max=4096, step=64, description="Multiple of 64")
    res_y: IntProperty(name="Height", default=512, min=64, max=4096, step=64, description="Multiple of 64")
    previews: _param_prop("previews", "Previews")
    output_dir: StringProperty(name="Output folder", subtype="DIR_PATH", default="",
                               description="Parent folder of the job folders (empty: the add-on's user folder)")
    # ---- neural render (forward)
    hdri_source: EnumProperty(name="Light", default="WORLD", items=[
        ("WORLD", "Scene world", "Use the scene's world (its environment texture, or rendered to an HDRI)"),
        ("FILE", "HDRI file", "An environment map file")])
    hdri_path: StringProperty(name="HDRI", subtype="FILE_PATH", default="")
    forward_model: _param_prop("model", "Model", "forward")
    lora_scale: _param_prop("lora_scale", "LoRA scale")
    guidance: _param_prop("guidance", "Guidance")
    rotate_light: _param_prop("rotate_light", "Rotate light")
    render_samples: IntProperty(name="G-buffer samples", default=1, min=1, max=1024)
    # ---- delight (inverse)
    footage_source: EnumProperty(name="Footage", default="CLIP", items=[
        ("CLIP", "Movie clip", "A Movie Clip data-block"), ("IMAGE", "Image sequence", "An image / image sequence"),
        ("STRIP", "VSE strip", "The active Video Sequencer strip")])
    movie_clip: PointerProperty(name="Clip", type=bpy.types.MovieClip)
    image: PointerProperty(name="Image", type=bpy.types.Image)
    inverse_model: _param_prop("model", "Model", "inverse")
    # ---- relight preview
    hdris: CollectionProperty(type=DR_HdriItem)
    hdri_index: IntProperty(name="HDRI", default=0)
    gbuffer_set: StringProperty(name="G-buffer set", subtype="DIR_PATH", default="",
                                description="G-buffers to relight (set by Delight; empty: de-light first)")


# one tick box per pass of the model's vocabulary, ticked for the inverse job's default passes
DR_SceneSettings.__annotations__.update({
    f"pass_{p}": BoolProperty(name=_PASS_LABELS.get(p, p.capitalize()), default=p in params.default("passes", "inverse"),
                              description=f"Compute the {p} pass")
    for p in PASS_NAMES})


# No methods (nor properties/staticmethods) on the PropertyGroups: bpy 4.2 keeps a reference to every
# registered PropertyGroup class forever, and a Python function in the class keeps this module's globals —
# and with them the bpy module — alive at interpreter exit. bpy-as-a-module then never runs its exit
# (WM_exit) and the process segfaults in C++ static destructors (exit code 139; fixed in 4.5).
# tests/blender/test_addon_lifecycle.py guards this. Helpers take the settings as an argument instead.
def passes(s) -> list:
    """The G-buffer passes ticked in scene settings ``s``."""
    return [p for p in PASS_NAMES if getattr(s, f"pass_{p}")]


def shared_params(s) -> dict:
    """The window / sampling job parameters shared by every task."""
    return {"frames": s.frames, "overlap": min(s.overlap, s.frames - 1), "steps": s.steps, "seed": s.seed,
            "previews": s.previews,
            "resolution": f"{s.res_x}x{s.res_y}" if s.resolution_mode == "CUSTOM" else "auto"}


class DR_Status(bpy.types.PropertyGroup):
    running: BoolProperty(default=False)
    job_id: StringProperty(default="")
    task: StringProperty(default="")
    progress: FloatProperty(default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    status: StringProperty(default="")
    last_error: StringProperty(default="")
    last_manifest: StringProperty(default="", subtype="FILE_PATH")
    engine_info: StringProperty(default="")
    estimate: StringProperty(default="", description="the last Estimate of the Neural render task")


classes = (DR_HdriItem, DR_SceneSettings, DR_Status)


def register_props() -> None:
    bpy.types.Scene.diffusion_renderer = PointerProperty(type=DR_SceneSettings)
    bpy.types.WindowManager.diffusion_renderer = PointerProperty(type=DR_Status)


def unregister_props() -> None:
    for owner in (bpy.types.Scene, bpy.types.WindowManager):
        if hasattr(owner, "diffusion_renderer"):
            del owner.diffusion_renderer
