"""Live Preview in real bpy: the installed extension, its loop ticked by hand with explicit times (timers do not
fire when bpy runs as a module, and no test here waits on a clock).

| case | expected |
|---|---|
| the toggle is on, the World's Mapping rotation turns | a preview is sent DEBOUNCE s after the last change, with the new env_rotation |
| several changes in a row | one request (the debounce coalesces them) |
| the rotation or strength changes again | no new G-buffer export (exported once per shot) |
| the frame moves to another window | only that window's frames are exported |
| an object moves (depsgraph) | the export is stale: the next preview exports again |
| Relight Preview without a G-buffer set | no request; the error names Relight Preview › G-Buffer Set |
| a newer preview while one runs (fake engine) | the older one's cancel is quiet: no error shown |
| toggle off | the running preview is cancelled, the timer and the handler are gone |
| add-on disabled while on (fresh interpreter) | the timer and the depsgraph handler are gone |
| the real engine (tiny checkpoints) | the "Neural Preview" image loads the preview EXR, reloads in place after a rotation (file rewritten, image has data, latency shown) |
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

PKG = "bl_ext.user_default.diffusion_renderer"
REPO = Path(__file__).resolve().parents[2]
bpy = pytest.importorskip("bpy", reason="bpy (Blender as a Python module) is not installed; run bin/test-blender")
from addon_driver import client as _client, pump, status as _status  # noqa: E402


def _mod(name):
    import importlib

    return importlib.import_module(f"{PKG}.{name}")


def _hdri(folder: Path, name: str, rgb) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    img = bpy.data.images.new(name, 32, 16, float_buffer=True)
    img.pixels[:] = [*rgb, 1.0] * (32 * 16)
    img.filepath_raw, img.file_format = str(folder / f"{name}.hdr"), "HDR"
    img.save()
    bpy.data.images.remove(img)
    return str(folder / f"{name}.hdr")


def _mapping(scene):
    return next(n for n in scene.world.node_tree.nodes if n.bl_idname == "ShaderNodeMapping")


def _rotate(scene, degrees: float) -> None:
    _mapping(scene).inputs["Rotation"].default_value[2] = math.radians(degrees)


@pytest.fixture
def live_scene(addon, tmp_path):
    """The demo scene (3 frames, 64², World = Environment Texture ← Mapping ← Texture Coordinate) with Live
    Preview settings for tiny jobs; Live Preview off afterwards."""
    demo = _mod("demo_scene")
    hdri = _hdri(tmp_path / "hdri", "sky", (0.8, 0.9, 1.2))
    scene = demo.build_demo_scene(frames=3, resolution=(64, 64), hdri=hdri, name="DR Live")
    nt = scene.world.node_tree
    env = next(n for n in nt.nodes if n.bl_idname == "ShaderNodeTexEnvironment")
    mapping, coords = nt.nodes.new("ShaderNodeMapping"), nt.nodes.new("ShaderNodeTexCoord")
    nt.links.new(coords.outputs["Generated"], mapping.inputs["Vector"])
    nt.links.new(mapping.outputs["Vector"], env.inputs["Vector"])
    s = scene.diffusion_renderer
    s.hdri_source, s.output_dir, s.lora_scale = "WORLD", str(tmp_path / "neural"), 0.0
    s.live_steps, s.live_frames = 1, 2
    st = _status()
    st.live_status = st.live_error = ""
    yield scene
    _mod("live_preview.loop").stop()


class FakeClient:
    """Records preview requests as jobs of the add-on's registry (what the loop reads back)."""

    def __init__(self):
        self.registry = _mod("client.jobs").JobRegistry()
        self.calls, self.cancelled = [], []

    def preview(self, set_path, hdri, frame, out, params, job_id=None):
        job = self.registry.add("preview", {"set": set_path, "hdri": hdri, "frame": frame, "out": out,
                                            "params": params})
        self.calls.append(job)
        return job

    def cancel_preview(self, job_id):
        self.cancelled.append(job_id)
        self.registry.set_state(self.registry.get(job_id), "cancelled", "cancelled")
        return True


@pytest.fixture
def fake(monkeypatch):
    c = FakeClient()
    monkeypatch.setattr(_mod("live_preview.loop").prefs_mod, "client", lambda prefs=None: c)
    monkeypatch.setattr(_mod("client"), "current", lambda: c)
    return c


def test_rotation_changes_are_debounced_into_one_request_and_reuse_the_export(live_scene, fake):
    loop = _mod("live_preview.loop")
    scene = live_scene
    loop.start(bpy.context, "render")
    assert bpy.app.timers.is_registered(loop.tick) and loop.on_depsgraph_update in bpy.app.handlers.depsgraph_update_post
    t = 1000.0
    assert loop.step(t) == "sent"                                  # turning it on previews at once
    first = fake.calls[0].params
    assert first["frame"] == 1 and first["params"]["env_rotation"] == pytest.approx(180.0)
    assert first["params"]["steps"] == 1 and first["params"]["preview_frames"] == 2
    render = Path(first["set"])
    assert render.is_relative_to(Path(scene.diffusion_renderer.output_dir) / "preview")
    rj = _mod("contract").render_json.load(render)
    assert rj["frame_numbers"] == [1, 2] and rj["resolution"] == [64, 64]        # the window only
    assert loop.step(t + 0.1) == "idle"

    for i, deg in enumerate((10.0, 20.0, 30.0)):                   # dragging the rotation: one request
        _rotate(scene, deg)
        assert loop.step(t + 1.0 + 0.1 * i) == "waiting"
    assert loop.step(t + 1.2 + loop.DEBOUNCE - 0.01) == "waiting"
    assert loop.step(t + 1.2 + loop.DEBOUNCE + 0.01) == "sent"
    assert len(fake.calls) == 2
    second = fake.calls[1].params
    assert second["params"]["env_rotation"] == pytest.approx(210.0)    # 180 + the Mapping's Z rotation
    assert second["set"] == first["set"] and loop.state().shot.exports == 1   # the G-buffers were reused

    _mapping(scene).inputs["Rotation"].default_value[2] = math.radians(30.0)  # same value: no change
    assert loop.step(t + 5.0) == "idle"
    bg = next(n for n in scene.world.node_tree.nodes if n.bl_idname == "ShaderNodeBackground")
    bg.inputs["Strength"].default_value = 2.5
    assert loop.step(t + 6.0) == "waiting" and loop.step(t + 7.0) == "sent"
    assert fake.calls[-1].params["params"]["env_strength"] == pytest.approx(2.5) and loop.state().shot.exports == 1

    scene.frame_set(3)                                             # another window: only its frames exported
    assert loop.step(t + 8.0) == "waiting" and loop.step(t + 9.0) == "sent"
    third = fake.calls[-1].params
    assert third["frame"] == 3 and loop.state().shot.exports == 2
    assert _mod("contract").render_json.load(third["set"])["frame_numbers"] == [2, 3]

    bpy.data.objects["Cube Red"].location.x += 0.5                 # a scene edit: the export is stale
    bpy.context.view_layer.update()                                # (the event loop would flush it)
    assert loop.step(t + 10.0) == "waiting" and loop.step(t + 11.0) == "sent"
    assert loop.state().shot.exports == 3 and fake.calls[-1].params["set"] == third["set"]

    running = fake.calls[-1]
    loop.stop()                                                    # toggle off: cancelled, timer/handler gone
    assert fake.cancelled == [running.id] and running.state == "cancelled"
    assert not bpy.app.timers.is_registered(loop.tick)
    assert loop.on_depsgraph_update not in bpy.app.handlers.depsgraph_update_post
    assert loop.step(t + 20.0) == "off" and loop.tick() is None


def test_superseded_preview_is_quiet_and_failures_name_the_field(live_scene, fake):
    loop = _mod("live_preview.loop")
    st = _status()
    assert bpy.ops.diffusion_renderer.live_preview(task="RENDER") == {"FINISHED"}     # the toggle: on
    assert loop.active_task() == "render"
    assert loop.step(0.0) == "sent"
    _rotate(live_scene, 45.0)
    assert loop.step(0.1) == "waiting" and loop.step(1.0) == "sent"
    older, newer = fake.calls
    fake.registry.set_state(older, "cancelled", "cancelled")       # the engine: "superseded by preview …"
    assert st.live_error == "" and st.live_status.startswith("Frame 1: relighting")
    err = _mod("client.errors").ClientError("input_error", "the HDRI cannot be read", "choose another HDRI")
    fake.registry.set_state(newer, "failed", err.short(), error=err)
    assert st.live_error.startswith("Live Preview: the HDRI cannot be read")
    assert bpy.ops.diffusion_renderer.live_preview(task="RENDER") == {"FINISHED"}     # the toggle: off
    assert loop.active_task() is None and not bpy.app.timers.is_registered(loop.tick)

    s = live_scene.diffusion_renderer                             # Relight Preview without a set: no request
    s.gbuffer_set = ""
    assert bpy.ops.diffusion_renderer.live_preview(task="RELIGHT") == {"FINISHED"}
    assert loop.step(10.0) == "failed" and len(fake.calls) == 2
    assert "Relight Preview › G-Buffer Set" in st.live_error


_UNREGISTER_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
import bpy, addon_utils
bpy.ops.wm.read_factory_settings(use_empty=True)
assert addon_utils.enable("diffusion_renderer_addon", default_set=True) is not None
loop = sys.modules["diffusion_renderer_addon.live_preview.loop"]
loop.start(bpy.context, "relight")
assert bpy.app.timers.is_registered(loop.tick)
assert loop.on_depsgraph_update in bpy.app.handlers.depsgraph_update_post
addon_utils.disable("diffusion_renderer_addon", default_set=True)
assert not bpy.app.timers.is_registered(loop.tick), "the live preview timer outlived the add-on"
assert loop.on_depsgraph_update not in bpy.app.handlers.depsgraph_update_post, "the depsgraph handler outlived it"
print("SCRIPT-END", flush=True)
"""


def test_disabling_the_addon_removes_the_live_preview_timer_and_handler():
    env = dict(os.environ, BLENDER_USER_RESOURCES=tempfile.mkdtemp(prefix="dr-live-"))
    proc = subprocess.run([sys.executable, "-c", _UNREGISTER_SCRIPT, str(REPO)], capture_output=True, text=True,
                          timeout=120, env=env, cwd=tempfile.gettempdir())
    assert "SCRIPT-END" in proc.stdout and proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.skipif(not os.environ.get("DR_ENGINE_PYTHON"), reason="DR_ENGINE_PYTHON (the engine) is not set")
def test_the_engine_relights_and_the_neural_preview_image_reloads(live_scene, tiny_ckpts):
    loop, st = _mod("live_preview.loop"), _status()
    s = live_scene.diffusion_renderer
    s.forward_model = str(tiny_ckpts["forward"])
    loop.start(bpy.context, "render")
    assert loop.step(0.0) == "sent", st.live_error
    first = loop.state().job
    pump(lambda: first.is_terminal, timeout=300)
    assert first.state == "done", first.error and first.error.full_text()
    img = bpy.data.images["Neural Preview"]
    out = Path(first.result["out"])
    assert Path(bpy.path.abspath(img.filepath)) == out and out.suffix == ".exr" and out.with_suffix(".png").is_file()
    assert tuple(img.size) == tuple(first.result["summary"]["size"]) and img.has_data   # (size loads it)
    assert st.live_status.startswith("Frame 1: ") and " s" in st.live_status and st.live_error == ""
    before = out.stat().st_mtime_ns
    os.utime(out, ns=(before - 10**9, before - 10**9))               # the rewrite must show in the mtime

    _rotate(live_scene, 90.0)                                      # turn the World: relit again
    assert loop.step(1.0) == "waiting" and loop.step(2.0) == "sent"
    second = loop.state().job
    assert second is not first and second.params["params"]["env_rotation"] == pytest.approx(270.0)
    pump(lambda: second.is_terminal, timeout=300)
    assert second.state == "done", second.error and second.error.full_text()
    assert second.result["summary"]["cached"]["gbuffer_latents"] is True     # the same shot: no G-buffer encode
    assert out.stat().st_mtime_ns > before - 10**9                 # the engine wrote the file again …
    img = bpy.data.images["Neural Preview"]                        # … and the same image reloaded it
    assert len([i for i in bpy.data.images if i.name.startswith("Neural Preview")]) == 1
    assert tuple(img.size) == tuple(second.result["summary"]["size"]) and img.has_data
    assert Path(bpy.path.abspath(img.filepath)) == out
    assert loop.state().shown == 2 and _client().registry.get(second.id) is second
