"""The Live Preview toggle: one operator, drawn pressed while its task is previewed live."""
from __future__ import annotations

import bpy
from bpy.props import EnumProperty

from .. import results
from . import loop
from . import plan as plans

_TASKS = {"RENDER": plans.RENDER, "RELIGHT": plans.RELIGHT}


class DR_OT_live_preview(bpy.types.Operator):
    """Turn Live Preview on or off: while on, turning the light (the World's Mapping rotation, its Background
    strength, the HDRI and its rotation or strength) or changing the frame relights the current frame at a small
    size, shown in the Neural Preview image"""
    bl_idname = "diffusion_renderer.live_preview"
    bl_label = "Live Preview"
    bl_options = {"REGISTER"}

    task: EnumProperty(name="Task", default="RENDER", options={"SKIP_SAVE"},
                       description="What the live preview relights", items=[
        ("RENDER", "Neural Render", "The scene's G-buffers under the Neural Render light"),
        ("RELIGHT", "Relight Preview", "The G-buffer set under the HDRI selected in the Relight Preview list")])

    def execute(self, context):
        task = _TASKS[self.task]
        if loop.active_task() == task:
            loop.stop()
            self.report({"INFO"}, "Live Preview is off.")
            return {"FINISHED"}
        try:
            results.output_root(context)       # the preview folder lives in the Output Folder
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        loop.start(context, task)
        self.report({"INFO"}, "Live Preview is on: change the light or the frame to relight the current frame "
                              "(the Neural Preview image in the Image Editor).")
        return {"FINISHED"}


def draw(layout, context, task: str) -> None:
    """The toggle, the preview settings and the last preview's latency or error, for ``task``."""
    s, st = context.scene.diffusion_renderer, getattr(context.window_manager, "diffusion_renderer", None)
    on = loop.active_task() == task
    box = layout.box()
    row = box.row(align=True)
    op = row.operator(DR_OT_live_preview.bl_idname, text="Live Preview", icon="PAUSE" if on else "PLAY", depress=on)
    op.task = next(k for k, v in _TASKS.items() if v == task)
    row = box.row(align=True)
    row.prop(s, "live_steps")
    row.prop(s, "live_frames")
    if not on or st is None:
        return
    if st.live_status:
        box.label(text=st.live_status, icon="IMAGE_DATA")
    if st.live_error:
        col = box.column(align=True)
        col.alert = True
        col.label(text=st.live_error[:160], icon="ERROR")


classes = (DR_OT_live_preview,)
