"""Synthetic Blender render folders (render.json + multilayer EXRs in Blender's 4.x, 5.x and File Output
layouts) with known values, for tests/test_gbuffer_blender_render.py."""
from __future__ import annotations

import numpy as np
import OpenEXR

from engine.contract import render_json

H, W = 8, 12
FRAMES = [3, 4]
FPS = 30.0
CLIP_END = 100.0
AOVS = {"basecolor": "DR_BaseColor", "roughness": "DR Roughness", "metallic": "DR_Metallic"}
DEFAULTS = {"basecolor": [0.5, 0.25, 0.125], "roughness": 0.6, "metallic": 0.1}

# camera of frame 3: rotated +90° about X (looks along world +Y, up = world +Z), scaled ×2, moved;
# frame 4: additionally turned +90° about world Z (looks along world −X). Hand-derived answers below.
_RX = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], float)
_RZ = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]], float)
ROTATIONS = {3: _RX, 4: _RZ @ _RX}
# world normal → expected camera normal (+X right, +Y up, +Z toward the viewer)
NORMAL_CASES = {3: [((0, -1, 0), (0, 0, 1)), ((0, 0, 1), (0, 1, 0)), ((1, 0, 0), (1, 0, 0))],
                4: [((1, 0, 0), (0, 0, 1)), ((0, 1, 0), (1, 0, 0)), ((0, 0, 1), (0, 1, 0))]}


def matrix_world(frame: int) -> list:
    m = np.eye(4)
    m[:3, :3] = ROTATIONS[frame] * 2.0          # scale 2 on every axis: must not matter
    m[:3, 3] = (1.0, -7.0, 2.5)
    return m.tolist()


def camera(frame: int, **over) -> dict:
    c = {"frame": frame, "matrix_world": matrix_world(frame), "lens_mm": 50.0, "sensor_width_mm": 36.0,
         "sensor_height_mm": 24.0, "sensor_fit": "AUTO", "clip_start": 0.1, "clip_end": CLIP_END, "type": "PERSP"}
    c.update(over)
    return c


def frame_data(frame: int) -> dict:
    """Raw Blender passes of one frame {canonical: (H, W, C)} with known content:

    alpha: column 0 background (0), (0, 1) half covered (0.5), the rest covered (1).
    depth: covered 2 + 0.1·(row + col) (+1 on frame 4); column 0 background — frame 3 as Cycles (1e10) except
    (1, 0) which holds a finite 5.0 under alpha 0, frame 4 as EEVEE (clip_end); (2, 5) of frame 4 is NaN.
    normal: world normals of NORMAL_CASES at (row 1..3, col 3); (4, 3) a non-unit (×0.5) copy of case 0;
    (5, 3) zero; (6, 3) NaN; elsewhere case 0.
    basecolor AOV: RGB (0.2, 0.4, 0.6) with coverage 1, except columns 9–10 (no injectable material: A 0,
    RGB 0) and (7, 11) partially (A 0.25, RGB 0.05, 0.1, 0.15 — the AOV is premultiplied).
    roughness / metallic AOV: 0.3 / 0.7 where the AOV covers (scaled by its coverage), else 0.
    """
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    alpha = np.ones((H, W), np.float32)
    alpha[:, 0] = 0.0
    alpha[0, 1] = 0.5
    rgb = np.stack([0.1 * xx, 0.05 * yy, np.full_like(xx, 0.7)], -1) * alpha[..., None]
    rgb[2, 2] = (70000.0, 1.0, 2.0)                      # beyond half range: clipped in the set
    depth = (2.0 + 0.1 * (yy + xx) + (frame == 4)).astype(np.float32)
    if frame == 3:
        depth[:, 0] = 1e10
        depth[1, 0] = 5.0
    else:
        depth[:, 0] = CLIP_END
        depth[2, 5] = np.nan
    cases = NORMAL_CASES[frame]
    normal = np.broadcast_to(np.asarray(cases[0][0], np.float32), (H, W, 3)).copy()
    for r, (world, _cam) in enumerate(cases, start=1):
        normal[r, 3] = world
    normal[4, 3] = np.asarray(cases[0][0], np.float32) * 0.5
    normal[5, 3] = 0.0
    normal[6, 3] = np.nan
    normal[:, 0] = 0.0
    cov = alpha.copy()
    cov[:, 9:11] = 0.0
    cov[7, 11] = 0.25
    bc = np.concatenate([np.array([0.2, 0.4, 0.6], np.float32) * cov[..., None], cov[..., None]], -1)
    return {"combined": np.concatenate([rgb, alpha[..., None]], -1), "depth": depth[..., None], "normal": normal,
            "basecolor": bc, "roughness": (0.3 * cov)[..., None], "metallic": (0.7 * cov)[..., None]}


_CHANS = {"combined": "RGBA", "basecolor": "RGBA", "normal": "XYZ", "depth": "Z", "roughness": "X", "metallic": "X"}
_SHORT = {"combined": "Combined", "depth": "Depth", "normal": "Normal"}


def _layer(name: str) -> str:
    return _SHORT.get(name) or AOVS[name]


def write_frame(path, data: dict, layout: str, view_layer: str = "ViewLayer", drop=()) -> None:
    """One frame as Blender writes it: layout '4x' (one part, ViewLayer.<short>.<chan>), '5x' (one part per
    pass, ViewLayer.<name>) or 'fileout' (File Output node: no view-layer prefix, single channels as V)."""
    header = {"type": OpenEXR.scanlineimage, "compression": OpenEXR.ZIP_COMPRESSION}
    parts = []
    for name, arr in data.items():
        if name in drop:
            continue
        chans = _CHANS[name]
        if layout == "fileout" and len(chans) == 1:
            chans = "V"
        prefix = _layer(name) if layout == "fileout" else f"{view_layer}.{_layer(name)}"
        half = name == "basecolor"          # Combined as 32-bit float: keeps the 70000 of (2, 2)
        ch = {f"{prefix}.{c}": np.ascontiguousarray(arr[..., i].astype(np.float16 if half else np.float32))
              for i, c in enumerate(chans)}
        parts.append((prefix, ch))
    if layout == "4x":
        with OpenEXR.File(header, {k: v for _, ch in parts for k, v in ch.items()}) as f:
            f.write(str(path))
    else:
        with OpenEXR.File([OpenEXR.Part({**header, "name": n}, ch) for n, ch in parts]) as f:
            f.write(str(path))


def make_folder(folder, layout: str = "4x", *, frames=FRAMES, cameras=None, data=None, **fields):
    """A complete render folder; ``fields`` override render.json fields (``resolution=…``)."""
    folder.mkdir(parents=True, exist_ok=True)
    rj = render_json.new(frames=frames, fps=FPS, resolution=(W, H), view_layer="ViewLayer", aovs=dict(AOVS),
                         cameras=cameras or [camera(f) for f in frames], scene="Scene", camera="Camera",
                         render_engine="CYCLES", samples=16, filter_width=1.5, source="/shots/a.blend",
                         blender_version="5.0.1", seconds=1.25, notes=["1 material without nodes"],
                         colour_management={"view": "AgX"})
    rj["aov_defaults"] = {k: (list(v) if isinstance(v, list) else v) for k, v in DEFAULTS.items()}
    rj.update(fields)
    for f in frames:
        write_frame(folder / render_json.frame_file(rj, f), (data or {}).get(f) or frame_data(f), layout)
    render_json.write(str(folder), rj)
    return folder
