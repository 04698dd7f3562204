"""OpenEXR reading and writing in pure standard-library Python (struct, zlib, array).

Why not Blender's own image writers: ``Image.save`` / ``save_render`` name the channels after the
colour mode (``R,G,B,A`` or ``Y``), cannot write ``X,Y,Z`` or a single ``V`` channel, and apply the
scene's colour management in some paths; the File Output node writes ``V`` for float sockets but the
camera-space normal conversion and the per-file half/float choice would have to be rebuilt as
compositor graphs that differ between 4.x and 5.x. Writing the files here gives exactly the channel
names, pixel types and compression of docs/GBUFFER_SET.md on every Blender version, with no numpy or
OpenEXR dependency in Blender's Python. The engine reads them back with the OpenEXR library
(tests/blender/test_export_gbuffer.py checks that).

* :func:`read_exr` — scanline files, single- or multi-part, compression NONE, RLE, ZIPS or ZIP, half /
  float / uint channels → ``(width, height, {full channel name: array('f')})``, rows top first. In a
  multi-part file a channel gets its part name as prefix unless it already has it (Blender 5.x writes
  one part per pass). Used on the multilayer EXRs Blender renders (written with codec NONE: fast).
* :func:`write_exr` — one single-part scanline file, ZIP (16 lines per block) or NONE, each channel
  half or float, written under a temporary name and renamed (atomic).
"""
from __future__ import annotations

import os
import struct
import sys
import zlib
from array import array
from itertools import accumulate
from pathlib import Path

__all__ = ["ExrError", "read_exr", "read_exr_header", "write_exr", "HALF_MAX"]

MAGIC = b"\x76\x2f\x31\x01"
HALF_MAX = 65504.0
_COMPRESSION = {"NONE": 0, "RLE": 1, "ZIPS": 2, "ZIP": 3, "PIZ": 4, "PXR24": 5, "B44": 6, "B44A": 7,
                "DWAA": 8, "DWAB": 9}
_COMPRESSION_NAME = {v: k for k, v in _COMPRESSION.items()}
_LINES = {0: 1, 1: 1, 2: 1, 3: 16, 4: 32, 5: 16, 6: 32, 7: 32, 8: 32, 9: 256}
_PT_SIZE = {0: 4, 1: 2, 2: 4}  # uint, half, float
_PT_NAME = {0: "uint", 1: "half", 2: "float"}
_LITTLE = sys.byteorder == "little"


class ExrError(ValueError):
    """An EXR file that cannot be read (or a write request that cannot be honoured); names the file."""


# ---------------------------------------------------------------------------------------------- header
def _cstr(data: bytes, pos: int, path) -> tuple[str, int]:
    end = data.find(b"\0", pos)
    if end < 0:
        raise ExrError(f"{path}: truncated EXR header")
    return data[pos:end].decode("latin-1"), end + 1


def _parse_headers(data: bytes, path):
    if data[:4] != MAGIC:
        raise ExrError(f"{path}: not an OpenEXR file (bad magic number)")
    flags = struct.unpack_from("<I", data, 4)[0]
    if flags & 0x200:
        raise ExrError(f"{path}: tiled EXR files are not supported here")
    if flags & 0x800:  # "non-image" (deep) data; 0x400 is long names, which are fine
        raise ExrError(f"{path}: deep EXR files are not supported")
    multipart = bool(flags & 0x1000)
    pos, parts = 8, []
    while True:
        if pos >= len(data):
            raise ExrError(f"{path}: truncated EXR header")
        if multipart and data[pos] == 0:
            pos += 1
            break
        attrs = {}
        while data[pos] != 0:
            name, pos = _cstr(data, pos, path)
            typ, pos = _cstr(data, pos, path)
            size = struct.unpack_from("<i", data, pos)[0]
            pos += 4
            raw = data[pos:pos + size]
            pos += size
            if typ == "chlist":
                chans, p = [], 0
                while p < len(raw) and raw[p] != 0:
                    cname, p = _cstr(raw, p, path)
                    ptype, _plin, xs, ys = struct.unpack_from("<iB3xii", raw, p)
                    p += 16
                    chans.append((cname, ptype, xs, ys))
                attrs[name] = chans
            elif typ == "box2i":
                attrs[name] = struct.unpack("<4i", raw)
            elif typ == "compression":
                attrs[name] = raw[0]
            elif typ == "string":
                attrs[name] = raw.decode("latin-1")
            elif typ == "int":
                attrs[name] = struct.unpack("<i", raw)[0]
            elif typ == "lineOrder":
                attrs[name] = raw[0]
        pos += 1
        if attrs.get("type", "scanlineimage") not in ("scanlineimage",):
            raise ExrError(f"{path}: EXR part type {attrs.get('type')!r} is not supported (scanline only)")
        for key in ("channels", "compression", "dataWindow", "displayWindow"):
            if key not in attrs:
                raise ExrError(f"{path}: EXR header lacks {key!r}")
        parts.append(attrs)
        if not multipart:
            break
    return multipart, parts, pos


def read_exr_header(path) -> dict:
    """``{"multipart", "width", "height", "parts": [{"name", "compression", "channels": {name: type}}]}``."""
    path = Path(path)
    with open(path, "rb") as fh:
        data = fh.read(1 << 20)
    multipart, parts, _ = _parse_headers(data, path)
    out = []
    for p in parts:
        out.append({"name": p.get("name", ""), "compression": _COMPRESSION_NAME.get(p["compression"], "?"),
                    "channels": {c[0]: _PT_NAME.get(c[1], "?") for c in p["channels"]}})
    x0, y0, x1, y1 = parts[0]["displayWindow"]
    return {"multipart": multipart, "width": x1 - x0 + 1, "height": y1 - y0 + 1, "parts": out}


# ---------------------------------------------------------------------------------------------- codecs
def _unpredict(data: bytes) -> bytes:
    """Undo OpenEXR's ZIP predictor: t[i] = t[i-1] + d[i] - 128 (mod 256), then de-interleave."""
    if not data:
        return data
    t = bytes(map((255).__and__, accumulate(data)))  # t[i] = Σ d[k] mod 256 (the −128·i term below)
    n = len(t)
    mask = int.from_bytes(b"\x00\x80" * (n // 2) + (b"\x00" if n % 2 else b""), "big")
    t = (int.from_bytes(t, "big") ^ mask).to_bytes(n, "big")  # −128·i mod 256 = 128 for odd i
    out = bytearray(n)
    half = (n + 1) // 2
    out[0::2] = t[:half]
    out[1::2] = t[half:]
    return bytes(out)


def _predict(raw: bytes) -> bytes:
    """OpenEXR's ZIP predictor: interleave (even bytes, then odd), then d[i] = t[i] − t[i−1] + 128
    (mod 256), per byte, computed with SIMD-within-an-integer on Python big integers."""
    n = len(raw)
    if n < 2:
        return raw
    t = raw[0::2] + raw[1::2]
    a = int.from_bytes(t[1:], "big")
    b = int.from_bytes(t[:-1], "big")
    h = int.from_bytes(b"\x80" * (n - 1), "big")
    diff = ((a | h) - (b & ~h)) ^ ((a ^ ~b) & h)  # bytewise (a − b) mod 256, no borrow across bytes
    diff = (diff ^ h) & ((1 << (8 * (n - 1))) - 1)  # + 128 mod 256 flips the top bit of each byte
    return t[:1] + diff.to_bytes(n - 1, "big")


def _unrle(data: bytes, expected: int, path) -> bytes:
    out = bytearray()
    i = 0
    while i < len(data):
        count = data[i] if data[i] < 128 else data[i] - 256
        i += 1
        if count < 0:
            out += data[i:i - count]
            i -= count
        else:
            out += bytes([data[i]]) * (count + 1)
            i += 1
    if len(out) != expected:
        raise ExrError(f"{path}: corrupt RLE block")
    return _unpredict(bytes(out))  # RLE shares ZIP's predictor and interleaving


# ---------------------------------------------------------------------------------------------- reader
def _to_floats(raw: bytes, ptype: int) -> array:
    if ptype == 1:
        return array("f", struct.unpack(f"<{len(raw) // 2}e", raw))
    if ptype == 2:
        a = array("f")
        a.frombytes(raw)
        if not _LITTLE:
            a.byteswap()
        return a
    u = array("I")
    u.frombytes(raw)
    if not _LITTLE:
        u.byteswap()
    return array("f", u)


def read_exr(path, *, only: set[str] | None = None):
    """Every channel of every part of a scanline EXR → ``(width, height, {name: array('f')})`` (rows top
    first, the display window; pixels outside the data window are 0). ``only``: a set of full channel
    names to decode (others are skipped)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such EXR file") from None
    multipart, parts, pos = _parse_headers(data, path)
    dx0, dy0, dx1, dy1 = parts[0]["displayWindow"]
    width, height = dx1 - dx0 + 1, dy1 - dy0 + 1
    # offset tables
    tables = []
    for p in parts:
        x0, y0, x1, y1 = p["dataWindow"]
        lines = _LINES.get(p["compression"], 1)
        count = p.get("chunkCount") or -(-(y1 - y0 + 1) // lines)
        tables.append(struct.unpack_from(f"<{count}Q", data, pos))
        pos += 8 * count
    out: dict[str, array] = {}
    for pi, p in enumerate(parts):
        comp = p["compression"]
        if comp not in (0, 1, 2, 3):
            raise ExrError(f"{path}: EXR compression {_COMPRESSION_NAME.get(comp, comp)} is not supported here "
                           "(NONE, RLE, ZIPS, ZIP)")
        pname = p.get("name", "")
        chans = p["channels"]
        if any(c[2] != 1 or c[3] != 1 for c in chans):
            raise ExrError(f"{path}: sub-sampled EXR channels are not supported here")
        x0, y0, x1, y1 = p["dataWindow"]
        dw = x1 - x0 + 1
        names = []
        for c in chans:
            full = c[0]
            if multipart and pname and not full.startswith(pname + "."):
                full = f"{pname}.{full}"
            names.append(full)
        wanted = [only is None or n in only for n in names]
        if not any(wanted):
            continue
        rows = {n: [None] * (y1 - y0 + 1) for n, w in zip(names, wanted) if w}
        line_bytes = [dw * _PT_SIZE[c[1]] for c in chans]
        per_line = sum(line_bytes)
        for off in tables[pi]:
            q = off
            if multipart:
                q += 4
            y, size = struct.unpack_from("<ii", data, q)
            q += 8
            block = data[q:q + size]
            nlines = min(_LINES[comp], y1 - y + 1)
            expected = per_line * nlines
            if size < expected:
                if comp in (2, 3):
                    try:
                        block = _unpredict(zlib.decompress(block))
                    except zlib.error as exc:
                        raise ExrError(f"{path}: corrupt ZIP block at line {y} ({exc})") from None
                elif comp == 1:
                    block = _unrle(block, expected, path)
            if len(block) != expected:
                raise ExrError(f"{path}: corrupt block at line {y}: {len(block)} bytes, expected {expected}")
            b = 0
            for li in range(nlines):
                for ci in range(len(chans)):
                    n = line_bytes[ci]
                    if wanted[ci]:
                        rows[names[ci]][y - y0 + li] = block[b:b + n]
                    b += n
        for ci, c in enumerate(chans):
            if not wanted[ci]:
                continue
            name = names[ci]
            r = rows[name]
            if any(v is None for v in r):
                raise ExrError(f"{path}: channel {name!r} is missing scanlines (truncated file?)")
            vals = _to_floats(b"".join(r), c[1])
            if (x0, y0, x1, y1) != (dx0, dy0, dx1, dy1):
                vals = _to_display(vals, (x0, y0, x1, y1), (dx0, dy0, dx1, dy1))
            out[name] = vals
    return width, height, out


def _to_display(vals: array, dwin, swin) -> array:
    x0, y0, x1, y1 = dwin
    sx0, sy0, sx1, sy1 = swin
    w, sw, sh = x1 - x0 + 1, sx1 - sx0 + 1, sy1 - sy0 + 1
    out = array("f", bytes(4 * sw * sh))
    for y in range(max(y0, sy0), min(y1, sy1) + 1):
        xa, xb = max(x0, sx0), min(x1, sx1)
        if xa > xb:
            continue
        out[(y - sy0) * sw + xa - sx0:(y - sy0) * sw + xb - sx0 + 1] = vals[(y - y0) * w + xa - x0:(y - y0) * w + xb - x0 + 1]
    return out


# ---------------------------------------------------------------------------------------------- writer
def _pack(values, dtype: str, name: str, path) -> bytes:
    if dtype == "half":
        try:
            return struct.pack(f"<{len(values)}e", *values)
        except (OverflowError, struct.error):
            clamped = [HALF_MAX if v > HALF_MAX else (-HALF_MAX if v < -HALF_MAX else v) for v in values]
            return struct.pack(f"<{len(values)}e", *clamped)
    if dtype == "float":
        a = values if isinstance(values, array) and values.typecode == "f" else array("f", values)
        if not _LITTLE:
            a = array("f", a)
            a.byteswap()
        return a.tobytes()
    raise ExrError(f"{path}: channel {name!r}: dtype must be 'half' or 'float', got {dtype!r}")


def _attr(name: str, typ: str, payload: bytes) -> bytes:
    return name.encode() + b"\0" + typ.encode() + b"\0" + struct.pack("<i", len(payload)) + payload


def write_exr(path, width: int, height: int, channels: dict, *, dtype="half", compression: str = "ZIP",
              level: int = 1) -> Path:
    """Write a single-part scanline EXR atomically. ``channels``: ``{name: sequence of width·height
    floats, rows top first}``; ``dtype`` 'half'/'float' for all channels or ``{name: dtype}``. Values
    beyond the half range are clamped for half channels (callers replace NaN/Inf first)."""
    path = Path(path)
    if not channels:
        raise ExrError(f"{path}: no channels to write")
    comp = _COMPRESSION.get(compression.upper())
    if comp not in (0, 3):
        raise ExrError(f"{path}: compression must be ZIP or NONE, got {compression!r}")
    names = sorted(channels)  # the channel list (and each line's data) is in name order
    dtypes = {n: (dtype.get(n, "half") if isinstance(dtype, dict) else dtype) for n in names}
    npx = width * height
    packed = {}
    for n in names:
        vals = channels[n]
        if len(vals) != npx:
            raise ExrError(f"{path}: channel {n!r} has {len(vals)} values, expected {width}×{height} = {npx}")
        packed[n] = _pack(vals, dtypes[n], n, path)
    chlist = b"".join(n.encode() + b"\0" + struct.pack("<iB3xii", 1 if dtypes[n] == "half" else 2, 0, 1, 1)
                      for n in names) + b"\0"
    box = struct.pack("<4i", 0, 0, width - 1, height - 1)
    header = (MAGIC + struct.pack("<I", 2)
              + _attr("channels", "chlist", chlist)
              + _attr("compression", "compression", bytes([comp]))
              + _attr("dataWindow", "box2i", box)
              + _attr("displayWindow", "box2i", box)
              + _attr("lineOrder", "lineOrder", b"\0")
              + _attr("pixelAspectRatio", "float", struct.pack("<f", 1.0))
              + _attr("screenWindowCenter", "v2f", struct.pack("<2f", 0.0, 0.0))
              + _attr("screenWindowWidth", "float", struct.pack("<f", 1.0))
              + b"\0")
    lines = _LINES[comp]
    nblocks = -(-height // lines)
    row_bytes = {n: width * (2 if dtypes[n] == "half" else 4) for n in names}
    chunks = []
    for bi in range(nblocks):
        y = bi * lines
        ylast = min(height, y + lines)
        raw = b"".join(packed[n][yy * row_bytes[n]:(yy + 1) * row_bytes[n]] for yy in range(y, ylast) for n in names)
        if comp == 3:
            z = zlib.compress(_predict(raw), level)
            body = z if len(z) < len(raw) else raw
        else:
            body = raw
        chunks.append(struct.pack("<ii", y, len(body)) + body)
    offsets, pos = [], len(header) + 8 * nblocks
    for c in chunks:
        offsets.append(pos)
        pos += len(c)
    blob = header + struct.pack(f"<{nblocks}Q", *offsets) + b"".join(chunks)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(blob)
        # renaming over an existing file makes ext4 flush the new data first (auto_da_alloc, ~3 ms);
        # remove the old file first: the final name is then briefly absent, but never partial
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path
