"""LoRA loading through peft: both key formats, per-module rank/alpha, lora_scale semantics, errors."""
from __future__ import annotations

import copy

import pytest
import torch
from golden_paths import require_golden  # noqa: E402
from safetensors.torch import load_file, save_file

from engine.models import LoraLoadError, build_unet_from_config, load_lora, load_unet

TINY_FORWARD = {
    "addition_time_embed_dim": 32, "block_out_channels": [32, 32, 32, 32], "context_embedding_type": None,
    "cross_attention_dim": [32, 32, 32, 32],
    "down_block_types": ["CrossAttnDownBlockSpatioTemporal"] * 3 + ["DownBlockSpatioTemporal"],
    "in_channels": 24, "layers_per_block": 1, "multi_res_encoder_hidden_states": True,
    "num_attention_heads": [1, 2, 4, 4], "out_channels": 4, "projection_class_embeddings_input_dim": 96,
    "temporal_cross_attention_dim": None, "transformer_layers_per_block": 1,
    "up_block_types": ["UpBlockSpatioTemporal"] + ["CrossAttnUpBlockSpatioTemporal"] * 3,
}
TARGETS = [
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k",
    "down_blocks.0.attentions.0.temporal_transformer_blocks.0.attn1.to_v",
    "mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0",
    "up_blocks.3.attentions.1.transformer_blocks.0.attn2.to_v",
    "up_blocks.1.attentions.0.transformer_blocks.0.ff.net.2",
    "conv_in",
]
RANKS = {t: (2 if i % 3 == 0 else 4) for i, t in enumerate(TARGETS)}
ALPHAS = {TARGETS[1]: 8.0, TARGETS[4]: 1.0}


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    return build_unet_from_config(TINY_FORWARD, device="cpu").eval()


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    B, F = 2, 2
    return (torch.randn(B, F, 24, 8, 8, generator=g), torch.tensor(0.7),
            [torch.randn(B, 1, 6, 32, generator=g) for _ in range(4)], torch.tensor([[6.0, 127.0, 0.0]] * B))


def make_lora(model, fmt="diffusers", prefix="unet.", with_alpha=True, seed=3):
    g = torch.Generator().manual_seed(seed)
    mods = dict(model.named_modules())
    state = {}
    for name in TARGETS:
        m, r = mods[name], RANKS[name]
        if isinstance(m, torch.nn.Conv2d):
            a = torch.randn(r, m.in_channels, *m.kernel_size, generator=g) * 0.1
            b = torch.randn(m.out_channels, r, 1, 1, generator=g) * 0.1
        else:
            a = torch.randn(r, m.in_features, generator=g) * 0.1
            b = torch.randn(m.out_features, r, generator=g) * 0.1
        ka, kb = ("lora.down", "lora.up") if fmt == "diffusers" else ("lora_A", "lora_B")
        state[f"{prefix}{name}.{ka}.weight"] = a
        state[f"{prefix}{name}.{kb}.weight"] = b
        if with_alpha and name in ALPHAS:
            state[f"{prefix}{name}.alpha"] = torch.tensor(ALPHAS[name])
    return state


def merged_reference(model, state, scale, prefix="unet."):
    """Base model with W += scale * alpha/r * B@A merged in (independent of peft)."""
    ref = copy.deepcopy(model)
    mods = dict(ref.named_modules())
    with torch.no_grad():
        for name in TARGETS:
            a, b = state[f"{prefix}{name}.lora.down.weight"], state[f"{prefix}{name}.lora.up.weight"]
            r = b.shape[1]
            s = scale * ALPHAS.get(name, r) / r
            w = mods[name].weight
            if w.ndim == 4:
                w += s * torch.einsum("or,rikl->oikl", b[:, :, 0, 0], a)
            else:
                w += s * (b @ a)
    return ref


def write(tmp_path, state, name="pytorch_lora_weights.safetensors"):
    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def test_lora_matches_merged_weights_with_ranks_and_alphas(tmp_path, base, inputs):
    # float64 base: the tiny UNet (1x1 bottleneck) amplifies float32 rounding of merged-vs-unmerged sums
    base = copy.deepcopy(base).double()
    inputs = tuple([t.double() for t in x] if isinstance(x, list) else (x.double() if x.is_floating_point() else x)
                   for x in inputs)
    unet = copy.deepcopy(base)
    state = make_lora(unet)
    info = load_lora(unet, write(tmp_path, state), adapter_name="real-lora")
    assert info["modules"] == len(TARGETS) and info["ranks"] == [2, 4] and info["alphas"] == [1.0, 2.0, 4.0, 8.0]
    assert unet.has_lora and len(unet.lora_layers()) == len(TARGETS)
    mods = dict(unet.named_modules())
    for name in TARGETS:
        layer = mods[name]
        assert layer.r["real-lora"] == RANKS[name]
        assert layer.scaling["real-lora"] == ALPHAS.get(name, RANKS[name]) / RANKS[name]
    with torch.no_grad():
        plain = base(*inputs)
        for scale in (1.0, 0.5):
            out = unet(*inputs, lora_scale=scale)
            ref = merged_reference(base, state, scale)(*inputs)
            torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)  # peft runs the LoRA path in fp32
            assert (out - plain).abs().max() > 1e-3  # the LoRA does change the output
        # None = 1.0
        assert torch.equal(unet(*inputs), unet(*inputs, lora_scale=1.0))


def test_both_key_formats_give_identical_outputs(tmp_path, base, inputs):
    outs = []
    for fmt, prefix in (("diffusers", "unet."), ("peft", "unet."), ("peft", "")):
        unet = copy.deepcopy(base)
        load_lora(unet, write(tmp_path, make_lora(unet, fmt, prefix), f"{fmt}{prefix}.safetensors"))
        with torch.no_grad():
            outs.append(unet(*inputs, lora_scale=0.5))
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_scale_zero_equals_no_lora_and_scaling_is_restored(tmp_path, base, inputs):
    unet = copy.deepcopy(base)
    load_lora(unet, write(tmp_path, make_lora(unet)))
    before = {id(l): dict(l.scaling) for l in unet.lora_layers()}
    with torch.no_grad():
        assert torch.equal(unet(*inputs, lora_scale=0.0), base(*inputs))
        assert {id(l): dict(l.scaling) for l in unet.lora_layers()} == before
        with pytest.raises(ValueError):
            unet(inputs[0], inputs[1], inputs[2][:2], inputs[3], lora_scale=0.25)  # fails inside the scaled call
    assert {id(l): dict(l.scaling) for l in unet.lora_layers()} == before


def test_lora_on_fp16_model_loads(tmp_path, base):
    unet = copy.deepcopy(base).half()
    load_lora(unet, write(tmp_path, make_lora(unet)))
    layer = unet.lora_layers()[0]
    assert layer.lora_A["default"].weight.dtype in (torch.float16, torch.float32)


@pytest.mark.parametrize("case", ["missing_file", "not_safetensors", "bad_key", "no_module", "bad_shape",
                                  "missing_B", "other_component", "duplicate_adapter", "mixed_formats", "empty"])
def test_lora_errors_are_raised_and_leave_model_clean(tmp_path, base, inputs, case):
    unet = copy.deepcopy(base)
    state = make_lora(unet)
    path = tmp_path / "pytorch_lora_weights.safetensors"
    expect = {
        "missing_file": "file not found", "not_safetensors": "not a readable safetensors",
        "bad_key": "not LoRA A/B/alpha", "no_module": "no such module", "bad_shape": "do not fit",
        "missing_B": "missing B", "other_component": "other than the UNet", "duplicate_adapter": "already has",
        "mixed_formats": "two A tensors", "empty": "no tensors",
    }[case]
    if case == "missing_file":
        path = tmp_path / "nope" / "pytorch_lora_weights.safetensors"
    elif case == "not_safetensors":
        path.write_bytes(b"\x00" * 64)
    else:
        if case == "bad_key":
            state["unet.conv_in.lora_magnitude_vector"] = torch.ones(32)
        elif case == "no_module":
            state["unet.down_blocks.9.attn.to_q.lora.down.weight"] = torch.zeros(4, 32)
            state["unet.down_blocks.9.attn.to_q.lora.up.weight"] = torch.zeros(32, 4)
        elif case == "bad_shape":
            state[f"unet.{TARGETS[0]}.lora.down.weight"] = torch.zeros(2, 33)
        elif case == "missing_B":
            del state[f"unet.{TARGETS[2]}.lora.up.weight"]
        elif case == "other_component":
            state["text_encoder.layer.lora.down.weight"] = torch.zeros(4, 4)
        elif case == "mixed_formats":
            state[f"unet.{TARGETS[0]}.lora_A.weight"] = state[f"unet.{TARGETS[0]}.lora.down.weight"].clone()
        elif case == "empty":
            state = {}
        if state:
            write(tmp_path, state)
        else:
            save_file({}, str(path))
    if case == "duplicate_adapter":
        load_lora(unet, path, adapter_name="real-lora")
    with pytest.raises(LoraLoadError, match=expect) as info:
        load_lora(unet, path if case != "missing_file" else path, adapter_name="real-lora")
    assert str(path) in str(info.value) or str(path.parent) in str(info.value)
    if case != "duplicate_adapter":
        assert not unet.has_lora
        with torch.no_grad():
            assert torch.equal(unet(*inputs), base(*inputs))


def test_directory_path_is_resolved(tmp_path, base):
    unet = copy.deepcopy(base)
    write(tmp_path, make_lora(unet))
    assert load_lora(unet, tmp_path)["modules"] == len(TARGETS)


# ---------------------------------------------------------------------- golden forward model
@pytest.fixture(scope="module")
def golden_forward():
    ckpt = require_golden("forward-tiny", "checkpoint")
    o = load_file(str(require_golden("forward-tiny", "outputs", "sky_lora0.5_static.safetensors")))
    z = load_file(str(require_golden("forward-tiny", "outputs", "sky_lora0.0_static.safetensors")))
    tokens = [torch.cat([torch.zeros_like(z[f"env_embedding_{i}"]), z[f"env_embedding_{i}"]]) for i in range(4)]
    args = (o["unet0_sample"], o["unet0_timestep"], tokens, o["unet0_added_time_ids"])
    return ckpt, args, o, z


def test_golden_forward_unet_with_lora_scale_half(golden_forward):
    ckpt, args, o, _ = golden_forward
    unet = load_unet(ckpt / "unet", dtype=torch.float32, device="cpu")
    info = load_lora(unet, ckpt / "lora" / "pytorch_lora_weights.safetensors", adapter_name="real-lora")
    assert info["modules"] == 192 and info["ranks"] == [4] and info["alphas"] == [4.0]
    with torch.no_grad():
        out = unet(*args, lora_scale=0.5)
    err = (out - o["unet0_output"]).abs().max().item()
    print(f"forward UNet (LoRA 0.5) max abs error vs golden: {err:.3g}")
    assert out.shape == (2, 4, 4, 16, 32)
    assert err < 1e-4


def test_golden_lora_key_formats_bit_identical_and_scale_zero_is_no_lora(golden_forward):
    ckpt, args, _, z = golden_forward
    plain = load_unet(ckpt / "unet")
    with torch.no_grad():
        no_lora = plain(*args)
    # lora_scale 0 run of the original = first UNet call of sky_lora0.0_static
    assert (no_lora - z["unet_outputs"][0]).abs().max().item() < 1e-4
    outs = []
    for path in (ckpt / "lora" / "pytorch_lora_weights.safetensors",
                 require_golden("forward-tiny", "lora_peft_key_format", "pytorch_lora_weights.safetensors")):
        unet = load_unet(ckpt / "unet")
        load_lora(unet, path, adapter_name="real-lora")
        with torch.no_grad():
            outs.append((unet(*args, lora_scale=0.5), unet(*args, lora_scale=0.0)))
    assert torch.equal(outs[0][0], outs[1][0])
    assert torch.equal(outs[0][1], no_lora) and torch.equal(outs[1][1], no_lora)
    assert (outs[0][0] - no_lora).abs().max() > 1e-2  # the LoRA matters at 0.5
