"""Temporal Conv3d evaluated as Conv2d (engine.models.temporal_conv): same numbers, same parameters,
reversible, used by the pipelines on the CPU and undone by the reference call pattern."""
import numpy as np
import pytest
import torch
from torch import nn

from engine.models.temporal_conv import TemporalConv3d, default_fold, fold_temporal_convs, unfold_temporal_convs
from engine.pipelines.random_components import build_components
from engine.perf.reference_pattern import as_reference
from engine.pipelines import InverseRenderer


@pytest.mark.parametrize("shape,kernel,pad", [((2, 8, 5, 4, 6), 3, 1), ((1, 8, 7, 3, 3), 5, 2), ((1, 8, 4, 1, 1), 3, 0)])
def test_folded_conv_equals_conv3d(shape, kernel, pad):
    torch.manual_seed(0)
    conv = nn.Conv3d(8, 6, (kernel, 1, 1), padding=(pad, 0, 0))
    x = torch.randn(*shape)
    ref = conv(x)
    keys = list(conv.state_dict())
    assert fold_temporal_convs(conv) == 1 and type(conv) is TemporalConv3d
    out = conv(x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert list(conv.state_dict()) == keys                   # checkpoints load unchanged
    assert unfold_temporal_convs(conv) == 1 and type(conv) is nn.Conv3d
    torch.testing.assert_close(conv(x), ref, rtol=0, atol=0)


@pytest.mark.parametrize("conv", [nn.Conv3d(4, 4, (3, 3, 3), padding=1), nn.Conv3d(4, 4, (3, 1, 1), stride=(2, 1, 1)),
                                  nn.Conv3d(4, 4, (3, 1, 1), groups=2), nn.Conv3d(4, 4, (3, 1, 1), padding="same",
                                                                                  padding_mode="replicate")])
def test_other_convolutions_are_left_alone(conv):
    assert fold_temporal_convs(conv) == 0 and type(conv) is nn.Conv3d


def test_pipelines_fold_on_the_cpu_and_the_reference_pattern_does_not():
    assert default_fold(torch.device("cpu")) and not default_fold(torch.device("cuda"))
    inv = InverseRenderer(build_components("inverse", "tiny", device="cpu"))
    folded = lambda: sum(type(m) is TemporalConv3d for mod in (inv.unet, inv.vae) for m in mod.modules())  # noqa: E731
    stock = lambda: sum(type(m) is nn.Conv3d for mod in (inv.unet, inv.vae) for m in mod.modules())  # noqa: E731
    n = folded()
    assert n == 44 + 23 and stock() == 0     # the UNet's temporal resnets and the VAE's temporal decoder
    with as_reference(inv):
        assert folded() == 0 and stock() == n
    assert folded() == n

    rng = np.random.default_rng(0)
    video = rng.random((3, 32, 32, 3), dtype=np.float32)
    ours = inv(video, passes=["basecolor"], num_inference_steps=2, seed=0)["basecolor"]
    unfold_temporal_convs(inv.unet, inv.vae)
    stock_out = inv(video, passes=["basecolor"], num_inference_steps=2, seed=0)["basecolor"]
    np.testing.assert_allclose(ours, stock_out, atol=2e-5)
