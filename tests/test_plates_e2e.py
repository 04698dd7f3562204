"""Plates as studios deliver them, delit end to end on a tiny random inverse checkpoint: a 10-bit log DPX
sequence and an ACEScg EXR sequence (both written with OpenImageIO). The plate's rgb pass must come out as
scene-linear Rec.709 computed from the colour spaces' own formulas, and the model must be fed its sRGB
encoding."""
import json

import numpy as np
import pytest

oiio = pytest.importorskip("OpenImageIO")
pytest.importorskip("PyOpenColorIO")

from engine.gbuffer import linear_to_srgb, open_gbuffer_set  # noqa: E402

AP1_TO_REC709 = np.array([[1.70505, -0.62179, -0.08326],
                          [-0.13026, 1.14080, -0.01055],
                          [-0.02400, -0.12897, 1.15297]])
H, W = 64, 64


@pytest.fixture(scope="module")
def tiny_inverse(ckpts):
    from engine.pipelines import InverseRenderer

    return InverseRenderer.from_pretrained(ckpts[0], device="cpu")


class _Spy:
    """The renderer, recording the frames it is fed."""

    def __init__(self, renderer):
        self._r, self.fed = renderer, []

    def __getattr__(self, name):
        return getattr(self._r, name)

    def __call__(self, frames, *a, **kw):
        self.fed.append(np.array(frames))
        return self._r(frames, *a, **kw)


def _write(path, pixels, fmt, **attrs):
    spec = oiio.ImageSpec(pixels.shape[1], pixels.shape[0], 3, fmt)
    for k, v in attrs.items():
        spec.attribute(k, v)
    out = oiio.ImageOutput.create(str(path))
    assert out.open(str(path), spec), oiio.geterror()
    assert out.write_image(pixels)
    out.close()


def _run(src, out, renderer, **kw):
    from engine.jobs.inverse_job import InverseSettings, run_inverse

    settings = InverseSettings(passes=("basecolor", "normal"), frames=4, overlap=1, steps=1, resolution=(W, H),
                               previews=False, **kw)
    return run_inverse(src, out, settings, renderer=renderer, show_progress=False)


def test_10bit_log_dpx_sequence_delights(tiny_inverse, tmp_path):
    rng = np.random.default_rng(7)
    codes = {f: rng.integers(95, 900, (H, W, 3)).astype(np.uint16) for f in (1001, 1002, 1003)}
    plate = tmp_path / "plate"
    plate.mkdir()
    for f, c in codes.items():
        _write(plate / f"shot.{f}.dpx", (c << 6) | (c >> 4), "uint16",
               **{"oiio:BitsPerSample": 10, "dpx:Transfer": "Printing density"})
    spy = _Spy(tiny_inverse)
    summary = _run(plate / "shot.####.dpx", tmp_path / "set", spy)           # auto: the header says log
    gset = open_gbuffer_set(tmp_path / "set")
    assert gset.frame_numbers == [1001, 1002, 1003] and gset.resolution == (W, H)
    assert sorted(gset.passes) == ["basecolor", "normal", "rgb"]
    black = 10 ** ((95 - 685) * 0.002 / 0.6)
    for f, c in codes.items():
        lin = (10 ** ((c - 685.0) * 0.002 / 0.6) - black) / (1 - black)       # Cineon → scene-linear
        np.testing.assert_allclose(gset.read("rgb", f), lin, rtol=2e-3, atol=1e-4)   # half-float EXR
        assert np.isfinite(gset.read("basecolor", f)).all()
    first = (10 ** ((codes[1001] - 685.0) * 0.002 / 0.6) - black) / (1 - black)
    np.testing.assert_allclose(spy.fed[0].reshape(-1, H, W, 3)[0], linear_to_srgb(first), atol=2e-3)
    manifest = json.loads((tmp_path / "set" / "manifest.json").read_text())
    rec = manifest["provenance"]["settings"]["input_colour"]
    assert rec["colorspace"] == "Cineon Log (DPX)" and rec["converted"] and "Printing density" in rec["why"]
    assert summary["clips"][0]["frames"] == 3


def test_acescg_exr_sequence_delights(tiny_inverse, tmp_path):
    rng = np.random.default_rng(8)
    acescg = {f: rng.uniform(0.0, 1.5, (H, W, 3)).astype(np.float32) for f in (1, 2)}
    for f, v in acescg.items():
        _write(tmp_path / f"cg_{f:04d}.exr", v, "float")
    spy = _Spy(tiny_inverse)
    _run(tmp_path / "cg_####.exr", tmp_path / "set", spy, colorspace="ACEScg")
    gset = open_gbuffer_set(tmp_path / "set")
    assert gset.frame_numbers == [1, 2]
    for f, v in acescg.items():
        np.testing.assert_allclose(gset.read("rgb", f), v @ AP1_TO_REC709.T, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(spy.fed[0].reshape(-1, H, W, 3)[0], linear_to_srgb(acescg[1] @ AP1_TO_REC709.T), atol=2e-3)
    # the same plate read as plain linear (the old behaviour) differs: the setting is applied
    _run(tmp_path / "cg_####.exr", tmp_path / "lin", tiny_inverse, colorspace="linear")
    assert np.abs(open_gbuffer_set(tmp_path / "lin").read("rgb", 1) - gset.read("rgb", 1)).max() > 0.1


def test_unknown_colour_space_is_one_line_before_any_work(tiny_inverse, tmp_path):
    from engine.jobs.common import JobError

    _write(tmp_path / "cg_0001.exr", np.zeros((H, W, 3), np.float32), "float")
    with pytest.raises(JobError, match=r"colorspace 'ACES-cg': .* did you mean 'ACEScg'") as info:
        _run(tmp_path / "cg_####.exr", tmp_path / "set", tiny_inverse, colorspace="ACES-cg")
    assert "\n" not in str(info.value) and not (tmp_path / "set").exists()
