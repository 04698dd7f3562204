"""engine.gbuffer.gbuffer_set: the writer (atomic files, manifest last, conflicts) and the reader."""
import json

import numpy as np
import OpenEXR
import pytest

from engine.gbuffer import (
    GBufferSetWriter,
    IncompleteSetError,
    ManifestError,
    SetConflictError,
    make_provenance,
    open_gbuffer_set,
)
from engine.gbuffer import GBufferSetError
from engine.io.exr import read_exr, read_exr_header, write_exr

W, H = 24, 16
FRAMES = [1, 2, 3]


def base(source="/clips/shot.blend", **extra):
    return {"fps": 24, "depth": {"kind": "metric"}, "alpha": "alpha",
            "provenance": make_provenance("blender", source=source), **extra}


def frame_data(i):
    rng = np.random.default_rng(i)
    n = rng.normal(size=(H, W, 3)).astype(np.float32)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    depth = np.full((H, W), 2.0 + i, np.float32)
    depth[:, :3] = 1e10  # Cycles background
    alpha = np.ones((H, W), np.float32)
    alpha[:, :3] = 0
    return {"rgb": rng.random((H, W, 3)).astype(np.float32) * 4,  # linear, HDR
            "basecolor": rng.random((H, W, 3)).astype(np.float32),
            "normal": n, "depth": depth, "roughness": np.full((H, W, 1), 0.25, np.float32),
            "metallic": np.zeros((H, W), np.float32), "alpha": alpha}


def write_set(folder, frames=FRAMES, **kw):
    w = GBufferSetWriter(folder, base(**kw.pop("base_kw", {})), **kw)
    for f in frames:
        for name, arr in frame_data(f).items():
            w.write_frame(name, f, arr)
    return w.finish()


def test_layout_channels_and_manifest(tmp_path):
    gset = write_set(tmp_path / "set")
    root = tmp_path / "set"
    expected = {"rgb": ["B", "G", "R"], "basecolor": ["B", "G", "R"], "normal": ["X", "Y", "Z"], "depth": ["V"],
                "roughness": ["V"], "metallic": ["V"], "alpha": ["V"]}
    for name, chans in expected.items():
        for f in FRAMES:
            path = root / name / f"{name}.{f:04d}.exr"  # Blender image-sequence naming
            assert path.is_file()
            assert sorted(read_exr(path)) == chans
        header = read_exr_header(root / name / f"{name}.0001.exr")
        assert set(header["channels"].values()) == {"float" if name == "depth" else "half"}
    m = json.loads((root / "manifest.json").read_text())
    assert m["format"] == "diffusion-renderer/gbuffer-set" and m["version"] == 1 and m["kind"] == "gbuffer"
    assert m["frame_numbers"] == FRAMES and m["resolution"] == [W, H] and m["fps"] == 24
    assert m["passes"]["normal"] == {"path": "normal/normal.####.exr", "channels": ["X", "Y", "Z"],
                                     "encoding": "camera-normal", "dtype": "half"}
    # metric depth range recorded per clip: min and 98th percentile of covered pixels of ALL frames
    assert m["depth"]["near"] == pytest.approx(3.0) and m["depth"]["far"] == pytest.approx(5.0)
    assert m["depth"]["range_rule"] == "clip-min-p98"
    assert m["provenance"]["producer"] == "blender"
    assert gset.frame_numbers == FRAMES and gset.passes[0] == "rgb"
    assert sorted(p.name for p in root.iterdir()) == sorted(list(expected) + ["manifest.json"])


def test_reader_values(tmp_path):
    write_set(tmp_path / "set")
    gset = open_gbuffer_set(tmp_path / "set")
    ref = frame_data(2)
    np.testing.assert_allclose(gset.read("basecolor", 2), ref["basecolor"], atol=1e-3)
    np.testing.assert_allclose(gset.read("rgb", 2), ref["rgb"], rtol=1e-3)
    np.testing.assert_array_equal(gset.read("depth", 2)[..., 0], ref["depth"])  # float: exact
    assert gset.read("roughness", 2).shape == (H, W, 1)
    allnorm = gset.read_all("normal")
    assert allnorm.shape == (3, H, W, 3) and allnorm.dtype == np.float32
    assert gset.warnings == []
    assert open_gbuffer_set(tmp_path / "set" / "manifest.json").frame_numbers == FRAMES


def test_failure_mid_write_leaves_no_partial_file_and_no_manifest(tmp_path, monkeypatch):
    folder = tmp_path / "set"
    w = GBufferSetWriter(folder, base())
    w.write_frame("basecolor", 1, frame_data(1)["basecolor"])

    def crash(self, filename):  # write half a file, then die (disk full, kill, ...)
        with open(filename, "wb") as fh:
            fh.write(b"\x76\x2f\x31\x01partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(OpenEXR.File, "write", crash)
    with pytest.raises(Exception, match="disk full"):
        w.write_frame("basecolor", 2, frame_data(2)["basecolor"])
    monkeypatch.undo()
    assert not (folder / "basecolor" / "basecolor.0002.exr").exists()
    assert [p.name for p in (folder / "basecolor").iterdir()] == ["basecolor.0001.exr"]  # no temp left
    assert not (folder / "manifest.json").exists()
    with pytest.raises(IncompleteSetError, match="incomplete"):
        open_gbuffer_set(folder)


def test_exception_in_context_manager_writes_no_manifest_and_rerun_unpublishes_old(tmp_path):
    folder = tmp_path / "set"
    write_set(folder)
    assert (folder / "manifest.json").is_file()
    with pytest.raises(RuntimeError):
        with GBufferSetWriter(folder, base()) as w:  # same clip: allowed to rewrite
            w.write_frame("basecolor", 1, frame_data(1)["basecolor"])
            raise RuntimeError("cancelled")
    # the old manifest is gone as soon as rewriting starts: a half-rewritten set never looks complete
    assert not (folder / "manifest.json").exists()
    with GBufferSetWriter(folder, base()) as w:
        w.write_frame("basecolor", 1, frame_data(1)["basecolor"])
    assert open_gbuffer_set(folder).passes == ["basecolor"]


def test_conflicting_set_is_refused_unless_overwrite(tmp_path):
    folder = tmp_path / "set"
    write_set(folder)
    (folder / "notes.txt").write_text("mine")
    before = (folder / "manifest.json").read_bytes()
    with pytest.raises(SetConflictError, match="different clip.*overwrite"):
        GBufferSetWriter(folder, base(source="/clips/other.mp4"))
    relit = {"kind": "relit", "fps": 24, "provenance": make_provenance("forward-model", source="/clips/shot.blend")}
    with pytest.raises(SetConflictError):
        GBufferSetWriter(folder, relit)
    assert (folder / "manifest.json").read_bytes() == before  # untouched
    w = GBufferSetWriter(folder, relit, overwrite=True)
    w.write_frame("relit", 5, np.full((H, W, 3), 0.5, np.float32))
    gset = w.finish()
    assert gset.kind == "relit" and gset.frame_numbers == [5]
    assert (folder / "notes.txt").read_text() == "mine"  # files of others are never deleted
    assert (folder / "relit" / "relit.0005.exr").is_file()
    assert sorted(read_exr(folder / "relit" / "relit.0005.exr")) == ["B", "G", "R"]


def test_writer_errors(tmp_path):
    w = GBufferSetWriter(tmp_path / "a", base())
    with pytest.raises(GBufferSetError, match=r"pass 'normal' frame 1: expected \(H, W, 3\)"):
        w.write_frame("normal", 1, np.zeros((H, W), np.float32))
    w.write_frame("basecolor", 1, np.zeros((H, W, 3), np.float32))
    with pytest.raises(GBufferSetError, match=r"'roughness' frame 1 is 8×8 but 'basecolor' is 24×16"):
        w.write_frame("roughness", 1, np.zeros((8, 8), np.float32))
    w.write_frame("basecolor", 2, np.zeros((H, W, 3), np.float32))
    w.write_frame("roughness", 1, np.zeros((H, W), np.float32))
    with pytest.raises(GBufferSetError, match=r"pass 'roughness' lacks frame\(s\) \[2\]"):
        w.finish()
    assert not (tmp_path / "a" / "manifest.json").exists()
    with pytest.raises(GBufferSetError, match="positive 'fps'"):
        GBufferSetWriter(tmp_path / "e", {"provenance": {"producer": "x"}})
    with pytest.raises(GBufferSetError, match="'producer'"):
        GBufferSetWriter(tmp_path / "e", {"fps": 24})
    with pytest.raises(GBufferSetError, match="depth.kind"):
        GBufferSetWriter(tmp_path / "b", {"fps": 24, "provenance": {"producer": "x"}}).write_frame(
            "depth", 1, np.ones((H, W), np.float32))
    with pytest.raises(GBufferSetError, match="unknown pass"):
        GBufferSetWriter(tmp_path / "c", base()).write_frame("sheen", 1, np.ones((H, W), np.float32))
    w = GBufferSetWriter(tmp_path / "d", {"fps": 24, "provenance": {"producer": "x"}})
    w.write_frame("metallic", 1, np.array([[np.nan, 0.5]], np.float32))
    w.finish()
    assert w.warnings == ["metallic frame 1: 1 NaN/Inf value(s) written as 0"]


def test_reader_errors(tmp_path):
    with pytest.raises(IncompleteSetError, match="no such folder"):
        open_gbuffer_set(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IncompleteSetError, match="no manifest.json.*incomplete"):
        open_gbuffer_set(tmp_path / "empty")

    folder = tmp_path / "set"
    write_set(folder)
    (folder / "normal" / "normal.0002.exr").unlink()
    gset = open_gbuffer_set(folder)
    with pytest.raises(GBufferSetError, match=r"normal\.0002\.exr: missing file of pass 'normal', frame 2"):
        gset.read_all("normal")
    with pytest.raises(GBufferSetError, match="frame 9 is not in the set"):
        gset.read("basecolor", 9)
    with pytest.raises(GBufferSetError, match="no pass 'sheen'"):
        gset.read("sheen", 1)

    # a frame of another size: names the pass and both sizes
    write_exr(folder / "roughness" / "roughness.0003.exr", {"V": np.zeros((8, 12), np.float32)})
    with pytest.raises(GBufferSetError, match=r"roughness\.0003\.exr: pass 'roughness' frame 3 is 12×8 but "
                                              r"the set's resolution is 24×16"):
        gset.read("roughness", 3)

    # NaN/Inf: replaced (0; depth → background) and reported
    bad = np.full((H, W), 0.5, np.float32)
    bad[0, :4] = [np.nan, np.inf, -np.inf, np.nan]
    write_exr(folder / "metallic" / "metallic.0001.exr", {"V": bad})
    d = np.full((H, W), 3.0, np.float32)
    d[0, 0] = np.inf
    write_exr(folder / "depth" / "depth.0001.exr", {"V": d}, dtype="float")
    gset = open_gbuffer_set(folder)
    m = gset.read("metallic", 1)
    assert m[0, :5, 0].tolist() == [0, 0, 0, 0, 0.5]
    assert gset.read("depth", 1)[0, 0, 0] == 1e10
    assert len(gset.warnings) == 2 and "4 NaN/Inf value(s) replaced by 0" in gset.warnings[0]
    assert "metallic.0001.exr" in gset.warnings[0]

    # wrong channels: names the file, the wanted and the found channels
    write_exr(folder / "basecolor" / "basecolor.0001.exr", {"L": np.zeros((H, W), np.float32)})
    with pytest.raises(GBufferSetError, match=r"basecolor\.0001\.exr: pass 'basecolor' needs channel\(s\) "
                                              r"\['R', 'G', 'B'\].*\['L'\]"):
        gset.read("basecolor", 1)


def test_reader_tolerates_blender_style_channel_names(tmp_path):
    folder = tmp_path / "set"
    write_set(folder)
    # e.g. written by Blender's File Output node: RGB normals, a layer-prefixed depth
    write_exr(folder / "normal" / "normal.0001.exr", {c: np.full((H, W), v, np.float32)
                                                     for c, v in zip("RGB", (0.0, 0.0, 1.0))})
    write_exr(folder / "depth" / "depth.0001.exr", {"Depth.Z": np.full((H, W), 7.0, np.float32)}, dtype="float")
    gset = open_gbuffer_set(folder)
    assert gset.read("normal", 1)[0, 0].tolist() == [0, 0, 1]
    assert gset.read("depth", 1)[0, 0, 0] == 7.0


def test_corrupt_manifest_is_a_manifest_error(tmp_path):
    folder = tmp_path / "set"
    write_set(folder)
    m = json.loads((folder / "manifest.json").read_text())
    m["resolution"] = "big"
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ManifestError, match="field 'resolution'"):
        open_gbuffer_set(folder)
    with pytest.raises(SetConflictError, match="unreadable"):
        GBufferSetWriter(folder, base())


def test_inverse_model_outputs_to_set_and_back(tmp_path):
    """The CLI path: model outputs (sRGB-style [0, 1]) → physical set → model inputs again."""
    from engine.gbuffer import depth_manifest, from_model_outputs, to_model_inputs

    rng = np.random.default_rng(5)
    outputs = {p: rng.random((2, H, W, 3)).astype(np.float32) for p in ("basecolor", "normal", "depth", "roughness")}
    for p in ("depth", "roughness"):
        outputs[p] = outputs[p][..., :1].repeat(3, -1)  # grey, as the model (nearly) outputs them
    n = rng.normal(size=(2, H, W, 3))
    outputs["normal"] = (n / np.linalg.norm(n, axis=-1, keepdims=True) * 0.5 + 0.5).astype(np.float32)
    physical = from_model_outputs(outputs)
    prov = make_provenance("inverse-model", model="inverse", revision="abc123", settings={"steps": 20},
                           source="examples/clip")
    with GBufferSetWriter(tmp_path / "delit", {"fps": 7, "depth": depth_manifest(None), "provenance": prov}) as w:
        for p, frames in physical.items():
            w.write_frames(p, [1, 2], frames)
    gset = open_gbuffer_set(tmp_path / "delit")
    assert gset.manifest.depth == {"kind": "normalised", "near": 0.0, "far": 1.0, "invert": False}
    assert gset.manifest.passes["depth"]["encoding"] == "depth-normalised"
    back = to_model_inputs(gset.read_frames(), gset.manifest)
    for p in outputs:
        np.testing.assert_allclose(back[p], outputs[p], atol=2e-3, err_msg=p)  # half precision
