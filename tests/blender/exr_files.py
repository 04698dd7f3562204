"""Test helper: EXR files through the OpenEXR library (installed into the bpy venv by bin/test-blender
and bin/test-blender-matrix), for the tests that run in bpy's Python: fixtures written as EXR files (env
maps, footage, sets to reimport) and files Blender wrote read back (render output, File Output nodes).
The add-on itself contains no EXR code: Blender writes its renders and the engine reads them.

* :func:`read_exr` — every channel of every part → ``{full channel name: float32 (H, W)}``, rows top
  first. In a multi-part file a channel gets its part's name as prefix unless it already has it (Blender
  5.x writes one part per pass), the rule of ``engine/io/exr.py``.
* :func:`read_exr_header` — ``{"multipart", "width", "height", "parts": [{"name", "channels"}]}``.
* :func:`write_exr` — one single-part, ZIP-compressed scanline file, half or float channels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import OpenEXR

__all__ = ["read_exr", "read_exr_header", "write_exr"]


def _full_name(part, multipart: bool, name: str) -> str:
    pname = part.name() or ""
    return f"{pname}.{name}" if multipart and pname and not name.startswith(pname + ".") else name


def read_exr(path) -> dict[str, np.ndarray]:
    """Every channel of every part of ``path`` → ``{full channel name: float32 (H, W) array}``."""
    out = {}
    with OpenEXR.File(str(path), separate_channels=True) as f:
        parts = list(f.parts)
        for part in parts:
            if not np.array_equal(part.header["dataWindow"], parts[0].header["displayWindow"]):
                raise ValueError(f"{path}: part {part.name()!r}: data window differs from the display window")
            for name, ch in part.channels.items():
                out[_full_name(part, len(parts) > 1, name)] = np.asarray(ch.pixels, dtype=np.float32)
    return out


def read_exr_header(path) -> dict:
    """Layout of ``path`` without its pixels: whether it is multi-part, its size, each part's name and
    full channel names."""
    with OpenEXR.File(str(path), header_only=True) as f:
        parts = list(f.parts)
        (x0, y0), (x1, y1) = parts[0].header["displayWindow"]
        return {"multipart": len(parts) > 1, "width": int(x1 - x0 + 1), "height": int(y1 - y0 + 1),
                "parts": [{"name": p.name() or "",
                           "channels": [_full_name(p, len(parts) > 1, c.name) for c in p.header["channels"]]}
                          for p in parts]}


def write_exr(path, channels: dict, *, dtype: str = "half") -> Path:
    """Write ``{name: (H, W) array}`` as a single-part ZIP scanline EXR of ``dtype`` "half" or "float"
    channels (creating the folder)."""
    path = Path(path)
    np_dtype = {"half": np.float16, "float": np.float32}[dtype]
    data = {n: np.ascontiguousarray(np.asarray(a, np.float32).astype(np_dtype)) for n, a in channels.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, data) as f:
        f.write(str(path))
    return path
