"""Shared helpers for the Blender export tests (imported by tests/blender/test_export_*.py).

* :data:`bpy` — the ``bpy`` module, or the test module is skipped with the reason when it is absent.
* :func:`reset` — an empty factory scene (one ``import bpy`` per process; reset instead of re-import).
* :func:`build_export_scene` — the analytic test scene (camera, plane, spheres, cube; known materials).
* :func:`build_plane_scene`, :func:`new_material`, :func:`principled` — one plane, one material.
* :func:`fingerprint`, :func:`diff` — a deep, comparable dump of everything the export must leave
  unchanged (bpy_fingerprint.py, re-exported here).
* :func:`engine_python`, :func:`run_engine`, :func:`convert_render`, :func:`render_passes`,
  :func:`export_centre`, :func:`read_png` — the engine's interpreter and reading exported files back
  through it (bpy_readback.py, re-exported here).
"""
from __future__ import annotations

import math
import os
import sys
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("BLENDER_USER_RESOURCES", str(Path(os.environ.get("TMPDIR", "/tmp")) / "dr-bpy-user"))
bpy = pytest.importorskip("bpy", reason="bpy (Blender as a Python module) is not installed in this interpreter; "
                                        "run these tests with bin/test-blender-matrix")
from mathutils import Euler, Vector  # noqa: E402

from bpy_fingerprint import diff, fingerprint, rna_dump, tree_fingerprint  # noqa: E402, F401  (re-exported)
from bpy_readback import (convert_render, engine_python, export_centre, read_png, render_passes,  # noqa: E402, F401
                          run_engine)  # (re-exported)

VERSION = tuple(bpy.app.version)

# ------------------------------------------------------------------------------------------ scene
# Everything is placed in the camera's frame: a camera at CAM_LOC with rotation CAM_ROT (Euler XYZ),
# looking down its −Z; objects at camera-local (x, y, −depth). The camera moves by STEP along its local
# X per frame (frames 1..3), objects are static, so planar depths do not change.
CAM_LOC = Vector((1.0, -6.0, 2.0))
CAM_ROT = Euler((math.radians(70.0), 0.0, math.radians(20.0)), "XYZ")
STEP = 0.1
PLANE_DEPTH = 5.0
PLANE_SIZE = 2.4
HALF_FOV = 18.0 / 50.0  # sensor 36 mm, lens 50 mm → tan(half fov) at a square frame
OBJECTS = {
    # name: (camera-local centre, radius / half size)
    "sphere_group": ((-0.6, 0.45, -3.0), 0.35),
    "cube_nomat": ((0.4, 0.3, -2.0), 0.15),
    "sphere_diffuse": ((0.0, -0.5, -4.0), 0.3),
}
EXPECTED = {  # (basecolor, roughness, metallic, depth range (lo, hi)) per surface
    "plane": ((0.8, 0.2, 0.1), 0.3, 0.25, (PLANE_DEPTH - 1e-3, PLANE_DEPTH + 1e-3)),
    "sphere_group": ((0.1, 0.5, 0.9), 0.7, 1.0, (3.0 - 0.35 - 0.01, 3.0 + 0.05)),
    "cube_nomat": ((0.8, 0.8, 0.8), 0.5, 0.0, (2.0 - 0.15 - 1e-3, 2.0 + 0.15 + 1e-3)),  # front + side faces
    "sphere_diffuse": ((0.2, 0.6, 0.3), 0.5, 0.0, (4.0 - 0.3 - 0.01, 4.0 + 0.05)),
}


def _empty_material(name):
    """A node material holding only its Material Output."""
    mat = bpy.data.materials.new(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        mat.use_nodes = True
    nt = mat.node_tree
    for n in list(nt.nodes):
        if n.bl_idname != "ShaderNodeOutputMaterial":
            nt.nodes.remove(n)
    return mat, nt


def reset():
    bpy.ops.wm.read_factory_settings(use_empty=True)


def _rot():
    return CAM_ROT.to_matrix()


def world_point(local) -> Vector:
    return CAM_LOC + _rot() @ Vector(local)


def _link(obj):
    bpy.context.scene.collection.objects.link(obj)
    return obj


def _principled_material(name, base, rough, metal, *, link_base=False, link_metal=False):
    mat = bpy.data.materials.new(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        mat.use_nodes = True
    nt = mat.node_tree
    p = next(n for n in nt.nodes if n.bl_idname == "ShaderNodeBsdfPrincipled")
    p.inputs["Roughness"].default_value = rough
    if link_base:
        rgb = nt.nodes.new("ShaderNodeRGB")
        rgb.outputs[0].default_value = (*base, 1.0)
        nt.links.new(rgb.outputs[0], p.inputs["Base Color"])
        p.inputs["Base Color"].default_value = (0.0, 1.0, 0.0, 1.0)  # must be ignored (linked)
    else:
        p.inputs["Base Color"].default_value = (*base, 1.0)
    if link_metal:
        val = nt.nodes.new("ShaderNodeValue")
        val.outputs[0].default_value = metal
        nt.links.new(val.outputs[0], p.inputs["Metallic"])
    else:
        p.inputs["Metallic"].default_value = metal
    return mat


def _group_material(name, base, rough, metal):
    """A material whose Principled BSDF sits inside a node group (Base Color fed via a group input)."""
    g = bpy.data.node_groups.new(f"{name}_group", "ShaderNodeTree")
    g.interface.new_socket(name="Tint", in_out="INPUT", socket_type="NodeSocketColor")
    g.interface.new_socket(name="Shader", in_out="OUTPUT", socket_type="NodeSocketShader")
    gi, go = g.nodes.new("NodeGroupInput"), g.nodes.new("NodeGroupOutput")
    p = g.nodes.new("ShaderNodeBsdfPrincipled")
    p.inputs["Roughness"].default_value = rough
    p.inputs["Metallic"].default_value = metal
    g.links.new(gi.outputs[0], p.inputs["Base Color"])
    g.links.new(p.outputs[0], go.inputs[0])
    mat, nt = _empty_material(name)
    gn = nt.nodes.new("ShaderNodeGroup")
    gn.node_tree = g
    gn.inputs[0].default_value = (*base, 1.0)
    out = next(n for n in nt.nodes if n.bl_idname == "ShaderNodeOutputMaterial")
    nt.links.new(gn.outputs[0], out.inputs["Surface"])
    return mat


def _diffuse_material(name, colour):
    mat, nt = _empty_material(name)
    d = nt.nodes.new("ShaderNodeBsdfDiffuse")
    d.inputs["Color"].default_value = (*colour, 1.0)
    out = next(n for n in nt.nodes if n.bl_idname == "ShaderNodeOutputMaterial")
    nt.links.new(d.outputs[0], out.inputs["Surface"])
    return mat


def _mesh_object(name, kind, size):
    mesh = bpy.data.meshes.new(name)
    import bmesh

    bm = bmesh.new()
    if kind == "plane":
        bmesh.ops.create_grid(bm, x_segments=1, y_segments=1, size=size / 2)
    elif kind == "cube":
        bmesh.ops.create_cube(bm, size=size)
    else:
        bmesh.ops.create_uvsphere(bm, u_segments=64, v_segments=32, radius=size)
        for f in bm.faces:
            f.smooth = True
    bm.to_mesh(mesh)
    bm.free()
    return _link(bpy.data.objects.new(name, mesh))


def build_export_scene(*, frames=(1, 3), size=64):
    """The analytic scene; returns the scene. Render settings are the scene's own (Cycles, CPU)."""
    reset()
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.frame_start, scene.frame_end = frames
    scene.render.fps = 24
    # user state that the export must put back
    scene.cycles.samples = 37
    scene.render.filepath = "//user_output/frame_"
    scene.render.film_transparent = False
    scene.cycles.filter_width = 1.5
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_depth = "8"
    vl = scene.view_layers[0]
    user_aov = vl.aovs.add()
    user_aov.name = "user_aov"
    user_aov.type = "VALUE"

    world = bpy.data.worlds.new("World")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        world.use_nodes = True
    bg = next(n for n in world.node_tree.nodes if n.bl_idname == "ShaderNodeBackground")
    bg.inputs["Color"].default_value = (0.05, 0.05, 0.05, 1.0)
    scene.world = world

    cam_data = bpy.data.cameras.new("Camera")
    cam_data.lens, cam_data.sensor_width, cam_data.sensor_fit = 50.0, 36.0, "AUTO"
    cam_data.clip_start, cam_data.clip_end = 0.1, 100.0
    cam = _link(bpy.data.objects.new("Camera", cam_data))
    cam.rotation_euler = CAM_ROT
    scene.camera = cam
    x_axis = _rot() @ Vector((1.0, 0.0, 0.0))
    for i, f in enumerate(range(frames[0], frames[1] + 1)):
        cam.location = CAM_LOC + x_axis * (STEP * i)
        cam.keyframe_insert("location", frame=f)

    plane = _mesh_object("plane", "plane", PLANE_SIZE)
    plane.location = world_point((0.0, 0.0, -PLANE_DEPTH))
    plane.rotation_euler = CAM_ROT
    plane.data.materials.append(_principled_material("plane_mat", (0.8, 0.2, 0.1), 0.3, 0.25,
                                                     link_base=True, link_metal=True))
    s = _mesh_object("sphere_group", "sphere", OBJECTS["sphere_group"][1])
    s.location = world_point(OBJECTS["sphere_group"][0])
    s.data.materials.append(_group_material("group_mat", (0.1, 0.5, 0.9), 0.7, 1.0))
    c = _mesh_object("cube_nomat", "cube", 2 * OBJECTS["cube_nomat"][1])
    c.location = world_point(OBJECTS["cube_nomat"][0])
    c.rotation_euler = CAM_ROT
    d = _mesh_object("sphere_diffuse", "sphere", OBJECTS["sphere_diffuse"][1])
    d.location = world_point(OBJECTS["sphere_diffuse"][0])
    d.data.materials.append(_diffuse_material("diffuse_mat", (0.2, 0.6, 0.3)))
    # a compositor the export must neither run nor change
    from diffusion_renderer_addon import compat

    tree = compat.compositor_tree(scene)
    if not any(n.bl_idname == "CompositorNodeRLayers" for n in tree.nodes):
        rl = tree.nodes.new("CompositorNodeRLayers")
        node, sock = compat.composite_output(tree)
        tree.links.new(rl.outputs[0], sock)
    tree.nodes.new("CompositorNodeInvert").name = "user_invert"
    scene.frame_set(frames[0])
    return scene


def camera_centre_offset(frame_index: int) -> tuple[float, float, float]:
    """How far the camera has moved (camera-local) at the i-th frame."""
    return (STEP * frame_index, 0.0, 0.0)


# ------------------------------------------------------------------------------------------ one material
def build_plane_scene(material=None, *, size=16):
    """A camera looking straight down at a large plane (it fills the frame) 5 units away, with
    ``material`` (or none), in the current file (call :func:`reset` first; materials made before the
    reset would be gone). Called again, it only swaps the plane's material. Returns the scene."""
    scene = bpy.context.scene
    plane = scene.objects.get("plane")
    if plane is None:
        scene.render.engine = "CYCLES"
        scene.cycles.device = "CPU"
        scene.render.resolution_x = scene.render.resolution_y = size
        scene.render.resolution_percentage = 100
        scene.frame_start = scene.frame_end = 1
        cam = _link(bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera")))
        cam.location = (0.0, 0.0, 5.0)
        scene.camera = cam
        plane = _mesh_object("plane", "plane", 20.0)
    plane.data.materials.clear()
    if material is not None:
        plane.data.materials.append(material)
    return scene


def new_material(name):
    """A node material with only its Material Output."""
    mat, nt = _empty_material(name)
    return mat, nt, next(n for n in nt.nodes if n.bl_idname == "ShaderNodeOutputMaterial")


def principled(nt, base, rough, metal):
    p = nt.nodes.new("ShaderNodeBsdfPrincipled")
    p.inputs["Base Color"].default_value = (*base, 1.0)
    p.inputs["Roughness"].default_value = rough
    p.inputs["Metallic"].default_value = metal
    return p

