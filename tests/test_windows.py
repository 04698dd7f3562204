"""Long clips: window planning, blend weights, windowed sampling and the seam metric."""
import numpy as np
import pytest
import torch

from engine.pipelines import InverseRenderer
from engine.pipelines.sampling import initial_noise
from engine.pipelines.windows import (
    chunk_boundaries,
    plan_windows,
    seam_metric,
    window_weights,
)


@pytest.mark.parametrize("total,window,overlap", [(30, 24, 6), (50, 24, 6), (24, 24, 6), (10, 4, 2), (7, 4, 0),
                                                  (3, 24, 6), (25, 24, 23)])
def test_plan_covers_clip_without_padding(total, window, overlap):
    plan = plan_windows(total, window, overlap)
    assert plan[0][0] == 0 and plan[-1][1] == total
    assert all(e - s == min(window, total) for s, e in plan), "every window has the model's length"
    for (s0, e0), (s1, e1) in zip(plan, plan[1:]):
        assert s0 < s1 <= e0, "windows advance and leave no gap"
        assert e0 - s1 >= overlap
    for mode in ("ramp", "hard"):
        w = window_weights(plan, total, mode)
        acc = torch.zeros(total)
        for (s, e), wi in zip(plan, w):
            acc[s:e] += wi
        assert torch.allclose(acc, torch.ones(total), atol=1e-6)
    hard = window_weights(plan, total, "hard")
    assert all(set(h.unique().tolist()) <= {0.0, 1.0} for h in hard)


def test_plan_rejects_bad_settings():
    with pytest.raises(ValueError, match="overlap"):
        plan_windows(30, 24, 24)
    with pytest.raises(ValueError, match="at least one frame"):
        plan_windows(0, 24, 6)


def test_seam_metric_detects_jumps():
    smooth = torch.linspace(0, 1, 12).view(12, 1, 1, 1).expand(12, 4, 4, 3)
    assert seam_metric(smooth, [6]) == pytest.approx(1.0, rel=1e-6)
    jumpy = smooth.clone()
    jumpy[6:] += 0.5
    assert seam_metric(jumpy, [6]) > 5


@pytest.fixture(scope="module")
def inv(ckpts):
    return InverseRenderer.from_pretrained(ckpts[0], device="cpu")


def test_windowed_inverse_all_modes(inv):
    rng = np.random.default_rng(3)
    frames = rng.random((7, 32, 32, 3), dtype=np.float32)
    noise = initial_noise((1, 7, 4, 8, 8), 0)
    kw = dict(num_inference_steps=2, noise=noise, seed=None)
    out = {m: inv(frames, ["depth"], window=4, overlap=2, blend=m, **kw)["depth"] for m in ("latent", "crossfade",
                                                                                              "none")}
    for m, v in out.items():
        assert v.shape == (7, 32, 32, 3), m
    # hard cut: frames before the first cut come from window 0 alone, sampled on its noise slice
    plan = plan_windows(7, 4, 2)
    cut = chunk_boundaries(plan)[0]
    first = inv(frames[:4], ["depth"], **dict(kw, noise=noise[:, :4]))["depth"]
    np.testing.assert_allclose(out["none"][:cut], first[:cut], atol=2e-5)
    # crossfade differs from the hard cut only inside overlaps
    assert np.abs(out["crossfade"][0] - out["none"][0]).max() < 2e-5
    assert np.abs(out["latent"] - out["none"]).max() > 1e-4, "latent fusion changes the result"
    # a clip no longer than the window is one reference call
    single = inv(frames[:4], ["depth"], window=24, overlap=6, **dict(kw, noise=noise[:, :4]))["depth"]
    np.testing.assert_allclose(single, first, atol=1e-6)


def test_decode_overlap_crossfades(inv):
    from engine.pipelines.vae_codec import decode_frames

    lat = torch.randn(1, 6, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    plain = decode_frames(inv.vae, lat, 4)
    faded = decode_frames(inv.vae, lat, 4, overlap=2)
    assert plain.shape == faded.shape == (1, 6, 32, 32, 3)
    full = decode_frames(inv.vae, lat, 6)
    assert torch.allclose(decode_frames(inv.vae, lat, 8, overlap=2), full, atol=1e-6)
    assert (plain - faded).abs().max() > 1e-4


def _disagreeing_windows(mode):
    """Windows whose model disagrees (a per-window bias): how visible is the join?"""
    from engine.pipelines.sampling import make_scheduler
    from engine.pipelines.windows import decode_clip, sample_clip

    cfg = {"prediction_type": "v_prediction", "use_karras_sigmas": True, "sigma_min": 0.002, "sigma_max": 700.0,
           "timestep_type": "continuous", "beta_schedule": "scaled_linear", "beta_start": 0.00085,
           "beta_end": 0.012, "final_sigmas_type": "zero"}
    plan = plan_windows(40, 12, 4)
    noise = torch.zeros(1, 40, 1, 2, 2)
    ramp = torch.linspace(0, 1, 40).view(1, 40, 1, 1, 1)  # a slow, smooth change over the clip

    def window_fn(x, t, s, e):
        bias = 0.3 * (plan.index((s, e)) % 2)  # neighbouring windows disagree by 0.3
        return -(ramp[:, s:e] + bias).expand_as(x)  # v = -x0 at sigma ≫ 1: pulls towards ramp + bias

    result = sample_clip(lambda: make_scheduler(cfg), 8, noise, window_fn, plan, mode)
    video = decode_clip(lambda lat: lat, result, plan, mode)[0].permute(0, 2, 3, 1)
    return seam_metric(video, chunk_boundaries(plan))


def test_blending_hides_disagreement_between_windows():
    hard, faded, fused = (_disagreeing_windows(m) for m in ("none", "crossfade", "latent"))
    assert hard > 5, hard          # a hard cut shows the disagreement as a jump
    assert faded < hard / 2, (faded, hard)
    assert fused < hard / 2, (fused, hard)
    print(f"seam metric, disagreeing windows: none {hard:.2f}, crossfade {faded:.2f}, latent {fused:.2f}")
