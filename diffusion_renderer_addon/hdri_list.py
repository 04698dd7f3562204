"""The Relight Preview HDRI list: rows with each file's name and a preview thumbnail (``bpy.utils.previews``),
Add with a multi-select file browser, Remove, and each HDRI's rotation / strength / flip, sent to the forward
job as ``hdri_settings`` (rotation in the World's Mapping Z convention, turned into the engine's
``env_rotation`` by the export's own conversion)."""
from __future__ import annotations

import math
import os

import bpy
from bpy.props import CollectionProperty, StringProperty

_PREVIEWS: dict = {"collection": None}
HDRI_EXTENSIONS = (".hdr", ".exr")


def display_name(item) -> str:
    """The row's text: the file name (the item's name when it has no file)."""
    path = item.path or ""
    return os.path.basename(bpy.path.abspath(path).rstrip("/\\")) or item.name or "(No File)"


def preview_icon(path: str) -> int:
    """The icon id of a thumbnail of ``path`` (0 when there is none: missing file, no preview support)."""
    full = os.path.abspath(bpy.path.abspath(path)) if path else ""
    if not full or not os.path.isfile(full):
        return 0
    try:
        if _PREVIEWS["collection"] is None:
            from bpy.utils import previews
            _PREVIEWS["collection"] = previews.new()
        pcoll = _PREVIEWS["collection"]
        preview = pcoll.get(full) or pcoll.load(full, full, "IMAGE")
        return preview.icon_id
    except (RuntimeError, KeyError, ImportError, AttributeError):
        return 0


def free_previews() -> None:
    """Add-on unregister: release the thumbnails."""
    pcoll, _PREVIEWS["collection"] = _PREVIEWS["collection"], None
    if pcoll is not None:
        from bpy.utils import previews
        previews.remove(pcoll)


def hdri_settings(items) -> list:
    """Each HDRI's light settings for the forward job's ``hdri_settings``: rotation as the engine's
    env_rotation (from the World's Mapping convention: 0° = unrotated), strength, flip."""
    from .export.env_export import engine_rotation_from_mapping
    return [{"rotation": engine_rotation_from_mapping(math.degrees(item.rotation)), "strength": float(item.strength),
             "flip": bool(item.flip)} for item in items]


class DR_UL_hdris(bpy.types.UIList):
    """The HDRIs of Relight Preview: a thumbnail and the file name per row, its strength beside it"""
    bl_idname = "DR_UL_hdris"

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):
        icon_value = preview_icon(item.path)
        row = layout.row(align=True)
        if icon_value:
            row.label(text=display_name(item), icon_value=icon_value)
        else:
            row.label(text=display_name(item), icon="WORLD")
        if abs(item.strength - 1.0) > 1e-6:
            row.label(text=f"×{item.strength:g}")


class DR_OT_hdri_add(bpy.types.Operator):
    """Add one or more HDRI files (.hdr, .exr) to the Relight Preview list"""
    bl_idname = "diffusion_renderer.hdri_add"
    bl_label = "Add HDRIs"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(name="File", subtype="FILE_PATH", default="", options={"SKIP_SAVE"},
                             description="An HDRI file to add")
    directory: StringProperty(name="Folder", subtype="DIR_PATH", default="", options={"SKIP_SAVE"},
                              description="Folder of the chosen files")
    files: CollectionProperty(name="Files", type=bpy.types.OperatorFileListElement, options={"SKIP_SAVE"},
                              description="The chosen files")
    filter_glob: StringProperty(default="*.hdr;*.exr", options={"HIDDEN"},
                                description="File types shown in the browser")

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        paths = [os.path.join(self.directory, f.name) for f in self.files if f.name] if self.directory else []
        if not paths and self.filepath:
            paths = [self.filepath]
        wrong = [p for p in paths if not p.lower().endswith(HDRI_EXTENSIONS)]
        if not paths or wrong:
            self.report({"ERROR"}, f"{os.path.basename(wrong[0])} is not an HDRI; choose .hdr or .exr files."
                        if wrong else "No file was chosen; choose one or more .hdr or .exr files.")
            return {"CANCELLED"}
        s = context.scene.diffusion_renderer
        for path in paths:
            item = s.hdris.add()
            item.path = bpy.path.relpath(path) if bpy.data.filepath else path
            item.name = os.path.basename(path)
        s.hdri_index = len(s.hdris) - 1
        self.report({"INFO"}, f"Added {len(paths)} HDRI{'s' if len(paths) > 1 else ''}.")
        return {"FINISHED"}


class DR_OT_hdri_remove(bpy.types.Operator):
    """Remove the selected HDRI from the Relight Preview list"""
    bl_idname = "diffusion_renderer.hdri_remove"
    bl_label = "Remove HDRI"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        s = context.scene.diffusion_renderer
        if not 0 <= s.hdri_index < len(s.hdris):
            cls.poll_message_set("Select an HDRI in the list first.")
            return False
        return True

    def execute(self, context):
        s = context.scene.diffusion_renderer
        s.hdris.remove(s.hdri_index)
        s.hdri_index = max(0, min(s.hdri_index, len(s.hdris) - 1))
        return {"FINISHED"}


def draw(layout, s) -> None:
    """The list with Add / Remove beside it, and the selected HDRI's file, rotation, strength and flip."""
    row = layout.row()
    row.template_list(DR_UL_hdris.bl_idname, "", s, "hdris", s, "hdri_index", rows=3)
    col = row.column(align=True)
    col.operator(DR_OT_hdri_add.bl_idname, text="", icon="ADD")
    col.operator(DR_OT_hdri_remove.bl_idname, text="", icon="REMOVE")
    if 0 <= s.hdri_index < len(s.hdris):
        item = s.hdris[s.hdri_index]
        col = layout.column(align=True)
        col.prop(item, "path")
        col.prop(item, "rotation")
        col.prop(item, "strength")
        col.prop(item, "flip")


classes = (DR_UL_hdris, DR_OT_hdri_add, DR_OT_hdri_remove)
