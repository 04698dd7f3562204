"""Estimate: predicted time and peak GPU memory of the Neural render task for the scene, before
running it (the engine's cost model through the protocol's ``estimate`` message; docs/PERFORMANCE.md)."""
from __future__ import annotations

import bpy

from . import client as dr
from . import preferences as prefs_mod
from . import properties


def scene_estimate(context) -> dict:
    """The engine's estimate of a Neural render of the scene's frame range at its render size."""
    scene = context.scene
    r = scene.render
    s = scene.diffusion_renderer
    size = {"width": max(1, int(r.resolution_x * r.resolution_percentage / 100)),
            "height": max(1, int(r.resolution_y * r.resolution_percentage / 100)),
            "frames": len(range(scene.frame_start, scene.frame_end + 1, max(1, scene.frame_step))), "lights": 1}
    params = {**properties.shared_params(s), **prefs_mod.job_options(prefs_mod.get(context)),
              "guidance": properties.guidance(s), "rotate_light": s.rotate_light}
    params.pop("allow_download", None)
    params.pop("previews", None)
    client = prefs_mod.client(prefs_mod.get(context))
    return client.estimate("forward", size, params)


def describe(est: dict) -> tuple[str, bool]:
    """(one line for the panel, whether to warn)."""
    secs = est["seconds"]
    when = f"{secs:.0f} s" if secs < 120 else f"{secs / 60:.0f} min" if secs < 7200 else f"{secs / 3600:.1f} h"
    text = f"≈ {when}, peak ≈ {est['peak_memory_gb']:.1f} GB"
    fits = est.get("fits")
    if est.get("device_memory_gb"):
        text += f" of {est['device_memory_gb']:.0f} GB"
    if fits is False:
        text += " — does not fit: set GPU memory to Low VRAM (Preferences) or lower the resolution"
    return text, fits is False or secs > 3600


class DR_OT_estimate(bpy.types.Operator):
    bl_idname = "diffusion_renderer.estimate"
    bl_label = "Estimate"
    bl_description = ("Predict the time and peak GPU memory of a Neural render of this scene (frame range, render "
                      "size, GPU memory mode) before running it")
    bl_options = {"REGISTER"}

    def execute(self, context):
        st = context.window_manager.diffusion_renderer
        try:
            text, warn = describe(scene_estimate(context))
        except (dr.ClientError, RuntimeError, ValueError, OSError) as exc:
            msg = exc.short() if isinstance(exc, dr.ClientError) else str(exc)
            self.report({"ERROR"}, f"Estimate: {msg}")
            return {"CANCELLED"}
        st.estimate = text
        self.report({"WARNING"} if warn else {"INFO"}, f"Neural render: {text}")
        return {"FINISHED"}


classes = (DR_OT_estimate,)
