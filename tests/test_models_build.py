"""Module construction and forward-pass structure of engine.models (UNet, EnvEncoder, VAE).

The manifest tests need the golden folder (skipped without it); everything else is self-contained.
"""
from __future__ import annotations

import copy
import json

import pytest
import torch
from golden_paths import require_golden  # noqa: E402

from engine.models import (
    DRUNet,
    EnvEncoder,
    build_env_encoder_from_config,
    build_unet_from_config,
    build_vae_from_config,
)

TINY_INVERSE = {
    "_class_name": "UNetCustomSpatioTemporalConditionModel",
    "addition_time_embed_dim": 32,
    "block_out_channels": [32, 32, 32, 32],
    "context_embedding_type": "clip",
    "context_vocab_size": 16,
    "cross_attention_dim": 32,
    "down_block_types": ["CrossAttnDownBlockSpatioTemporal"] * 3 + ["DownBlockSpatioTemporal"],
    "in_channels": 8,
    "layers_per_block": 2,
    "multi_res_encoder_hidden_states": False,
    "num_attention_heads": [1, 2, 4, 4],
    "num_frames": 14,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 96,
    "sample_size": 16,
    "temporal_cross_attention_dim": 32,
    "transformer_layers_per_block": 1,
    "up_block_types": ["UpBlockSpatioTemporal"] + ["CrossAttnUpBlockSpatioTemporal"] * 3,
}
TINY_FORWARD = dict(TINY_INVERSE, in_channels=24, cross_attention_dim=[32, 32, 32, 32],
                    temporal_cross_attention_dim=None, multi_res_encoder_hidden_states=True,
                    context_embedding_type=None)


def tiny_unet(config, seed=0):
    torch.manual_seed(seed)
    return build_unet_from_config(config, device="cpu").eval()


def time_ids(b):
    return torch.tensor([[6.0, 127.0, 0.0]]).repeat(b, 1)


# ---------------------------------------------------------------------- full-size manifests
MANIFESTS = {
    "inverse": (build_unet_from_config, 1429),
    "forward": (build_unet_from_config, 1316),
    "vae": (build_vae_from_config, 374),
    "env-encoder": (build_env_encoder_from_config, 76),
}


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_full_size_module_matches_manifest(name):
    path = require_golden("manifests", f"manifest-{name}.json")
    manifest = json.loads(path.read_text())
    builder, count = MANIFESTS[name]
    module = builder(manifest["config"], device="meta")
    got = [(k, list(v.shape)) for k, v in module.state_dict().items()]
    expected = [(t["name"], list(t["shape"])) for t in manifest["tensors"]]
    assert len(got) == manifest["num_tensors"] == count
    assert [k for k, _ in got] == [k for k, _ in expected]  # same names, same state-dict order
    assert got == expected  # same shapes
    assert sum(v.numel() for v in module.state_dict().values()) == manifest["num_parameters"]
    assert all(p.is_meta for p in module.parameters())


def test_full_size_forward_has_no_temporal_cross_attention_and_inverse_has_pass_embedding():
    inv = json.loads(require_golden("manifests", "manifest-inverse.json").read_text())
    fwd = json.loads(require_golden("manifests", "manifest-forward.json").read_text())
    u_inv = build_unet_from_config(inv["config"])
    u_fwd = build_unet_from_config(fwd["config"])
    assert not u_inv.is_forward and u_inv.num_passes == 16 and u_inv.has_pass_embedding
    assert u_inv.context_embedding.max_norm == 10
    assert tuple(u_inv.context_embedding.weight.shape) == (16, 1024)
    assert u_fwd.is_forward and u_fwd.num_passes == 0 and not u_fwd.has_pass_embedding
    assert not u_fwd.has_temporal_cross_attention and u_inv.has_temporal_cross_attention
    sd = u_fwd.state_dict()
    assert not any("temporal_transformer_blocks.0.attn2" in k or "temporal_transformer_blocks.0.norm2" in k for k in sd)
    assert tuple(sd["conv_in.weight"].shape) == (320, 24, 3, 3)
    assert tuple(sd["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"].shape) == (320, 320)
    assert tuple(sd["mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"].shape) == (1280, 1280)
    assert tuple(sd["up_blocks.2.attentions.0.transformer_blocks.0.attn2.to_v.weight"].shape) == (640, 640)


# ---------------------------------------------------------------------- config handling
def test_unknown_and_private_config_keys_are_ignored(caplog):
    cfg = dict(TINY_FORWARD, _name_or_path="x", some_legacy_key=3, conv_in_init="zero")
    ref = build_unet_from_config(TINY_FORWARD)
    with caplog.at_level("WARNING", logger="diffusers.configuration_utils"):
        unet = build_unet_from_config(cfg)      # diffusers' from_config: logged, not passed to the constructor
    assert "some_legacy_key" in caplog.text and "will be ignored" in caplog.text
    assert list(unet.state_dict()) == list(ref.state_dict())
    assert unet.config.multi_res_encoder_hidden_states is True
    enc = build_env_encoder_from_config({"_class_name": "EnvEncoder", "in_channels": 12, "channels": [32] * 4,
                                         "num_res_blocks": 2, "latent_encoder": True, "foo": 1})
    assert enc.in_labels == ("env_ldr", "env_log", "env_nrm")


def test_default_attention_processor_is_sdpa():
    from diffusers.models.attention_processor import AttnProcessor2_0

    for cfg in (TINY_INVERSE, TINY_FORWARD):
        procs = build_unet_from_config(cfg).attn_processors
        assert procs and all(isinstance(p, AttnProcessor2_0) for p in procs.values())


def test_context_embedding_types():
    with pytest.raises(NotImplementedError, match="time"):
        build_unet_from_config(dict(TINY_INVERSE, context_embedding_type="time"))
    with pytest.raises(ValueError, match="context_embedding_type"):
        build_unet_from_config(dict(TINY_INVERSE, context_embedding_type="bogus"))
    unet = build_unet_from_config(dict(TINY_INVERSE, context_vocab_size=7))
    assert unet.num_passes == 7 and unet.context_embedding.embedding_dim == 32


def test_temporal_cross_attention_dim_variants():
    # null: attn2/norm2 removed from every temporal block, spatial attn2 kept
    unet = build_unet_from_config(TINY_FORWARD)
    temporal = [tb for t in unet._st_transformers() for tb in t.temporal_transformer_blocks]
    assert len(temporal) == 16
    assert all(tb.attn2 is None and tb.norm2 is None for tb in temporal)
    assert all(t.transformer_blocks[0].attn2 is not None for t in unet._st_transformers())
    # int different from the spatial width: temporal attn2 rebuilt with that key/value width
    unet = build_unet_from_config(dict(TINY_INVERSE, temporal_cross_attention_dim=48))
    sd = unet.state_dict()
    assert tuple(sd["down_blocks.0.attentions.0.temporal_transformer_blocks.0.attn2.to_k.weight"].shape) == (32, 48)
    assert tuple(sd["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"].shape) == (32, 32)
    assert list(sd) == list(build_unet_from_config(TINY_INVERSE).state_dict())  # same order
    # per level: down i -> level i, mid -> last level, up i -> level -i-1
    unet = build_unet_from_config(dict(TINY_FORWARD, cross_attention_dim=[16, 24, 40, 56],
                                       temporal_cross_attention_dim=[8, None, 12, 20]))
    sd = unet.state_dict()
    assert tuple(sd["down_blocks.0.attentions.1.temporal_transformer_blocks.0.attn2.to_k.weight"].shape) == (32, 8)
    assert "down_blocks.1.attentions.0.temporal_transformer_blocks.0.attn2.to_k.weight" not in sd
    assert tuple(sd["down_blocks.2.attentions.0.temporal_transformer_blocks.0.attn2.to_k.weight"].shape) == (32, 12)
    assert tuple(sd["mid_block.attentions.0.temporal_transformer_blocks.0.attn2.to_v.weight"].shape) == (32, 20)
    assert tuple(sd["up_blocks.1.attentions.2.temporal_transformer_blocks.0.attn2.to_k.weight"].shape) == (32, 12)
    assert "up_blocks.2.attentions.0.temporal_transformer_blocks.0.attn2.to_k.weight" not in sd
    assert tuple(sd["up_blocks.3.attentions.0.temporal_transformer_blocks.0.attn2.to_k.weight"].shape) == (32, 8)
    assert tuple(sd["up_blocks.3.attentions.0.transformer_blocks.0.attn2.to_k.weight"].shape) == (32, 16)
    with pytest.raises(ValueError, match="cross_attention_dim"):
        build_unet_from_config(dict(TINY_FORWARD, temporal_cross_attention_dim=[8, 8]))


# ---------------------------------------------------------------------- forward semantics
def test_multi_res_routing_per_level():
    """Tokens of level i reach down block i and up block 3-i; level 3 reaches the mid block."""
    dims = [16, 24, 40, 56]
    unet = tiny_unet(dict(TINY_FORWARD, cross_attention_dim=dims))
    B, F, h, w = 2, 3, 8, 8
    tokens = [torch.randn(B, 1 if i % 2 else F, 5 + i, d) for i, d in enumerate(dims)]  # mixed (B,1,..)/(B,F,..)
    seen = {}

    def hook(name):
        def fn(mod, args, kwargs):
            seen[name] = tuple(kwargs["encoder_hidden_states"].shape)
        return fn

    handles = []
    for name, mod in unet.named_modules():
        if name.endswith("transformer_blocks.0.attn2") and "temporal" not in name:
            handles.append(mod.register_forward_pre_hook(hook(name), with_kwargs=True))
    with torch.no_grad():
        out = unet(torch.randn(B, F, 24, h, w), torch.tensor(1.0), tokens, time_ids(B))
    for hd in handles:
        hd.remove()
    assert out.shape == (B, F, 4, h, w)
    expect_level = {"down_blocks.0": 0, "down_blocks.1": 1, "down_blocks.2": 2, "mid_block": 3,
                    "up_blocks.1": 2, "up_blocks.2": 1, "up_blocks.3": 0}
    assert len(seen) == 16
    for name, shape in seen.items():
        prefix = name.split(".attentions")[0]
        lvl = expect_level[prefix]
        assert shape == (B * F, 5 + lvl, dims[lvl]), name


def test_temporal_context_is_never_built_without_temporal_attn2():
    """MODEL_SPEC §2.4: the forward model's temporal blocks get no context at all (no broadcast tensor)."""
    captured = []

    def hook(mod, args, kwargs):
        captured.append(kwargs.get("encoder_hidden_states"))

    fwd = tiny_unet(TINY_FORWARD)
    for t in fwd._st_transformers():
        t.temporal_transformer_blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
    B, F = 1, 2
    tokens = [torch.randn(B, F, 64, 32) for _ in range(4)]
    with torch.no_grad():
        fwd(torch.randn(B, F, 24, 8, 8), torch.tensor(0.5), tokens, time_ids(B))
    assert len(captured) == 16 and all(c is None for c in captured)

    # the inverse model (temporal attn2 present) gets frame 0's tokens broadcast to every position
    captured.clear()
    inv = tiny_unet(TINY_INVERSE)
    for t in inv._st_transformers():
        t.temporal_transformer_blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
    ehs = torch.randn(B, F, 3, 32)
    with torch.no_grad():
        inv(torch.randn(B, F, 8, 8, 8), torch.tensor(0.5), ehs, time_ids(B))
    assert len(captured) == 16
    first = captured[0]  # down_blocks.0: 8x8 positions
    assert first.shape == (B * 64, 3, 32)
    assert torch.equal(first[0], ehs[0, 0]) and torch.equal(first[-1], ehs[0, 0])
    assert {c.shape[0] for c in captured} == {64, 16, 4, 1}


def test_encoder_hidden_state_layouts_are_equivalent():
    unet = tiny_unet(TINY_INVERSE)
    B, F = 2, 3
    sample = torch.randn(B, F, 8, 8, 8)
    e = torch.randn(B, 1, 4, 32)
    with torch.no_grad():
        a = unet(sample, torch.tensor(1.2), e, time_ids(B))
        b = unet(sample, torch.tensor(1.2), e[:, 0], time_ids(B))
        c = unet(sample, torch.tensor(1.2), e.expand(B, F, 4, 32).contiguous(), time_ids(B))
        d = unet(sample, torch.tensor([1.2, 1.2]), e, time_ids(B))
        f = unet(sample, 1.2, e, time_ids(B))
    assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(a, d)
    torch.testing.assert_close(a, f, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="dim 1"):
        unet(sample, torch.tensor(1.2), torch.randn(B, 2, 4, 32), time_ids(B))


def test_input_context_adds_pass_embedding_row():
    unet = tiny_unet(TINY_INVERSE)
    B, F = 1, 2
    sample = torch.randn(B, F, 8, 8, 8)
    with torch.no_grad():
        row = unet.context_embedding.weight[3].clone()
        via_index = unet(sample, torch.tensor(0.3), torch.zeros(B, 1, 1, 32), time_ids(B), input_context=torch.tensor([3]))
        via_tokens = unet(sample, torch.tensor(0.3), row.reshape(1, 1, 1, 32), time_ids(B))
        other = unet(sample, torch.tensor(0.3), torch.zeros(B, 1, 1, 32), time_ids(B), input_context=torch.tensor([4]))
    torch.testing.assert_close(via_index, via_tokens, rtol=0, atol=1e-6)
    assert (via_index - other).abs().max() > 1e-4
    # a single index is broadcast over the batch
    with torch.no_grad():
        two = unet(sample.repeat(2, 1, 1, 1, 1), torch.tensor(0.3), torch.zeros(2, 1, 1, 32), time_ids(2),
                   input_context=torch.tensor([3]))
    torch.testing.assert_close(two[0], via_index[0], rtol=0, atol=1e-5)


def test_max_norm_renormalises_rows_at_lookup():
    unet = tiny_unet(TINY_INVERSE)
    with torch.no_grad():
        w = unet.context_embedding.weight
        w[5] = w[5] / w[5].norm() * 15.0
        w[2] = w[2] / w[2].norm() * 6.0
        e = unet.context_embedding(torch.tensor([5, 2]))
    assert abs(float(e[0].norm()) - 10.0) < 1e-4
    assert abs(float(e[1].norm()) - 6.0) < 1e-4
    assert abs(float(unet.context_embedding.weight[5].detach().norm()) - 10.0) < 1e-4  # renormalised in place, like torch


def test_bad_inputs_raise_clear_errors():
    fwd = tiny_unet(TINY_FORWARD)
    inv = tiny_unet(TINY_INVERSE)
    s_f, s_i = torch.randn(1, 2, 24, 8, 8), torch.randn(1, 2, 8, 8, 8)
    toks = [torch.randn(1, 2, 4, 32) for _ in range(4)]
    with pytest.raises(ValueError, match="list of 4"):
        fwd(s_f, torch.tensor(1.0), toks[:3], time_ids(1))
    with pytest.raises(ValueError, match="list of 4"):
        fwd(s_f, torch.tensor(1.0), toks[0], time_ids(1))
    with pytest.raises(ValueError, match="input_context"):
        fwd(s_f, torch.tensor(1.0), toks, time_ids(1), input_context=torch.tensor([0]))
    with pytest.raises(ValueError, match="single"):
        inv(s_i, torch.tensor(1.0), toks, time_ids(1))
    no_ctx = tiny_unet(dict(TINY_INVERSE, context_embedding_type=None))
    with pytest.raises(ValueError, match="no pass-index embedding"):
        no_ctx(s_i, torch.tensor(1.0), torch.zeros(1, 1, 1, 32), time_ids(1), input_context=torch.tensor([0]))


def test_odd_latent_sizes_keep_shape():
    unet = tiny_unet(TINY_INVERSE)
    with torch.no_grad():
        out = unet(torch.randn(1, 2, 8, 10, 12), torch.tensor(1.0), torch.zeros(1, 1, 1, 32), time_ids(1),
                   input_context=torch.tensor([1]))
    assert out.shape == (1, 2, 4, 10, 12) and torch.isfinite(out).all()


def test_env_encoder_pyramid_and_tokens():
    torch.manual_seed(0)
    enc = build_env_encoder_from_config({"in_channels": 12, "channels": [32, 64, 96, 96], "num_res_blocks": 2,
                                         "latent_encoder": True}, device="cpu").eval()
    x = torch.randn(6, 12, 16, 16)
    with torch.no_grad():
        feats = enc(x)
        feats_cl = enc(x.contiguous(memory_format=torch.channels_last))
    assert [tuple(f.shape) for f in feats] == [(6, 32, 16, 16), (6, 64, 8, 8), (6, 96, 4, 4), (6, 96, 2, 2)]
    for a, b in zip(feats, feats_cl):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    toks = EnvEncoder.to_tokens(feats, 2, 3)
    assert [tuple(t.shape) for t in toks] == [(2, 3, 256, 32), (2, 3, 64, 64), (2, 3, 16, 96), (2, 3, 4, 96)]
    # token (b, f, n, c) == feature (b*F+f, c, n // W, n % W)
    assert torch.equal(toks[1][1, 2, 9], feats[1][5, :, 1, 1])
    with pytest.raises(ValueError, match="expects"):
        enc(torch.randn(1, 4, 16, 16))
    with pytest.raises(NotImplementedError):
        build_env_encoder_from_config({"in_channels": 12, "channels": [32] * 4, "latent_encoder": False})


def test_build_on_real_device_with_dtype():
    unet = build_unet_from_config(copy.deepcopy(TINY_FORWARD), device="cpu", dtype=torch.float16)
    assert all(p.dtype == torch.float16 and p.device.type == "cpu" for p in unet.parameters())
    assert isinstance(unet, DRUNet) and not unet.has_lora
