"""Validation before work (diffusion_renderer_addon/validate.py), in real bpy with the real engine: every
task checks the camera, the light, the settings, the output folder, the engine and the weights before the
first frame is exported, and says what to fix in Blender's UI (the field or button), never a CLI flag.
Also Neural Render's camera-aware light: the request carries camera_follow and the poses reach the engine."""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from test_addon_jobs import PKG, _client, _hdri, _idle, _status, bpy, pump  # noqa: F401 (skips without bpy/engine)


@pytest.fixture
def render_scene(addon, tiny_ckpts, tmp_path):
    """A 3-frame 64×64 demo scene set up for a tiny Neural Render; counts Blender renders."""
    demo = importlib.import_module(PKG + ".demo_scene")
    scene = demo.build_demo_scene(frames=3, resolution=(64, 64), name="DR Validate Demo")
    s = scene.diffusion_renderer
    s.forward_model, s.hdri_source = str(tiny_ckpts["forward"]), "FILE"
    s.hdri_path = _hdri(tmp_path / "hdri", "sky", (0.8, 0.9, 1.2))
    s.frames, s.overlap, s.steps, s.previews, s.lora_scale = 3, 0, 2, False, 0.0
    s.resolution_mode, s.res_x, s.res_y, s.output_dir = "CUSTOM", 64, 64, str(tmp_path / "jobs")
    st = _status()
    st.last_error = st.status = ""
    renders = []

    def count(*_args):
        renders.append(1)
    bpy.app.handlers.render_pre.append(count)
    yield s, renders
    bpy.app.handlers.render_pre.remove(count)


def _refused(op, match: str, renders, jobs: Path) -> str:
    """The operator refuses with one message matching ``match``; nothing was rendered or written."""
    with pytest.raises(RuntimeError, match=match) as info:
        op(wait=False)
    assert not renders, "a frame was rendered before the problem was reported"
    assert not jobs.exists() or not any(jobs.iterdir()), "a job folder was made before the problem was reported"
    st = _status()
    assert not st.running and st.last_error and "--" not in st.last_error, st.last_error   # no CLI flags
    return str(info.value)


def test_missing_weights_folder_is_reported_before_any_frame_is_rendered(render_scene, tmp_path):
    s, renders = render_scene
    s.forward_model = str(tmp_path / "no-such-checkpoint")
    msg = _refused(bpy.ops.diffusion_renderer.neural_render, "does not exist", renders, tmp_path / "jobs")
    assert "no-such-checkpoint" in msg and "Neural Render › Model" in msg


def test_weights_not_downloaded_point_at_the_download_button(render_scene, tmp_path):
    s, renders = render_scene
    prefs = bpy.context.preferences.addons[PKG].preferences
    (tmp_path / "empty-hf").mkdir()
    prefs.weights_dir, prefs.allow_download, s.forward_model = str(tmp_path / "empty-hf"), False, "forward"
    try:
        msg = _refused(bpy.ops.diffusion_renderer.neural_render, "not downloaded", renders, tmp_path / "jobs")
        assert "Model Weights › Download" in msg
    finally:
        prefs.weights_dir = ""


def test_engine_that_cannot_start_points_at_set_up_engine(render_scene, tmp_path):
    s, renders = render_scene
    prefs = bpy.context.preferences.addons[PKG].preferences
    good, prefs.engine_python = prefs.engine_python, str(tmp_path / "no-venv" / "bin" / "python")
    try:
        msg = _refused(bpy.ops.diffusion_renderer.neural_render, "engine is not ready", renders, tmp_path / "jobs")
        assert "Set Up Engine" in msg
    finally:
        prefs.engine_python = good


def test_light_camera_and_output_folder_are_checked_first(render_scene, tmp_path):
    s, renders = render_scene
    jobs = tmp_path / "jobs"
    s.hdri_path = str(tmp_path / "missing.hdr")
    assert "Neural Render › HDRI" in _refused(bpy.ops.diffusion_renderer.neural_render, "was not found", renders, jobs)
    (tmp_path / "sky.png").write_bytes(b"\x89PNG")
    s.hdri_path = str(tmp_path / "sky.png")
    _refused(bpy.ops.diffusion_renderer.neural_render, "not a Radiance .hdr", renders, jobs)
    s.hdri_path = _hdri(tmp_path / "hdri", "sky", (0.8, 0.9, 1.2))
    cam, bpy.context.scene.camera = bpy.context.scene.camera, None
    _refused(bpy.ops.diffusion_renderer.neural_render, "Scene Properties › Camera", renders, jobs)
    bpy.context.scene.camera = cam
    (tmp_path / "a-file").write_text("")
    s.output_dir = str(tmp_path / "a-file" / "jobs")
    _refused(bpy.ops.diffusion_renderer.neural_render, "choose another Output Folder", renders, jobs)
    s.output_dir = str(jobs)
    # Relight Preview: the HDRI list
    s.hdris.clear()
    s.hdris.add().path = str(tmp_path / "sky.png")
    s.gbuffer_set = str(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"passes": {p: {} for p in (
        "basecolor", "normal", "depth", "roughness", "metallic")}}))
    assert "the HDRI list" in _refused(bpy.ops.diffusion_renderer.relight_preview, "not a Radiance", renders, jobs)


def test_neural_render_sends_camera_follow_and_the_cameras_reach_the_engine(render_scene, tmp_path):
    """Light Follows World is on by default: the forward request carries camera_follow, the render folder
    carries every frame's camera, and the engine relights with them (a camera-less folder would fail)."""
    s, renders = render_scene
    scene = bpy.context.scene
    assert s.camera_follow is True
    st = _status()
    assert bpy.ops.diffusion_renderer.neural_render(wait=False) == {"FINISHED"}
    job = _client().registry.get(st.job_id)
    assert job.params["camera_follow"] is True and len(renders) == 3
    data = json.loads((Path(job.params["gbuffers"]) / "render.json").read_text())
    for entry, frame in zip(data["cameras"], (1, 2, 3)):
        scene.frame_set(frame)
        expected = [v for row in scene.camera.matrix_world for v in row]
        assert entry["frame"] == frame
        assert [v for row in entry["matrix_world"] for v in row] == pytest.approx(expected, abs=1e-6)
    pump(_idle)
    assert job.state == "done", st.last_error
    request = json.loads((Path(job.folder) / "request.json").read_text())
    assert request["params"]["camera_follow"] is True
    relit = json.loads(Path(job.manifest).read_text())
    assert [c["frame"] for c in relit["camera"]] == [1, 2, 3]          # the poses went through the engine
    steps = importlib.import_module(PKG + ".task_steps")
    s.camera_follow = False                                            # the toggle turns it off
    assert steps.planned_jobs(bpy.context, [steps.render_step])[0][1]["camera_follow"] is False
