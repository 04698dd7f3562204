"""The env-proj conformance runner works on any folder in the golden format (self-contained)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from engine.envmap import (
    MissingInputError,
    process_environment_map,
    read_hdr,
    run_envproj_case,
    write_hdr,
)
from engine.envmap.conformance_case import run_envproj_cases


def _make_golden(root, hdr_field, put_in_inputs=True):
    env = root / "env-proj"
    (env / "inputs").mkdir(parents=True)
    (env / "outputs").mkdir()
    rng = np.random.default_rng(0)
    img = np.exp(rng.normal(0, 2, size=(16, 32, 3))).astype(np.float32)
    hdr_path = env / "inputs" / "tiny.hdr"
    write_hdr(hdr_path, img)
    kwargs = {"resolution": [8, 8], "num_frames": 3, "fixed_pose": True, "pose_file": None, "rotate_envlight": True,
              "env_format": ["proj", "fixed", "ball"], "log_scale": 100, "env_strength": 2.0, "env_flip": True,
              "env_rot": 90.0, "elevation": 15, "save_dir": None}
    out = process_environment_map(
        read_hdr(hdr_path), (8, 8), 3, rotate_envlight=True, elevation=15.0, env_rot=90.0, env_flip=True,
        env_strength=2.0, log_scale=100, env_format=("proj", "fixed", "ball", "cubemap"), cube_resolution=32,
    )
    idx = torch.tensor([[0, 0, 0], [3, 31, 5], [5, 10, 20]], dtype=torch.int32)
    tensors = {k: v for k, v in out.items() if k != "cubemap"}
    tensors["cubemap_probe_index"] = idx
    tensors["cubemap_probe_value"] = out["cubemap"][idx[:, 0].long(), idx[:, 1].long(), idx[:, 2].long()]
    tensors["env_log"] = tensors["env_log"].clone()
    tensors["env_log"][1, 2, 3, 0] += 0.5  # one recorded value differs: the runner must not hide it
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(env / "outputs" / "c1.safetensors"))
    sha = hashlib.sha256(hdr_path.read_bytes()).hexdigest()
    if not put_in_inputs:
        (root.parent / "hdri").mkdir(exist_ok=True)
        hdr_path.rename(root.parent / "hdri" / "tiny.hdr")
    case = {"file": "outputs/c1.safetensors", "hdr": hdr_field, "hdr_sha256": sha, "kwargs": kwargs,
            "cubemap_shape": [6, 32, 32, 3], "tensors": {k: {} for k in tensors}}
    (env / "cases.json").write_text(json.dumps({"cases": {"c1": case}}))
    return case, tensors


@pytest.mark.parametrize("hdr_field,in_inputs", [("env-proj/inputs/tiny.hdr", True), ("elsewhere/tiny.hdr", True),
                                                 ("<original repo>/examples/hdri/tiny.hdr", False)])
def test_runner_on_custom_folder(tmp_path, hdr_field, in_inputs):
    root = tmp_path / "g"
    case, tensors = _make_golden(root, hdr_field, put_in_inputs=in_inputs)
    for golden_dir in (root, root / "env-proj"):  # the golden root or the env-proj folder
        pairs = run_envproj_case(case, golden_dir)
        assert set(pairs) == set(tensors) - {"cubemap_probe_index"}
        for name, (ours, ref) in pairs.items():
            assert ours.shape == ref.shape
            diff = (ours - ref).abs().max().item()
            assert diff == (0.5 if name == "env_log" else 0.0), name


def test_runner_missing_or_wrong_hdr(tmp_path):
    root = tmp_path / "g"
    case, _ = _make_golden(root, "env-proj/inputs/tiny.hdr")
    bad = dict(case, hdr_sha256="0" * 64)
    with pytest.raises(MissingInputError, match="sha256 mismatch"):
        run_envproj_case(bad, root)
    (root / "env-proj" / "inputs" / "tiny.hdr").unlink()
    with pytest.raises(MissingInputError, match="tiny.hdr"):
        run_envproj_case(case, root)
    results = run_envproj_cases(root)
    assert isinstance(results["c1"], MissingInputError)
