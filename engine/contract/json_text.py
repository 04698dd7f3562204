"""The one JSON text layout of the contract's files (``manifest.json``, ``render.json``): 2-space indentation,
but lists without objects (frame numbers, matrix rows, channels) on one line. STDLIB ONLY."""
from __future__ import annotations

import json


def dumps(obj, level: int = 0) -> str:
    """``obj`` as JSON text (no trailing newline); NaN/inf are refused (ValueError)."""
    pad, inner = "  " * level, "  " * (level + 1)
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(str(k))}: {dumps(v, level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(obj, (list, tuple)) and any(isinstance(v, dict) for v in obj):
        return "[\n" + ",\n".join(inner + dumps(v, level + 1) for v in obj) + f"\n{pad}]"
    return json.dumps(obj, allow_nan=False)
