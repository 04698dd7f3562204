"""World lighting export: the environment-texture description (path, strength, rotation in the engine's
--env-rotation convention) and the panoramic render of procedural worlds, checked against analytic
environment maps, in Blender and through the engine's projection."""
from __future__ import annotations

import json
import math
import warnings

import pytest

import bpy_scene as S
from bpy_scene import bpy

np = pytest.importorskip("numpy")

from diffusion_renderer_addon.export import (EnvExportError, describe_world_lighting, export_environment,  # noqa: E402
                                             render_world_equirect)
from diffusion_renderer_addon.export.env_export import engine_rotation_from_mapping  # noqa: E402
from exr_files import read_exr, write_exr  # noqa: E402

W, H = 64, 32


def f_env(b):
    """A smooth function of the Blender world direction (…, 3) → RGB (all channels distinct)."""
    return np.stack([2 + b[..., 0], 2 + b[..., 1], 2 + 0.5 * b[..., 2] - 0.3 * b[..., 0]], -1)


def blender_dirs(h, w):
    """Blender world direction of each equirect pixel centre (u = 0.5 − atan2(b_y, b_x)/2π, v = acos(b_z)/π)."""
    v = (np.arange(h) + 0.5) / h
    u = (np.arange(w) + 0.5) / w
    theta = v[:, None] * math.pi
    phi = (0.5 - u[None, :]) * 2 * math.pi
    return np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta) + 0 * phi], -1)


def rot_z(deg):
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1.0]])


@pytest.fixture()
def env_file(tmp_path):
    img = f_env(blender_dirs(H, W)).astype(np.float32)
    path = tmp_path / "env.exr"
    write_exr(path, {c: img[..., i] for i, c in enumerate("RGB")}, dtype="float")
    return path


def make_world(env_path=None, *, rotation_z=0.0, vector_type="POINT", strength=1.0, rotation_x=0.0, mapping=True):
    S.reset()
    scene = bpy.context.scene
    world = bpy.data.worlds.new("World")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        world.use_nodes = True
    scene.world = world
    nt = world.node_tree
    bg = next(n for n in nt.nodes if n.bl_idname == "ShaderNodeBackground")
    bg.inputs["Strength"].default_value = strength
    if env_path is not None:
        env = nt.nodes.new("ShaderNodeTexEnvironment")
        env.image = bpy.data.images.load(str(env_path))
        env.interpolation = "Linear"
        nt.links.new(env.outputs[0], bg.inputs["Color"])
        if mapping:
            m = nt.nodes.new("ShaderNodeMapping")
            m.vector_type = vector_type
            m.inputs["Rotation"].default_value = (math.radians(rotation_x), 0.0, math.radians(rotation_z))
            tc = nt.nodes.new("ShaderNodeTexCoord")
            nt.links.new(tc.outputs["Generated"], m.inputs["Vector"])
            nt.links.new(m.outputs[0], env.inputs["Vector"])
    return scene


def read_rgb(path):
    ch = read_exr(path)
    return np.stack([ch[c] for c in "RGB"], -1)


def test_rotation_convention():
    assert engine_rotation_from_mapping(0.0) == 180.0
    assert engine_rotation_from_mapping(40.0, "POINT") == 220.0
    assert engine_rotation_from_mapping(40.0, "VECTOR") == 220.0
    assert engine_rotation_from_mapping(40.0, "TEXTURE") == 140.0
    assert engine_rotation_from_mapping(200.0) == pytest.approx(20.0)
    assert engine_rotation_from_mapping(-180.0) == 0.0


def test_environment_texture_is_described(env_file):
    d = describe_world_lighting(make_world(env_file, rotation_z=40.0, strength=2.5))
    assert d["kind"] == "environment-texture" and not d["needs_render"]
    assert d["path"] == str(env_file) and d["env_strength"] == 2.5
    assert d["env_rotation"] == pytest.approx(220.0)
    d = describe_world_lighting(make_world(env_file, rotation_z=40.0, vector_type="TEXTURE"))
    assert d["env_rotation"] == pytest.approx(140.0)
    d = describe_world_lighting(make_world(env_file, mapping=False))
    assert d["env_rotation"] == 180.0 and d["kind"] == "environment-texture"


def test_unrepresentable_worlds_need_a_render(env_file, tmp_path):
    d = describe_world_lighting(make_world(env_file, rotation_x=10.0))
    assert d["needs_render"] and "X/Y" in " ".join(d["notes"])
    d = describe_world_lighting(make_world(None))
    assert d["kind"] == "procedural" and d["needs_render"]
    png = tmp_path / "env.png"
    img = bpy.data.images.new("p", 8, 4)
    img.filepath_raw, img.file_format = str(png), "PNG"
    img.save()
    d = describe_world_lighting(make_world(png))
    assert d["needs_render"] and ".hdr/.exr" in " ".join(d["notes"])
    scene = make_world(None)
    scene.world = None
    assert describe_world_lighting(scene)["kind"] == "none"
    with pytest.raises(EnvExportError):
        export_environment(scene, tmp_path / "none")


def test_pano_render_reproduces_the_world_lookup(env_file, tmp_path):
    """The panoramic render of an env-texture world rotated by a Mapping node (Point, 40°) is
    f(R_z(40°)·b): the Mapping node rotates the lookup direction, as the rotation convention assumes."""
    scene = make_world(env_file, rotation_z=40.0)
    before = S.fingerprint(scene)
    out = render_world_equirect(scene, tmp_path / "pano.exr", width=W, samples=1)
    assert S.diff(before, S.fingerprint(scene)) == []  # temporary scene and camera removed
    img = read_rgb(out)
    expect = f_env(blender_dirs(H, W) @ rot_z(40.0).T)
    inner = (slice(3, H - 3), slice(3, W - 3))  # the poles are degenerate for bilinear lookups
    assert np.abs(img[inner] - expect[inner]).max() < 0.02


def test_export_environment_writes_env_json(env_file, tmp_path):
    scene = make_world(env_file, rotation_z=-30.0, strength=0.5)
    d = export_environment(scene, tmp_path / "a")
    saved = json.loads((tmp_path / "a" / "env.json").read_text())
    assert saved == d and d["path"] == str(env_file) and d["env_rotation"] == pytest.approx(150.0)
    assert d["cli_args"] == ["--hdri", str(env_file), "--env-rotation", "150", "--env-strength", "0.5"]
    # a procedural world is rendered; strength and rotation are baked in
    scene = make_world(None, strength=3.0)
    bg = next(n for n in scene.world.node_tree.nodes if n.bl_idname == "ShaderNodeBackground")
    bg.inputs["Color"].default_value = (0.5, 0.25, 0.125, 1.0)
    d = export_environment(scene, tmp_path / "b", width=32, samples=1)
    assert d["kind"] == "rendered" and d["source_kind"] == "procedural"
    assert d["env_rotation"] == 180.0 and d["env_strength"] == 1.0
    img = read_rgb(d["path"])
    assert img.shape == (16, 32, 3)
    assert np.abs(img - np.array([1.5, 0.75, 0.375])).max() < 1e-3
    with pytest.raises(EnvExportError, match="cannot be used directly"):
        export_environment(scene, tmp_path / "c", render="never")


def test_engine_sees_the_blender_world(env_file, tmp_path):
    """End to end through the engine's projection: with the exported rotation and the camera rotation
    from Blender (env_rotation_from_blender), pixel d of the model's env map equals the rotated Blender
    world seen along R_cam·d."""
    scene = make_world(env_file, rotation_z=40.0, vector_type="POINT")
    d = describe_world_lighting(scene)
    r_cam = np.array(S.CAM_ROT.to_matrix())
    code = r"""
import json, sys, math
import numpy as np, torch
from engine.envmap import env_rotation_from_blender, load_envmap
from engine.envmap.projection import process_environment_map
from engine.envmap.directions import envmap_vec
args = json.loads(sys.argv[1])
hdr = load_envmap(args["path"])
r_cam = np.array(args["r_cam"])
out = process_environment_map(hdr, (16, 32), 1, env_rot=args["env_rotation"], return_hdr=True,
    env_format=("proj",), cam_rotations=env_rotation_from_blender(r_cam)[None])
dirs = envmap_vec(16, 32, dtype=torch.float64).numpy()
P = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0.0]])
b = dirs @ (P @ env_rotation_from_blender(r_cam).numpy()).T  # Blender world direction of each pixel
print(json.dumps({"env": out["env_hdr"][0].double().numpy().tolist(), "b": b.tolist()}))
"""
    r = json.loads(S.run_engine(code, json.dumps({"path": d["path"], "env_rotation": d["env_rotation"],
                                                   "r_cam": r_cam.tolist()})))
    env, b = np.array(r["env"]), np.array(r["b"])
    expect = f_env(b @ rot_z(40.0).T)  # what the rotated Blender world shows along b
    assert np.abs(env - expect).max() < 0.03
