"""engine.io.exr: round trips, multi-part reading, header, atomic writes, error messages."""
import os

import numpy as np
import OpenEXR
import pytest

from engine.io.exr import ExrError, read_exr, read_exr_header, write_exr, write_exr_rgb


def _ramp(h=5, w=7, scale=1.0):
    return (np.arange(h * w, dtype=np.float32).reshape(h, w) / (h * w) * scale).astype(np.float32)


def test_round_trip_half_and_float(tmp_path):
    rng = np.random.default_rng(0)
    chans = {"R": rng.uniform(0, 4, (6, 9)).astype(np.float32), "G": rng.uniform(-1, 1, (6, 9)).astype(np.float32),
             "depth.V": rng.uniform(0, 1000, (6, 9)).astype(np.float32)}
    write_exr(tmp_path / "f.exr", chans, dtype="float")
    back = read_exr(tmp_path / "f.exr")
    assert set(back) == set(chans)
    for k in chans:
        assert back[k].dtype == np.float32 and back[k].shape == (6, 9)
        np.testing.assert_array_equal(back[k], chans[k])  # float: exact

    write_exr(tmp_path / "h.exr", chans, dtype="half")
    back = read_exr(tmp_path / "h.exr")
    for k in chans:  # half: exact to half precision (what float16 rounding gives)
        np.testing.assert_array_equal(back[k], chans[k].astype(np.float16).astype(np.float32))
        np.testing.assert_allclose(back[k], chans[k], rtol=2 ** -11, atol=2 ** -24)
    assert read_exr_header(tmp_path / "h.exr")["channels"] == {"R": "half", "G": "half", "depth.V": "half"}
    assert read_exr_header(tmp_path / "f.exr")["channels"]["depth.V"] == "float"


def test_half_clips_to_half_range_but_keeps_nan_inf(tmp_path):
    a = np.array([[1e10, -1e9, np.nan, np.inf, 1.0]], np.float32)
    write_exr(tmp_path / "h.exr", {"Z": a})
    z = read_exr(tmp_path / "h.exr")["Z"]
    assert z[0, 0] == 65504.0 and z[0, 1] == -65504.0 and np.isnan(z[0, 2]) and np.isposinf(z[0, 3]) and z[0, 4] == 1


@pytest.mark.parametrize("comp", ["none", "zip", "zips", "piz", "rle", "pxr24", "dwaa"])
def test_compressions(tmp_path, comp):
    write_exr(tmp_path / "c.exr", {"Y": _ramp()}, compression=comp)
    h = read_exr_header(tmp_path / "c.exr")
    assert h["parts"][0]["compression"] == ("no" if comp == "none" else comp)
    assert read_exr(tmp_path / "c.exr")["Y"].shape == (5, 7)


def test_attributes_and_header(tmp_path):
    write_exr(tmp_path / "a.exr", {"R": _ramp(), "G": _ramp(), "B": _ramp()},
              attributes={"engine": "diffusion-renderer", "frame": 12, "exposure": 1.5})
    h = read_exr_header(tmp_path / "a.exr")
    assert (h["width"], h["height"], h["multipart"]) == (7, 5, False)
    attrs = h["parts"][0]["attributes"]
    assert attrs["engine"] == "diffusion-renderer" and attrs["frame"] == 12 and attrs["exposure"] == 1.5
    with pytest.raises(ValueError, match="reserved"):
        write_exr(tmp_path / "b.exr", {"R": _ramp()}, attributes={"channels": 1})


def test_write_exr_rgb_names(tmp_path):
    img = np.stack([_ramp(), _ramp() * 2, _ramp() * 3, np.ones((5, 7), np.float32)], -1)
    write_exr_rgb(tmp_path / "rgb.exr", img[..., :3])
    assert sorted(read_exr(tmp_path / "rgb.exr")) == ["B", "G", "R"]
    write_exr_rgb(tmp_path / "rgba.exr", img, dtype="float")
    back = read_exr(tmp_path / "rgba.exr")
    np.testing.assert_array_equal(np.stack([back[c] for c in "RGBA"], -1), img)
    write_exr_rgb(tmp_path / "y.exr", _ramp())
    assert list(read_exr(tmp_path / "y.exr")) == ["Y"]
    write_exr_rgb(tmp_path / "v.exr", _ramp()[..., None], single="V", layer="roughness")
    assert list(read_exr(tmp_path / "v.exr")) == ["roughness.V"]
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        write_exr_rgb(tmp_path / "bad.exr", np.zeros((4, 4, 2)))


def test_multipart_read_prefixes_part_names(tmp_path):
    a, b = _ramp(), _ramp(scale=2)
    parts = [
        OpenEXR.Part({"name": "beauty", "type": OpenEXR.scanlineimage, "compression": OpenEXR.ZIP_COMPRESSION},
                     {"R": a, "G": a, "B": b}),
        OpenEXR.Part({"name": "ViewLayer.Depth", "type": OpenEXR.scanlineimage,
                      "compression": OpenEXR.ZIP_COMPRESSION}, {"ViewLayer.Depth.Z": b.astype(np.float16)}),
    ]
    with OpenEXR.File(parts) as f:
        f.write(str(tmp_path / "mp.exr"))
    chans = read_exr(tmp_path / "mp.exr")
    assert sorted(chans) == ["ViewLayer.Depth.Z", "beauty.B", "beauty.G", "beauty.R"]  # prefixed only if needed
    np.testing.assert_array_equal(chans["beauty.B"], b)
    np.testing.assert_array_equal(chans["ViewLayer.Depth.Z"], b.astype(np.float16).astype(np.float32))
    h = read_exr_header(tmp_path / "mp.exr")
    assert h["multipart"] and [p["name"] for p in h["parts"]] == ["beauty", "ViewLayer.Depth"]
    assert h["channels"] == {"beauty.B": "float", "beauty.G": "float", "beauty.R": "float",
                             "ViewLayer.Depth.Z": "half"}


def test_data_window_is_placed_in_display_window(tmp_path):
    sub = np.full((2, 3), 5.0, np.float32)
    header = {"type": OpenEXR.scanlineimage, "compression": OpenEXR.ZIP_COMPRESSION,
              "dataWindow": (np.array([2, 1], np.int32), np.array([4, 2], np.int32)),
              "displayWindow": (np.array([0, 0], np.int32), np.array([7, 4], np.int32))}
    with OpenEXR.File(header, {"Y": sub}) as f:
        f.write(str(tmp_path / "dw.exr"))
    y = read_exr(tmp_path / "dw.exr")["Y"]
    assert y.shape == (5, 8) and y.sum() == 30.0 and (y[1:3, 2:5] == 5.0).all()


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "out" / "frame.exr"
    write_exr(target, {"Y": _ramp()})
    before = target.read_bytes()

    def boom(self, *a, **k):
        with open(a[0], "wb") as fh:  # a half-written temporary file ...
            fh.write(b"v/1\x01partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(OpenEXR.File, "write", boom)
    with pytest.raises(ExrError, match="frame.exr: cannot write EXR"):
        write_exr(target, {"Y": _ramp(scale=9)})
    assert target.read_bytes() == before  # ... never replaces the final file
    assert os.listdir(target.parent) == ["frame.exr"]  # and is cleaned up


def test_write_errors(tmp_path):
    with pytest.raises(ValueError, match="no channels"):
        write_exr(tmp_path / "e.exr", {})
    with pytest.raises(ValueError, match="'G' has shape"):
        write_exr(tmp_path / "e.exr", {"R": np.zeros((4, 4)), "G": np.zeros((4, 5))})
    with pytest.raises(ValueError, match="unknown EXR compression 'lzw'"):
        write_exr(tmp_path / "e.exr", {"R": np.zeros((4, 4))}, compression="lzw")
    with pytest.raises(ValueError, match="dtype must be"):
        write_exr(tmp_path / "e.exr", {"R": np.zeros((4, 4))}, dtype="uint")
    assert not (tmp_path / "e.exr").exists()


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.exr: no such EXR file"):
        read_exr(tmp_path / "missing.exr")
    (tmp_path / "text.exr").write_text("not an exr at all")
    with pytest.raises(ExrError, match=r"text.exr: not an OpenEXR file"):
        read_exr(tmp_path / "text.exr")
    write_exr(tmp_path / "ok.exr", {"R": _ramp(64, 64), "G": _ramp(64, 64)}, compression="none")
    data = (tmp_path / "ok.exr").read_bytes()
    (tmp_path / "trunc.exr").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"trunc.exr: corrupt or unreadable OpenEXR file"):
        read_exr(tmp_path / "trunc.exr")
    with pytest.raises(ValueError, match="is a folder"):
        read_exr(tmp_path)
    assert issubclass(ExrError, ValueError)
