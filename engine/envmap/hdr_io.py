"""Radiance RGBE (.hdr) reader/writer and OpenEXR loading for environment maps.

* :func:`read_hdr` decodes RGBE exactly like OpenCV (``mantissa * 2^(exponent - 136)``, 0 when the
  exponent byte is 0; no +0.5 offset), returns float32 (H, W, 3) **RGB**, row 0 = top.  It accepts
  new-style RLE scanlines, flat scanlines and old-style ``(1, 1, 1, n)`` run markers, any of the
  eight orientation strings (``-Y H +X W`` is the standard one), and ignores ``EXPOSURE`` /
  ``GAMMA`` / ``PRIMARIES`` / comment lines (values are returned unchanged, as OpenCV does).
  ``FORMAT=32-bit_rle_xyze`` is rejected.
* :func:`write_hdr` writes ``-Y H +X W`` RLE scanlines (flat when W < 8 or W > 32767) atomically.
* :func:`read_exr` loads the R, G, B channels (any layer prefix, half or float; Y is replicated).
* :func:`load_envmap` dispatches on the suffix and raises :class:`EnvmapLoadError` (a ValueError)
  naming the file for anything unreadable. NaN/Inf texels (an EXR can hold them) are replaced — NaN and
  -Inf by 0, +Inf by the map's largest finite value — and said so in a warning (appended to
  ``warnings=`` and logged).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from engine.atomic import atomic_write_bytes

__all__ = ["EnvmapLoadError", "float_to_rgbe", "load_envmap", "read_exr", "read_hdr", "rgbe_to_float", "write_hdr"]

log = logging.getLogger(__name__)
_MAX_RGBE = 255.0 * 2.0**119  # largest encodable value (mantissa 255, exponent byte 255)
_RES_RE = re.compile(rb"^([+-])([XY])\s+(\d+)\s+([+-])([XY])\s+(\d+)\s*$")


class EnvmapLoadError(ValueError):
    """An environment map could not be read (message names the file)."""


# --------------------------------------------------------------------------- RGBE <-> float
def rgbe_to_float(rgbe: np.ndarray) -> np.ndarray:
    """(..., 4) uint8 RGBE -> (..., 3) float32, bit-identical to OpenCV's decoder."""
    rgbe = np.asarray(rgbe, dtype=np.uint8)
    e = rgbe[..., 3].astype(np.int32)
    scale = np.where(e > 0, np.ldexp(1.0, e - 136), 0.0)  # float64, exact
    return (rgbe[..., :3].astype(np.float64) * scale[..., None]).astype(np.float32)


def float_to_rgbe(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) float -> (..., 4) uint8 RGBE (Ward's truncating encoder).

    NaN and negative values become 0, values above the RGBE range (and +inf) are clamped.
    """
    x = np.nan_to_num(np.asarray(rgb, dtype=np.float64), nan=0.0, posinf=_MAX_RGBE, neginf=0.0)
    x = np.clip(x, 0.0, _MAX_RGBE)
    v = x.max(axis=-1)
    mant, exp = np.frexp(v)
    ok = v >= 1e-32
    scale = np.where(ok, mant * 256.0 / np.where(ok, v, 1.0), 0.0)
    out = np.zeros(x.shape[:-1] + (4,), dtype=np.uint8)
    out[..., :3] = np.clip(np.floor(x * scale[..., None]), 0, 255).astype(np.uint8)
    out[..., 3] = np.where(ok, exp + 128, 0).astype(np.uint8)
    return out


# --------------------------------------------------------------------------- reading
def _parse_header(data: bytes, name: str):
    pos = 0
    lines = []
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            raise EnvmapLoadError(f"{name}: truncated Radiance header (no resolution line)")
        line = data[pos:nl].rstrip(b"\r")
        pos = nl + 1
        if not lines:
            if not line.startswith(b"#?"):
                raise EnvmapLoadError(f"{name}: not a Radiance .hdr file (missing '#?' signature)")
            lines.append(line)
            continue
        if line.strip() == b"":
            break
        lines.append(line)
        if len(lines) > 10000:
            raise EnvmapLoadError(f"{name}: Radiance header too long")
    info = {"exposure": 1.0, "format": None}
    for line in lines[1:]:
        s = line.strip()
        up = s.upper()
        if up.startswith(b"FORMAT="):
            fmt = s.split(b"=", 1)[1].strip().decode("latin-1")
            info["format"] = fmt
            if fmt.lower() != "32-bit_rle_rgbe":
                raise EnvmapLoadError(f"{name}: unsupported Radiance FORMAT={fmt!r} (only 32-bit_rle_rgbe)")
        elif up.startswith(b"EXPOSURE="):
            try:
                info["exposure"] *= float(s.split(b"=", 1)[1])
            except ValueError:
                pass  # tolerated: the exposure is informational only
    nl = data.find(b"\n", pos)
    res_line = (data[pos:] if nl < 0 else data[pos:nl]).strip()
    m = _RES_RE.match(res_line)
    if m is None or m.group(2) == m.group(5):
        raise EnvmapLoadError(f"{name}: bad Radiance resolution line {res_line[:64]!r}")
    info["orient"] = (m.group(1).decode() + m.group(2).decode(), m.group(4).decode() + m.group(5).decode())
    info["n_scan"] = int(m.group(3))
    info["scan_len"] = int(m.group(6))
    start = len(data) if nl < 0 else nl + 1
    if info["n_scan"] < 1 or info["scan_len"] < 1 or info["n_scan"] * info["scan_len"] > 1 << 30:
        raise EnvmapLoadError(f"{name}: unsupported image size in {res_line[:64]!r}")
    if len(data) - start < 4 * info["n_scan"]:  # every scanline needs at least 4 bytes
        raise EnvmapLoadError(f"{name}: truncated pixel data")
    return info, start


def _decode_scanlines(data: bytes, pos: int, n_scan: int, scan_len: int, name: str) -> np.ndarray:
    out = np.empty((n_scan, scan_len, 4), dtype=np.uint8)
    buf = memoryview(data)
    end = len(data)
    rle_ok = 8 <= scan_len <= 0x7FFF
    prev = None  # previous pixel bytes (for old-style runs)
    for row in range(n_scan):
        if pos + 4 > end:
            raise EnvmapLoadError(f"{name}: truncated pixel data at scanline {row}")
        b0, b1, b2, b3 = data[pos], data[pos + 1], data[pos + 2], data[pos + 3]
        if rle_ok and b0 == 2 and b1 == 2 and not (b2 & 0x80):
            if ((b2 << 8) | b3) != scan_len:
                raise EnvmapLoadError(f"{name}: RLE scanline length mismatch at scanline {row}")
            pos += 4
            line = out[row]
            for ch in range(4):
                chan = bytearray()
                while len(chan) < scan_len:
                    if pos >= end:
                        raise EnvmapLoadError(f"{name}: truncated RLE data at scanline {row}")
                    cnt = data[pos]
                    pos += 1
                    if cnt > 128:
                        if pos >= end:
                            raise EnvmapLoadError(f"{name}: truncated RLE data at scanline {row}")
                        chan += bytes((data[pos],)) * (cnt - 128)
                        pos += 1
                    else:
                        if cnt == 0 or pos + cnt > end:
                            raise EnvmapLoadError(f"{name}: corrupt RLE data at scanline {row}")
                        chan += buf[pos : pos + cnt]
                        pos += cnt
                if len(chan) != scan_len:
                    raise EnvmapLoadError(f"{name}: RLE run overflows scanline {row}")
                line[:, ch] = np.frombuffer(bytes(chan), dtype=np.uint8)
            prev = line[-1].copy()
            continue
        # flat scanline (possibly with old-style (1,1,1,n) run markers)
        nbytes = scan_len * 4
        if pos + nbytes <= end:
            px = np.frombuffer(data, dtype=np.uint8, count=nbytes, offset=pos).reshape(scan_len, 4)
            if not np.any((px[:, 0] == 1) & (px[:, 1] == 1) & (px[:, 2] == 1)):
                out[row] = px
                pos += nbytes
                prev = px[-1].copy()
                continue
        col, shift = 0, 0
        while col < scan_len:
            if pos + 4 > end:
                raise EnvmapLoadError(f"{name}: truncated pixel data at scanline {row}")
            p = data[pos : pos + 4]
            pos += 4
            if p[0] == 1 and p[1] == 1 and p[2] == 1:
                if prev is None:
                    raise EnvmapLoadError(f"{name}: run marker before any pixel at scanline {row}")
                n = p[3] << shift
                if col + n > scan_len:
                    raise EnvmapLoadError(f"{name}: old-style run overflows scanline {row}")
                out[row, col : col + n] = prev
                col += n
                shift += 8
            else:
                prev = np.frombuffer(p, dtype=np.uint8).copy()
                out[row, col] = prev
                col += 1
                shift = 0
    return out


def read_hdr(path) -> np.ndarray:
    """Read a Radiance RGBE file -> float32 (H, W, 3) linear RGB, row 0 = top, values unscaled."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise EnvmapLoadError(f"{path}: cannot read file ({e.strerror or e})") from e
    info, pos = _parse_header(data, str(path))
    scan = _decode_scanlines(data, pos, info["n_scan"], info["scan_len"], str(path))
    major, minor = info["orient"]
    # arrange as (rows, cols) with the Y axis first
    img = scan if major[1] == "Y" else scan.transpose(1, 0, 2)
    y_sign = major[0] if major[1] == "Y" else minor[0]
    x_sign = minor[0] if major[1] == "Y" else major[0]
    if y_sign == "+":  # +Y: scanlines stored bottom to top
        img = img[::-1]
    if x_sign == "-":  # -X: pixels stored right to left
        img = img[:, ::-1]
    return np.ascontiguousarray(rgbe_to_float(img))


# --------------------------------------------------------------------------- writing
def _rle_channel(ch: np.ndarray) -> bytes:
    """Radiance new-style RLE of one channel of one scanline (runs of >= 4 equal bytes)."""
    n = ch.shape[0]
    raw = ch.tobytes()
    change = np.flatnonzero(ch[1:] != ch[:-1]) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [n]))
    long_runs = np.flatnonzero(ends - starts >= 4)
    out = bytearray()
    lit = 0
    for i in long_runs.tolist():
        s, e = int(starts[i]), int(ends[i])
        while lit < s:  # literal stretch before the run, in chunks of <= 128
            k = min(128, s - lit)
            out.append(k)
            out += raw[lit : lit + k]
            lit += k
        ln = e - s
        while ln > 0:
            k = min(127, ln)
            out.append(128 + k)
            out.append(raw[s])
            ln -= k
        lit = e
    while lit < n:
        k = min(128, n - lit)
        out.append(k)
        out += raw[lit : lit + k]
        lit += k
    return bytes(out)


def write_hdr(path, array, *, rle: bool = True) -> None:
    """Write (H, W, 3) linear RGB (numpy or torch; (H, W, 4) drops alpha, (H, W) is grey) to a
    Radiance ``.hdr`` file, atomically (temporary file in the same folder, then ``os.replace``)."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    a = np.asarray(array, dtype=np.float64)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"write_hdr expects (H, W, 3) data, got shape {a.shape}")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    a = a[..., :3]
    h, w = a.shape[:2]
    rgbe = float_to_rgbe(a)
    parts = [b"#?RADIANCE\n# written by engine.envmap.hdr_io\nFORMAT=32-bit_rle_rgbe\n\n", f"-Y {h} +X {w}\n".encode()]
    if rle and 8 <= w <= 0x7FFF:
        hdr4 = bytes((2, 2, w >> 8, w & 0xFF))
        for row in range(h):
            parts.append(hdr4)
            for ch in range(4):
                parts.append(_rle_channel(np.ascontiguousarray(rgbe[row, :, ch])))
    else:
        parts.append(rgbe.tobytes())
    atomic_write_bytes(Path(path), b"".join(parts))


# --------------------------------------------------------------------------- EXR and dispatch
def read_exr(path) -> np.ndarray:
    """Read the RGB channels of an OpenEXR file (any part; plain RGB preferred) -> float32 (H, W, 3)."""
    path = Path(path)
    if not path.is_file():
        raise EnvmapLoadError(f"{path}: file not found")
    from engine.io.exr import read_exr as read_exr_channels

    try:
        chans = read_exr_channels(path)  # every part of single- or multi-part files
    except Exception as e:  # noqa: BLE001
        raise EnvmapLoadError(f"{path}: cannot read OpenEXR file ({e})") from e
    # group channels by layer prefix ("" for plain R/G/B, "ViewLayer.Combined" for "ViewLayer.Combined.R")
    layers: dict[str, dict[str, np.ndarray]] = {}
    for k, v in chans.items():
        prefix, _, last = k.rpartition(".")
        layers.setdefault(prefix, {})[last.upper()] = v
    order = sorted(layers, key=lambda p: (p != "", len(p), p))
    for prefix in order:
        ch = layers[prefix]
        if all(c in ch for c in "RGB"):
            rgb = np.stack([ch["R"], ch["G"], ch["B"]], axis=-1)
            break
    else:
        for prefix in order:
            if "Y" in layers[prefix]:
                rgb = np.repeat(layers[prefix]["Y"][..., None], 3, axis=-1)
                break
        else:
            raise EnvmapLoadError(f"{path}: OpenEXR file has no R, G, B (or Y) channels: {sorted(chans)}")
    if not np.issubdtype(rgb.dtype, np.floating):
        raise EnvmapLoadError(f"{path}: OpenEXR colour channels are not half/float ({rgb.dtype})")
    return np.ascontiguousarray(rgb.astype(np.float32))


def replace_nonfinite(img: np.ndarray, name) -> tuple[np.ndarray, str | None]:
    """NaN and -Inf → 0, +Inf → the largest finite value (0 if none); the warning saying so, or None."""
    bad = ~np.isfinite(img)
    if not bad.any():
        return img, None
    finite = img[~bad]
    top = float(finite.max()) if finite.size else 0.0
    out = np.where(np.isposinf(img), max(top, 0.0), np.where(bad, 0.0, img)).astype(np.float32)
    texels = int(bad.any(axis=-1).sum()) if img.ndim == 3 else int(bad.sum())
    return out, (f"{name}: {texels} NaN/Inf texel{'s' if texels != 1 else ''} in the environment map replaced "
                 f"(NaN/-Inf by 0, +Inf by the map's brightest finite value {top:g}); fix the HDRI to light as intended")


def load_envmap(path, *, warnings: list | None = None) -> np.ndarray:
    """Load an HDR environment map (.hdr/.pic/.rgbe Radiance or .exr) -> float32 (H, W, 3); NaN/Inf texels
    are replaced with a warning (appended to ``warnings`` when given, and logged)."""
    path = Path(path)
    suf = path.suffix.lower()
    if suf in (".hdr", ".pic", ".rgbe"):
        img = read_hdr(path)
    elif suf == ".exr":
        img = read_exr(path)
    else:
        raise EnvmapLoadError(f"{path}: unsupported environment-map type {suf or '(no suffix)'!r}; use .hdr or .exr")
    if img.ndim != 3 or img.shape[-1] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise EnvmapLoadError(f"{path}: decoded image has unexpected shape {img.shape}")
    img, warning = replace_nonfinite(img, path.name)
    if warning:
        log.warning("%s", warning)
        if warnings is not None:
            warnings.append(warning)
    return img
