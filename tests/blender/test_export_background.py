"""The background export, end to end: ``export_gbuffers(background=True)`` saves a copy of the open file and
runs ``blender -b copy.blend --python background_runner.py -- job.json``; here "blender" is a Blender-compatible
command line over this interpreter's bpy (bpy_blender.py), so the same runner script runs for real. Checked:
the render folder and render.json, the values (the engine converts both), progress, polling, cancel, the open
file untouched, and every failing background run reported as one ExportError line."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time

import pytest

import bpy_scene as S
from bpy_blender import write_wrapper
from bpy_scene import bpy

np = pytest.importorskip("numpy")

from diffusion_renderer_addon.contract import render_json  # noqa: E402
from diffusion_renderer_addon.export import ExportError, export_gbuffers, start_export_gbuffers  # noqa: E402

TIMEOUT = 300


@pytest.fixture(scope="module")
def blender(tmp_path_factory):
    return write_wrapper(tmp_path_factory.mktemp("bin") / "blender")


@pytest.fixture
def saved_scene(tmp_path):
    """The analytic scene, saved as a .blend (the open file of the test); returns (scene, path, digest)."""
    scene = S.build_export_scene(frames=(1, 2), size=16)
    path = tmp_path / "shot.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    scene = bpy.data.scenes[scene.name]
    return scene, path, hashlib.sha256(path.read_bytes()).hexdigest()


def _run(blender, *args, cwd=None):
    return subprocess.run([str(blender), *map(str, args)], capture_output=True, text=True, timeout=TIMEOUT, cwd=cwd)


def test_the_stand_in_follows_blenders_command_line(blender, tmp_path):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.data.scenes[0].name = "Saved"
    blend = tmp_path / "a.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend), copy=True)
    script = tmp_path / "s.py"
    script.write_text("import bpy, json, sys\n"
                      "print('ARGS ' + json.dumps({'argv': sys.argv[sys.argv.index('--') + 1:],"
                      " 'scenes': [s.name for s in bpy.data.scenes], 'file': bpy.data.filepath}))\n"
                      "if 'fail' in sys.argv: raise ValueError('boom')\n"
                      "if 'exit' in sys.argv: sys.exit(5)\n")
    r = _run(blender, "-b", blend, "--python-exit-code", "3", "--python", script, "--", "x", "y")
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("ARGS "))
    assert json.loads(line[5:]) == {"argv": ["x", "y"], "scenes": ["Saved"], "file": str(blend)}
    r = _run(blender, "-b", blend, "--python-exit-code", "3", "--python", script, "--", "fail")
    assert r.returncode == 3 and "ValueError: boom" in r.stderr
    assert _run(blender, "-b", blend, "--python", script, "--", "fail").returncode == 0  # Blender goes on
    assert _run(blender, "-b", blend, "--python", script, "--", "exit").returncode == 5
    assert _run(blender, "-b", "--python-expr", "import sys; sys.exit(7)").returncode == 7
    assert _run(blender, "-b", tmp_path / "missing.blend").returncode == 1


def test_background_export_end_to_end(blender, saved_scene, tmp_path):
    scene, path, digest = saved_scene
    before = S.fingerprint(scene)
    seen = []
    out = export_gbuffers(scene, tmp_path / "bg", background=True, blender_binary=str(blender),
                          progress=lambda d, t, msg: seen.append((d, t, msg)), timeout=TIMEOUT)
    assert out == tmp_path / "bg"
    data = render_json.load(out)
    assert data["frame_numbers"] == [1, 2] and data["resolution"] == [16, 16] and data["source"] == str(path)
    assert data["scene"] == scene.name and data["view_layer"] == "ViewLayer" and len(data["cameras"]) == 2
    # progress: the latest state at each poll (intermediate ones may be skipped), in order, ending complete
    assert seen[0] == (0, 0, "starting Blender") and seen[-1] == (2, 2, "writing render.json")
    assert set(seen[1:-1]) <= {(0, 2, "frame 1"), (1, 2, "frame 2")} and seen == sorted(seen, key=lambda s: s[0])
    # the open file is untouched: the scene, its path, the file on disk
    assert S.diff(before, S.fingerprint(scene)) == []
    assert bpy.data.filepath == str(path) and hashlib.sha256(path.read_bytes()).hexdigest() == digest
    # the same pixels as an export in this process
    here = export_gbuffers(scene, tmp_path / "fg", background=False)
    bg_passes, bg_info = S.render_passes(out)
    fg_passes, _ = S.render_passes(here)
    assert bg_info["frame_numbers"] == [1, 2] and not bg_info["warnings"]
    for name in ("basecolor", "normal", "depth", "roughness", "metallic", "alpha"):
        assert np.array_equal(bg_passes[name], fg_passes[name]), name
    assert np.abs(bg_passes["depth"][bg_passes["alpha"] > 0] - S.PLANE_DEPTH).min() < 1e-4


def test_poll_and_cancel(blender, saved_scene, tmp_path):
    scene, _path, _digest = saved_scene
    before = S.fingerprint(scene)
    job = start_export_gbuffers(scene, tmp_path / "polled", blender_binary=str(blender), frame_range=[2])
    states = []
    deadline = time.monotonic() + TIMEOUT
    while not job.finished and time.monotonic() < deadline:
        states.append(job.poll())
        time.sleep(0.05)
    assert job.result() == tmp_path / "polled" and job.poll()[:2] == (1, 1)
    assert states[0][2] == "starting Blender"
    assert render_json.load(tmp_path / "polled")["frame_numbers"] == [2]
    job = start_export_gbuffers(scene, tmp_path / "cancelled", blender_binary=str(blender))
    job.cancel()
    assert job.finished
    with pytest.raises(ExportError, match="cancelled"):
        job.result()
    assert not (tmp_path / "cancelled" / "render.json").exists()
    assert S.diff(before, S.fingerprint(scene)) == []


def _one_line_error(scene, out, blender, **kw) -> str:
    with pytest.raises(ExportError) as info:
        export_gbuffers(scene, out, background=True, blender_binary=str(blender), timeout=TIMEOUT, **kw)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("background export failed: "), msg
    assert not (out / "render.json").exists()
    return msg


def test_failing_background_runs_are_one_clear_error(blender, saved_scene, tmp_path, capsys):
    scene, _path, _digest = saved_scene
    before = S.fingerprint(scene)
    # the copy has no camera (the open file has one)
    no_cam = write_wrapper(tmp_path / "no_cam_blender", before_scripts=[
        "import bpy\nfor s in bpy.data.scenes: s.camera = None"])
    msg = _one_line_error(scene, tmp_path / "a", no_cam)
    assert msg == (f"background export failed: scene {scene.name!r} has no active camera; set one "
                   f"(Scene properties → Camera); {tmp_path / 'a'} is incomplete (no render.json)")
    # Blender killed as it writes the first frame
    killed = write_wrapper(tmp_path / "killed_blender", before_scripts=[
        "import bpy, os, signal\n"
        "bpy.app.handlers.render_write.append(lambda *a: os.kill(os.getpid(), signal.SIGKILL))"])
    msg = _one_line_error(scene, tmp_path / "b", killed)
    assert "Blender stopped (SIGKILL) before finishing" in msg
    assert list((tmp_path / "b").iterdir()) == []  # killed while frame 1 was being written: its partial file removed
    assert "Blender's last output" in capsys.readouterr().err  # the details are on the console
    # an export error inside the background Blender keeps its message
    msg = _one_line_error(scene, tmp_path / "c", blender, engine="BLENDER_WORKBENCH")
    assert "cannot render G-buffers; choose Cycles or EEVEE" in msg
    # a stand-in that is no Blender at all
    broken = tmp_path / "not_blender"
    broken.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'import sys; sys.exit(9)'\n")
    broken.chmod(0o755)
    assert "Blender exited with code 9 before finishing" in _one_line_error(scene, tmp_path / "d", broken)
    with pytest.raises(ExportError, match="no Blender executable"):
        export_gbuffers(scene, tmp_path / "e", background=True, blender_binary="")
    assert S.diff(before, S.fingerprint(scene)) == []
