"""Fault matrix — output folders (issue 15, Build 3): nothing mixed, nothing foreign deleted, inputs' identity kept.

| case | expected behaviour |
|---|---|
| rerun into a set with other passes (the first had previews) | only the new manifest's files remain (old passes, previews, mp4 gone); a user's file stays |
| rerun with fewer frames | only the new frames remain |
| interrupted run, then a finished run with fewer passes | the interrupted run's files (recorded in `.dr-writing`) are removed too |
| `--overwrite` into a folder holding a manifest.json the engine did not write | one-line error naming it; the file is kept unchanged |
| a file the engine did not write in the way of an output | one-line error naming it; never overwritten |
| a second run into a folder a run holds (in-process) | FolderLockedError at once naming the holder's pid and the fix |
| two CLI runs into one `--out` at the same time | one proceeds, the other exits 2 at once naming the other process; the result equals a single run bit for bit |
| a `.dr-lock` left by a dead process | reclaimed; the run succeeds and leaves no lock file |
| `--out` inside the input frame folder, rerun | the rerun is up to date (the output is not part of the input's identity) |
| a relit folder inside the set it reads, rerun | up to date |
| a gbuffers set inside the render folder it converts, rerun | up to date |
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.fault_matrix.plates import write_plate

REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "tests" / "fixtures" / "blender_exr"


@pytest.fixture(scope="module")
def plate(tmp_path_factory):
    return write_plate(tmp_path_factory.mktemp("plate") / "plate.mp4", 6)


@pytest.fixture(scope="module")
def inv(ckpts):
    from engine.pipelines import InverseRenderer

    return InverseRenderer.from_pretrained(ckpts[0], device="cpu")


def settings(**kw):
    from engine.jobs.inverse_job import InverseSettings

    base = dict(passes=("depth",), frames=4, overlap=2, steps=1, resolution=(64, 64), previews=False, seed=1)
    return InverseSettings(**{**base, **kw})


def files_in(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def manifest_files(folder: Path) -> set[str]:
    from engine.gbuffer import open_gbuffer_set

    gset = open_gbuffer_set(folder)
    m = gset.manifest.data
    listed = {gset.manifest.pass_file(p, f) for p in gset.passes for f in gset.frame_numbers}
    from engine.gbuffer import frame_path

    for pattern in (m.get("previews") or {}).values():
        listed |= {frame_path(pattern, f) for f in gset.frame_numbers}
    listed |= {v for v in [m.get("contact_sheet"), *(m.get("videos") or {}).values()] if v}
    return listed | {"manifest.json"}


def test_rerun_with_other_passes_leaves_only_the_new_sets_files(plate, inv, tmp_path):
    from engine.jobs.inverse_job import run_clip

    out = tmp_path / "set"
    run_clip(plate, out, settings(passes=("basecolor", "roughness"), previews=True), inv, show_progress=False)
    assert (out / "contact_sheet.mp4").is_file() and (out / "previews" / "roughness").is_dir()
    (out / "notes.txt").write_text("mine")
    run_clip(plate, out, settings(passes=("depth",)), inv, show_progress=False)
    assert files_in(out) == manifest_files(out) | {"notes.txt"}
    assert (out / "notes.txt").read_text() == "mine"
    assert not (out / "roughness").exists() and not (out / "previews").exists()


def test_rerun_with_fewer_frames_leaves_only_those_frames(plate, inv, tmp_path):
    from engine.jobs.inverse_job import run_clip

    out = tmp_path / "set"
    run_clip(plate, out, settings(), inv, show_progress=False)
    run_clip(plate, out, settings(frame_range=(2, 5)), inv, show_progress=False)
    assert files_in(out) == manifest_files(out)
    assert sorted(p.name for p in (out / "depth").iterdir()) == [f"depth.{f:04d}.exr" for f in range(2, 6)]


def test_an_interrupted_runs_files_are_removed_by_the_next_finished_run(plate, inv, tmp_path):
    from engine.jobs.inverse_job import run_clip
    from engine.pipelines import Cancelled

    out = tmp_path / "set"
    run_clip(plate, out, settings(), inv, show_progress=False)
    calls = []
    with pytest.raises(Cancelled):    # cancelled in the second segment: frames 1-2 of roughness are written
        run_clip(plate, out, settings(passes=("roughness",), windows_per_segment=1), inv, show_progress=False,
                 should_cancel=lambda: calls.append(1) or len(calls) > 1)
    assert (out / "roughness").is_dir()
    run_clip(plate, out, settings(passes=("metallic",)), inv, show_progress=False)
    assert files_in(out) == manifest_files(out)
    assert not (out / "roughness").exists() and not (out / "depth").exists()


def test_overwrite_never_deletes_a_manifest_the_engine_did_not_write(plate, inv, tmp_path):
    from engine.errors import classify
    from engine.jobs.inverse_job import run_clip

    out = tmp_path / "set"
    out.mkdir()
    (out / "manifest.json").write_text('{"project": "my own notes"}')
    with pytest.raises(Exception) as err:
        run_clip(plate, out, settings(overwrite=True), inv, show_progress=False)
    c = classify(err.value)
    assert c.code == "input_error" and "manifest.json" in c.message and "did not write" in c.message
    assert "\n" not in c.message
    assert (out / "manifest.json").read_text() == '{"project": "my own notes"}'


def test_a_foreign_file_in_the_way_is_never_overwritten(plate, inv, tmp_path):
    from engine.errors import classify
    from engine.jobs.inverse_job import run_clip

    out = tmp_path / "set"
    (out / "depth").mkdir(parents=True)
    (out / "depth" / "depth.0003.exr").write_bytes(b"my own picture")
    with pytest.raises(Exception) as err:
        run_clip(plate, out, settings(overwrite=True), inv, show_progress=False)
    c = classify(err.value)
    assert c.code == "input_error" and "depth.0003.exr" in c.message and "did not write" in c.message
    assert (out / "depth" / "depth.0003.exr").read_bytes() == b"my own picture"
    assert not (out / "manifest.json").exists()


def test_a_second_run_into_a_locked_folder_fails_at_once_naming_the_holder(plate, inv, tmp_path):
    from engine.errors import classify, describe
    from engine.jobs.inverse_job import run_inverse
    from engine.jobs.out_lock import OutLock

    import threading

    out = tmp_path / "set"
    held, done = threading.Event(), threading.Event()

    def other_run():                       # another holder (a thread here; another process in the CLI case)
        with OutLock(out, command="diffusion-renderer inverse other.mp4 --out set"):
            held.set()
            done.wait(60)

    holder = threading.Thread(target=other_run)
    holder.start()
    try:
        assert held.wait(60)
        with pytest.raises(Exception) as err:
            run_inverse(plate, out, settings(), renderer=inv, show_progress=False)
    finally:
        done.set()
        holder.join()
    c = classify(err.value)
    assert c.code == "input_error" and f"process {os.getpid()}" in c.message and "other.mp4" in c.message
    assert "another output folder" in describe(err.value) and "\n" not in describe(err.value)
    assert not (out / "manifest.json").exists() and not (out / ".dr-lock").exists()
    run_inverse(plate, out, settings(), renderer=inv, show_progress=False)      # free again
    assert not (out / ".dr-lock").exists()


def test_a_stale_lock_of_a_dead_process_is_reclaimed(plate, inv, tmp_path):
    from engine.jobs.inverse_job import run_inverse

    out = tmp_path / "set"
    out.mkdir()
    (out / ".dr-lock").write_text(json.dumps({"pid": 2 ** 22 + 17, "host": "gone", "command": "killed run",
                                              "since": time.time() - 3600}))
    summary = run_inverse(plate, out, settings(), renderer=inv, show_progress=False)
    assert summary["clips"][0]["status"] == "done"
    assert files_in(out) == manifest_files(out)


def _cli(plate, out, ckpt, steps, seed):
    return [sys.executable, "-m", "engine", "inverse", str(plate), "--out", str(out), "--model", str(ckpt),
            "--resolution", "64x64", "--steps", str(steps), "--frames", "4", "--overlap", "2", "--device", "cpu",
            "--passes", "depth", "--seed", str(seed), "--no-previews"]


# the second run: imports done, then waits for a line on stdin before running the CLI (so that it starts while
# the first run holds the folder, however long imports take on the machine)
_WAITING_CLI = ("import sys; import engine.cli, engine.jobs.inverse_job; print('ready', flush=True); "
                "sys.stdin.readline(); sys.exit(engine.cli.main(sys.argv[1:]))")


def test_two_cli_runs_into_one_folder_one_proceeds_one_fails_clearly(plate, ckpts, tmp_path):
    from engine.io import read_exr

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = tmp_path / "shared"
    fast = subprocess.Popen([sys.executable, "-c", _WAITING_CLI, *_cli(plate, out, ckpts[0], 1, 1)[3:]], cwd=REPO,
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert fast.stdout.readline().strip() == "ready", fast.stderr.read()
    slow = subprocess.Popen(_cli(plate, out, ckpts[0], 20, 2), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300            # against hanging only, never asserted on
        while True:
            try:
                if json.loads((out / ".dr-lock").read_text() or "{}").get("pid") == slow.pid:
                    break
            except (OSError, ValueError):
                pass
            assert slow.poll() is None, f"the first run never locked {out}: {slow.stderr.read()}"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        _, fast_err = fast.communicate("go\n")
    finally:
        fast.kill() if fast.poll() is None else None
        slow.wait()
    assert slow.returncode == 0, slow.stderr.read()
    assert fast.returncode == 2, fast_err
    lines = [line for line in fast_err.splitlines() if line.strip()]
    assert len(lines) == 1 and f"process {slow.pid}" in lines[0] and "--out" in lines[0], fast_err
    single = tmp_path / "single"
    subprocess.run(_cli(plate, single, ckpts[0], 20, 2), cwd=REPO, env=env, check=True, capture_output=True)
    m = json.loads((out / "manifest.json").read_text())
    assert m["provenance"]["settings"]["steps"] == 20 and m["provenance"]["settings"]["seed"] == 2
    assert files_in(out) == files_in(single)
    for rel in files_in(single) - {"manifest.json"}:
        a, b = read_exr(out / rel), read_exr(single / rel)
        assert all(np.array_equal(a[c], b[c]) for c in a), rel


def test_out_inside_the_input_frame_folder_becomes_up_to_date(inv, tmp_path):
    from engine.io.images import write_png
    from engine.jobs.inverse_job import run_inverse

    shot = tmp_path / "shot"
    for i in range(1, 6):
        write_png(shot / f"frame_{i:04d}.png", np.full((64, 64, 3), i / 8, np.float32))
    out = shot / "delit"
    first = run_inverse(shot, out, settings(source_fps=24), renderer=inv, show_progress=False)
    assert first["clips"][0]["status"] == "done"
    again = run_inverse(shot, out, settings(source_fps=24), renderer=inv, show_progress=False)
    assert again["clips"][0]["status"] == "up-to-date"


def test_relit_folder_inside_the_set_it_reads_becomes_up_to_date(plate, inv, ckpts, tmp_path):
    from engine.io.exr import write_exr_rgb
    from engine.jobs.forward_job import ForwardSettings, run_forward
    from engine.jobs.inverse_job import run_clip
    from engine.pipelines import ForwardRenderer

    gset = tmp_path / "set"
    run_clip(plate, gset, settings(passes=("basecolor", "normal", "depth", "roughness", "metallic")), inv,
             show_progress=False)
    hdri = tmp_path / "sky.exr"
    write_exr_rgb(hdri, np.ones((8, 16, 3), np.float32), dtype="float")
    fwd = ForwardRenderer.from_pretrained(ckpts[1], device="cpu")
    s = ForwardSettings(frames=4, overlap=2, steps=1, resolution=(64, 64), previews=False, seed=1, model=str(ckpts[1]))
    first = run_forward(gset, [hdri], gset / "relit", s, renderer=fwd, show_progress=False)
    assert first["clips"][0]["status"] == "done"
    again = run_forward(gset, [hdri], gset / "relit", s, renderer=fwd, show_progress=False)
    assert again["clips"][0]["status"] == "up-to-date"


def test_gbuffers_set_inside_its_render_folder_becomes_up_to_date(tmp_path):
    import shutil

    from engine.jobs.gbuffers_job import GBuffersSettings, run_gbuffers

    render = tmp_path / "render"
    shutil.copytree(FIX / "blender50", render)
    first = run_gbuffers(render, render / "set", GBuffersSettings(previews=False))
    assert first["clips"][0]["status"] == "done"
    again = run_gbuffers(render, render / "set", GBuffersSettings(previews=False))
    assert again["clips"][0]["status"] == "up-to-date"
