"""Self-contained geometry tests: direction grids, cube map, projection conventions, Blender mapping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.envmap import (
    BLENDER_FROM_ENV,
    encode_ldr,
    encode_log,
    env_direction_map,
    env_rotation_from_blender,
    envmap_vec,
    get_cam_matrix,
    latlong_to_cubemap,
    latlong_vec,
    pad_cubemap,
    process_environment_map,
    rotation_y,
    sample_cubemap,
    write_hdr,
)
from engine.envmap.cubemap import cube_face_directions

P = torch.tensor(BLENDER_FROM_ENV)


def _rot_z(a):
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def _rot_x(a):
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]], dtype=torch.float64)


def _f(w):
    """Smooth test radiance of a world direction (..., 3) -> (..., 3)."""
    w = w.double()
    return torch.stack([2.0 + w[..., 0], 2.0 + 0.8 * w[..., 1] + 0.3 * w[..., 2], 1.5 - 0.7 * w[..., 2]], -1)


def _latlong_of(fn, h, w):
    """Input lat-long whose pixel centre (u, v) holds fn(world dir), for the default env_rot=180:
    u_in = atan2(w_x, -w_z) / (2 pi), v = acos(w_y) / pi."""
    v = (torch.arange(h, dtype=torch.float64) + 0.5) / h
    u = (torch.arange(w, dtype=torch.float64) + 0.5) / w
    th, ph = torch.meshgrid(v * math.pi, u * 2 * math.pi, indexing="ij")
    d = torch.stack([torch.sin(th) * torch.sin(ph), torch.cos(th), -torch.sin(th) * torch.cos(ph)], -1)
    return fn(d).float()


def _blender_latlong(fn_b, h, w):
    """Lat-long image in Blender's equirect convention: pixel (u, v_top) holds fn_b(b)."""
    v = (torch.arange(h, dtype=torch.float64) + 0.5) / h
    u = (torch.arange(w, dtype=torch.float64) + 0.5) / w
    th, uu = torch.meshgrid(v * math.pi, u, indexing="ij")
    phi = (0.5 - uu) * 2 * math.pi
    b = torch.stack([torch.sin(th) * torch.cos(phi), torch.sin(th) * torch.sin(phi), torch.cos(th)], -1)
    return fn_b(b).float()


# ----------------------------------------------------------------------------------- directions
def test_envmap_vec_layout():
    d = envmap_vec(64, 128)
    assert d.shape == (64, 128, 3)
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(64, 128), atol=1e-6, rtol=0)
    mid = 31
    assert d[mid, 64, 2] > 0.99  # centre column: +Z (behind the camera)
    assert d[mid, 0, 2] < -0.99 and d[mid, 127, 2] < -0.99  # borders: -Z (view direction)
    assert d[mid, 96, 0] > 0.99 and d[mid, 32, 0] < -0.99  # right quarter +X, left quarter -X
    assert d[0, :, 1].min() > 0.99  # top row +Y
    torch.testing.assert_close(d, -torch.flip(latlong_vec(64, 128), (0, 1)), atol=0, rtol=0)
    e = env_direction_map(64, 128)
    torch.testing.assert_close(e, d * 0.5 + 0.5, atol=0, rtol=0)
    assert e.min() >= 0 and e.max() <= 1


def test_cam_matrix_and_rotations():
    m0 = get_cam_matrix(math.pi / 2, 0.0)
    expect = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, -1], [0, 0, 0, 1]], dtype=torch.float64)
    torch.testing.assert_close(m0, expect, atol=1e-15, rtol=0)
    e = math.radians(30)
    m30 = get_cam_matrix(math.pi / 2, e)[:3, :3]
    torch.testing.assert_close(m30, _rot_x(e), atol=1e-15, rtol=0)
    # Blender: the default camera is rotation_euler (90, 0, 90) deg; light rotation is about world Z
    r_blender = _rot_z(math.pi / 2) @ _rot_x(math.pi / 2)
    torch.testing.assert_close(r_blender, P, atol=1e-15, rtol=0)
    torch.testing.assert_close(env_rotation_from_blender(r_blender), torch.eye(3, dtype=torch.float64), atol=1e-15, rtol=0)
    a = 0.7
    torch.testing.assert_close(P @ rotation_y(a, dtype=torch.float64) @ P.T, _rot_z(a), atol=1e-15, rtol=0)


# ----------------------------------------------------------------------------------- cube map
def test_cube_lookup_at_texel_centres_returns_texels():
    r = 16
    cube = torch.rand(6, r, r, 3, generator=torch.Generator().manual_seed(0))
    d = cube_face_directions(r)
    torch.testing.assert_close(sample_cubemap(cube, d), cube, atol=2e-5, rtol=0)


def test_cube_smooth_function_no_seams():
    """A cube built from a smooth function reproduces it everywhere: O(1/R^2) inside faces and
    O(1/R) within a texel of an edge (neighbour-face taps), never a seam jump."""
    g = torch.Generator().manual_seed(1)
    d = torch.randn(100000, 3, generator=g, dtype=torch.float64)
    edge_dirs = torch.tensor([[1.0, 1.0, 0.3], [1.0, -0.999, 0.999], [-1, 1, 1], [1, 1, 1], [0.2, -1, -1], [1e-3, 1, 1]])
    d = torch.cat([d, edge_dirs.double(), -edge_dirs.double()])
    d = d / d.norm(dim=-1, keepdim=True)
    s = d.abs().sort(-1).values
    errs = {}
    for r in (32, 64):
        cube = _f(cube_face_directions(r, dtype=torch.float64)).float()
        err = (sample_cubemap(cube, d.float()).double() - _f(d)).abs().amax(-1)
        near_edge = s[:, 1] / s[:, 2] > 1 - 2 / r
        errs[r] = (err[near_edge].max().item(), err[~near_edge].max().item())
    assert errs[32][0] < 8e-3 and errs[32][1] < 1.5e-3
    assert errs[64][0] < 0.6 * errs[32][0] and errs[64][1] < 0.35 * errs[32][1]  # converges


def test_pad_cubemap_borders_are_geometric_neighbours():
    r = 8
    dirs = cube_face_directions(r, dtype=torch.float64)
    pad = pad_cubemap(dirs)  # pad the direction field itself
    c = torch.linspace(-1 - 1 / r, 1 + 1 / r, r + 2, dtype=torch.float64)
    # off-face positions (one texel outside), projected: the padded texel must be the adjacent one
    for f in range(6):
        for (i, j) in [(0, 3), (r + 1, 5), (4, 0), (2, r + 1)]:
            x, y = float(c[j]), float(c[i])
            from engine.envmap.cubemap import _face_dir

            want = _face_dir(f, torch.tensor([x], dtype=torch.float64), torch.tensor([y], dtype=torch.float64))[0]
            want = want / want.norm()
            assert torch.dot(pad[f, i, j] / pad[f, i, j].norm(), want) > math.cos(1.6 * math.pi / 2 / r)
    # corners: average of the three texels around the cube corner
    torch.testing.assert_close(pad[0, 0, 0], (pad[0, 0, 1] + pad[0, 1, 0] + pad[0, 1, 1]) / 3)


def test_latlong_to_cubemap_constant_and_invalid():
    ll = torch.full((8, 16, 3), 3.25)
    cube = latlong_to_cubemap(ll, 8)
    assert cube.shape == (6, 8, 8, 3) and torch.all(cube == 3.25)
    out = sample_cubemap(cube, torch.tensor([[float("nan"), 0, 1], [0, 0, 0], [0, 0, -2]]))
    assert out[0].eq(0).all() and out[1].eq(0).all() and out[2].eq(3.25).all()


# ----------------------------------------------------------------------------------- projection
@pytest.fixture(scope="module")
def smooth_hdr():
    return _latlong_of(_f, 96, 192)


def test_projection_samples_world_direction(smooth_hdr):
    h, w, nf = 24, 48, 4
    e = 20.0
    out = process_environment_map(
        smooth_hdr, (h, w), nf, rotate_envlight=True, elevation=e, env_format=("proj", "fixed"), return_hdr=True,
        cube_resolution=128,
    )
    d = envmap_vec(h, w, dtype=torch.float64)
    c = _rot_x(math.radians(e))  # reference convention
    for f, a in enumerate(np.linspace(0, 2 * math.pi, nf)):
        want = _f(d @ (rotation_y(float(a), dtype=torch.float64) @ c).T)
        assert (out["env_hdr"][f].double() - want).abs().max() < 2e-3
    torch.testing.assert_close(out["env_hdr"][-1], out["env_hdr"][0], atol=0, rtol=0)  # 0 and 2 pi
    torch.testing.assert_close(out["fixed_env_hdr"].double(), _f(d), atol=2e-3, rtol=0)
    torch.testing.assert_close(out["env_ldr"], encode_ldr(out["env_hdr"]), atol=0, rtol=0)
    torch.testing.assert_close(out["env_log"], encode_log(out["env_hdr"]), atol=0, rtol=0)
    assert out["camera_pose_frame0"].shape == (4, 4)


def test_defaults_closed_form_and_fixed_equals_frame0():
    # at defaults, pixel (i, j) = input at u = 1 - (j + 0.5)/W, v = gy_i (mirrored left-right)
    hin, win = 64, 128
    v = (torch.arange(hin, dtype=torch.float64) + 0.5) / hin
    u = (torch.arange(win, dtype=torch.float64) + 0.5) / win
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    g = lambda uu, vv: torch.stack([1 + 0.5 * torch.cos(2 * math.pi * uu), 1 + torch.sin(2 * math.pi * uu) * torch.sin(math.pi * vv), 1 + 0.5 * torch.cos(math.pi * vv)], -1)
    hdr = g(uu, vv).float()
    h = w = 32
    out = process_environment_map(hdr, (h, w), 2, env_format=("proj", "fixed", "ball"), return_hdr=True, cube_resolution=256)
    gy = torch.linspace(1 / h, 1 - 1 / h, h, dtype=torch.float64)
    ju = 1 - (torch.arange(w, dtype=torch.float64) + 0.5) / w
    vv, uu = torch.meshgrid(gy, ju, indexing="ij")
    assert (out["env_hdr"][0].double() - g(uu, vv)).abs().max() < 0.02
    torch.testing.assert_close(out["env_hdr"][0], out["fixed_env_hdr"], atol=0, rtol=0)
    torch.testing.assert_close(out["env_hdr"][1], out["env_hdr"][0], atol=0, rtol=0)
    assert out["ball_env_ldr"].shape == (2, h, w, 3)


@pytest.mark.parametrize("convention,sign", [("reference", 1.0), ("correct", -1.0)])
def test_elevation_conventions(convention, sign):
    # radiance = world up component: the viewing direction (border columns, middle rows) shows sin(+-e)
    hdr = _latlong_of(lambda d: torch.stack([d[..., 1] + 2, d[..., 1] + 2, d[..., 1] + 2], -1), 64, 128)
    e = 30.0
    out = process_environment_map(hdr, (32, 64), 1, elevation=e, elevation_convention=convention, return_hdr=True)
    d = envmap_vec(32, 64, dtype=torch.float64)
    c = _rot_x(sign * math.radians(e))  # reference: tilt up; correct: tilt down
    want = (d @ c.T)[..., 1] + 2
    assert (out["env_hdr"][0][..., 0].double() - want).abs().max() < 3e-3
    ahead = d[..., 2] < -0.99  # pixels looking (almost) straight ahead see the sky (ref) / ground (correct)
    assert torch.all(sign * (out["env_hdr"][0][ahead][:, 0] - 2) > 0.35)
    pose = out["camera_pose_frame0"].double()
    fwd = pose[:3, :3] @ torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64)
    torch.testing.assert_close(fwd, torch.tensor([0.0, sign * 0.5, -math.sqrt(3) / 2], dtype=torch.float64), atol=1e-6, rtol=0)


def test_cam_rotations_override_matches_fixed_pose(smooth_hdr):
    e = 30.0
    ref = process_environment_map(smooth_hdr, (16, 16), 3, rotate_envlight=True, elevation=e, env_format=("proj", "ball"))
    c = get_cam_matrix(math.pi / 2, math.radians(e))[:3, :3]
    got = process_environment_map(smooth_hdr, (16, 16), 3, rotate_envlight=True, cam_rotations=c.expand(3, 3, 3),
                                  env_format=("proj", "ball"))
    for k in ("env_ldr", "env_log", "ball_env_ldr", "ball_env_log"):
        torch.testing.assert_close(got[k], ref[k], atol=0, rtol=0)
    # per-frame cameras: a camera yawing with the frames while the light stays fixed
    cams = torch.stack([rotation_y(a, dtype=torch.float64) for a in (0.0, 0.5, 1.0)])
    moving = process_environment_map(smooth_hdr, (16, 16), 3, cam_rotations=cams, return_hdr=True)
    d = envmap_vec(16, 16, dtype=torch.float64)
    for f in range(3):
        assert (moving["env_hdr"][f].double() - _f(d @ cams[f].T)).abs().max() < 3e-3
    with pytest.raises(ValueError):
        process_environment_map(smooth_hdr, (16, 16), 3, cam_rotations=cams[:2])
    with pytest.raises(ValueError):
        process_environment_map(smooth_hdr, (16, 16), 3, cam_rotations=cams, elevation=10)


@pytest.mark.parametrize("env_rot", [180.0, 90.0])
def test_blender_equivalence(env_rot):
    """Pixel d of frame f shows the Blender HDRI at b = R_z(env_rot - 180) R_z(a_f) R_cam d."""
    fb = lambda b: torch.stack([2 + b[..., 0], 2 + b[..., 1], 2 + 0.5 * b[..., 2] - 0.3 * b[..., 0]], -1)
    hdr = _blender_latlong(fb, 128, 256)
    r_cam = _rot_z(math.radians(120)) @ _rot_x(math.radians(75))  # some Blender camera
    nf = 3
    out = process_environment_map(hdr, (24, 24), nf, rotate_envlight=True, env_rot=env_rot,
                                  cam_rotations=env_rotation_from_blender(r_cam).expand(nf, 3, 3), return_hdr=True)
    d = envmap_vec(24, 24, dtype=torch.float64)
    for f, a in enumerate(np.linspace(0, 2 * math.pi, nf)):
        b = d @ (_rot_z(math.radians(env_rot - 180)) @ _rot_z(float(a)) @ r_cam).T
        assert (out["env_hdr"][f].double() - fb(b)).abs().max() < 3e-3


def test_options_sanitising_and_errors(tmp_path):
    hdr = torch.ones(16, 32, 3)
    hdr[0, 0] = float("nan")
    hdr[1, 1] = float("inf")
    hdr[2, 2] = -5
    out = process_environment_map(hdr, (8, 8), 1, env_format=("proj", "fixed", "cubemap"), return_hdr=True, cube_resolution=32)
    assert torch.isfinite(out["env_hdr"]).all() and out["cubemap"].max() <= 65504 and out["cubemap"].min() >= 0
    assert out["cubemap"].shape == (6, 32, 32, 3)
    # strength scales, flip mirrors, rotation rolls
    rng = torch.rand(16, 32, 3, generator=torch.Generator().manual_seed(3))
    a = process_environment_map(rng, (8, 16), 1, env_format=("cubemap",), cube_resolution=16)["cubemap"]
    b = process_environment_map(rng * 2, (8, 16), 1, env_format=("cubemap",), cube_resolution=16)["cubemap"]
    torch.testing.assert_close(b, a * 2, rtol=1e-6, atol=0)
    c = process_environment_map(torch.roll(rng, 8, 1), (8, 16), 1, env_rot=90.0, env_format=("cubemap",), cube_resolution=16)
    torch.testing.assert_close(c["cubemap"], a, atol=0, rtol=0)  # rolling by 90 deg = 8 columns more
    e = process_environment_map(torch.flip(rng, (1,)), (8, 16), 1, env_flip=True, env_format=("cubemap",), cube_resolution=16)
    torch.testing.assert_close(e["cubemap"], a, atol=0, rtol=0)
    # path input and dtype
    write_hdr(tmp_path / "e.hdr", rng.numpy())
    p = process_environment_map(tmp_path / "e.hdr", (8, 16), 2, dtype=torch.float64)
    assert p["env_ldr"].dtype == torch.float64 and p["env_ldr"].shape == (2, 8, 16, 3)
    for kwargs in ({"env_format": ("proj", "ball")}, {"env_format": ("bogus",)}, {"elevation_convention": "up"},
                   {"num_frames": 0}, {"resolution": (0, 4)}):
        args = {"resolution": (8, 16), "num_frames": 1, **kwargs}
        with pytest.raises(ValueError):
            process_environment_map(rng, **args)
    with pytest.raises(ValueError):
        process_environment_map(torch.ones(4, 4), (8, 8), 1)
