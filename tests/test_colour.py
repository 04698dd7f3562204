"""engine.colour: input colour spaces through OpenColorIO, by value (formulas from the colour spaces' own
specifications, not from OpenColorIO), names and errors, the ``auto`` rule."""
import numpy as np
import pytest

pytest.importorskip("PyOpenColorIO")

from engine import colour  # noqa: E402
from engine.contract import footage  # noqa: E402
from engine.gbuffer import linear_to_srgb  # noqa: E402

# ACEScg (AP1, ACES white) → linear Rec.709 (D65), the published matrix (Bradford adaptation)
AP1_TO_REC709 = np.array([[1.70505, -0.62179, -0.08326],
                          [-0.13026, 1.14080, -0.01055],
                          [-0.02400, -0.12897, 1.15297]])


def _srgb_oetf(x):
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)


def test_acescg_to_linear_rec709_to_srgb_by_value():
    acescg = np.array([[0.18, 0.18, 0.18], [0.5, 0.2, 0.1], [1.0, 0.0, 0.0], [0.05, 0.3, 0.6]], np.float32)
    lin = colour.to_working(acescg, "ACEScg")
    assert lin.dtype == np.float32 and lin.shape == acescg.shape
    np.testing.assert_allclose(lin, acescg @ AP1_TO_REC709.T, atol=2e-4)
    np.testing.assert_allclose(lin[0], 0.18, atol=1e-5)                       # grey stays grey
    assert lin[2, 1] < 0                                                      # out of Rec.709: kept, not clipped
    # … and on to what the model is fed: sRGB-encoded, clipped to [0, 1]
    np.testing.assert_allclose(linear_to_srgb(lin[1]), _srgb_oetf(acescg[1] @ AP1_TO_REC709.T), atol=2e-4)
    assert linear_to_srgb(lin[0])[0] == pytest.approx(0.46135, abs=1e-4)      # 18 % grey → sRGB 0.4614


def test_arri_logc_code_values_to_linear():
    # ARRI LogC3 EI800 (ALEXA Log C curve white paper): lin = (10^((t - d) / c) - b) / a above the cut
    a, b, c, d = 5.555556, 0.052272, 0.247190, 0.385537
    for t in (0.391007, 0.6, 0.2):
        got = colour.to_working(np.full((1, 3), t, np.float32), "ARRI LogC3 (EI800)")
        np.testing.assert_allclose(got, (10 ** ((t - d) / c) - b) / a, rtol=2e-4, atol=1e-6)
    assert colour.to_working(np.full((1, 3), 0.391007, np.float32), "arri_logc3_ei800")[0, 0] == \
        pytest.approx(0.18, abs=1e-4)
    # ARRI LogC4 (specification): lin = (2^(14 (t - c) / b + 6) - 64) / a
    a4, b4, c4 = (2 ** 18 - 16) / 117.45, (1023 - 95) / 1023, 95 / 1023
    for t in (0.278396, 0.5, 0.7):
        got = colour.to_working(np.full((2, 2, 3), t, np.float32), "ARRI LogC4")
        np.testing.assert_allclose(got, (2 ** (14 * (t - c4) / b4 + 6) - 64) / a4, rtol=2e-4, atol=1e-6)


def test_cineon_10bit_log_to_linear():
    # Kodak Cineon: 0.002 density per code, 0.6 negative gamma, black 95, white 685
    codes = np.array([95, 200, 445, 685, 1023], np.float64)
    black = 10 ** ((95 - 685) * 0.002 / 0.6)
    expect = (10 ** ((codes - 685) * 0.002 / 0.6) - black) / (1 - black)
    got = colour.to_working(np.repeat((codes / 1023)[:, None], 3, 1).astype(np.float32), "Cineon Log (DPX)")
    np.testing.assert_allclose(got[:, 0], expect, rtol=1e-4, atol=1e-6)
    assert got[0, 0] == pytest.approx(0.0, abs=1e-6) and got[3, 0] == pytest.approx(1.0, abs=1e-5)
    assert got[4, 0] > 13                                       # log white is far above 1: not clipped


def test_names_aliases_and_one_line_errors():
    assert colour.resolve("acescg") == "ACEScg" and colour.resolve("ACES - ACEScg") == "ACEScg"
    assert colour.resolve("srgb") == colour.SRGB_SPACE and colour.resolve("LINEAR") == colour.WORKING_SPACE
    assert colour.resolve("sRGB - Texture") == colour.SRGB_SPACE and colour.resolve("cineon") == colour.CINEON
    assert {"ACEScg", "ARRI LogC4", "ARRI LogC3 (EI800)", colour.WORKING_SPACE, colour.CINEON} <= set(colour.names())
    with pytest.raises(ValueError, match=r"colorspace 'ACES cg': .* did you mean 'ACEScg'") as info:
        colour.resolve("ACES cg")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"colorspace 'zzz': .*use auto, srgb, linear or a name such as 'ACEScg'"):
        colour.check("zzz")
    colour.check("auto")
    colour.check("Auto")


class _Clip:
    def __init__(self, is_linear=False, transfer=None):
        self.is_linear, self.transfer = is_linear, transfer


@pytest.mark.parametrize("clip, setting, name, linear, converted", [
    (_Clip(), "auto", colour.SRGB_SPACE, False, False),
    (_Clip(is_linear=True), "auto", colour.WORKING_SPACE, True, False),
    (_Clip(transfer="Printing density"), "auto", colour.CINEON, True, True),
    (_Clip(transfer="Logarithmic"), "auto", colour.CINEON, True, True),
    (_Clip(transfer="Linear"), "auto", colour.WORKING_SPACE, True, False),
    (_Clip(transfer="ITU-R 709-4"), "auto", colour.SRGB_SPACE, False, False),
    (_Clip(is_linear=True, transfer="Printing density"), "auto", colour.WORKING_SPACE, True, False),  # float DPX
    (_Clip(transfer="Printing density"), "srgb", colour.SRGB_SPACE, False, False),   # the setting wins
    (_Clip(), "linear", colour.WORKING_SPACE, True, False),
    (_Clip(is_linear=True), "ACEScg", "ACEScg", True, True),
    (_Clip(), "arri_logc4", "ARRI LogC4", True, True),
])
def test_auto_rule_and_given_spaces(clip, setting, name, linear, converted):
    got = colour.input_colour(clip, setting)
    assert (got.name, got.linear, got.needs_convert) == (name, linear, converted)
    frames = np.full((1, 2, 2, 3), 0.25, np.float32)
    assert (got.convert(frames) is frames) == (not converted)     # sRGB/linear: the numpy path, untouched


def test_every_blender_name_the_addon_maps_is_a_colour_space_here():
    """The add-on passes these names (engine/contract/footage.py) without asking the engine: each must resolve."""
    assert footage.BLENDER_COLORSPACES["ACEScg"] == "ACEScg"
    for blender_name, engine_name in footage.BLENDER_COLORSPACES.items():
        colour.check(engine_name)
