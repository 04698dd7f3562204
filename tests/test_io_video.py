"""engine.io.video: mp4 round trip through the bundled ffmpeg, selection, lazy streaming, errors."""
import os

import numpy as np
import pytest
from PIL import Image

from engine.io import find_clips, open_clip, probe_video, write_mp4
from engine.io.video import VideoClip

H, W, N = 96, 160, 30


def pattern(k, h=H, w=W):
    """Smooth gradients plus a per-frame level, so every frame is identifiable after lossy coding."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([x / w, y / h, np.full((h, w), (k + 0.5) / N, np.float32)], -1)


@pytest.fixture(scope="module")
def mp4(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    assert write_mp4(path, (pattern(k) for k in range(N)), fps=24) == N
    return path


def test_mp4_round_trip(mp4):
    info = probe_video(mp4)
    assert (info.frame_count, info.fps, info.size, info.codec, info.pix_fmt) == (N, 24.0, (W, H), "h264", "yuv420p")
    with open_clip(mp4) as clip:
        assert isinstance(clip, VideoClip)
        assert len(clip) == N and clip.fps == 24.0 and clip.size == (W, H) and not clip.is_linear
        assert clip.frame_numbers == list(range(N)) and "h264" in clip.source and "30 frames" in clip.source
        frames = clip.read_range(0, N)
    assert frames.shape == (N, H, W, 3) and frames.dtype == np.float32
    assert 0.0 <= frames.min() and frames.max() <= 1.0
    ref = np.stack([pattern(k) for k in range(N)])
    assert np.abs(frames - ref).mean() < 0.03
    levels = frames[:, H // 2, W // 2, 2]  # frame order preserved
    np.testing.assert_allclose(levels, ref[:, H // 2, W // 2, 2], atol=0.03)
    assert oct(os.stat(mp4).st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


def test_random_access_backwards_and_repeats(mp4):
    clip = open_clip(mp4)
    a = clip.read(20)
    b = clip.read(3)  # re-opens the decoder from the start
    c = clip.read(20)
    np.testing.assert_array_equal(a, c)
    assert abs(float(b[H // 2, W // 2, 2]) - (3.5 / N)) < 0.03
    it = list(iter(clip))
    assert len(it) == N
    clip.close()
    clip.close()  # idempotent


def test_frame_range_and_fps_selection(mp4):
    clip = open_clip(mp4, frame_range=(5, 20))
    assert clip.frame_numbers == list(range(5, 21)) and len(clip) == 16
    assert abs(float(clip.read(0)[H // 2, W // 2, 2]) - 5.5 / N) < 0.03
    half = open_clip(mp4, fps=12)  # 24 → 12: every other source frame
    assert half.fps == 12 and half.frame_numbers == list(range(0, N, 2))
    got = half.read_range(0, len(half))[:, H // 2, W // 2, 2]
    np.testing.assert_allclose(got, [(k + 0.5) / N for k in range(0, N, 2)], atol=0.03)
    sub = open_clip(mp4, frame_range=(10, 19), fps=8)
    assert sub.frame_numbers == [10, 13, 16, 19]
    fast = open_clip(mp4, frame_range=(0, 2), fps=48)  # faster than the source: frames repeat
    assert fast.frame_numbers == [0, 1, 1, 2, 2]
    f = fast.read_range(0, 5)
    np.testing.assert_array_equal(f[1], f[2])


def test_frame_range_outside_names_clip_length(mp4):
    with pytest.raises(ValueError, match=r"clip.mp4: frame range \(25, 40\) is outside the clip, which has 30 "
                                         r"frames \(0..29\)"):
        open_clip(mp4, frame_range=(25, 40))
    with pytest.raises(ValueError, match=r"frame range \(-1, 3\) is outside"):
        open_clip(mp4, frame_range=(-1, 3))


def test_odd_size_padded_to_even_and_uint8_input(tmp_path):
    frames = [(pattern(k, 33, 51) * 255).astype(np.uint8) for k in range(4)]
    assert write_mp4(tmp_path / "odd.mp4", frames, fps=10, quality=9) == 4
    clip = open_clip(tmp_path / "odd.mp4")
    assert clip.size == (52, 34) and len(clip) == 4 and clip.fps == 10
    img = clip.read(1)
    assert np.abs(img[:33, :51] - frames[1] / 255.0).mean() < 0.03
    np.testing.assert_allclose(img[33, :51], img[32, :51], atol=0.05)  # padding repeats the edge


def test_write_mp4_is_atomic(tmp_path):
    target = tmp_path / "out.mp4"

    def frames():
        yield pattern(0)
        yield pattern(1)
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError, match="renderer crashed"):
        write_mp4(target, frames(), fps=24)
    assert os.listdir(tmp_path) == []  # neither the final name nor a temporary file remains

    write_mp4(target, [pattern(0)] * 2, fps=24)
    before = target.read_bytes()
    with pytest.raises(ValueError, match=r"frame 1 is 80x48, the first frame was 160x96"):
        write_mp4(target, [pattern(0), pattern(0, 48, 80)], fps=24)
    assert target.read_bytes() == before and os.listdir(tmp_path) == ["out.mp4"]


def test_write_mp4_errors(tmp_path):
    with pytest.raises(ValueError, match="no frames to write"):
        write_mp4(tmp_path / "e.mp4", [], fps=24)
    with pytest.raises(ValueError, match=r"frame 0 must be \(H, W, 3\)"):
        write_mp4(tmp_path / "e.mp4", [np.zeros((4, 4, 2))], fps=24)
    with pytest.raises(ValueError, match="fps must be positive"):
        write_mp4(tmp_path / "e.mp4", [pattern(0)], fps=0)
    with pytest.raises(ValueError, match="quality must be within 1..10"):
        write_mp4(tmp_path / "e.mp4", [pattern(0)], fps=24, quality=11)
    assert os.listdir(tmp_path) == []


def test_read_errors(tmp_path, mp4):
    with pytest.raises(FileNotFoundError, match="missing.mp4: no such"):
        open_clip(tmp_path / "missing.mp4")
    with pytest.raises(FileNotFoundError, match="missing.mp4: no such video file"):
        probe_video(tmp_path / "missing.mp4")
    (tmp_path / "text.mp4").write_text("this is not a video")
    with pytest.raises(ValueError, match="text.mp4: not a readable video"):
        open_clip(tmp_path / "text.mp4")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "still.png")
    os.replace(tmp_path / "still.png", tmp_path / "still.mov")
    with pytest.raises(ValueError, match="still.mov: is a still image"):
        open_clip(tmp_path / "still.mov")
    data = bytearray(mp4.read_bytes())  # keep the container, blank every coded frame
    i = data.index(b"mdat")
    data[i + 4:] = bytes(len(data) - i - 4)
    (tmp_path / "blank.mp4").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"blank.mp4: video has zero \(decodable\) frames"):
        open_clip(tmp_path / "blank.mp4")
    with pytest.raises(ValueError, match="is a folder"):
        probe_video(tmp_path)


def test_rotation_and_10_bit_sources(tmp_path, mp4):
    import subprocess

    import imageio_ffmpeg

    ff = imageio_ffmpeg.get_ffmpeg_exe()
    subprocess.run([ff, "-v", "error", "-display_rotation", "90", "-i", str(mp4), "-c", "copy", "-y",
                    str(tmp_path / "rot.mp4")], check=True)
    rot = open_clip(tmp_path / "rot.mp4")
    assert rot.size == (H, W) and rot.read(0).shape == (W, H, 3)  # decoded upright, size after rotation
    deep = subprocess.run([ff, "-v", "error", "-i", str(mp4), "-c:v", "libx264", "-pix_fmt", "yuv420p10le",
                           "-y", str(tmp_path / "ten.mkv")])
    if deep.returncode:
        pytest.skip("this ffmpeg build cannot encode 10-bit H.264")
    ten = open_clip(tmp_path / "ten.mkv")
    assert "yuv420p10le" in ten.source and len(ten) == N
    img = ten.read(4)
    assert np.abs(img - pattern(4)).mean() < 0.03 and len(np.unique(img)) > 256  # finer than 8-bit steps


def test_batch_of_videos(tmp_path, mp4):
    (tmp_path / "b").mkdir()
    for name in ("take10.mp4", "take2.mov"):
        (tmp_path / "b" / name).write_bytes(mp4.read_bytes())
    clips = find_clips(tmp_path / "b")
    assert [p.name for p in clips] == ["take2.mov", "take10.mp4"]
    assert all(len(open_clip(p)) == N for p in clips)


def test_probe_is_cached_per_file_and_lists_runs(mp4):
    from engine.io.video import frame_list

    assert probe_video(mp4) is probe_video(mp4)              # one decode per file version
    assert probe_video(mp4).missing == () and probe_video(mp4).container_frames == N
    assert frame_list([4, 5, 6, 9]) == "4–6, 9" and frame_list([7]) == "7" and frame_list([]) == ""
