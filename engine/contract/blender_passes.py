"""Blender's render-pass names, once: canonical pass name ↔ the names Blender gives a pass in Render Layers
node sockets and in the layers of the multilayer EXRs it writes — short in 4.2/4.5 (``DiffCol``), long in
5.x (``Diffuse Color``); see ../shared/spec/BLENDER_NOTES.md §3.2. STDLIB ONLY: the add-on finds sockets
with it (``compat.render_layer_socket``), the engine reads EXR layers with it (``engine/io/blender_exr.py``).

>>> canonical_pass("DiffCol"), canonical_pass("Diffuse Color"), canonical_pass("my_aov")
('diffuse_color', 'diffuse_color', None)
>>> canonical_pass_name("AOV_BaseColor"), pass_layer_names("combined")
('basecolor', ('Image', 'Combined'))
"""
from __future__ import annotations

import re

# canonical → (4.x short name, 5.x long name)
LAYER_NAMES: dict[str, tuple[str, str]] = {
    "combined": ("Image", "Image"),
    "alpha": ("Alpha", "Alpha"),
    "depth": ("Depth", "Depth"),
    "mist": ("Mist", "Mist"),
    "position": ("Position", "Position"),
    "normal": ("Normal", "Normal"),
    "vector": ("Vector", "Vector"),
    "uv": ("UV", "UV"),
    "object_index": ("IndexOB", "Object Index"),
    "material_index": ("IndexMA", "Material Index"),
    "diffuse_direct": ("DiffDir", "Diffuse Direct"),
    "diffuse_indirect": ("DiffInd", "Diffuse Indirect"),
    "diffuse_color": ("DiffCol", "Diffuse Color"),
    "glossy_direct": ("GlossDir", "Glossy Direct"),
    "glossy_indirect": ("GlossInd", "Glossy Indirect"),
    "glossy_color": ("GlossCol", "Glossy Color"),
    "transmission_direct": ("TransDir", "Transmission Direct"),
    "transmission_indirect": ("TransInd", "Transmission Indirect"),
    "transmission_color": ("TransCol", "Transmission Color"),
    "subsurface_direct": ("SubsurfaceDir", "Subsurface Direct"),
    "subsurface_indirect": ("SubsurfaceInd", "Subsurface Indirect"),
    "subsurface_color": ("SubsurfaceCol", "Subsurface Color"),
    "volume_direct": ("VolumeDir", "Volume Direct"),
    "volume_indirect": ("VolumeInd", "Volume Indirect"),
    "volume_scatter": ("Volume Scatter", "Volume Scatter"),
    "volume_transmit": ("Volume Transmit", "Volume Transmit"),
    "volume_majorant": ("Volume Majorant", "Volume Majorant"),
    "emission": ("Emit", "Emission"),
    "environment": ("Env", "Environment"),
    "ambient_occlusion": ("AO", "Ambient Occlusion"),
    "shadow": ("Shadow", "Shadow"),
    "shadow_catcher": ("Shadow Catcher", "Shadow Catcher"),
    "noisy_image": ("Noisy Image", "Noisy Image"),
    "noisy_shadow_catcher": ("Noisy Shadow Catcher", "Noisy Shadow Catcher"),
    "grease_pencil": ("GreasePencil", "Grease Pencil"),        # 4.5 / 5.x (4.2 has none)
    "denoising_normal": ("Denoising Normal", "Denoising Normal"),
    "denoising_albedo": ("Denoising Albedo", "Denoising Albedo"),
    "denoising_depth": ("Denoising Depth", "Denoising Depth"),
    "denoising_roughness": ("Denoising Roughness", "Denoising Roughness"),                   # 5.2+
    "denoising_specular_albedo": ("Denoising Specular Albedo", "Denoising Specular Albedo"),  # 5.2+
}
# Other names a pass carries: the render output's EXR calls the combined pass "Combined" (the socket is
# "Image"); older files and the compositor call depth "Z".
ALIASES: dict[str, str] = {"Combined": "combined", "Z": "depth"}

# every known name → canonical
BY_NAME: dict[str, str] = {**{n: c for c, names in LAYER_NAMES.items() for n in names}, **ALIASES}
_BY_LOWER = {k.lower(): v for k, v in BY_NAME.items()}


def canonical_pass(name: str) -> str | None:
    """A socket or EXR layer name of any version → canonical pass name (None for AOVs / unknown names)."""
    return BY_NAME.get(name)


def canonical_pass_name(name: str) -> str:
    """Any Blender pass / AOV / File Output item name → a canonical name: known names (any case) as
    :func:`canonical_pass`; others lower-cased without an ``AOV_`` prefix, spaces and dashes → ``_``."""
    n = name.strip()
    if n in BY_NAME:
        return BY_NAME[n]
    if n.lower() in _BY_LOWER:
        return _BY_LOWER[n.lower()]
    if n[:4].upper() == "AOV_" and len(n) > 4:
        n = n[4:]
    return re.sub(r"[\s\-]+", "_", n).lower()


def pass_layer_names(canonical: str) -> tuple[str, ...]:
    """Every name a pass may carry (sockets and EXR layers, all versions); an unknown name stands for itself."""
    names = LAYER_NAMES.get(canonical, (canonical, canonical))
    aliases = tuple(n for n, c in ALIASES.items() if c == canonical)
    return tuple(dict.fromkeys(names + aliases))
