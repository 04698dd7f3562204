"""engine.io.sequence: frame decoding (8/16-bit, alpha, grey, EXR), listing, clips, selection, batches."""
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from engine.io import (
    find_clips,
    frame_number,
    list_frames,
    open_clip,
    read_frame,
    select_frames,
)
from engine.io.exr import write_exr, write_exr_rgb


# --------------------------------------------------------------------------- independent 16-bit encoders
def write_png16(path, arr):
    """Minimal 16-bit PNG encoder (filter 0), independent of Pillow and ffmpeg."""
    arr = np.asarray(arr, dtype=np.uint16)
    if arr.ndim == 2:
        arr = arr[..., None]
    h, w, c = arr.shape
    ctype = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def write_tiff16(path, arr):
    """Minimal uncompressed little-endian 16-bit RGB TIFF (one strip)."""
    arr = np.asarray(arr, dtype="<u2")
    h, w, c = arr.shape
    data = arr.tobytes()
    n_entries = 10
    ifd_off = 8
    extra_off = ifd_off + 2 + n_entries * 12 + 4
    bits_off, data_off = extra_off, extra_off + 2 * c
    entries = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, c, bits_off), (259, 3, 1, 1), (262, 3, 1, 2),
               (273, 4, 1, data_off), (277, 3, 1, c), (278, 4, 1, h), (279, 4, 1, len(data)), (284, 3, 1, 1)]
    out = b"II*\x00" + struct.pack("<I", ifd_off) + struct.pack("<H", n_entries)
    for tag, typ, count, value in entries:
        out += struct.pack("<HHI", tag, typ, count) + (struct.pack("<HH", value, 0) if typ == 3 and count == 1
                                                       else struct.pack("<I", value))
    out += struct.pack("<I", 0) + struct.pack("<" + "H" * c, *([16] * c)) + data
    path.write_bytes(out)


def ramp16(h=8, w=64, c=3):
    v = np.linspace(0, 65535, h * w * c).round().astype(np.uint16).reshape(h, w, c)
    v[0, 0] = [1, 2, 3, 4][:c]  # values a truncation to 8 bits would lose
    return v


# --------------------------------------------------------------------------- frames
def test_png16_rgb_keeps_16_bit_precision(tmp_path):
    ref = ramp16()
    write_png16(tmp_path / "r.png", ref)
    img = read_frame(tmp_path / "r.png")
    assert img.dtype == np.float32 and img.shape == (8, 64, 3)
    assert np.abs(img - ref / 65535.0).max() <= 1 / 65535 / 2 + 1e-7
    assert img[0, 0, 0] == pytest.approx(1 / 65535, abs=1e-9)  # 8-bit decoding would give 0


def test_png16_rgba_and_grey_alpha_over_black(tmp_path):
    ref = ramp16(c=4)
    write_png16(tmp_path / "a.png", ref)
    f = ref / 65535.0
    np.testing.assert_allclose(read_frame(tmp_path / "a.png"), f[..., :3] * f[..., 3:], atol=1e-6)
    write_png16(tmp_path / "la.png", ref[..., :2])  # 16-bit grey + alpha
    np.testing.assert_allclose(read_frame(tmp_path / "la.png"), np.repeat(f[..., :1] * f[..., 1:2], 3, -1), atol=1e-6)


def test_png16_grey_promoted(tmp_path):
    ref = ramp16(c=1)[..., 0]
    write_png16(tmp_path / "g.png", ref)
    img = read_frame(tmp_path / "g.png")
    assert img.shape == (8, 64, 3)
    np.testing.assert_allclose(img, np.repeat((ref / 65535.0)[..., None], 3, -1), atol=1e-7)


def test_tiff16_rgb_precision(tmp_path):
    ref = ramp16()
    write_tiff16(tmp_path / "r.tif", ref)
    img = read_frame(tmp_path / "r.tif")
    assert np.abs(img - ref / 65535.0).max() <= 1e-6


def test_8bit_png_rgba_grey_palette_and_jpeg(tmp_path):
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = 200, 100, 50
    rgba[..., 3] = np.arange(5) * 60
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = read_frame(tmp_path / "a.png")
    np.testing.assert_allclose(img, rgba[..., :3] / 255.0 * (rgba[..., 3:] / 255.0), atol=1e-6)
    assert (img[:, 0] == 0).all()  # fully transparent → black

    grey = (np.arange(20).reshape(4, 5) * 12).astype(np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    img = read_frame(tmp_path / "g.png")
    assert img.shape == (4, 5, 3) and (img[..., 0] == img[..., 2]).all()
    np.testing.assert_allclose(img[..., 1], grey / 255.0)

    Image.fromarray(grey, "L").convert("P").save(tmp_path / "p.png")
    np.testing.assert_allclose(read_frame(tmp_path / "p.png")[..., 0], grey / 255.0)

    flat = np.full((16, 16, 3), (180, 90, 30), np.uint8)
    Image.fromarray(flat).save(tmp_path / "j.jpg", quality=95)
    np.testing.assert_allclose(read_frame(tmp_path / "j.jpg"), flat / 255.0, atol=4 / 255)
    Image.fromarray(flat).save(tmp_path / "t8.tiff")
    np.testing.assert_allclose(read_frame(tmp_path / "t8.tiff"), flat / 255.0)


def test_exr_frames_linear_unclipped_and_y(tmp_path):
    hdr = np.full((4, 6, 3), 7.5, np.float32)
    hdr[0, 0] = [-0.25, 0.0, 100.0]
    write_exr_rgb(tmp_path / "h.exr", hdr, dtype="float")
    img, meta = read_frame(tmp_path / "h.exr", info=True)
    assert meta == {"is_linear": True, "nonfinite": 0}
    np.testing.assert_array_equal(img, hdr)  # not clipped
    write_exr_rgb(tmp_path / "y.exr", hdr[..., 2])
    assert read_frame(tmp_path / "y.exr")[0, 0].tolist() == [100.0, 100.0, 100.0]
    write_exr(tmp_path / "n.exr", {"depth.V": hdr[..., 0]})
    with pytest.raises(ValueError, match=r"n.exr: EXR has no R,G,B or Y channels.*layers: depth"):
        read_frame(tmp_path / "n.exr")


def test_exr_nonfinite_replaced_warned_and_counted(tmp_path):
    a = np.ones((4, 4, 3), np.float32)
    a[0, 0, 0], a[1, 1, 1], a[2, 2, 2], a[3, 3, 0] = np.nan, np.inf, -np.inf, 5.0
    a[3, 2, 1] = -2.0
    (tmp_path / "seq").mkdir()
    write_exr_rgb(tmp_path / "seq" / "f_0001.exr", a, dtype="float")
    write_exr_rgb(tmp_path / "seq" / "f_0002.exr", np.ones((4, 4, 3)), dtype="float")
    with pytest.warns(RuntimeWarning, match=r"f_0001.exr: replaced 3 non-finite"):
        img, meta = read_frame(tmp_path / "seq" / "f_0001.exr", info=True)
    assert meta["nonfinite"] == 3 and np.isfinite(img).all()
    assert img[0, 0, 0] == 0.0 and img[1, 1, 1] == 5.0 and img[2, 2, 2] == -2.0  # NaN→0, ±Inf→max/min finite
    clip = open_clip(tmp_path / "seq")
    assert clip.is_linear and clip.nonfinite_count == 0
    with pytest.warns(RuntimeWarning):
        clip.read_range(0, 2)
    assert clip.nonfinite_count == 3 and clip.nonfinite_frames == {1: 3}


def test_read_frame_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png: no such image file"):
        read_frame(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="bad.png: cannot read this image"):
        read_frame(tmp_path / "bad.png")
    (tmp_path / "x.gif").write_bytes(b"GIF89a")
    with pytest.raises(ValueError, match="x.gif: not a frame file"):
        read_frame(tmp_path / "x.gif")


# --------------------------------------------------------------------------- listing and clips
def _seq(folder, n, start=1, name="frame_{}.png", size=(6, 4)):
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(start, start + n):
        img = np.full((size[1], size[0], 3), k, np.uint8)
        Image.fromarray(img).save(folder / name.format(k))
    return folder


def test_natural_sort_and_frame_numbers(tmp_path):
    _seq(tmp_path / "s", 12, start=1, name="frame_{}.png")  # frame_9 < frame_10 (not lexicographic)
    names = [p.name for p in list_frames(tmp_path / "s")]
    assert names[8:11] == ["frame_9.png", "frame_10.png", "frame_11.png"]
    assert frame_number("shot_0012.png") == 12 and frame_number("0012.basecolor.png") == 12
    assert frame_number("v2_shot_0007.exr") == 7 and frame_number("still.png") is None
    (tmp_path / "s" / ".hidden_3.png").write_bytes(b"")
    (tmp_path / "s" / "notes.txt").write_text("x")
    assert len(list_frames(tmp_path / "s")) == 12


def test_listing_errors(tmp_path):
    _seq(tmp_path / "two", 2, name="a_{:04d}.png")
    _seq(tmp_path / "two", 2, name="b_{:04d}.png")
    with pytest.raises(ValueError, match=r"several image sequences \(a_#.png \(2 files\), b_#.png \(2 files\)\)"):
        list_frames(tmp_path / "two")
    _seq(tmp_path / "dup", 1, start=9, name="f_{}.png")
    _seq(tmp_path / "dup", 1, start=9, name="f_{:03d}.png")
    with pytest.raises(ValueError, match=r"frame numbers appear twice \(\[9\]\)"):
        list_frames(tmp_path / "dup")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        list_frames(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no frames"):
        open_clip(tmp_path / "empty")
    _seq(tmp_path / "batch" / "a", 1)
    with pytest.raises(ValueError, match=r"batch: no frames .* it holds clips .* find_clips"):
        open_clip(tmp_path / "batch")


def test_sequence_clip_lazy_read_and_metadata(tmp_path):
    _seq(tmp_path / "s", 30, start=101, name="shot_{:04d}.png")
    (tmp_path / "s" / "shot_0120.png").write_bytes(b"corrupt")  # only noticed when read: the clip is lazy
    with open_clip(tmp_path / "s") as clip:
        assert len(clip) == 30 and clip.frame_numbers[0] == 101 and clip.frame_numbers[-1] == 130
        assert clip.size == (6, 4) and clip.fps == 24.0 and not clip.is_linear
        assert "shot_0101.png" in clip.source and "30 of 30 frames" in clip.source
        assert clip.read(0)[0, 0, 0] == pytest.approx(101 / 255)
        assert clip.read(-1)[0, 0, 0] == pytest.approx(130 / 255)
        block = clip.read_range(2, 6)
        assert block.shape == (4, 4, 6, 3) and block[:, 0, 0, 0].tolist() == pytest.approx(
            [k / 255 for k in (103, 104, 105, 106)])
        with pytest.raises(ValueError, match="shot_0120.png: cannot read"):
            clip.read(19)
        with pytest.raises(IndexError, match="out of range"):
            clip.read(30)
        with pytest.raises(IndexError, match=r"not within the clip's 30 frames"):
            clip.read_range(25, 31)


def test_sequence_frame_range_and_fps(tmp_path):
    _seq(tmp_path / "s", 48, start=1, name="f_{:04d}.png")
    clip = open_clip(tmp_path / "s", frame_range=(10, 20))
    assert clip.frame_numbers == list(range(10, 21)) and clip.read(0)[0, 0, 0] == pytest.approx(10 / 255)
    chunks = list(clip.chunks(4))
    assert [a for a, _ in chunks] == [0, 4, 8] and [c.shape[0] for _, c in chunks] == [4, 4, 3]
    assert np.concatenate([c for _, c in chunks])[:, 0, 0, 0] * 255 == pytest.approx(range(10, 21))
    assert len(list(iter(clip))) == 11
    half = open_clip(tmp_path / "s", fps=12, source_fps=24)  # 24 → 12 fps: every other frame
    assert half.fps == 12 and half.frame_numbers == list(range(1, 49, 2))
    labelled = open_clip(tmp_path / "s", fps=12)  # a sequence has no rate: fps alone only labels it
    assert labelled.fps == 12 and labelled.frame_numbers == list(range(1, 49))
    sub = open_clip(tmp_path / "s", frame_range=(5, 14), fps=8, source_fps=24)
    assert sub.frame_numbers == [5, 8, 11, 14]
    assert open_clip(tmp_path / "s", fps=30, source_fps=30).frame_numbers == list(range(1, 49))
    with pytest.raises(ValueError, match=r"frame range \(40, 60\) is outside the clip, which has 48 frames \(1..48\)"):
        open_clip(tmp_path / "s", frame_range=(40, 60))
    with pytest.raises(ValueError, match=r"frame range \(0, 5\) is outside"):
        open_clip(tmp_path / "s", frame_range=(0, 5))


def test_sequence_size_mismatch_and_single_image(tmp_path):
    _seq(tmp_path / "s", 2, name="f_{}.png")
    _seq(tmp_path / "s", 1, start=3, name="f_{}.png", size=(8, 4))
    clip = open_clip(tmp_path / "s")
    clip.read(0)
    with pytest.raises(ValueError, match=r"f_3.png: frame is 8x4, the clip's first frame f_1.png is 6x4"):
        clip.read(2)
    one = open_clip(tmp_path / "s" / "f_3.png")
    assert len(one) == 1 and one.size == (8, 4) and one.frame_numbers == [3]


def test_select_frames_rule():
    assert select_frames(10, source_fps=24) == list(range(10))
    assert select_frames(10, source_fps=30, fps=10) == [0, 3, 6, 9]
    assert select_frames(5, source_fps=10, fps=20) == [0, 1, 1, 2, 2, 3, 3, 4, 4]  # repeats when faster
    assert select_frames(100, source_fps=29.97, fps=24)[:6] == [0, 1, 2, 4, 5, 6]
    assert select_frames(10, source_fps=24, frame_range=(3, 5)) == [3, 4, 5]
    assert select_frames(10, source_fps=24, frame_range=(1003, 1005), first_number=1000) == [3, 4, 5]
    with pytest.raises(ValueError, match=r"clip: frame range \(5, 12\) is outside the clip, which has 10 frames"):
        select_frames(10, source_fps=24, frame_range=(5, 12))
    with pytest.raises(ValueError, match="outside"):
        select_frames(10, source_fps=24, frame_range=(6, 5))
    with pytest.raises(ValueError, match="has no frames"):
        select_frames(0, source_fps=24)
    with pytest.raises(ValueError, match="fps must be positive"):
        select_frames(10, source_fps=24, fps=-1)


def test_find_clips(tmp_path):
    _seq(tmp_path / "single", 3)
    assert find_clips(tmp_path / "single") == [tmp_path / "single"]
    assert find_clips(tmp_path / "single" / "frame_1.png") == [tmp_path / "single" / "frame_1.png"]
    batch = tmp_path / "batch"
    _seq(batch / "shot10", 2)
    _seq(batch / "shot9", 2)
    (batch / "empty").mkdir()
    (batch / "take.mp4").write_bytes(b"")
    (batch / "readme.txt").write_text("x")
    assert [p.name for p in find_clips(batch)] == ["shot9", "shot10", "take.mp4"]
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ValueError, match="nothing: no clips found"):
        find_clips(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        find_clips(tmp_path / "missing")
    with pytest.raises(ValueError, match="neither a video"):
        find_clips(batch / "readme.txt")
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        open_clip(tmp_path / "missing")


def test_no_warnings_for_clean_frames(tmp_path):
    write_exr_rgb(tmp_path / "c.exr", np.ones((2, 2, 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_frame(tmp_path / "c.exr")


@pytest.mark.parametrize("oiio", [True, False], ids=["openimageio", "ffmpeg-fallback"])
def test_png16_sequence_streams_through_one_decoder(tmp_path, monkeypatch, oiio):
    """A clip of 16-bit PNGs keeps the 16-bit values and a pattern picks it out of a shared folder: read in
    process by OpenImageIO (no decoder process at all), or without it through ONE ffmpeg process for all its
    frames (none per frame), restarted only when read backwards."""
    import subprocess

    import engine.io.deep_frames as deep
    import engine.io.oiio_frames as oiio_frames

    if oiio and not oiio_frames.AVAILABLE:
        pytest.skip("openimageio is not installed")
    monkeypatch.setattr(oiio_frames, "AVAILABLE", oiio)

    frames = {}
    for f in (3, 4, 5, 6):
        v = ramp16()
        v[1, 1] = [f * 1000 + 1, 7, 9]
        frames[f] = v
        write_png16(tmp_path / f"deep_{f:04d}.png", v)
    write_png16(tmp_path / "other_0001.png", ramp16())
    started = []
    real_popen = subprocess.Popen

    def popen(cmd, *a, **kw):
        if "-i" in cmd:                               # a decoder (not imageio-ffmpeg's one-off '-version')
            started.append(cmd)
        return real_popen(cmd, *a, **kw)

    monkeypatch.setattr(deep.subprocess, "Popen", popen)
    monkeypatch.setattr(deep.subprocess, "run", lambda *a, **kw: pytest.fail("a decoder started per frame"))
    with open_clip(tmp_path / "deep_####.png") as clip:
        assert clip.frame_numbers == [3, 4, 5, 6] and clip.size == (64, 8)
        got = [clip.read(i) for i in range(4)]
        assert len(started) == (0 if oiio else 1)
        for f, img in zip((3, 4, 5, 6), got):
            np.testing.assert_array_equal(np.round(img * 65535).astype(np.uint16), frames[f])
        np.testing.assert_array_equal(np.round(clip.read(1) * 65535).astype(np.uint16), frames[4])
        assert len(started) == (0 if oiio else 2)     # backwards: one restart, at that frame
    with open_clip(tmp_path / "deep_####.png", first_number=101, frame_range=(102, 103)) as clip:
        assert clip.frame_numbers == [102, 103]       # renumbered from the first file, then ranged


def test_pattern_errors_name_the_pattern(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"shot_####\.png: no files match"):
        open_clip(tmp_path / "shot_####.png")
    with pytest.raises(FileNotFoundError, match="no files match"):
        find_clips(tmp_path / "shot_####.png")
    Image.new("RGB", (4, 2)).save(tmp_path / "shot_0007.png")
    assert find_clips(tmp_path / "shot_####.png") == [tmp_path / "shot_####.png"]


# --------------------------------------------------------------------------- DPX and the no-OpenImageIO path
def write_dpx10(path, codes, transfer="Printing density"):
    """A 10-bit DPX written by OpenImageIO from integer code values (0..1023), (H, W, 3)."""
    oiio = pytest.importorskip("OpenImageIO")
    codes = np.asarray(codes, dtype=np.uint16)
    h, w, c = codes.shape
    spec = oiio.ImageSpec(w, h, c, "uint16")
    spec.attribute("oiio:BitsPerSample", 10)
    if transfer:
        spec.attribute("dpx:Transfer", transfer)
    out = oiio.ImageOutput.create(str(path))
    assert out.open(str(path), spec), oiio.geterror()
    assert out.write_image((codes << 6) | (codes >> 4))      # 10 → 16 bits by bit replication
    out.close()


def test_dpx_10bit_codes_read_by_value(tmp_path):
    codes = np.array([[[0, 95, 1023], [445, 685, 512]]], np.uint16)
    write_dpx10(tmp_path / "plate.0101.dpx", codes)
    img, meta = read_frame(tmp_path / "plate.0101.dpx", info=True)
    assert img.dtype == np.float32 and img.shape == (1, 2, 3) and meta["is_linear"] is False
    np.testing.assert_allclose(img * 1023, codes, atol=0.01)           # code c → c / 1023, 10 bits kept
    write_dpx10(tmp_path / "plate.0102.dpx", codes[:, ::-1])
    with open_clip(tmp_path) as clip:
        assert clip.frame_numbers == [101, 102] and clip.size == (2, 1) and not clip.is_linear
        assert clip.transfer == "Printing density" and "DPX transfer Printing density" in clip.source
        np.testing.assert_allclose(clip.read(1) * 1023, codes[:, ::-1], atol=0.01)


def test_without_openimageio_tiff_png16_fall_back_and_dpx_is_refused(tmp_path, monkeypatch):
    import engine.io.oiio_frames as oiio_frames

    monkeypatch.setattr(oiio_frames, "AVAILABLE", False)
    ref = ramp16(c=4)
    write_png16(tmp_path / "a.png", ref)
    f = ref / 65535.0
    np.testing.assert_allclose(read_frame(tmp_path / "a.png"), f[..., :3] * f[..., 3:], atol=1e-6)
    write_tiff16(tmp_path / "r.tif", ramp16())
    assert np.abs(read_frame(tmp_path / "r.tif") - ramp16() / 65535.0).max() <= 1 / 65535 / 2 + 1e-7
    (tmp_path / "p.dpx").write_bytes(b"SDPX" + bytes(2044))
    with pytest.raises(ValueError, match=r"p\.dpx: reading \.dpx files needs OpenImageIO.*pip install openimageio"):
        read_frame(tmp_path / "p.dpx")


def test_unreadable_dpx_is_one_line(tmp_path):
    pytest.importorskip("OpenImageIO")
    (tmp_path / "bad.dpx").write_bytes(b"not a dpx at all")
    with pytest.raises(ValueError, match=r"bad\.dpx: cannot read this image") as info:
        read_frame(tmp_path / "bad.dpx")
    assert "\n" not in str(info.value)
