"""A small procedural scene for the demo (``bin/demo``) and tests: bpy + stdlib only.

``build_demo_scene(frames=12, resolution=(512, 512), hdri=None)`` empties nothing: it builds into a new
scene (made the window's scene) a ground plane, a metallic sphere, a rough red cube and a glossy blue
sphere, Principled materials with constant inputs (so the G-buffer export reads exact values), a
camera orbiting 20° around the objects over the frame range (Track To the origin), and a World that
uses ``hdri`` through an Environment Texture (else a plain sky colour, which the env export renders).
Meshes are made with bmesh (no operators, so it works headless without a window context).
"""
from __future__ import annotations

import math
import warnings

import bmesh
import bpy

from . import compat

__all__ = ["build_demo_scene"]


def _mesh_object(scene, name, build, location, material):
    mesh = bpy.data.meshes.new(name)
    bm = bmesh.new()
    try:
        build(bm)
        bm.to_mesh(mesh)
    finally:
        bm.free()
    for poly in mesh.polygons:
        poly.use_smooth = name.startswith("Sphere")
    mesh.materials.append(material)
    obj = bpy.data.objects.new(name, mesh)
    obj.location = location
    scene.collection.objects.link(obj)
    return obj


def _material(name, base, roughness, metallic):
    mat = bpy.data.materials.new(name)
    nt = compat.ensure_nodes(mat)
    bsdf = next(n for n in nt.nodes if n.bl_idname == "ShaderNodeBsdfPrincipled")
    bsdf.inputs["Base Color"].default_value = (*base, 1.0)
    bsdf.inputs["Roughness"].default_value = roughness
    bsdf.inputs["Metallic"].default_value = metallic
    mat.diffuse_color = (*base, 1.0)
    return mat


def _world(name, hdri):
    world = bpy.data.worlds.new(name)
    nt = compat.ensure_nodes(world)
    bg = next((n for n in nt.nodes if n.bl_idname == "ShaderNodeBackground"), None) or nt.nodes.new("ShaderNodeBackground")
    out = next((n for n in nt.nodes if n.bl_idname == "ShaderNodeOutputWorld"), None) or nt.nodes.new("ShaderNodeOutputWorld")
    if not bg.outputs[0].is_linked:
        nt.links.new(bg.outputs[0], out.inputs["Surface"])
    if hdri:
        env = nt.nodes.new("ShaderNodeTexEnvironment")
        env.image = bpy.data.images.load(str(hdri), check_existing=True)
        env.location = (bg.location.x - 300, bg.location.y)
        nt.links.new(env.outputs["Color"], bg.inputs["Color"])
    else:
        bg.inputs["Color"].default_value = (0.45, 0.6, 0.9, 1.0)
    bg.inputs["Strength"].default_value = 1.0
    return world


def build_demo_scene(*, frames: int = 12, resolution=(512, 512), hdri=None, name: str = "DR Demo",
                     fps: int = 24):
    """Build the demo scene and return it (also set as the window's scene where there is a window)."""
    scene = bpy.data.scenes.new(name)
    win = getattr(bpy.context, "window", None)
    if win is not None:
        win.scene = scene
    scene.frame_start, scene.frame_end = 1, int(frames)
    scene.render.fps = int(fps)
    scene.render.resolution_x, scene.render.resolution_y = int(resolution[0]), int(resolution[1])
    scene.render.resolution_percentage = 100
    scene.render.engine = "CYCLES"
    scene.world = _world(f"{name} World", hdri)

    ground = _material("Demo Ground", (0.55, 0.5, 0.45), 0.8, 0.0)
    chrome = _material("Demo Chrome", (0.9, 0.9, 0.92), 0.15, 1.0)
    red = _material("Demo Red", (0.7, 0.08, 0.05), 0.55, 0.0)
    blue = _material("Demo Blue", (0.1, 0.25, 0.8), 0.3, 0.0)
    _mesh_object(scene, "Ground", lambda bm: bmesh.ops.create_grid(bm, x_segments=1, y_segments=1, size=4.0),
                 (0, 0, 0), ground)
    _mesh_object(scene, "Sphere Chrome", lambda bm: bmesh.ops.create_uvsphere(bm, u_segments=48, v_segments=24,
                                                                              radius=0.8), (-0.9, 0.2, 0.8), chrome)
    _mesh_object(scene, "Cube Red", lambda bm: bmesh.ops.create_cube(bm, size=1.0), (0.9, -0.3, 0.5), red)
    _mesh_object(scene, "Sphere Blue", lambda bm: bmesh.ops.create_uvsphere(bm, u_segments=32, v_segments=16,
                                                                            radius=0.4), (0.3, 1.2, 0.4), blue)

    cam_data = bpy.data.cameras.new("Demo Camera")
    cam_data.lens, cam_data.clip_start, cam_data.clip_end = 35.0, 0.1, 100.0
    cam = bpy.data.objects.new("Demo Camera", cam_data)
    scene.collection.objects.link(cam)
    target = bpy.data.objects.new("Demo Target", None)
    target.location = (0, 0, 0.5)
    scene.collection.objects.link(target)
    track = cam.constraints.new("TRACK_TO")
    track.target, track.track_axis, track.up_axis = target, "TRACK_NEGATIVE_Z", "UP_Y"
    radius, height = 6.0, 3.0
    for i, f in enumerate((scene.frame_start, scene.frame_end)):
        ang = math.radians(-100.0 + 20.0 * i)
        cam.location = (radius * math.cos(ang), radius * math.sin(ang), height)
        cam.keyframe_insert("location", frame=f)
    _linear_keys(cam)
    scene.camera = cam
    scene.frame_set(scene.frame_start)
    return scene


def _linear_keys(obj) -> None:
    """Linear interpolation on the object's keys (5.x layered actions and 4.x fcurves)."""
    ad = obj.animation_data
    action = ad.action if ad else None
    if action is None:
        return
    curves = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if hasattr(action, "layers") and action.layers:
            for layer in action.layers:
                for strip in layer.strips:
                    for bag in getattr(strip, "channelbags", []):
                        curves.extend(bag.fcurves)
        elif hasattr(action, "fcurves"):
            curves.extend(action.fcurves)
    for fc in curves:
        for kp in fc.keyframe_points:
            kp.interpolation = "LINEAR"
