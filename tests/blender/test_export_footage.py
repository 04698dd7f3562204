"""Footage export: image sequences (8-bit → 16-bit PNG, float → EXR), movies and movie clips, and the
active VSE strip with its timeline frame numbers; clip.json; the engine reads the folder."""
from __future__ import annotations

import json
import os

import pytest

import bpy_scene as S
from bpy_scene import bpy

np = pytest.importorskip("numpy")

from diffusion_renderer_addon import compat  # noqa: E402
from diffusion_renderer_addon.export import FootageExportError, export_footage  # noqa: E402
from diffusion_renderer_addon.export.exr_io import read_exr, write_exr  # noqa: E402

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


def load_png(path):
    """(stored values (H, W, 3) in [0, 1], bit depth) of a written RGB PNG."""
    px, depth, ctype = S.read_png(path)
    assert ctype == 2  # RGB, no alpha
    return px, depth


def test_png_image_sequence_keeps_numbers_and_values(png_sequence, tmp_path):
    img = bpy.data.images.load(str(png_sequence))
    img.source = "SEQUENCE"
    scene = bpy.context.scene
    scene.render.fps = 30
    before = S.fingerprint(scene)
    info = export_footage(img, tmp_path / "out")
    assert S.diff(before, S.fingerprint(scene)) == []
    out = tmp_path / "out"
    assert sorted(os.listdir(out)) == ["clip.json", "frame.0005.png", "frame.0006.png", "frame.0007.png"]
    assert info == json.loads((out / "clip.json").read_text())
    assert info["frame_numbers"] == list(FRAMES) and info["fps"] == 30 and info["resolution"] == [8, 4]
    assert info["encoding"] == "srgb" and info["pattern"] == "frame.####.png"
    for f in FRAMES:
        px, depth = load_png(out / f"frame.{f:04d}.png")
        assert depth == 16
        src, src_depth, _ = S.read_png(png_sequence.with_name(f"shot_{f:04d}.png"))  # the 8-bit source
        assert src_depth == 8
        assert np.abs(px - src[..., :3]).max() < 2.5 / 65535  # 8 bits → 16 bits (v·257) within 2 LSB


def test_float_exr_sequence_stays_linear(tmp_path):
    folder = tmp_path / "src_exr"
    for f in (1, 2):
        write_exr(folder / f"plate.{f:04d}.exr", 8, 4, {"R": [f * 1.5] * 32, "G": [0.25] * 32, "B": [3.0] * 32},
                  dtype="float")
    img = bpy.data.images.load(str(folder / "plate.0001.exr"))
    img.source = "SEQUENCE"
    info = export_footage(img, tmp_path / "out", name="plate")
    assert info["encoding"] == "linear-rec709" and info["pattern"] == "plate.####.exr"
    w, h, ch = read_exr(tmp_path / "out" / "plate.0002.exr")
    assert (w, h) == (8, 4) and info["resolution"] == [8, 4]
    assert np.allclose([ch["R"][0], ch["G"][0], ch["B"][0]], [3.0, 0.25, 3.0], atol=1e-3)  # HDR kept


def test_movie_clip_and_movie_image(movie, tmp_path):
    clip = bpy.data.movieclips.load(str(movie))
    info = export_footage(clip, tmp_path / "clip")
    assert info["frame_numbers"] == [1, 2, 3, 4, 5, 6] and info["fps"] == 24 and info["resolution"] == [64, 32]
    for f in (1, 4, 6):
        px, _ = load_png(tmp_path / "clip" / f"frame.{f:04d}.png")
        assert abs(float(np.median(px[..., 0])) - srgb(f / 10)) < 0.03  # lossy H.264
    clip.frame_start = 101  # a clip placed later on the timeline keeps the timeline numbers
    info = export_footage(clip, tmp_path / "clip101", frame_range=(102, 103))
    assert info["frame_numbers"] == [102, 103]
    px, _ = load_png(tmp_path / "clip101" / "frame.0103.png")
    assert abs(float(np.median(px[..., 0])) - srgb(0.3)) < 0.03
    img = bpy.data.images.load(str(movie))
    info = export_footage(img, tmp_path / "img")
    assert info["frame_numbers"] == [1, 2, 3, 4, 5, 6]


def test_active_vse_strip_uses_timeline_frames(movie, tmp_path):
    scene = bpy.context.scene
    se = scene.sequence_editor_create()
    strip = compat.vse_new_movie(se, "plate", str(movie), 2, 10)  # content frame 1 at scene frame 10
    compat.strip_trim_start(strip, 1)  # trim the first frame: visible 11..15
    se.active_strip = strip
    before = S.fingerprint(scene)
    info = export_footage(None, tmp_path / "vse", scene=scene)
    assert S.diff(before, S.fingerprint(scene)) == []
    assert info["frame_numbers"] == [11, 12, 13, 14, 15]
    assert info["fps"] == scene.render.fps / scene.render.fps_base
    px, _ = load_png(tmp_path / "vse" / "frame.0011.png")
    assert abs(float(np.median(px[..., 0])) - srgb(0.2)) < 0.03  # scene frame 11 shows content frame 2


def test_vse_image_strip(png_sequence, tmp_path):
    scene = bpy.context.scene
    se = scene.sequence_editor_create()
    strip = compat.vse_new_image(se, "shots", str(png_sequence), 1, 20)
    strip.elements.append("shot_0006.png")
    se.active_strip = strip
    info = export_footage(None, tmp_path / "vse", scene=scene)
    assert info["frame_numbers"] == [20, 21]
    px, _ = load_png(tmp_path / "vse" / "frame.0021.png")
    assert abs(float(px[0, 0, 0]) - round(0.6 * 255) / 255) < 2.5 / 65535


def test_errors(tmp_path):
    with pytest.raises(FootageExportError, match="active sequencer strip"):
        export_footage(None, tmp_path / "x", scene=bpy.context.scene)
    gen = bpy.data.images.new("generated", 4, 4)
    with pytest.raises(FootageExportError):
        export_footage(gen, tmp_path / "x")
    with pytest.raises(FootageExportError, match="expected a Movie Clip"):
        export_footage(bpy.context.scene, tmp_path / "x")


def test_engine_reads_the_frame_folder(png_sequence, tmp_path):
    img = bpy.data.images.load(str(png_sequence))
    img.source = "SEQUENCE"
    export_footage(img, tmp_path / "out")
    code = r"""
import json, sys
from engine.io.sequence import list_frames, read_frame, frame_number
files = list_frames(sys.argv[1])
print(json.dumps({"numbers": [frame_number(p) for p in files], "first": read_frame(files[0])[0, 0].tolist()}))
"""
    r = json.loads(S.run_engine(code, tmp_path / "out"))
    assert r["numbers"] == list(FRAMES)
    assert r["first"] == pytest.approx([round(0.5 * 255) / 255, round(0.5 * 255) / 255, round(0.25 * 255) / 255], abs=1e-4)
