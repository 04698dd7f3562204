"""The "Neural Preview" image: the engine's preview EXR, loaded by Blender once and reloaded in place after each
preview (the add-on never reads a pixel), shown in an Image Editor that shows nothing else."""
from __future__ import annotations

import os

import bpy

IMAGE_NAME = "Neural Preview"


def _same_file(image, path: str) -> bool:
    try:
        return os.path.samefile(bpy.path.abspath(image.filepath), path)
    except OSError:
        return False


def show(path: str):
    """Load ``path`` into the "Neural Preview" image (created once; afterwards reloaded, or pointed at the new
    file) and show it in the Image Editors that show no image. Returns the image."""
    path = os.path.abspath(path)
    image = bpy.data.images.get(IMAGE_NAME)
    if image is None:
        image = bpy.data.images.load(path, check_existing=False)
        image.name = IMAGE_NAME
    elif _same_file(image, path):
        image.reload()
    else:
        image.filepath = path
        image.reload()
    for window in getattr(bpy.context.window_manager, "windows", ()):
        for area in (window.screen.areas if window.screen else ()):
            if area.type != "IMAGE_EDITOR":
                continue
            space = area.spaces.active
            if space.image is None:
                space.image = image
            if space.image == image:
                area.tag_redraw()
    return image
