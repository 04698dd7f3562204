"""A compositor node group per imported set: one Image node per pass inside a ``CompositorNodeTree``
group whose outputs are the passes, and a Group node for it in the scene's compositor tree.

The artist's compositing is never changed: the Group node is added (unconnected) only to a compositor
tree the scene already uses (4.x ``scene.use_nodes`` with ``scene.node_tree``, 5.x
``scene.compositing_node_group``); a scene without compositing gets none (no tree is created, nothing is
switched on), and the group waits in the file (fake user) for Add › Group. A re-run reuses the group and
its Group node (the artist's links from it stay): its Image nodes get the new frame range.
"""
from __future__ import annotations

from .. import compat
from . import names
from .sequences import PassSequence

__all__ = ["build_compositor_group", "add_group_to_scene", "scene_tree"]

_SPACING = 260


def _outputs(group) -> list:
    return [i.name for i in group.interface.items_tree if getattr(i, "in_out", None) == "OUTPUT"]


def build_compositor_group(name: str, sequences: dict[str, PassSequence]):
    """A ``CompositorNodeTree`` node group ``name`` with an Image node per pass (frame range set) linked to
    a Group Output socket named after the pass (colour sockets; single-channel passes read as grey). The
    group of an earlier run of the same name is reused: refreshed in place when it has the same passes,
    rebuilt otherwise."""
    import bpy

    group = names.reusable(bpy.data.node_groups, name)
    if group is not None and group.bl_idname == "CompositorNodeTree" and _outputs(group) == list(sequences):
        for node in group.nodes:
            if node.bl_idname == "CompositorNodeImage" and node.name in sequences:
                node.image = sequences[node.name].image
                sequences[node.name].configure(node)
        return group
    if group is None or group.bl_idname != "CompositorNodeTree":
        group = names.tag(bpy.data.node_groups.new(name, "CompositorNodeTree"), name)
    else:
        group.nodes.clear()
        group.interface.clear()
    group.use_fake_user = True            # kept in the saved file even where no compositor uses it
    out = group.nodes.new("NodeGroupOutput")
    out.location = (2 * _SPACING, 0)
    for i, (pass_name, seq) in enumerate(sequences.items()):
        item = compat.new_interface_socket(group, pass_name, in_out="OUTPUT", socket_type="NodeSocketColor")
        node = group.nodes.new("CompositorNodeImage")
        node.name = node.label = pass_name
        node.image = seq.image
        seq.configure(node)
        node.location = (0, -i * _SPACING)
        sock = next(s for s in out.inputs if s.identifier == item.identifier)
        group.links.new(node.outputs["Image"], sock)
    return group


def scene_tree(scene):
    """The compositor tree the scene renders through, or None (never created here)."""
    if compat.has_compositing_node_group():
        return scene.compositing_node_group
    return scene.node_tree if scene.use_nodes else None


def add_group_to_scene(scene, group, *, label: str | None = None):
    """A Group node using ``group`` in the scene's compositor tree, added unconnected (an existing one is
    reused); returns (tree, node), or (None, None) when the scene does not use compositing."""
    tree = scene_tree(scene)
    if tree is None:
        return None, None
    node = next((n for n in tree.nodes if n.bl_idname == "CompositorNodeGroup" and n.node_tree == group), None)
    if node is not None:
        return tree, node
    node = tree.nodes.new("CompositorNodeGroup")
    node.node_tree = group
    node.label = label or group.name
    xs = [n.location.x for n in tree.nodes if n is not node]
    ys = [n.location.y for n in tree.nodes if n is not node]
    node.location = ((min(xs) - 400) if xs else 0, (min(ys) - 200) if ys else 0)
    return tree, node
