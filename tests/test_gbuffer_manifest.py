"""engine.contract.gbuffer_set (the manifest): schema, validation errors (field + file), versioning, forward compatibility."""
import copy
import json

import pytest

from engine.contract import gbuffer_set as mf
from engine.contract.gbuffer_set import Manifest, ManifestError, UnsupportedVersionError


def good():
    return {
        "format": "diffusion-renderer/gbuffer-set", "version": 1, "kind": "gbuffer",
        "frame_numbers": [1, 2, 3], "fps": 24, "resolution": [64, 32],
        "passes": {
            "basecolor": mf.default_pass_entry("basecolor"),
            "normal": mf.default_pass_entry("normal"),
            "depth": mf.default_pass_entry("depth", depth_kind="metric"),
            "roughness": mf.default_pass_entry("roughness"),
            "alpha": mf.default_pass_entry("alpha"),
        },
        "alpha": "alpha",
        "depth": {"kind": "metric", "near": 1.5, "far": 9.0, "invert": False},
        "camera": [{"frame": f, "matrix_world": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 5], [0, 0, 0, 1]],
                    "lens_mm": 50, "sensor_width_mm": 36, "sensor_fit": "AUTO", "clip_start": 0.1,
                    "clip_end": 100} for f in (1, 2, 3)],
        "provenance": {"producer": "blender", "source": "/tmp/shot.blend"},
    }


def test_default_entries_are_the_documented_contract():
    assert mf.default_pass_entry("basecolor") == {"path": "basecolor/basecolor.####.exr",
                                                   "channels": ["R", "G", "B"], "encoding": "linear-rec709",
                                                   "dtype": "half"}
    assert mf.default_pass_entry("normal")["channels"] == ["X", "Y", "Z"]
    assert mf.default_pass_entry("normal")["encoding"] == "camera-normal"
    assert mf.default_pass_entry("roughness")["channels"] == ["V"]
    assert mf.default_pass_entry("depth", depth_kind="normalised")["encoding"] == "depth-normalised"
    assert mf.default_pass_entry("depth", depth_kind="metric") == {
        "path": "depth/depth.####.exr", "channels": ["V"], "encoding": "depth-planar-metric", "dtype": "float"}
    with pytest.raises(mf.GBufferSetError, match="depth.kind"):
        mf.default_pass_entry("depth")


def test_frame_path_blender_hashes():
    assert mf.frame_path("basecolor/basecolor.####.exr", 1) == "basecolor/basecolor.0001.exr"
    assert mf.frame_path("basecolor/basecolor.####.exr", 12345) == "basecolor/basecolor.12345.exr"
    assert mf.frame_path("v2#/x.##.png", 7) == "v2#/x.07.png"  # the last run is the frame


def test_valid_manifest_round_trips_with_unknown_keys(tmp_path):
    data = good()
    data["future_top_level"] = {"anything": [1, 2]}
    data["passes"]["normal"]["future_pass_key"] = "kept"
    data["passes"]["motion"] = {"path": "motion/motion.####.exr", "channels": ["X", "Y"],
                                "encoding": "screen-motion", "dtype": "float"}  # unknown pass + encoding
    path = tmp_path / "manifest.json"
    Manifest(data).save(path)
    back = Manifest.load(path)
    assert back.to_dict() == data
    assert back.frame_numbers == [1, 2, 3] and back.resolution == (64, 32) and back.depth_range == (1.5, 9.0)
    assert back.pass_names[:4] == ["basecolor", "normal", "depth", "roughness"]
    assert back.pass_file("normal", 2) == "normal/normal.0002.exr"
    assert not list(tmp_path.glob(".*"))  # no temp file left


@pytest.mark.parametrize("mutate, field, words", [
    (lambda d: d.update(format="something/else"), "format", "not a G-buffer set"),
    (lambda d: d.pop("version"), "version", "missing"),
    (lambda d: d.update(kind="video"), "kind", "gbuffer"),
    (lambda d: d.update(frame_numbers=[1, 3, 2]), "frame_numbers[2]", "increasing"),
    (lambda d: d.update(frame_numbers=[]), "frame_numbers", "non-empty"),
    (lambda d: d.update(fps=0), "fps", "positive"),
    (lambda d: d.update(resolution=[64]), "resolution", "[width, height]"),
    (lambda d: d["passes"]["normal"].update(channels=["R", "G"]), "passes.normal.channels", "3 channel"),
    (lambda d: d["passes"]["basecolor"].update(encoding="srgb"), "passes.basecolor.encoding", "linear-rec709"),
    (lambda d: d["passes"]["basecolor"].update(path="/abs/basecolor.####.exr"), "passes.basecolor.path", "relative"),
    (lambda d: d["passes"]["basecolor"].update(path="../x/basecolor.####.exr"), "passes.basecolor.path", "inside"),
    (lambda d: d["passes"]["basecolor"].update(path="basecolor/basecolor.exr"), "passes.basecolor.path", "'#'"),
    (lambda d: d["passes"]["roughness"].update(dtype="uint8"), "passes.roughness.dtype", "half"),
    (lambda d: d.pop("depth"), "depth", "depth object"),
    (lambda d: d["depth"].update(kind="normalised"), "passes.depth.encoding", "depth-normalised"),
    (lambda d: d["depth"].update(far=1.0), "depth.far", "greater than near"),
    (lambda d: d["depth"].pop("far"), "depth.far", "together"),
    (lambda d: d.update(alpha="mask"), "alpha", "name one of the passes"),
    (lambda d: d["camera"].pop(), "camera", "one camera per frame"),
    (lambda d: d["camera"][1].update(matrix_world=[[1, 0, 0]]), "camera[1].matrix_world", "4×4"),
    (lambda d: d["camera"][2].update(frame=9), "camera[2].frame", "expected 3"),
    (lambda d: d["camera"][0].update(clip_end=0.05), "camera[0].clip_end", "clip_start"),
    (lambda d: d["camera"][0].update(sensor_fit="WIDE"), "camera[0].sensor_fit", "AUTO"),
    (lambda d: d.pop("provenance"), "provenance.producer", "blender"),
])
def test_validation_errors_name_field_and_file(tmp_path, mutate, field, words):
    data = copy.deepcopy(good())
    mutate(data)
    path = tmp_path / "set" / "manifest.json"
    path.parent.mkdir()
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError) as info:
        Manifest.load(path)
    msg = str(info.value)
    assert str(path) in msg and f"field '{field}'" in msg and words in msg, msg
    assert info.value.field == field


def test_versions(tmp_path):
    data = good()
    data["version"] = "1.4"  # minor versions of the same major are read
    Manifest(data)
    data["version"] = 2
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UnsupportedVersionError, match=r"format version 2.*update") as info:
        Manifest.load(path)
    assert str(path) in str(info.value)


def test_invalid_json_names_the_file(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON") as info:
        Manifest.load(path)
    assert str(path) in str(info.value)


def test_same_clip():
    a = good()
    b = copy.deepcopy(a)
    assert mf.same_clip(a, b)
    b["provenance"]["source"] = "/tmp/other.blend"
    assert not mf.same_clip(a, b)
    b = copy.deepcopy(a)
    b["kind"] = "relit"
    assert not mf.same_clip(a, b)
    b = copy.deepcopy(a)
    b["provenance"].pop("source")
    assert not mf.same_clip(a, b)  # unknown source: never assumed to be the same clip


def test_make_provenance():
    p = mf.make_provenance("inverse-model", model="inverse", revision="abc", settings={"steps": 20}, source="clip/")
    assert p["producer"] == "inverse-model" and p["model"] == {"name": "inverse", "revision": "abc"}
    assert p["settings"] == {"steps": 20} and p["source"] == "clip/" and p["created"].endswith("Z")
    from engine import __version__
    assert p["engine_version"] == __version__
