"""OpenEXR reading and writing on the ``OpenEXR`` (>= 3.3) Python package.

* :func:`read_exr` returns every channel of every part as float32 ``(H, W)`` arrays keyed by the full
  dotted channel name (``"ViewLayer.Depth.Z"``, ``"R"``). In a multi-part file a channel whose name
  does not already start with its part's name gets the part name as prefix (``part "beauty"``,
  channel ``R`` → ``"beauty.R"``). half/uint channels are converted to float32; sub-sampled channels
  are repeated up to full resolution; a data window smaller than the display window is placed into
  the display window (zeros outside).
* :func:`read_exr_header` reads the header only.
* :func:`write_exr` / :func:`write_exr_rgb` write a single-part scanline file atomically (a temporary
  file in the same folder, then ``os.replace``), so the final name never holds a half-written file.

Unreadable files raise :class:`ExrError` (a ``ValueError``) naming the file; a missing file raises
``FileNotFoundError``.
"""
from __future__ import annotations

from pathlib import Path
from struct import error as struct_error
from typing import Mapping

import numpy as np

from engine.atomic import atomic_write

__all__ = ["ExrError", "read_exr", "read_exr_header", "write_exr", "write_exr_rgb", "HALF_MAX", "COMPRESSIONS"]

HALF_MAX = 65504.0
COMPRESSIONS = ("none", "rle", "zips", "zip", "piz", "pxr24", "b44", "b44a", "dwaa", "dwab")
# header keys that describe the file layout rather than user metadata
_STRUCTURAL = {"channels", "chunkCount", "compression", "dataWindow", "displayWindow", "lineOrder", "name",
               "pixelAspectRatio", "screenWindowCenter", "screenWindowWidth", "type", "version", "tiles"}


class ExrError(ValueError):
    """An EXR file that cannot be read or written; the message names the file."""


def _openexr():
    try:
        import OpenEXR
    except ImportError as exc:  # pragma: no cover - declared dependency
        raise ExrError("reading/writing .exr needs the 'OpenEXR' package (pip install OpenEXR)") from exc
    return OpenEXR


def _open(path: Path, header_only: bool):
    OpenEXR = _openexr()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such EXR file")
    if path.is_dir():
        raise ExrError(f"{path}: is a folder, not an EXR file")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ExrError(f"{path}: cannot open ({exc})") from None
    if magic != b"\x76\x2f\x31\x01":
        raise ExrError(f"{path}: not an OpenEXR file (bad magic number)")
    try:
        return OpenEXR.File(str(path), separate_channels=True, header_only=header_only)
    except Exception as exc:  # OpenEXR raises RuntimeError/IOError/... for truncated or corrupt data
        raise ExrError(f"{path}: corrupt or unreadable OpenEXR file ({exc})") from None


def _window(value) -> tuple[int, int, int, int]:
    (x0, y0), (x1, y1) = value
    return int(x0), int(y0), int(x1), int(y1)


def _part_name(part) -> str:
    try:
        return part.name() or ""
    except Exception:  # pragma: no cover - older bindings
        return str(part.header.get("name", "") or "")


def _full_names(part_name: str, multipart: bool, names) -> dict[str, str]:
    """channel name in the part → the name :func:`read_exr` returns."""
    out = {}
    for n in names:
        if multipart and part_name and not n.startswith(part_name + "."):
            out[n] = f"{part_name}.{n}"
        else:
            out[n] = n
    return out


_PIXEL_TYPES = {0: "uint", 1: "half", 2: "float"}


def _raw_channel_types(path: Path) -> list[dict[str, str]]:
    """Per part, ``{channel name: "uint"|"half"|"float"}`` parsed from the raw header bytes (the
    bindings only know a channel's type once its pixels are read)."""
    import struct

    with open(path, "rb") as fh:
        data = fh.read(1 << 20)  # headers are small; 1 MiB is plenty
    pos, flags = 8, struct.unpack_from("<I", data, 4)[0]
    multipart = bool(flags & 0x1000)
    parts: list[dict[str, str]] = []

    def cstr(p):
        end = data.index(b"\0", p)
        return data[p:end].decode("latin-1"), end + 1

    while pos < len(data):
        if data[pos] == 0:  # end of the header list (multi-part)
            break
        chans: dict[str, str] = {}
        while data[pos] != 0:
            name, pos = cstr(pos)
            typ, pos = cstr(pos)
            size = struct.unpack_from("<i", data, pos)[0]
            pos += 4
            if name == "channels" and typ == "chlist":
                p, end = pos, pos + size
                while p < end and data[p] != 0:
                    cname, p = cstr(p)
                    ptype = struct.unpack_from("<i", data, p)[0]
                    p += 16
                    chans[cname] = _PIXEL_TYPES.get(ptype, "?")
            pos += size
        pos += 1
        parts.append(chans)
        if not multipart:
            break
    return parts


def _simple(v):
    """Header attribute → plain Python (enum names, tuples of numbers, strings)."""
    if hasattr(v, "name") and not isinstance(v, (str, bytes)) and hasattr(v, "value"):
        return v.name
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (tuple, list)):
        return [_simple(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def read_exr_header(path) -> dict:
    """Header of an EXR file without its pixels.

    Returns ``{"path", "multipart", "width", "height", "parts": [{"name", "channels": {full name:
    "half"|"float"|"uint"}, "compression", "data_window", "display_window", "attributes"}],
    "channels": {full name: type over all parts}}``; ``width``/``height`` are those of the first
    part's display window; ``attributes`` holds the non-structural header attributes (plain Python).
    """
    path = Path(path)
    with _open(path, header_only=True) as f:
        parts = list(f.parts)
        multipart = len(parts) > 1
        info_parts, all_channels = [], {}
        try:
            raw_types = _raw_channel_types(path)
        except (ValueError, IndexError, struct_error):
            raw_types = []
        for i, part in enumerate(parts):
            h = part.header
            pname = _part_name(part)
            types = raw_types[i] if i < len(raw_types) else {}
            chans = {ch.name: types.get(ch.name, "?") for ch in h.get("channels", [])}
            names = _full_names(pname, multipart, chans)
            chans = {names[k]: v for k, v in chans.items()}
            all_channels.update(chans)
            comp = h.get("compression")
            info_parts.append({
                "name": pname,
                "channels": chans,
                "compression": (getattr(comp, "name", str(comp)) or "").replace("_COMPRESSION", "").lower(),
                "data_window": _window(h["dataWindow"]),
                "display_window": _window(h["displayWindow"]),
                "attributes": {k: _simple(v) for k, v in h.items() if k not in _STRUCTURAL},
            })
    x0, y0, x1, y1 = info_parts[0]["display_window"]
    return {"path": str(path), "multipart": multipart, "width": x1 - x0 + 1, "height": y1 - y0 + 1,
            "parts": info_parts, "channels": all_channels}


def _to_display(arr: np.ndarray, data_win, disp_win, path, name) -> np.ndarray:
    dx0, dy0, dx1, dy1 = data_win
    sx0, sy0, sx1, sy1 = disp_win
    h, w = dy1 - dy0 + 1, dx1 - dx0 + 1
    if arr.shape != (h, w):  # sub-sampled channel: repeat up to the data window
        ry, rx = h // max(arr.shape[0], 1), w // max(arr.shape[1], 1)
        if ry < 1 or rx < 1 or arr.shape[0] * ry != h or arr.shape[1] * rx != w:
            raise ExrError(f"{path}: channel {name!r} has shape {arr.shape}, expected {(h, w)}")
        arr = np.repeat(np.repeat(arr, ry, axis=0), rx, axis=1)
    if data_win == disp_win:
        return arr
    out = np.zeros((sy1 - sy0 + 1, sx1 - sx0 + 1), np.float32)
    # intersection of the data window with the display window
    ix0, iy0, ix1, iy1 = max(dx0, sx0), max(dy0, sy0), min(dx1, sx1), min(dy1, sy1)
    if ix0 <= ix1 and iy0 <= iy1:
        out[iy0 - sy0:iy1 - sy0 + 1, ix0 - sx0:ix1 - sx0 + 1] = arr[iy0 - dy0:iy1 - dy0 + 1, ix0 - dx0:ix1 - dx0 + 1]
    return out


def read_exr(path) -> dict[str, np.ndarray]:
    """All channels of all parts → ``{full dotted name: float32 (H, W)}`` (see the module docstring)."""
    path = Path(path)
    f = _open(path, header_only=False)
    out: dict[str, np.ndarray] = {}
    try:
        with f:
            parts = list(f.parts)
            multipart = len(parts) > 1
            disp_win = _window(parts[0].header["displayWindow"])
            for part in parts:
                data_win = _window(part.header["dataWindow"])
                names = _full_names(_part_name(part), multipart, part.channels)
                for name, ch in part.channels.items():
                    full = names[name]
                    if full in out:
                        raise ExrError(f"{path}: channel {full!r} appears in more than one part")
                    arr = np.asarray(ch.pixels)
                    if arr.ndim != 2:
                        raise ExrError(f"{path}: channel {full!r} is not a 2-D image (shape {arr.shape})")
                    arr = np.ascontiguousarray(arr, dtype=np.float32)
                    out[full] = _to_display(arr, data_win, disp_win, path, full)
    except ExrError:
        raise
    except Exception as exc:
        raise ExrError(f"{path}: corrupt or unreadable OpenEXR file ({exc})") from None
    if not out:
        raise ExrError(f"{path}: OpenEXR file has no channels")
    return out


def _compression(OpenEXR, name: str):
    key = str(name).lower().replace("_compression", "")
    if key == "none":
        key = "no"
    attr = f"{key.upper()}_COMPRESSION"
    if str(name).lower() not in COMPRESSIONS or not hasattr(OpenEXR, attr):
        raise ValueError(f"unknown EXR compression {name!r}; use one of {', '.join(COMPRESSIONS)}")
    return getattr(OpenEXR, attr)


def write_exr(path, channels: Mapping[str, np.ndarray], *, dtype: str = "half", compression: str = "zip",
              attributes: Mapping | None = None) -> Path:
    """Write ``{channel name: (H, W) array}`` as a single-part scanline EXR, atomically.

    ``dtype``: ``"half"`` (values beyond ±65504 are clipped to the half range instead of becoming
    infinite; NaN and ±Inf stay as they are) or ``"float"``. ``compression``: one of
    :data:`COMPRESSIONS`. ``attributes``: extra header attributes (str, int, float, ...).
    Names with dots (``"basecolor.R"``) make a multilayer file Blender shows as layers.
    """
    OpenEXR = _openexr()
    path = Path(path)
    if dtype not in ("half", "float"):
        raise ValueError(f"{path}: dtype must be 'half' or 'float', not {dtype!r}")
    if not channels:
        raise ValueError(f"{path}: no channels to write")
    np_dtype = np.float16 if dtype == "half" else np.float32
    shape = None
    data = {}
    for name, arr in channels.items():
        a = np.asarray(arr)
        if a.ndim == 3 and a.shape[-1] == 1:
            a = a[..., 0]
        if a.ndim != 2 or 0 in a.shape:
            raise ValueError(f"{path}: channel {name!r} must be a non-empty (H, W) array, got shape {a.shape}")
        if shape is None:
            shape = a.shape
        elif a.shape != shape:
            raise ValueError(f"{path}: channel {name!r} has shape {a.shape}, others {shape}")
        a = a.astype(np.float32, copy=False)
        if dtype == "half":
            a = np.where(np.isfinite(a), np.clip(a, -HALF_MAX, HALF_MAX), a)
        data[str(name)] = np.ascontiguousarray(a.astype(np_dtype))
    header = {"compression": _compression(OpenEXR, compression), "type": OpenEXR.scanlineimage}
    for k, v in (attributes or {}).items():
        if k in _STRUCTURAL:
            raise ValueError(f"{path}: attribute {k!r} is reserved for the file layout")
        header[str(k)] = v

    def _write(tmp):
        try:
            with OpenEXR.File(header, data) as f:
                f.write(tmp)
        except Exception as exc:
            raise ExrError(f"{path}: cannot write EXR ({exc})") from None

    return atomic_write(path, _write)


def write_exr_rgb(path, image: np.ndarray, *, dtype: str = "half", compression: str = "zip",
                  attributes: Mapping | None = None, layer: str | None = None, single: str = "Y") -> Path:
    """Write an ``(H, W, 3|4)`` image as ``R, G, B(, A)`` or an ``(H, W)``/``(H, W, 1)`` one as a single
    ``single`` channel (``"Y"`` luminance or ``"V"`` value, as Blender writes FLOAT sockets).
    ``layer="basecolor"`` prefixes the names (``basecolor.R``) so Blender reads the file as multilayer."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{path}: image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {img.shape}")
    if single not in ("Y", "V"):
        raise ValueError(f"{path}: single-channel name must be 'Y' or 'V', not {single!r}")
    names = {1: (single,), 3: ("R", "G", "B"), 4: ("R", "G", "B", "A")}[img.shape[-1]]
    prefix = f"{layer}." if layer else ""
    return write_exr(path, {prefix + n: img[..., i] for i, n in enumerate(names)}, dtype=dtype,
                     compression=compression, attributes=attributes)
