"""Exporters from Blender to the engine's inputs (bpy + stdlib only).

* :func:`export_gbuffers` — a scene → a Blender render folder (frame EXRs written by Blender +
  ``render.json``; the engine converts it into a G-buffer set), non-destructively;
  :func:`start_export_gbuffers` runs it in a background Blender and returns a pollable job.
* :func:`describe_world_lighting` / :func:`export_environment` — the world → an env map description
  (image path, rotation in the engine's ``--env-rotation`` convention, strength), rendering procedural
  worlds to an equirectangular EXR.
* :func:`export_footage` — a Movie Clip, an image sequence or the active VSE strip → the engine's inverse
  job parameters for the source as it is (path, frame numbers, fps, colour space); Blender renders the
  frames (half-float linear EXR) only when their colour space is one the engine does not read.
"""
from .aov_injection import choose_aov_names, inject_materials
from .env_export import EnvExportError, describe_world_lighting, export_environment, render_world_equirect
from .footage_export import FootageExportError, export_footage
from .background_export import BackgroundExport, start_export_gbuffers
from .gbuffer_export import ExportError, export_gbuffers

__all__ = ["ExportError", "export_gbuffers", "start_export_gbuffers", "BackgroundExport", "choose_aov_names", "inject_materials",
           "EnvExportError", "describe_world_lighting", "export_environment", "render_world_equirect",
           "FootageExportError", "export_footage"]
