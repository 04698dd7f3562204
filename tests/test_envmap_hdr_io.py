"""Self-contained tests of the Radiance .hdr reader/writer and the .exr loader (engine.envmap.hdr_io)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.envmap import EnvmapLoadError, load_envmap, read_hdr, write_hdr
from engine.envmap.hdr_io import float_to_rgbe, rgbe_to_float


def _synthetic(h=16, w=24, seed=0):
    rng = np.random.default_rng(seed)
    img = np.exp(rng.normal(0.0, 3.0, size=(h, w, 3))).astype(np.float32)
    img[0, :4] = 0.0  # black pixels
    img[1, :] = [1.5, 0.25, 7.0]  # a constant row (long RLE runs)
    img[2, 3] = [2.0e4, 1.0, 1e-3]  # large dynamic range inside one pixel
    return img


def _quantised(img):
    return rgbe_to_float(float_to_rgbe(img))


def test_rgbe_decode_matches_opencv_formula():
    rgbe = np.array([[163, 80, 2, 128 + 6], [255, 0, 1, 1], [10, 20, 30, 0], [128, 64, 32, 255]], np.uint8)
    out = rgbe_to_float(rgbe)
    # mantissa * 2^(e - 136), no +0.5 offset, zero exponent -> 0
    np.testing.assert_array_equal(out[0], np.array([163, 80, 2]) * 2.0 ** (134 - 136))
    np.testing.assert_array_equal(out[1], np.array([255, 0, 1]) * 2.0 ** (1 - 136))
    np.testing.assert_array_equal(out[2], [0, 0, 0])
    np.testing.assert_array_equal(out[3], np.array([128, 64, 32], np.float64) * 2.0 ** 119)
    assert out.dtype == np.float32


def test_rgbe_encode_quantisation_error_and_special_values():
    img = _synthetic()
    q = _quantised(img)
    peak = img.max(-1, keepdims=True)
    assert np.all(np.abs(q - img) <= peak * 2.0 ** -7 + 1e-30)  # < 1/128 of the pixel's max channel
    assert np.all(q <= img)  # Ward's encoder truncates
    special = np.array([[np.nan, -1.0, 2.0], [np.inf, 0.0, 0.0], [1e-40, 1e-40, 1e-40]], np.float32)
    enc = float_to_rgbe(special)
    dec = rgbe_to_float(enc)
    assert dec[0, 0] == 0 and dec[0, 1] == 0 and dec[0, 2] == 2.0
    assert dec[1, 0] > 1e38 and np.isfinite(dec[1, 0])
    assert np.all(dec[2] == 0)
    assert np.all(float_to_rgbe(_quantised(img)) == float_to_rgbe(img))  # encode(decode(x)) is stable


@pytest.mark.parametrize("rle", [True, False])
@pytest.mark.parametrize("shape", [(16, 24), (5, 7), (3, 300)])
def test_write_read_roundtrip(tmp_path, rle, shape):
    img = _synthetic(*shape)
    path = tmp_path / "x.hdr"
    write_hdr(path, img, rle=rle)
    back = read_hdr(path)
    assert back.shape == img.shape and back.dtype == np.float32
    np.testing.assert_array_equal(back, _quantised(img))
    # no temporary left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.hdr"]
    data = path.read_bytes()
    assert data.startswith(b"#?RADIANCE\n") and f"-Y {shape[0]} +X {shape[1]}\n".encode() in data
    body = data[data.index(f"+X {shape[1]}\n".encode()) + len(f"+X {shape[1]}\n") :]
    if rle and 8 <= shape[1]:
        assert body[:4] == bytes((2, 2, shape[1] >> 8, shape[1] & 255))  # new-style RLE scanline
    else:
        assert len(body) == shape[0] * shape[1] * 4  # flat


def test_rle_compresses_constant_runs(tmp_path):
    img = np.full((32, 300, 3), 0.75, np.float32)
    img[:, 100:] = [3.0, 2.0, 1.0]
    write_hdr(tmp_path / "c.hdr", img)
    assert (tmp_path / "c.hdr").stat().st_size < 32 * 40 + 100
    np.testing.assert_array_equal(read_hdr(tmp_path / "c.hdr"), img)


def test_write_accepts_torch_grey_and_rgba(tmp_path):
    torch = pytest.importorskip("torch")
    img = _synthetic(8, 12)
    write_hdr(tmp_path / "t.hdr", torch.from_numpy(img))
    np.testing.assert_array_equal(read_hdr(tmp_path / "t.hdr"), _quantised(img))
    rgba = np.concatenate([img, np.ones_like(img[..., :1])], -1)
    write_hdr(tmp_path / "a.hdr", rgba)
    np.testing.assert_array_equal(read_hdr(tmp_path / "a.hdr"), _quantised(img))
    write_hdr(tmp_path / "g.hdr", img[..., 1])
    g = read_hdr(tmp_path / "g.hdr")
    np.testing.assert_array_equal(g[..., 0], g[..., 2])
    with pytest.raises(ValueError):
        write_hdr(tmp_path / "bad.hdr", np.zeros((4, 4, 2)))


def _raw_file(header_lines, res_line, pixel_bytes):
    return b"\n".join(header_lines) + b"\n\n" + res_line + b"\n" + pixel_bytes


@pytest.mark.parametrize(
    "res_fmt,transform",
    [
        ("-Y {h} +X {w}", lambda a: a),
        ("+Y {h} +X {w}", lambda a: a[::-1]),
        ("-Y {h} -X {w}", lambda a: a[:, ::-1]),
        ("+Y {h} -X {w}", lambda a: a[::-1, ::-1]),
        ("+X {w} -Y {h}", lambda a: a.transpose(1, 0, 2)),
        ("-X {w} +Y {h}", lambda a: a[::-1, ::-1].transpose(1, 0, 2)),
    ],
)
def test_orientations_and_tolerant_header(tmp_path, res_fmt, transform):
    img = _quantised(_synthetic(6, 10))
    stored = np.ascontiguousarray(transform(float_to_rgbe(img)))  # scanline order of that orientation
    hdr = [b"#?RGBE", b"# comment", b"GAMMA=1", b"EXPOSURE=2.5", b"PRIMARIES=0 0 0 0 0 0 0 0", b"FORMAT=32-bit_rle_rgbe"]
    path = tmp_path / "o.hdr"
    path.write_bytes(_raw_file(hdr, res_fmt.format(h=6, w=10).encode(), stored.tobytes()))
    np.testing.assert_array_equal(read_hdr(path), img)  # EXPOSURE is not applied (as OpenCV)


def test_crlf_header_missing_format_and_old_style_runs(tmp_path):
    img = _quantised(_synthetic(3, 6))
    rgbe = float_to_rgbe(img)
    row0 = rgbe[0].copy()
    row0[2:5] = row0[1]  # pixels 1..4 equal -> encode 2..4 as an old-style run marker
    img[0] = rgbe_to_float(row0)
    pix = row0[:2].tobytes() + bytes([1, 1, 1, 3]) + row0[5:].tobytes() + rgbe[1:].tobytes()
    data = b"#?RADIANCE\r\nSOFTWARE=test\r\n\r\n-Y 3 +X 6\r\n" + pix
    (tmp_path / "c.hdr").write_bytes(data)
    np.testing.assert_array_equal(read_hdr(tmp_path / "c.hdr"), img)


@pytest.mark.parametrize(
    "content,needle",
    [
        (b"\x89PNG\r\n\x1a\nrest", "missing '#?' signature"),
        (b"#?RADIANCE\nFORMAT=32-bit_rle_xyze\n\n-Y 2 +X 2\n" + bytes(16), "FORMAT"),
        (b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 2 Q 2\n" + bytes(16), "resolution"),
        (b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 4 +X 4\n" + bytes(20), "truncated"),
        (b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n", "truncated Radiance header"),
    ],
)
def test_bad_files_raise_value_error_naming_the_file(tmp_path, content, needle):
    path = tmp_path / "bad.hdr"
    path.write_bytes(content)
    with pytest.raises(ValueError) as ei:
        load_envmap(path)
    assert str(path) in str(ei.value) and needle in str(ei.value)


def test_corrupt_rle_raises(tmp_path):
    img = _synthetic(4, 16)
    write_hdr(tmp_path / "r.hdr", img)
    data = (tmp_path / "r.hdr").read_bytes()
    (tmp_path / "r.hdr").write_bytes(data[: len(data) - 40])
    with pytest.raises(EnvmapLoadError, match="r.hdr"):
        read_hdr(tmp_path / "r.hdr")


def test_load_envmap_dispatch_errors(tmp_path):
    with pytest.raises(ValueError, match="unsupported environment-map type"):
        load_envmap(tmp_path / "x.png")
    with pytest.raises(ValueError, match="missing.hdr"):
        load_envmap(tmp_path / "missing.hdr")
    with pytest.raises(ValueError, match="missing.exr"):
        load_envmap(tmp_path / "missing.exr")
    (tmp_path / "junk.exr").write_bytes(b"not an exr")
    with pytest.raises(ValueError, match="junk.exr"):
        load_envmap(tmp_path / "junk.exr")


@pytest.mark.parametrize("layout", ["RGB_half", "RGBA_float", "separate_float", "layered", "Y_only"])
def test_exr_loading(tmp_path, layout):
    OpenEXR = pytest.importorskip("OpenEXR")
    img = _synthetic(6, 9)
    hdr = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    if layout == "RGB_half":
        chans, expect = {"RGB": img.astype(np.float16)}, img.astype(np.float16).astype(np.float32)
    elif layout == "RGBA_float":
        rgba = np.concatenate([img, np.full_like(img[..., :1], 0.5)], -1)
        chans, expect = {"RGBA": rgba}, img
    elif layout == "separate_float":
        chans, expect = {c: np.ascontiguousarray(img[..., i]) for i, c in enumerate("RGB")}, img
    elif layout == "layered":
        chans = {f"ViewLayer.Combined.{c}": np.ascontiguousarray(img[..., i]) for i, c in enumerate("RGB")}
        chans["ViewLayer.Combined.A"] = np.ones(img.shape[:2], np.float32)
        chans["ViewLayer.Depth.Z"] = np.zeros(img.shape[:2], np.float32)
        expect = img
    else:
        chans, expect = {"Y": np.ascontiguousarray(img[..., 1])}, np.repeat(img[..., 1:2], 3, -1)
    path = tmp_path / f"{layout}.exr"
    OpenEXR.File(hdr, chans).write(str(path))
    out = load_envmap(path)
    assert out.dtype == np.float32 and out.shape == (6, 9, 3)
    np.testing.assert_array_equal(out, expect)
