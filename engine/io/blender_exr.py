"""Blender multilayer EXRs → render passes under one canonical vocabulary.

Blender writes a frame's passes in four shapes (see ``../shared/spec/BLENDER_NOTES.md`` §3.2):

=================  ==========================================================================
``blender-4x``     render output of 4.2/4.5: ONE part, channels ``ViewLayer.<short>.<chan>``
                   (``ViewLayer.DiffCol.R``, ``ViewLayer.Depth.Z``, ``ViewLayer.AOV_Roughness.X``)
``blender-5x``     render output of 5.x: one part per pass named ``ViewLayer.<long name>``
                   (``ViewLayer.Diffuse Color``), same channel suffixes
``file-output``    compositor File Output node (any version): layer names without the view-layer
                   prefix (``Depth.V``, ``Normal.X``, ``AOV_Roughness.V``; 5.x one part per item)
``plain``          an ordinary EXR (``R, G, B(, A)`` or ``Y``) — read as the single pass "combined"
=================  ==========================================================================

:func:`read_blender_passes` splits every channel name on its LAST dot (layer, channel), then the
layer on its last dot (view layer, pass), and maps short and long pass names to one vocabulary:
``Combined``/``Image`` → ``combined``, ``Depth``/``Z`` → ``depth``, ``DiffCol``/``Diffuse Color`` →
``diffuse_color`` ..., shader AOVs → the AOV's name lower-cased without an ``AOV_`` prefix
(``AOV_BaseColor`` → ``basecolor``); unknown names are lower-cased with spaces → ``_``. Blender's
``Composite.Combined`` layer (written when the compositor is on) becomes ``composite``.
Channels come back ordered R,G,B,A / X,Y,Z,W / U,V,A / single ``V``/``Z``/``X``, as ``(H, W, C)``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.contract.blender_passes import BY_NAME, canonical_pass_name

from .exr import ExrError, read_exr, read_exr_header

__all__ = ["BlenderPasses", "read_blender_passes", "detect_layout", "canonical_pass_name", "PASS_NAMES"]

# Blender's short (4.x) and long (5.x) pass names → canonical: the contract's table (shared with the add-on).
PASS_NAMES = BY_NAME

_ORDERS = ("RGBA", "XYZW", "UVA")
_PLAIN = set("RGBAYZV")


def _order(chans) -> list[str]:
    chans = list(chans)
    for order in _ORDERS:
        if set(chans) <= set(order):
            return sorted(chans, key=order.index)
    known = "RGBAXYZWUV"
    return sorted(chans, key=lambda c: (known.index(c) if c in known else len(known), c))


class BlenderPasses(dict):
    """``{canonical pass: float32 (H, W, C)}`` plus what was found in the file:

    ``view_layer`` (``None`` for File Output / plain files), ``view_layers`` (all in the file),
    ``layout`` (:func:`detect_layout`'s answer), ``channels`` (pass → channel letters in array order),
    ``sources`` (pass → the layer name in the file), ``path``."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.view_layer: str | None = None
        self.view_layers: list[str] = []
        self.layout = "plain"
        self.channels: dict[str, str] = {}
        self.sources: dict[str, str] = {}
        self.path = ""


def _split(name: str) -> tuple[str | None, str, str]:
    """``"ViewLayer.Diffuse Color.R"`` → ``("ViewLayer", "Diffuse Color", "R")``; ``"Depth.V"`` →
    ``(None, "Depth", "V")``; ``"R"`` → ``(None, "", "R")``."""
    layer, _, chan = name.rpartition(".")
    view_layer, dot, pass_name = layer.rpartition(".")
    return (view_layer if dot else None), pass_name, chan


def _layout_from_names(names, part_names, multipart: bool) -> str:
    split = [_split(n) for n in names]
    if any(vl is not None for vl, _, _ in split):
        if multipart and any(p.count(".") >= 1 for p in part_names):
            return "blender-5x"
        return "blender-4x"
    if any(p for _, p, _ in split):
        return "file-output"
    return "plain"


def detect_layout(path) -> str:
    """``"blender-4x"`` | ``"blender-5x"`` | ``"file-output"`` | ``"plain"`` from the header alone."""
    h = read_exr_header(path)
    return _layout_from_names(h["channels"], [p["name"] for p in h["parts"]], h["multipart"])


def read_blender_passes(path, *, view_layer: str | None = None) -> BlenderPasses:
    """Read a Blender multilayer EXR (either layout, either route) → :class:`BlenderPasses`.

    With several view layers in one file pass ``view_layer=``; by default the first (in file order)
    is used and the others are listed in ``.view_layers``. A file without view layers (File Output
    node, plain) ignores ``view_layer``: its passes are read as they are. A plain RGB(A)/Y EXR gives
    one pass, ``combined``. Two layers that map to the same canonical name are an error.
    """
    path = Path(path)
    h = read_exr_header(path)
    channels = read_exr(path)
    layout = _layout_from_names(channels, [p["name"] for p in h["parts"]], h["multipart"])

    groups: dict[tuple[str | None, str], dict[str, np.ndarray]] = {}
    for name, arr in channels.items():
        vl, pass_name, chan = _split(name)
        if vl == "Composite" and pass_name == "Combined":  # the compositor's result, not a view layer
            vl, pass_name = None, "Composite"
        groups.setdefault((vl, pass_name), {})[chan] = arr

    layers = list(dict.fromkeys(vl for vl, _ in groups if vl is not None))
    if view_layer is not None and layers and view_layer not in layers:
        raise ValueError(f"{path}: no view layer {view_layer!r} (found: {', '.join(layers) or 'none'})")
    chosen = (view_layer if view_layer is not None else layers[0]) if layers else None

    out = BlenderPasses()
    out.path, out.layout, out.view_layer, out.view_layers = str(path), layout, chosen, layers
    for (vl, pass_name), chans in groups.items():
        if vl is not None and vl != chosen:
            continue
        if not pass_name:  # plain channels (R, G, B, A, Y ...)
            if not set(chans) & _PLAIN:
                continue
            canon = "combined"
        else:
            canon = "composite" if (vl, pass_name) == (None, "Composite") else canonical_pass_name(pass_name)
        if canon in out:
            raise ExrError(f"{path}: layers {out.sources[canon]!r} and {pass_name or 'plain'!r} "
                           f"both map to pass {canon!r}")
        order = _order(chans)
        out[canon] = np.stack([chans[c] for c in order], axis=-1).astype(np.float32, copy=False)
        out.channels[canon] = "".join(order)
        out.sources[canon] = f"{vl}.{pass_name}" if vl else (pass_name or "(plain)")
    if not out:
        raise ExrError(f"{path}: no render passes found (channels: {', '.join(sorted(channels))})")
    return out
