"""Pipeline behaviour on random-weight tiny checkpoints (self-contained; golden numbers are in
test_conformance.py)."""
import numpy as np
import pytest
import torch

from engine.pipelines import Cancelled, EnvLight, ForwardRenderer, InverseRenderer

F, H, W = 3, 64, 64


@pytest.fixture(scope="module")
def inv(ckpts):
    return InverseRenderer.from_pretrained(ckpts[0], device="cpu")


@pytest.fixture(scope="module")
def fwd(ckpts):
    return ForwardRenderer.from_pretrained(ckpts[1], device="cpu")


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    return rng.random((F, H, W, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def gbuffers():
    rng = np.random.default_rng(1)
    return {p: rng.random((F, H, W, 3), dtype=np.float32) for p in ("basecolor", "normal", "depth", "roughness",
                                                                       "metallic")}


def _light(rotating=False):
    rng = np.random.default_rng(2)
    ldr = rng.random((1, 32, 32, 3), dtype=np.float32)
    ldr = np.repeat(ldr, F, 0)
    if rotating:
        ldr = np.stack([np.roll(ldr[0], 8 * i, axis=1) for i in range(F)])
    return {"env_ldr": ldr, "env_log": ldr * 0.5}


def test_batched_passes_equal_separate_calls(inv, frames):
    both = inv(frames, ["basecolor", "depth"], num_inference_steps=2)
    one = inv(frames, ["depth"], num_inference_steps=2)
    assert both["depth"].shape == (F, H, W, 3) and both["depth"].dtype == np.float32
    np.testing.assert_allclose(both["depth"], one["depth"], atol=2e-5)
    assert np.abs(both["depth"] - both["basecolor"]).max() > 1e-3, "passes must differ (pass embedding)"


def test_seed_and_injected_noise(inv, frames):
    a = inv(frames, ["normal"], num_inference_steps=2, seed=5)["normal"]
    b = inv(frames, ["normal"], num_inference_steps=2, seed=5)["normal"]
    c = inv(frames, ["normal"], num_inference_steps=2, seed=6)["normal"]
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3
    from engine.pipelines.sampling import initial_noise

    d = inv(frames, ["normal"], num_inference_steps=2, seed=None,
            noise=initial_noise((1, F, 4, H // 4, W // 4), 5))["normal"]
    np.testing.assert_array_equal(a, d)


def test_input_forms_and_validation(inv, frames):
    u8 = (frames * 255).round().astype(np.uint8)
    out = inv(u8, ["roughness"], num_inference_steps=1)
    assert out["roughness"].shape == (F, H, W, 3)
    grey = inv(frames[..., 0], ["roughness"], num_inference_steps=1)["roughness"]
    assert grey.shape == (F, H, W, 3)
    with pytest.raises(ValueError, match="unknown pass"):
        inv(frames, ["albedo"])
    with pytest.raises(ValueError, match="multiple of 32"):
        inv(frames[:, :40], ["basecolor"], num_inference_steps=1)
    bad = frames.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        inv(bad, ["basecolor"], num_inference_steps=1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        inv(frames * 4, ["basecolor"], num_inference_steps=1)


def test_cancel_between_steps(inv, frames):
    steps = []
    with pytest.raises(Cancelled):
        inv(frames, ["basecolor"], num_inference_steps=4, callback=lambda i, *a: steps.append(i),
            should_cancel=lambda: len(steps) >= 1)
    assert steps == [0]


def test_forward_shapes_cfg_and_lora_scale(fwd, gbuffers):
    assert fwd.has_lora
    calls = []
    hook = fwd.unet.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    try:
        a = fwd(gbuffers, _light(), num_inference_steps=2, lora_scale=0.0, env_resolution=(32, 32))
        assert calls == [2, 2], "guidance 1.2 doubles the batch (zero negatives)"
        calls.clear()
        fwd(gbuffers, _light(), num_inference_steps=2, guidance_scale=1.0, env_resolution=(32, 32))
        assert calls == [1, 1], "guidance 1.0 is a single-batch preview"
    finally:
        hook.remove()
    assert a.shape == (F, H, W, 3) and 0.0 <= a.min() and a.max() <= 1.0
    b = fwd(gbuffers, _light(), num_inference_steps=2, lora_scale=0.5, env_resolution=(32, 32))
    assert np.abs(a - b).max() > 1e-4, "the LoRA scale must change the result"


def test_forward_lights_list_fixed_frame_and_rotation(fwd, gbuffers):
    static, rotating = _light(), _light(rotating=True)
    both = fwd(gbuffers, [static, rotating], num_inference_steps=1)
    single = fwd(gbuffers, rotating, num_inference_steps=1)
    assert isinstance(both, list) and len(both) == 2
    np.testing.assert_allclose(both[1], single, atol=1e-4)   # the lights share one UNet batch: rounding only
    assert np.abs(both[0] - both[1]).max() > 1e-2
    fixed = fwd(gbuffers, static, num_inference_steps=1, fixed_frame=1)
    replicated = fwd({k: np.repeat(v[1:2], F, 0) for k, v in gbuffers.items()}, static, num_inference_steps=1)
    np.testing.assert_allclose(fixed, replicated, atol=1e-4)  # other VAE batch compositions: rounding only


def test_forward_input_errors(fwd, gbuffers):
    partial = {k: v for k, v in gbuffers.items() if k != "roughness"}
    with pytest.raises(ValueError, match="missing G-buffer pass.*roughness"):
        fwd(partial, _light(), num_inference_steps=1)
    uneven = dict(gbuffers, depth=gbuffers["depth"][:2])
    with pytest.raises(ValueError, match="differ in frame count"):
        fwd(uneven, _light(), num_inference_steps=1)
    with pytest.raises(ValueError, match="fixed_frame"):
        fwd(gbuffers, _light(), num_inference_steps=1, fixed_frame=7)
    with pytest.raises(ValueError, match="env_ldr"):
        fwd(gbuffers, {"env_ldr": np.zeros((F, 8, 8, 3))}, num_inference_steps=1)


def test_forward_with_envlight_from_hdr_array(fwd, gbuffers):
    hdr = np.ones((16, 32, 3), dtype=np.float32)
    hdr[4:6, 8:10] = 500.0  # a sun
    static = fwd(gbuffers, EnvLight(hdr), num_inference_steps=1, env_resolution=(32, 32))
    turning = fwd(gbuffers, EnvLight(hdr, rotate=True), num_inference_steps=1, env_resolution=(32, 32))
    assert static.shape == turning.shape == (F, H, W, 3)
    assert np.abs(static - turning).max() > 1e-5


def test_model_kind_mismatch_is_clear(ckpts):
    with pytest.raises(ValueError, match="inverse .*model"):
        ForwardRenderer.from_pretrained(ckpts[0], device="cpu")
    with pytest.raises(ValueError, match="forward .*model"):
        InverseRenderer.from_pretrained(ckpts[1], device="cpu")
    assert torch.get_default_dtype() == torch.float32


def test_forward_guidance_ramp(fwd, gbuffers):
    kw = dict(num_inference_steps=2, env_resolution=(32, 32), seed=0)
    const = fwd(gbuffers, _light(), guidance_scale=1.2, **kw)
    assert np.array_equal(const, fwd(gbuffers, _light(), guidance_scale=(1.2, 1.2), **kw))
    ramp = fwd(gbuffers, _light(), guidance_scale=(1.0, 3.0), **kw)
    assert np.abs(ramp - const).max() > 1e-4, "a ramp changes the picture"
    # descending max <= 1: no guidance at all (the reference guides iff max_guidance_scale > 1)
    assert np.array_equal(fwd(gbuffers, _light(), guidance_scale=(3.0, 1.0), **kw),
                          fwd(gbuffers, _light(), guidance_scale=1.0, **kw))


def test_forward_fixed_frame_equals_the_frame_repeated(fwd, gbuffers):
    kw = dict(num_inference_steps=2, env_resolution=(32, 32), seed=0)
    fixed = fwd(gbuffers, _light(), fixed_frame=2, **kw)
    repeated = fwd({p: np.repeat(v[2:3], F, 0) for p, v in gbuffers.items()}, _light(), **kw)
    assert np.abs(fixed - repeated).max() <= 1e-4     # the golden frames tolerance (one frame vs three encoded)
    assert np.abs(fixed - fwd(gbuffers, _light(), **kw)).max() > 1e-3
