"""DPX, TIFF and 16-bit PNG frames through OpenImageIO (PyPI ``openimageio``): any bit depth (8/10/12/16-bit
integer, half/float), RGB, RGBA or greyscale, read in-process (no decoder started per frame or per clip).

* :func:`read_rgb` — one file → float32 ``(H, W, 3)`` and whether its samples are float (linear, unclipped).
  Integer samples are scaled to [0, 1] (a 10-bit DPX code ``c`` → ``c / 1023``); unassociated alpha (PNG,
  most TIFF) is multiplied in here, in float (OpenImageIO's own premultiply would round to the file's bit
  depth), so the colour is composited over black; greyscale is replicated to RGB.
* :func:`file_info` — size, float-ness and the DPX header's transfer characteristic (``dpx:Transfer``:
  ``Printing density``, ``Logarithmic``, ``Linear`` …) without reading pixels.

``AVAILABLE`` is False when the package is not installed; :mod:`engine.io.sequence` then keeps its Pillow /
ffmpeg path for TIFF and PNG, and refuses DPX with a one-line error saying what to install.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

try:
    import OpenImageIO as oiio
except ImportError:  # pragma: no cover - exercised by monkeypatching AVAILABLE
    oiio = None

__all__ = ["AVAILABLE", "MISSING", "read_rgb", "file_info"]

AVAILABLE = oiio is not None
MISSING = ("needs OpenImageIO, which is not installed in the engine's environment "
           "(install the engine's dependencies again: bin/_bootstrap.py, or pip install openimageio)")


def _open(path: Path):
    if not AVAILABLE:
        raise ValueError(f"{path}: reading {path.suffix.lower()} files {MISSING}")
    config = oiio.ImageSpec()
    config.attribute("oiio:UnassociatedAlpha", 1)     # alpha as stored; associated below, in float
    inp = oiio.ImageInput.open(str(path), config)
    if inp is None:
        raise ValueError(f"{path}: cannot read this image ({oiio.geterror().strip() or 'unknown format'})")
    return inp


def _is_float(spec) -> bool:
    return spec.format.basetype in (oiio.FLOAT, oiio.HALF, oiio.DOUBLE)


def file_info(path) -> dict:
    """``{"size": (w, h), "is_float": bool, "transfer": str | None}`` from the header alone."""
    path = Path(path)
    inp = _open(path)
    try:
        spec = inp.spec()
        transfer = spec.getattribute("dpx:Transfer")
        return {"size": (spec.width, spec.height), "is_float": _is_float(spec),
                "transfer": str(transfer) if transfer else None}
    finally:
        inp.close()


def read_rgb(path) -> tuple[np.ndarray, bool]:
    """One image file → (float32 ``(H, W, 3)``, samples are float)."""
    path = Path(path)
    inp = _open(path)
    try:
        spec = inp.spec()
        bits = spec.get_int_attribute("oiio:BitsPerSample", 0)
        packed = spec.format.basetype == oiio.UINT16 and 0 < bits < 16      # 10/12-bit DPX, 12-bit TIFF
        data = inp.read_image(0, 0, 0, spec.nchannels, "uint16" if packed else "float")
        if data is None:
            raise ValueError(f"{path}: cannot read this image ({oiio.geterror().strip() or 'truncated file'})")
        if packed:   # the exact code values (OpenImageIO widens them to 16 bits by bit replication)
            data = (np.asarray(data) >> (16 - bits)).astype(np.float32) / float((1 << bits) - 1)
        names = [n.upper() for n in spec.channelnames]
        data = np.asarray(data, dtype=np.float32).reshape(spec.height, spec.width, spec.nchannels)
        if spec.alpha_channel >= 0 and spec.get_int_attribute("oiio:UnassociatedAlpha", 0):
            data = data * data[..., spec.alpha_channel:spec.alpha_channel + 1]
        if all(c in names for c in "RGB"):
            img = data[..., [names.index(c) for c in "RGB"]]
        else:  # Y, Y+A or unnamed single channel: the first non-alpha channel as grey
            colour = [i for i in range(spec.nchannels) if i != spec.alpha_channel] or [0]
            img = np.repeat(data[..., colour[0]:colour[0] + 1], 3, axis=-1)
        return np.ascontiguousarray(img), _is_float(spec)
    finally:
        inp.close()
