"""Every Blender 4.2 LTS ↔ 5.x API difference the add-on depends on, behind feature detection.

Nothing else in the add-on branches on the Blender version: it calls these helpers. Detection looks at
what the running Blender actually has (``hasattr``, ``bl_rna.properties``); the version number is only
a last resort for dynamic enums that RNA does not list (the EEVEE engine id). Verified on bpy 4.2.23,
4.5.x, 5.0.1 and 5.2.x (tests/blender/test_export_compat.py).

| area | 4.2 / 4.5 | 5.0+ |
|---|---|---|
| compositor tree | ``scene.use_nodes = True``; ``scene.node_tree`` | ``scene.compositing_node_group`` (a ``CompositorNodeTree`` node group, None by default) |
| final output | ``CompositorNodeComposite`` | ``NodeGroupOutput`` + interface output socket ``Image`` |
| File Output node | ``base_path``, ``file_slots`` / ``layer_slots`` | ``directory``, ``file_name``, ``file_output_items.new(type, name)`` |
| multilayer EXR | ``file_format = 'OPEN_EXR_MULTILAYER'`` | ``media_type = 'MULTI_LAYER_IMAGE'`` |
| EEVEE engine id | ``BLENDER_EEVEE_NEXT`` | ``BLENDER_EEVEE`` |
| ``Material/World.use_nodes`` | False on new data | deprecated, always True |
| VSE strips | ``sequences`` / ``sequences_all`` (4.5 has both) | ``strips`` / ``strips_all`` |
| strip timing | ``frame_start``, ``frame_final_start/end`` | 5.2: ``content_start``, ``left/right_handle`` |
| Render Layers sockets / EXR layer names | short (``DiffCol``) | long (``Diffuse Color``) |
"""
from __future__ import annotations

import warnings

import bpy

from .contract import blender_passes

__all__ = [
    "BLENDER_VERSION", "version_string", "has_compositing_node_group", "compositor_tree", "composite_output",
    "new_file_output", "file_output_set_path", "file_output_add", "file_output_clear", "set_exr_format",
    "follow_scene_colour_management", "set_image_format", "image_format", "restore_image_format",
    "is_multilayer_exr", "eevee_engine_id", "engine_id", "is_eevee",
    "uses_nodes", "ensure_nodes", "vse_strips", "vse_strips_all", "vse_new_image", "vse_new_movie",
    "strip_timing", "strip_trim_start",
    "PASS_NAMES", "canonical_pass", "render_layer_socket", "pass_layer_names", "new_interface_socket",
]

BLENDER_VERSION: tuple = tuple(bpy.app.version)


def version_string() -> str:
    return getattr(bpy.app, "version_string", ".".join(map(str, BLENDER_VERSION)))


# ------------------------------------------------------------------------------------------ compositor
def has_compositing_node_group() -> bool:
    """True where the compositor is a node-group datablock (5.0+) rather than ``scene.node_tree``."""
    return "compositing_node_group" in bpy.types.Scene.bl_rna.properties


def compositor_tree(scene, *, create: bool = True, name: str = "Compositing"):
    """The scene's compositor node tree, created (and enabled) when ``create`` and there is none.

    4.x: ``scene.use_nodes = True`` makes ``scene.node_tree`` (with Blender's default Render Layers and
    Composite nodes). 5.x: a new ``CompositorNodeTree`` group assigned to ``scene.compositing_node_group``
    (empty). Returns None when there is none and ``create`` is False."""
    if has_compositing_node_group():
        tree = scene.compositing_node_group
        if tree is None and create:
            tree = bpy.data.node_groups.new(name, "CompositorNodeTree")
            scene.compositing_node_group = tree
        return tree
    if scene.node_tree is None or not scene.use_nodes:
        if not create:
            return scene.node_tree if scene.use_nodes else None
        scene.use_nodes = True
    return scene.node_tree


def new_interface_socket(tree, name: str, *, in_out: str = "OUTPUT", socket_type: str = "NodeSocketColor"):
    """Add a group-interface socket (4.0+ ``tree.interface`` API) and return the interface item."""
    return tree.interface.new_socket(name=name, in_out=in_out, socket_type=socket_type)


def composite_output(tree):
    """(node, input socket) of the tree's final image output, created when missing: a Composite node in
    4.x, a Group Output with an ``Image`` colour socket in 5.x."""
    comp_type = getattr(bpy.types, "CompositorNodeComposite", None)
    if comp_type is not None:
        node = next((n for n in tree.nodes if n.bl_idname == "CompositorNodeComposite"), None)
        if node is None:
            node = tree.nodes.new("CompositorNodeComposite")
        return node, node.inputs[0]
    item = next((i for i in tree.interface.items_tree
                 if getattr(i, "in_out", None) == "OUTPUT" and getattr(i, "socket_type", "") == "NodeSocketColor"),
                None)
    if item is None:
        item = new_interface_socket(tree, "Image", in_out="OUTPUT", socket_type="NodeSocketColor")
    node = next((n for n in tree.nodes if n.bl_idname == "NodeGroupOutput" and n.is_active_output), None)
    if node is None:
        node = next((n for n in tree.nodes if n.bl_idname == "NodeGroupOutput"), None) or tree.nodes.new("NodeGroupOutput")
    sock = next((s for s in node.inputs if s.identifier == item.identifier), None) or node.inputs[0]
    return node, sock


# ------------------------------------------------------------------------------------------ File Output
def new_file_output(tree, directory: str, *, file_name: str = ""):
    """A File Output node writing into ``directory`` (no default inputs left in it). Single-layer
    files are named ``<file_name><item name><frame>`` (5.x) / ``<file_name><slot path><frame>`` (4.x, the
    slot path is the item name); a multilayer file ``<file_name><frame>.exr`` on both. Set the format with
    :func:`set_exr_format` / :func:`set_image_format` on ``node.format``.

    Verified behaviour (4.2, 5.0): File Output nodes write during ``render.render(animation=True)``
    (frame-numbered files); a single-frame ``render.render()`` writes nothing (4.x) or unnumbered files
    (5.x); inputs that are single values (an unconnected colour, an RGB node) are not written."""
    node = tree.nodes.new("CompositorNodeOutputFile")
    file_output_set_path(node, directory, file_name=file_name)
    file_output_clear(node)
    return node


def file_output_set_path(node, directory: str, *, file_name: str = "") -> None:
    if hasattr(node, "directory"):
        node.directory = directory
        node.file_name = file_name
    else:
        node.base_path = directory.rstrip("/\\") + "/" + file_name if file_name else directory


def file_output_clear(node) -> None:
    if hasattr(node, "file_output_items"):
        node.file_output_items.clear()
    else:
        node.file_slots.clear()
        node.layer_slots.clear()


_ITEM_TYPES = {"RGBA": "RGBA", "COLOR": "RGBA", "FLOAT": "FLOAT", "VALUE": "FLOAT", "VECTOR": "VECTOR"}


def file_output_add(node, name: str, socket_type: str = "RGBA"):
    """Add an input (item / slot) named ``name`` and return its input socket. ``socket_type`` 'RGBA',
    'FLOAT' or 'VECTOR' (5.x item types; 4.x slots are untyped and take what is linked). For a
    multilayer format in 4.x the layer slot is used, otherwise the file slot (path = ``name``)."""
    if hasattr(node, "file_output_items"):
        item = node.file_output_items.new(_ITEM_TYPES.get(socket_type.upper(), "RGBA"), name)
        # the node also has a trailing "__extend__" socket: find the item's own input
        return next(s for s in node.inputs if s.name == item.name and s.identifier != "__extend__")
    if is_multilayer_exr(node.format):
        return node.layer_slots.new(name)
    return node.file_slots.new(name)


# ------------------------------------------------------------------------------------------ image formats
def _has_media_type(settings) -> bool:
    return "media_type" in settings.bl_rna.properties


def is_multilayer_exr(settings) -> bool:
    return settings.file_format == "OPEN_EXR_MULTILAYER"


def set_exr_format(settings, *, multilayer: bool, color_depth: str = "32", codec: str = "ZIP",
                   color_mode: str = "RGBA") -> None:
    """Make ``settings`` (``scene.render.image_settings`` or a File Output ``node.format``) write EXR:
    multilayer (5.x ``media_type = 'MULTI_LAYER_IMAGE'``, 4.x ``file_format = 'OPEN_EXR_MULTILAYER'``) or
    single-layer ``OPEN_EXR``. Colour depth '16' (half) or '32' (float)."""
    if _has_media_type(settings):
        settings.media_type = "MULTI_LAYER_IMAGE" if multilayer else "IMAGE"
        if not multilayer:
            settings.file_format = "OPEN_EXR"
    else:
        settings.file_format = "OPEN_EXR_MULTILAYER" if multilayer else "OPEN_EXR"
    settings.color_depth = color_depth
    settings.exr_codec = codec
    if not multilayer:
        settings.color_mode = color_mode


def follow_scene_colour_management(settings) -> None:
    """Output colour management as the scene's: image settings may override it (``color_management =
    'OVERRIDE'``), which for EXRs changes the linear colour space of the written pixels."""
    if "color_management" in settings.bl_rna.properties and settings.color_management != "FOLLOW_SCENE":
        settings.color_management = "FOLLOW_SCENE"


def set_image_format(settings, file_format: str, *, color_depth: str | None = None, color_mode: str | None = None):
    """Single-image formats ('PNG', 'OPEN_EXR', 'TIFF', 'JPEG' …) on 4.x and 5.x."""
    if file_format in ("OPEN_EXR_MULTILAYER", "MULTILAYER"):
        set_exr_format(settings, multilayer=True, color_depth=color_depth or "32")
        return
    if _has_media_type(settings) and settings.media_type != "IMAGE":
        settings.media_type = "IMAGE"
    settings.file_format = file_format
    if color_mode is not None:
        settings.color_mode = color_mode
    if color_depth is not None:
        settings.color_depth = color_depth


def image_format(settings) -> dict:
    """A snapshot of the format-defining properties (restore with :func:`restore_image_format`)."""
    keys = ["media_type", "file_format", "color_mode", "color_depth", "exr_codec", "compression", "quality",
            "use_preview", "color_management"]
    snap = {k: getattr(settings, k) for k in keys if k in settings.bl_rna.properties}
    lin = getattr(settings, "linear_colorspace_settings", None)
    if lin is not None and lin.name:  # '' = never initialised (Blender sets it on the next format change)
        snap["linear_colorspace_settings.name"] = lin.name
    return snap


def restore_image_format(settings, snapshot: dict) -> None:
    """Put back an :func:`image_format` snapshot: container/format first, then the rest (a colour depth
    is only valid once its format is set). Values the format does not accept are skipped."""
    for key in ("media_type", "file_format"):
        if key in snapshot:
            try:
                setattr(settings, key, snapshot[key])
            except (TypeError, ValueError, AttributeError):
                pass
    for key, value in snapshot.items():
        if key in ("media_type", "file_format"):
            continue
        owner, attr = settings, key
        if "." in key:
            sub, attr = key.split(".", 1)
            owner = getattr(settings, sub)
        try:
            if getattr(owner, attr) != value:
                setattr(owner, attr, value)
        except (TypeError, ValueError, AttributeError):
            pass


# ------------------------------------------------------------------------------------------ render engines
def eevee_engine_id() -> str:
    """``BLENDER_EEVEE_NEXT`` (4.2–4.5) or ``BLENDER_EEVEE`` (5.0+); each version rejects the other.
    The engine enum is dynamic (RNA does not list it), so the version decides, checked against the
    registered render engine classes where they are visible."""
    names = {getattr(c, "bl_idname", "") for c in bpy.types.RenderEngine.__subclasses__()}
    for cand in ("BLENDER_EEVEE_NEXT", "BLENDER_EEVEE"):
        if cand in names:
            return cand
    return "BLENDER_EEVEE" if BLENDER_VERSION >= (5, 0, 0) else "BLENDER_EEVEE_NEXT"


def engine_id(name: str) -> str:
    """User-facing engine name ('CYCLES', 'EEVEE', 'BLENDER_EEVEE', 'BLENDER_EEVEE_NEXT', 'WORKBENCH')
    → this Blender's id."""
    key = name.upper()
    if key in ("EEVEE", "BLENDER_EEVEE", "BLENDER_EEVEE_NEXT"):
        return eevee_engine_id()
    if key in ("WORKBENCH", "BLENDER_WORKBENCH"):
        return "BLENDER_WORKBENCH"
    return key


def is_eevee(engine: str) -> bool:
    return engine.upper().startswith("BLENDER_EEVEE") or engine.upper() == "EEVEE"


# ------------------------------------------------------------------------------------------ node trees
def uses_nodes(idblock) -> bool:
    """Whether a material / world renders through its node tree (always in 5.x)."""
    if idblock is None or getattr(idblock, "node_tree", None) is None:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return bool(getattr(idblock, "use_nodes", True))


def ensure_nodes(idblock):
    """Give a material / world a node tree it renders with (4.x: ``use_nodes = True``; 5.x: already)."""
    if not uses_nodes(idblock):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            idblock.use_nodes = True
    return idblock.node_tree


# ------------------------------------------------------------------------------------------ VSE
def vse_strips(sequence_editor):
    """Top-level strips of a sequence editor (``strips`` 4.5+/5.x, ``sequences`` 4.2)."""
    return sequence_editor.strips if hasattr(sequence_editor, "strips") else sequence_editor.sequences


def vse_strips_all(sequence_editor):
    """Every strip, meta-strip contents included."""
    return (sequence_editor.strips_all if hasattr(sequence_editor, "strips_all")
            else sequence_editor.sequences_all)


def vse_new_image(sequence_editor, name: str, filepath: str, channel: int, frame_start: int):
    return vse_strips(sequence_editor).new_image(name=name, filepath=filepath, channel=channel,
                                                 frame_start=frame_start)


def vse_new_movie(sequence_editor, name: str, filepath: str, channel: int, frame_start: int):
    return vse_strips(sequence_editor).new_movie(name=name, filepath=filepath, channel=channel,
                                                 frame_start=frame_start)


def strip_timing(strip) -> tuple[float, int, int]:
    """(content start, left handle, right handle) of a strip: the timeline frame where its source's first
    frame sits, the first visible frame, and the first frame after it. 5.2 renamed these
    (``content_start``, ``left_handle``, ``right_handle``; the 4.x names ``frame_start``,
    ``frame_final_start``, ``frame_final_end`` are deprecated there)."""
    if "left_handle" in strip.bl_rna.properties:
        return float(strip.content_start), int(strip.left_handle), int(strip.right_handle)
    return float(strip.frame_start), int(strip.frame_final_start), int(strip.frame_final_end)


def strip_trim_start(strip, frames: float) -> None:
    """Trim ``frames`` off the start of a strip (5.2 ``left_handle_offset``, before ``frame_offset_start``)."""
    if "left_handle_offset" in strip.bl_rna.properties:
        strip.left_handle_offset = frames
    else:
        strip.frame_offset_start = frames


# ------------------------------------------------------------------------------------------ pass names
# canonical name → (4.x short name, 5.x long name) of Render Layers node sockets and of the layers in a
# multilayer EXR written by the render output (``ViewLayer.<name>.<channel>``): the contract's table.
PASS_NAMES = blender_passes.LAYER_NAMES
canonical_pass = blender_passes.canonical_pass
pass_layer_names = blender_passes.pass_layer_names


def render_layer_socket(node, canonical_or_aov: str):
    """The Render Layers node output for a canonical pass name or an AOV name, or None."""
    for name in pass_layer_names(canonical_or_aov) if canonical_or_aov in PASS_NAMES else (canonical_or_aov,):
        sock = node.outputs.get(name)
        if sock is not None and getattr(sock, "enabled", True):
            return sock
    return None


# ------------------------------------------------------------------------------------------ status bar
def progress_widget(layout, factor: float, text: str) -> None:
    """A progress ring with text (``UILayout.progress``, 4.0+), else the text with a percentage."""
    if hasattr(layout, "progress"):
        layout.progress(factor=factor, type="RING", text=text)
    else:
        layout.label(text=f"{text} {factor * 100:.0f} %")


def show_in_statusbar(draw, on: bool) -> None:
    """Append ``draw(self, context)`` to the status bar's header (``on``) or remove it; idempotent."""
    header = getattr(bpy.types, "STATUSBAR_HT_header", None)
    if header is None:
        return
    try:
        header.remove(draw)
    except (ValueError, AttributeError):
        pass
    if on:
        header.append(draw)

