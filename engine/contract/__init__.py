"""The engine <-> add-on contract: STDLIB ONLY, imported as an ordinary package by both sides (the engine
as ``engine.contract``; the Blender add-on through ``diffusion_renderer_addon/contract.py``, from the
copy of ``engine/`` the extension ships or from the checkout). Everything both sides must agree on is
defined here once: the JSON-lines protocol (``protocol``, ``fields``), the job parameters (``params``), the
G-buffer set format (``gbuffer_set``), Blender's pass names (``blender_passes``), the footage file types (``footage``), the ``render.json`` of a
Blender render folder (``render_json``), the folders never written into (``containment``), how files are written (``atomic``, ``json_text``) and the live preview's frame window
(``preview``)."""
from . import atomic, blender_passes, containment, fields, footage, gbuffer_set, json_text, params, preview, protocol, render_json

__all__ = ["atomic", "blender_passes", "containment", "fields", "footage", "gbuffer_set", "json_text", "params", "preview", "protocol",
           "render_json"]
