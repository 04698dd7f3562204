"""Shader AOVs for base colour, roughness and metallic, injected into every material — reversibly.

The G-buffer export needs, per pixel, the base colour / roughness / metallic of the surface the camera
sees. Blender has no such passes, so before rendering each material gets three **AOV Output** nodes
(``basecolor`` COLOR, ``roughness`` and ``metallic`` VALUE, registered on the view layer) fed with the
values of the shader that actually reaches its Material Output:

* **Principled BSDF** — the sockets linked into its *Base Color* / *Roughness* / *Metallic* inputs (so
  textures and node math are followed exactly), or their default values copied when unlinked.
* **Metallic BSDF** (4.3+) — its *Base Color* / *Roughness*, metallic 1. **Diffuse BSDF** — its
  *Color*. Any other shader node with a *Base Color* input — that input. Other shaders (Emission,
  Transparent, Holdout, script nodes …) carry no material information: base colour 0.8 grey,
  roughness 0.5, metallic 0 — the defaults also used for materials without a Principled BSDF.
* **Mix Shader** — the two branches' values mixed by the same *Fac* (new Mix nodes, factor clamped as
  the Mix Shader does); **Add Shader** — their average. A branch without material information (e.g.
  Transparent in a cut-out, Emission added for glow) does not dilute the other: it is ignored.
* **Node groups** — approach: *expose through group outputs*. The group's own shader graph is resolved
  inside the group tree, and each non-constant value is routed out through a new output socket of the
  group (``DR_basecolor`` …), linked at the active Group Output; the AOV nodes stay in the material's top
  level. This keeps a single AOV writer per material (an AOV Output node placed inside a group would
  also fire for groups whose shader does not reach the output, and would ignore Mix Shader factors
  outside the group), works for nested groups and for groups used by several materials, and needs
  nothing when the values are constant. Linked (library) groups and materials cannot be edited: their
  non-constant values fall back to the defaults, with a warning.
* Muted nodes pass through like Blender does (their internal links); reroutes are followed; muted or
  invalid links count as unlinked.

Objects **without a material** and materials that do not render through nodes (4.x ``use_nodes``
off) get no AOV: the engine's converter recognises their pixels (covered in Combined alpha, not in the
base-colour AOV's alpha) and fills the same defaults (``render_json.AOV_DEFAULTS``). The world/background writes no AOV: alpha 0 there.

Everything is added through a :class:`~.restore.ChangeLog` (new nodes, new links from existing sockets,
new group interface sockets, new view-layer AOVs) and removed by ``log.restore()``; no existing node,
link or value is modified.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import bpy

from .. import compat
from ..contract import render_json

__all__ = ["AOV_TYPES", "DEFAULTS", "choose_aov_names", "add_view_layer_aovs", "inject_materials",
           "InjectionReport"]

AOV_TYPES = {"basecolor": "COLOR", "roughness": "VALUE", "metallic": "VALUE"}
# values of shaders without material information (the engine fills surfaces without an AOV with the same)
DEFAULTS = {k: tuple(v) if isinstance(v, list) else v for k, v in render_json.AOV_DEFAULTS.items()}
_GROUP_SOCKET_TYPES = {"basecolor": "NodeSocketColor", "roughness": "NodeSocketFloat", "metallic": "NodeSocketFloat"}
_MAX_DEPTH = 64


@dataclass
class InjectionReport:
    materials: list[str] = field(default_factory=list)   # got AOV nodes
    skipped: list[str] = field(default_factory=list)     # "name: reason" — rendered with the defaults
    groups: list[str] = field(default_factory=list)      # node groups that got extra outputs
    warnings: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ AOV names
def _aov_names_in_use(view_layer) -> set[str]:
    used = {a.name for a in view_layer.aovs}
    trees = [m.node_tree for m in bpy.data.materials if m.node_tree is not None]
    trees += [g for g in bpy.data.node_groups if g.bl_idname == "ShaderNodeTree"]
    for tree in trees:
        for node in tree.nodes:
            if node.bl_idname == "ShaderNodeOutputAOV":
                used.add(node.aov_name)
    return used


def choose_aov_names(view_layer) -> dict[str, str]:
    """{'basecolor': AOV name, …}: the plain names where free, else ``DR_<name>`` (then ``DR_<name>_2`` …)
    so the export never shares an AOV with one the user already writes."""
    used = _aov_names_in_use(view_layer)
    out = {}
    for key in AOV_TYPES:
        cands = [key, f"DR_{key}"] + [f"DR_{key}_{i}" for i in range(2, 100)]
        name = next(c for c in cands if c not in used)
        used.add(name)
        out[key] = name
    return out


def add_view_layer_aovs(view_layer, names: dict[str, str], log) -> None:
    """Register the AOVs on the view layer (removed again on restore)."""
    # undone last: refresh the Render Layers nodes' sockets once the AOVs are gone (removing an AOV
    # alone leaves its compositor socket available)
    log.push(f"{view_layer.name}: refresh render passes", view_layer.update_render_passes)
    log.snapshot(f"{view_layer.name}.active_aov_index", lambda: view_layer.active_aov_index,
                 lambda v: setattr(view_layer, "active_aov_index", v))
    for key, name in names.items():
        aov = view_layer.aovs.add()
        aov.name = name
        aov.type = AOV_TYPES[key]

        def undo(vl=view_layer, aov=aov, name=name):
            try:
                vl.aovs.remove(aov)
            except (ReferenceError, RuntimeError, TypeError):
                for a in vl.aovs:
                    if a.name == name:
                        vl.aovs.remove(a)
                        break

        log.push(f"{view_layer.name}: AOV {name}", undo)


# ------------------------------------------------------------------------------------------ values
# A value is ("const", python value) or ("sock", output socket of the current tree).
@dataclass
class _Triple:
    basecolor: tuple
    roughness: tuple
    metallic: tuple
    informative: bool

    def get(self, key):
        return getattr(self, key)


def _default_triple() -> _Triple:
    return _Triple(("const", DEFAULTS["basecolor"]), ("const", DEFAULTS["roughness"]),
                   ("const", DEFAULTS["metallic"]), False)


def _active_link(sock):
    if not sock.is_linked:
        return None
    for link in sock.links:
        if getattr(link, "is_muted", False) or not getattr(link, "is_valid", True):
            continue
        return link
    return None


def _const_of(sock, key):
    v = getattr(sock, "default_value", None)
    if v is None:
        return DEFAULTS[key]
    if key == "basecolor":
        try:
            vals = tuple(float(x) for x in v)
        except TypeError:  # a float socket feeding a colour → grey
            vals = (float(v),) * 3
        return (vals + (vals[-1],) * 3)[:3]
    try:
        return float(v)
    except TypeError:  # a colour/vector socket feeding a scalar → its mean (Blender uses luminance-ish)
        vals = tuple(float(x) for x in v)[:3]
        return sum(vals) / len(vals)


def _input_value(sock, key):
    """The value feeding an input socket: the linked upstream output, or the socket's own value."""
    link = _active_link(sock)
    if link is not None:
        return ("sock", link.from_socket)
    return ("const", _const_of(sock, key))


class _Injector:
    def __init__(self, log, report: InjectionReport):
        self.log = log
        self.report = report
        self._group_cache: dict[tuple, _Triple] = {}

    # --- resolution of a shader output socket into (basecolor, roughness, metallic) in its tree
    def shader_input(self, tree, sock, depth) -> _Triple:
        link = _active_link(sock)
        if link is None:
            return _default_triple()
        return self.shader_output(tree, link.from_socket, depth + 1)

    def shader_output(self, tree, out_sock, depth) -> _Triple:
        if depth > _MAX_DEPTH:
            return _default_triple()
        node = out_sock.node
        bl = node.bl_idname
        if bl == "NodeReroute":
            return self.shader_input(tree, node.inputs[0], depth)
        if node.mute:
            for il in node.internal_links:
                if il.to_socket == out_sock or il.to_socket.identifier == out_sock.identifier:
                    return self.shader_input(tree, il.from_socket, depth)
            return _default_triple()
        inputs = {s.name: s for s in node.inputs if s.enabled}
        if bl == "ShaderNodeBsdfPrincipled":
            return _Triple(_input_value(inputs["Base Color"], "basecolor"), _input_value(inputs["Roughness"], "roughness"),
                           _input_value(inputs["Metallic"], "metallic"), True)
        if bl == "ShaderNodeBsdfMetallic":
            base = inputs.get("Base Color")
            rough = inputs.get("Roughness")
            return _Triple(_input_value(base, "basecolor") if base else ("const", DEFAULTS["basecolor"]),
                           _input_value(rough, "roughness") if rough else ("const", DEFAULTS["roughness"]),
                           ("const", 1.0), True)
        if bl == "ShaderNodeBsdfDiffuse":
            return _Triple(_input_value(inputs["Color"], "basecolor"), ("const", DEFAULTS["roughness"]),
                           ("const", DEFAULTS["metallic"]), True)
        if bl in ("ShaderNodeMixShader", "ShaderNodeAddShader"):
            shaders = [s for s in node.inputs if s.type == "SHADER"]
            a = self.shader_input(tree, shaders[0], depth)
            b = self.shader_input(tree, shaders[1], depth)
            fac = _input_value(node.inputs[0], "roughness") if bl == "ShaderNodeMixShader" else ("const", 0.5)
            return self.mix(tree, fac, a, b)
        if bl == "ShaderNodeGroup":
            return self.group(tree, node, out_sock, depth)
        if "Base Color" in inputs:
            return _Triple(_input_value(inputs["Base Color"], "basecolor"), ("const", DEFAULTS["roughness"]),
                           ("const", DEFAULTS["metallic"]), True)
        return _default_triple()

    # --- Mix Shader / Add Shader
    def mix(self, tree, fac, a: _Triple, b: _Triple) -> _Triple:
        if a.informative and not b.informative:
            return a
        if b.informative and not a.informative:
            return b
        if not a.informative and not b.informative:
            return _default_triple()
        return _Triple(*(self.mix_value(tree, fac, a.get(k), b.get(k), k) for k in AOV_TYPES), True)

    def mix_value(self, tree, fac, va, vb, key):
        if va == vb:
            return va
        if fac[0] == "const" and va[0] == "const" and vb[0] == "const":
            f = min(max(float(fac[1]), 0.0), 1.0)
            if key == "basecolor":
                return ("const", tuple(x + f * (y - x) for x, y in zip(va[1], vb[1])))
            return ("const", va[1] + f * (vb[1] - va[1]))
        if fac[0] == "const" and float(fac[1]) <= 0.0:
            return va
        if fac[0] == "const" and float(fac[1]) >= 1.0:
            return vb
        colour = key == "basecolor"
        node = self.log.new_node(tree, "ShaderNodeMix")
        node.data_type = "RGBA" if colour else "FLOAT"
        node.blend_type = "MIX"
        node.clamp_factor = True
        node.label = "DiffusionRenderer export"
        ins = {s.identifier: s for s in node.inputs}
        outs = {s.identifier: s for s in node.outputs}
        suffix = "Color" if colour else "Float"
        self._feed(tree, ins["Factor_Float"], fac, "roughness")
        self._feed(tree, ins["A_" + suffix], va, key)
        self._feed(tree, ins["B_" + suffix], vb, key)
        return ("sock", outs["Result_" + suffix])

    def _feed(self, tree, in_sock, value, key):
        if value[0] == "sock":
            self.log.new_link(tree, value[1], in_sock)
        elif key == "basecolor" and len(in_sock.default_value) == 4:
            in_sock.default_value = tuple(value[1][:3]) + (1.0,)
        else:
            in_sock.default_value = value[1]

    # --- node groups: resolve inside, expose non-constant values through new group outputs
    def group(self, tree, node, out_sock, depth) -> _Triple:
        gtree = node.node_tree
        if gtree is None:
            return _default_triple()
        key = (gtree.name, getattr(gtree.library, "filepath", None), out_sock.identifier)
        if key not in self._group_cache:
            self._group_cache[key] = self._expose_group(gtree, out_sock.identifier, depth)
        inner = self._group_cache[key]
        outs = {s.identifier: s for s in node.outputs}

        def outer(v):
            if v[0] == "const":
                return v
            sock = outs.get(v[1])
            return ("sock", sock) if sock is not None else None

        vals = []
        for k in AOV_TYPES:
            v = outer(inner.get(k))
            vals.append(v if v is not None else ("const", DEFAULTS[k]))
        return _Triple(*vals, inner.informative)

    def _expose_group(self, gtree, out_identifier, depth) -> _Triple:
        """Resolve the group's output socket inside the group; returns a triple whose socket values are
        the *identifiers* of new group outputs (constants stay constants)."""
        outputs = [n for n in gtree.nodes if n.bl_idname == "NodeGroupOutput"]
        out_node = next((n for n in outputs if n.is_active_output), outputs[0] if outputs else None)
        if out_node is None:
            return _default_triple()
        in_sock = next((s for s in out_node.inputs if s.identifier == out_identifier), None)
        if in_sock is None:
            return _default_triple()
        inner = self.shader_input(gtree, in_sock, depth + 1)
        editable = gtree.library is None
        vals = []
        for k in AOV_TYPES:
            v = inner.get(k)
            if v[0] == "const":
                vals.append(v)
                continue
            if not editable:
                self.report.warnings.append(f"node group {gtree.name!r} is linked from a library: its {k} "
                                            "cannot be routed out; the default is used")
                vals.append(("const", DEFAULTS[k]))
                continue
            item = self.log.new_interface_socket(gtree, f"DR_{k}", in_out="OUTPUT", socket_type=_GROUP_SOCKET_TYPES[k])
            target = next(s for s in out_node.inputs if s.identifier == item.identifier)
            self.log.new_link(gtree, v[1], target)
            vals.append(("sock", item.identifier))
            if gtree.name not in self.report.groups:
                self.report.groups.append(gtree.name)
        return _Triple(*vals, inner.informative)

    # --- one material
    def material(self, mat, names: dict[str, str], target: str) -> bool:
        tree = mat.node_tree
        out = tree.get_output_node(target) if hasattr(tree, "get_output_node") else None
        if out is None:
            out = next((n for n in tree.nodes if n.bl_idname == "ShaderNodeOutputMaterial"), None)
        triple = self.shader_input(tree, out.inputs["Surface"], 0) if out is not None else _default_triple()
        for k, aov_name in names.items():
            node = self.log.new_node(tree, "ShaderNodeOutputAOV")
            node.aov_name = aov_name
            node.label = "DiffusionRenderer export"
            sock = node.inputs["Color" if AOV_TYPES[k] == "COLOR" else "Value"]
            self._feed(tree, sock, triple.get(k), k)
        return True


def inject_materials(names: dict[str, str], log, *, engine: str = "CYCLES", materials=None) -> InjectionReport:
    """Add the AOV outputs to every material that renders through nodes (default: all materials in the
    file; linked and grease-pencil materials are skipped and rendered with the defaults)."""
    report = InjectionReport()
    target = "EEVEE" if compat.is_eevee(engine) else "CYCLES"
    inj = _Injector(log, report)
    for mat in (bpy.data.materials if materials is None else materials):
        if getattr(mat, "is_grease_pencil", False):
            continue
        if mat.library is not None:
            report.skipped.append(f"{mat.name}: linked from a library (defaults used)")
            continue
        if not compat.uses_nodes(mat):
            report.skipped.append(f"{mat.name}: does not use nodes (defaults used)")
            continue
        inj.material(mat, names, target)
        report.materials.append(mat.name)
    return report
