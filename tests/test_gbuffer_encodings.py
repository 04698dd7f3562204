"""engine.gbuffer.encodings: physical conventions ↔ the models' [0, 1] encodings."""
import numpy as np
import pytest
import torch

from engine.gbuffer import encodings as enc


# ------------------------------------------------------------------------------------------ colour
@pytest.mark.parametrize("lin, srgb", [(0.0, 0.0), (1.0, 1.0), (0.5, 0.735357), (0.18, 0.461356),
                                       (0.001, 0.01292), (0.0031308, 0.040450), (0.214041, 0.5)])
def test_srgb_known_values(lin, srgb):
    assert enc.linear_to_srgb(np.float32(lin)) == pytest.approx(srgb, abs=2e-6)
    assert enc.srgb_to_linear(np.float32(srgb)) == pytest.approx(lin, abs=2e-6)


def test_srgb_round_trip_and_clipping():
    x = np.random.default_rng(0).random((4, 5, 6, 3)).astype(np.float32)
    y = enc.linear_to_srgb(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(enc.srgb_to_linear(y), x, atol=2e-6)
    assert enc.linear_to_srgb(np.array([-0.5, 2.0])).tolist() == [0.0, 1.0]  # model input: clipped
    np.testing.assert_allclose(enc.linear_to_srgb(np.array([2.0]), clip=False),
                               [1.055 * 2 ** (1 / 2.4) - 0.055], rtol=1e-6)  # HDR extends the curve


def test_colour_torch_matches_numpy():
    x = np.random.default_rng(1).random((2, 3, 3)).astype(np.float32)
    t = enc.linear_to_srgb(torch.from_numpy(x))
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), enc.linear_to_srgb(x), atol=1e-6)
    np.testing.assert_allclose(enc.srgb_to_linear(t).numpy(), x, atol=1e-5)


# ------------------------------------------------------------------------------------------ normals
def test_normal_encoding_axes():
    n = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0], [-1, 0, 0]], np.float32)
    np.testing.assert_allclose(enc.encode_normal(n), [[.5, .5, 1], [1, .5, .5], [.5, 1, .5], [0, .5, .5]])


def test_normal_round_trip_renormalise_and_zero():
    rng = np.random.default_rng(2)
    n = rng.normal(size=(3, 8, 8, 3)).astype(np.float32)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    np.testing.assert_allclose(enc.decode_normal(enc.encode_normal(n)), n, atol=1e-6)
    # encode renormalises non-unit (anti-aliased) normals; zero (background) → grey
    np.testing.assert_allclose(enc.encode_normal(np.array([[0, 0, 2.0], [0, 0, 0]])), [[.5, .5, 1], [.5, .5, .5]])
    # decode renormalises model output and maps zero length to +Z
    d = enc.decode_normal(np.array([[0.5, 0.5, 0.5], [0.75, 0.5, 0.5], [0.5, 0.5, 0.9]]))
    np.testing.assert_allclose(d, [[0, 0, 1], [1, 0, 0], [0, 0, 1]], atol=1e-6)
    t = enc.decode_normal(torch.full((2, 3), 0.5))
    assert t.tolist() == [[0, 0, 1], [0, 0, 1]]


# ------------------------------------------------------------------------------------------ scalars
def test_scalar_grey_replication_and_mean():
    r = np.array([[0.25, 1.5], [-1, 0.5]], np.float32)
    g = enc.encode_scalar(r)
    assert g.shape == (2, 2, 3)
    np.testing.assert_allclose(g[..., 0], [[0.25, 1], [0, 0.5]])
    assert (g[..., 0] == g[..., 2]).all()
    assert enc.encode_scalar(r[None, ..., None]).shape == (1, 2, 2, 3)
    out = enc.decode_scalar(np.array([[0.2, 0.3, 0.4]]))
    assert out.shape == (1, 1) and out[0, 0] == pytest.approx(0.3)


# ------------------------------------------------------------------------------------------ depth
def _clip():
    """Two frames; frame 1 is exactly 2× farther than frame 0; a background strip (Cycles 1e10)."""
    f0 = np.tile(np.linspace(1.0, 2.0, 50, dtype=np.float32), (20, 1))
    f0[:, -5:] = 1e10
    f1 = np.where(f0 < 1e9, f0 * 2, f0)
    return np.stack([f0, f1])


def test_depth_range_is_per_clip_min_and_p98():
    d = _clip()
    near, far = enc.compute_depth_range(d)
    valid = d[d < 1e9]
    assert near == pytest.approx(1.0)
    assert far == pytest.approx(np.percentile(valid, 98))
    assert far > 3.5  # from frame 1: one range for the whole clip


def test_depth_normalisation_keeps_frame_ratio_not_per_frame():
    d = _clip()
    near, far = enc.compute_depth_range(d)
    x = enc.normalise_depth(d, near, far, background=enc.depth_background_mask(d))
    assert x[0, :, :-5].max() < 0.4  # frame 0 is NOT stretched to [0, 1] on its own
    assert x[0, 0, 0] == 0.0  # nearest pixel of the clip → black
    back = enc.denormalise_depth(x, near, far)
    inside = (d[1] <= far) & (d[1] < 1e9)
    np.testing.assert_allclose(back[1][inside] / back[0][inside], 2.0, rtol=1e-5)  # ratio kept
    np.testing.assert_allclose(back[inside[None].repeat(2, 0)], d[inside[None].repeat(2, 0)], rtol=1e-5)


def test_depth_background_goes_white():
    d = np.array([[[1.0, 1e10, np.inf, np.nan, 0.0, 50.0, 3.0]]], np.float32)
    alpha = np.array([[[1, 1, 1, 1, 1, 1, 0]]], np.float32)
    bg = enc.depth_background_mask(d, alpha=alpha, clip_end=50.0)  # EEVEE: background at clip_end
    assert bg.tolist() == [[[False, True, True, True, True, True, True]]]
    x = enc.normalise_depth(d, 1.0, 2.0, background=bg)
    assert x.tolist() == [[[0.0, 1, 1, 1, 1, 1, 1]]]
    assert enc.compute_depth_range(d, alpha=alpha, clip_end=50.0)[0] == 1.0


def test_decode_depth_normalised_or_with_range():
    v = np.full((1, 2, 2, 3), 0.25, np.float32)
    assert enc.decode_depth(v).shape == (1, 2, 2, 1)
    assert float(enc.decode_depth(v)[0, 0, 0, 0]) == pytest.approx(0.25)
    assert float(enc.decode_depth(v, (2.0, 6.0))[0, 0, 0, 0]) == pytest.approx(3.0)
    assert enc.depth_manifest(None)["kind"] == "normalised"
    assert enc.depth_manifest((2.0, 6.0)) == {"kind": "metric", "near": 2.0, "far": 6.0, "invert": False,
                                             "range_rule": enc.DEPTH_RANGE_RULE}


# ------------------------------------------------------------------------------------------ whole sets
def _manifest(depth=None, alpha=None):
    passes = {"basecolor": {"path": "basecolor/basecolor.####.exr", "channels": ["R", "G", "B"],
                            "encoding": "linear-rec709", "dtype": "half"},
              "normal": {"path": "normal/normal.####.exr", "channels": ["X", "Y", "Z"],
                         "encoding": "camera-normal", "dtype": "half"},
              "roughness": {"path": "roughness/roughness.####.exr", "channels": ["V"], "encoding": "non-color"},
              "depth": {"path": "depth/depth.####.exr", "channels": ["V"], "encoding": "depth-planar-metric",
                        "dtype": "float"}}
    m = {"format": "diffusion-renderer/gbuffer-set", "version": 1, "frame_numbers": [1, 2], "fps": 24,
         "resolution": [50, 20], "passes": passes, "depth": depth or {"kind": "metric"},
         "provenance": {"producer": "blender"}}
    if alpha:
        passes["alpha"] = {"path": "alpha/alpha.####.exr", "channels": ["V"], "encoding": "non-color"}
        m["alpha"] = "alpha"
    return m


def test_to_model_inputs_and_back():
    rng = np.random.default_rng(3)
    n = rng.normal(size=(2, 20, 50, 3)).astype(np.float32)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    frames = {"basecolor": rng.random((2, 20, 50, 3)).astype(np.float32), "normal": n,
              "roughness": rng.random((2, 20, 50, 1)).astype(np.float32), "depth": _clip()[..., None],
              "alpha": np.ones((2, 20, 50, 1), np.float32)}
    m = _manifest(alpha=True)
    x = enc.to_model_inputs(frames, m)
    assert set(x) == {"basecolor", "normal", "roughness", "depth"}  # alpha is consumed, not returned
    for v in x.values():
        assert v.shape == (2, 20, 50, 3) and v.min() >= 0 and v.max() <= 1
    rng_used = enc.resolve_depth_range(frames["depth"], m)
    assert rng_used == enc.compute_depth_range(_clip())
    assert (x["depth"][:, :, -5:] == 1).all()  # background white
    back = enc.from_model_outputs(x, depth_range=rng_used)
    np.testing.assert_allclose(back["basecolor"], frames["basecolor"], atol=1e-5)
    np.testing.assert_allclose(back["normal"], n, atol=1e-5)
    np.testing.assert_allclose(back["roughness"], frames["roughness"], atol=1e-6)
    inside = (frames["depth"] <= rng_used[1])
    np.testing.assert_allclose(back["depth"][inside], frames["depth"][inside], rtol=1e-5)
    # a recorded range wins over the frames'; without one, model depth stays normalised
    x2 = enc.to_model_inputs({"depth": frames["depth"]}, _manifest(depth={"kind": "metric", "near": 0, "far": 8}))
    assert x2["depth"][0, 0, 0, 0] == pytest.approx(1 / 8)
    assert enc.from_model_outputs({"depth": x2["depth"]})["depth"][0, 0, 0, 0] == pytest.approx(1 / 8)


def test_to_model_inputs_torch_and_normalised_depth():
    m = _manifest(depth={"kind": "normalised", "near": 0.0, "far": 1.0, "invert": True})
    m["passes"]["depth"]["encoding"] = "depth-normalised"
    d = torch.full((1, 2, 2, 1), 0.25)
    out = enc.to_model_inputs({"depth": d, "basecolor": torch.full((1, 2, 2, 3), 0.5)}, m)
    assert isinstance(out["depth"], torch.Tensor)
    assert out["depth"].shape == (1, 2, 2, 3)
    assert float(out["depth"][0, 0, 0, 0]) == pytest.approx(0.75)  # invert: 1 = near in the file
    assert float(out["basecolor"][0, 0, 0, 0]) == pytest.approx(0.735357, abs=1e-5)
