"""Verified checkpoint loading: header checks, clear mismatch errors, dtype handling, golden tiny checkpoints."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from golden_paths import require_golden  # noqa: E402
from safetensors import safe_open
from safetensors.torch import save_file

from engine.models import (
    CheckpointFileMissingError,
    CheckpointMismatchError,
    DRUNet,
    EnvEncoder,
    build_env_encoder_from_config,
    build_unet_from_config,
    load_env_encoder,
    load_unet,
    load_vae,
    read_config,
    read_root_config,
    read_safetensors_header,
)

ENV_CFG = {"_class_name": "EnvEncoder", "_diffusers_version": "0.32.0", "in_channels": 12,
           "channels": [32, 32, 64, 64], "num_res_blocks": 1, "latent_encoder": True}
UNET_CFG = {
    "addition_time_embed_dim": 32, "block_out_channels": [32, 32, 32, 32], "context_embedding_type": "clip",
    "context_vocab_size": 16, "cross_attention_dim": 32,
    "down_block_types": ["CrossAttnDownBlockSpatioTemporal"] * 3 + ["DownBlockSpatioTemporal"],
    "in_channels": 8, "layers_per_block": 1, "multi_res_encoder_hidden_states": False,
    "num_attention_heads": [1, 2, 4, 4], "out_channels": 4, "projection_class_embeddings_input_dim": 96,
    "temporal_cross_attention_dim": 32, "transformer_layers_per_block": 1,
    "up_block_types": ["UpBlockSpatioTemporal"] + ["CrossAttnUpBlockSpatioTemporal"] * 3,
}


def write_component(folder: Path, config: dict, state: dict, dtype=torch.float32, name="diffusion_pytorch_model.safetensors"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file({k: v.detach().to(dtype).contiguous() for k, v in state.items()}, str(folder / name),
              metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="module")
def env_state():
    torch.manual_seed(0)
    return build_env_encoder_from_config(ENV_CFG, device="cpu").state_dict()


# ---------------------------------------------------------------------- happy paths
@pytest.mark.parametrize("file_dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("load_dtype", [torch.float32, torch.float16])
def test_roundtrip_any_float_dtype(tmp_path, env_state, file_dtype, load_dtype):
    folder = write_component(tmp_path / "env_encoder", ENV_CFG, env_state, dtype=file_dtype)
    enc = load_env_encoder(folder, dtype=load_dtype, device="cpu")
    assert isinstance(enc, EnvEncoder)
    sd = enc.state_dict()
    assert list(sd) == list(env_state)
    for k, v in env_state.items():
        assert sd[k].dtype == load_dtype and sd[k].device.type == "cpu"
        assert torch.equal(sd[k], v.to(file_dtype).to(load_dtype)), k
    assert not any(p.is_meta or p.requires_grad for p in enc.parameters())
    assert not enc.training


def test_unet_roundtrip_and_sharded_index(tmp_path):
    torch.manual_seed(1)
    ref = build_unet_from_config(UNET_CFG, device="cpu")
    state = ref.state_dict()
    keys = list(state)
    folder = tmp_path / "unet"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(dict(UNET_CFG, unknown_future_key=[1, 2])))
    half = len(keys) // 2
    shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": keys[:half],
              "diffusion_pytorch_model-00002-of-00002.safetensors": keys[half:]}
    weight_map = {}
    for fname, ks in shards.items():
        save_file({k: state[k].contiguous() for k in ks}, str(folder / fname))
        weight_map.update({k: fname for k in ks})
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(CheckpointMismatchError, match="has no \"metadata\" object"):
        load_unet(folder)
    total = sum(t.numel() * t.element_size() for t in state.values())
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    unet = load_unet(folder)
    assert isinstance(unet, DRUNet)
    assert all(torch.equal(unet.state_dict()[k], state[k]) for k in keys)
    assert unet.context_embedding.max_norm == 10


def test_zero_byte_root_config_is_tolerated(tmp_path, env_state):
    root = tmp_path / "ckpt"
    write_component(root / "env_encoder", ENV_CFG, env_state)
    (root / "config.json").write_bytes(b"")
    assert read_root_config(root) == {}
    assert read_root_config(tmp_path / "nowhere") == {}
    assert read_config(root / "config.json", allow_empty=True) == {}
    enc = load_env_encoder(root / "env_encoder")
    assert torch.equal(enc.conv_in.weight, env_state["conv_in.weight"])
    # ... but an empty component config cannot build anything
    (root / "env_encoder" / "config.json").write_bytes(b"")
    with pytest.raises(CheckpointMismatchError, match="config.json is empty"):
        load_env_encoder(root / "env_encoder")


# ---------------------------------------------------------------------- mismatches
def test_renamed_key_is_reported(tmp_path, env_state):
    state = dict(env_state)
    state["down_blocks.0.resnets.0.conv1.weights"] = state.pop("down_blocks.0.resnets.0.conv1.weight")
    folder = write_component(tmp_path / "env_encoder", ENV_CFG, state)
    with pytest.raises(CheckpointMismatchError) as info:
        load_env_encoder(folder)
    err = info.value
    assert err.folder == str(folder)
    assert err.missing == ["down_blocks.0.resnets.0.conv1.weight"]
    assert err.unexpected == ["down_blocks.0.resnets.0.conv1.weights"]
    assert err.shape_mismatched == []
    msg = str(err)
    assert str(folder) in msg and "EnvEncoder" in msg
    assert "\n" not in msg                                   # one line; every key in .details (-v)
    assert "1 missing keys (down_blocks.0.resnets.0.conv1.weight)" in msg
    assert "1 unexpected keys (down_blocks.0.resnets.0.conv1.weights)" in msg
    assert "missing key: down_blocks.0.resnets.0.conv1.weight" in err.details


def test_wrong_shape_is_reported(tmp_path, env_state):
    state = dict(env_state)
    state["conv_in.weight"] = torch.zeros(32, 8, 3, 3)
    folder = write_component(tmp_path / "env_encoder", ENV_CFG, state, dtype=torch.float16)
    with pytest.raises(CheckpointMismatchError) as info:
        load_env_encoder(folder)
    err = info.value
    assert err.missing == [] and err.unexpected == []
    assert err.shape_mismatched == [("conv_in.weight", (32, 8, 3, 3), (32, 12, 3, 3))]
    assert "conv_in.weight: file (32, 8, 3, 3) vs module (32, 12, 3, 3)" in str(err)


def test_non_float_tensor_is_reported(tmp_path, env_state):
    state = dict(env_state)
    folder = write_component(tmp_path / "env_encoder", ENV_CFG, state)
    state["conv_in.bias"] = torch.arange(32, dtype=torch.int32)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(CheckpointMismatchError, match="conv_in.bias: I32"):
        load_env_encoder(folder)


def test_many_mismatches_are_truncated_with_counts(tmp_path, env_state):
    # an EnvEncoder checkpoint loaded with a UNet config: everything mismatches
    folder = write_component(tmp_path / "unet", UNET_CFG, env_state)
    with pytest.raises(CheckpointMismatchError) as info:
        load_unet(folder)
    err = info.value
    unet_keys = list(build_unet_from_config(UNET_CFG).state_dict())
    assert err.missing == [k for k in unet_keys if k not in env_state]
    assert err.unexpected == sorted(k for k in env_state if k not in unet_keys)
    assert len(err.missing) > 800 and len(err.unexpected) > 10
    assert "conv_in.weight" not in err.missing  # present in both, but with another shape
    msg = str(err)
    assert "\n" not in msg and len(msg) < 1000                # one line: counts and the first keys
    assert f"{len(err.missing)} missing keys ({err.missing[0]}, {err.missing[1]}, …)" in msg
    assert f"{len(err.unexpected)} unexpected keys (" in msg
    assert "conv_in.weight: file (32, 12, 3, 3) vs module (32, 8, 3, 3)" in msg
    assert f"… and {len(err.missing) - 50} more missing keys" in err.details     # the details: -v only
    assert len(err.details) < 210 and err.details == tuple(err.__notes__)


def test_missing_files_and_folders(tmp_path, env_state):
    folder = write_component(tmp_path / "env_encoder", ENV_CFG, env_state)
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CheckpointFileMissingError, match="weights file") as info:
        load_env_encoder(folder)
    assert isinstance(info.value, CheckpointMismatchError) and isinstance(info.value, FileNotFoundError)
    assert info.value.path.endswith("diffusion_pytorch_model.safetensors")

    folder = write_component(tmp_path / "env2", ENV_CFG, env_state)
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointFileMissingError, match="config"):
        load_env_encoder(folder)
    with pytest.raises(CheckpointFileMissingError, match="folder"):
        load_env_encoder(tmp_path / "does_not_exist")

    folder = tmp_path / "sharded"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(ENV_CFG))
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"conv_in.weight": "part-1.safetensors"}}))
    with pytest.raises(CheckpointFileMissingError, match="part-1"):
        load_env_encoder(folder)


def test_corrupt_files(tmp_path, env_state):
    folder = write_component(tmp_path / "env_encoder", ENV_CFG, env_state)
    weights = folder / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # truncated download
    with pytest.raises(CheckpointMismatchError, match="truncated or corrupt"):
        load_env_encoder(folder)
    weights.write_bytes(b"<html>404</html>")
    with pytest.raises(CheckpointMismatchError, match="not a readable safetensors file"):
        load_env_encoder(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointMismatchError, match="not valid JSON"):
        load_env_encoder(folder)
    (folder / "config.json").write_text(json.dumps(dict(ENV_CFG, latent_encoder=False)))
    with pytest.raises(CheckpointMismatchError, match="cannot build"):
        load_env_encoder(folder)


# ---------------------------------------------------------------------- golden tiny checkpoints
GOLDEN_COMPONENTS = [
    ("inverse-tiny", "unet", load_unet, 1425, "F16"),
    ("inverse-tiny", "vae", load_vae, 295, "F16"),
    ("forward-tiny", "unet", load_unet, 1312, "F16"),
    ("forward-tiny", "vae", load_vae, 295, "F32"),
    ("forward-tiny", "env_encoder", load_env_encoder, 72, "F32"),
]


@pytest.mark.parametrize("model,sub,loader,count,file_dtype", GOLDEN_COMPONENTS,
                         ids=[f"{m}/{s}" for m, s, *_ in GOLDEN_COMPONENTS])
def test_golden_tiny_checkpoints_load_every_tensor(model, sub, loader, count, file_dtype):
    folder = require_golden(model, "checkpoint", sub)
    header = read_safetensors_header(folder / "diffusion_pytorch_model.safetensors")
    assert len(header) == count and {v["dtype"] for v in header.values()} == {file_dtype}
    module = loader(folder, dtype=torch.float32, device="cpu")
    sd = module.state_dict()
    assert set(sd) == set(header) and len(sd) == count  # every stored tensor consumed, none missing
    with safe_open(str(folder / "diffusion_pytorch_model.safetensors"), "pt") as fh:
        for k in fh.keys():
            assert sd[k].dtype == torch.float32
            assert torch.equal(sd[k], fh.get_tensor(k).float()), k


def test_golden_tiny_unet_properties():
    inv = load_unet(require_golden("inverse-tiny", "checkpoint", "unet"))
    fwd = load_unet(require_golden("forward-tiny", "checkpoint", "unet"))
    assert not inv.is_forward and inv.num_passes == 16 and inv.has_temporal_cross_attention
    assert fwd.is_forward and fwd.num_passes == 0 and not fwd.has_temporal_cross_attention
    assert not inv.has_lora and not fwd.has_lora


def test_golden_forward_weights_with_inverse_config_are_rejected(tmp_path):
    src = require_golden("forward-tiny", "checkpoint", "unet")
    inv_cfg = require_golden("inverse-tiny", "checkpoint", "unet", "config.json")
    folder = tmp_path / "unet"
    folder.mkdir()
    shutil.copy(src / "diffusion_pytorch_model.safetensors", folder)
    shutil.copy(inv_cfg, folder / "config.json")
    with pytest.raises(CheckpointMismatchError) as info:
        load_unet(folder)
    err = info.value
    assert err.missing[-1] == "context_embedding.weight"
    assert len(err.missing) == 1 + 16 * 7  # pass embedding + the temporal attn2/norm2 tensors
    assert ("conv_in.weight", (32, 24, 3, 3), (32, 8, 3, 3)) in err.shape_mismatched
    assert err.unexpected == []
