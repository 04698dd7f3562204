"""The live preview's frame window: which frames of a clip a preview of one frame relights.

STDLIB ONLY (part of the contract): the engine (``engine/jobs/preview_job.py``) and the Blender add-on
(which exports only the frames a preview needs) use this ONE rule, so both agree on the window."""
from __future__ import annotations


def preview_window(frame: int, first: int, last: int, frames: int) -> tuple[int, int]:
    """The inclusive frame numbers ``(start, end)`` a preview of ``frame`` relights.

    ``frames`` frames centred on ``frame`` (``start = frame - (frames - 1) // 2``), shifted into
    ``[first, last]`` keeping the length when the clip is long enough, else the whole clip. ``frame``
    must lie in ``[first, last]`` and ``frames`` must be >= 1 (``ValueError`` otherwise).

    >>> preview_window(10, 1, 100, 4)
    (9, 12)
    >>> preview_window(1, 1, 100, 4)
    (1, 4)
    >>> preview_window(100, 1, 100, 4)
    (97, 100)
    >>> preview_window(3, 1, 3, 8)
    (1, 3)
    """
    frame, first, last, frames = int(frame), int(first), int(last), int(frames)
    if last < first:
        raise ValueError(f"preview window: empty clip (first frame {first} > last frame {last})")
    if frames < 1:
        raise ValueError(f"preview window: frames must be >= 1, got {frames}")
    if not first <= frame <= last:
        raise ValueError(f"preview window: frame {frame} is outside the clip's frames {first}..{last}")
    if last - first + 1 <= frames:
        return first, last
    start = frame - (frames - 1) // 2
    start = max(first, min(start, last - frames + 1))
    return start, start + frames - 1
