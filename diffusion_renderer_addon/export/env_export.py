"""The scene's world lighting → an environment map description for the engine's forward renderer.

``describe_world_lighting(scene)`` inspects the world's node tree:

* **Environment Texture → Background → World Output** (optionally with a Mapping node before the
  texture, fed by nothing or by Texture Coordinate *Generated*): the image file is used directly when
  the engine can read it (``.hdr`` / ``.exr`` on disk, equirectangular projection). Returned: the path,
  the Background *Strength* and the rotation in the engine's ``--env-rotation`` convention.
* **Anything else** (procedural sky, gradients, textures the engine cannot read, packed images, mirror
  balls, colour tweaks between texture and Background, a Mapping node with X/Y rotation or non-uniform
  scale …): ``needs_render`` is True; :func:`render_world_equirect` renders the world itself to an
  equirectangular EXR with a panoramic camera (BLENDER_NOTES §3.5) in a temporary scene that holds no
  objects, so strength, colour nodes and rotation are all baked in (rotation 180 = unrotated, strength 1).

**Rotation convention** (docs/ENVMAP.md, "Relation to Blender world coordinates"): the engine samples the
HDRI at ``R_z(env_rotation − 180°)·b`` for a Blender world direction ``b``; 180 is an unrotated Blender
world. A Mapping node looks the texture up at ``M·b``: for types *Point*/*Vector*/*Normal* ``M`` is the
node's rotation, for *Texture* its inverse. A Z rotation θ therefore gives
``env_rotation = 180 + θ`` (Point/Vector/Normal) or ``180 − θ`` (Texture), in degrees, wrapped to
[0, 360). (The engine's column roll truncates non-integer pixel shifts.)

``export_environment(scene, out_dir)`` does either and writes ``env.json`` (the description, including
``cli_args`` for ``diffusion-renderer forward``).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import bpy

from .. import compat

__all__ = ["EnvExportError", "describe_world_lighting", "render_world_equirect", "export_environment",
           "engine_rotation_from_mapping", "ENGINE_READABLE"]

ENGINE_READABLE = (".hdr", ".exr")
# A panoramic camera with this rotation renders exactly Blender's equirectangular world lookup
# (u = 0.5 − atan2(b_y, b_x)/2π, v_top = acos(b_z)/π), checked in tests/blender/test_export_env.py.
PANO_ROTATION_DEG = (90.0, 0.0, -90.0)


class EnvExportError(RuntimeError):
    """The world lighting cannot be exported; the message says why."""


def _wrap_degrees(deg: float) -> float:
    d = math.fmod(deg, 360.0)
    if d < 0:
        d += 360.0
    return 0.0 if abs(d - 360.0) < 1e-9 else d


def engine_rotation_from_mapping(rotation_z_deg: float, vector_type: str = "POINT") -> float:
    """A Mapping node's Z rotation (degrees) → the engine's ``--env-rotation`` (180 = unrotated)."""
    sign = -1.0 if vector_type == "TEXTURE" else 1.0
    return _wrap_degrees(180.0 + sign * rotation_z_deg)


def _linked_from(sock):
    """The output socket feeding ``sock`` through reroutes (None when unlinked)."""
    seen = 0
    while sock is not None and sock.is_linked and seen < 64:
        link = next((lk for lk in sock.links if not getattr(lk, "is_muted", False)), None)
        if link is None:
            return None
        node = link.from_node
        if node.bl_idname == "NodeReroute":
            sock = node.inputs[0]
            seen += 1
            continue
        return link.from_socket
    return None


def _image_path(image) -> str | None:
    if image is None or image.source not in ("FILE",) or image.packed_file is not None:
        return None
    path = bpy.path.abspath(image.filepath, library=image.library)
    return os.path.normpath(path) if path else None


def describe_world_lighting(scene_or_world) -> dict:
    """A description of the world lighting: ``{"kind": "environment-texture" | "procedural" |
    "none", "path", "env_rotation", "env_strength", "env_flip", "needs_render", "world", "notes"}``.
    ``needs_render`` means the engine cannot use the world as is: render it with
    :func:`render_world_equirect` (``export_environment`` does)."""
    world = scene_or_world if isinstance(scene_or_world, bpy.types.World) else scene_or_world.world
    desc = {"kind": "none", "world": getattr(world, "name", None), "path": None, "env_rotation": 180.0,
            "env_strength": 1.0, "env_flip": False, "needs_render": False, "notes": []}
    if world is None:
        desc["notes"].append("the scene has no world: no environment lighting")
        return desc
    if not compat.uses_nodes(world):
        desc.update(kind="procedural", needs_render=True)
        desc["notes"].append("the world does not use nodes (a plain colour): render it")
        return desc
    tree = world.node_tree
    out = tree.get_output_node("CYCLES") if hasattr(tree, "get_output_node") else None
    out = out or next((n for n in tree.nodes if n.bl_idname == "ShaderNodeOutputWorld"), None)
    surf = _linked_from(out.inputs["Surface"]) if out is not None else None
    if surf is None:
        desc["notes"].append("the World Output has no surface: no environment lighting")
        return desc
    desc.update(kind="procedural", needs_render=True)
    bg = surf.node
    if bg.bl_idname != "ShaderNodeBackground" or bg.mute:
        desc["notes"].append(f"the world surface is a {bg.bl_label} node, not Background: render it")
        return desc
    if bg.inputs["Strength"].is_linked:
        desc["notes"].append("the Background strength is driven by nodes: render it")
        return desc
    strength = float(bg.inputs["Strength"].default_value)
    col = _linked_from(bg.inputs["Color"])
    if col is None or col.node.bl_idname != "ShaderNodeTexEnvironment" or col.node.mute:
        desc["notes"].append("the Background colour is not an Environment Texture: render it")
        return desc
    env = col.node
    path = _image_path(env.image)
    if env.image is None:
        desc["notes"].append("the Environment Texture has no image")
        return desc
    if env.projection != "EQUIRECTANGULAR":
        desc["notes"].append(f"the Environment Texture uses {env.projection} projection: render it")
        return desc
    if path is None or not os.path.isfile(path):
        desc["notes"].append(f"the image {env.image.name!r} is packed, generated or missing on disk: render it")
        return desc
    if os.path.splitext(path)[1].lower() not in ENGINE_READABLE:
        desc["notes"].append(f"{os.path.basename(path)}: the engine reads .hdr/.exr environment maps: render it")
        return desc
    rotation = 180.0
    vec = _linked_from(env.inputs["Vector"])
    if vec is not None:
        mapping = vec.node
        if mapping.bl_idname != "ShaderNodeMapping" or mapping.mute:
            desc["notes"].append(f"the texture vector comes from a {mapping.bl_label} node: render it")
            return desc
        src = _linked_from(mapping.inputs["Vector"])
        if src is not None and not (src.node.bl_idname == "ShaderNodeTexCoord" and src.name == "Generated"):
            desc["notes"].append("the Mapping node is fed by other coordinates than Generated: render it")
            return desc
        vtype = mapping.vector_type
        for name in ("Rotation", "Scale", "Location"):
            if name in mapping.inputs and mapping.inputs[name].is_linked:
                desc["notes"].append(f"the Mapping {name} is driven by nodes: render it")
                return desc
        rx, ry, rz = (float(v) for v in mapping.inputs["Rotation"].default_value)
        sx, sy, sz = (float(v) for v in mapping.inputs["Scale"].default_value) if "Scale" in mapping.inputs \
            else (1.0, 1.0, 1.0)
        loc = [float(v) for v in mapping.inputs["Location"].default_value] if "Location" in mapping.inputs \
            else [0.0, 0.0, 0.0]
        if abs(rx) > 1e-6 or abs(ry) > 1e-6:
            desc["notes"].append("the Mapping node rotates about X/Y (only Z rotations map to the engine): render it")
            return desc
        if not (sx > 0 and abs(sx - sy) <= 1e-6 * abs(sx) and abs(sx - sz) <= 1e-6 * abs(sx)):
            desc["notes"].append("the Mapping node scales non-uniformly or mirrors: render it")
            return desc
        if vtype == "POINT" and any(abs(v) > 1e-6 for v in loc):
            desc["notes"].append("the Mapping node (Point) translates the lookup direction: render it")
            return desc
        rotation = engine_rotation_from_mapping(math.degrees(rz), vtype)
    desc.update(kind="environment-texture", path=path, env_rotation=rotation, env_strength=strength,
                needs_render=False, image=env.image.name)
    return desc


def _camera_data_pano(cam_data) -> None:
    cam_data.type = "PANO"
    if hasattr(cam_data, "panorama_type"):
        cam_data.panorama_type = "EQUIRECTANGULAR"
        cam_data.latitude_min, cam_data.latitude_max = -math.pi / 2, math.pi / 2
        cam_data.longitude_min, cam_data.longitude_max = -math.pi, math.pi
    else:  # pragma: no cover - Blender < 4.0 kept these on camera.cycles
        cam_data.cycles.panorama_type = "EQUIRECTANGULAR"


def render_world_equirect(scene_or_world, path, *, width: int = 512, height: int | None = None, samples: int = 32,
                          device: str | None = None) -> Path:
    """Render a world to an equirectangular linear EXR (R, G, B float, ZIP) at ``path``.

    Uses a temporary scene that links only the world and a panoramic camera (so no object is rendered
    and nothing of the user's scene changes); it and its camera are removed afterwards. The file is
    written under a temporary name and renamed."""
    world = scene_or_world if isinstance(scene_or_world, bpy.types.World) else scene_or_world.world
    if world is None:
        raise EnvExportError("the scene has no world to render")
    height = height or max(1, width // 2)
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    had_render_result = any(img.type == "RENDER_RESULT" for img in bpy.data.images)
    tmp_scene = bpy.data.scenes.new("DR_world_render")
    cam_data = cam_obj = None
    tmp_dir = Path(tempfile.mkdtemp(prefix="dr_env_", dir=str(path.parent)))
    try:
        tmp_scene.world = world
        r = tmp_scene.render
        r.engine = "CYCLES"
        tmp_scene.cycles.samples = int(samples)
        tmp_scene.cycles.use_denoising = False
        if device:
            tmp_scene.cycles.device = device
        src_scene = scene_or_world if isinstance(scene_or_world, bpy.types.Scene) else None
        if src_scene is not None and src_scene.render.engine == "CYCLES":
            tmp_scene.cycles.device = src_scene.cycles.device
        r.resolution_x, r.resolution_y, r.resolution_percentage = int(width), int(height), 100
        r.film_transparent = False
        r.use_compositing = False
        r.use_sequencer = False
        compat.set_exr_format(r.image_settings, multilayer=False, color_depth="32", codec="ZIP", color_mode="RGB")
        cam_data = bpy.data.cameras.new("DR_world_pano")
        _camera_data_pano(cam_data)
        cam_obj = bpy.data.objects.new("DR_world_pano", cam_data)
        cam_obj.rotation_euler = tuple(math.radians(a) for a in PANO_ROTATION_DEG)
        tmp_scene.collection.objects.link(cam_obj)
        tmp_scene.camera = cam_obj
        tmp_file = tmp_dir / "world.exr"
        r.filepath = str(tmp_file)
        # render.render(scene=…) of a non-context scene skips parts of the frame update: override instead
        with bpy.context.temp_override(scene=tmp_scene):
            result = bpy.ops.render.render(write_still=True)
        if "FINISHED" not in result or not tmp_file.is_file():
            raise EnvExportError(f"rendering the world {world.name!r} failed (see the console)")
        os.replace(tmp_file, path)
    finally:
        bpy.data.scenes.remove(tmp_scene)
        if cam_obj is not None:
            bpy.data.objects.remove(cam_obj)
        if cam_data is not None:
            bpy.data.cameras.remove(cam_data)
        if not had_render_result:
            for img in [i for i in bpy.data.images if i.type == "RENDER_RESULT"]:
                bpy.data.images.remove(img)
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path


def export_environment(scene, out_dir, *, render: str = "auto", width: int = 1024, samples: int = 32) -> dict:
    """Describe (and where needed render) the scene's world lighting into ``out_dir``; writes
    ``out_dir/env.json`` and returns the description. ``render``: 'auto' (only when the engine cannot use
    the world's image directly), 'always', or 'never' (raise instead)."""
    if render not in ("auto", "always", "never"):
        raise EnvExportError(f"render must be 'auto', 'always' or 'never', got {render!r}")
    out_dir = Path(out_dir).resolve()
    desc = describe_world_lighting(scene)
    if desc["kind"] == "none":
        raise EnvExportError(f"scene {scene.name!r}: {'; '.join(desc['notes']) or 'no world lighting'}")
    if render == "always" or (desc["needs_render"] and render == "auto"):
        path = render_world_equirect(scene, out_dir / "world_equirect.exr", width=width, samples=samples)
        desc.update(kind="rendered", source_kind=desc["kind"], path=str(path), env_rotation=180.0, env_strength=1.0,
                    env_flip=False, needs_render=False, resolution=[width, max(1, width // 2)], samples=samples)
    elif desc["needs_render"]:
        raise EnvExportError(f"scene {scene.name!r}: the world cannot be used directly ({'; '.join(desc['notes'])})")
    desc["cli_args"] = ["--hdri", desc["path"], "--env-rotation", f"{desc['env_rotation']:g}",
                        "--env-strength", f"{desc['env_strength']:g}"]
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".env.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(desc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out_dir / "env.json")
    return desc
