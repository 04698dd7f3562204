"""Token-chunked feed-forwards (engine.models.ff_chunk): exact, installed by the renderers, and what the
cost model's default-mode memory prediction assumes."""
import pytest
import torch
from diffusers.models.attention import FeedForward

from engine.models.ff_chunk import FF_MAX_TOKENS, chunk_feed_forward
from engine.perf import cost_model
from engine.pipelines.random_components import build_components
from engine.pipelines import ForwardRenderer, InverseRenderer


@pytest.mark.parametrize("shape", [(3, 7, 16), (50, 16), (2, 3, 4, 16)])
def test_chunked_feed_forward_is_exact(shape):
    torch.manual_seed(0)
    ff = FeedForward(16, activation_fn="geglu")
    x = torch.randn(*shape)
    ref = ff(x)
    calls = []
    original = ff.net[0].forward
    ff.net[0].forward = lambda h: calls.append(h.shape[0]) or original(h)
    assert chunk_feed_forward(torch.nn.Sequential(ff), max_tokens=8) == 1
    out = ff(x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    rows = x.numel() // 16
    assert calls == [8] * (rows // 8) + ([rows % 8] if rows % 8 else [])    # never more than 8 tokens per call


def test_renderers_install_it_and_small_calls_are_untouched():
    for cls, kind in ((InverseRenderer, "inverse"), (ForwardRenderer, "forward")):
        r = cls(build_components(kind, "tiny", device="cpu"))
        ffs = [m for m in r.unet.modules() if isinstance(m, FeedForward)]
        assert ffs and all(getattr(m.forward, "func", None) is not None for m in ffs), kind
    assert FF_MAX_TOKENS == 24 * 64 * 64          # one 24-frame 512² clip (64² latents)


def test_default_mode_memory_prediction_counts_one_clip_of_feed_forward():
    """Five passes at 512², 24 frames: the chunked feed-forward keeps the UNet's activation peak well
    under five unchunked clips (traced on the meta device)."""
    one = cost_model.unet_cost("inverse", "full", "float16", False, 1, 24, 64, 64)[1]
    five = cost_model.unet_cost("inverse", "full", "float16", False, 5, 24, 64, 64)[1]
    assert five < 4.0 * one
    est = cost_model.estimate("inverse", width=512, height=512, frames=24, device="cuda")
    assert est["peak_memory_gb"] <= 12.0
