"""Checking what the Blender export wrote: the engine's interpreter (:func:`engine_python`,
:func:`run_engine`), the render folder converted by the engine (:func:`convert_render`,
:func:`render_passes`), pass values at the image centre (:func:`export_centre`) and a PNG decoder
(:func:`read_png`). Needs no bpy itself; imported through bpy_scene. Pixels are read on the engine's side
(OpenEXR, numpy) and handed back as an ``.npz``: the add-on has no EXR code, and the check goes through
the engine's own reader.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------------------------------ engine
_ENGINE_PY: list = []


def engine_python() -> str | None:
    """An interpreter that imports engine.gbuffer (with OpenEXR): $DR_ENGINE_PYTHON or the checkout's
    .venv (made by bin/test). None when there is none."""
    cands = [os.environ.get("DR_ENGINE_PYTHON"), str(REPO / ".venv" / "bin" / "python")]
    for c in cands:
        if not c or not os.path.isfile(c):
            continue
        try:
            r = subprocess.run([c, "-c", "import engine.gbuffer, OpenEXR, numpy"], cwd=str(REPO), timeout=120,
                               env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0:
            _ENGINE_PY.append(c)
            return c
    return None


def run_engine(code: str, *args) -> str:
    """Run ``code`` with the engine's interpreter (skip when there is none); returns stdout."""
    py = _ENGINE_PY[0] if _ENGINE_PY else engine_python()
    if py is None:
        pytest.skip("no engine Python environment (set DR_ENGINE_PYTHON or create .venv with bin/test)")
    r = subprocess.run([py, "-c", code, *map(str, args)], cwd=str(REPO), capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)
    if r.returncode != 0:
        raise AssertionError(f"engine check failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout


# ------------------------------------------------------------------------------------------ exported files
_CONVERT = r"""
import json, sys
import numpy as np
from engine.gbuffer import open_gbuffer_set
from engine.gbuffer.blender_render import convert_render_folder
out = convert_render_folder(sys.argv[1], sys.argv[2], overwrite=True, previews=False)
s = open_gbuffer_set(out)
frames = s.read_frames()
np.savez(sys.argv[3], **{k: np.asarray(v, np.float32) for k, v in frames.items()})
print(json.dumps({"manifest": json.loads((out / "manifest.json").read_text()), "warnings": list(s.warnings)}))
"""

_READ = r"""
import json, sys
import numpy as np
from engine.gbuffer.blender_render import read_render_folder
c = read_render_folder(sys.argv[1])
np.savez(sys.argv[2], **{k: np.asarray(v, np.float32) for k, v in c.passes.items()})
print(json.dumps({"frame_numbers": c.frame_numbers, "warnings": c.warnings,
                  "depth_range": list(c.depth_range) if c.depth_range else None}))
"""


def _npz(path) -> dict:
    import numpy as np

    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def convert_render(render_dir, set_dir) -> tuple[dict, dict, list]:
    """The engine converts the render folder into a G-buffer set (``convert_render_folder``) and reads the
    set back: (manifest, {pass: float32 (F, H, W, C)} as stored in the set, reader warnings)."""
    import json

    npz = Path(set_dir).with_name(Path(set_dir).name + ".npz")
    r = json.loads(run_engine(_CONVERT, render_dir, set_dir, npz))
    return r["manifest"], _npz(npz), r["warnings"]


def render_passes(render_dir) -> tuple[dict, dict]:
    """The render folder's passes as the engine reads them (``read_render_folder``, float32, before the set's
    half rounding): ({pass: (F, H, W, C)}, {"frame_numbers", "warnings", "depth_range"})."""
    import json

    npz = Path(render_dir).with_name(Path(render_dir).name + ".passes.npz")
    info = json.loads(run_engine(_READ, render_dir, npz))
    return _npz(npz), info


def export_centre(scene, tmp_path, passes=("basecolor", "roughness", "metallic", "alpha")):
    """Export one frame, let the engine read the render folder, and return {pass: value at the image centre}."""
    from diffusion_renderer_addon.export import export_gbuffers

    out = export_gbuffers(scene, tmp_path, frame_range=[1], overwrite=True)
    planes, _info = render_passes(out)
    res = {}
    for p in passes:
        _f, h, w, _c = planes[p].shape
        res[p] = planes[p][0, h // 2, w // 2]
    return res


def read_png(path):
    """A PNG file → (float array (H, W, C) in [0, 1] of the stored values, bit depth, colour type);
    decoded here (Blender's loader linearises 16-bit PNGs into float buffers, 8-bit ones not)."""
    import struct
    import zlib

    import numpy as np

    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        n, typ = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if typ == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif typ == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, ctype = ihdr[:4]
    chans = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
    bpp = chans * depth // 8
    raw = zlib.decompress(idat)
    stride = w * bpp
    out = np.zeros((h, stride), np.int64)
    prev = np.zeros(stride, np.int64)
    for y in range(h):
        ft = raw[y * (stride + 1)]
        line = np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int64)
        cur = np.zeros(stride, np.int64)
        for i in range(stride):
            a = cur[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if ft == 0:
                p = 0
            elif ft == 1:
                p = a
            elif ft == 2:
                p = b
            elif ft == 3:
                p = (a + b) // 2
            else:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                p = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            cur[i] = (line[i] + p) & 0xFF
        out[y], prev = cur, cur
    if depth == 16:
        vals = (out[:, 0::2] << 8) | out[:, 1::2]
        return (vals.reshape(h, w, chans) / 65535.0), depth, ctype
    return out.reshape(h, w, chans) / 255.0, depth, ctype
