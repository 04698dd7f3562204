"""The job commands' command-line options, generated from the contract's parameter table
(``engine/contract/params.py``), and parsed arguments turned back into the params dict the protocol
carries — so ``diffusion-renderer inverse …`` and a ``submit`` from the add-on run through the same
checks (``params.problems``) and the same settings builder (``engine/jobs/settings.py``)."""
from __future__ import annotations

import argparse

from engine.contract import params as P
from engine.errors import UserError

_TYPES = {"int": int, "num": float, "str": str}


def _arg_type(p: P.Param):
    return _TYPES.get(p.type.split("|")[0], str)


def _help(p: P.Param, kind: str) -> str:
    text = p.cli_help.replace("%", "%%")
    if p.cli in ("flag", "no-flag", "positional") or p.cli_required:
        return text
    value = p.default_for(kind)
    shown = p.doc_default or (",".join(map(str, value)) if isinstance(value, list) else value)
    return f"{text} (default: {shown})"


def add_job_arguments(parser: argparse.ArgumentParser, kind: str) -> None:
    """Every CLI option of ``kind``'s parameters, plus the CLI-only ones (``--json``)."""
    for p in [*P.for_kind(kind).values(), *(c for c in P.CLI_ONLY if kind in c.kinds)]:
        if p.cli is None:
            continue
        if p.cli == "positional":
            parser.add_argument(p.name, metavar=p.metavar or p.name.upper(), help=_help(p, kind))
        elif p.cli in ("flag", "no-flag"):
            parser.add_argument(p.flag, dest=p.name, action="store_true", help=_help(p, kind))
        elif p.cli == "append":
            parser.add_argument(p.flag, dest=p.name, action="append", required=p.required or p.cli_required,
                                metavar=p.metavar, help=_help(p, kind))
        else:
            typed = p.cli == "option" and not p.choices
            parser.add_argument(p.flag, *p.aliases, dest=p.name, default=None, type=_arg_type(p) if typed else str,
                                choices=p.choices if p.cli == "option" else None,
                                required=p.required or p.cli_required,
                                metavar=None if p.choices and p.cli == "option" else p.metavar,
                                help=_help(p, kind))


class OptionError(UserError, ValueError):
    """A command-line option that cannot become its parameter; the message names the option."""


def _range(p: P.Param, text: str) -> list:
    try:
        a, b = (int(v) for v in text.split(":"))
    except ValueError:
        raise OptionError(f"{p.flag} {text!r}: expected {p.metavar or 'FIRST:LAST'}, e.g. 1001:1048") from None
    return [a, b]


def _ramp(p: P.Param, text: str):
    """'1.2' → 1.2; '1.0:3.0' → [1.0, 3.0] (a value ramped over the frames)."""
    try:
        values = [float(v) for v in text.split(":")]
    except ValueError:
        values = []
    if len(values) not in (1, 2):
        raise OptionError(f"{p.flag} {text!r}: expected {p.metavar or 'A[:B]'}, e.g. 1.2 or 1.0:3.0")
    return values[0] if len(values) == 1 else values


def _list(p: P.Param, text: str) -> list:
    items = list(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    if p.type.startswith("list[int]"):
        if not items or not all(v.isdigit() for v in items):
            raise OptionError(f"{p.flag} {text!r}: expected whole numbers ≥ 0 separated by commas, e.g. 0,3")
        return [int(v) for v in items]
    bad = [v for v in items if p.choices and v not in p.choices]
    if bad or not items:
        raise OptionError(f"{p.flag}: unknown {p.item} {', '.join(bad) or '(none)'}; choose from "
                          f"{', '.join(p.choices or ())}")
    return items


def params_from_args(kind: str, args: argparse.Namespace) -> dict:
    """The params dict of a parsed command line: the options given (flags as booleans, ``--no-x`` as
    ``x: false``, lists and ranges as lists, paths as strings); options left out are left out (the
    table's defaults apply). OptionError names an option that cannot be read."""
    out = {}
    for p in P.for_kind(kind).values():
        if p.cli is None:
            continue
        value = getattr(args, p.name, None)
        if p.cli == "flag":
            if value:
                out[p.name] = True
        elif p.cli == "no-flag":
            if value:
                out[p.name] = False
        elif value is None:
            continue
        elif p.cli == "list":
            out[p.name] = _list(p, value)
        elif p.cli == "range":
            out[p.name] = _range(p, value)
        elif p.cli == "ramp":
            out[p.name] = _ramp(p, value)
        elif p.cli == "append":
            out[p.name] = [str(v) for v in value]
        else:
            out[p.name] = str(value) if p.type.startswith("str") else value
    return out


def check_params(kind: str, params: dict) -> list:
    """The protocol's checks, each problem naming the command-line option (``--overlap must be …``)."""
    table = P.for_kind(kind)
    return P.problems(kind, params, label=lambda n: table[n].flag if n in table else n)


def size_argument(text: str) -> tuple[int, int]:
    """argparse ``type=`` for a 'WxH' option of the bench and estimate commands → (W, H)."""
    try:
        return P.parse_size(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT with positive sides (e.g. 512x512), got {text!r}") \
            from None
