"""Names and paths of imported results.

* Datablocks are named from the shot, not the clock: ``<scene>.<task>.<pass>`` (``Shot010.Delight.Base
  Color``; a relit set of Relight Preview adds its light: ``Shot010.Relight studio.Relit``). A re-run of
  the same shot/task finds its datablocks by these names (:func:`reusable`) and switches their files, so
  nothing piles up as ``.001``. A datablock is reused only when it carries :data:`TAG` (the add-on made
  it), never one of the artist's that happens to share the name.
* File paths stored in the .blend are relative to it (``//neural/…``) when it is saved, so moving the
  project folder keeps them working (:func:`blend_path`).
"""
from __future__ import annotations

import os

__all__ = ["TAG", "PASS_LABELS", "TASK_LABELS", "pass_label", "base_name", "reusable", "tag", "blend_path"]

TAG = "diffusion_renderer_result"        # ID custom property: the result base name that owns the datablock
PASS_LABELS = {"basecolor": "Base Color", "diffuse_albedo": "Diffuse Albedo", "rgb": "RGB", "relit": "Relit",
               "normal": "Normal", "depth": "Depth", "roughness": "Roughness", "metallic": "Metallic",
               "alpha": "Alpha"}
TASK_LABELS = {"render": "Neural Render", "delight": "Delight", "relight": "Relight"}


def pass_label(name: str) -> str:
    return PASS_LABELS.get(name) or name.replace("_", " ").title()


def base_name(scene_name: str, info, task: str = "") -> str:
    """``<scene>.<task>`` for a set ``info`` (:class:`.sequences.SetInfo`) made by ``task`` (``render`` /
    ``delight`` / ``relight``; empty for a set loaded by hand: named after the set). The relit sets of
    one Relight Preview differ by their light (the set folder is named after the HDRI)."""
    if task == "relight" or (not task and info.kind == "relit"):
        return f"{scene_name}.Relight {info.path.name}"
    if task:
        return f"{scene_name}.{TASK_LABELS.get(task, task.title())}"
    return f"{scene_name}.{info.label}"


def reusable(collection, name: str):
    """The datablock ``name`` of ``collection`` when the add-on made it (tagged), else None."""
    block = collection.get(name)
    if block is None or getattr(block, "library", None) is not None:
        return None
    return block if TAG in block.keys() else None


def tag(block, base: str):
    block[TAG] = base
    return block


def blend_path(path) -> str:
    """``path`` as stored in the .blend: relative to the saved file (``//…``), absolute for an unsaved
    file or another drive."""
    import bpy

    path = os.path.abspath(str(path))
    if not bpy.data.filepath:
        return path
    try:
        return bpy.path.relpath(path)
    except ValueError:                 # another drive (Windows): no relative form
        return path
