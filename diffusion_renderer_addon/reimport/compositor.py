"""A compositor node group per imported set: one Image node per pass inside a ``CompositorNodeTree``
group whose outputs are the passes, and a Group node for it added to the scene's compositor tree
(4.x ``scene.use_nodes`` / ``scene.node_tree``, 5.x ``scene.compositing_node_group``, through
:func:`..compat.compositor_tree`).

The Group node is added unconnected, so the scene's render result is unchanged: link its outputs where
wanted. (In 4.x a scene without compositing gets ``use_nodes = True`` with Blender's default Render
Layers → Composite graph, which renders the same image.)
"""
from __future__ import annotations

from .. import compat
from .sequences import PassSequence

__all__ = ["build_compositor_group", "add_group_to_scene"]

_SPACING = 260


def build_compositor_group(name: str, sequences: dict[str, PassSequence]):
    """A new ``CompositorNodeTree`` node group with an Image node per pass (frame range set) linked to
    a Group Output socket named after the pass (colour sockets; single-channel passes read as grey)."""
    import bpy

    group = bpy.data.node_groups.new(name, "CompositorNodeTree")
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


def add_group_to_scene(scene, group, *, label: str | None = None):
    """Add a Group node using ``group`` to the scene's compositor tree (created when missing); returns
    (tree, node)."""
    tree = compat.compositor_tree(scene, create=True)
    node = tree.nodes.new("CompositorNodeGroup")
    node.node_tree = group
    node.label = label or group.name
    xs = [n.location.x for n in tree.nodes if n is not node]
    ys = [n.location.y for n in tree.nodes if n is not node]
    node.location = ((min(xs) - 400) if xs else 0, (min(ys) - 200) if ys else 0)
    return tree, node
