"""The engine <-> add-on contract (``engine/contract``, stdlib only), imported as an ordinary package:
from the copy of ``engine/`` that the extension ships inside the add-on, or, in a checkout, from the
repository root beside the add-on folder. The add-on imports nothing else of the engine: the protocol it
speaks, the job parameters' defaults/limits/help, the G-buffer set format and Blender's pass names all come
from here."""
from __future__ import annotations

import importlib
import os
import sys


def _package():
    try:  # the extension: <add-on package>/engine/contract
        return importlib.import_module(f"{__package__}.engine.contract")
    except ImportError:
        pass
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isfile(os.path.join(root, "engine", "contract", "__init__.py")) and root not in sys.path:
        sys.path.append(root)  # a checkout: the repository root holds engine/
    return importlib.import_module("engine.contract")


_pkg = _package()
atomic, blender_passes, fields, footage = _pkg.atomic, _pkg.blender_passes, _pkg.fields, _pkg.footage
containment = _pkg.containment          # folders never written into (the Output Folder check)
gbuffer_set = _pkg.gbuffer_set
preview = _pkg.preview                  # the live preview's frame window (preview_window)
json_text, params, protocol, render_json = _pkg.json_text, _pkg.params, _pkg.protocol, _pkg.render_json

__all__ = ["atomic", "blender_passes", "containment", "fields", "footage", "gbuffer_set", "json_text", "params", "preview", "protocol",
           "render_json"]
