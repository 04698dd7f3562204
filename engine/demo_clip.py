"""A small procedural clip (a lit sphere and box on a checker floor, camera orbiting) for demos and tests.

`python -m engine.demo_clip OUT_DIR [--frames N] [--size WxH]` writes frame_0000.png … into OUT_DIR.
The repository ships its output in examples/clip (12 frames, 384×256).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def _srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def render_frame(t: float, width: int, height: int) -> np.ndarray:
    """Ray-cast one frame at clip time t in [0, 1): float32 (H, W, 3) display-encoded in [0, 1]."""
    ang = 0.6 * np.sin(2 * np.pi * t)
    eye = np.array([3.2 * np.sin(ang), 1.3, 3.2 * np.cos(ang)])
    fwd = -eye / np.linalg.norm(eye)
    right = np.cross(fwd, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    u = (xs + 0.5) / width * 2 - 1
    v = 1 - (ys + 0.5) / height * 2
    aspect = width / height
    d = fwd + u[..., None] * right * 0.6 * aspect + v[..., None] * up * 0.6
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    light = np.array([0.5, 0.8, 0.3])
    light /= np.linalg.norm(light)
    sky = np.array([0.55, 0.7, 0.95]) * (0.6 + 0.4 * d[..., 1:2].clip(0, 1))
    img = np.broadcast_to(sky, d.shape).copy()
    depth = np.full((height, width), np.inf)
    # floor y = 0
    tf = np.where(d[..., 1] < -1e-6, -eye[1] / np.minimum(d[..., 1], -1e-6), np.inf)
    p = eye + np.where(np.isfinite(tf), tf, 0.0)[..., None] * d
    checker = ((np.floor(p[..., 0] * 2) + np.floor(p[..., 2] * 2)) % 2)[..., None]
    floor_col = np.where(checker > 0, [0.75, 0.72, 0.65], [0.25, 0.27, 0.3]) * (0.35 + 0.65 * light[1])
    hit = tf < depth
    img[hit], depth[hit] = floor_col[hit], tf[hit]
    # sphere
    c, r = np.array([0.0, 0.6, 0.0]), 0.6
    oc = eye - c
    b = d @ oc
    disc = b * b - (oc @ oc - r * r)
    ts = np.where(disc > 0, -b - np.sqrt(np.maximum(disc, 0)), np.inf)
    hit = (ts > 0) & (ts < depth)
    n = (eye + np.where(hit, ts, 0.0)[..., None] * d - c) / r
    diff = np.clip((n * light).sum(-1, keepdims=True), 0, 1)
    refl = d - 2 * (d * n).sum(-1, keepdims=True) * n
    spec = np.clip((refl * light).sum(-1, keepdims=True), 0, 1) ** 40
    sphere = np.array([0.8, 0.15, 0.1]) * (0.15 + 0.85 * diff) + 0.6 * spec
    img[hit], depth[hit] = sphere[hit], ts[hit]
    # axis-aligned box beside the sphere (slab test)
    lo, hi = np.array([0.9, 0.0, -0.6]), np.array([1.6, 0.7, 0.1])
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (lo - eye) / d, (hi - eye) / d
    tn, tx = np.minimum(t1, t2).max(-1), np.maximum(t1, t2).min(-1)
    hit = (tn < tx) & (tn > 0) & (tn < depth)
    pb = eye + np.where(hit, tn, 0.0)[..., None] * d
    nb = np.zeros_like(pb)
    for axis in range(3):
        nb[..., axis] = np.where(np.isclose(pb[..., axis], lo[axis], atol=1e-6), -1, 0) + \
            np.where(np.isclose(pb[..., axis], hi[axis], atol=1e-6), 1, 0)
    box = np.array([0.2, 0.45, 0.8]) * (0.2 + 0.8 * np.clip((nb * light).sum(-1, keepdims=True), 0, 1))
    img[hit] = box[hit]
    return _srgb(img).astype(np.float32)


def make_demo_clip(folder, frames: int = 12, width: int = 384, height: int = 256) -> list[Path]:
    from engine.io.images import write_png

    folder = Path(folder)
    paths = []
    for i in range(frames):
        path = folder / f"frame_{i:04d}.png"
        img = render_frame(i / frames, width * 2, height * 2)  # 2×2 supersampled
        write_png(path, img.reshape(height, 2, width, 2, 3).mean(axis=(1, 3)))
        paths.append(path)
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--size", default="384x256", help="WxH")
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    make_demo_clip(args.out, args.frames, w, h)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
