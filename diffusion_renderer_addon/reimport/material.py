"""Materials from imported sets.

:func:`build_gbuffer_material` — a Principled BSDF driven by a G-buffer set's image sequences:

| pass | node path | Principled input |
|---|---|---|
| basecolor (``Linear Rec.709``) | Image Texture | Base Color |
| roughness, metallic (``Non-Color``) | Image Texture → Separate Color (R) | Roughness, Metallic |
| alpha (``Non-Color``) | Image Texture → Separate Color (R) | Alpha |
| normal, depth, others | Image Texture, **unlinked** | — |

Single-channel files (``V``) load as grey (R = G = B) in Blender, so the red channel of Separate Color
is the value itself (no luminance weighting involved, which the implicit colour → float conversion
would apply).

**Normals are left unconnected on purpose.** The set stores *camera-space* unit vectors of the
pixels as seen from the export camera (+X right, +Y up, +Z toward the viewer) — not a tangent-space
normal map. Feeding them through a Normal Map node (tangent space) would be wrong on any mesh; and even
a camera → world conversion is only meaningful for a surface seen exactly through that camera at that
frame (a screen-aligned projection), where the geometry already gives the normal. The Image Texture
is there (with its sequence range set) for users who build such a projection setup.

:func:`build_relit_material` — an emission material showing a relit sequence (``Linear Rec.709``), for a
camera-aligned card or a preview plane.

Every Image Texture's ``image_user`` gets the set's frame range (scene frame *f* shows file *f*). A re-run
reuses the material of the same name (objects using it keep it) and rebuilds its nodes.
"""
from __future__ import annotations

from .. import compat
from . import names
from .sequences import PassSequence

__all__ = ["build_gbuffer_material", "build_relit_material"]

_SCALAR_INPUTS = {"roughness": "Roughness", "metallic": "Metallic", "alpha": "Alpha"}


def _tex_node(nt, seq: PassSequence, loc):
    node = nt.nodes.new("ShaderNodeTexImage")
    node.name = node.label = seq.name
    node.image = seq.image
    node.interpolation = "Closest"
    node.extension = "EXTEND"
    seq.configure(node)
    node.location = loc
    return node


def _material(name: str):
    """Material ``name`` with only an output node: the one an earlier run made (its nodes rebuilt, its
    users kept), else a new one."""
    import bpy

    mat = names.reusable(bpy.data.materials, name)
    if mat is None:
        mat = names.tag(bpy.data.materials.new(name), name)
    mat.use_fake_user = True          # assigned to nothing yet: keep it when the file is saved
    nt = compat.ensure_nodes(mat)
    nt.nodes.clear()
    outn = nt.nodes.new("ShaderNodeOutputMaterial")
    outn.location = (300, 300)
    return mat, nt, outn


def build_gbuffer_material(name: str, sequences: dict[str, PassSequence]):
    mat, nt, outn = _material(name)
    bsdf = nt.nodes.new("ShaderNodeBsdfPrincipled")
    bsdf.location = (outn.location.x - 300, outn.location.y)
    nt.links.new(bsdf.outputs[0], outn.inputs["Surface"])
    row = 0
    for pass_name, seq in sequences.items():
        tex = _tex_node(nt, seq, (bsdf.location.x - 700, bsdf.location.y - row * 280))
        row += 1
        if pass_name == "basecolor":
            nt.links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
        elif pass_name in _SCALAR_INPUTS:
            sep = nt.nodes.new("ShaderNodeSeparateColor")
            sep.name = sep.label = f"{pass_name} value"
            sep.location = (tex.location.x + 320, tex.location.y)
            nt.links.new(tex.outputs["Color"], sep.inputs[0])
            nt.links.new(sep.outputs[0], bsdf.inputs[_SCALAR_INPUTS[pass_name]])
        elif pass_name == "normal":
            tex.label = "normal (camera space: not a tangent-space map, left unconnected)"
    return mat


def build_relit_material(name: str, seq: PassSequence, *, strength: float = 1.0):
    mat, nt, outn = _material(name)
    emit = nt.nodes.new("ShaderNodeEmission")
    emit.inputs["Strength"].default_value = strength
    emit.location = (outn.location.x - 250, outn.location.y)
    tex = _tex_node(nt, seq, (emit.location.x - 350, emit.location.y))
    nt.links.new(tex.outputs["Color"], emit.inputs["Color"])
    nt.links.new(emit.outputs[0], outn.inputs["Surface"])
    return mat
