"""Per-frame camera-space projection of an HDR environment map (MODEL_SPEC §6.2–§6.6).

Frames and conventions
----------------------
*Env world frame* (the frame the lat-long map lives in): +Y up.  After the ``env_rot`` column roll
the map is sampled at world direction ``w`` with ``u = atan2(w_x, -w_z)/(2 pi) + 0.5`` and
``v = acos(w_y)/pi`` (v = 0 top row), through a 6 x R x R cube map (see :mod:`.cubemap`).  With the
default ``env_rot = 180`` the *un-rolled* input column is ``u_in = atan2(w_x, -w_z)/(2 pi)`` (mod 1),
i.e. exactly Blender's equirectangular mapping of the Blender world direction
``b = P w = (w_z, w_x, w_y)``, ``P = [[0,0,1],[1,0,0],[0,1,0]]`` (Blender: ``u = 0.5 -
atan2(b_y, b_x)/(2 pi)``, ``v_top = acos(b_z)/pi``).  A general ``env_rot`` (degrees) samples the
Blender HDRI at ``R_z(env_rot - 180) . b`` instead (the roll is ``int(W * env_rot / 360)`` whole
columns, so non-integer shifts are truncated as in the original).  ``env_flip`` mirrors the input
columns (u -> 1 - u) before the roll.

*Camera frame*: OpenGL axes, +X right, +Y up, +Z towards the viewer (looking along -Z).  Pixel
(i, j) of every projected map shows camera direction ``d = envmap_vec(h, w)[i, j]`` (centre column
= +Z, i.e. behind the camera; left/right borders = -Z, the viewing direction; top = +Y).

Frame f samples world direction ``w = R_y(a_f) . C_f . d`` where
``R_y(a) = [[cos a, 0, sin a], [0, 1, 0], [-sin a, 0, cos a]]``,
``a_f = linspace(0, 2 pi, F)[f]`` if ``rotate_envlight`` else 0 (first and last frame identical, as
in the original) and ``C_f`` is the camera-to-world rotation:

* ``cam_rotations`` given: ``C_f = cam_rotations[f]`` (env-world frame; convert a Blender camera
  with :func:`env_rotation_from_blender`).
* otherwise the fixed pose of the original, ``C = [[1,0,0],[0,cos e,-sin e],[0,sin e,cos e]]`` for
  ``elevation_convention="reference"`` (the original's w2c-used-as-c2w matrix: **positive elevation
  tilts the view UP**, the camera looks towards world ``(0, sin e, -cos e)``) or its transpose for
  ``"correct"`` (camera raised by e above the horizon looking at the origin: **positive elevation
  tilts the view DOWN**, forward ``(0, -sin e, -cos e)``).  e = 0 gives C = I in both.

In Blender terms, frame f sees the Blender world HDRI (un-rotated; fold a Mapping node into R_cam) at
``b = R_z(a_f) . R_cam . d`` with ``R_cam = P . C_f``; the default (C = I) is a Blender camera with
``rotation_euler = (90, 0, 90)`` degrees: level, looking along world -X, Z up.  Light rotation is a
rotation about Blender's world Z by +a_f.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from . import cube_cache
from .cubemap import latlong_to_cubemap, pad_cubemap, sample_cubemap
from .directions import ball_reflect_vec, envmap_vec, rotation_y
from .encoding import encode_ldr, encode_log
from .hdr_io import load_envmap

__all__ = [
    "BLENDER_FROM_ENV",
    "ENV_FORMATS",
    "env_rotation_from_blender",
    "fixed_camera_pose",
    "get_cam_matrix",
    "light_rotation_angles",
    "prepare_envmap",
    "process_environment_map",
    "rotate_vectors",
]

#: ``b = BLENDER_FROM_ENV @ w``: env-world direction -> Blender world direction.
BLENDER_FROM_ENV = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
ENV_FORMATS = ("proj", "fixed", "ball", "cubemap")
HALF_MAX = 65504.0


def get_cam_matrix(azimuth: float, elevation: float, radius: float = 1.0) -> torch.Tensor:
    """The original's pose helper: a **world-to-camera** look-at matrix (4, 4) float64.

    The camera sits at ``radius * (cos e cos a, sin e, cos e sin a)`` (angles in radians), looks at
    the origin, up = +Y.  ``get_cam_matrix(pi/2, e)`` is the golden ``camera_pose_frame0``.
    """
    a, e = float(azimuth), float(elevation)
    pos = radius * np.array([math.cos(e) * math.cos(a), math.sin(e), math.cos(e) * math.sin(a)])
    fwd = -pos / np.linalg.norm(pos)
    right = np.cross(fwd, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    rot = np.stack([right, up, -fwd], 0)
    m = np.eye(4)
    m[:3, :3] = rot
    m[:3, 3] = -rot @ pos
    return torch.from_numpy(m)


def fixed_camera_pose(elevation_deg: float = 0.0, convention: str = "reference"):
    """(C, pose4x4) float64 for the fixed pose: C is the camera-to-world rotation actually used.

    ``reference``: pose = ``get_cam_matrix(pi/2, e)`` (as the golden records it), C = its 3x3.
    ``correct``: pose = the true camera-to-world inverse of that matrix, C = its 3x3 (transpose).
    """
    w2c = get_cam_matrix(math.pi / 2, math.radians(float(elevation_deg)))
    if convention == "reference":
        return w2c[:3, :3].clone(), w2c
    if convention == "correct":
        c2w = torch.linalg.inv(w2c)
        return c2w[:3, :3].clone(), c2w
    raise ValueError(f"elevation_convention must be 'reference' or 'correct', got {convention!r}")


def light_rotation_angles(num_frames: int, rotate: bool) -> torch.Tensor:
    """Per-frame light rotation angles (radians, float64): ``linspace(0, 2 pi, F)`` or zeros."""
    if rotate:
        return torch.linspace(0.0, 2.0 * math.pi, num_frames, dtype=torch.float64)
    return torch.zeros(num_frames, dtype=torch.float64)


def env_rotation_from_blender(r_blender) -> torch.Tensor:
    """Blender camera-to-world rotation(s) (..., 3, 3) (``matrix_world.to_3x3()``, Z-up world,
    OpenGL camera axes) -> env-world camera rotation(s) ``C = P^T R`` for ``cam_rotations``."""
    r = torch.as_tensor(np.asarray(r_blender, dtype=np.float64))
    return torch.from_numpy(BLENDER_FROM_ENV.T.copy()) @ r


def rotate_vectors(v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``m @ v`` for vectors v (..., 3) and matrices m (..., 3, 3), leading dims broadcast.

    In float32 each component is accumulated like a float32 FMA dot product,
    ``fma(v2, m[i,2], fma(v1, m[i,1], v0 * m[i,0]))`` (emulated exactly through float64), which is
    how the recorded projections were rounded.  float64 inputs are multiplied in float64.
    """
    m = m.to(device=v.device)
    if v.dtype == torch.float64:
        return (m.to(torch.float64) @ v.unsqueeze(-1)).squeeze(-1)
    if v.device.type == "mps":  # no float64 there: plain float32 (differs by float rounding only)
        return (m.to(v.dtype) @ v.unsqueeze(-1)).squeeze(-1)
    dt = v.dtype
    v64 = v.to(torch.float32).double()
    m64 = m.to(torch.float32).double()
    acc = (v64[..., 0:1] * m64[..., :, 0]).float().double()
    acc = (v64[..., 1:2] * m64[..., :, 1] + acc).float().double()
    acc = (v64[..., 2:3] * m64[..., :, 2] + acc).float()
    return acc.to(dt)


def prepare_envmap(hdr, env_strength=1.0, env_flip=False, env_rot=180.0, *, device=None, dtype=torch.float32):
    """Scale, sanitise, mirror and roll the input lat-long (H, W, 3) (MODEL_SPEC §6.2).

    nan -> 0, +inf -> 65504, -inf -> 0, clamp to [0, 65504]; ``env_flip`` mirrors columns; then the
    columns are rolled by ``int(W * env_rot / 360)`` (``rolled[j] = orig[j - shift]``).
    """
    if isinstance(hdr, torch.Tensor):
        t = hdr.detach()
        if device is None:
            device = t.device
        t = t.to(device=device, dtype=dtype)
    else:
        t = torch.as_tensor(np.ascontiguousarray(np.asarray(hdr, dtype=np.float32)), device=device).to(dtype)
    if t.ndim != 3 or t.shape[-1] not in (3, 4) or t.shape[0] < 1 or t.shape[1] < 1:
        raise ValueError(f"hdr must be (H, W, 3) linear RGB, got shape {tuple(t.shape)}")
    t = t[..., :3] * float(env_strength)
    t = torch.nan_to_num(t, nan=0.0, posinf=HALF_MAX, neginf=0.0).clamp(0.0, HALF_MAX)
    if env_flip:
        t = torch.flip(t, dims=(1,))
    shift = int(t.shape[1] * float(env_rot) / 360.0)
    if shift:
        t = torch.roll(t, shifts=shift, dims=1)
    return t.contiguous()


def _encode(hdr: torch.Tensor, log_scale: float):
    return encode_ldr(hdr), encode_log(hdr, log_scale)


def process_environment_map(
    hdr,
    resolution=(512, 512),
    num_frames: int = 24,
    *,
    rotate_envlight: bool = False,
    elevation: float = 0.0,
    elevation_convention: str = "reference",
    env_rot: float = 180.0,
    env_flip: bool = False,
    env_strength: float = 1.0,
    log_scale: float = 10000.0,
    cam_rotations=None,
    env_format=("proj",),
    cube_resolution: int = 512,
    device=None,
    dtype=torch.float32,
    return_hdr: bool = False,
    cache: bool = True,
) -> dict:
    """Project a lat-long HDR (H, W, 3) into the model's per-frame env-map conditions.

    ``hdr``: numpy array or torch tensor (H, W, 3) of linear radiance (absolute scale matters), or a
    path to a ``.hdr`` / ``.exr`` file.  Computation is float32 (float64 when ``dtype`` is float64)
    on ``device`` (default: the tensor's device, else CPU); outputs are cast to ``dtype``.

    See the module docstring for the frames.  ``elevation`` is in degrees.  ``env_format`` is any
    subset of ``("proj", "fixed", "ball", "cubemap")``.  Returns torch tensors on ``device``:

    * ``"proj"``: ``env_ldr``, ``env_log`` (F, h, w, 3) in [0, 1] (+ ``env_hdr`` if ``return_hdr``);
    * ``"fixed"``: ``fixed_env_hdr``, ``fixed_env_ldr``, ``fixed_env_log`` (h, w, 3): un-posed
      (``w = d``, no light rotation);
    * ``"ball"`` (square resolution only): ``ball_env_ldr``, ``ball_env_log`` (F, h, w, 3): a mirror
      ball (:func:`~.directions.ball_reflect_vec`) lit by the posed map (+ ``ball_env_hdr``);
    * ``"cubemap"``: ``cubemap`` (6, R, R, 3) built from the adjusted input;
    * always ``camera_pose_frame0`` (4, 4): for the fixed pose the matrix the original returns
      (``reference``: its w2c-used-as-c2w matrix; ``correct``: the true c2w), else
      ``[[cam_rotations[0], 0], [0, 1]]``.

    ``cam_rotations`` (F, 3, 3) or (3, 3): camera-to-world rotations in the env-world frame
    overriding the fixed pose (``elevation`` must then be 0).

    ``cache``: reuse the padded cube map of an identical input and settings from an earlier call in this
    process (:mod:`.cube_cache`; exact); ``False`` rebuilds it (the reference's behaviour).
    """
    h, w = (int(resolution[0]), int(resolution[1])) if not isinstance(resolution, int) else (resolution, resolution)
    if h < 1 or w < 1:
        raise ValueError(f"resolution must be positive (h, w), got {resolution!r}")
    num_frames = int(num_frames)
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if isinstance(env_format, str):
        env_format = (env_format,)
    fmts = set(env_format)
    unknown = fmts - set(ENV_FORMATS)
    if unknown:
        raise ValueError(f"unknown env_format entries {sorted(unknown)}; allowed: {ENV_FORMATS}")
    if "ball" in fmts and h != w:
        raise ValueError(f"the 'ball' format needs a square resolution, got {(h, w)}")
    if elevation_convention not in ("reference", "correct"):
        raise ValueError(f"elevation_convention must be 'reference' or 'correct', got {elevation_convention!r}")

    if dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise ValueError(f"dtype must be a floating torch dtype, got {dtype!r}")
    cdt = torch.float64 if dtype == torch.float64 else torch.float32  # compute dtype
    if isinstance(hdr, (str, os.PathLike)):
        hdr = load_envmap(hdr)
    tex = prepare_envmap(hdr, env_strength, env_flip, env_rot, device=device, dtype=cdt)
    device = tex.device
    digest = cube_cache.content_key(hdr) if cache and "cubemap" not in fmts else None
    key = None if digest is None else (digest, float(env_strength), bool(env_flip), float(env_rot),
                                       int(cube_resolution), str(device), str(cdt))
    padded = cube_cache.get_or_build(key, lambda: pad_cubemap(latlong_to_cubemap(tex, int(cube_resolution))))
    cube = padded[:, 1:-1, 1:-1] if "cubemap" in fmts else None
    out: dict = {}

    # per-frame camera-to-world rotation C_f, then light rotation L_f = R_y(a_f): w = L_f (C_f d)
    if cam_rotations is not None:
        if float(elevation) != 0.0:
            raise ValueError("elevation must be 0 when cam_rotations are given (put the tilt in the rotations)")
        if isinstance(cam_rotations, torch.Tensor):
            cam_rotations = cam_rotations.detach().cpu().numpy()
        cams = torch.from_numpy(np.array(cam_rotations, dtype=np.float64))
        if cams.shape == (3, 3):
            cams = cams.expand(num_frames, 3, 3)
        if cams.shape != (num_frames, 3, 3):
            raise ValueError(f"cam_rotations must be (num_frames, 3, 3) = ({num_frames}, 3, 3), got {tuple(cams.shape)}")
        if not torch.isfinite(cams).all():
            raise ValueError("cam_rotations contain non-finite values")
        pose0 = torch.eye(4, dtype=torch.float64)
        pose0[:3, :3] = cams[0]
    else:
        c, pose0 = fixed_camera_pose(elevation, elevation_convention)
        cams = c.expand(num_frames, 3, 3)
    lights = rotation_y(light_rotation_angles(num_frames, rotate_envlight), dtype=torch.float64)
    # the matrices are rounded to the compute dtype first (float32: as the original)
    cams_c = cams.to(cdt)
    lights_c = lights.to(cdt)
    out["camera_pose_frame0"] = pose0.to(cdt)

    # frames with identical rotations are computed once; distinct ones in batches of ~1M lookups
    groups: dict = {}
    for f in range(num_frames):
        key = (cams_c[f].numpy().tobytes(), lights_c[f].numpy().tobytes())
        groups.setdefault(key, []).append(f)
    reps = [frames[0] for frames in groups.values()]

    def posed(vecs: torch.Tensor) -> torch.Tensor:
        per = max(1, (1 << 20) // max(1, vecs.numel() // 3))
        vals = []
        for i in range(0, len(reps), per):
            idx = reps[i : i + per]
            shape = (len(idx),) + (1,) * (vecs.ndim - 1) + (3, 3)  # one matrix per frame
            w = rotate_vectors(rotate_vectors(vecs, cams_c[idx].reshape(shape)), lights_c[idx].reshape(shape))
            vals.append(sample_cubemap(None, w, padded=padded, chunk=1 << 20))
        vals = torch.cat(vals, 0)
        res = torch.empty((num_frames, *vecs.shape[:-1], 3), device=device, dtype=cdt)
        for k, frames in enumerate(groups.values()):
            res[frames] = vals[k]
        return res

    if "proj" in fmts:
        env = posed(envmap_vec(h, w, device=device, dtype=cdt))
        out["env_ldr"], out["env_log"] = _encode(env, log_scale)
        if return_hdr:
            out["env_hdr"] = env
    if "fixed" in fmts:
        fixed = sample_cubemap(None, envmap_vec(h, w, device=device, dtype=cdt), padded=padded)
        out["fixed_env_hdr"] = fixed
        out["fixed_env_ldr"], out["fixed_env_log"] = _encode(fixed, log_scale)
    if "ball" in fmts:
        ball = posed(ball_reflect_vec(h, device=device, dtype=cdt))
        out["ball_env_ldr"], out["ball_env_log"] = _encode(ball, log_scale)
        if return_hdr:
            out["ball_env_hdr"] = ball
    if "cubemap" in fmts:
        out["cubemap"] = cube
    return {k: v.to(device=device, dtype=dtype) for k, v in out.items()}
