"""Lat-long -> cube map conversion and cube-map lookup, in pure torch (MODEL_SPEC §6.3).

This reproduces the arithmetic the golden README ("nvdiffrast substitution") describes for the
original's two texture lookups, without nvdiffrast (runs on CPU or CUDA):

Cube faces (index: OpenGL name: direction of the texel at column coordinate x, row coordinate y)::

    0 +X: ( 1, -y, -x)     1 -X: (-1, -y,  x)     2 +Y: ( x,  1,  y)
    3 -Y: ( x, -1, -y)     4 +Z: ( x, -y,  1)     5 -Z: (-x, -y, -1)

with texel centres ``x, y = linspace(-1 + 1/R, 1 - 1/R, R)`` (column, row); the cube is stored as
(6, R, R, C) = (face, row, col, channel).

:func:`latlong_to_cubemap` samples the lat-long image at ``u = atan2(d_x, -d_z)/(2 pi) + 0.5``,
``v = acos(clamp(d_y, -1, 1))/pi`` (v = 0 is the top row) with bilinear filtering, texel centres at
``(i + 0.5)/size`` and *wrap* addressing on both axes (``u - floor(u)``; so the poles bleed
slightly into the opposite row, as in the original).

:func:`sample_cubemap` selects the face by the largest |component| (z only when strictly larger
than both others, else y when strictly larger than x, else x), computes (s, t) by inverting the
table above, clamps them to [0, 1], goes to texel space ``s R - 0.5`` and filters bilinearly.  Taps
falling off a face are read from the geometrically adjacent texel of the neighbouring face (same
index along the shared edge); at a cube corner the missing fourth tap is the average of the other
three.  Both are implemented once by padding every face with a one-texel border
(:func:`pad_cubemap`).  Non-finite or zero directions return 0.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

__all__ = [
    "cube_face_directions",
    "latlong_to_cubemap",
    "latlong_uv",
    "pad_cubemap",
    "sample_cubemap",
    "sample_latlong_wrap",
]

_FACE_AXIS = ((0, 1.0), (0, -1.0), (1, 1.0), (1, -1.0), (2, 1.0), (2, -1.0))


def _face_dir(face: int, x, y, lib=torch):
    """Unnormalised direction of face coordinates (x = column, y = row) – the table above."""
    one = lib.ones_like(x)
    if face == 0:
        comps = (one, -y, -x)
    elif face == 1:
        comps = (-one, -y, x)
    elif face == 2:
        comps = (x, one, y)
    elif face == 3:
        comps = (x, -one, -y)
    elif face == 4:
        comps = (x, -y, one)
    else:
        comps = (-x, -y, -one)
    return lib.stack(comps, -1) if lib is torch else np.stack(comps, -1)


def _face_st_numer(face: int, dx, dy, dz):
    """(sc, tc) numerators of the face coordinates (divide by the major-axis magnitude)."""
    return {
        0: (-dz, -dy),
        1: (dz, -dy),
        2: (dx, dz),
        3: (dx, -dz),
        4: (dx, -dy),
        5: (-dx, -dy),
    }[face]


def cube_face_directions(res: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Unit directions (6, res, res, 3) of the cube texel centres."""
    c = torch.linspace(-1.0 + 1.0 / res, 1.0 - 1.0 / res, res, device=device, dtype=dtype)
    y, x = torch.meshgrid(c, c, indexing="ij")
    d = torch.stack([_face_dir(f, x, y) for f in range(6)], 0)
    return d / torch.linalg.vector_norm(d, dim=-1, keepdim=True)


def latlong_uv(d: torch.Tensor):
    """Lat-long texture coordinates (u, v) of directions d (..., 3); v = 0 is the top (+Y)."""
    u = torch.atan2(d[..., 0], -d[..., 2]) / (2.0 * math.pi) + 0.5
    v = torch.acos(torch.clamp(d[..., 1], -1.0, 1.0)) / math.pi
    return u, v


def _bilinear(flat: torch.Tensor, i00, i01, i10, i11, fx, fy) -> torch.Tensor:
    fx = fx[..., None]
    fy = fy[..., None]
    t00, t01, t10, t11 = (torch.index_select(flat, 0, i) for i in (i00, i01, i10, i11))
    a = t00 + (t01 - t00) * fx
    b = t10 + (t11 - t10) * fx
    return a + (b - a) * fy


def sample_latlong_wrap(tex: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup of tex (H, W, C) at (u, v) with wrap addressing on both axes -> (..., C)."""
    h, w, c = tex.shape
    shape = u.shape
    u = u.reshape(-1)
    v = v.reshape(-1)
    valid = torch.isfinite(u) & torch.isfinite(v)
    u = torch.where(valid, u, torch.zeros_like(u))
    v = torch.where(valid, v, torch.zeros_like(v))
    x = (u - torch.floor(u)) * w - 0.5
    y = (v - torch.floor(v)) * h - 0.5
    x0 = torch.floor(x)
    y0 = torch.floor(y)
    fx = x - x0
    fy = y - y0
    x0 = x0.long()
    y0 = y0.long()
    ix0 = torch.remainder(x0, w)
    ix1 = torch.remainder(x0 + 1, w)
    iy0 = torch.remainder(y0, h) * w
    iy1 = torch.remainder(y0 + 1, h) * w
    out = _bilinear(tex.reshape(h * w, c), iy0 + ix0, iy0 + ix1, iy1 + ix0, iy1 + ix1, fx, fy)
    out = out * valid[:, None].to(out.dtype)
    return out.reshape(*shape, c)


@lru_cache(maxsize=4)
def _cube_uv_cpu(res: int, dtype: torch.dtype):
    """Lat-long (u, v) of every cube texel, computed once on the CPU (device-independent values)."""
    u, v = latlong_uv(cube_face_directions(res, dtype=dtype))
    return u, v


def latlong_to_cubemap(latlong: torch.Tensor, res: int = 512) -> torch.Tensor:
    """Resample a lat-long image (H, W, C) into a cube map (6, res, res, C) (same device/dtype)."""
    if latlong.ndim != 3:
        raise ValueError(f"latlong must be (H, W, C), got shape {tuple(latlong.shape)}")
    if not latlong.is_floating_point():
        latlong = latlong.float()
    cdt = torch.float64 if latlong.dtype == torch.float64 else torch.float32
    u, v = _cube_uv_cpu(int(res), cdt)
    out = sample_latlong_wrap(latlong.to(cdt), u.to(latlong.device), v.to(latlong.device))
    return out.to(latlong.dtype)


@lru_cache(maxsize=8)
def _border_table(res: int):
    """Source (face, row, col) of every border texel of the padded faces (numpy int64 arrays).

    Returns (dst_face, dst_row, dst_col, src_face, src_row, src_col) for the 4 edges of each face,
    in padded coordinates for dst (0..res+1) and cube coordinates for src.
    """
    k = np.arange(res, dtype=np.int64)
    along = (2.0 * k + 1.0) / res - 1.0
    dst, src = [], []
    for f in range(6):
        f_axis = _FACE_AXIS[f][0]
        for edge in ("top", "bottom", "left", "right"):
            if edge in ("top", "bottom"):
                x, y = along, np.full(res, -1.0 if edge == "top" else 1.0)
                drow = np.full(res, 0 if edge == "top" else res + 1)
                dcol = k + 1
            else:
                x, y = np.full(res, -1.0 if edge == "left" else 1.0), along
                drow = k + 1
                dcol = np.full(res, 0 if edge == "left" else res + 1)
            d = _face_dir(f, x, y, lib=np)  # exactly on the shared cube edge
            # neighbour face: the other axis whose component is +-1 on this edge
            axes = [a for a in range(3) if a != f_axis and np.all(np.abs(d[:, a]) == 1.0)]
            assert len(axes) == 1
            a = axes[0]
            sgn = np.sign(d[0, a])
            g = 2 * a + (0 if sgn > 0 else 1)
            sc, tc = _face_st_numer(g, d[:, 0], d[:, 1], d[:, 2])
            scol = np.clip(np.floor((sc + 1.0) * 0.5 * res), 0, res - 1).astype(np.int64)
            srow = np.clip(np.floor((tc + 1.0) * 0.5 * res), 0, res - 1).astype(np.int64)
            dst.append((np.full(res, f), drow, dcol))
            src.append((np.full(res, g), srow, scol))
    dst_a = [np.concatenate([t[i] for t in dst]) for i in range(3)]
    src_a = [np.concatenate([t[i] for t in src]) for i in range(3)]
    return (*dst_a, *src_a)


def pad_cubemap(cube: torch.Tensor) -> torch.Tensor:
    """(6, R, R, C) -> (6, R+2, R+2, C) with neighbour-face borders and 3-texel corner averages."""
    n6, res, res2, c = cube.shape
    if n6 != 6 or res != res2:
        raise ValueError(f"cube map must be (6, R, R, C), got {tuple(cube.shape)}")
    out = cube.new_zeros((6, res + 2, res + 2, c))
    out[:, 1:-1, 1:-1] = cube
    df, dr, dc, sf, sr, sc = (torch.as_tensor(a, device=cube.device) for a in _border_table(res))
    out[df, dr, dc] = cube[sf, sr, sc]
    third = 1.0 / 3.0
    e = res + 1
    for r, c_, rn, cn in ((0, 0, 1, 1), (0, e, 1, e - 1), (e, 0, e - 1, 1), (e, e, e - 1, e - 1)):
        out[:, r, c_] = (out[:, r, cn] + out[:, rn, c_] + out[:, rn, cn]) * third
    return out


def sample_cubemap(
    cube: torch.Tensor | None,
    dirs: torch.Tensor,
    *,
    padded: torch.Tensor | None = None,
    chunk: int = 1 << 16,
) -> torch.Tensor:
    """Bilinear cube-map lookup at directions dirs (..., 3) -> (..., C).

    ``cube`` is (6, R, R, C); pass ``padded=pad_cubemap(cube)`` instead to reuse the padding.
    Directions need not be normalised.  Processed in chunks of ``chunk`` directions.
    """
    if padded is None:
        padded = pad_cubemap(cube)
    rp = padded.shape[1]
    res = rp - 2
    c = padded.shape[-1]
    flat = padded.reshape(6 * rp * rp, c)
    shape = dirs.shape[:-1]
    d_all = dirs.reshape(-1, 3).to(padded.dtype)
    n = d_all.shape[0]
    out = torch.empty((n, c), device=padded.device, dtype=padded.dtype)
    for start in range(0, n, chunk):
        d = d_all[start : start + chunk]
        valid = torch.isfinite(d).all(-1)
        d = torch.where(valid[:, None], d, torch.ones_like(d))  # invalid -> any finite direction
        dx, dy, dz = d.unbind(-1)
        ax, ay, az = dx.abs(), dy.abs(), dz.abs()
        is_z = (az > ax) & (az > ay)
        is_y = (ay > ax) & ~is_z
        neg = torch.where(is_z, dz < 0, torch.where(is_y, dy < 0, dx < 0))
        sgn = 1.0 - 2.0 * neg.to(d.dtype)  # +1 for the positive face of the major axis, -1 else
        face = torch.where(is_z, 4, torch.where(is_y, 2, 0)) + neg.long()
        ma = torch.where(is_z, az, torch.where(is_y, ay, ax))
        # face table: +X (-dz,-dy) -X (dz,-dy) +Y (dx,dz) -Y (dx,-dz) +Z (dx,-dy) -Z (-dx,-dy)
        sc = torch.where(is_z, sgn * dx, torch.where(is_y, dx, -sgn * dz))
        tc = torch.where(is_y, sgn * dz, -dy)
        valid &= ma > 0
        inv = 0.5 / torch.where(valid, ma, torch.ones_like(ma))
        x = torch.clamp(sc * inv + 0.5, 0.0, 1.0) * res - 0.5
        y = torch.clamp(tc * inv + 0.5, 0.0, 1.0) * res - 0.5
        x0 = torch.floor(x)
        y0 = torch.floor(y)
        fx = x - x0
        fy = y - y0
        i00 = face * (rp * rp) + (y0.long() + 1) * rp + (x0.long() + 1)
        o = _bilinear(flat, i00, i00 + 1, i00 + rp, i00 + rp + 1, fx, fy)
        out[start : start + chunk] = torch.where(valid[:, None], o, torch.zeros_like(o))
    return out.reshape(*shape, c)
