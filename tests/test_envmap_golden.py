"""Golden-vector conformance of the env-map processing (``<golden>/env-proj``).

Skipped when the golden folder is absent.  Location: ``$DR_GOLDEN_DIR`` or ``../shared/golden``
beside the project root.  Tolerances (golden README section 5): maps atol 1e-5; HDR tensors rtol 1e-5
plus atol 1e-5; everything is far tighter in practice (see docs/ENVMAP.md).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from golden_paths import GOLDEN  # noqa: E402

from engine.envmap import (
    MissingInputError,
    ball_reflect_vec,
    envmap_vec,
    get_cam_matrix,
    ideal_ball,
    latlong_vec,
    read_hdr,
    reinhard16,
    rotation_y,
    run_envproj_case,
    srgb_oetf,
)

ENV_PROJ = GOLDEN / "env-proj"
CASES_JSON = ENV_PROJ / "cases.json"

pytestmark = pytest.mark.skipif(
    not CASES_JSON.is_file(), reason=f"golden env-proj vectors not found at {ENV_PROJ} (set DR_GOLDEN_DIR)"
)


def _cases():
    if not CASES_JSON.is_file():
        return {}
    return json.loads(CASES_JSON.read_text())["cases"]


@pytest.fixture(scope="module")
def helpers():
    from safetensors.torch import load_file

    return load_file(str(ENV_PROJ / "outputs" / "helpers.safetensors"))


def test_helpers_decoded_hdrs_bit_exact(helpers):
    for name in ("synthetic_sky_64x32", "sunny_vondelpark_128x64"):
        path = ENV_PROJ / "inputs" / f"{name}.hdr"
        if name not in helpers or not path.is_file():
            pytest.skip(f"{path} or helper {name} missing")
        ours = read_hdr(path)
        ref = helpers[name].numpy()
        assert ours.shape == ref.shape
        assert np.array_equal(ours.view(np.uint32), ref.view(np.uint32)), name


def test_helpers_direction_grids_exact(helpers):
    for key, ref in helpers.items():
        for prefix, fn in (("latlong_vec_", latlong_vec), ("envmap_vec_", envmap_vec)):
            if key.startswith(prefix):
                h, w = map(int, key[len(prefix):].split("x"))
                torch.testing.assert_close(fn(h, w), ref, atol=0, rtol=0, msg=key)


def test_helpers_ramps_and_matrices(helpers):
    ramp = helpers["ramp"]
    torch.testing.assert_close(srgb_oetf(ramp), helpers["rgb2srgb_ramp"], atol=0, rtol=1e-6)
    torch.testing.assert_close(reinhard16(ramp), helpers["reinhard16_ramp"], atol=0, rtol=1e-6)
    for key, elev in (("cam_matrix_pi2_elev0", 0.0), ("cam_matrix_pi2_elev30", 30.0)):
        ours = get_cam_matrix(math.pi / 2, math.radians(elev)).float()
        torch.testing.assert_close(ours, helpers[key], atol=1e-7, rtol=0)
    ry = helpers["rotate_y_2pi_over_3"]
    torch.testing.assert_close(rotation_y(2 * math.pi / 3), ry[:3, :3], atol=0, rtol=0)


def test_helpers_ideal_ball_exact(helpers):
    nrm, mask = ideal_ball(32)
    torch.testing.assert_close(nrm, helpers["ideal_ball_32"], atol=0, rtol=0)
    assert torch.equal(mask.to(torch.uint8), helpers["ideal_ball_32_mask"])
    torch.testing.assert_close(ball_reflect_vec(32), helpers["ball_reflect_vec_32"], atol=0, rtol=0)


def _is_hdr(name: str) -> bool:
    return "hdr" in name or name == "cubemap_probe_value"


@pytest.mark.parametrize("case_name", sorted(_cases()))
def test_envproj_case(case_name):
    case = _cases()[case_name]
    try:
        pairs = run_envproj_case(case, GOLDEN)
    except MissingInputError as e:
        pytest.skip(f"{case_name}: {e}")
    recorded = set(case["tensors"]) - {"cubemap_probe_index"}
    assert set(pairs) == recorded
    for name, (ours, ref) in pairs.items():
        assert ours.shape == ref.shape, name
        if _is_hdr(name):
            torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5, msg=f"{case_name}/{name}")
        else:
            torch.testing.assert_close(ours, ref.to(ours.dtype), rtol=0, atol=1e-5, msg=f"{case_name}/{name}")
    # documented properties of the original, on our output
    kw = case["kwargs"]
    if kw.get("rotate_envlight") and kw["num_frames"] > 1:
        torch.testing.assert_close(pairs["env_ldr"][0][-1], pairs["env_ldr"][0][0], atol=0, rtol=0)
    if not kw.get("rotate_envlight") and float(kw.get("elevation", 0)) == 0 and "fixed_env_ldr" in pairs:
        torch.testing.assert_close(pairs["env_ldr"][0][0], pairs["fixed_env_ldr"][0], atol=0, rtol=0)


def test_original_hdri_found_by_hash():
    """Cases naming an original-repository HDRI resolve it from ../hdri only with a matching sha256."""
    from engine.envmap.conformance_case import find_case_hdr

    for name, case in _cases().items():
        if not str(case["hdr"]).startswith("<"):
            continue
        try:
            path = find_case_hdr(case, GOLDEN)
        except MissingInputError as e:
            assert Path(case["hdr"]).name in str(e)
            continue
        assert hashlib.sha256(path.read_bytes()).hexdigest() == case["hdr_sha256"], name
        wrong = dict(case, hdr_sha256="0" * 64)
        with pytest.raises(MissingInputError, match="sha256 mismatch"):
            find_case_hdr(wrong, GOLDEN)
