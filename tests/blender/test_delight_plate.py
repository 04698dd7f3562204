"""A 25 fps plate de-lit from Blender comes back at 25 fps, on the clip's frame numbers, at the plate's size.

A 30-frame 25 fps 96×54 (16:9) movie — made with the engine's ffmpeg in a subprocess, bpy's venv has no
imageio — is loaded as a Movie Clip in a 25 fps scene and de-lit through the add-on's operator path (the
non-blocking one the UI uses, the timer pumped by hand as in test_addon_jobs.py) with the real engine and
tiny random checkpoints at a 64×64 processing size. The engine reads the movie itself (no re-encode); the
set is 25 fps, frames 1..30, 96×54 (padded into 64×64, cropped back); the reimported image sequences and
the VSE strip sit on frames 1..30. Skipped without bpy or DR_ENGINE_PYTHON.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

PKG = "bl_ext.user_default.diffusion_renderer"
bpy = pytest.importorskip("bpy", reason="bpy (Blender as a Python module) is not installed; run bin/test-blender")
if not os.environ.get("DR_ENGINE_PYTHON"):
    pytest.skip("DR_ENGINE_PYTHON (the engine's interpreter) is not set", allow_module_level=True)

import bpy_scene as S  # noqa: E402

from diffusion_renderer_addon import compat  # noqa: E402

W, H, FRAMES, FPS = 96, 54, 30, 25

_MAKE_MOVIE = r"""
import sys
import numpy as np
from engine.io import write_mp4
yy, xx = np.mgrid[0:54, 0:96] / np.array([54.0, 96.0])[:, None, None]
frames = [np.stack([xx, yy, np.full_like(xx, t / 30.0)], -1) for t in range(30)]
print(write_mp4(sys.argv[1], frames, 25))
"""

_PROBE = r"""
import json, sys
from engine.io import probe_video
from engine.gbuffer import open_gbuffer_set
s = open_gbuffer_set(sys.argv[1])
sheet = probe_video(s.folder / "contact_sheet.mp4")
print(json.dumps({"frames": s.frame_numbers, "fps": s.fps, "size": list(s.resolution),
                  "rgb": list(s.read("rgb", 1).shape), "sheet_fps": sheet.fps, "sheet_frames": sheet.frame_count}))
"""
from addon_driver import client as _client, idle as _idle, pump as _pump, status as _status  # noqa: E402


def _strips(scene):
    ed = scene.sequence_editor
    return [] if ed is None else list(ed.strips_all if hasattr(ed, "strips_all") else ed.sequences_all)


@pytest.fixture
def plate_movie(tmp_path) -> Path:
    path = tmp_path / "plate25.mp4"
    assert S.run_engine(_MAKE_MOVIE, path).strip() == str(FRAMES)
    return path


def test_25_fps_movie_clip_comes_back_at_25_fps_on_its_frames_at_its_size(addon, tiny_ckpts, plate_movie, tmp_path):
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = FPS, 1.0
    clip = bpy.data.movieclips.load(str(plate_movie))
    assert (clip.fps, clip.frame_start, clip.frame_duration, tuple(clip.size)) == (FPS, 1, FRAMES, (W, H))
    s = scene.diffusion_renderer
    s.footage_source, s.movie_clip = "CLIP", clip
    s.inverse_model = str(tiny_ckpts["inverse"])
    s.pass_metallic = s.pass_roughness = s.pass_depth = False
    s.frames, s.overlap, s.steps, s.previews = 10, 2, 1, True
    s.resolution_mode, s.res_x, s.res_y = "CUSTOM", 64, 64
    s.output_dir, s.gbuffer_set = str(tmp_path / "jobs"), ""
    s.add_strip = True                                           # opt-in: the plate as a (muted) VSE strip
    st = _status()
    st.last_manifest = st.last_error = ""

    assert bpy.ops.diffusion_renderer.delight(wait=False) == {"FINISHED"}
    job = _client().registry.get(st.job_id)
    # the engine is handed the movie itself, with its colour space; nothing was re-encoded
    assert job.params["input"] == str(plate_movie) and job.params["colorspace"] == "srgb"
    assert "source_fps" not in job.params and "first_frame" not in job.params     # the movie's own rate, 1..30
    assert not list((Path(job.folder)).glob("footage*"))
    _pump(_idle)
    assert job.state == "done", st.last_error

    manifest = Path(st.last_manifest)
    data = json.loads(manifest.read_text())
    assert data["fps"] == FPS and data["frame_numbers"] == list(range(1, FRAMES + 1))
    assert data["resolution"] == [W, H]                                         # the plate's size and aspect
    framing = data["provenance"]["settings"]["framing"]
    assert framing["fit"] == "pad" and framing["processing"] == [64, 64] and framing["content"] == [0, 14, 64, 50]
    got = json.loads(S.run_engine(_PROBE, manifest.parent))
    assert got["rgb"] == [H, W, 3] and got["sheet_fps"] == FPS and got["sheet_frames"] == FRAMES

    # reimported: image sequences on frames 1..30 at 96×54, and a VSE strip over the same frames
    images = [i for i in bpy.data.images if i.filepath and Path(bpy.path.abspath(i.filepath)).is_relative_to(
        manifest.parent)]
    assert sorted(Path(i.filepath).parent.name for i in images) == ["basecolor", "normal", "rgb"]
    assert all(i.source == "SEQUENCE" and tuple(i.size) == (W, H) for i in images)
    ranges = set()
    for tree in [g for g in bpy.data.node_groups if g.bl_idname == "CompositorNodeTree"]:
        for n in tree.nodes:
            if n.bl_idname == "CompositorNodeImage" and n.image in images:
                ranges.add((n.frame_start, n.frame_duration, n.frame_offset))
    assert ranges == {(1, FRAMES, 0)}
    strips = [x for x in _strips(scene) if Path(bpy.path.abspath(x.directory)).is_relative_to(manifest.parent)]
    assert len(strips) == 1 and len(strips[0].elements) == FRAMES and strips[0].mute
    assert strips[0].elements[0].filename == "basecolor.0001.exr"
    assert compat.strip_timing(strips[0])[1:] == (1, FRAMES + 1)
