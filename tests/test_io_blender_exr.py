"""engine.io.blender_exr on real Blender 4.2 and 5.0 EXRs (tests/fixtures/make_blender_exr.py made the render
folders tests/fixtures/blender_exr/<version>/; bpy is not needed here)."""
import json
from pathlib import Path

import numpy as np
import OpenEXR
import pytest

from engine.io import read_frame
from engine.io.blender_exr import (
    canonical_pass_name,
    detect_layout,
    read_blender_passes,
)
from engine.io.exr import ExrError, write_exr, write_exr_rgb

FIX = Path(__file__).parent / "fixtures" / "blender_exr"
VERSIONS = ("blender42", "blender50")
EXPECTED_LAYOUT = {("blender42", "render"): "blender-4x", ("blender50", "render"): "blender-5x",
                   ("blender42", "fileout"): "file-output", ("blender50", "fileout"): "file-output"}
FILE = {"render": "frame_{:06d}.exr", "fileout": "fileout_{:04d}.exr"}
FILES = [(v, route, f"{v}/{FILE[route].format(n)}") for v in VERSIONS for route, frames in
         (("render", (1, 2)), ("fileout", (1,))) for n in frames]


def _expected(version):
    return json.loads((FIX / version / "expected.json").read_text())


def _mask(passes, rgb):
    return np.all(np.abs(passes["basecolor"][..., :3] - np.asarray(rgb)) < 1e-3, axis=-1)


def _interior(m):
    """Pixels of mask m whose four neighbours are in m too (no anti-aliased edge pixels)."""
    out = m.copy()
    out[1:] &= m[:-1]
    out[:-1] &= m[1:]
    out[:, 1:] &= m[:, :-1]
    out[:, :-1] &= m[:, 1:]
    out[0] = out[-1] = out[:, 0] = out[:, -1] = False
    return out


@pytest.mark.parametrize("version,route,name", FILES)
def test_canonical_passes_and_known_values(version, route, name):
    exp = _expected(version)
    assert exp["blender"].startswith({"blender42": "4.2", "blender50": "5.0"}[version])
    p = read_blender_passes(FIX / name)
    assert p.layout == EXPECTED_LAYOUT[(version, route)] == detect_layout(FIX / name)
    assert p.view_layer == ("ViewLayer" if route == "render" else None)
    assert set(p) == {"combined", "depth", "normal", "diffuse_color", "basecolor", "roughness", "metallic"}
    single = "Z" if route == "render" else "V"
    assert p.channels["depth"] == single and p.channels["normal"] == "XYZ"
    assert p.channels["roughness"] == ("X" if route == "render" else "V")
    assert p.channels["combined"] == "RGBA" and p.channels["basecolor"] == "RGBA"
    for k, v in p.items():
        assert v.dtype == np.float32 and v.shape[:2] == (16, 16) and v.shape[2] == len(p.channels[k])

    covered = p["basecolor"][..., 3] > 0.999
    assert 40 < covered.sum() < 200 and (~covered).sum() > 20  # objects and some background
    for mat in exp["materials"].values():  # AOVs equal the material constants on its pixels
        m = _mask(p, mat["basecolor"])
        assert m.sum() >= 10
        np.testing.assert_array_equal(p["roughness"][m, 0], np.float32(mat["roughness"]))
        np.testing.assert_array_equal(p["metallic"][m, 0], np.float32(mat["metallic"]))
    # depth: planar, positive; the floor seen head-on is exactly the camera height away
    assert (p["depth"][covered] > 0).all()
    floor = _mask(p, exp["materials"]["floor"]["basecolor"])
    np.testing.assert_allclose(p["depth"][floor, 0], exp["floor_depth"], rtol=1e-6)
    sphere = _mask(p, exp["materials"]["sphere"]["basecolor"])
    assert (p["depth"][sphere, 0] < exp["floor_depth"]).all() and (p["depth"][sphere, 0] >= 3.99).all()
    assert (p["depth"][~covered, 0] > 1e9).all()  # Cycles background depth (1e10)
    # normals: world space, unit length on interior pixels; the floor faces +Z
    interior = _interior(floor) | _interior(sphere)
    assert interior.sum() >= 20
    np.testing.assert_allclose(np.linalg.norm(p["normal"][interior], axis=-1), 1.0, atol=1e-3)
    np.testing.assert_allclose(p["normal"][floor], np.broadcast_to([0, 0, 1], p["normal"][floor].shape), atol=1e-5)
    # diffuse colour ≈ base colour for the dielectric floor (Principled's specular layer takes ~3 %)
    np.testing.assert_allclose(p["diffuse_color"][floor, :3], np.broadcast_to(
        exp["materials"]["floor"]["basecolor"], (floor.sum(), 3)), rtol=0.05)


@pytest.mark.parametrize("route", ["render", "fileout"])
def test_both_blender_versions_agree(route):
    a = read_blender_passes(FIX / "blender42" / FILE[route].format(1))
    b = read_blender_passes(FIX / "blender50" / FILE[route].format(1))
    for k in ("depth", "basecolor", "roughness", "metallic"):
        np.testing.assert_allclose(a[k], b[k], atol=1e-3, err_msg=k)
    np.testing.assert_allclose(a["normal"], b["normal"], atol=5e-3)  # sub-pixel sampling differs slightly


def test_frames_differ_and_sources_recorded():
    f1 = read_blender_passes(FIX / "blender50" / "frame_000001.exr")
    f2 = read_blender_passes(FIX / "blender50" / "frame_000002.exr")
    assert not np.array_equal(f1["depth"], f2["depth"])  # the sphere moved
    assert f1.sources["diffuse_color"] == "ViewLayer.Diffuse Color"
    assert read_blender_passes(FIX / "blender42" / "frame_000001.exr").sources["diffuse_color"] == "ViewLayer.DiffCol"
    assert f1.view_layers == ["ViewLayer"]


def test_file_output_ignores_the_view_layer_name():
    """File Output files have no view-layer prefix: view_layer= (from render.json) does not refuse them."""
    p = read_blender_passes(FIX / "blender50" / "fileout_0001.exr", view_layer="ViewLayer")
    assert p.view_layer is None and p.view_layers == [] and "normal" in p


def test_blender_exr_as_frame_gives_combined():
    img, meta = read_frame(FIX / "blender42" / "frame_000001.exr", info=True)
    p = read_blender_passes(FIX / "blender42" / "frame_000001.exr")
    assert meta["is_linear"] and img.shape == (16, 16, 3)
    np.testing.assert_array_equal(img, p["combined"][..., :3])


@pytest.mark.parametrize("name,canon", [
    ("DiffCol", "diffuse_color"), ("Diffuse Color", "diffuse_color"), ("Depth", "depth"), ("Z", "depth"),
    ("Normal", "normal"), ("Combined", "combined"), ("Image", "combined"), ("AOV_Roughness", "roughness"),
    ("AOV_BaseColor", "basecolor"), ("AOV_Metallic", "metallic"), ("basecolor", "basecolor"),
    ("GlossCol", "glossy_color"), ("Glossy Color", "glossy_color"), ("IndexOB", "object_index"),
    ("Object Index", "object_index"), ("AO", "ambient_occlusion"), ("Emit", "emission"),
    ("Denoising Albedo", "denoising_albedo"), ("My Custom AOV", "my_custom_aov")])
def test_canonical_names(name, canon):
    assert canonical_pass_name(name) == canon


def test_plain_exr_and_layout(tmp_path):
    write_exr_rgb(tmp_path / "plain.exr", np.full((4, 4, 3), 0.5, np.float32))
    assert detect_layout(tmp_path / "plain.exr") == "plain"
    p = read_blender_passes(tmp_path / "plain.exr")
    assert list(p) == ["combined"] and p["combined"].shape == (4, 4, 3) and p.view_layer is None


def test_several_view_layers_and_composite(tmp_path):
    z = np.ones((4, 4), np.float32)
    write_exr(tmp_path / "vl.exr", {"Front.Depth.Z": z, "Back.Depth.Z": 2 * z, "Front.Combined.R": z,
                                    "Front.Combined.G": z, "Front.Combined.B": z, "Composite.Combined.R": z * 3,
                                    "Composite.Combined.G": z, "Composite.Combined.B": z}, dtype="float")
    p = read_blender_passes(tmp_path / "vl.exr")
    assert sorted(p.view_layers) == ["Back", "Front"] and p.view_layer == p.view_layers[0]  # first in file order
    assert "composite" in p and p["composite"][0, 0, 0] == 3
    back = read_blender_passes(tmp_path / "vl.exr", view_layer="Back")
    assert back["depth"][0, 0, 0] == 2 and "combined" not in back
    assert read_blender_passes(tmp_path / "vl.exr", view_layer="Front")["depth"][0, 0, 0] == 1
    with pytest.raises(ValueError, match="no view layer 'Side'"):
        read_blender_passes(tmp_path / "vl.exr", view_layer="Side")


def test_collision_and_channel_order(tmp_path):
    z = np.zeros((2, 2), np.float32)
    write_exr(tmp_path / "c.exr", {"Depth.V": z, "Z.V": z})
    with pytest.raises(ExrError, match="both map to pass 'depth'"):
        read_blender_passes(tmp_path / "c.exr")
    # channel order follows RGBA / XYZW / UVA regardless of the (alphabetical) file order
    parts = [OpenEXR.Part({"name": "UV", "type": OpenEXR.scanlineimage, "compression": OpenEXR.ZIP_COMPRESSION},
                          {"UV.A": z + 3, "UV.U": z + 1, "UV.V": z + 2}),
             OpenEXR.Part({"name": "Vector", "type": OpenEXR.scanlineimage, "compression": OpenEXR.ZIP_COMPRESSION},
                          {"W": z + 4, "X": z + 1, "Y": z + 2, "Z": z + 3})]
    with OpenEXR.File(parts) as f:
        f.write(str(tmp_path / "o.exr"))
    p = read_blender_passes(tmp_path / "o.exr")
    assert p.layout == "file-output" and p.channels == {"uv": "UVA", "vector": "XYZW"}
    assert p["uv"][0, 0].tolist() == [1, 2, 3] and p["vector"][0, 0].tolist() == [1, 2, 3, 4]
