"""Disk space of a job's outputs: predicted before any work, and a full disk while writing reported with the
path and the space the job needs.

* ``set_bytes`` / ``cache_bytes`` predict what a set (EXRs, previews) and its resume cache take: EXR frames
  are counted uncompressed (the sets' ZIP codec barely shrinks noisy half floats, so this is the honest upper
  bound), the cache as float32 per segment (overlaps counted in each segment holding them).
* ``check_disk_space(folder, needed)`` refuses a job whose prediction exceeds the free space there.
* ``disk_full_reported(folder, needed)`` turns a full disk while writing (``ENOSPC``/``EDQUOT``) into one line
  naming the file, the space needed and free; writes are atomic, so nothing half-written is left under a final
  name, and the resume cache lets a rerun pick up after space was freed.
"""
from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from engine.errors import UserError, format_size

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
HINT = "free disk space or choose an output folder on another disk (--out)"
EXR_HEADER_BYTES = 4096          # header + line-offset table of a small scanline EXR (generous)
MARGIN_BYTES = 16 << 20          # manifest, temporaries, file-system slack
_DTYPE_BYTES = {"half": 2, "float": 4, "uint": 4}


class DiskSpaceError(UserError):
    """Not enough free disk space for a job's outputs (predicted, or the disk filled up while writing)."""
    hint = HINT


def free_bytes(path) -> int:
    """Free bytes on the disk holding ``path`` (its nearest existing folder)."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def exr_frame_bytes(width: int, height: int, channels: int, dtype: str = "half") -> int:
    return int(width) * int(height) * int(channels) * _DTYPE_BYTES.get(dtype, 4) + EXR_HEADER_BYTES


def set_bytes(width: int, height: int, frames: int, passes: dict, *, previews: bool = False, videos: int = 1) -> int:
    """Bytes of a set of ``frames`` frames: ``passes`` = {name: (channels, dtype)}; with previews, an 8-bit PNG
    per pass and frame (counted raw) and ``videos`` mp4s (counted at a tenth of their raw frames)."""
    total = sum(exr_frame_bytes(width, height, c, d) for c, d in passes.values()) * int(frames)
    if previews:
        raw = int(width) * int(height) * 3 * int(frames)
        total += raw * len(passes) + (raw * max(1, len(passes)) // 10) * int(videos)
    return total


def pass_sizes(names) -> dict:
    """{name: (channels, dtype)} of set passes, from the contract's pass table (unknown: 3 float channels)."""
    from engine.contract.gbuffer_set import PASS_SPECS

    out = {}
    for n in names:
        spec = PASS_SPECS.get(n)
        out[n] = (len(spec.channels), spec.dtype) if spec is not None else (3, "float")
    return out


def cache_bytes(width: int, height: int, segments, channels: int) -> int:
    """Bytes of a job's resume cache: float32 ``channels`` per pixel for every frame of every segment."""
    return sum(e - s for s, e in segments) * int(width) * int(height) * int(channels) * 4


def check_disk_space(folder, needed: int, what: str = "this job") -> None:
    """Refuse before any work when ``folder``'s disk has less than ``needed`` bytes (plus a margin) free."""
    free = free_bytes(folder)
    if free < needed + MARGIN_BYTES:
        raise DiskSpaceError(f"{folder}: not enough disk space for {what}: it needs about "
                             f"{format_size(needed + MARGIN_BYTES)}, {format_size(free)} free")


def raise_if_disk_full(path, needed: int, cause: BaseException) -> None:
    """For writers that report a full disk in their own words (safetensors): raise the ``OSError(ENOSPC)`` it
    was when the disk holding ``path`` has less than ``needed`` bytes free; return otherwise."""
    if free_bytes(path) < needed:
        err = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        err.needed_bytes = int(needed)
        raise err from cause


@contextmanager
def disk_full_reported(folder, needed: int):
    """A full disk inside the block → DiskSpaceError naming the file, the job's need and the free space."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        where = exc.filename or folder
        raise DiskSpaceError(f"{where}: no space left on the disk (this job's outputs in {folder} need about "
                             f"{format_size(needed)}, {format_size(free_bytes(folder))} free now)",
                             hint=f"{HINT}, then run it again: finished segments are resumed") from None


__all__ = ["DiskSpaceError", "cache_bytes", "check_disk_space", "disk_full_reported", "exr_frame_bytes",
           "free_bytes", "pass_sizes", "raise_if_disk_full", "set_bytes"]
