"""Scene settings of the three tasks (saved with the .blend) and the WindowManager job status (not saved,
no undo steps): ``scene.diffusion_renderer`` and ``context.window_manager.diffusion_renderer``."""
from __future__ import annotations

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty,
                       StringProperty)

PASS_NAMES = ("basecolor", "metallic", "roughness", "normal", "depth", "diffuse_albedo")


class DR_HdriItem(bpy.types.PropertyGroup):
    path: StringProperty(name="HDRI", subtype="FILE_PATH", description="Environment map (.hdr / .exr)")


class DR_SceneSettings(bpy.types.PropertyGroup):
    # ---- shared window / sampling settings (engine job params of the same names)
    frames: IntProperty(name="Frames per window", default=24, min=1, max=256,
                        description="Frames the model sees at once (lower = less memory)")
    overlap: IntProperty(name="Overlap", default=6, min=0, max=255, description="Frames shared by neighbouring windows")
    steps: IntProperty(name="Steps", default=20, min=1, max=1000, description="Denoising steps")
    seed: IntProperty(name="Seed", default=0, min=-1, description="Noise seed (-1: random)")
    resolution_mode: EnumProperty(name="Resolution", default="AUTO", items=[
        ("AUTO", "Auto", "Cover 512 pixels keeping the aspect ratio"), ("CUSTOM", "Custom", "Width × height")])
    res_x: IntProperty(name="Width", default=512, min=64, max=4096, step=64, description="Multiple of 64")
    res_y: IntProperty(name="Height", default=512, min=64, max=4096, step=64, description="Multiple of 64")
    previews: BoolProperty(name="Previews", default=True, description="Write PNG previews and an mp4")
    output_dir: StringProperty(name="Output folder", subtype="DIR_PATH", default="",
                               description="Parent folder of the job folders (empty: the add-on's user folder)")
    # ---- neural render (forward)
    hdri_source: EnumProperty(name="Light", default="WORLD", items=[
        ("WORLD", "Scene world", "Use the scene's world (its environment texture, or rendered to an HDRI)"),
        ("FILE", "HDRI file", "An environment map file")])
    hdri_path: StringProperty(name="HDRI", subtype="FILE_PATH", default="")
    forward_model: StringProperty(name="Model", default="forward",
                                  description="forward, forward-objaverse, or a checkpoint folder")
    lora_scale: FloatProperty(name="LoRA scale", default=0.25, min=0.0, max=2.0,
                              description="Real-footage LoRA strength (0 for synthetic objects)")
    guidance: FloatProperty(name="Guidance", default=1.2, min=1.0, max=20.0,
                            description="Classifier-free guidance (1.0 = 2× faster preview)")
    rotate_light: BoolProperty(name="Rotate light", default=False,
                               description="Turn the light once around over the clip")
    render_samples: IntProperty(name="G-buffer samples", default=1, min=1, max=1024)
    # ---- delight (inverse)
    footage_source: EnumProperty(name="Footage", default="CLIP", items=[
        ("CLIP", "Movie clip", "A Movie Clip data-block"), ("IMAGE", "Image sequence", "An image / image sequence"),
        ("STRIP", "VSE strip", "The active Video Sequencer strip")])
    movie_clip: PointerProperty(name="Clip", type=bpy.types.MovieClip)
    image: PointerProperty(name="Image", type=bpy.types.Image)
    inverse_model: StringProperty(name="Model", default="inverse", description="inverse, or a checkpoint folder")
    pass_basecolor: BoolProperty(name="Base colour", default=True)
    pass_metallic: BoolProperty(name="Metallic", default=True)
    pass_roughness: BoolProperty(name="Roughness", default=True)
    pass_normal: BoolProperty(name="Normal", default=True)
    pass_depth: BoolProperty(name="Depth", default=True)
    pass_diffuse_albedo: BoolProperty(name="Diffuse albedo", default=False)
    # ---- relight preview
    hdris: CollectionProperty(type=DR_HdriItem)
    hdri_index: IntProperty(name="HDRI", default=0)
    gbuffer_set: StringProperty(name="G-buffer set", subtype="DIR_PATH", default="",
                                description="G-buffers to relight (set by Delight; empty: de-light first)")


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
