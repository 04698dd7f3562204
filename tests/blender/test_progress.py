"""Progress where Blender shows it, in real bpy with the real engine: the task operators' modal handler
(driven here through the same TaskWatch its modal() uses; modal handlers do not run in bpy-as-a-module)
cancels on Esc and reports how the task ended; the status line says what the engine is doing — denoising
per light ("light 2/2: …") and writing — in that order."""
from __future__ import annotations

import importlib

from test_addon_jobs import PKG, _client, _hdri, _idle, _status, bpy, pump, scene  # noqa: F401 (fixture)


def _ops():
    return importlib.import_module(PKG + ".operators")


def test_escape_cancels_the_running_task_and_reports_it(scene):
    st = _status()
    scene.steps = 500
    assert bpy.ops.diffusion_renderer.delight(wait=False) == {"FINISHED"}
    watch = _ops().watch_task("Delight")
    job = _client().registry.get(st.job_id)
    pump(lambda: job.stage == "denoise" or job.is_terminal)
    assert watch.on_event("TIMER") == {"PASS_THROUGH"} and watch.last_job is job      # running: bar updated
    assert watch.on_event("MOUSEMOVE") == {"PASS_THROUGH"}
    assert watch.on_event("ESC") == {"RUNNING_MODAL"} and st.status == "cancelling…"
    assert watch.on_event("ESC") == {"RUNNING_MODAL"}                                  # once is enough
    pump(_idle, timeout=60)
    assert watch.on_event("TIMER") == {"FINISHED"} and job.state == "cancelled"
    assert watch.outcome() == ({"WARNING"}, "Delight was cancelled.")


def test_relight_of_two_lights_reports_each_light_then_writing(scene, tmp_path):
    st = _status()
    scene.hdris.clear()
    for name, rgb in (("cool", (0.3, 0.6, 2.0)), ("warm", (2.0, 1.0, 0.5))):
        scene.hdris.add().path = _hdri(tmp_path / "hdri", name, rgb)
    for p in ("metallic", "roughness", "depth"):
        setattr(scene, f"pass_{p}", True)
    assert bpy.ops.diffusion_renderer.delight(wait=True) == {"FINISHED"}    # the G-buffers to relight
    assert scene.gbuffer_set, "Delight did not set the G-buffer set"
    assert bpy.ops.diffusion_renderer.relight_preview(wait=False) == {"FINISHED"}
    watch = _ops().watch_task("Relight Preview")
    job = _client().registry.get(st.job_id)
    texts = []
    pump(lambda: (texts.append(st.status), _idle())[1])
    assert job.state == "done", st.last_error
    log = [(p["stage"], p["light"]) for p in job.progress_log if p["stage"] != "load_model"]
    order = [k for i, k in enumerate(log) if i == 0 or log[i - 1] != k]
    assert order == [("denoise", 1), ("write", 1), ("denoise", 2), ("write", 2)], log
    assert (job.light, job.lights) == (2, 2)
    assert any(t.startswith("light 1/2: denoising") or t.startswith("light 2/2: ") for t in texts), set(texts)
    assert watch.on_event("TIMER") == {"FINISHED"}
    level, text = watch.outcome()
    assert level == {"INFO"} and text.startswith("Relight Preview finished (") and "loaded 2 sets" in text
