"""Allocator tuning for CPU inference (Linux/glibc).

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and
returns it on free, so each large activation costs page faults to map and zero it again — on a
2-core machine a tiny-model UNet step at 128² spent a quarter of its time there. Raising the mmap
and trim thresholds to 1 GiB keeps those pages in the heap for reuse (RSS stays up to ~1 GiB above
the live tensors). Measured in docs/PERFORMANCE.md. ``DR_MALLOC_TUNING=0`` turns it off."""
from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
_done = False


def tune_malloc() -> bool:
    """Apply once per process; returns whether the settings took effect."""
    global _done
    if _done or not sys.platform.startswith("linux") or os.environ.get("DR_MALLOC_TUNING", "1") == "0":
        return _done
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = all(libc.mallopt(opt, val) == 1 for opt, val in ((M_MMAP_THRESHOLD, 1 << 30),
                                                                (M_TRIM_THRESHOLD, 1 << 30), (M_TOP_PAD, 64 << 20)))
    except (OSError, AttributeError):
        return False
    _done = ok
    return ok
