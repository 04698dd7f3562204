"""The small synthetic plate the fault-matrix job cases run on (an mp4 written with the engine's writer)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def write_plate(path: Path, frames: int, size: tuple = (96, 64), fps: int = 24) -> Path:
    """A moving gradient, ``frames`` frames of ``size`` (W, H), as an mp4 at ``path``."""
    from engine.io import write_mp4

    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] / np.array([float(h), float(w)])[:, None, None]
    write_mp4(path, [np.stack([xx, yy, 0.5 + 0.4 * np.sin(xx * 6 + t / 4)], -1).clip(0, 1) for t in range(frames)],
              fps)
    return path
