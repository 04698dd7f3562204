"""Direction grids of the environment-map conditions (MODEL_SPEC §6.4 and §6.6).

Frames
------
All directions are unit 3-vectors in **OpenGL camera axes**: +X right, +Y up, +Z towards the viewer
(the camera looks along -Z).  For an (h, w) map, pixel (i, j) with ``theta = pi * gy[i]`` and
``phi = pi * gx[j]`` where

* ``gy = linspace(1/h, 1 - 1/h, h)`` (as in the original: *not* exact pixel centres) and
* ``gx = linspace(-1 + 1/w, 1 - 1/w, w)`` (exact pixel centres).

:func:`latlong_vec` is the original's raw grid ``(sin t sin p, cos t, -sin t cos p)``;
:func:`envmap_vec` is ``-flip_rows(flip_cols(latlong_vec))`` = ``(sin t sin p, cos t, +sin t cos p)``
evaluated at (i, j): the camera-space direction that pixel (i, j) of every projected env map shows.
The image centre column is +Z (behind the camera), the left/right borders are -Z (the viewing
direction), the right quarter is +X, the left quarter -X and the top row +Y.

:func:`env_direction_map` (``envmap_vec * 0.5 + 0.5``) is the model's ``env_nrm`` input; it is the
same for every frame and every env map.

:func:`ideal_ball` / :func:`ball_reflect_vec` describe the mirror-ball rendering: normals on
``x = linspace(-1, 1, n)`` (columns), ``y = linspace(1, -1, n)`` (rows, top = +Y),
``z = sqrt(1 - x^2 - y^2)`` inside the disc ``x^2 + y^2 <= 1`` and 0 outside; reflection of the view
ray ``v = (0, 0, -1)``: ``r = v - 2 (v . n) n`` (outside the disc r = v).
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "ball_reflect_vec",
    "env_direction_map",
    "envmap_vec",
    "ideal_ball",
    "latlong_vec",
    "rotation_y",
]


def _grid(h: int, w: int, device, dtype):
    if h < 1 or w < 1:
        raise ValueError(f"direction grid needs h, w >= 1, got {(h, w)}")
    gy = torch.linspace(1.0 / h, 1.0 - 1.0 / h, h, device=device, dtype=dtype)
    gx = torch.linspace(-1.0 + 1.0 / w, 1.0 - 1.0 / w, w, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(gy, gx, indexing="ij")
    return gy * math.pi, gx * math.pi


def latlong_vec(h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """The original's raw lat-long grid (h, w, 3): ``(sin t sin p, cos t, -sin t cos p)``.

    Computed on the CPU in float32 (float64 if asked) and moved, so values do not depend on the device.
    """
    cdt = torch.float64 if dtype == torch.float64 else torch.float32
    theta, phi = _grid(h, w, None, cdt)
    st = torch.sin(theta)
    vec = torch.stack([st * torch.sin(phi), torch.cos(theta), -st * torch.cos(phi)], dim=-1)
    return vec.to(device=device, dtype=dtype)


def envmap_vec(h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Camera-space direction shown by each pixel of a projected env map, (h, w, 3).

    Equal to ``-latlong_vec`` flipped in rows and columns (computed exactly that way, so the values
    are bit-identical to the original's grid).
    """
    return -torch.flip(latlong_vec(h, w, device=device, dtype=dtype), dims=(0, 1))


def env_direction_map(h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """The model's ``env_nrm`` input (h, w, 3) in [0, 1]: ``envmap_vec * 0.5 + 0.5``."""
    return envmap_vec(h, w, device=device, dtype=dtype) * 0.5 + 0.5


def ideal_ball(n: int, device=None, dtype=torch.float32):
    """Normals (n, n, 3) of an ideal sphere seen orthographically, and its mask (n, n) bool.

    Normals outside the disc are zero.  The grid is a float32 ``linspace``; ``1 - x^2 - y^2`` is
    evaluated in float32 and its square root correctly rounded (through float64), which reproduces
    the recorded normals bit for bit (torch's float32 ``sqrt`` on some CPUs is not correctly rounded).
    """
    lin = torch.linspace(-1.0, 1.0, n, dtype=torch.float32)  # tiny: computed on the CPU
    y, x = torch.meshgrid(-lin, lin, indexing="ij")
    mask = (x * x + y * y) <= 1.0
    z = torch.sqrt(torch.clamp(1.0 - x * x - y * y, min=0.0).double()).float()
    nrm = torch.stack([x, y, z], dim=-1) * mask[..., None].float()
    return nrm.to(device=device, dtype=dtype), mask.to(device)


def ball_reflect_vec(n: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Mirror-ball reflection directions (n, n, 3) of the view ray (0, 0, -1) (camera space).

    ``r = v - 2 (v . n) n`` evaluated in float64 from the float32 normals (single rounding, as the
    recorded vectors).
    """
    nrm, _ = ideal_ball(n, dtype=torch.float32)
    nrm = nrm.double()
    v = torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64)
    vdotn = (nrm * v).sum(-1, keepdim=True)
    return (v - 2.0 * vdotn * nrm).to(device=device, dtype=dtype)


def rotation_y(angle: float | torch.Tensor, device=None, dtype=torch.float32) -> torch.Tensor:
    """Rotation about +Y: ``[[cos a, 0, sin a], [0, 1, 0], [-sin a, 0, cos a]]``.

    ``angle`` may be a scalar or a 1-D tensor (returns (..., 3, 3)).  Computed in float64.
    """
    a = torch.as_tensor(angle, dtype=torch.float64)
    c, s = torch.cos(a), torch.sin(a)
    o, z = torch.ones_like(a), torch.zeros_like(a)
    m = torch.stack([c, z, s, z, o, z, -s, z, c], dim=-1).reshape(*a.shape, 3, 3)
    return m.to(device=device, dtype=dtype)
