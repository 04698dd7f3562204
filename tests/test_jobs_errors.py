"""Bad input for the inverse/forward commands: exit 2, one clear line, no traceback, nothing damaged."""
import warnings

import numpy as np
import pytest

from engine.cli import main
from engine.io.images import write_png


@pytest.fixture()
def out(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    (d / "keep.txt").write_text("artist notes")
    return d


def _frames(folder, n=3, size=(64, 64)):
    for i in range(n):
        write_png(folder / f"f_{i + 1:04d}.png", np.full((size[1], size[0], 3), 0.1 * (i + 1)))
    return folder


def _run(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def _assert_one_line(code, err, text, out):
    assert code == 2, err
    lines = [e for e in err if not e.startswith("  ")]
    assert len(lines) == 1 and text in lines[0], err
    assert "Traceback" not in "\n".join(err)
    assert (out / "keep.txt").read_text() == "artist notes"


def _inv(ckpts, inp, out, *extra):
    return ["inverse", str(inp), "--out", str(out), "--model", str(ckpts[0]), "--steps", "1", "--device", "cpu",
            "--resolution", "64x64", "--no-previews", *extra]


def test_missing_input(ckpts, out, tmp_path, capsys):
    _assert_one_line(*_run(capsys, _inv(ckpts, tmp_path / "nope.mp4", out)), "not found", out)


def test_unreadable_input(ckpts, out, tmp_path, capsys):
    bad = tmp_path / "clip"
    bad.mkdir()
    (bad / "f_0001.png").write_bytes(b"not a png at all")
    _assert_one_line(*_run(capsys, _inv(ckpts, bad, out)), "f_0001.png", out)
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"\x00" * 100)
    _assert_one_line(*_run(capsys, _inv(ckpts, fake, out)), "fake.mp4", out)


def test_zero_frames(ckpts, out, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    _assert_one_line(*_run(capsys, _inv(ckpts, empty, out)), "no clips found", out)
    clip = _frames(tmp_path / "c")
    _assert_one_line(*_run(capsys, _inv(ckpts, clip, out, "--frame-range", "50:60")), "frame", out)


def test_resolution_not_multiple_of_64(ckpts, out, tmp_path, capsys):
    clip = _frames(tmp_path / "c")
    code, err = _run(capsys, _inv(ckpts, clip, out)[:-3] + ["--resolution", "100x64"])
    _assert_one_line(code, err, "multiples of 64", out)


def test_output_folder_not_writable(ckpts, tmp_path, capsys):
    clip = _frames(tmp_path / "c")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = _run(capsys, _inv(ckpts, clip, blocker / "out"))
    assert code == 2 and len(err) == 1 and "not writable" in err[0]
    assert blocker.read_text() == "x"


def test_nan_in_exr_is_replaced_and_reported(ckpts, out, tmp_path, capsys):
    from engine.io import write_exr

    clip = tmp_path / "exr"
    for i in range(2):
        img = np.full((64, 64), 0.5, np.float32)
        img[0, 0] = np.nan
        img[1, 1] = np.inf
        write_exr(clip / f"plate.{i + 1:04d}.exr", {"R": img, "G": img, "B": img}, dtype="float")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code, err = _run(capsys, _inv(ckpts, clip, out / "set"))
    assert code == 0
    assert any("NaN/Inf" in e and "replaced" in e for e in err), err
    assert len(list((out / "set" / "depth").glob("*.exr"))) == 2


def _fwd(ckpts, gb, out, hdri, *extra):
    return ["forward", str(gb), "--hdri", str(hdri), "--out", str(out), "--model", str(ckpts[1]), "--steps", "1",
            "--device", "cpu", "--env-resolution", "32x32", "--no-previews", *extra]


@pytest.fixture()
def ref_pngs(tmp_path):
    clip = tmp_path / "gb"
    for f in range(2):
        for p in ("basecolor", "normal", "depth", "roughness", "metallic"):
            write_png(clip / f"0000.{f:04d}.{p}.png", np.full((64, 64, 3), 0.5))
    return clip


@pytest.fixture()
def hdri(tmp_path):
    from engine.envmap import write_hdr

    write_hdr(tmp_path / "sky.hdr", np.ones((8, 16, 3), np.float32))
    return tmp_path / "sky.hdr"


def test_hdri_missing_or_not_hdr(ckpts, out, ref_pngs, hdri, tmp_path, capsys):
    _assert_one_line(*_run(capsys, _fwd(ckpts, ref_pngs, out, tmp_path / "none.hdr")), "file not found", out)
    png = tmp_path / "sky.png"
    write_png(png, np.ones((8, 16, 3)))
    _assert_one_line(*_run(capsys, _fwd(ckpts, ref_pngs, out, png)), "not an HDR", out)
    broken = tmp_path / "broken.hdr"
    broken.write_bytes(b"#?RADIANCE\nnonsense")
    _assert_one_line(*_run(capsys, _fwd(ckpts, ref_pngs, out, broken)), "broken.hdr", out)


def test_gbuffer_passes_missing_or_uneven(ckpts, out, ref_pngs, hdri, capsys):
    (ref_pngs / "0000.0001.depth.png").unlink()
    _assert_one_line(*_run(capsys, _fwd(ckpts, ref_pngs, out, hdri)), "different frame counts", out)
    for f in ref_pngs.glob("*.depth.png"):
        f.unlink()
    _assert_one_line(*_run(capsys, _fwd(ckpts, ref_pngs, out, hdri)), "missing required G-buffer pass(es): depth", out)


def test_gbuffer_sizes_differ(ckpts, out, ref_pngs, hdri, capsys):
    write_png(ref_pngs / "0000.0001.roughness.png", np.full((32, 64, 3), 0.5))
    code, err = _run(capsys, _fwd(ckpts, ref_pngs, out, hdri))
    assert code == 2 and "Traceback" not in "\n".join(err)
    assert any("roughness" in e for e in err), err


def test_forward_writes_relit_set(ckpts, out, ref_pngs, hdri, capsys):
    code, _ = _run(capsys, _fwd(ckpts, ref_pngs, out, hdri, "--guidance", "1.0"))
    assert code == 0
    assert sorted(p.name for p in (out / "sky" / "relit").iterdir()) == ["relit.0001.exr", "relit.0002.exr"]
    assert (out / "keep.txt").read_text() == "artist notes"


def test_device_or_file_where_a_folder_or_file_belongs(ckpts, out, ref_pngs, hdri, tmp_path, capsys):
    """A character device as the HDRI, a file as the output folder or the model: one line naming it."""
    if not __import__("os").path.exists("/dev/zero"):
        pytest.skip("needs a character device")
    _assert_one_line(*_run(capsys, _fwd(ckpts, ref_pngs, out, "/dev/zero")), "not a regular file or folder", out)
    blocker = out / "keep.txt"
    _assert_one_line(*_run(capsys, _fwd(ckpts, ref_pngs, blocker, hdri)), "is an existing file", out)
    argv = _fwd(ckpts, ref_pngs, out, hdri)
    argv[argv.index("--model") + 1] = str(blocker)
    _assert_one_line(*_run(capsys, argv), "not a checkpoint folder", out)
