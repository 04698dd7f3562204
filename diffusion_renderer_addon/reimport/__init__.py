"""Bring engine results back into Blender (bpy + stdlib only): image sequences per pass, a compositor
node group per set, a material, and (opt-in) a muted sequencer strip, named ``<scene>.<task>.<pass>`` and
reused by re-runs. Entry point: :func:`import_result`."""
from .compositor import add_group_to_scene, build_compositor_group
from .material import build_gbuffer_material, build_relit_material
from .results import import_result
from .sequences import (PassSequence, ReimportError, SetInfo, colorspace_for, configure_image_user,
                        load_set_sequences, read_manifest)
from .vse import add_image_sequence_strip, add_movie_strip

__all__ = ["import_result", "ReimportError", "PassSequence", "SetInfo", "read_manifest", "load_set_sequences",
           "colorspace_for", "configure_image_user", "build_compositor_group", "add_group_to_scene",
           "build_gbuffer_material", "build_relit_material", "add_image_sequence_strip", "add_movie_strip"]
