"""compat.py on the running Blender: compositor tree and output, File Output items, EXR formats, EEVEE
id, node use, VSE strips and the pass-name map (Render Layers sockets and multilayer EXR layers)."""
from __future__ import annotations

import os

import pytest

import bpy_scene as S
from bpy_scene import bpy

from diffusion_renderer_addon import compat  # noqa: E402
from exr_files import read_exr, read_exr_header  # noqa: E402


@pytest.fixture(autouse=True)
def fresh_file():
    S.reset()


def test_compositor_tree_and_output():
    scene = bpy.context.scene
    assert compat.compositor_tree(scene, create=False) is None
    tree = compat.compositor_tree(scene)
    assert tree is not None and compat.compositor_tree(scene, create=False) == tree
    node, sock = compat.composite_output(tree)
    again = compat.composite_output(tree)
    assert again[0] == node and again[1] == sock  # found, not created twice
    if compat.has_compositing_node_group():
        assert node.bl_idname == "NodeGroupOutput" and scene.compositing_node_group == tree
    else:
        assert node.bl_idname == "CompositorNodeComposite" and scene.use_nodes


def test_file_output_writes_named_items(tmp_path):
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 8, 4, 100
    tree = compat.compositor_tree(scene)
    for n in list(tree.nodes):
        tree.nodes.remove(n)
    img = bpy.data.images.new("src", 8, 4, float_buffer=True)
    img.pixels[:] = [0.25, 0.5, 0.75, 1.0] * 32
    rgb = tree.nodes.new("CompositorNodeImage")  # (a constant RGB node is a single value: not written)
    rgb.image = img
    fo = compat.new_file_output(tree, str(tmp_path / "fo"), file_name="out_")
    compat.set_exr_format(fo.format, multilayer=True, color_depth="32", codec="ZIP")
    sock = compat.file_output_add(fo, "colour", "RGBA")
    assert sock.name == "colour" and not sock.is_linked
    tree.links.new(rgb.outputs[0], sock)
    _, out = compat.composite_output(tree)
    tree.links.new(rgb.outputs[0], out)
    scene.frame_start = scene.frame_end = 3
    scene.render.filepath = str(tmp_path / "render_")
    bpy.ops.render.render(animation=True)  # File Output nodes number their files when animating
    files = sorted(p for p in (tmp_path / "fo").rglob("*") if p.is_file())
    assert len(files) == 1 and files[0].name.endswith("0003.exr")
    ch = read_exr(files[0])
    key = next(k for k in ch if k.endswith("colour.G"))
    assert ch[key].shape == (4, 8) and ch[key][0, 0] == pytest.approx(0.5)


def test_exr_formats_and_restore():
    s = bpy.context.scene.render.image_settings
    s.file_format, s.color_depth = "PNG", "16"
    snap = compat.image_format(s)
    compat.set_exr_format(s, multilayer=True, color_depth="32", codec="NONE")
    assert compat.is_multilayer_exr(s) and s.color_depth == "32" and s.exr_codec == "NONE"
    compat.set_exr_format(s, multilayer=False, color_depth="16", codec="ZIP", color_mode="RGB")
    assert s.file_format == "OPEN_EXR" and s.color_mode == "RGB"
    compat.restore_image_format(s, snap)
    assert s.file_format == "PNG" and s.color_depth == "16"
    compat.set_image_format(s, "JPEG")
    assert s.file_format == "JPEG"
    if "color_management" in s.bl_rna.properties:  # an output override would change an EXR's linear space
        s.color_management = "OVERRIDE"
        snap = compat.image_format(s)
        compat.follow_scene_colour_management(s)
        assert s.color_management == "FOLLOW_SCENE"
        compat.restore_image_format(s, snap)
        assert s.color_management == "OVERRIDE"


def test_engine_ids():
    scene = bpy.context.scene
    scene.render.engine = compat.eevee_engine_id()  # accepted by this version
    assert scene.render.engine == compat.eevee_engine_id()
    assert compat.engine_id("EEVEE") == compat.eevee_engine_id() and compat.engine_id("cycles") == "CYCLES"
    assert compat.is_eevee(compat.eevee_engine_id()) and not compat.is_eevee("CYCLES")


def test_node_use():
    mat = bpy.data.materials.new("m")
    tree = compat.ensure_nodes(mat)
    assert tree is not None and compat.uses_nodes(mat)
    world = bpy.data.worlds.new("w")
    assert compat.ensure_nodes(world) is not None and compat.uses_nodes(world)
    assert not compat.uses_nodes(None)


def test_vse_strips(tmp_path):
    img = bpy.data.images.new("i", 8, 4)
    img.filepath_raw, img.file_format = str(tmp_path / "a_0001.png"), "PNG"
    img.save()
    se = bpy.context.scene.sequence_editor_create()
    strip = compat.vse_new_image(se, "s", str(tmp_path / "a_0001.png"), 1, 5)
    assert list(compat.vse_strips(se)) == [strip] and strip in list(compat.vse_strips_all(se))
    assert compat.strip_timing(strip) == (5.0, 5, 6)
    compat.strip_trim_start(strip, 0)


def test_pass_name_map_covers_this_version():
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    vl = scene.view_layers[0]
    for p in vl.bl_rna.properties:
        if p.identifier.startswith("use_pass") and "cryptomatte" not in p.identifier:
            setattr(vl, p.identifier, True)
    vl.cycles.denoising_store_passes = True
    aov = vl.aovs.add()
    aov.name = "my_aov"
    tree = compat.compositor_tree(scene)
    rl = tree.nodes.new("CompositorNodeRLayers")
    names = [s.name for s in rl.outputs if s.enabled]
    unknown = [n for n in names if compat.canonical_pass(n) is None and n != "my_aov"]
    assert unknown == []
    assert compat.render_layer_socket(rl, "diffuse_color") is not None
    assert compat.render_layer_socket(rl, "my_aov") is not None
    short = compat.BLENDER_VERSION < (5, 0, 0)
    assert compat.render_layer_socket(rl, "diffuse_color").name == ("DiffCol" if short else "Diffuse Color")


def test_multilayer_exr_layer_names_map(tmp_path):
    """The render output's multilayer EXR (one part in 4.x, one per pass in 5.x) names its layers so
    that canonical_pass maps them."""
    scene = S.build_plane_scene(None, size=8)
    vl = scene.view_layers[0]
    vl.use_pass_z = vl.use_pass_normal = vl.use_pass_diffuse_color = True
    compat.set_exr_format(scene.render.image_settings, multilayer=True, color_depth="32", codec="NONE")
    scene.cycles.samples = 1
    scene.render.filepath = str(tmp_path / "ml.exr")
    bpy.ops.render.render(write_still=True)
    header = read_exr_header(tmp_path / "ml.exr")
    assert header["multipart"] == (compat.BLENDER_VERSION >= (5, 0, 0))
    ch = read_exr(tmp_path / "ml.exr")
    layers = {k.rsplit(".", 1)[0].split(".", 1)[1] for k in ch}
    canon = {compat.canonical_pass(n) for n in layers}
    assert {"combined", "depth", "normal", "diffuse_color"} <= canon
    assert os.path.getsize(tmp_path / "ml.exr") > 0
