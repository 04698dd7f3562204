"""AOV injection (base colour / roughness / metallic) for the shader set-ups a user may have, each
rendered on a plane filling a 16×16 frame (values read by the engine from the render folder Blender
wrote), and the injection undone exactly."""
from __future__ import annotations

import pytest

import bpy_scene as S
from bpy_scene import bpy

np = pytest.importorskip("numpy")

from diffusion_renderer_addon.export import aov_injection  # noqa: E402
from diffusion_renderer_addon.export.restore import ChangeLog  # noqa: E402

TOL = 2e-3


@pytest.fixture(autouse=True)
def fresh_file():
    S.reset()


def check(values, base, rough, metal):
    assert values["alpha"][0] == pytest.approx(1.0)
    assert values["basecolor"] == pytest.approx(np.array(base), abs=TOL)
    assert values["roughness"][0] == pytest.approx(rough, abs=TOL)
    assert values["metallic"][0] == pytest.approx(metal, abs=TOL)


def test_principled_constants(tmp_path):
    mat, nt, out = S.new_material("m")
    p = S.principled(nt, (0.3, 0.6, 0.9), 0.15, 0.4)
    nt.links.new(p.outputs[0], out.inputs["Surface"])
    check(S.export_centre(S.build_plane_scene(mat), tmp_path), (0.3, 0.6, 0.9), 0.15, 0.4)


def test_mix_shader_with_a_linked_factor(tmp_path):
    mat, nt, out = S.new_material("m")
    a = S.principled(nt, (1.0, 0.0, 0.0), 0.2, 0.0)
    b = S.principled(nt, (0.0, 0.0, 1.0), 0.6, 1.0)
    mix = nt.nodes.new("ShaderNodeMixShader")
    fac = nt.nodes.new("ShaderNodeValue")
    fac.outputs[0].default_value = 0.25
    nt.links.new(fac.outputs[0], mix.inputs[0])
    nt.links.new(a.outputs[0], mix.inputs[1])
    nt.links.new(b.outputs[0], mix.inputs[2])
    nt.links.new(mix.outputs[0], out.inputs["Surface"])
    check(S.export_centre(S.build_plane_scene(mat), tmp_path), (0.75, 0.0, 0.25), 0.3, 0.25)


def test_mix_with_transparent_and_add_emission_keep_the_principled_values(tmp_path):
    mat, nt, out = S.new_material("m")
    p = S.principled(nt, (0.2, 0.4, 0.6), 0.35, 0.5)
    tr = nt.nodes.new("ShaderNodeBsdfTransparent")
    mix = nt.nodes.new("ShaderNodeMixShader")
    mix.inputs[0].default_value = 0.1  # 10 % transparent
    em = nt.nodes.new("ShaderNodeEmission")
    add = nt.nodes.new("ShaderNodeAddShader")
    nt.links.new(p.outputs[0], mix.inputs[1])
    nt.links.new(tr.outputs[0], mix.inputs[2])
    nt.links.new(em.outputs[0], add.inputs[0])
    nt.links.new(mix.outputs[0], add.inputs[1])
    nt.links.new(add.outputs[0], out.inputs["Surface"])
    v = S.export_centre(S.build_plane_scene(mat), tmp_path)
    assert v["basecolor"] == pytest.approx(np.array([0.2, 0.4, 0.6]), abs=TOL)
    assert v["roughness"][0] == pytest.approx(0.35, abs=TOL) and v["metallic"][0] == pytest.approx(0.5, abs=TOL)


def test_nested_groups_and_a_group_shared_by_two_materials(tmp_path):
    inner = bpy.data.node_groups.new("inner", "ShaderNodeTree")
    inner.interface.new_socket(name="Tint", in_out="INPUT", socket_type="NodeSocketColor")
    inner.interface.new_socket(name="Rough", in_out="INPUT", socket_type="NodeSocketFloat")
    inner.interface.new_socket(name="Shader", in_out="OUTPUT", socket_type="NodeSocketShader")
    gi, go = inner.nodes.new("NodeGroupInput"), inner.nodes.new("NodeGroupOutput")
    p = S.principled(inner, (0, 0, 0), 0.5, 0.7)
    inner.links.new(gi.outputs[0], p.inputs["Base Color"])
    inner.links.new(gi.outputs[1], p.inputs["Roughness"])
    inner.links.new(p.outputs[0], go.inputs[0])
    outer = bpy.data.node_groups.new("outer", "ShaderNodeTree")
    outer.interface.new_socket(name="Tint", in_out="INPUT", socket_type="NodeSocketColor")
    outer.interface.new_socket(name="Shader", in_out="OUTPUT", socket_type="NodeSocketShader")
    ogi, ogo = outer.nodes.new("NodeGroupInput"), outer.nodes.new("NodeGroupOutput")
    gn = outer.nodes.new("ShaderNodeGroup")
    gn.node_tree = inner
    gn.inputs[1].default_value = 0.45
    outer.links.new(ogi.outputs[0], gn.inputs[0])
    outer.links.new(gn.outputs[0], ogo.inputs[0])
    mats = []
    for name, tint in (("m1", (0.9, 0.1, 0.1)), ("m2", (0.1, 0.9, 0.1))):
        mat, nt, out = S.new_material(name)
        g = nt.nodes.new("ShaderNodeGroup")
        g.node_tree = outer
        g.inputs[0].default_value = (*tint, 1.0)
        nt.links.new(g.outputs[0], out.inputs["Surface"])
        mats.append(mat)
    scene = S.build_plane_scene(mats[0])
    before = S.fingerprint(scene)
    check(S.export_centre(scene, tmp_path / "a"), (0.9, 0.1, 0.1), 0.45, 0.7)
    assert S.diff(before, S.fingerprint(scene)) == []
    scene.objects["plane"].data.materials[0] = mats[1]
    check(S.export_centre(scene, tmp_path / "b"), (0.1, 0.9, 0.1), 0.45, 0.7)


DIFFUSE_COLOUR = r"""
import sys
import numpy as np
from engine.io.blender_exr import read_blender_passes
p = read_blender_passes(sys.argv[1])
np.save(sys.argv[2], np.asarray(p["diffuse_color"][..., :3], np.float32))
"""


def test_textured_base_colour_matches_the_diffuse_colour_pass(tmp_path):
    """A checker texture into Base Color: the AOV follows the texture exactly (Cycles' Diffuse Color
    pass, rendered into the same EXR, is base·(1 − metallic), here metallic 0)."""
    mat, nt, out = S.new_material("m")
    p = S.principled(nt, (0, 0, 0), 0.5, 0.0)
    chk = nt.nodes.new("ShaderNodeTexChecker")
    chk.inputs["Color1"].default_value = (0.9, 0.2, 0.1, 1)
    chk.inputs["Color2"].default_value = (0.1, 0.3, 0.8, 1)
    chk.inputs["Scale"].default_value = 20.0
    nt.links.new(chk.outputs["Color"], p.inputs["Base Color"])
    nt.links.new(p.outputs[0], out.inputs["Surface"])
    scene = S.build_plane_scene(mat, size=32)
    scene.view_layers[0].use_pass_diffuse_color = True  # the user's own pass: rendered along
    from diffusion_renderer_addon.export import export_gbuffers

    outdir = export_gbuffers(scene, tmp_path / "render")
    planes, _info = S.render_passes(outdir)
    base = planes["basecolor"][0]
    S.run_engine(DIFFUSE_COLOUR, outdir / "frame_000001.exr", tmp_path / "diffcol.npy")
    diffcol = np.load(tmp_path / "diffcol.npy")
    assert diffcol.shape == base.shape == (32, 32, 3)
    c1, c2 = np.array([0.9, 0.2, 0.1]), np.array([0.1, 0.3, 0.8])
    is1 = np.abs(base - c1).max(-1) < TOL
    is2 = np.abs(base - c2).max(-1) < TOL
    assert (is1 | is2).all() and is1.sum() > 20 and is2.sum() > 20  # exactly the two checker colours
    # the Diffuse Color pass (base·(1 − metallic)·dielectric diffuse albedo) shows the same pattern
    d = diffcol / np.linalg.norm(diffcol, axis=-1, keepdims=True)
    near1 = (d @ (c1 / np.linalg.norm(c1))) > (d @ (c2 / np.linalg.norm(c2)))
    assert (near1 == is1).all()
    assert np.abs(diffcol[is1] / c1 - (diffcol[is1] / c1).mean()).max() < 0.01


def test_diffuse_emission_and_material_without_principled(tmp_path):
    mat, nt, out = S.new_material("d")
    d = nt.nodes.new("ShaderNodeBsdfDiffuse")
    d.inputs["Color"].default_value = (0.25, 0.5, 0.75, 1)
    nt.links.new(d.outputs[0], out.inputs["Surface"])
    check(S.export_centre(S.build_plane_scene(mat), tmp_path / "d"), (0.25, 0.5, 0.75), 0.5, 0.0)
    mat, nt, out = S.new_material("e")
    e = nt.nodes.new("ShaderNodeEmission")
    nt.links.new(e.outputs[0], out.inputs["Surface"])
    check(S.export_centre(S.build_plane_scene(mat), tmp_path / "e"), (0.8, 0.8, 0.8), 0.5, 0.0)


def test_object_without_material_gets_the_defaults(tmp_path):
    check(S.export_centre(S.build_plane_scene(None), tmp_path), (0.8, 0.8, 0.8), 0.5, 0.0)


def test_muted_principled_and_reroutes(tmp_path):
    mat, nt, out = S.new_material("m")
    p = S.principled(nt, (0.5, 0.25, 0.125), 0.8, 0.1)
    r1 = nt.nodes.new("NodeReroute")
    nt.links.new(p.outputs[0], r1.inputs[0])
    nt.links.new(r1.outputs[0], out.inputs["Surface"])
    check(S.export_centre(S.build_plane_scene(mat), tmp_path / "a"), (0.5, 0.25, 0.125), 0.8, 0.1)
    p.mute = True  # a muted BSDF renders nothing → the defaults
    check(S.export_centre(S.build_plane_scene(mat), tmp_path / "b"), (0.8, 0.8, 0.8), 0.5, 0.0)


@pytest.mark.skipif(not hasattr(bpy.types, "ShaderNodeBsdfMetallic"), reason="Metallic BSDF is Blender 4.3+")
def test_metallic_bsdf(tmp_path):
    mat, nt, out = S.new_material("m")
    m = nt.nodes.new("ShaderNodeBsdfMetallic")
    m.inputs["Base Color"].default_value = (0.9, 0.6, 0.3, 1)
    m.inputs["Roughness"].default_value = 0.25
    nt.links.new(m.outputs[0], out.inputs["Surface"])
    check(S.export_centre(S.build_plane_scene(mat), tmp_path), (0.9, 0.6, 0.3), 0.25, 1.0)


@pytest.mark.skipif(S.VERSION >= (5, 0, 0), reason="materials always use nodes in Blender 5")
def test_material_without_nodes_gets_the_defaults(tmp_path):
    mat = bpy.data.materials.new("plain")
    mat.use_nodes = False
    mat.diffuse_color = (0.1, 0.2, 0.3, 1)
    scene = S.build_plane_scene(mat)
    before = S.fingerprint(scene)
    check(S.export_centre(scene, tmp_path), (0.8, 0.8, 0.8), 0.5, 0.0)
    assert S.diff(before, S.fingerprint(scene)) == []


def test_injection_alone_is_undone_exactly():
    scene = S.build_export_scene(frames=(1, 1), size=16)
    before = S.fingerprint(scene)
    log = ChangeLog()
    vl = scene.view_layers[0]
    names = aov_injection.choose_aov_names(vl)
    aov_injection.add_view_layer_aovs(vl, names, log)
    report = aov_injection.inject_materials(names, log)
    assert set(report.materials) == {"plane_mat", "group_mat", "diffuse_mat"}
    assert report.groups == ["group_mat_group"]  # the group's base colour (a group input) is routed out
    assert [a.name for a in vl.aovs] == ["user_aov", "basecolor", "roughness", "metallic"]
    g = bpy.data.node_groups["group_mat_group"]
    assert "DR_basecolor" in [i.name for i in g.interface.items_tree]
    assert S.diff(before, S.fingerprint(scene)) != []
    log.restore()
    assert S.diff(before, S.fingerprint(scene)) == []
