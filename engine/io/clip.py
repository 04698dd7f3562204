"""The lazy :class:`Clip` interface shared by image sequences and videos, and the frame-selection rule.

``frame_range=(first, last)`` (inclusive, in source frame numbers) and ``fps=`` (resampling by frame
selection) mean the same for both kinds of clip: see :func:`select_frames`.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = ["FRAME_SUFFIXES", "VIDEO_SUFFIXES", "DEFAULT_FPS", "Clip", "select_frames"]

from engine.contract.footage import DEFAULT_FPS, FRAME_SUFFIXES, VIDEO_SUFFIXES


# --------------------------------------------------------------------------- selection
def select_frames(count: int, *, source_fps: float, fps: float | None = None,
                  frame_range: tuple[int, int] | None = None, first_number: int = 0,
                  what: str = "clip") -> list[int]:
    """Positions (0-based, into the source's ``count`` frames) that a clip keeps.

    ``frame_range=(first, last)`` is inclusive and given in source frame numbers, which run from
    ``first_number`` (a sequence's first parsed number; 0 for videos). ``fps`` resamples by frame
    selection: output frame ``k`` (time ``k / fps``) takes the source frame nearest in time,
    ``first + floor(k * source_fps / fps + 0.5)``, for as long as that stays within the range —
    frames are dropped when ``fps < source_fps`` and repeated when it is higher.
    """
    last_number = first_number + count - 1
    if count <= 0:
        raise ValueError(f"{what}: has no frames")
    a, b = (first_number, last_number) if frame_range is None else (int(frame_range[0]), int(frame_range[1]))
    if a > b or a < first_number or b > last_number:
        raise ValueError(f"{what}: frame range ({a}, {b}) is outside the clip, which has {count} frames "
                         f"({first_number}..{last_number})")
    lo, hi = a - first_number, b - first_number
    if fps is None or math.isclose(fps, source_fps):
        return list(range(lo, hi + 1))
    if not (fps > 0 and source_fps > 0):
        raise ValueError(f"{what}: fps must be positive (got {fps}, source {source_fps})")
    step = source_fps / fps
    out, k = [], 0
    while True:
        pos = lo + int(math.floor(k * step + 0.5))
        if pos > hi:
            return out
        out.append(pos)
        k += 1


# --------------------------------------------------------------------------- clips
class Clip:
    """A lazily read clip: ``len(clip)`` frames of ``size`` = (W, H) at ``fps``.

    ``frame_numbers[i]`` is the source frame number of clip frame ``i`` (parsed from the file name for
    sequences, 0-based decode order for videos). ``read(i)`` → float32 (H, W, 3); ``read_range(a, b)``
    → (b−a, H, W, 3) for ``a <= i < b``; iterating yields frames one by one; ``chunks(n)`` yields
    ``(start, array)`` blocks. ``is_linear`` is True for EXR input (values not clipped).
    ``nonfinite_count`` totals the NaN/Inf values replaced in the frames read so far (each also
    warns). ``missing_frames``: frame numbers the source lists but that could not be read (a damaged
    video opened with ``allow_missing_frames``; left out of ``frame_numbers``), with ``warnings`` saying
    so. Use as a context manager (or call ``close()``) to release a video decoder."""

    frame_numbers: list[int]
    fps: float
    size: tuple[int, int]
    is_linear: bool = False
    fps_origin: str = "default"   # video (its own rate) | given (fps/source_fps) | default (24, nothing said)
    source: str = ""
    path: Path

    def __init__(self):
        self.nonfinite_count = 0
        self.nonfinite_frames: dict[int, int] = {}
        self.missing_frames: list[int] = []
        self.warnings: list[str] = []

    def __len__(self) -> int:
        return len(self.frame_numbers)

    def _index(self, i: int) -> int:
        n = len(self)
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise IndexError(f"{self.path}: frame index {i} out of range (clip has {n} frames)")
        return j

    def _read(self, j: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _count(self, j: int, n: int) -> None:
        if n:
            self.nonfinite_count += n
            self.nonfinite_frames[self.frame_numbers[j]] = n

    def read(self, i: int) -> np.ndarray:
        return self._read(self._index(i))

    def read_range(self, a: int, b: int) -> np.ndarray:
        n = len(self)
        if not (0 <= a < b <= n):
            raise IndexError(f"{self.path}: frame range [{a}, {b}) is not within the clip's {n} frames")
        return np.stack([self._read(j) for j in range(a, b)])

    def __iter__(self):
        for j in range(len(self)):
            yield self._read(j)

    def chunks(self, size: int):
        for a in range(0, len(self), size):
            yield a, self.read_range(a, min(a + size, len(self)))

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<{type(self).__name__} {self.source}>"
