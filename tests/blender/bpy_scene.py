"""Shared helpers for the Blender export tests (imported by tests/blender/test_export_*.py).

* :data:`bpy` — the ``bpy`` module, or the test module is skipped with the reason when it is absent.
* :func:`reset` — an empty factory scene (one ``import bpy`` per process; reset instead of re-import).
* :func:`build_export_scene` — the analytic test scene (camera, plane, spheres, cube; known materials).
* :func:`fingerprint` — a deep, comparable dump of everything the export must leave unchanged.
* :func:`engine_python` — an interpreter that can import ``engine.gbuffer`` (to validate sets).
"""
from __future__ import annotations

import math
import os
import subprocess
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


# ------------------------------------------------------------------------------------------ fingerprint
_SKIP_PROPS = {"rna_type", "bl_rna", "is_evaluated", "original", "session_uid", "users", "is_dirty", "tag",
               "is_runtime_data", "use_extra_user", "is_missing", "is_embedded_data", "preview", "override_library",
               "library_weak_reference", "asset_data", "dimensions", "location_absolute", "is_library_indirect",
               "id_type", "name_full", "is_editmode", "internal_links", "bl_description", "bl_icon",
               "is_linked_packed", "depsgraph"}


def _value(v):
    if isinstance(v, float):
        return round(v, 6)
    if isinstance(v, (str, int, bool)) or v is None:
        return v
    if isinstance(v, bpy.types.ID):
        return ("ID", v.name)
    try:
        return tuple(_value(x) for x in v)
    except TypeError:
        return repr(v)


def rna_dump(struct, depth: int = 2, _seen=None):
    """Every plain property of an RNA struct (nested owned structs to ``depth``)."""
    if struct is None:
        return None
    out = {}
    for prop in struct.bl_rna.properties:
        key = prop.identifier
        if key in _SKIP_PROPS:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                val = getattr(struct, key)
        except Exception as exc:  # noqa: BLE001
            out[key] = f"<error {type(exc).__name__}>"
            continue
        if prop.type == "POINTER":
            if val is None or isinstance(val, bpy.types.ID):
                out[key] = _value(val)
            elif depth > 0:
                out[key] = rna_dump(val, depth - 1)
        elif prop.type == "COLLECTION":
            if depth > 0 and len(val) <= 64:
                out[key] = [rna_dump(item, depth - 1) if not isinstance(item, bpy.types.ID) else _value(item)
                            for item in val]
        else:
            out[key] = _value(val)
    return out


def tree_fingerprint(tree):
    if tree is None:
        return None
    nodes = {}
    for n in tree.nodes:
        d = rna_dump(n, depth=0)
        d["inputs"] = [(s.identifier, s.name, _value(getattr(s, "default_value", None)), s.hide, s.enabled)
                       for s in n.inputs]
        # Render Layers nodes keep the sockets of removed passes/AOVs as unavailable (Blender does the same
        # when a user removes an AOV): compare what is available
        d["outputs"] = [(s.identifier, s.name, _value(getattr(s, "default_value", None))) for s in n.outputs
                        if s.enabled or n.bl_idname != "CompositorNodeRLayers"]
        d["parent"] = n.parent.name if n.parent else None
        nodes[n.name] = d
    links = sorted((lk.from_node.name, lk.from_socket.identifier, lk.to_node.name, lk.to_socket.identifier,
                    lk.is_muted) for lk in tree.links)
    iface = None
    if hasattr(tree, "interface"):
        iface = [(getattr(i, "item_type", ""), i.name, getattr(i, "in_out", ""), getattr(i, "socket_type", ""),
                  getattr(i, "identifier", "")) for i in tree.interface.items_tree]
        iface.append(("active_index", tree.interface.active_index))
    return {"nodes": nodes, "links": links, "interface": iface,
            "active": tree.nodes.active.name if tree.nodes.active else None}


def fingerprint(scene=None):
    """Materials, node groups, worlds, the scene's render/cycles/eevee/view-layer/compositor settings, the
    frame and the datablock lists — everything the export must leave as it was."""
    from diffusion_renderer_addon import compat

    scene = scene or bpy.context.scene
    fp = {"materials": {}, "node_groups": {}, "worlds": {}}
    for m in bpy.data.materials:
        d = rna_dump(m, depth=0)
        d["tree"] = tree_fingerprint(m.node_tree)
        fp["materials"][m.name] = d
    for g in bpy.data.node_groups:
        fp["node_groups"][g.name] = tree_fingerprint(g)
    for w in bpy.data.worlds:
        fp["worlds"][w.name] = tree_fingerprint(w.node_tree)
    fp["render"] = rna_dump(scene.render, depth=2)
    fp["cycles"] = rna_dump(scene.cycles, depth=1)
    fp["eevee"] = rna_dump(scene.eevee, depth=1)
    fp["view_layers"] = [rna_dump(v, depth=2) for v in scene.view_layers]
    fp["scene"] = {"frame": scene.frame_current, "subframe": scene.frame_subframe, "camera": _value(scene.camera),
                   "world": _value(scene.world)}
    if compat.has_compositing_node_group():
        fp["compositor"] = (_value(scene.compositing_node_group), tree_fingerprint(scene.compositing_node_group))
    else:
        fp["compositor"] = (scene.use_nodes, tree_fingerprint(scene.node_tree))
    fp["data"] = {k: sorted(x.name for x in getattr(bpy.data, k))
                  for k in ("materials", "node_groups", "images", "objects", "scenes", "cameras", "meshes", "worlds",
                            "movieclips", "textures")}
    return fp


def diff(a, b, path="") -> list[str]:
    """Human-readable differences between two fingerprints."""
    out = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                out.append(f"{path}/{k}: {'missing before' if k not in a else 'missing after'}")
            else:
                out += diff(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            out += diff(x, y, f"{path}[{i}]")
    elif a != b:
        if a == "" and path.endswith("linear_colorspace_settings/name"):
            return out  # factory files hold an invalid (never initialised) value Blender fills in on use
        out.append(f"{path}: {a!r} → {b!r}")
    return out


# ------------------------------------------------------------------------------------------ engine
_ENGINE_PY: list = []


def engine_python() -> str | None:
    """An interpreter that imports engine.gbuffer (with OpenEXR): $DR_ENGINE_PYTHON or the checkout's
    .venv (made by bin/test). None when there is none."""
    cands = [os.environ.get("DR_ENGINE_PYTHON"), str(REPO / ".venv" / "bin" / "python")]
    for c in cands:
        if not c or not os.path.isfile(c):
            continue
        try:
            r = subprocess.run([c, "-c", "import engine.gbuffer, OpenEXR, numpy"], cwd=str(REPO), timeout=120,
                               env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0:
            _ENGINE_PY.append(c)
            return c
    return None


def run_engine(code: str, *args) -> str:
    """Run ``code`` with the engine's interpreter (skip when there is none); returns stdout."""
    py = _ENGINE_PY[0] if _ENGINE_PY else engine_python()
    if py is None:
        pytest.skip("no engine Python environment (set DR_ENGINE_PYTHON or create .venv with bin/test)")
    r = subprocess.run([py, "-c", code, *map(str, args)], cwd=str(REPO), capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)
    if r.returncode != 0:
        raise AssertionError(f"engine check failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout


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


def export_centre(scene, tmp_path, passes=("basecolor", "roughness", "metallic", "alpha")):
    """Export one frame and return {pass: value at the image centre} (numpy arrays)."""
    import numpy as np

    from diffusion_renderer_addon.export import export_gbuffers
    from diffusion_renderer_addon.export.exr_io import read_exr

    out = export_gbuffers(scene, tmp_path, frame_range=[1], passes=list(passes), overwrite=True)
    res = {}
    for p in passes:
        w, h, ch = read_exr(out / p / f"{p}.0001.exr")
        planes = [np.frombuffer(ch[c], np.float32).reshape(h, w) for c in sorted(ch, key="RGBXYZV".index)]
        res[p] = np.stack(planes, -1)[h // 2, w // 2]
    return res


def read_png(path):
    """A PNG file → (float array (H, W, C) in [0, 1] of the stored values, bit depth, colour type);
    decoded here (Blender's loader linearises 16-bit PNGs into float buffers, 8-bit ones not)."""
    import struct
    import zlib

    import numpy as np

    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        n, typ = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if typ == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif typ == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, ctype = ihdr[:4]
    chans = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
    bpp = chans * depth // 8
    raw = zlib.decompress(idat)
    stride = w * bpp
    out = np.zeros((h, stride), np.int64)
    prev = np.zeros(stride, np.int64)
    for y in range(h):
        ft = raw[y * (stride + 1)]
        line = np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int64)
        cur = np.zeros(stride, np.int64)
        for i in range(stride):
            a = cur[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if ft == 0:
                p = 0
            elif ft == 1:
                p = a
            elif ft == 2:
                p = b
            elif ft == 3:
                p = (a + b) // 2
            else:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                p = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            cur[i] = (line[i] + p) & 0xFF
        out[y], prev = cur, cur
    if depth == 16:
        vals = (out[:, 0::2] << 8) | out[:, 1::2]
        return (vals.reshape(h, w, chans) / 65535.0), depth, ctype
    return out.reshape(h, w, chans) / 255.0, depth, ctype
