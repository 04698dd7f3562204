"""Field types of the contract (``protocol.py``, ``params.py``): the notation, the check of one value, the
check of an object against a table of fields, the Markdown rendering of message tables, and the version
and number helpers. STDLIB ONLY."""
from __future__ import annotations

import json
import math


class Field:
    """One field: ``types`` in a small notation ('str', 'int', 'num', 'bool', 'obj', 'list', 'null',
    'list[str]', unions with '|'), plus optional choices / minimum / maximum / list length."""
    __slots__ = ("choices", "doc", "length", "maximum", "minimum", "required", "types")

    def __init__(self, types: str, required: bool = False, *, choices=None, minimum=None, maximum=None,
                 length=None, doc: str = ""):
        self.types, self.required, self.choices = types, required, choices
        self.minimum, self.maximum, self.length, self.doc = minimum, maximum, length, doc


def is_type(value, t: str) -> bool:
    if t.startswith("list[") and t.endswith("]"):
        return isinstance(value, list) and all(is_type(v, t[5:-1]) for v in value)
    if t == "str":
        return isinstance(value, str)
    if t == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "num":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if t == "bool":
        return isinstance(value, bool)
    if t == "obj":
        return isinstance(value, dict)
    if t == "list":
        return isinstance(value, list)
    if t == "null":
        return value is None
    raise KeyError(t)


def check_field(name: str, value, f: Field, label: str | None = None) -> list:
    """Problems of one value; each starts with ``label`` (default ``field '<name>':``)."""
    label = label or f"field '{name}':"
    if not any(is_type(value, t) for t in f.types.split("|")):
        return [f"{label} expected {f.types}, got {show(value)}"]
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    out = []
    if f.length is not None and isinstance(value, list) and not f.length[0] <= len(value) <= f.length[1]:
        lo, hi = f.length
        out.append(f"{label} expected {lo if lo == hi else f'{lo} to {hi}'} item(s), got {len(value)}")
    for v in items:
        if f.choices is not None and v not in f.choices:
            out.append(f"{label} {show(v)} is not one of {', '.join(map(str, f.choices))}")
        if f.minimum is not None and isinstance(v, (int, float)) and v < f.minimum:
            out.append(f"{label} must be at least {f.minimum}, got {v}")
        if f.maximum is not None and isinstance(v, (int, float)) and v > f.maximum:
            out.append(f"{label} must be at most {f.maximum}, got {v}")
    return out


def show(value) -> str:
    text = json.dumps(value, default=repr) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def table_problems(obj: dict, table: dict, prefix: str, where: str, label=None) -> list:
    """Required fields missing from ``obj`` and every field's own problems. ``label(name)`` names a field
    in the messages (default ``field '<prefix><name>':``; the CLI names its option instead)."""
    label = label or (lambda name: f"field '{prefix}{name}':")
    out = []
    for name, f in table.items():
        if name not in obj:
            if f.required:
                out.append(f"{label(name)} required {where}")
            continue
        out += check_field(prefix + name, obj[name], f, label(name))
    return out


def markdown_table(messages: dict) -> str:
    """Markdown table of every message and field of ``messages`` ({direction: {type: {field: Field}}})."""
    rows = ["| direction | type | required fields | optional fields |", "|---|---|---|---|"]
    for direction, table in messages.items():
        for mtype, fields in table.items():
            req = ", ".join(f"`{k}` ({f.types.replace('|', ' or ')})" for k, f in fields.items() if f.required)
            opt = ", ".join(f"`{k}` ({f.types.replace('|', ' or ')})" for k, f in fields.items() if not f.required)
            rows.append(f"| {direction} | `{mtype}` | {req or '—'} | {opt or '—'} |")
    return "\n".join(rows)


def parse_version(v) -> tuple | None:
    """'1.0' → (1, 0); an int major 1 → (1, 0); anything else → None."""
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return (v, 0)
    if isinstance(v, str):
        parts = v.split(".")
        if len(parts) == 2 and all(p.isdigit() and len(p) <= 6 for p in parts):
            return int(parts[0]), int(parts[1])
    return None


def clean_number(x) -> float | None:
    """A finite float rounded for the wire, or None (NaN/inf are not JSON)."""
    return round(float(x), 3) if isinstance(x, (int, float)) and math.isfinite(x) else None
