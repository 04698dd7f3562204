"""A small cache of padded cube maps, so a running engine projects an HDRI it has already seen (the
add-on's relight previews, several clips under one light) without rebuilding its 6 × 512² cube.

Keyed by the *content* of the lat-long input (BLAKE2 of its bytes: ≈ 10–30 ms for a 1k–2k map, against
≈ 50–400 ms for the cube) and every setting that shapes the cube, so an edited map is never served
stale. Only CPU-resident inputs are hashed; the cube itself lives on the compute device. Exact: a hit
returns the very tensor a rebuild would compute."""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np
import torch

MAX_ENTRIES = 4
_cache: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()
_lock = threading.Lock()


def content_key(hdr) -> str | None:
    """BLAKE2b of a CPU array/tensor's bytes (with its shape and dtype), or None when not hashable."""
    if isinstance(hdr, torch.Tensor):
        if hdr.device.type != "cpu":
            return None
        hdr = hdr.detach().contiguous().numpy()
    if not isinstance(hdr, np.ndarray):
        return None
    arr = np.ascontiguousarray(hdr)
    h = hashlib.blake2b(f"{arr.shape}{arr.dtype}".encode(), digest_size=20)
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def get_or_build(key: tuple | None, build):
    """The cached value for ``key`` or ``build()`` (stored); ``key=None`` always builds."""
    if key is None:
        return build()
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    value = build()
    with _lock:
        _cache[key] = value
        while len(_cache) > MAX_ENTRIES:
            _cache.popitem(last=False)
    return value


def clear() -> None:
    with _lock:
        _cache.clear()
