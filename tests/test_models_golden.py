"""Numerical parity of the UNet / VAE encoder / EnvEncoder with the golden tensors recorded from the original.

Skipped when the golden folder is absent (see DR_GOLDEN_DIR).  Forward-model + LoRA parity is in
test_models_lora.py.
"""
from __future__ import annotations

import pytest
import torch
from golden_paths import require_golden  # noqa: E402
from safetensors.torch import load_file

from engine.models import (
    GBUFFER_INDEX,
    EnvEncoder,
    load_env_encoder,
    load_unet,
    load_vae,
    make_group_norm_inputs_contiguous,
)


@pytest.fixture(scope="module")
def inverse_unet():
    return load_unet(require_golden("inverse-tiny", "checkpoint", "unet"), dtype=torch.float32, device="cpu")


@pytest.fixture(scope="module")
def basecolor():
    return load_file(str(require_golden("inverse-tiny", "outputs", "basecolor.safetensors")))


def test_inverse_unet_first_call_matches_golden(inverse_unet, basecolor):
    o = basecolor
    assert int(o["unet0_input_context"]) == GBUFFER_INDEX["basecolor"] == 0
    assert torch.equal(o["unet0_encoder_hidden_states"], torch.zeros(1, 1, 1, 32))
    with torch.no_grad():
        out = inverse_unet(o["unet0_sample"], o["unet0_timestep"], torch.zeros(1, 1, 1, 32),
                           o["unet0_added_time_ids"], input_context=o["unet0_input_context"])
    err = (out - o["unet0_output"]).abs().max().item()
    print(f"inverse UNet (basecolor) max abs error vs golden: {err:.3g}")
    assert out.shape == o["unet0_output"].shape == (1, 4, 4, 16, 32)
    assert err < 1e-4


def test_pass_embedding_max_norm_renormalises_row_5():
    """Row 5 (diffuse_albedo) is stored with norm 15 and must be looked up with norm 10 (max_norm=10)."""
    unet = load_unet(require_golden("inverse-tiny", "checkpoint", "unet"))
    stored = unet.context_embedding.weight.detach().clone()
    assert abs(stored[5].norm().item() - 15.0) < 1e-2
    assert all(stored[i].norm().item() < 10 for i in range(5))
    with torch.no_grad():
        rows = unet.context_embedding(torch.tensor([GBUFFER_INDEX["diffuse_albedo"], GBUFFER_INDEX["normal"]]))
    assert abs(rows[0].norm().item() - 10.0) < 1e-4
    torch.testing.assert_close(rows[0], stored[5] * 10.0 / (stored[5].norm() + 1e-7), rtol=0, atol=1e-6)
    assert torch.equal(rows[1], stored[3])  # rows below max_norm are untouched


@pytest.mark.parametrize("pass_name", sorted(GBUFFER_INDEX, key=GBUFFER_INDEX.get))
def test_inverse_unet_first_call_every_pass(inverse_unet, basecolor, pass_name):
    """All passes share the first UNet input; only the pass index differs (diffuse_albedo exercises max_norm)."""
    recorded = load_file(str(require_golden("inverse-tiny", "outputs", f"{pass_name}.safetensors")))
    o = basecolor
    with torch.no_grad():
        out = inverse_unet(o["unet0_sample"], o["unet0_timestep"], torch.zeros(1, 1, 1, 32),
                           o["unet0_added_time_ids"], input_context=torch.tensor([GBUFFER_INDEX[pass_name]]))
    err = (out - recorded["unet_outputs"][0]).abs().max().item()
    assert err < 1e-4, f"{pass_name}: {err}"
    if pass_name != "basecolor":  # the pass index matters
        assert (out - o["unet0_output"]).abs().max().item() > 1e-2


def test_inverse_pass_embedding_without_max_norm_would_differ(inverse_unet, basecolor):
    """Discriminative check: skipping the renormalisation of row 5 changes the output well beyond 1e-4."""
    o = basecolor
    recorded = load_file(str(require_golden("inverse-tiny", "outputs", "diffuse_albedo.safetensors")))
    unet = load_unet(require_golden("inverse-tiny", "checkpoint", "unet"))
    row = unet.context_embedding.weight.detach()[5].clone()  # stored, norm 15 (not yet renormalised)
    with torch.no_grad():
        out = unet(o["unet0_sample"], o["unet0_timestep"], row.reshape(1, 1, 1, 32), o["unet0_added_time_ids"])
    assert (out - recorded["unet_outputs"][0]).abs().max().item() > 1e-3


def test_vae_encode_and_env_encoder_match_golden():
    ckpt = require_golden("forward-tiny", "checkpoint")
    z = load_file(str(require_golden("forward-tiny", "outputs", "sky_lora0.0_static.safetensors")))
    h = load_file(str(require_golden("forward-tiny", "outputs", "sky_lora0.5_static.safetensors")))
    vae = load_vae(ckpt / "vae", dtype=torch.float32, device="cpu")
    enc = load_env_encoder(ckpt / "env_encoder", dtype=torch.float32, device="cpu")
    assert enc.in_labels == ("env_ldr", "env_log", "env_nrm") and vae.config.scaling_factor == 0.18215
    F = 4
    images = [z["env_ldr"][0], z["env_log"][0], z["env_nrm"][0].expand(F, -1, -1, -1)]  # (F,3,64,64) in [0,1]
    # the oracle fed every GroupNorm a contiguous tensor (golden README §6.5)
    handles = make_group_norm_inputs_contiguous(vae)
    with torch.no_grad():
        # the oracle's images are channels-last views of (F,H,W,3) arrays
        means = [vae.encode((x * 2 - 1).contiguous(memory_format=torch.channels_last)).latent_dist.mode()
                 for x in images]
        vae_err = (torch.stack(means) - h["vae_encode_env_mean"]).abs().max().item()
        feats = enc(torch.cat(means, dim=1) * vae.config.scaling_factor)
        tokens = EnvEncoder.to_tokens(feats, 1, F)
        # plain contiguous inputs, no hooks (what a pipeline naturally does): still within tolerance
        for hd in handles:
            hd.remove()
        plain = [vae.encode((x * 2 - 1).contiguous()).latent_dist.mode() for x in images]
        plain_tokens = EnvEncoder.to_tokens(enc(torch.cat(plain, dim=1) * vae.config.scaling_factor), 1, F)
        # EnvEncoder alone, from the recorded VAE means
        rec_tokens = EnvEncoder.to_tokens(enc(torch.cat(list(h["vae_encode_env_mean"]), 1) * 0.18215), 1, F)
    assert [tuple(f.shape) for f in feats] == [(4, 32, 16, 16), (4, 32, 8, 8), (4, 32, 4, 4), (4, 32, 2, 2)]
    errs = [(t - z[f"env_embedding_{i}"]).abs().max().item() for i, t in enumerate(tokens)]
    plain_errs = [(t - z[f"env_embedding_{i}"]).abs().max().item() for i, t in enumerate(plain_tokens)]
    rec_errs = [(t - z[f"env_embedding_{i}"]).abs().max().item() for i, t in enumerate(rec_tokens)]
    print(f"VAE env mean err {vae_err:.3g}; env embedding errs {errs}; plain {plain_errs}; from recorded means {rec_errs}")
    assert vae_err < 1e-5
    assert max(errs) < 1e-5
    assert max(plain_errs) < 1e-5
    assert max(rec_errs) < 1e-6


def test_forward_unet_without_lora_matches_lora0_run():
    ckpt = require_golden("forward-tiny", "checkpoint")
    z = load_file(str(require_golden("forward-tiny", "outputs", "sky_lora0.0_static.safetensors")))
    h = load_file(str(require_golden("forward-tiny", "outputs", "sky_lora0.5_static.safetensors")))
    unet = load_unet(ckpt / "unet")
    tokens = [torch.cat([torch.zeros_like(z[f"env_embedding_{i}"]), z[f"env_embedding_{i}"]]) for i in range(4)]
    with torch.no_grad():
        out = unet(h["unet0_sample"], h["unet0_timestep"], tokens, h["unet0_added_time_ids"])
    assert (out - z["unet_outputs"][0]).abs().max().item() < 1e-4
