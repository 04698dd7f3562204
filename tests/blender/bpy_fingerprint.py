"""A deep, comparable dump of everything the Blender export must leave unchanged (:func:`fingerprint`)
and the differences between two dumps (:func:`diff`). Imported through bpy_scene, which skips the test
module when bpy is absent.
"""
from __future__ import annotations

import warnings

import bpy

_SKIP_PROPS = {"rna_type", "bl_rna", "is_evaluated", "original", "session_uid", "users", "is_dirty", "tag",
               "is_runtime_data", "use_extra_user", "is_missing", "is_embedded_data", "preview", "override_library",
               "library_weak_reference", "asset_data", "dimensions", "location_absolute", "is_library_indirect",
               "id_type", "name_full", "is_editmode", "internal_links", "bl_description", "bl_icon",
               "is_linked_packed", "depsgraph"}


def _value(v):
    if isinstance(v, float):
        return round(v, 6)
    if isinstance(v, (str, int, bool)) or v is None:
        return v
    if isinstance(v, bpy.types.ID):
        return ("ID", v.name)
    try:
        return tuple(_value(x) for x in v)
    except TypeError:
        return repr(v)


def rna_dump(struct, depth: int = 2, _seen=None):
    """Every plain property of an RNA struct (nested owned structs to ``depth``)."""
    if struct is None:
        return None
    out = {}
    for prop in struct.bl_rna.properties:
        key = prop.identifier
        if key in _SKIP_PROPS:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                val = getattr(struct, key)
        except Exception as exc:  # noqa: BLE001
            out[key] = f"<error {type(exc).__name__}>"
            continue
        if prop.type == "POINTER":
            if val is None or isinstance(val, bpy.types.ID):
                out[key] = _value(val)
            elif depth > 0:
                out[key] = rna_dump(val, depth - 1)
        elif prop.type == "COLLECTION":
            if depth > 0 and len(val) <= 64:
                out[key] = [rna_dump(item, depth - 1) if not isinstance(item, bpy.types.ID) else _value(item)
                            for item in val]
        else:
            out[key] = _value(val)
    return out


def tree_fingerprint(tree):
    if tree is None:
        return None
    nodes = {}
    for n in tree.nodes:
        d = rna_dump(n, depth=0)
        d["inputs"] = [(s.identifier, s.name, _value(getattr(s, "default_value", None)), s.hide, s.enabled)
                       for s in n.inputs]
        # Render Layers nodes keep the sockets of removed passes/AOVs as unavailable (Blender does the same
        # when a user removes an AOV): compare what is available
        d["outputs"] = [(s.identifier, s.name, _value(getattr(s, "default_value", None))) for s in n.outputs
                        if s.enabled or n.bl_idname != "CompositorNodeRLayers"]
        d["parent"] = n.parent.name if n.parent else None
        nodes[n.name] = d
    links = sorted((lk.from_node.name, lk.from_socket.identifier, lk.to_node.name, lk.to_socket.identifier,
                    lk.is_muted) for lk in tree.links)
    iface = None
    if hasattr(tree, "interface"):
        iface = [(getattr(i, "item_type", ""), i.name, getattr(i, "in_out", ""), getattr(i, "socket_type", ""),
                  getattr(i, "identifier", "")) for i in tree.interface.items_tree]
        iface.append(("active_index", tree.interface.active_index))
    return {"nodes": nodes, "links": links, "interface": iface,
            "active": tree.nodes.active.name if tree.nodes.active else None}


def fingerprint(scene=None):
    """Materials, node groups, worlds, the scene's render/cycles/eevee/view-layer/compositor settings, the
    frame and the datablock lists — everything the export must leave as it was."""
    from diffusion_renderer_addon import compat

    scene = scene or bpy.context.scene
    fp = {"materials": {}, "node_groups": {}, "worlds": {}}
    for m in bpy.data.materials:
        d = rna_dump(m, depth=0)
        d["tree"] = tree_fingerprint(m.node_tree)
        fp["materials"][m.name] = d
    for g in bpy.data.node_groups:
        fp["node_groups"][g.name] = tree_fingerprint(g)
    for w in bpy.data.worlds:
        fp["worlds"][w.name] = tree_fingerprint(w.node_tree)
    fp["render"] = rna_dump(scene.render, depth=2)
    fp["cycles"] = rna_dump(scene.cycles, depth=1)
    fp["eevee"] = rna_dump(scene.eevee, depth=1)
    fp["view_layers"] = [rna_dump(v, depth=2) for v in scene.view_layers]
    fp["scene"] = {"frame": scene.frame_current, "subframe": scene.frame_subframe, "camera": _value(scene.camera),
                   "world": _value(scene.world)}
    if compat.has_compositing_node_group():
        fp["compositor"] = (_value(scene.compositing_node_group), tree_fingerprint(scene.compositing_node_group))
    else:
        fp["compositor"] = (scene.use_nodes, tree_fingerprint(scene.node_tree))
    fp["data"] = {k: sorted(x.name for x in getattr(bpy.data, k))
                  for k in ("materials", "node_groups", "images", "objects", "scenes", "cameras", "meshes", "worlds",
                            "movieclips", "textures")}
    return fp


def diff(a, b, path="") -> list[str]:
    """Human-readable differences between two fingerprints."""
    out = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                out.append(f"{path}/{k}: {'missing before' if k not in a else 'missing after'}")
            else:
                out += diff(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            out += diff(x, y, f"{path}[{i}]")
    elif a != b:
        if a == "" and path.endswith("linear_colorspace_settings/name"):
            return out  # factory files hold an invalid (never initialised) value Blender fills in on use
        out.append(f"{path}: {a!r} → {b!r}")
    return out

