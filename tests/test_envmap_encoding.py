"""Tone-mapping formulas of the env-map conditions on known values (engine.envmap.encoding)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.envmap import encode_ldr, encode_log, reinhard16, srgb_oetf


def test_srgb_oetf_known_values():
    x = torch.tensor([0.0, 0.0031308, 0.0001, 0.5, 1.0, 4.0, 65504.0])
    y = srgb_oetf(x)
    expect = [0.0, 0.0031308 * 12.92, 0.001292, 1.055 * 0.5 ** (1 / 2.4) - 0.055, 1.0, 1.055 * 4 ** (1 / 2.4) - 0.055, 107.10451]
    np.testing.assert_allclose(y.numpy(), expect, rtol=2e-6, atol=1e-7)
    # continuity at the threshold and monotonicity
    t = torch.linspace(0.0, 0.01, 1001)
    assert torch.all(torch.diff(srgb_oetf(t)) >= 0)
    assert abs(float(srgb_oetf(torch.tensor(0.0031309))) - 0.0031308 * 12.92) < 5e-6  # ~continuous


def test_reinhard16_known_values():
    x = np.array([0.0, 1.0, 16.0, 256.0], np.float32)
    np.testing.assert_allclose(reinhard16(x), [0.0, 0.501953125, 1.0, 256 * 2 / 257], rtol=1e-6)
    assert isinstance(reinhard16(x), np.ndarray)  # numpy in -> numpy out


def test_encode_ldr_and_log():
    e = torch.tensor([0.0, 1.0, 16.0, 1e6, math.sqrt(10001.0) - 1.0, 10000.0, 65504.0])
    ldr = encode_ldr(e)
    assert ldr[0] == 0 and ldr[2] == pytest.approx(1.0, abs=1e-6) and float(ldr[3]) == pytest.approx(1.0, abs=1e-6)
    assert ldr[1] == pytest.approx(1.055 * 0.501953125 ** (1 / 2.4) - 0.055, rel=1e-6)
    log = encode_log(e)
    assert log[0] == 0 and log[5] == pytest.approx(1.0, abs=1e-6) and float(log[6]) == pytest.approx(1.0, abs=1e-6)  # clamped
    assert log[4] == pytest.approx(1.055 * 0.5 ** (1 / 2.4) - 0.055, rel=1e-5)  # ln(1+E)/ln(1+1e4) = 0.5
    log100 = encode_log(torch.tensor([100.0]), log_scale=100)
    assert float(log100[0]) == pytest.approx(1.0, abs=1e-6)
    assert torch.all((ldr >= 0) & (ldr <= 1)) and torch.all((log >= 0) & (log <= 1))
    with pytest.raises(ValueError):
        encode_log(e, log_scale=0)
