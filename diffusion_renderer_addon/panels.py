"""Panels: Properties › Render, the 3D viewport sidebar tab "Neural Render", and small "Load result"
panels in the Image Editor and the Compositor."""
from __future__ import annotations

import bpy

from . import properties
from .operators import (DR_OT_cancel, DR_OT_delight, DR_OT_hdri_add, DR_OT_hdri_remove, DR_OT_load_result,
                        DR_OT_neural_render, DR_OT_relight_preview)


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
    if st.last_error:
        box = layout.box()
        box.alert = True
        lines = st.last_error.splitlines() or [""]
        box.label(text=lines[0][:160], icon="ERROR")
        for line in lines[1:6]:
            box.label(text=line[:160])
    if st.last_manifest:
        layout.operator(DR_OT_load_result.bl_idname, icon="IMPORT")


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
    col.prop(s, "render_samples")
    layout.prop(s, "rotate_light")
    row = layout.row(align=True)
    row.operator(DR_OT_neural_render.bl_idname, icon="RENDER_STILL")
    row.operator("diffusion_renderer.estimate", text="", icon="TIME")
    est = bpy.context.window_manager.diffusion_renderer.estimate
    if est:
        layout.label(text=est, icon="ERROR" if "does not fit" in est else "TIME")


def draw_delight(layout, s) -> None:
    layout.prop(s, "footage_source", expand=True)
    if s.footage_source == "CLIP":
        layout.prop(s, "movie_clip")
    elif s.footage_source == "IMAGE":
        layout.prop(s, "image")
    else:
        layout.label(text="Uses the active VSE strip", icon="SEQUENCE")
    layout.prop(s, "inverse_model")
    grid = layout.grid_flow(columns=2, align=True)
    for name in properties.PASS_NAMES:
        grid.prop(s, f"pass_{name}")
    layout.operator(DR_OT_delight.bl_idname, icon="LIGHT")


def draw_relight(layout, s) -> None:
    layout.prop(s, "gbuffer_set")
    row = layout.row()
    row.template_list("UI_UL_list", "dr_hdris", s, "hdris", s, "hdri_index", rows=3)
    col = row.column(align=True)
    col.operator(DR_OT_hdri_add.bl_idname, text="", icon="ADD")
    col.operator(DR_OT_hdri_remove.bl_idname, text="", icon="REMOVE")
    if 0 <= s.hdri_index < len(s.hdris):
        layout.prop(s.hdris[s.hdri_index], "path")
    layout.operator(DR_OT_relight_preview.bl_idname, icon="WORLD")


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
    for key, label, drawer in (("render", "Neural Render", draw_neural_render), ("delight", "Delight Footage", draw_delight),
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
        self.layout.operator(DR_OT_load_result.bl_idname, icon="IMPORT")


class DR_PT_image_result(_ResultPanel, bpy.types.Panel):
    bl_idname = "DR_PT_image_result"
    bl_space_type = "IMAGE_EDITOR"


class DR_PT_compositor_result(_ResultPanel, bpy.types.Panel):
    bl_idname = "DR_PT_compositor_result"
    bl_space_type = "NODE_EDITOR"

    @classmethod
    def poll(cls, context):
        space = context.space_data
        return space is not None and getattr(space, "tree_type", "") == "CompositorNodeTree"


classes = (*_panels("render", "PROPERTIES", "WINDOW", {"bl_context": "render"}),
           *_panels("view3d", "VIEW_3D", "UI", {"bl_category": "Neural Render"}),
           DR_PT_image_result, DR_PT_compositor_result)
