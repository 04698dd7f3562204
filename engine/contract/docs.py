"""The docs' tables, rendered from the contract: the CLI's option tables (docs/CLI.md), the job-parameter
and message tables (docs/PROTOCOL.md). Each sits between marker comments in its Markdown file::

    <!-- generated: cli inverse -->
    | option | default | meaning |
    …
    <!-- end generated -->

``python -m engine.contract docs`` rewrites them; ``--check`` lists the stale ones (tests/test_contract.py
runs the check). STDLIB ONLY."""
from __future__ import annotations

import json
import re
from pathlib import Path

from . import params as P
from . import protocol

DOCS = Path(__file__).resolve().parents[2] / "docs"
_BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w ]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.DOTALL)


def _cli_default(p: P.Param, kind: str) -> str:
    if p.doc_default is not None:
        return p.doc_default
    value = p.default_for(kind)
    if p.cli in ("flag", "no-flag"):
        return "off"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return "–" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _cli_option(p: P.Param) -> str:
    if p.cli in ("flag", "no-flag"):
        return f"`{p.flag}`"
    metavar = p.metavar or ("|".join(p.choices) if p.choices else "VALUE")
    return f"`{p.flag} {metavar}`".replace("|", "\\|")


def cli_table(kind: str, *, own_only: bool = False) -> str:
    """The option table of ``diffusion-renderer <kind>`` (positionals are in the heading); ``own_only``:
    only the options inverse does not have, then one row pointing at the inverse table."""
    shared = {**P.for_kind("inverse"), **{c.name: c for c in P.CLI_ONLY}} if own_only else {}
    rows = ["| option | default | meaning |", "|---|---|---|"]
    for p in [*P.for_kind(kind).values(), *(c for c in P.CLI_ONLY if kind in c.kinds)]:
        if p.cli in (None, "positional") or p.name in shared:
            continue
        meaning = p.cli_help + (" Repeatable." if p.cli == "append" else "")
        default = "required" if p.required or p.cli_required else _cli_default(p, kind)
        rows.append(f"| {_cli_option(p)} | {default} | {meaning} |")
    if own_only:
        rows.append("| window, sampling, model, device and output options | | as for `inverse` |")
    return "\n".join(rows)


def _protocol_type(p: P.Param) -> str:
    t = p.type.replace("|", " or ")
    if p.choices and p.type.startswith("list["):
        t = "list of " + ", ".join(f"`{c}`" for c in p.choices)
    elif p.choices:
        t = " / ".join(f"`{c}`" for c in p.choices)
    lo, hi = p.minimum, p.maximum
    if lo is not None and hi is not None:
        t += f" {lo:g}–{hi:g}"
    elif lo is not None:
        t += f" ≥ {lo:g}"
    if p.length and p.length != (1, len(p.choices or ())):
        t += f" ({p.length[0]}–{p.length[1]} items)" if p.length[0] != p.length[1] else f" ({p.length[0]} items)"
    return t + (", **required**" if p.required else "")


def _protocol_default(p: P.Param) -> str:
    if p.required:
        return ""
    if p.kind_default:
        return " / ".join(f"`{v}`" for v in p.kind_default.values())
    if p.doc_default is not None and p.default is None:
        return p.doc_default
    return f"`{json.dumps(p.default)}`"


_GROUPS = {
    "shared": lambda p: "inverse" in p.kinds and "forward" in p.kinds,
    "inverse": lambda p: "inverse" in p.kinds and "forward" not in p.kinds,
    "forward": lambda p: "forward" in p.kinds and "inverse" not in p.kinds,
    "gbuffers": lambda p: "gbuffers" in p.kinds,
}


def params_table(group: str) -> str:
    """``submit.params`` of one group: ``shared`` (inverse and forward), ``inverse``, ``forward`` (only
    theirs) or ``gbuffers`` (all of its parameters)."""
    rows = ["| param | type | default | meaning |", "|---|---|---|---|"]
    seen = set()
    for p in P.PARAMS:
        if _GROUPS[group](p) and (p.name, p.kinds) not in seen:
            seen.add((p.name, p.kinds))
            rows.append(f"| `{p.name}` | {_protocol_type(p)} | {_protocol_default(p)} | {p.help} |")
    return "\n".join(rows)


def preview_params_table() -> str:
    """The ``params`` of a ``preview`` request: its own two, then the forward ones it takes (their preview
    defaults)."""
    rows = ["| param | type | default | meaning |", "|---|---|---|---|"]
    for p in P.for_kind(P.PREVIEW).values():
        default = "" if p.required else f"`{json.dumps(p.default_for(P.PREVIEW))}`"
        rows.append(f"| `{p.name}` | {_protocol_type(p)} | {default} | {p.help} |")
    return "\n".join(rows)


BLOCKS = {
    "cli inverse": lambda: cli_table("inverse"),
    "cli forward": lambda: cli_table("forward", own_only=True),
    "cli gbuffers": lambda: cli_table("gbuffers"),
    "protocol messages": protocol.message_table,
    "params shared": lambda: params_table("shared"),
    "params inverse": lambda: params_table("inverse"),
    "params forward": lambda: params_table("forward"),
    "params gbuffers": lambda: params_table("gbuffers"),
    "cli preview": lambda: cli_table("preview"),
    "params preview": preview_params_table,
}
FILES = ("CLI.md", "PROTOCOL.md")


def render(text: str, source: str = "") -> str:
    """``text`` with every generated block re-rendered; ValueError naming an unknown block."""
    def sub(m):
        name = m.group("name").strip()
        if name not in BLOCKS:
            raise ValueError(f"{source}: unknown generated block {name!r} (known: {', '.join(BLOCKS)})")
        return f"{m.group(1)}{BLOCKS[name]()}\n{m.group(4)}"
    return _BLOCK.sub(sub, text)


def stale(docs: Path = DOCS) -> list:
    """The docs files whose generated tables differ from the contract."""
    return [str(docs / f) for f in FILES if render((docs / f).read_text(encoding="utf-8"), f)
            != (docs / f).read_text(encoding="utf-8")]


def update(docs: Path = DOCS) -> list:
    """Rewrite the generated tables; returns the files changed."""
    from .atomic import atomic_write_text

    changed = stale(docs)
    for path in changed:
        text = Path(path).read_text(encoding="utf-8")
        atomic_write_text(path, render(text, path))
    return changed
