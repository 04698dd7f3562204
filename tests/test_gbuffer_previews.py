"""engine.gbuffer.previews: PNG previews (values, names, sizes) and the mp4 contact sheet."""
import numpy as np
import pytest
from PIL import Image

from engine.gbuffer import (
    GBufferSetWriter,
    make_provenance,
    open_gbuffer_set,
    write_contact_sheet,
    write_previews,
)
from engine.gbuffer.previews import write_pass_video

W, H = 25, 17  # odd on purpose: the contact sheet is padded to even sizes
FRAMES = [10, 11, 12, 13]


def make_set(folder, *, with_rgb=True):
    w = GBufferSetWriter(folder, {"fps": 12, "depth": {"kind": "metric"}, "alpha": "alpha",
                                  "provenance": make_provenance("blender", source="scene.blend")})
    for i, f in enumerate(FRAMES):
        if with_rgb:
            w.write_frame("rgb", f, np.full((H, W, 3), 0.2, np.float32))
        w.write_frame("basecolor", f, np.full((H, W, 3), 0.5, np.float32))
        n = np.zeros((H, W, 3), np.float32)
        n[..., 2] = 1
        w.write_frame("normal", f, n)
        d = np.full((H, W), 2.0 * (i + 1), np.float32)  # frame i at 2(i+1) m
        d[:, :4] = 1e10
        w.write_frame("depth", f, d)
        w.write_frame("roughness", f, np.full((H, W), 0.25, np.float32))
        a = np.ones((H, W), np.float32)
        a[:, :4] = 0
        w.write_frame("alpha", f, a)
    return w.finish()


def png(path):
    return np.asarray(Image.open(path))


def test_previews_names_sizes_and_values(tmp_path):
    gset = make_set(tmp_path / "set")
    out = write_previews(gset)
    assert set(out) == {"rgb", "basecolor", "normal", "depth", "roughness", "alpha"}
    root = tmp_path / "set" / "previews"
    for name in out:
        assert [p.name for p in out[name]] == [f"{name}.{f:04d}.png" for f in FRAMES]
        assert all(p.parent == root / name for p in out[name])
        assert png(out[name][0]).shape[:2] == (H, W)
    assert png(root / "basecolor" / "basecolor.0010.png")[5, 10].tolist() == [188, 188, 188]  # sRGB(0.5)=0.7354
    assert png(root / "normal" / "normal.0010.png")[5, 10].tolist() == [128, 128, 255]
    assert png(root / "roughness" / "roughness.0010.png")[5, 10].tolist() == [64, 64, 64]
    # depth: one range for the clip (near 2 m → black, far 8 m → white), background white
    d0, d3 = png(root / "depth" / "depth.0010.png"), png(root / "depth" / "depth.0013.png")
    assert d0[5, 10].tolist() == [0, 0, 0] and d3[5, 10].tolist() == [255, 255, 255]
    assert d0[5, 0].tolist() == [255, 255, 255]
    assert png(root / "depth" / "depth.0011.png")[5, 10, 0] == round(2 / 6 * 255)  # 4 m, not per-frame
    m = open_gbuffer_set(tmp_path / "set").manifest  # manifest updated and still valid
    assert m.data["previews"]["depth"] == "previews/depth/depth.####.png"


@pytest.mark.parametrize("with_rgb", [True, False])
def test_contact_sheet_dimensions(tmp_path, with_rgb):
    import imageio_ffmpeg

    gset = make_set(tmp_path / "set", with_rgb=with_rgb)
    path = write_contact_sheet(gset, tmp_path / "set" / "contact_sheet.mp4")
    tiles = 5 if with_rgb else 4  # [input |] basecolor, normal, depth, roughness (alpha left out)
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    frames = list(reader)
    w_expected = tiles * W + (tiles * W) % 2
    assert meta["size"] == (w_expected, H + 1)
    assert len(frames) == len(FRAMES)
    first = np.frombuffer(frames[0], np.uint8).reshape(H + 1, w_expected, 3)
    bc = first[H // 2, (1 if with_rgb else 0) * W + W // 2].astype(int)  # basecolor tile centre, 188 grey
    assert np.abs(bc - 188).max() <= 6
    assert open_gbuffer_set(tmp_path / "set").manifest.data["contact_sheet"] == "contact_sheet.mp4"


def test_relit_video(tmp_path):
    import imageio_ffmpeg

    w = GBufferSetWriter(tmp_path / "relit", {"kind": "relit", "fps": 8,
                                              "provenance": make_provenance("forward-model", source="set")})
    for f in (1, 2, 3):
        w.write_frame("relit", f, np.full((H, W, 3), 0.5, np.float32))
    gset = w.finish()
    path = write_pass_video(gset, "relit")
    assert path == tmp_path / "relit" / "relit.mp4"
    reader = imageio_ffmpeg.read_frames(str(path))
    assert next(reader)["size"] == (W + 1, H + 1)
    assert len(list(reader)) == 3
    assert open_gbuffer_set(tmp_path / "relit").manifest.data["videos"] == {"relit": "relit.mp4"}
