"""Importing G-buffer and relit sets into Blender (diffusion_renderer_addon/reimport).

Sets are written with the tests' EXR helper (tests/blender/exr_files.py, OpenEXR): single-layer files named
as in docs/GBUFFER_SET.md, frames 101–103 (so the first-frame offset is exercised). Runs under any bpy
(bin/test-blender, bin/test-blender-matrix); skipped where bpy is missing.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("BLENDER_USER_RESOURCES", str(Path(tempfile.gettempdir()) / "dr-bpy-user"))
bpy = pytest.importorskip("bpy", reason="bpy (Blender as a Python module) is not installed in this interpreter; "
                                        "run these tests with bin/test-blender")

import numpy as np  # noqa: E402

from diffusion_renderer_addon import compat  # noqa: E402
from exr_files import write_exr  # noqa: E402
from diffusion_renderer_addon.reimport import ReimportError, import_result  # noqa: E402

W, H = 8, 6
FRAMES = [101, 102, 103]
SPEC = {  # pass: (channels, encoding, dtype)
    "rgb": (["R", "G", "B"], "linear-rec709", "half"),
    "basecolor": (["R", "G", "B"], "linear-rec709", "half"),
    "normal": (["X", "Y", "Z"], "camera-normal", "half"),
    "depth": (["V"], "depth-planar-metric", "float"),
    "roughness": (["V"], "non-color", "half"),
    "metallic": (["V"], "non-color", "half"),
    "alpha": (["V"], "non-color", "half"),
}


def _value(pass_name, ch, frame):
    return {"normal": {"X": 0.0, "Y": 0.0, "Z": 1.0}.get(ch, 0.0), "depth": 5.0 + frame * 0.01,
            "roughness": 0.25 + 0.1 * (frame - 100), "metallic": 0.75, "alpha": 1.0}.get(
        pass_name, 0.1 * "RGB".index(ch) + 0.01 * (frame - 100) if ch in "RGB" else 0.5)


def _write_set(root: Path, kind: str, passes: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    manifest = {"format": "diffusion-renderer/gbuffer-set", "version": 1, "kind": kind, "frame_numbers": FRAMES,
                "fps": 24, "resolution": [W, H], "passes": {},
                "provenance": {"producer": "blender" if kind == "gbuffer" else "forward-model"}}
    for name, (chans, enc, dtype) in passes.items():
        manifest["passes"][name] = {"path": f"{name}/{name}.####.exr", "channels": chans, "encoding": enc,
                                    "dtype": dtype}
        for f in FRAMES:
            path = root / name / f"{name}.{f:04d}.exr"
            path.parent.mkdir(exist_ok=True)
            write_exr(path, {c: np.full((H, W), _value(name, c, f)) for c in chans}, dtype=dtype)
    if kind == "gbuffer":
        manifest["alpha"] = "alpha"
        manifest["depth"] = {"kind": "metric", "near": 5.0, "far": 7.0, "invert": False, "range_rule": "clip-min-p98"}
    (root / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return root / "manifest.json"


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("reimport")
    gbuf = _write_set(root / "gbuf", "gbuffer", SPEC)
    relit = _write_set(root / "relit" / "studio", "relit", {"relit": (["R", "G", "B"], "linear-rec709", "half")})
    return gbuf, relit


@pytest.fixture()
def scene():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return bpy.context.scene


def _compositor_tree(scene):
    return scene.compositing_node_group if compat.has_compositing_node_group() else scene.node_tree


def _check_sequence(img, expected_cs, first_file):
    assert img.source == "SEQUENCE"
    assert img.colorspace_settings.name == expected_cs
    assert Path(bpy.path.abspath(img.filepath)) == first_file
    assert first_file.is_file()


def _check_range(user):
    assert (user.frame_start, user.frame_duration, user.frame_offset) == (101, 3, 100)
    assert user.use_auto_refresh


def _use_compositor(scene):
    """Give the scene a compositor tree of its own, as an artist who composites has."""
    if compat.has_compositing_node_group():
        scene.compositing_node_group = bpy.data.node_groups.new("Artist Compositing", "CompositorNodeTree")
    else:
        scene.use_nodes = True
    return _compositor_tree(scene)


def test_gbuffer_set(sets, scene):
    gbuf, _ = sets
    _use_compositor(scene)
    res = import_result(gbuf, scene=scene, task="delight")
    assert res["kind"] == "gbuffer" and res["frames"] == FRAMES and res["name"] == "Scene.Delight"
    assert set(res["images"]) == set(SPEC)
    assert res["images"]["basecolor"] == "Scene.Delight.Base Color" and res["material"] == "Scene.Delight"
    for name, img_name in res["images"].items():
        cs = "Linear Rec.709" if SPEC[name][1] == "linear-rec709" else "Non-Color"
        _check_sequence(bpy.data.images[img_name], cs, gbuf.parent / name / f"{name}.0101.exr")

    # compositor: the group is in the tree of this version, one output per pass, each from an Image node
    tree = _compositor_tree(scene)
    assert tree is not None and tree.name == res["compositor_tree"]
    node = tree.nodes[res["compositor_node"]]
    group = bpy.data.node_groups[res["node_group"]]
    assert node.node_tree == group and group.bl_idname == "CompositorNodeTree"
    outputs = [i.name for i in group.interface.items_tree if getattr(i, "in_out", None) == "OUTPUT"]
    assert outputs == list(SPEC)
    assert [s.name for s in node.outputs if s.enabled][:len(SPEC)] == list(SPEC)
    group_out = next(n for n in group.nodes if n.bl_idname == "NodeGroupOutput")
    for sock in group_out.inputs:
        if sock.name in SPEC:
            assert sock.is_linked and sock.links[0].from_node.bl_idname == "CompositorNodeImage"
            img_node = sock.links[0].from_node
            assert img_node.image.name == res["images"][sock.name]
            _check_range(img_node)

    # material: image textures linked to the Principled inputs (scalars through Separate Color)
    mat = bpy.data.materials[res["material"]]
    nt = mat.node_tree
    bsdf = next(n for n in nt.nodes if n.bl_idname == "ShaderNodeBsdfPrincipled")

    def source_tex(sock):
        assert sock.is_linked, sock.name
        node = sock.links[0].from_node
        while node.bl_idname != "ShaderNodeTexImage":
            node = node.inputs[0].links[0].from_node
        return node

    assert source_tex(bsdf.inputs["Base Color"]).image.name == res["images"]["basecolor"]
    assert source_tex(bsdf.inputs["Roughness"]).image.name == res["images"]["roughness"]
    assert source_tex(bsdf.inputs["Metallic"]).image.name == res["images"]["metallic"]
    assert source_tex(bsdf.inputs["Alpha"]).image.name == res["images"]["alpha"]
    assert not bsdf.inputs["Normal"].is_linked  # camera-space normals are not a tangent-space map
    texs = [n for n in nt.nodes if n.bl_idname == "ShaderNodeTexImage"]
    assert len(texs) == len(SPEC)
    for t in texs:
        _check_range(t.image_user)
    assert mat.use_fake_user  # kept in the saved file although nothing uses it yet
    ed = scene.sequence_editor                                          # no sequencer strip unless asked for
    assert "strip" not in res and (ed is None or len(compat.vse_strips_all(ed)) == 0)
    assert res["fps"] == 24 and res["warnings"] == []      # the scene plays at the set's 24 fps


def test_opt_in_strip_is_muted(sets, scene):
    """Add Sequencer Strip: the de-lit plate (base colour) as a muted image strip over the set's frames."""
    gbuf, _ = sets
    res = import_result(gbuf, scene=scene, make_material=False, make_compositor=False, make_vse=True)
    strip = compat.vse_strips(scene.sequence_editor)[res["strip"]]
    assert strip.mute and strip.name == res["images"]["basecolor"]
    assert compat.strip_timing(strip)[1:] == (101, 104) and len(strip.elements) == 3
    assert [e.filename for e in strip.elements] == [f"basecolor.{f:04d}.exr" for f in FRAMES]


def test_no_compositor_is_created(sets, scene):
    """A scene that does not composite keeps not compositing: the group waits in the file (fake user)."""
    gbuf, _ = sets
    def state():
        return _compositor_tree(scene), scene.render.use_compositing, \
            None if compat.has_compositing_node_group() else scene.use_nodes

    before = state()
    res = import_result(gbuf, scene=scene)
    assert state() == before
    assert "compositor_node" not in res and bpy.data.node_groups[res["node_group"]].use_fake_user


def test_other_scene_rate_is_reported_not_retimed(sets, scene):
    gbuf, _ = sets
    scene.render.fps, scene.render.fps_base = 25, 1.0
    res = import_result(gbuf, scene=scene, make_material=False, make_compositor=False, make_vse=True)
    [warning] = res["warnings"]
    assert "24 fps" in warning and "25 fps" in warning and "not retimed" in warning
    strip = compat.vse_strips(scene.sequence_editor)[res["strip"]]
    assert compat.strip_timing(strip)[1:] == (101, 104)


def test_single_channel_reads_grey(sets):
    """A ``V`` EXR loads as grey (R = G = B = value): Separate Color's R is the value."""
    gbuf, _ = sets
    img = bpy.data.images.load(str(gbuf.parent / "roughness" / "roughness.0102.exr"), check_existing=False)
    img.colorspace_settings.name = "Non-Color"
    px = list(img.pixels[:4])
    assert px[0] == pytest.approx(0.45, abs=1e-3) and px[1] == pytest.approx(px[0]) and px[2] == pytest.approx(px[0])
    bpy.data.images.remove(img)


def test_relit_set(sets, scene):
    _, relit = sets
    _use_compositor(scene)
    res = import_result(relit, scene=scene, make_vse=True)
    assert res["kind"] == "relit" and list(res["images"]) == ["relit"]
    assert res["images"]["relit"] == "Scene.Relight studio.Relit"     # named after the shot and the light
    img = bpy.data.images[res["images"]["relit"]]
    _check_sequence(img, "Linear Rec.709", relit.parent / "relit" / "relit.0101.exr")
    group = bpy.data.node_groups[res["node_group"]]
    assert [i.name for i in group.interface.items_tree if getattr(i, "in_out", None) == "OUTPUT"] == ["relit"]
    assert _compositor_tree(scene).nodes.get(res["compositor_node"]) is not None
    # VSE strip: right start, length and files
    ed = scene.sequence_editor
    strip = compat.vse_strips(ed)[res["strip"]]
    assert compat.strip_timing(strip)[1:] == (101, 104) and len(strip.elements) == 3
    assert [e.filename for e in strip.elements] == [f"relit.{f:04d}.exr" for f in FRAMES]
    assert Path(bpy.path.abspath(strip.directory)) == relit.parent / "relit"
    assert strip.colorspace_settings.name == "Linear Rec.709" and strip.mute
    # emission material with the relit sequence
    nt = bpy.data.materials[res["material"]].node_tree
    tex = next(n for n in nt.nodes if n.bl_idname == "ShaderNodeTexImage")
    assert tex.outputs["Color"].is_linked and tex.image == img
    _check_range(tex.image_user)


def _counts():
    return {kind: len(getattr(bpy.data, kind)) for kind in ("images", "node_groups", "materials")}


def test_a_rerun_replaces_the_result(sets, scene, tmp_path):
    """A second import under the same name (a re-run of the shot/task) reuses every datablock, the Group
    node and the strip, switching their files: no ``.001``."""
    gbuf, _ = sets
    tree = _use_compositor(scene)
    a = import_result(gbuf, scene=scene, task="delight", make_vse=True)
    counts = _counts()
    rerun = tmp_path / "rerun" / "out"                     # the next job's set: other files, same passes
    _write_set(rerun, "gbuffer", SPEC)
    b = import_result(rerun, scene=scene, task="delight", make_vse=True)
    assert b == {**a, "path": str(rerun)} and _counts() == counts
    every = [i.name for i in bpy.data.images] + [g.name for g in bpy.data.node_groups] + \
        [m.name for m in bpy.data.materials] + [x.name for x in compat.vse_strips(scene.sequence_editor)]
    assert not [n for n in every if n[-4:-3] == "." and n[-3:].isdigit()], every
    assert len([n for n in tree.nodes if n.bl_idname == "CompositorNodeGroup"]) == 1
    for name, img in b["images"].items():
        assert Path(bpy.path.abspath(bpy.data.images[img].filepath)) == rerun / name / f"{name}.0101.exr"
    strip = compat.vse_strips(scene.sequence_editor)[b["strip"]]
    assert Path(bpy.path.abspath(strip.directory)) == rerun / "basecolor" and strip.mute


def test_paths_are_relative_to_the_saved_file(sets, scene, tmp_path):
    project = tmp_path / "project"
    gbuf = _write_set(project / "neural" / "delight-1" / "out", "gbuffer", {"basecolor": SPEC["basecolor"]})
    bpy.ops.wm.save_as_mainfile(filepath=str(project / "shot.blend"))
    res = import_result(gbuf, scene=bpy.context.scene, task="delight")
    img = bpy.data.images[res["images"]["basecolor"]]
    assert img.filepath == "//neural/delight-1/out/basecolor/basecolor.0101.exr"


def test_errors_name_the_file(sets, scene, tmp_path):
    with pytest.raises(ReimportError, match="manifest.json"):
        import_result(tmp_path, scene=scene)
    gbuf, _ = sets
    broken = tmp_path / "broken"
    broken.mkdir()
    m = json.loads(gbuf.read_text())
    m["passes"] = {"basecolor": m["passes"]["basecolor"]}
    (broken / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ReimportError, match=r"basecolor\.0101\.exr"):
        import_result(broken, scene=scene)
