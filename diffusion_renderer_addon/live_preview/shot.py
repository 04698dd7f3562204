"""Neural Render's live preview inputs, made once per shot and reused: Blender renders the G-buffers of the
frames a preview needs (the contract's ``preview_window``) into a render folder at a small size, and a
procedural World into an equirectangular HDRI; both are kept until the scene (or the World) changes.

Everything lives in the preview folder ``<Output Folder>/preview/<scene>/`` (never a job folder of a Neural
Render result): ``frames_<start>-<end>/`` render folders (frame EXRs + render.json, written by Blender and
:func:`..export.export_gbuffers`), ``world/world_equirect.exr`` and the preview image itself."""
from __future__ import annotations

import os
import re
import time

from ..export import export_gbuffers, render_world_equirect
from ..export.render_request import frame_size

EXPORT_LONG_SIDE = 384        # the G-buffers' long side: the engine's automatic preview size (params.py preview_size)
WORLD_WIDTH, WORLD_SAMPLES = 512, 16    # a procedural World rendered for previews (the full task renders 1024, 32)
IMAGE_FILE = "neural_preview.exr"       # the engine writes it and neural_preview.png beside it


def preview_folder(output_root: str, scene_name: str) -> str:
    """``<Output Folder>/preview/<scene>``; the scene's name made safe for a folder name."""
    safe = re.sub(r"[^\w.-]+", "_", scene_name).strip("._") or "scene"
    return os.path.join(output_root, "preview", safe)


def export_size(scene) -> tuple:
    """The scene's frame size scaled down to EXPORT_LONG_SIDE on its long side (aspect kept; never up)."""
    w, h = frame_size(scene)
    scale = min(1.0, EXPORT_LONG_SIDE / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


class Shot:
    """The preview inputs of one scene. ``stale()`` after a scene edit: the next preview exports again;
    ``world_stale()`` after a World edit: a procedural World is rendered again."""

    def __init__(self, folder: str):
        self.folder = folder
        self.windows: dict = {}          # (start, end) → render folder, exported since the last scene edit
        self.world_hdri: str | None = None
        self.exports = 0                 # how many windows were exported (tests, status)
        self.last_export_s = 0.0

    def stale(self) -> None:
        self.windows.clear()

    def world_stale(self) -> None:
        self.world_hdri = None

    def render_folder(self, scene, window: tuple, samples: int, progress=None) -> str:
        """The render folder holding exactly the frames ``window`` (inclusive), exported when missing or
        stale. Raises ExportError (the scene is restored in every case)."""
        window = (int(window[0]), int(window[1]))
        if window in self.windows and os.path.isfile(os.path.join(self.windows[window], "render.json")):
            return self.windows[window]
        out = os.path.join(self.folder, f"frames_{window[0]}-{window[1]}")
        t0 = time.perf_counter()
        export_gbuffers(scene, out, frame_range=window, resolution=export_size(scene), samples=samples,
                        background=False, overwrite=True, progress=progress)
        self.last_export_s = time.perf_counter() - t0
        self.exports += 1
        self.windows[window] = out
        return out

    def world_file(self, scene) -> str:
        """The scene's World rendered to an HDRI (once, until it changes). Raises EnvExportError."""
        if self.world_hdri is None or not os.path.isfile(self.world_hdri):
            path = os.path.join(self.folder, "world", "world_equirect.exr")
            self.world_hdri = str(render_world_equirect(scene, path, width=WORLD_WIDTH, samples=WORLD_SAMPLES))
        return self.world_hdri

    def image_path(self) -> str:
        return os.path.join(self.folder, IMAGE_FILE)
