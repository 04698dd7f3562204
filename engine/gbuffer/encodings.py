"""THE conversions between the G-buffer set's physical conventions and the models' encodings.

Files hold physical values (linear Rec.709 colour, camera-space unit normals, planar depth, linear
scalars); the DiffusionRenderer models read and write 3-channel images in [0, 1] as if they were 8-bit
files (MODEL_SPEC §4.8, §5). Every function takes numpy arrays or torch tensors (the result has the
input's kind; numpy results are float32), is vectorised and works on any leading shape (…, C).

| physical (file)              | model encoding (…, 3) in [0, 1]                                    |
|------------------------------|--------------------------------------------------------------------|
| colour, linear Rec.709       | exact piecewise sRGB OETF (decode: sRGB EOTF)                      |
| normal, camera space, unit   | n·0.5 + 0.5 (decode: ×2 − 1, renormalised; zero length → (0,0,1))  |
| depth, planar                | (d − near)/(far − near) clipped, grey; near = black, far/background = white; the range is PER CLIP |
| roughness / metallic         | value replicated to grey RGB (decode: mean of the 3 channels)     |
"""
from __future__ import annotations

import numpy as np

from engine.contract.gbuffer_set import Manifest

# sRGB (IEC 61966-2-1), exact piecewise curve
_A, _PHI, _GAMMA = 0.055, 12.92, 2.4
_LIN_CUT, _ENC_CUT = 0.0031308, 0.04045
# Depth at or beyond this is background (Cycles writes 1e10 there).
BACKGROUND_DEPTH = 1e9
# Per-clip depth range rule (documented in docs/GBUFFER_SET.md).
NEAR_PERCENTILE, FAR_PERCENTILE = 0.0, 98.0
DEPTH_RANGE_RULE = "clip-min-p98"
_MAX_SAMPLES_PER_FRAME = 1 << 18


# ------------------------------------------------------------------------------------ array helpers
def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def _f(x):
    if _is_torch(x):
        return x if x.is_floating_point() else x.float()
    return np.asarray(x, dtype=np.float32)


def _where(c, a, b):
    if _is_torch(c):
        import torch
        return torch.where(c, a, b)
    return np.where(c, a, b)


def _out(x):
    return x if _is_torch(x) else np.asarray(x, dtype=np.float32)


def _f64(x):
    """Colour curves run in float64 for numpy input (exact to float32 rounding), in the tensor's dtype."""
    return _f(x) if _is_torch(x) else np.asarray(x, dtype=np.float64)


def _grey3(x):
    """(…) → (…, 3) grey."""
    if _is_torch(x):
        return x.unsqueeze(-1).expand(*x.shape, 3).contiguous()
    return np.repeat(x[..., None], 3, axis=-1)


def _squeeze1(x):
    """(…, 1) → (…); other shapes unchanged."""
    return x[..., 0] if x.shape[-1:] == (1,) and x.ndim >= 3 else x


# ------------------------------------------------------------------------------------ colour
def linear_to_srgb(x, *, clip: bool = True):
    """Linear → sRGB-encoded (OETF). 0.5 → 0.7354, 0.0031308 → 0.04045. With clip, input is clamped
    to [0, 1] first (model input); without, values above 1 extend the curve and negatives mirror it."""
    x = _f64(x)
    if clip:
        x = x.clip(0.0, 1.0)
    a = abs(x)
    y = _where(a <= _LIN_CUT, a * _PHI, (1 + _A) * a.clip(_LIN_CUT, None) ** (1 / _GAMMA) - _A)
    return _out(y if clip else _where(x < 0, -y, y))


def srgb_to_linear(v, *, clip: bool = True):
    """sRGB-encoded → linear (EOTF), the exact inverse of `linear_to_srgb`."""
    v = _f64(v)
    if clip:
        v = v.clip(0.0, 1.0)
    a = abs(v)
    y = _where(a <= _ENC_CUT, a / _PHI, ((a.clip(_ENC_CUT, None) + _A) / (1 + _A)) ** _GAMMA)
    return _out(y if clip else _where(v < 0, -y, y))


# ------------------------------------------------------------------------------------ normals
def _norm(n):
    if _is_torch(n):
        return n.pow(2).sum(-1, keepdim=True).sqrt()
    return np.sqrt((n * n).sum(-1, keepdims=True))


def encode_normal(n):
    """Camera-space normals (…, 3) (+X right, +Y up, +Z toward the viewer) → n·0.5 + 0.5 in [0, 1].
    Non-unit vectors (anti-aliased edges) are renormalised; zero vectors (background) stay 0 → grey 0.5."""
    n = _f(n)
    length = _norm(n)
    n = _where(length > 1e-8, n / length.clip(1e-8, None), n * 0)
    return _out((n * 0.5 + 0.5).clip(0.0, 1.0))


def decode_normal(v):
    """Model normals (…, 3) in [0, 1] → unit camera-space vectors; zero length → (0, 0, 1)."""
    n = _f(v) * 2.0 - 1.0
    length = _norm(n)
    up = n * 0
    up[..., 2] = 1.0
    return _out(_where(length > 1e-6, n / length.clip(1e-6, None), up))


# ------------------------------------------------------------------------------------ scalars
def encode_scalar(x):
    """Roughness / metallic / alpha (…) or (…, 1), linear → grey RGB (…, 3) in [0, 1]."""
    return _grey3(_squeeze1(_f(x)).clip(0.0, 1.0))


def decode_scalar(v):
    """Model grey RGB (…, 3) → (…, 1): the mean of the three channels (they differ slightly)."""
    v = _f(v)
    return v.mean(-1, keepdim=True) if _is_torch(v) else v.mean(-1, keepdims=True)


# ------------------------------------------------------------------------------------ depth
def depth_background_mask(depth, *, alpha=None, clip_end=None):
    """True where a planar-depth pixel is background: not finite, ≤ 0, ≥ 1e9 (Cycles' 1e10), at the
    camera's clip_end (EEVEE; scalar or one value per frame), or alpha < 0.5 where a coverage is given.
    Shapes: depth (F, H, W) or (F, H, W, 1); numpy."""
    d = _squeeze1(np.asarray(_to_numpy(depth), dtype=np.float64))
    bg = ~np.isfinite(d) | (d <= 0) | (d >= BACKGROUND_DEPTH)
    if clip_end is not None:
        ce = np.asarray(clip_end, dtype=np.float64)
        ce = ce.reshape(ce.shape + (1,) * (d.ndim - ce.ndim)) if ce.ndim else ce
        bg |= d >= ce * (1 - 1e-6)
    if alpha is not None:
        bg |= _squeeze1(np.asarray(_to_numpy(alpha))) < 0.5
    return bg


class DepthRangeAccumulator:
    """Streams frames of one clip and returns its normalisation range: near = the minimum, far = the
    98th percentile of every frame's covered, finite pixels (one range for the whole clip — never per
    frame). Large frames are subsampled deterministically (every k-th pixel) for the percentile only."""

    def __init__(self, near_percentile: float = NEAR_PERCENTILE, far_percentile: float = FAR_PERCENTILE):
        self.near_percentile, self.far_percentile = near_percentile, far_percentile
        self._samples: list[np.ndarray] = []
        self._min = np.inf

    def add(self, depth, *, alpha=None, clip_end=None) -> None:
        d = _squeeze1(np.asarray(_to_numpy(depth), dtype=np.float64))
        valid = d[~depth_background_mask(d, alpha=alpha, clip_end=clip_end)]
        if valid.size == 0:
            return
        self._min = min(self._min, float(valid.min()))
        step = max(1, -(-valid.size // _MAX_SAMPLES_PER_FRAME))
        self._samples.append(valid[::step])

    def range(self) -> tuple[float, float] | None:
        """(near, far), or None when no pixel of the clip was covered."""
        if not self._samples:
            return None
        s = np.concatenate(self._samples)
        near = self._min if self.near_percentile <= 0 else float(np.percentile(s, self.near_percentile))
        far = float(np.percentile(s, self.far_percentile))
        if not far > near:  # flat clip: give the range some width so encode/decode stay defined
            far = near + max(abs(near) * 1e-3, 1e-6)
        return near, far


def compute_depth_range(depth, *, alpha=None, clip_end=None) -> tuple[float, float] | None:
    """Per-clip range of planar depth (F, H, W[, 1]); `clip_end` scalar or per frame (F,)."""
    acc = DepthRangeAccumulator()
    d = _to_numpy(depth)
    a = None if alpha is None else _to_numpy(alpha)
    for i in range(d.shape[0]):
        ce = None if clip_end is None else (np.asarray(clip_end)[i] if np.ndim(clip_end) else clip_end)
        acc.add(d[i], alpha=None if a is None else a[i], clip_end=ce)
    return acc.range()


def normalise_depth(depth, near: float, far: float, *, background=None):
    """Planar depth → [0, 1]: near → 0 (black), far → 1 (white), clipped; `background` (bool mask,
    e.g. from `depth_background_mask`) and non-finite pixels → 1. Same shape as the input."""
    d = _f(depth)
    if _is_torch(d):
        import torch
        d = torch.nan_to_num(d, nan=np.inf)
    else:
        d = np.nan_to_num(d, nan=np.inf)
    x = ((d - near) / (far - near)).clip(0.0, 1.0)
    if background is not None:
        bg = background
        if _is_torch(x) and not _is_torch(bg):
            import torch
            bg = torch.as_tensor(np.asarray(bg), device=x.device)
        elif not _is_torch(x):
            bg = _to_numpy(bg)
        x = _where(bg, x * 0 + 1.0, x)
    return _out(x)


def denormalise_depth(x, near: float, far: float):
    """Inverse of `normalise_depth` inside the range: near + x·(far − near)."""
    return _f(x) * (far - near) + near


def decode_depth(v, depth_range: tuple[float, float] | None = None):
    """Model depth (…, 3) → (…, 1): the mean of the channels (normalised), or metric planar depth when
    a range (near, far) is known."""
    x = decode_scalar(v)
    return x if depth_range is None else denormalise_depth(x, *depth_range)


def _to_numpy(x):
    if _is_torch(x):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


# ------------------------------------------------------------------------------------ whole sets
def _manifest(m) -> Manifest:
    return m if isinstance(m, Manifest) else Manifest(m)


def resolve_depth_range(depth, manifest, *, alpha=None) -> tuple[float, float] | None:
    """The range used to normalise a metric depth clip: manifest depth.near/far when recorded, else
    computed from the frames (per clip). None for normalised depth."""
    m = _manifest(manifest)
    if (m.depth or {}).get("kind") != "metric":
        return None
    if m.depth_range is not None:
        return m.depth_range
    clip_end = [c["clip_end"] for c in m.camera] if m.camera else None
    return compute_depth_range(depth, alpha=alpha, clip_end=clip_end)


def encode_pass(encoding: str, frames, *, depth_range=None, background=None, invert: bool = False):
    """One pass (F, H, W, C) physical → (F, H, W, 3) in [0, 1] by its manifest encoding."""
    if encoding == "linear-rec709":
        return linear_to_srgb(frames)
    if encoding == "camera-normal":
        return encode_normal(frames)
    if encoding == "non-color":
        return encode_scalar(frames)
    if encoding == "depth-planar-metric":
        if depth_range is None:
            raise ValueError("metric depth needs a (near, far) range to be normalised")
        return _grey3(normalise_depth(_squeeze1(_f(frames)), *depth_range, background=background))
    if encoding == "depth-normalised":
        x = _squeeze1(_f(frames)).clip(0.0, 1.0)
        x = 1.0 - x if invert else x
        if background is not None:
            x = normalise_depth(x, 0.0, 1.0, background=background)
        return _grey3(x)
    raise ValueError(f"no model encoding for {encoding!r}")


def to_model_inputs(gbuffer_set_frames: dict, manifest, *, depth_range=None) -> dict:
    """{pass: (F, H, W, C) physical (as `GBufferSet.read_all`)} + the set's manifest →
    {pass: (F, H, W, 3) float in [0, 1]} in the models' encodings. The alpha pass (coverage) is not
    returned; it marks depth background (→ 1). Depth range: `depth_range`, else manifest, else per clip."""
    m = _manifest(manifest)
    alpha = gbuffer_set_frames.get(m.alpha) if m.alpha else None
    clip_end = [c["clip_end"] for c in m.camera] if m.camera else None
    out = {}
    for name, frames in gbuffer_set_frames.items():
        if name not in m.passes:
            raise ValueError(f"pass {name!r} is not in the manifest (passes: {', '.join(m.pass_names)})")
        if name == m.alpha:
            continue
        enc = m.passes[name]["encoding"]
        kw = {}
        if enc == "depth-planar-metric":
            kw["background"] = depth_background_mask(frames, alpha=alpha, clip_end=clip_end)
            # nothing covered → no range; every pixel is background (1) whatever the range
            kw["depth_range"] = depth_range or resolve_depth_range(frames, m, alpha=alpha) or (0.0, 1.0)
        elif enc == "depth-normalised":
            kw["invert"] = bool((m.depth or {}).get("invert", False))
            kw["background"] = None if alpha is None else _squeeze1(_to_numpy(alpha)) < 0.5
        out[name] = encode_pass(enc, frames, **kw)
    return out


MODEL_OUTPUT_ENCODINGS = {"basecolor": "linear-rec709", "diffuse_albedo": "linear-rec709",
                          "rgb": "linear-rec709", "relit": "linear-rec709", "normal": "camera-normal",
                          "roughness": "non-color", "metallic": "non-color", "depth": "depth"}


def from_model_outputs(outputs: dict, *, depth_range: tuple[float, float] | None = None) -> dict:
    """{pass: (F, H, W, 3) in [0, 1]} from a model → {pass: physical arrays}: colour (F,H,W,3) linear,
    normal (F,H,W,3) unit, roughness/metallic (F,H,W,1), depth (F,H,W,1) normalised — or metric when
    `depth_range` is given. The matching manifest depth block is `depth_manifest(depth_range)`."""
    out = {}
    for name, v in outputs.items():
        enc = MODEL_OUTPUT_ENCODINGS.get(name)
        if enc == "linear-rec709":
            out[name] = srgb_to_linear(v)
        elif enc == "camera-normal":
            out[name] = decode_normal(v)
        elif enc == "non-color":
            out[name] = decode_scalar(v).clip(0.0, 1.0)
        elif enc == "depth":
            out[name] = decode_depth(v, depth_range)
        else:
            raise ValueError(f"unknown model output pass {name!r}")
    return out


def depth_manifest(depth_range: tuple[float, float] | None = None) -> dict:
    """The manifest `depth` block for depth decoded by `from_model_outputs`."""
    if depth_range is None:
        return {"kind": "normalised", "near": 0.0, "far": 1.0, "invert": False}
    return {"kind": "metric", "near": float(depth_range[0]), "far": float(depth_range[1]),
            "invert": False, "range_rule": DEPTH_RANGE_RULE}


__all__ = [
    "BACKGROUND_DEPTH", "DEPTH_RANGE_RULE", "DepthRangeAccumulator", "compute_depth_range",
    "decode_depth", "decode_normal", "decode_scalar", "denormalise_depth", "depth_background_mask",
    "depth_manifest", "encode_normal", "encode_pass", "encode_scalar", "from_model_outputs",
    "linear_to_srgb", "normalise_depth", "resolve_depth_range", "srgb_to_linear", "to_model_inputs",
]
