"""Atomic file writes: every output is written under a hidden temporary name in the same folder, then
renamed, so an interrupted run never leaves a half-written file under a final name. STDLIB ONLY (part of
the contract: the add-on writes its files the same way)."""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable


def temp_path(path: Path) -> Path:
    """A fresh hidden name beside ``path`` (same folder, so the rename is atomic); keeps the suffix."""
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")


def atomic_write(path, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp)`` to create the file under a temporary name, then rename it to ``path``.
    The temporary file is removed when ``write`` fails. Files get normal (umask) permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(temp_path(path))
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def atomic_write_bytes(path, data: bytes) -> Path:
    def write(tmp):
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return atomic_write(path, write)


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
