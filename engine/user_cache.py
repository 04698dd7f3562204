"""The engine's per-user cache folder (server logs, measured throughput profiles). Stdlib only."""
from __future__ import annotations

import os
import sys
from pathlib import Path


def user_cache_dir() -> Path:
    """``%LOCALAPPDATA%``, ``~/Library/Caches`` or ``$XDG_CACHE_HOME`` (``~/.cache``) / ``diffusion-renderer``."""
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = home / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache")
    return base / "diffusion-renderer"
