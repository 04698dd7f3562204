"""A Blender-compatible command line over the ``bpy`` module, so the add-on's background-Blender code paths
(``blender -b copy.blend --python-exit-code 3 --python background_runner.py -- job.json``) run in CI, where
there is no Blender executable (``bpy.app.binary_path`` is ``''`` in the module build).

    python bpy_blender.py [-b] [FILE.blend] [--python-exit-code N] [--python SCRIPT] [--python-expr EXPR] [-- ARGS]

Arguments are handled in order, as Blender does: ``-b``/``--background`` (the module is always in the
background), a ``.blend`` path opens that file, ``--python``/``-P`` runs a script and ``--python-expr``
an expression in ``__main__``, ``--python-exit-code N`` sets the exit status used when a script raises
(default 0: Blender prints the traceback and goes on), ``--factory-startup`` and ``--disable-autoexec`` /
``--enable-autoexec`` are accepted; ``--`` ends Blender's arguments (scripts read what follows from
``sys.argv``, which holds the whole command line, as in Blender). ``sys.exit(n)`` in a script exits with
``n``. After the last argument the process exits 0. Unlike Blender, a file that cannot be opened or an
unknown option exits 1 at once (Blender would go on with the factory file: a test should not).

Tests make an executable wrapper around it (``bpy_blender.write_wrapper(path)``) to pass as
``blender_binary``."""
from __future__ import annotations

import runpy
import sys
import traceback
from pathlib import Path

_IGNORED = {"-b", "--background", "--factory-startup", "--disable-autoexec", "--enable-autoexec", "-y", "-noaudio"}


def write_wrapper(path, *, before_scripts=()) -> Path:
    """An executable ``blender`` stand-in at ``path`` running this file with this interpreter. Each string of
    ``before_scripts`` becomes a ``--python-expr`` that runs right after the .blend file is opened (to break
    the copy on purpose)."""
    path = Path(path)
    extra = "".join(f" --python-expr {_sh_quote(e)}" for e in before_scripts)
    opened = 'a="$1"; b="$2"; shift 2; set -- "$a" "$b"' + extra + ' "$@"\n' if before_scripts else ""
    path.write_text(f"#!/bin/sh\n{opened}exec {_sh_quote(sys.executable)} {_sh_quote(str(Path(__file__).resolve()))} "
                    '"$@"\n', encoding="utf-8")
    path.chmod(0o755)
    return path


def _sh_quote(s: str) -> str:
    return "'" + s.replace("'", "'\"'\"'") + "'"


def _run(kind: str, what: str, exit_code: int) -> None:
    try:
        if kind == "script":
            runpy.run_path(what, run_name="__main__")
        else:
            exec(compile(what, "<string>", "exec"), {"__name__": "__main__"})
    except SystemExit:
        raise
    except BaseException:  # noqa: BLE001 - Blender prints the traceback, then exits or goes on
        traceback.print_exc()
        sys.stderr.flush()
        if exit_code:
            raise SystemExit(exit_code) from None


def main(argv: list[str]) -> int:
    args = argv[1:]
    sys.argv = [argv[0], *args]  # what Blender's scripts see: the whole command line
    import bpy

    exit_code, i = 0, 0
    while i < len(args):
        a = args[i]
        if a == "--":
            break
        if a in _IGNORED:
            i += 1
        elif a == "--python-exit-code":
            exit_code = int(args[i + 1])
            i += 2
        elif a in ("--python", "-P"):
            _run("script", args[i + 1], exit_code)
            i += 2
        elif a == "--python-expr":
            _run("expr", args[i + 1], exit_code)
            i += 2
        elif a.startswith("-"):
            print(f"bpy_blender: unknown option {a!r}", file=sys.stderr)
            return 1
        else:
            try:
                bpy.ops.wm.open_mainfile(filepath=a)
            except RuntimeError as exc:
                print(f"Error: Cannot read file {a!r}: {exc}", file=sys.stderr)
                return 1
            i += 1
    return 0


if __name__ == "__main__":
    code = main(sys.argv)
    sys.stdout.flush()
    sys.exit(code)
