"""A change log that puts a Blender scene back exactly as it was.

Every change the exporters make to the user's data goes through a :class:`ChangeLog`: property
assignments (old value remembered), nodes and interface sockets added to node trees, view-layer AOVs
added, image-format snapshots. :meth:`ChangeLog.restore` undoes them in reverse order, in a ``finally``
so a failure midway leaves nothing behind; an undo step that fails (a value that is only valid after
another one is restored) is retried once after the others, and what still fails is reported together.
Only additions are made to node trees (new nodes, new links from existing outputs, new group outputs),
so removing what was added restores the trees: existing nodes, links and values are never edited.
"""
from __future__ import annotations

from typing import Callable

__all__ = ["ChangeLog", "RestoreError"]


class RestoreError(RuntimeError):
    """Some changes could not be undone; the message lists them."""


def _plain(value):
    """A detached copy of an RNA value (arrays/vectors/matrices become tuples)."""
    if isinstance(value, (str, bytes, int, float, bool)) or value is None:
        return value
    try:
        if hasattr(value, "__len__") and not hasattr(value, "bl_rna"):
            return tuple(_plain(v) for v in value)
    except TypeError:
        pass
    return value


class ChangeLog:
    def __init__(self):
        self._undo: list[tuple[str, Callable[[], None]]] = []

    def __len__(self):
        return len(self._undo)

    def push(self, label: str, undo: Callable[[], None]) -> None:
        self._undo.append((label, undo))

    # --- properties
    def set(self, owner, attr: str, value) -> None:
        """``setattr(owner, attr, value)``, remembering the old value (skipped when equal)."""
        old = _plain(getattr(owner, attr))
        try:
            same = old == _plain(value)
        except Exception:  # noqa: BLE001 - incomparable RNA values
            same = False
        if same:
            return
        setattr(owner, attr, value)

        def undo(owner=owner, attr=attr, old=old):
            setattr(owner, attr, old)

        self.push(f"{getattr(owner, 'name', type(owner).__name__)}.{attr}", undo)

    def snapshot(self, label: str, take: Callable[[], object], put: Callable[[object], None]) -> None:
        """Remember ``take()`` now; ``put(value)`` on restore."""
        value = take()
        self.push(label, lambda: put(value))

    # --- node trees
    def new_node(self, tree, bl_idname: str, **props):
        node = tree.nodes.new(bl_idname)
        name = node.name

        def undo(tree=tree, node=node, name=name):
            try:
                tree.nodes.remove(node)
            except (ReferenceError, RuntimeError):
                n = tree.nodes.get(name)
                if n is not None:
                    tree.nodes.remove(n)

        self.push(f"{tree.name}: node {name}", undo)
        for key, value in props.items():
            setattr(node, key, value)
        return node

    def new_link(self, tree, from_socket, to_socket):
        """A link into a socket of a node this log created (removed with the node; recorded anyway so a
        link into an existing node would be undone too)."""
        link = tree.links.new(from_socket, to_socket)

        def undo(tree=tree, link=link):
            try:
                tree.links.remove(link)
            except (ReferenceError, RuntimeError):
                pass

        self.push(f"{tree.name}: link", undo)
        return link

    def new_interface_socket(self, tree, name: str, *, in_out: str, socket_type: str):
        iface = tree.interface
        active = iface.active_index
        item = iface.new_socket(name=name, in_out=in_out, socket_type=socket_type)
        ident = item.identifier

        def undo(tree=tree, item=item, ident=ident, active=active):
            iface = tree.interface
            try:
                iface.remove(item)
            except (ReferenceError, RuntimeError):
                it = next((i for i in iface.items_tree if getattr(i, "identifier", None) == ident), None)
                if it is not None:
                    iface.remove(it)
            try:
                iface.active_index = active
            except (TypeError, ValueError):
                pass

        self.push(f"{tree.name}: interface socket {name}", undo)
        return item

    # --- restore
    def restore(self) -> None:
        """Undo everything, newest first. Raises RestoreError (after undoing all it can) if some steps
        failed twice."""
        steps, self._undo = list(reversed(self._undo)), []
        failed = []
        for label, undo in steps:
            try:
                undo()
            except Exception as exc:  # noqa: BLE001 - keep restoring the rest
                failed.append((label, undo, exc))
        still = []
        for label, undo, _exc in failed:
            try:
                undo()
            except Exception as exc:  # noqa: BLE001
                still.append(f"{label} ({exc})")
        if still:
            raise RestoreError("could not restore: " + "; ".join(still))
