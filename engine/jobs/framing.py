"""How a clip's frames are fitted into the model's processing size and brought back to the output size.

Three sizes: the **source** (the input's own W×H), the **processing** size (``resolution``: multiples of
64, default the cover-512 rule) and the **output** size (``output_size``: ``"source"`` — the default, so
results overlay the plate —, ``"processing"`` or ``"WxH"``). ``fit`` decides how the source's aspect
meets the processing size's:

* ``pad`` (default): the source is scaled to fit *inside* the processing size keeping its aspect and
  centred; the rest is filled by **edge replication** (every pass alike: colour, normals and depth
  repeat their border pixels, so the model sees no artificial edge). After the model the padding is
  cropped off (``content`` box) and the picture resized to the output size. Nothing is lost.
* ``crop``: the source is scaled to *cover* the processing size and centre-cropped; the output is the
  cropped region (``crop`` box, in source pixels; at ``output_size="source"`` its own pixel size). The
  summary carries a warning naming the lost rows/columns.
* ``stretch``: each axis scaled independently (the aspect changes; explicit only).

When the source already has the processing size all three are the identity: nothing is resampled.

Resampling per kind of data (:func:`resize`): ``color`` — bilinear, antialiased when shrinking;
``normal`` (unit vectors) and ``normal-encoded`` (``n·0.5+0.5``) — bilinear, then renormalised (zero
vectors, i.e. background, stay zero); ``depth`` (metric planar, background ≥ 1e9 such as Cycles' 1e10) —
mask-aware bilinear: only covered pixels are averaged, a pixel whose resized coverage is under one half
is background (1e10) again, so background never mixes into covered depth; ``nearest`` — nearest
neighbour (model-encoded depth of rendered G-buffers, where background is encoded as far = 1 and any
averaging would invent depths between a surface and the background).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from engine.contract import params
from engine.jobs.common import JobError, cover_resolution

FITS = params.param("fit").choices
KINDS = ("color", "normal", "normal-encoded", "depth", "nearest")
DEPTH_BACKGROUND = 1e10        # written where resized depth has no coverage (Cycles' value)
_BG_THRESHOLD = 1e9            # depth at or beyond this (or not finite, or ≤ 0) is background

__all__ = ["FITS", "KINDS", "Framing", "check_settings", "parse_output_size", "plan_framing", "processing_size", "resize",
           "to_processing", "from_processing", "source_to_output"]


@dataclass(frozen=True)
class Framing:
    """The plan for one clip. Boxes are ``(x0, y0, x1, y1)``, end-exclusive."""
    fit: str
    source: tuple          # (W, H) of the input
    processing: tuple      # (W, H) the model runs at
    output: tuple          # (W, H) written
    scaled: tuple          # (W, H) the crop box is scaled to inside the processing frame
    content: tuple         # box in processing pixels holding the picture (pad: inside the padding)
    crop: tuple            # box in source pixels that is used (crop: the centre region; else all of it)

    @property
    def identity(self) -> bool:
        return self.source == self.processing == self.output

    @property
    def padding(self) -> tuple:
        """(left, top, right, bottom) pixels of padding in the processing frame."""
        x0, y0, x1, y1 = self.content
        return x0, y0, self.processing[0] - x1, self.processing[1] - y1

    def record(self) -> dict:
        """JSON-able description for the manifest provenance and the job summary."""
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        d["padding"] = list(self.padding)
        return d

    def warnings(self) -> list[str]:
        if self.fit != "crop" or self.crop == (0, 0, *self.source):
            return []
        x0, y0, x1, y1 = self.crop
        w, h = self.source
        lost = []
        if y0 or y1 != h:
            lost.append(f"rows 0..{y0 - 1} and {y1}..{h - 1}")
        if x0 or x1 != w:
            lost.append(f"columns 0..{x0 - 1} and {x1}..{w - 1}")
        return [f"fit=crop: the {w}x{h} input was cropped to its centre {x1 - x0}x{y1 - y0} "
                f"(box {x0},{y0}-{x1},{y1}; {' and '.join(lost)} lost); use fit=pad to keep the whole picture"]


def parse_output_size(value) -> object:
    """``"source"`` | ``"processing"`` | ``(W, H)``; anything else is a :class:`JobError`."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        w, h = (int(v) for v in value)
    else:
        text = str(value if value not in (None, "") else "source").strip().lower()
        if text in ("source", "processing"):
            return text
        try:
            w, h = (int(v) for v in text.replace("×", "x").split("x"))
        except ValueError:
            raise JobError(f"output_size {value!r}: expected 'source', 'processing' or WIDTHxHEIGHT, "
                           "e.g. 1920x1080") from None
    if w <= 0 or h <= 0:
        raise JobError(f"output_size {w}x{h}: both sides must be positive")
    return w, h


def check_settings(settings) -> None:
    """Refuse a bad ``fit`` / ``output_size`` before any model is loaded."""
    if settings.fit not in FITS:
        raise JobError(f"fit {settings.fit!r}: choose one of {', '.join(FITS)}")
    parse_output_size(settings.output_size)


def processing_size(source: tuple, resolution=None) -> tuple[int, int]:
    """The model's size: ``resolution`` when given, else the cover-512 rule (MODEL_SPEC §7.3)."""
    return tuple(resolution) if resolution else cover_resolution(*source)


def _box(w: int, h: int, bw: int, bh: int) -> tuple:
    x0, y0 = (bw - w) // 2, (bh - h) // 2
    return x0, y0, x0 + w, y0 + h


def plan_framing(source, processing, fit: str = "pad", output_size="source") -> Framing:
    """Plan how a ``source`` (W, H) input runs at ``processing`` (W, H) and comes back (see the module)."""
    if fit not in FITS:
        raise JobError(f"fit {fit!r}: choose one of {', '.join(FITS)}")
    sw, sh = (int(v) for v in source)
    pw, ph = (int(v) for v in processing)
    out = parse_output_size(output_size)
    crop = (0, 0, sw, sh)
    if fit == "pad":
        s = min(pw / sw, ph / sh)
        w, h = min(pw, max(1, round(sw * s))), min(ph, max(1, round(sh * s)))
        content, scaled = _box(w, h, pw, ph), (w, h)
    elif fit == "crop":
        s = max(pw / sw, ph / sh)
        cw, ch = min(sw, max(1, round(pw / s))), min(sh, max(1, round(ph / s)))
        crop, content, scaled = _box(cw, ch, sw, sh), (0, 0, pw, ph), (pw, ph)
    else:
        content, scaled = (0, 0, pw, ph), (pw, ph)
    region = (crop[2] - crop[0], crop[3] - crop[1])       # the part of the source that is kept
    if out == "source":
        output = region if fit == "crop" else (sw, sh)
    elif out == "processing":
        output = scaled
    else:
        output = out
        if fit != "stretch":
            want = region[0] / region[1]
            fix_h = max(1, round(output[0] / want))
            if output[1] != fix_h and output[0] != round(output[1] * want):
                raise JobError(f"output_size {output[0]}x{output[1]}: its aspect differs from the picture's "
                               f"({region[0]}x{region[1]}); use {output[0]}x{fix_h}, 'source', or fit=stretch "
                               "to change the aspect deliberately")
    return Framing(fit, (sw, sh), (pw, ph), tuple(output), tuple(scaled), tuple(content), tuple(crop))


# ----------------------------------------------------------------------------- resampling
def _interp(frames: np.ndarray, size: tuple, mode: str) -> np.ndarray:
    w, h = size
    t = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32)).permute(0, 3, 1, 2)
    if mode == "nearest":
        out = torch.nn.functional.interpolate(t, size=(h, w), mode="nearest-exact")
    else:
        shrink = h < frames.shape[1] or w < frames.shape[2]
        out = torch.nn.functional.interpolate(t, size=(h, w), mode="bilinear", align_corners=False,
                                              antialias=shrink)
    return out.permute(0, 2, 3, 1).contiguous().numpy()


def _renormalise(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.where(norm > 1e-6, v / np.maximum(norm, 1e-12), 0.0).astype(np.float32)


def resize(frames: np.ndarray, size: tuple, kind: str = "color") -> np.ndarray:
    """(n, H, W, C) float → (n, size[1], size[0], C), resampled as ``kind`` says (module docstring)."""
    frames = np.asarray(frames, dtype=np.float32)
    if frames.shape[1:3] == (size[1], size[0]):
        return frames
    if kind == "color":
        return _interp(frames, size, "bilinear")
    if kind == "nearest":
        return _interp(frames, size, "nearest")
    if kind == "normal":
        return _renormalise(_interp(frames, size, "bilinear"))
    if kind == "normal-encoded":
        n = _renormalise(_interp(frames * 2.0 - 1.0, size, "bilinear"))
        return np.where(np.linalg.norm(n, axis=-1, keepdims=True) > 0, n * 0.5 + 0.5, 0.5).astype(np.float32)
    if kind == "depth":
        covered = (np.isfinite(frames) & (frames > 0) & (frames < _BG_THRESHOLD)).astype(np.float32)
        mask = covered.min(axis=-1, keepdims=True)
        vals = _interp(np.where(mask > 0, frames, 0.0) * mask, size, "bilinear")
        weight = _interp(mask, size, "bilinear")
        return np.where(weight >= 0.5, vals / np.maximum(weight, 1e-6), DEPTH_BACKGROUND).astype(np.float32)
    raise ValueError(f"resize: unknown kind {kind!r} (one of {', '.join(KINDS)})")


def _crop(frames: np.ndarray, box: tuple) -> np.ndarray:
    x0, y0, x1, y1 = box
    return frames[:, y0:y1, x0:x1]


def to_processing(frames: np.ndarray, framing: Framing, kind: str = "color") -> np.ndarray:
    """Source-size frames → processing-size model input (scaled, padded by edge replication, or cropped)."""
    frames = _crop(np.asarray(frames, dtype=np.float32), framing.crop)
    frames = resize(frames, framing.scaled, kind)
    left, top, right, bottom = framing.padding
    if left or top or right or bottom:
        frames = np.pad(frames, ((0, 0), (top, bottom), (left, right), (0, 0)), mode="edge")
    return frames


def from_processing(frames: np.ndarray, framing: Framing, kind: str = "color") -> np.ndarray:
    """Processing-size model output → output-size frames (padding cropped off, then resized)."""
    return resize(_crop(np.asarray(frames, dtype=np.float32), framing.content), framing.output, kind)


def source_to_output(frames: np.ndarray, framing: Framing, kind: str = "color") -> np.ndarray:
    """Source-size frames (the plate itself) → output size: cropped to the used region and, only when the
    output size differs from it, resized; at the default output size the plate's pixels are kept as read."""
    return resize(_crop(np.asarray(frames, dtype=np.float32), framing.crop), framing.output, kind)
