"""Fault matrix — disk space (issue 15, Build 4): checked before work, a full disk reported, resume picks up.

| case | expected behaviour |
|---|---|
| predicted outputs (EXRs + resume cache) above the free space | refused before any work: one line with the path, the space needed and free; nothing written |
| the disk fills while EXRs are written (ENOSPC after 5 files) | one line naming the file, the job's need and the free space; no half-written file, no temporaries, no manifest |
| … then space is freed and the job rerun | finished segments resume; the set equals a clean run bit for bit |
| the disk fills while the resume cache is written (safetensors' own error) | the same one line naming the cache file |
| a bare OSError(ENOSPC) reaching the CLI/server | classified input_error naming the file and the free space there |
"""
from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from tests.fault_matrix.plates import write_plate


@pytest.fixture(scope="module")
def plate(tmp_path_factory):
    return write_plate(tmp_path_factory.mktemp("plate") / "plate.mp4", 8)


@pytest.fixture(scope="module")
def inv(ckpts):
    from engine.pipelines import InverseRenderer

    return InverseRenderer.from_pretrained(ckpts[0], device="cpu")


def settings(**kw):
    from engine.jobs.inverse_job import InverseSettings

    base = dict(passes=("basecolor", "depth"), frames=4, overlap=2, steps=1, resolution=(64, 64), previews=False,
                seed=4, windows_per_segment=1)
    return InverseSettings(**{**base, **kw})


def test_not_enough_space_is_refused_before_any_work(plate, inv, tmp_path, monkeypatch):
    from engine.errors import describe
    from engine.jobs import disk_space
    from engine.jobs.inverse_job import run_inverse

    monkeypatch.setattr(disk_space, "free_bytes", lambda path: 300 << 10)
    events = []
    out = tmp_path / "set"
    with pytest.raises(disk_space.DiskSpaceError) as err:
        run_inverse(plate, out, settings(), renderer=inv, listener=events.append, show_progress=False)
    text = describe(err.value)
    assert "\n" not in text and str(out) in text and "needs about" in text and "300.0 KB free" in text
    assert "another disk" in text
    assert events == [] and not list(out.rglob("*.exr")) and not (out / "manifest.json").exists()


def _full_after(n_ok: int, monkeypatch):
    """EXR writes fail with ENOSPC after ``n_ok`` files, leaving a partly written temporary behind them."""
    from engine.atomic import atomic_write
    from engine.io import exr

    real = exr.write_exr
    count = [0]

    def write_exr(path, channels, **kw):
        count[0] += 1
        if count[0] <= n_ok:
            return real(path, channels, **kw)

        def partial(tmp):
            with open(tmp, "wb") as fh:
                fh.write(b"v/1\x01half-written")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), tmp)
        return atomic_write(path, partial)

    monkeypatch.setattr(exr, "write_exr", write_exr)


def test_full_disk_while_writing_is_reported_and_the_rerun_resumes_bit_for_bit(plate, inv, tmp_path, monkeypatch):
    from engine.errors import classify
    from engine.io import read_exr
    from engine.jobs.disk_space import DiskSpaceError
    from engine.jobs.inverse_job import run_clip

    out = tmp_path / "set"
    with monkeypatch.context() as m:
        _full_after(5, m)
        with pytest.raises(DiskSpaceError) as err:
            run_clip(plate, out, settings(), inv, show_progress=False)
    c = classify(err.value)
    assert c.code == "input_error" and "\n" not in c.message
    assert str(out) in c.message and "no space left on the disk" in c.message and "need about" in c.message and "free" in c.message
    assert "resumed" in c.hint
    assert not (out / "manifest.json").exists() and not list(out.rglob("*.tmp*"))
    for p in out.rglob("*.exr"):
        read_exr(p)                                     # every EXR under a final name is complete
    res = run_clip(plate, out, settings(), inv, show_progress=False)
    assert res.resumed_segments == 1                   # the segment finished before the disk filled
    clean = tmp_path / "clean"
    run_clip(plate, clean, settings(), inv, show_progress=False)
    names = sorted(p.relative_to(clean) for p in clean.rglob("*.exr"))
    assert names == sorted(p.relative_to(out) for p in out.rglob("*.exr"))
    for rel in names:
        a, b = read_exr(out / rel), read_exr(clean / rel)
        assert all(np.array_equal(a[ch], b[ch]) for ch in a), rel


def test_full_disk_while_caching_a_segment_is_reported_with_the_cache_file(plate, inv, tmp_path, monkeypatch):
    import safetensors.torch

    from engine.jobs import disk_space, inverse_job
    from engine.jobs.disk_space import DiskSpaceError

    def save_file(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"\0" * 10)
        raise RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    monkeypatch.setattr(inverse_job, "check_disk_space", lambda *a, **k: None)
    monkeypatch.setattr(disk_space, "free_bytes", lambda path: 1000)
    out = tmp_path / "set"
    with pytest.raises(DiskSpaceError) as err:
        inverse_job.run_clip(plate, out, settings(), inv, show_progress=False)
    msg = str(err.value)
    assert ".dr-resume" in msg and "seg_0000.safetensors" in msg and "need about" in msg
    assert not list(out.rglob("*.tmp*")) and not list(out.rglob("*.safetensors"))


def test_a_bare_enospc_names_the_file_and_the_free_space(tmp_path):
    from engine.errors import classify

    c = classify(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "x" / "depth.0001.exr")))
    assert c.code == "input_error" and str(tmp_path / "x" / "depth.0001.exr") in c.message
    assert "free there" in c.message and "another disk" in c.hint
