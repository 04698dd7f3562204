"""The gbuffers job (render folder → set) and forward's render-folder input: the same conversion, and the
same model inputs from a render folder as from the set converted from it."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import render_folder_helpers as rf
from engine.gbuffer import open_gbuffer_set
from engine.jobs.common import JobError
from engine.jobs.gbuffer_inputs import GBufferInputError, load_gbuffer_clips
from engine.jobs.gbuffers_job import GBuffersSettings, run_gbuffers

FIX = Path(__file__).parent / "fixtures" / "blender_exr"


def test_run_gbuffers_summary_progress_and_up_to_date(tmp_path):
    events = []
    s = run_gbuffers(FIX / "blender50", tmp_path / "set", GBuffersSettings(previews=False), listener=events.append)
    assert s["job"] == "gbuffers" and s["out"] == str(tmp_path / "set")
    (clip,) = s["clips"]
    assert clip["status"] == "done" and clip["frames"] == 2 and tuple(clip["resolution"]) == (16, 16)
    assert clip["passes"] == ["rgb", "basecolor", "normal", "depth", "roughness", "metallic", "alpha"]
    assert set(clip["seconds"]) >= {"read", "convert", "write", "total"} and clip["warnings"] == []
    assert [(e["stage"], e["step"], e["total"]) for e in events] == [("convert", 1, 2), ("convert", 2, 2)]
    gset = open_gbuffer_set(tmp_path / "set")
    assert gset.fps == 25 and gset.frame_numbers == [1, 2]
    again = run_gbuffers(FIX / "blender50", tmp_path / "set", GBuffersSettings(previews=False))
    assert again["clips"][0]["status"] == "up-to-date" and again["clips"][0]["frames"] == 2
    # asking for previews now is not up to date
    third = run_gbuffers(FIX / "blender50", tmp_path / "set", GBuffersSettings(previews=True))
    assert third["clips"][0]["status"] == "done" and (tmp_path / "set" / "previews").is_dir()


def test_run_gbuffers_batch_and_conflict(tmp_path):
    batch = tmp_path / "renders"
    for v in ("blender42", "blender50"):
        shutil.copytree(FIX / v, batch / v)
    s = run_gbuffers(batch, tmp_path / "sets", GBuffersSettings(previews=False))
    assert [Path(c["out"]).name for c in s["clips"]] == ["blender42", "blender50"]
    assert open_gbuffer_set(tmp_path / "sets" / "blender42").frame_numbers == [1, 2]
    # a set of another clip in the output folder is refused without overwrite
    with pytest.raises(JobError, match="already holds a gbuffer set of a different clip"):
        run_gbuffers(batch / "blender42", tmp_path / "sets" / "blender50", GBuffersSettings(previews=False))
    s = run_gbuffers(batch / "blender42", tmp_path / "sets" / "blender50", GBuffersSettings(overwrite=True,
                                                                                            previews=False))
    assert s["clips"][0]["status"] == "done"


def test_run_gbuffers_cancel_leaves_no_manifest(tmp_path):
    from engine.pipelines import Cancelled

    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 2          # before frame 1, after frame 1: go on; after frame 2: stop

    with pytest.raises(Cancelled):
        run_gbuffers(FIX / "blender42", tmp_path / "set", GBuffersSettings(previews=False), should_cancel=cancel)
    assert not (tmp_path / "set" / "manifest.json").exists()
    assert not list((tmp_path / "set").rglob("*.tmp*"))


@pytest.mark.parametrize("make,match", [
    (lambda p: p, "render folder not found"),
    (lambda p: (p.mkdir(), p)[1], r"no render.json here or in its sub-folders"),
    (lambda p: (shutil.copytree(FIX / "blender42", p), (p / "render.json").unlink(), p)[2],
     r"Blender EXRs without render.json; export them with the add-on's Neural Render"),
])
def test_run_gbuffers_input_errors(tmp_path, make, match):
    with pytest.raises(JobError, match=match):
        run_gbuffers(make(tmp_path / "in"), tmp_path / "out", GBuffersSettings())


def _same_inputs(a, b):
    assert a.frame_numbers == b.frame_numbers and a.fps == b.fps and a.cameras == b.cameras
    assert a.camera_entries == b.camera_entries
    assert sorted(a.inputs) == sorted(b.inputs) == ["basecolor", "depth", "metallic", "normal", "roughness"]
    for k in a.inputs:
        assert a.inputs[k].dtype == b.inputs[k].dtype == np.float32
        np.testing.assert_array_equal(a.inputs[k], b.inputs[k], err_msg=k)   # bit-identical


@pytest.mark.parametrize("version", ["blender42", "blender50"])
def test_forward_inputs_identical_from_render_folder_and_converted_set(tmp_path, version):
    run_gbuffers(FIX / version, tmp_path / "set", GBuffersSettings(previews=False))
    (raw,) = load_gbuffer_clips(FIX / version)
    (conv,) = load_gbuffer_clips(tmp_path / "set")
    assert raw.layout == "blender-render" and conv.layout == "gbuffer-set"
    assert raw.fps == 25.0 and raw.frame_numbers == [1, 2] and raw.size == (16, 16)
    _same_inputs(raw, conv)
    exp = json.loads((FIX / version / "expected.json").read_text())["materials"]["floor"]
    floor = np.all(np.abs(raw.inputs["roughness"] - exp["roughness"]) < 2e-3, -1)
    assert floor.sum() > 50
    np.testing.assert_allclose(raw.inputs["normal"][floor], np.broadcast_to([0.5, 0.5, 1.0], (floor.sum(), 3)),
                               atol=2e-3)
    d = raw.inputs["depth"][..., 0]
    assert d.min() == 0 and d.max() == 1 and np.array_equal(raw.inputs["depth"][..., 0], raw.inputs["depth"][..., 2])


def test_forward_inputs_identical_on_values_that_half_precision_rounds(tmp_path):
    """NaN, a value beyond the half range, AOV default fill, EEVEE background: still the same inputs."""
    folder = rf.make_folder(tmp_path / "shot")
    run_gbuffers(folder, tmp_path / "set", GBuffersSettings(previews=False))
    (raw,) = load_gbuffer_clips(folder)
    (conv,) = load_gbuffer_clips(tmp_path / "set")
    _same_inputs(raw, conv)
    assert raw.fps == rf.FPS and raw.frame_numbers == rf.FRAMES
    assert any("normal frame 3" in w for w in raw.warnings)


def test_forward_refuses_bare_blender_exrs(tmp_path):
    folder = tmp_path / "bare"
    shutil.copytree(FIX / "blender50", folder)
    (folder / "render.json").unlink()
    with pytest.raises(GBufferInputError, match=r"Blender EXRs without render.json \(the cameras, frame rate and "
                                                 r"AOV names the conversion needs\); export them with the add-on"):
        load_gbuffer_clips(folder)
    with pytest.raises(GBufferInputError, match="frame_000004.exr: no Normal pass"):
        rf.make_folder(tmp_path / "s")
        rf.write_frame(tmp_path / "s" / "frame_000004.exr", rf.frame_data(4), "5x", drop=("normal",))
        load_gbuffer_clips(tmp_path / "s")
