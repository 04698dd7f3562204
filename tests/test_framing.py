"""engine.jobs.framing: pad / crop / stretch plans by value, resampling per kind, no squash."""
import numpy as np
import pytest

from engine.jobs.common import JobError
from engine.jobs.framing import (from_processing, parse_output_size, plan_framing, processing_size, resize,
                                 source_to_output, to_processing)


def test_16_9_plate_pads_into_the_cover_512_size_and_comes_back_at_its_own_size():
    assert processing_size((1920, 1080)) == (960, 512)
    f = plan_framing((1920, 1080), (960, 512), "pad")
    # scale min(960/1920, 512/1080) = 0.474 → 910×512, centred: 25 px of padding left and right
    assert f.scaled == (910, 512) and f.content == (25, 0, 935, 512) and f.padding == (25, 0, 25, 0)
    assert f.output == (1920, 1080) and f.crop == (0, 0, 1920, 1080) and f.warnings() == []
    assert plan_framing((1920, 1080), (960, 512), "pad", "processing").output == (910, 512)
    assert plan_framing((1920, 1080), (960, 512), "pad", "1280x720").output == (1280, 720)
    rec = f.record()
    assert rec["padding"] == [25, 0, 25, 0] and rec["processing"] == [960, 512] and rec["fit"] == "pad"


def test_3_2_plate_in_a_2_1_size_pad_crop_and_stretch():
    pad = plan_framing((600, 400), (512, 256), "pad")
    assert pad.scaled == (384, 256) and pad.content == (64, 0, 448, 256) and pad.output == (600, 400)
    crop = plan_framing((600, 400), (512, 256), "crop")
    # cover: scale max(512/600, 256/400) = 0.853 → the used region is 600×300, rows 50..349
    assert crop.crop == (0, 50, 600, 350) and crop.content == (0, 0, 512, 256) and crop.output == (600, 300)
    [warning] = crop.warnings()
    assert "600x300" in warning and "rows 0..49 and 350..399" in warning and "fit=pad" in warning
    stretch = plan_framing((600, 400), (512, 256), "stretch")
    assert stretch.scaled == (512, 256) and stretch.output == (600, 400) and stretch.warnings() == []


def test_same_size_is_the_identity():
    f = plan_framing((128, 64), (128, 64), "pad")
    assert f.identity and f.padding == (0, 0, 0, 0)
    x = np.random.default_rng(0).random((2, 64, 128, 3)).astype(np.float32)
    assert np.array_equal(to_processing(x, f), x) and np.array_equal(from_processing(x, f), x)
    assert np.array_equal(source_to_output(x, f), x)


def test_output_size_errors_and_aspect_guard():
    assert parse_output_size("source") == "source" and parse_output_size("1920×1080") == (1920, 1080)
    with pytest.raises(JobError, match="output_size 'big'"):
        parse_output_size("big")
    with pytest.raises(JobError, match=r"use 1920x1280"):
        plan_framing((600, 400), (512, 256), "pad", "1920x1080")   # 16:9 out of a 3:2 plate: a squash
    assert plan_framing((600, 400), (512, 256), "stretch", "1920x1080").output == (1920, 1080)
    with pytest.raises(JobError, match="fit 'squash'"):
        plan_framing((600, 400), (512, 256), "squash")


def _disc(w, h, cx, cy, r):
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    return ((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r).astype(np.float32)


@pytest.mark.parametrize("fit", ["pad", "crop"])
def test_a_circle_stays_a_circle(fit):
    """A disc in a 3:2 plate, through a 2:1 processing size and back: still round, same place."""
    w, h = 300, 200
    disc = _disc(w, h, 150, 100, 60)
    f = plan_framing((w, h), (256, 128), fit)
    proc = to_processing(np.repeat(disc[None, ..., None], 3, -1), f)
    assert proc.shape == (1, 128, 256, 3)
    m = proc[0, ..., 0] > 0.5                       # in the model's frame the disc is round too
    ys, xs = np.nonzero(m)
    assert abs((xs.max() - xs.min()) - (ys.max() - ys.min())) <= 2
    back = from_processing(proc, f)[0, ..., 0] > 0.5
    assert back.shape == (f.output[1], f.output[0])
    ys, xs = np.nonzero(back)
    assert abs((xs.max() - xs.min()) - (ys.max() - ys.min())) <= 3
    x0, y0 = f.crop[:2]
    assert abs(xs.mean() + x0 - 150) < 1.5 and abs(ys.mean() + y0 - 100) < 1.5
    ref = disc[f.crop[1]:f.crop[3], f.crop[0]:f.crop[2]] > 0.5
    assert (back != ref).mean() < 0.02


def test_stretch_squashes_only_when_asked():
    disc = _disc(300, 200, 150, 100, 60)
    f = plan_framing((300, 200), (256, 128), "stretch")
    m = to_processing(disc[None, ..., None], f)[0, ..., 0] > 0.5
    ys, xs = np.nonzero(m)
    assert (xs.max() - xs.min()) / (ys.max() - ys.min()) == pytest.approx(256 / 300 / (128 / 200), rel=0.05)


def test_padding_replicates_the_edges():
    f = plan_framing((4, 2), (8, 8), "pad")          # 4×2 → 8×4, two rows of padding above and below
    assert f.scaled == (8, 4) and f.padding == (0, 2, 0, 2)
    x = np.zeros((1, 2, 4, 1), np.float32)
    x[0, 0], x[0, 1] = 0.25, 0.75
    p = to_processing(x, f)[0, ..., 0]
    assert np.allclose(p[:2], p[2]) and np.allclose(p[-2:], p[-3])   # edge rows repeated
    assert p[0, 0] < 0.5 < p[-1, 0]


def test_normals_renormalised_and_depth_never_mixes_background():
    n = np.zeros((1, 4, 4, 3), np.float32)
    n[..., :2, 2] = 1.0                                # facing the camera
    n[..., 2:, 0] = 1.0                                # facing right
    out = resize(n, (7, 7), "normal")
    assert np.allclose(np.linalg.norm(out, axis=-1), 1.0, atol=1e-5)
    enc = resize(n * 0.5 + 0.5, (7, 7), "normal-encoded")
    assert np.allclose(np.linalg.norm(enc * 2 - 1, axis=-1), 1.0, atol=1e-5)
    d = np.full((1, 8, 8, 1), 1e10, np.float32)
    d[:, 2:6, 2:6] = 3.0
    r = resize(d, (5, 5), "depth")[0, ..., 0]
    covered = r < 1e9
    assert covered.any() and (~covered).any()
    assert np.allclose(r[covered], 3.0)                # no 1e10 averaged into a covered pixel
    assert np.all(r[~covered] == 1e10)
    enc_d = np.ones((1, 4, 4, 1), np.float32)
    enc_d[:, 1:3, 1:3] = 0.2
    assert np.unique(resize(enc_d, (8, 8), "nearest")).tolist() == pytest.approx([0.2, 1.0])
