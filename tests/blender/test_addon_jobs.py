"""The task operators' non-blocking path in real bpy, against the real engine subprocess (tiny random
checkpoints): the operator submits and returns at once (``wait=False``, what ``invoke()`` does in the UI),
then the add-on's registered ``bpy.app.timers`` function polls the engine client — called here by hand,
because timers do not fire when bpy runs as a module — reporting progress into
``window_manager.diffusion_renderer``, chaining the next step and loading the result into the scene.

Covered: Delight (progress, set on disk, images / compositor group / material pointing at its files),
Relight preview (de-light once with every pass the forward model needs, then relight under other HDRIs
reusing those G-buffers; a set lacking passes is refused), Neural render (scene G-buffers exported, then
relit), cancel (no manifest, nothing loaded) and an engine-side failure (the error reaches the status).
Fixtures (addon, tiny_ckpts, plate) come from conftest.py. Skipped without bpy or DR_ENGINE_PYTHON.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

PKG = "bl_ext.user_default.diffusion_renderer"
bpy = pytest.importorskip("bpy", reason="bpy (Blender as a Python module) is not installed; run bin/test-blender")
if not os.environ.get("DR_ENGINE_PYTHON"):
    pytest.skip("DR_ENGINE_PYTHON (the engine's interpreter) is not set", allow_module_level=True)
from addon_driver import client as _client, idle as _idle, pump, status as _status  # noqa: E402


def _hdri(folder: Path, name: str, rgb) -> str:
    """A tiny Radiance .hdr environment map written by Blender."""
    folder.mkdir(parents=True, exist_ok=True)
    img = bpy.data.images.new(name, 32, 16, float_buffer=True)
    img.pixels[:] = [*rgb, 1.0] * (32 * 16)
    img.filepath_raw, img.file_format = str(folder / f"{name}.hdr"), "HDR"
    img.save()
    bpy.data.images.remove(img)
    return str(folder / f"{name}.hdr")


@pytest.fixture
def scene(addon, tiny_ckpts, plate, tmp_path):
    """Scene settings for tiny CPU jobs on the 3-frame plate; job folders under tmp_path/jobs."""
    img = bpy.data.images.load(str(plate / "plate.0001.png"), check_existing=True)
    img.source = "SEQUENCE"
    s = bpy.context.scene.diffusion_renderer
    s.footage_source, s.image = "IMAGE", img
    s.inverse_model, s.forward_model = str(tiny_ckpts["inverse"]), str(tiny_ckpts["forward"])
    s.pass_metallic = s.pass_roughness = s.pass_depth = False
    s.frames, s.overlap, s.steps, s.previews, s.lora_scale = 3, 0, 2, False, 0.0
    s.resolution_mode, s.res_x, s.res_y = "CUSTOM", 64, 64
    s.output_dir, s.gbuffer_set = str(tmp_path / "jobs"), ""
    s.hdris.clear()
    st = _status()
    st.last_manifest = st.last_error = st.status = ""
    yield s
    if not _idle():                                      # a failed assertion mid-job: do not leak it
        bpy.ops.diffusion_renderer.cancel()
        pump(_idle, timeout=60)


def _under(path: str, folder: Path) -> bool:
    p = Path(bpy.path.abspath(path)) if path else None
    return p is not None and p.is_file() and p.is_relative_to(folder)


def _assert_loaded(manifest: Path) -> None:
    """What loading the set created: one image sequence per pass reading the set's own files, a compositor
    group and a material using exactly those images, and no sequencer strip (opt-in, test_results_workflow.py)."""
    data, root = json.loads(manifest.read_text()), manifest.parent
    images = [i for i in bpy.data.images if _under(i.filepath, root)]
    assert sorted(Path(i.filepath).parent.name for i in images) == sorted(
        str(Path(spec["path"]).parent) for spec in data["passes"].values())
    assert all(i.source == "SEQUENCE" for i in images)
    groups = [g for g in bpy.data.node_groups
              if {n.image for n in g.nodes if n.bl_idname == "CompositorNodeImage"} == set(images)]
    assert len(groups) == 1, "no (or more than one) compositor group for the set"
    # the artist's compositing is left alone: a Group node only in a compositor the scene already uses
    assert not _compositor_nodes() or any(getattr(n, "node_tree", None) == groups[0] for n in _compositor_nodes())
    mats = [m for m in bpy.data.materials if m.node_tree is not None and
            {n.image for n in m.node_tree.nodes if n.bl_idname == "ShaderNodeTexImage"} & set(images)]
    assert len(mats) == 1, "no (or more than one) material for the set"
    strips = [s for s in _strips() if _under(os.path.join(s.directory, s.elements[0].filename), root)]
    assert strips == [], "a sequencer strip was added without Add Sequencer Strip (F12 would render it)"


def _compositor_nodes():
    scene = bpy.context.scene
    tree = scene.compositing_node_group if hasattr(scene, "compositing_node_group") else scene.node_tree
    return list(tree.nodes) if tree is not None else []


def _strips():
    ed = bpy.context.scene.sequence_editor
    if ed is None:
        return []
    return list(ed.strips_all if hasattr(ed, "strips_all") else ed.sequences_all)   # 4.4+ / 4.2


def test_delight_non_blocking_progress_result_and_reimport(scene, tmp_path):
    st = _status()
    assert bpy.ops.diffusion_renderer.delight(wait=False) == {"FINISHED"}
    job = _client().registry.get(st.job_id)
    assert st.running and st.task == "delight" and job is not None and not job.is_terminal  # returned at once
    assert not bpy.ops.diffusion_renderer.delight.poll(), "a second task must wait for the running one"
    seen = pump(_idle)
    assert job.state == "done", st.last_error
    assert st.last_error == "" and not st.running and st.progress == pytest.approx(1.0)
    progress = [p for p, _, _ in seen]
    assert progress == sorted(progress), "progress went backwards"
    assert any(0.0 < p < 1.0 for p in progress), f"no intermediate progress reported: {sorted(set(progress))}"
    assert any(s.startswith("denoising") for _, s, _ in seen) and st.status.endswith("loaded 1 set"), sorted(set(seen))
    manifest = Path(st.last_manifest)
    assert manifest.is_file() and manifest.is_relative_to(tmp_path / "jobs")
    assert (manifest.parent.parent / "result.json").is_file()
    assert Path(scene.gbuffer_set) == manifest.parent                  # ready for Relight Preview
    _assert_loaded(manifest)
    timer = sys.modules[PKG + ".client.timer"]
    assert timer.tick() == timer.IDLE_INTERVAL                   # idle again: slow polling


def test_relight_preview_delights_once_then_reuses_the_gbuffers(scene, tmp_path):
    st, jobs_dir = _status(), tmp_path / "jobs"
    scene.hdris.add().path = _hdri(tmp_path / "hdri", "warm", (2.0, 1.0, 0.5))
    assert bpy.ops.diffusion_renderer.relight_preview(wait=False) == {"FINISHED"}
    ids = {job_id for _, _, job_id in pump(_idle)}
    jobs = [_client().registry.get(i) for i in ids]
    assert sorted(j.kind for j in jobs) == ["forward", "inverse"]
    assert all(j.state == "done" for j in jobs), [(j.kind, j.state, j.error and j.error.full_text()) for j in jobs]
    inverse = next(j for j in jobs if j.kind == "inverse")
    gset = Path(inverse.manifest).parent
    assert Path(scene.gbuffer_set) == gset
    relit = Path(st.last_manifest)
    assert relit.parent.name == "warm" and json.loads(relit.read_text())["kind"] == "relit"
    request = json.loads((relit.parent.parent.parent / "request.json").read_text())
    assert request["params"]["gbuffers"] == str(gset)
    _assert_loaded(relit)
    assert not [i for i in bpy.data.images if _under(i.filepath, gset)]   # the intermediate set: not loaded

    # again with two other HDRIs: no de-lighting, one forward job over the same G-buffer set
    scene.hdris.clear()
    for name, rgb in (("cool", (0.3, 0.6, 2.0)), ("dim", (0.2, 0.2, 0.2))):
        scene.hdris.add().path = _hdri(tmp_path / "hdri", name, rgb)
    delights = sorted(jobs_dir.glob("delight-*"))
    assert bpy.ops.diffusion_renderer.relight_preview(wait=False) == {"FINISHED"}
    ids = {job_id for _, _, job_id in pump(_idle)}
    assert len(ids) == 1 and sorted(jobs_dir.glob("delight-*")) == delights
    job = _client().registry.get(ids.pop())
    assert job.kind == "forward" and job.state == "done" and job.params["gbuffers"] == str(gset)
    manifests = sorted(Path(m) for m in job.result["manifests"])
    assert [m.parent.name for m in manifests] == ["cool", "dim"]
    for m in manifests:
        _assert_loaded(m)
    assert st.status.endswith("loaded 2 sets")


def test_cancel_leaves_no_manifest_and_loads_nothing(scene):
    st = _status()
    scene.steps = 500
    images = len(bpy.data.images)
    assert bpy.ops.diffusion_renderer.delight(wait=False) == {"FINISHED"}
    job = _client().registry.get(st.job_id)
    pump(lambda: job.stage == "denoise" or job.is_terminal)
    assert job.state == "running"
    assert bpy.ops.diffusion_renderer.cancel() == {"FINISHED"}
    assert st.status == "cancelling…"
    pump(_idle, timeout=60)
    assert job.state == "cancelled" and st.status == "cancelled" and not st.running
    out = Path(job.folder) / "out"
    assert not (out / "manifest.json").exists() and not (Path(job.folder) / "result.json").exists()
    assert st.last_manifest == "" and len(bpy.data.images) == images
    assert bpy.ops.diffusion_renderer.cancel() == {"CANCELLED"}         # nothing left to cancel


def test_engine_failure_reaches_the_status(scene, tmp_path):
    st = _status()
    (tmp_path / "not-a-checkpoint").mkdir()
    scene.inverse_model = str(tmp_path / "not-a-checkpoint")
    assert bpy.ops.diffusion_renderer.delight(wait=False) == {"FINISHED"}
    job = _client().registry.get(st.job_id)
    pump(_idle)
    assert job.state == "failed" and st.status and not st.running
    assert "not-a-checkpoint" in st.last_error, st.last_error
    assert st.last_manifest == ""


def test_relight_preview_refuses_a_set_without_the_forward_passes(scene, tmp_path):
    """A chosen set lacking passes the forward model reads is refused before anything is submitted."""
    st, partial = _status(), tmp_path / "partial"
    partial.mkdir()
    (partial / "manifest.json").write_text(json.dumps({"passes": {"basecolor": {}, "normal": {}}}))
    scene.gbuffer_set = str(partial)
    scene.hdris.add().path = _hdri(tmp_path / "hdri", "warm", (2.0, 1.0, 0.5))
    with pytest.raises(RuntimeError, match="has no depth, roughness, metallic pass"):
        bpy.ops.diffusion_renderer.relight_preview(wait=False)
    assert not st.running and "clear Relight Preview › G-Buffer Set" in st.last_error
    assert not (tmp_path / "jobs").exists() or not any((tmp_path / "jobs").iterdir())


def test_neural_render_non_blocking_exports_the_scene_and_relights_it(addon, tiny_ckpts, tmp_path):
    import importlib

    demo = importlib.import_module(PKG + ".demo_scene")
    scene = demo.build_demo_scene(frames=3, resolution=(64, 64), name="DR Jobs Demo")
    assert bpy.context.scene == scene
    s, st = scene.diffusion_renderer, _status()
    s.forward_model, s.hdri_source = str(tiny_ckpts["forward"]), "FILE"
    s.hdri_path = _hdri(tmp_path / "hdri", "sky", (0.8, 0.9, 1.2))
    s.frames, s.overlap, s.steps, s.previews, s.lora_scale = 3, 0, 2, False, 0.0
    s.resolution_mode, s.res_x, s.res_y, s.output_dir = "CUSTOM", 64, 64, str(tmp_path / "jobs")
    assert bpy.ops.diffusion_renderer.neural_render(wait=False) == {"FINISHED"}
    job = _client().registry.get(st.job_id)
    assert st.running and st.task == "render" and job.kind == "forward" and not job.is_terminal
    gbuffers = Path(job.params["gbuffers"])
    assert json.loads((gbuffers / "render.json").read_text())["frame_numbers"] == [1, 2, 3]  # exported first
    pump(_idle)
    assert job.state == "done", st.last_error
    relit = Path(st.last_manifest)
    assert relit.parent.name == "sky" and relit.is_relative_to(tmp_path / "jobs")
    _assert_loaded(relit)


def test_estimate_of_the_neural_render(scene):
    """The Estimate button asks the engine's cost model about a Neural render of the scene and shows it;
    the GPU memory mode of the preferences reaches the engine."""
    prefs = bpy.context.preferences.addons[PKG].preferences
    r = bpy.context.scene.render
    r.resolution_x, r.resolution_y, r.resolution_percentage = 1920, 1080, 50
    bpy.context.scene.frame_start, bpy.context.scene.frame_end = 1, 48
    estimates = {}
    for mode in ("default", "low-vram"):
        prefs.memory = mode
        assert bpy.ops.diffusion_renderer.estimate() == {"FINISHED"}
        estimates[mode] = _status().estimate
    assert all(e.startswith("≈ ") and " GB" in e for e in estimates.values()), estimates

    def peak(text):
        return float(text.split("peak ≈ ")[1].split(" GB")[0])

    assert peak(estimates["low-vram"]) < peak(estimates["default"])
    prefs.memory = "default"
