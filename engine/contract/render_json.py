"""``render.json``: what the Blender add-on writes beside the multilayer EXRs Blender renders itself, and
what the engine's converter (``engine/gbuffer/blender_render.py``) reads to turn that folder into a
G-buffer set. STDLIB ONLY: both sides import it (docs/GBUFFER_SET.md, "Blender render folders").

A render folder::

    render.json                 this description (written last, atomically: its presence = complete)
    frame_000001.exr …          one multilayer EXR per frame, as Blender wrote it (any 4.2–5.x layout)

The add-on never reads or writes a pixel: it sets the scene up (passes, shader AOVs), lets Blender render
and write each frame, records per-frame cameras and settings here, and hands the folder to the engine.

>>> data = new(frames=[1, 2], fps=25.0, resolution=(64, 36), view_layer="ViewLayer",
...            aovs={"basecolor": "basecolor", "roughness": "roughness", "metallic": "metallic"},
...            cameras=[{"frame": 1, "matrix_world": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]},
...                     {"frame": 2, "matrix_world": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]}])
>>> validate(data)
[]
>>> frame_file(data, 2)
'frame_000002.exr'
"""
from __future__ import annotations

import json
import math
import os
from datetime import datetime, timezone

from . import json_text
from .atomic import atomic_write_text

FORMAT = "diffusion-renderer/blender-render"
VERSION = 1
FILE_NAME = "render.json"
FRAME_PATTERN = "frame_######.exr"        # '#' run = zero-padded frame number (Blender's own notation)
AOV_KEYS = ("basecolor", "roughness", "metallic")
# Values for surfaces whose material could not carry the AOVs (no node tree, unsupported shader):
# the converter fills covered pixels beyond the AOV's own coverage with these, weighted by the gap.
AOV_DEFAULTS = {"basecolor": [0.8, 0.8, 0.8], "roughness": 0.5, "metallic": 0.0}

# field → (types, required, doc); types in the protocol's notation ('int', 'num', 'str', 'list', 'obj', 'null')
FIELDS = {
    "format": ("str", True, f"always {FORMAT!r}"),
    "version": ("int", True, f"major version ({VERSION}); readers refuse a newer major"),
    "frame_numbers": ("list", True, "frames rendered, ascending, one EXR each"),
    "pattern": ("str", True, f"EXR file name with a '#' run for the frame number ({FRAME_PATTERN!r})"),
    "fps": ("num", True, "scene frame rate (fps / fps_base)"),
    "resolution": ("list", True, "[width, height] in pixels as rendered (resolution × percentage)"),
    "view_layer": ("str", True, "the view layer rendered (the EXR's layer prefix)"),
    "aovs": ("obj", True, "{basecolor|roughness|metallic: shader AOV name in the EXR}"),
    "aov_defaults": ("obj", False, "values for surfaces without injectable materials (AOV_DEFAULTS)"),
    "cameras": ("list", True, "per frame: {frame, matrix_world 4×4 rows, lens_mm, sensor_*, clip_start, clip_end, "
                              "type, shift?, ortho_scale?} (the G-buffer manifest's camera entries)"),
    "scene": ("str", False, "scene name"),
    "camera": ("str|null", False, "camera object name"),
    "render_engine": ("str", False, "CYCLES, BLENDER_EEVEE_NEXT …"),
    "samples": ("int", False, "render samples"),
    "filter_width": ("num|null", False, "pixel filter width used (px)"),
    "colour_management": ("obj", False, "display/view/look/exposure/gamma/working space (informative: the data "
                                        "passes are scene-linear, not view-transformed)"),
    "source": ("str|null", False, "the .blend file rendered (None for an unsaved file)"),
    "blender_version": ("str", False, "Blender's version string"),
    "created": ("str", False, "UTC ISO-8601 time of writing"),
    "seconds": ("num", False, "time Blender spent rendering"),
    "notes": ("list", False, "warnings of the export (materials not injected …)"),
}


class RenderJsonError(ValueError):
    """A render folder whose render.json is missing, unreadable or invalid; names the file and field."""


def _is(value, types: str) -> bool:
    for t in types.split("|"):
        if t == "str" and isinstance(value, str):
            return True
        if t == "int" and isinstance(value, int) and not isinstance(value, bool):
            return True
        if t == "num" and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return True
        if t == "list" and isinstance(value, list):
            return True
        if t == "obj" and isinstance(value, dict):
            return True
        if t == "null" and value is None:
            return True
    return False


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def new(*, frames, fps: float, resolution, view_layer: str, aovs: dict, cameras: list, **extra) -> dict:
    """A render.json dict with the required fields (``extra``: any optional field of FIELDS)."""
    data = {"format": FORMAT, "version": VERSION, "frame_numbers": [int(f) for f in frames],
            "pattern": FRAME_PATTERN, "fps": float(fps), "resolution": [int(v) for v in resolution],
            "view_layer": str(view_layer), "aovs": dict(aovs),
            "aov_defaults": json.loads(json.dumps(AOV_DEFAULTS)), "cameras": list(cameras),
            "created": utc_now()}
    data.update({k: v for k, v in extra.items() if v is not None or FIELDS.get(k, ("",))[0].endswith("null")})
    return data


def validate(data) -> list:
    """Problems of a render.json dict ([] = valid); every problem names its field."""
    if not isinstance(data, dict):
        return [f"expected a JSON object, got {type(data).__name__}"]
    out = []
    for name, (types, required, _doc) in FIELDS.items():
        if name not in data:
            if required:
                out.append(f"field {name!r}: required")
            continue
        if not _is(data[name], types):
            out.append(f"field {name!r}: expected {types}, got {json.dumps(data[name], default=repr)[:60]}")
    if out:
        return out
    if data["format"] != FORMAT:
        out.append(f"field 'format': expected {FORMAT!r}, got {data['format']!r}")
    if data["version"] > VERSION or data["version"] < 1:
        out.append(f"field 'version': {data['version']} is not supported (this engine reads up to {VERSION}); "
                   "update the engine")
    frames = data["frame_numbers"]
    if not frames or not all(_is(f, "int") and f >= 0 for f in frames) or frames != sorted(set(frames)):
        out.append("field 'frame_numbers': expected non-negative frame numbers, ascending, without repeats")
    if "#" not in data["pattern"] or "/" in data["pattern"] or "\\" in data["pattern"]:
        out.append(f"field 'pattern': expected a file name with a '#' run, got {data['pattern']!r}")
    if not data["fps"] > 0:
        out.append(f"field 'fps': must be positive, got {data['fps']}")
    res = data["resolution"]
    if len(res) != 2 or not all(_is(v, "int") and v > 0 for v in res):
        out.append(f"field 'resolution': expected [width, height] positive integers, got {res}")
    missing = [k for k in AOV_KEYS if not isinstance(data["aovs"].get(k), str)]
    if missing:
        out.append(f"field 'aovs': missing the AOV name of {', '.join(missing)}")
    cams = data["cameras"]
    if len(cams) != len(frames) or not all(isinstance(c, dict) and c.get("frame") == f for c, f in zip(cams, frames)):
        out.append("field 'cameras': expected one entry per frame, in frame order, each with its 'frame'")
    else:
        for c in cams:
            m = c.get("matrix_world")
            if not (isinstance(m, list) and len(m) == 4 and all(isinstance(r, list) and len(r) == 4
                                                                 and all(_is(v, "num") for v in r) for r in m)):
                out.append(f"field 'cameras': frame {c.get('frame')}: matrix_world must be 4×4 finite numbers")
                break
    return out


def frame_file(data: dict, frame: int) -> str:
    """The EXR file name of ``frame`` (pattern's '#' run → zero-padded number)."""
    pattern = data.get("pattern", FRAME_PATTERN)
    start = pattern.index("#")
    end = start
    while end < len(pattern) and pattern[end] == "#":
        end += 1
    return f"{pattern[:start]}{int(frame):0{end - start}d}{pattern[end:]}"


def blender_filepath(folder: str) -> str:
    """The value for ``scene.render.filepath`` that makes Blender write FRAME_PATTERN files into ``folder``."""
    return os.path.join(str(folder), FRAME_PATTERN[:-len(".exr")])


def dumps(data: dict) -> str:
    """The file's text: the contract's one JSON layout (json_text), newline-terminated."""
    return json_text.dumps(data) + "\n"


def write(folder, data: dict) -> str:
    """Validate and write ``<folder>/render.json`` atomically (temporary name, then rename); returns the path."""
    problems = validate(data)
    if problems:
        raise RenderJsonError(f"{os.path.join(str(folder), FILE_NAME)}: {problems[0]}")
    path = os.path.join(str(folder), FILE_NAME)
    atomic_write_text(path, dumps(data))
    return path


def is_render_folder(folder) -> bool:
    return os.path.isfile(os.path.join(str(folder), FILE_NAME))


def load(folder) -> dict:
    """``<folder>/render.json``, validated, with every listed frame's EXR present; RenderJsonError otherwise."""
    path = os.path.join(str(folder), FILE_NAME)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise RenderJsonError(f"{path}: not found (an incomplete Blender export: render the G-buffers again)") from None
    except (OSError, ValueError) as exc:
        raise RenderJsonError(f"{path}: unreadable ({exc})") from None
    problems = validate(data)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise RenderJsonError(f"{path}: {problems[0]}{more}")
    missing = [f for f in data["frame_numbers"] if not os.path.isfile(os.path.join(str(folder), frame_file(data, f)))]
    if missing:
        raise RenderJsonError(f"{folder}: {len(missing)} frame EXR(s) missing, first "
                              f"{frame_file(data, missing[0])} (render the G-buffers again)")
    return data
