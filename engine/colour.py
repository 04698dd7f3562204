"""Input colour spaces through OpenColorIO (PyPI ``opencolorio``): footage in any colour space of the engine's
config is converted to the model's working space, scene-linear Rec.709 (``Linear Rec.709 (sRGB)``), before
the inverse job encodes it as sRGB for the model; the outputs (the plate's ``rgb`` pass, base colour …) are
written scene-linear Rec.709, the G-buffer set's colour space (docs/GBUFFER_SET.md).

The config: OpenColorIO's built-in ACES studio config (:data:`CONFIG_URI`, pinned: camera log spaces such as
``ARRI LogC3 (EI800)``, ``ARRI LogC4``, ``S-Log3 S-Gamut3``, ``ACEScg``, ``ACES2065-1``, ``ADX10`` …) plus
one colour space of our own, :data:`CINEON` — Kodak Cineon printing-density log, what a 10-bit log DPX
holds (code 95 → 0, code 685 → 1.0; OCIO ``LogAffineTransform``, base 10, 0.002 density per code, 0.6 negative
gamma). Names and aliases match case-insensitively.

The job's ``colorspace`` setting (``engine/contract/params.py``): ``auto`` — EXR and float TIFF/DPX linear,
an integer DPX whose header says ``Printing density``/``Logarithmic`` (or says nothing) Cineon log, a DPX saying
``Linear`` linear, everything else sRGB; ``srgb`` and ``linear`` (the numpy conversions the model was always
fed, unchanged); or any colour-space name or alias of the config (:func:`resolve`, one-line error with the
closest names otherwise).
"""
from __future__ import annotations

import difflib
import functools

import numpy as np

__all__ = ["CONFIG_URI", "WORKING_SPACE", "SRGB_SPACE", "CINEON", "SHORT_NAMES", "InputColour", "resolve",
           "names", "to_working", "input_colour", "check"]

CONFIG_URI = "ocio://studio-config-v5.0.0_aces-v2.1_ocio-v2.6"
WORKING_SPACE = "Linear Rec.709 (sRGB)"      # scene-linear Rec.709: what the G-buffer set and the model use
SRGB_SPACE = "sRGB Encoded Rec.709 (sRGB)"
CINEON = "Cineon Log (DPX)"
SHORT_NAMES = {"srgb": SRGB_SPACE, "linear": WORKING_SPACE}   # the engine's own words (+ "auto")
_LOG_TRANSFERS = ("printing density", "logarithmic", "unspecified", "user defined", "undefined")
_MISSING = ("needs OpenColorIO, which is not installed in the engine's environment (install the engine's "
            "dependencies again: bin/_bootstrap.py, or pip install opencolorio)")


@functools.lru_cache(maxsize=1)
def _config():
    try:
        import PyOpenColorIO as ocio
    except ImportError:
        raise ValueError(f"colour space conversion {_MISSING}") from None
    cfg = ocio.Config.CreateFromFile(CONFIG_URI)
    cs = ocio.ColorSpace(ocio.REFERENCE_SPACE_SCENE, CINEON, aliases=["cineon", "cineon_log", "dpx_log"],
                         family="Input/Kodak", encoding="log", bitDepth=ocio.BIT_DEPTH_UINT10,
                         description="Kodak Cineon printing density (10-bit log DPX), Rec.709 primaries")
    black = 10.0 ** ((95 - 685) * 0.002 / 0.6)
    log = ocio.LogAffineTransform(logSideSlope=[300.0 / 1023] * 3, logSideOffset=[685.0 / 1023] * 3,
                                  linSideSlope=[1.0 - black] * 3, linSideOffset=[black] * 3,
                                  direction=ocio.TRANSFORM_DIR_INVERSE)
    log.setBase(10.0)
    to_lin = ocio.GroupTransform([
        log,
        ocio.ColorSpaceTransform(src=WORKING_SPACE, dst=cfg.getCanonicalName("aces_interchange")),
    ])
    cs.setTransform(to_lin, ocio.COLORSPACE_DIR_TO_REFERENCE)
    cfg.addColorSpace(cs)
    cfg.validate()
    return cfg


@functools.lru_cache(maxsize=1)
def _lookup() -> dict:
    """lower-cased name or alias → colour-space name."""
    cfg = _config()
    out = {}
    for cs in cfg.getColorSpaces():
        for n in (cs.getName(), *cs.getAliases()):
            out.setdefault(n.lower(), cs.getName())
    return out


def names() -> list[str]:
    """Every colour-space name of the engine's config (aliases not listed)."""
    return sorted(set(_lookup().values()))


def resolve(name: str) -> str:
    """A colour-space name, alias or the engine's ``srgb``/``linear`` → the config's name; ValueError (one
    line, the closest names) for anything else."""
    key = str(name).strip()
    if key.lower() in SHORT_NAMES:
        return SHORT_NAMES[key.lower()]
    table = _lookup()
    if key.lower() in table:
        return table[key.lower()]
    close = difflib.get_close_matches(key.lower(), list(table), n=4, cutoff=0.5)
    near = list(dict.fromkeys(table[c] for c in close))
    hint = (f"did you mean {' or '.join(repr(n) for n in near)}?" if near
            else f"use auto, srgb, linear or a name such as 'ACEScg', 'ARRI LogC4', '{CINEON}'")
    raise ValueError(f"colorspace {name!r}: not a colour space of the engine's OpenColorIO config; {hint} "
                     f"({len(names())} names: python -m engine.colour)")


def check(name: str) -> None:
    """Raises ValueError (one line) unless ``name`` is ``auto`` or resolves (:func:`resolve`)."""
    if str(name).strip().lower() != "auto":
        resolve(name)


@functools.lru_cache(maxsize=32)
def _processor(space: str):
    return _config().getProcessor(space, WORKING_SPACE).getDefaultCPUProcessor()


def to_working(frames: np.ndarray, space: str) -> np.ndarray:
    """``(…, 3)`` values in colour space ``space`` → float32 scene-linear Rec.709 (not clipped)."""
    out = np.array(frames, dtype=np.float32, order="C", copy=True)
    _processor(resolve(space)).applyRGB(out.reshape(-1))
    return out


class InputColour:
    """How the inverse job reads a clip's values: ``name`` (the config's colour space), ``linear`` (the
    values are — or are converted to — scene-linear Rec.709), ``convert`` (None: used as read; the numpy
    sRGB/linear paths) and ``why`` (how ``auto`` decided)."""

    def __init__(self, name: str, linear: bool, convert: bool, why: str):
        self.name, self.linear, self.needs_convert, self.why = name, linear, convert, why

    def convert(self, frames: np.ndarray) -> np.ndarray:
        return to_working(frames, self.name) if self.needs_convert else frames

    def record(self) -> dict:
        return {"colorspace": self.name, "linear": self.linear, "converted": self.needs_convert, "why": self.why}


def input_colour(clip, colorspace: str) -> InputColour:
    """The colour space of ``clip``'s values under the ``colorspace`` setting (see the module docstring)."""
    key = str(colorspace).strip()
    if key.lower() == "auto":
        transfer = (getattr(clip, "transfer", None) or "").strip()
        if transfer and not clip.is_linear:     # an integer DPX: its header's transfer characteristic
            t = transfer.lower()
            if t == "linear":
                return InputColour(WORKING_SPACE, True, False, f"auto: DPX transfer {transfer!r}")
            if t in _LOG_TRANSFERS:
                return InputColour(CINEON, True, True, f"auto: DPX transfer {transfer!r}")
            return InputColour(SRGB_SPACE, False, False, f"auto: DPX transfer {transfer!r} (display-referred)")
        if clip.is_linear:
            return InputColour(WORKING_SPACE, True, False, "auto: float frames")
        return InputColour(SRGB_SPACE, False, False, "auto: integer frames")
    name = resolve(key)
    if name == WORKING_SPACE:
        return InputColour(name, True, False, "given")
    if name == SRGB_SPACE:
        return InputColour(name, False, False, "given")
    return InputColour(name, True, True, "given")


if __name__ == "__main__":      # python -m engine.colour: the names the colorspace setting takes
    print("\n".join(["auto", "srgb", "linear", *names()]))
