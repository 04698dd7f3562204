"""Panels: Properties › Render, the 3D viewport sidebar tab "Neural Render", and small "Load result"
panels in the Image Editor and the Compositor."""
from __future__ import annotations

import bpy

import os

from . import hdri_list, live_preview, model_manager, properties
from . import preferences as prefs_mod
from .operators import DR_OT_cancel, DR_OT_delight, DR_OT_load_result, DR_OT_neural_render, DR_OT_relight_preview


def next_step(context) -> tuple:
    """(text, icon, whether to offer the preferences) saying what to do next when nothing runs: set up the
    engine, download the weights the tasks use, or choose a task."""
    prefs = prefs_mod.get(context)
    python = bpy.path.abspath((prefs.engine_python if prefs is not None else "") or prefs_mod.default_engine_python())
    if not os.path.isfile(python):
        return "The engine is not set up yet: press Set Up Engine in the add-on's preferences.", "ERROR", True
    s = getattr(context.scene, "diffusion_renderer", None)
    wanted = [m for m in ((s.forward_model, s.inverse_model) if s is not None else ()) if m in model_manager.MODELS]
    missing = [m for m in dict.fromkeys(wanted) if model_manager.cached(m) is False]
    if missing:
        return (f"The {' and '.join(missing)} model weights are missing: press Download in the add-on's "
                "preferences.", "ERROR", True)
    if any(model_manager.cached(m) is None for m in wanted):
        return "Press Test Engine in the add-on's preferences to check the engine and its weights.", "INFO", True
    return "Choose a task below: Neural Render, Delight or Relight Preview.", "INFO", False


def draw_next_step(layout, context) -> None:
    text, icon, prefs = next_step(context)
    col = layout.column(align=True)
    col.label(text=text, icon=icon)
    if prefs:
        col.operator("preferences.addon_show", text="Open Add-on Preferences", icon="PREFERENCES").module = \
            __package__


def draw_status(layout, context) -> None:
    st = getattr(context.window_manager, "diffusion_renderer", None)
    if st is None:
        return
    if st.running:
        row = layout.row(align=True)
        text = f"{st.task}: {st.status}" if st.task else st.status
        if hasattr(row, "progress"):              # UILayout.progress: Blender 4.0+
            row.progress(factor=st.progress, type="BAR", text=text)
        else:
            row.label(text=f"{text} ({st.progress * 100:.0f} %)")
        row.operator(DR_OT_cancel.bl_idname, text="", icon="CANCEL")
    elif st.status:
        layout.label(text=f"Last job: {st.status}", icon="INFO")
    else:
        draw_next_step(layout, context)
    if st.last_error:
        box = layout.box()
        box.alert = True
        lines = st.last_error.splitlines() or [""]
        box.label(text=lines[0][:160], icon="ERROR")
        for line in lines[1:6]:
            box.label(text=line[:160])
    draw_results(layout, context)


def draw_results(layout, context) -> None:
    """The results of this .blend (saved with it) and Load Result: the selected one again, or any set
    through a file browser; results waiting for this file load with the same button."""
    s = getattr(context.scene, "diffusion_renderer", None)
    if s is None:
        return
    if len(s.results):
        layout.template_list("UI_UL_list", "dr_results", s, "results", s, "results_index", rows=2)
    row = layout.row(align=True)
    row.operator(DR_OT_load_result.bl_idname, icon="FILEBROWSER")
    if 0 <= s.results_index < len(s.results):
        row.operator(DR_OT_load_result.bl_idname, text="", icon="FILE_REFRESH").index = s.results_index
    layout.prop(s, "add_strip")


def draw_shared(layout, s) -> None:
    col = layout.column(align=True)
    col.prop(s, "frames")
    col.prop(s, "overlap")
    col.prop(s, "steps")
    col.prop(s, "seed")
    row = layout.row(align=True)
    row.prop(s, "resolution_mode", expand=True)
    if s.resolution_mode == "CUSTOM":
        row = layout.row(align=True)
        row.prop(s, "res_x")
        row.prop(s, "res_y")
    layout.prop(s, "previews")
    layout.prop(s, "output_dir")


def draw_neural_render(layout, s) -> None:
    layout.prop(s, "hdri_source", expand=True)
    if s.hdri_source == "FILE":
        layout.prop(s, "hdri_path")
    col = layout.column(align=True)
    col.prop(s, "forward_model")
    col.prop(s, "lora_scale")
    col.prop(s, "guidance")
    row = col.row(align=True)
    row.prop(s, "guidance_ramp", text="Ramp")
    sub = row.row(align=True)
    sub.active = s.guidance_ramp
    sub.prop(s, "guidance_end", text="End")
    col.prop(s, "render_samples")
    layout.prop(s, "camera_follow")
    layout.prop(s, "rotate_light")
    row = layout.row(align=True)
    row.operator(DR_OT_neural_render.bl_idname, icon="RENDER_STILL")
    row.operator("diffusion_renderer.estimate", text="", icon="TIME")
    est = bpy.context.window_manager.diffusion_renderer.estimate
    if est:
        layout.label(text=est, icon="ERROR" if "does not fit" in est else "TIME")
    live_preview.draw(layout, bpy.context, "render")


def draw_delight(layout, s) -> None:
    layout.prop(s, "footage_source", expand=True)
    if s.footage_source == "CLIP":
        layout.prop(s, "movie_clip")
    elif s.footage_source == "IMAGE":
        layout.prop(s, "image")
    else:
        layout.label(text="Uses the active strip of the Video Sequencer.", icon="SEQUENCE")
    layout.prop(s, "inverse_model")
    grid = layout.grid_flow(columns=2, align=True)
    for name in properties.PASS_NAMES:
        grid.prop(s, f"pass_{name}")
    layout.operator(DR_OT_delight.bl_idname, icon="LIGHT")


def draw_relight(layout, s) -> None:
    layout.prop(s, "gbuffer_set")
    hdri_list.draw(layout, s)
    layout.operator(DR_OT_relight_preview.bl_idname, icon="WORLD")
    live_preview.draw(layout, bpy.context, "relight")


class _Main:
    bl_label = "Neural Render"

    def draw(self, context):
        draw_status(self.layout, context)


class _Sub:
    bl_options = {"DEFAULT_CLOSED"}
    drawer = None

    def draw(self, context):
        self.drawer(self.layout, context.scene.diffusion_renderer)


def _panels(prefix: str, space: str, region: str, extra: dict) -> list:
    """One main panel (status, progress, errors) with four sub-panels, for one editor."""
    main_id = f"DR_PT_{prefix}_main"
    main = type(main_id, (_Main, bpy.types.Panel), {"bl_idname": main_id, "bl_space_type": space,
                                                    "bl_region_type": region, **extra})
    out = [main]
    for key, label, drawer in (("render", "Neural Render", draw_neural_render), ("delight", "Delight", draw_delight),
                               ("relight", "Relight Preview", draw_relight), ("settings", "Sampling & Output", draw_shared)):
        pid = f"DR_PT_{prefix}_{key}"
        out.append(type(pid, (_Sub, bpy.types.Panel), {
            "bl_idname": pid, "bl_label": label, "bl_space_type": space, "bl_region_type": region,
            "bl_parent_id": main_id, "drawer": staticmethod(drawer), **extra}))
    return out


class _ResultPanel:
    """A small "Neural Render" tab in an editor's sidebar: job status and "Load result"."""
    bl_label = "Neural Render"
    bl_region_type = "UI"
    bl_category = "Neural Render"

    def draw(self, context):
        draw_status(self.layout, context)


class DR_PT_image_result(_ResultPanel, bpy.types.Panel):
    bl_idname = "DR_PT_image_result"
    bl_space_type = "IMAGE_EDITOR"

    def draw(self, context):
        st = context.window_manager.diffusion_renderer
        if live_preview.active_task() and (st.live_status or st.live_error):   # the Neural Preview's latency
            self.layout.label(text=st.live_error or st.live_status, icon="ERROR" if st.live_error else "IMAGE_DATA")
        draw_status(self.layout, context)


class DR_PT_compositor_result(_ResultPanel, bpy.types.Panel):
    bl_idname = "DR_PT_compositor_result"
    bl_space_type = "NODE_EDITOR"

    @classmethod
    def poll(cls, context):
        space = context.space_data
        return space is not None and getattr(space, "tree_type", "") == "CompositorNodeTree"


classes = (*hdri_list.classes, *live_preview.classes, *_panels("render", "PROPERTIES", "WINDOW", {"bl_context": "render"}),
           *_panels("view3d", "VIEW_3D", "UI", {"bl_category": "Neural Render"}),
           DR_PT_image_result, DR_PT_compositor_result)
