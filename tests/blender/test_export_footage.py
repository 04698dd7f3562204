"""Footage description: image sequences, movies and movie clips and the active VSE strip are handed to the
engine as their own files (no re-encode) with the frame numbers they must land on, the frame rate and the
colour space; only a colour space that needs Blender's colour management is rendered (half-float EXR).
The engine reads each description to exactly those frame numbers."""
from __future__ import annotations

import json
import os

import pytest

import bpy_scene as S
from bpy_scene import bpy

np = pytest.importorskip("numpy")

from diffusion_renderer_addon import compat  # noqa: E402
from diffusion_renderer_addon.export import FootageExportError, export_footage  # noqa: E402
from diffusion_renderer_addon.export.footage_export import engine_colorspace, sequence_pattern  # noqa: E402
from exr_files import read_exr, write_exr  # noqa: E402

FRAMES = (5, 6, 7)


def colour(f):
    return (f / 10.0, 0.5, 0.25)


def srgb(x):
    """The movie stores the sRGB encoding of the linear value rendered into it."""
    return 12.92 * x if x <= 0.0031308 else 1.055 * x ** (1 / 2.4) - 0.055


@pytest.fixture(autouse=True)
def fresh_file():
    S.reset()


@pytest.fixture()
def png_sequence(tmp_path):
    folder = tmp_path / "src_png"
    folder.mkdir()
    for f in FRAMES:
        img = bpy.data.images.new(f"s{f}", 8, 4)
        img.pixels[:] = [*colour(f), 1.0] * 32
        img.filepath_raw, img.file_format = str(folder / f"shot_{f:04d}.png"), "PNG"
        img.save()
        bpy.data.images.remove(img)
    return folder / "shot_0005.png"


@pytest.fixture()
def movie(tmp_path):
    """A 6-frame 64×32 H.264 movie whose red channel is frame/10 (rendered by this Blender)."""
    S.reset()
    sc = bpy.context.scene
    tree = compat.compositor_tree(sc)
    for n in list(tree.nodes):
        tree.nodes.remove(n)
    rgb = tree.nodes.new("CompositorNodeRGB")
    _, sock = compat.composite_output(tree)
    tree.links.new(rgb.outputs[0], sock)
    sc.render.resolution_x, sc.render.resolution_y, sc.render.resolution_percentage = 64, 32, 100
    sc.view_settings.view_transform = "Standard"
    for f in range(1, 7):
        rgb.outputs[0].default_value = (f / 10, 0.5, 0.2, 1)
        rgb.outputs[0].keyframe_insert("default_value", frame=f)
    s = sc.render.image_settings
    if "media_type" in s.bl_rna.properties:
        s.media_type = "VIDEO"
    else:
        s.file_format = "FFMPEG"
    sc.render.ffmpeg.format, sc.render.ffmpeg.codec = "MPEG4", "H264"
    sc.frame_start, sc.frame_end = 1, 6
    sc.render.filepath = str(tmp_path / "mov_")
    bpy.ops.render.render(animation=True)
    path = tmp_path / "mov_0001-0006.mp4"
    if not path.is_file():
        pytest.skip("this Blender build cannot write H.264 movies")
    S.reset()
    return path


def engine_frames(params) -> dict:
    """What the engine makes of a description's params: frame numbers, rate, size, first pixel (as read)."""
    code = r"""
import json, sys
from pathlib import Path
from engine.io import VIDEO_SUFFIXES, open_clip
p = json.loads(sys.argv[1])
video = Path(p["input"]).suffix.lower() in VIDEO_SUFFIXES
first = p.get("first_frame", 1 if video else None)
with open_clip(p["input"], frame_range=p.get("frame_range"), source_fps=p.get("source_fps"), first_number=first) as c:
    print(json.dumps({"numbers": c.frame_numbers, "fps": c.fps, "size": list(c.size), "linear": c.is_linear,
                      "first": c.read(0)[0, 0].tolist()}))
"""
    return json.loads(S.run_engine(code, json.dumps(params)))


def test_png_image_sequence_passes_through(png_sequence, tmp_path):
    img = bpy.data.images.load(str(png_sequence))
    img.source = "SEQUENCE"
    scene = bpy.context.scene
    scene.render.fps = 30
    before = S.fingerprint(scene)
    info = export_footage(img, tmp_path / "out")
    assert S.diff(before, S.fingerprint(scene)) == []
    assert not (tmp_path / "out").exists(), "nothing is re-encoded"
    assert info["params"] == {"input": str(png_sequence.parent), "colorspace": "srgb", "source_fps": 30.0}
    assert info["frame_numbers"] == list(FRAMES) and info["fps"] == 30 and info["size"] == [8, 4]
    assert not info["rendered"]
    r = engine_frames(info["params"])
    assert r["numbers"] == list(FRAMES) and r["fps"] == 30 and r["size"] == [8, 4]
    assert r["first"] == pytest.approx([round(0.5 * 255) / 255, round(0.5 * 255) / 255, round(0.25 * 255) / 255],
                                       abs=1e-4)
    (png_sequence.parent / "notes_0001.png").write_bytes((png_sequence).read_bytes())   # another sequence
    info = export_footage(img, tmp_path / "out")
    assert info["params"]["input"] == str(png_sequence.parent / "shot_####.png")
    assert engine_frames(info["params"])["numbers"] == list(FRAMES)


def test_float_exr_sequence_is_linear(tmp_path):
    folder = tmp_path / "src_exr"
    for f in (1, 2):
        write_exr(folder / f"plate.{f:04d}.exr", {c: np.full((4, 8), v) for c, v in zip("RGB", (f * 1.5, 0.25, 3.0))},
                  dtype="float")
    img = bpy.data.images.load(str(folder / "plate.0001.exr"))
    img.source = "SEQUENCE"
    info = export_footage(img, tmp_path / "out")
    assert info["params"]["colorspace"] == "linear" and info["params"]["input"] == str(folder)
    r = engine_frames(info["params"])
    assert r["numbers"] == [1, 2] and r["linear"] and r["first"] == pytest.approx([1.5, 0.25, 3.0])  # HDR kept


def test_movie_clip_and_movie_image(movie, tmp_path):
    clip = bpy.data.movieclips.load(str(movie))
    info = export_footage(clip, tmp_path / "clip")
    assert info["params"] == {"input": str(movie), "colorspace": "srgb"}   # the movie's own rate: none given
    assert info["frame_numbers"] == [1, 2, 3, 4, 5, 6] and info["fps"] == 24 and info["size"] == [64, 32]
    r = engine_frames(info["params"])
    assert r["numbers"] == [1, 2, 3, 4, 5, 6] and r["fps"] == 24 and r["size"] == [64, 32]
    assert abs(r["first"][0] - srgb(0.1)) < 0.03                          # lossy H.264
    clip.frame_start = 101  # a clip placed later on the timeline keeps the timeline numbers
    info = export_footage(clip, tmp_path / "clip101", frame_range=(102, 103))
    assert info["params"]["first_frame"] == 101 and info["params"]["frame_range"] == [102, 103]
    r = engine_frames(info["params"])
    assert r["numbers"] == [102, 103] and abs(r["first"][0] - srgb(0.2)) < 0.03
    img = bpy.data.images.load(str(movie))
    info = export_footage(img, tmp_path / "img")
    assert info["frame_numbers"] == [1, 2, 3, 4, 5, 6] and info["params"]["input"] == str(movie)


def test_active_vse_strip_uses_timeline_frames(movie, tmp_path):
    scene = bpy.context.scene
    se = scene.sequence_editor_create()
    strip = compat.vse_new_movie(se, "plate", str(movie), 2, 10)  # content frame 1 at scene frame 10
    compat.strip_trim_start(strip, 1)  # trim the first frame: visible 11..15
    se.active_strip = strip
    before = S.fingerprint(scene)
    info = export_footage(None, tmp_path / "vse", scene=scene)
    assert S.diff(before, S.fingerprint(scene)) == []
    fps = scene.render.fps / scene.render.fps_base
    assert info["frame_numbers"] == [11, 12, 13, 14, 15] and info["fps"] == fps
    assert info["params"] == {"input": str(movie), "first_frame": 10, "frame_range": [11, 15], "colorspace": "srgb",
                              "source_fps": fps}
    r = engine_frames(info["params"])
    assert r["numbers"] == [11, 12, 13, 14, 15] and r["fps"] == fps
    assert abs(r["first"][0] - srgb(0.2)) < 0.03  # scene frame 11 shows content frame 2


def test_vse_image_strip(png_sequence, tmp_path):
    scene = bpy.context.scene
    se = scene.sequence_editor_create()
    strip = compat.vse_new_image(se, "shots", str(png_sequence), 1, 20)
    strip.elements.append("shot_0006.png")
    se.active_strip = strip
    info = export_footage(None, tmp_path / "vse", scene=scene)
    assert info["frame_numbers"] == [20, 21]
    assert info["params"]["input"] == str(png_sequence.parent) and info["params"]["first_frame"] == 20
    assert info["params"]["frame_range"] == [20, 21]                      # shot_0007 is not in the strip
    r = engine_frames(info["params"])
    assert r["numbers"] == [20, 21] and r["first"][0] == pytest.approx(round(0.5 * 255) / 255, abs=1e-4)
    strip.elements[1].filename = "shot_0007.png"                           # 5, 7: not one sequence in order
    info = export_footage(None, tmp_path / "vse2", scene=scene)
    assert info["rendered"] and info["params"]["input"] == str(tmp_path / "vse2" / "frames")
    assert sorted(os.listdir(tmp_path / "vse2" / "frames")) == ["frame.0020.exr", "frame.0021.exr"]
    r = engine_frames(info["params"])
    assert r["numbers"] == [20, 21] and r["linear"]
    assert r["first"][0] == pytest.approx(S_lin(round(0.5 * 255) / 255), abs=2e-3)   # half float, linear


def S_lin(v):
    return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4


def test_colour_space_needing_blender_is_rendered_once_as_linear_exr(png_sequence, tmp_path):
    assert engine_colorspace("sRGB") == "srgb" and engine_colorspace("Linear Rec.709") == "linear"
    assert engine_colorspace("Filmic Log") is None and engine_colorspace("AgX Log") is None
    assert sequence_pattern("/a/shot_0005.png") == "/a/shot_####.png" and sequence_pattern("/a/x.png") is None
    img = bpy.data.images.load(str(png_sequence))
    img.source = "SEQUENCE"
    img.colorspace_settings.name = "Filmic Log"
    info = export_footage(img, tmp_path / "out")
    assert info["rendered"] and info["colorspace_name"] == "Filmic Log"
    assert info["params"]["colorspace"] == "linear" and any("Filmic Log" in n for n in info["notes"])
    folder = tmp_path / "out" / "frames"
    assert sorted(os.listdir(folder)) == [f"frame.{f:04d}.exr" for f in FRAMES]
    ch = read_exr(folder / "frame.0006.exr")
    assert sorted(ch) == ["B", "G", "R"] and ch["R"].shape == (4, 8)
    r = engine_frames(info["params"])
    assert r["numbers"] == list(FRAMES) and r["linear"]
    assert abs(r["first"][1] - S_lin(0.5)) > 0.02, "Filmic Log values must go through Blender's conversion"


def engine_colour(params) -> dict:
    """The engine's reading of a description's colour space: the OpenColorIO name it resolves to and the first
    pixel of the first frame converted to scene-linear Rec.709."""
    code = r"""
import json, sys
from engine import colour
from engine.io import open_clip
p = json.loads(sys.argv[1])
with open_clip(p["input"], source_fps=p.get("source_fps")) as c:
    ic = colour.input_colour(c, p["colorspace"])
    print(json.dumps({"name": ic.name, "linear": ic.linear, "first": ic.convert(c.read(0))[0, 0].tolist()}))
"""
    return json.loads(S.run_engine(code, json.dumps(params)))


def test_blender_colour_spaces_map_to_the_engine_s_names():
    assert engine_colorspace("ACEScg") == "ACEScg" and engine_colorspace("ACES2065-1") == "ACES2065-1"
    assert engine_colorspace("Linear Rec.2020") == "Linear Rec.2020" and engine_colorspace("Non-Color") == "srgb"
    assert engine_colorspace("Linear Rec.709", ".dpx") == "auto"       # Blender's default for every DPX
    assert engine_colorspace("Linear Rec.709", ".exr") == "linear" and engine_colorspace("ACEScg", ".dpx") == "ACEScg"
    names = {i.name for i in bpy.types.ColorManagedInputColorspaceSettings.bl_rna.properties["name"].enum_items}
    for name in ("sRGB", "Non-Color", "Linear Rec.709", "ACEScg", "ACES2065-1", "Linear Rec.2020"):
        assert name in names, f"{name!r} is not a colour space of this Blender"


def test_acescg_exr_sequence_passes_through_with_its_colour_space(tmp_path):
    folder = tmp_path / "cg"
    for f in (1, 2):
        write_exr(folder / f"cg.{f:04d}.exr", {c: np.full((4, 8), v) for c, v in zip("RGB", (1.0, 0.0, 0.0))},
                  dtype="float")
    img = bpy.data.images.load(str(folder / "cg.0001.exr"))
    img.source = "SEQUENCE"
    img.colorspace_settings.name = "ACEScg"
    info = export_footage(img, tmp_path / "out")
    assert not info["rendered"] and not (tmp_path / "out").exists(), "the engine converts, nothing is rendered"
    assert info["params"]["colorspace"] == "ACEScg" and info["colorspace_name"] == "ACEScg"
    r = engine_colour(info["params"])
    assert r["name"] == "ACEScg" and r["linear"]
    assert r["first"] == pytest.approx([1.70505, -0.13026, -0.02400], abs=2e-4)   # AP1 red in Rec.709


def test_dpx_sequence_lets_the_engine_read_its_log_header(tmp_path):
    folder = tmp_path / "dpx"
    folder.mkdir()
    S.run_engine(r"""
import sys, numpy as np, OpenImageIO as oiio
for f in (1001, 1002):
    spec = oiio.ImageSpec(8, 4, 3, "uint16")
    spec.attribute("oiio:BitsPerSample", 10)
    spec.attribute("dpx:Transfer", "Printing density")
    out = oiio.ImageOutput.create(sys.argv[1] + f"/shot.{f}.dpx")
    assert out.open(sys.argv[1] + f"/shot.{f}.dpx", spec)
    c = np.full((4, 8, 3), 685, np.uint16)
    out.write_image((c << 6) | (c >> 4))
    out.close()
""", str(folder))
    img = bpy.data.images.load(str(folder / "shot.1001.dpx"))
    img.source = "SEQUENCE"
    info = export_footage(img, tmp_path / "out")
    assert not info["rendered"] and info["params"] == {"input": str(folder), "colorspace": "auto",
                                                       "source_fps": 24.0}
    assert info["frame_numbers"] == [1001, 1002]
    r = engine_colour(info["params"])
    assert r["name"] == "Cineon Log (DPX)" and r["first"] == pytest.approx([1.0, 1.0, 1.0], abs=1e-4)  # code 685


def test_errors(tmp_path):
    with pytest.raises(FootageExportError, match="active sequencer strip"):
        export_footage(None, tmp_path / "x", scene=bpy.context.scene)
    gen = bpy.data.images.new("generated", 4, 4)
    with pytest.raises(FootageExportError):
        export_footage(gen, tmp_path / "x")
    with pytest.raises(FootageExportError, match="expected a Movie Clip"):
        export_footage(bpy.context.scene, tmp_path / "x")
