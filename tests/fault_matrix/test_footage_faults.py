"""Fault matrix — footage (issue 15, Build 1): a damaged video is never silently shorter.

| case | expected behaviour |
|---|---|
| mp4 whose middle does not decode (12 frames listed, 9 decode) | probe reports the 3 lost frames (container vs decoded, ffmpeg's error stream) |
| … given to `inverse` | exit 2, one line naming the file, the lost frames (6–8) and the fix (`--allow-missing-frames`); no set written |
| … through the server's `submit` | `input_error` naming the same frames |
| … with `--allow-missing-frames` | exit 0; the set keeps the decoded frames under their own numbers, manifest `missing_frames` [6, 7, 8], a warning in the result |
| … a `--frame-range` that avoids the damage | exit 0, nothing missing, no warning |
| an intact mp4 | no missing frames, no decode errors |
"""
import json

import numpy as np
import pytest

from engine.cli import main
from engine.io import probe_video, write_mp4

N = 12


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """A 12-frame mp4 and a copy whose middle fifth of bytes is zeroed (frames 6–8, 1-based, lost)."""
    root = tmp_path_factory.mktemp("footage")
    good = root / "good.mp4"
    rng = np.random.default_rng(0)
    assert write_mp4(good, [rng.random((64, 64, 3)).astype(np.float32) for _ in range(N)], fps=12) == N
    data = bytearray(good.read_bytes())
    a, b = len(data) * 2 // 5, len(data) * 3 // 5
    data[a:b] = bytes(b - a)
    bad = root / "bad.mp4"
    bad.write_bytes(bytes(data))
    return good, bad


def _inverse(capsys, ckpts, video, out, *extra):
    code = main(["inverse", str(video), "--out", str(out), "--model", str(ckpts[0]), "--steps", "1", "--device",
                 "cpu", "--resolution", "64x64", "--frames", "4", "--overlap", "1", "--no-previews", "--json",
                 *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


def test_the_fixture_really_loses_frames(videos):
    good, bad = videos
    info = probe_video(good)
    assert (info.frame_count, info.container_frames, info.missing, info.decode_errors) == (N, N, (), "")
    info = probe_video(bad)
    assert info.container_frames == N and info.frame_count == N - 3, info
    assert info.missing == (5, 6, 7) and info.decode_errors, info          # 0-based container indices


def test_a_damaged_video_is_refused_naming_the_lost_frames(videos, ckpts, tmp_path, capsys):
    code, _, err = _inverse(capsys, ckpts, videos[1], tmp_path / "out")
    assert code == 2 and len(err) == 1, err
    assert "bad.mp4" in err[0] and "3 of the 12 frames" in err[0] and "frames 6–8" in err[0], err
    assert "--allow-missing-frames" in err[0] and "Traceback" not in err[0], err
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_the_server_refuses_it_the_same_way(videos, ckpts, tmp_path):
    from test_errors import _server

    params = {"input": str(videos[1]), "out": str(tmp_path / "out"), "model": str(ckpts[0]), "steps": 1,
              "device": "cpu", "resolution": "64x64", "previews": False}
    msg = _server("inverse", params, tmp_path)
    assert msg["type"] == "error" and msg["code"] == "input_error", msg
    assert "frames 6–8" in msg["message"] and "\n" not in msg["message"], msg


def test_allow_missing_frames_continues_and_records_the_gaps(videos, ckpts, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = _inverse(capsys, ckpts, videos[1], out, "--allow-missing-frames")
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["missing_frames"] == [6, 7, 8]
    assert manifest["frame_numbers"] == [1, 2, 3, 4, 5, 9, 10, 11, 12]
    assert manifest["provenance"]["settings"]["allow_missing_frames"] is True
    clip = json.loads(stdout)["clips"][0]
    assert clip["frames"] == 9 and any("frames 6–8" in w and "cannot be decoded" in w for w in clip["warnings"])


def test_a_frame_range_clear_of_the_damage_runs_cleanly(videos, ckpts, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = _inverse(capsys, ckpts, videos[1], out, "--frame-range", "9:12")
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["frame_numbers"] == [9, 10, 11, 12] and "missing_frames" not in manifest
    assert not any("decoded" in w for w in json.loads(stdout)["clips"][0]["warnings"])
