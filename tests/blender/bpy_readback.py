"""Checking what the Blender export wrote: the engine's interpreter (:func:`engine_python`,
:func:`run_engine`), pass values at the image centre (:func:`export_centre`) and a PNG decoder
(:func:`read_png`). Needs no bpy itself; imported through bpy_scene.
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
def export_centre(scene, tmp_path, passes=("basecolor", "roughness", "metallic", "alpha")):
    """Export one frame and return {pass: value at the image centre} (numpy arrays)."""
    import numpy as np

    from diffusion_renderer_addon.export import export_gbuffers
    from diffusion_renderer_addon.export.exr_io import read_exr

    out = export_gbuffers(scene, tmp_path, frame_range=[1], passes=list(passes), overwrite=True)
    res = {}
    for p in passes:
        w, h, ch = read_exr(out / p / f"{p}.0001.exr")
        planes = [np.frombuffer(ch[c], np.float32).reshape(h, w) for c in sorted(ch, key="RGBXYZV".index)]
        res[p] = np.stack(planes, -1)[h // 2, w // 2]
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
