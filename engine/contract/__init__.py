"""The engine <-> add-on contract: STDLIB ONLY, imported as an ordinary package by both sides (the engine
as ``engine.contract``; the Blender add-on through ``diffusion_renderer_addon/contract.py``, from the
copy of ``engine/`` the extension ships or from the checkout). Everything both sides must agree on is
defined here once: the JSON-lines protocol, job parameters, the G-buffer set format, Blender's pass
names and the ``render.json`` of a Blender render folder."""
from . import render_json

__all__ = ["render_json"]
