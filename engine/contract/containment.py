"""Folders that neither the engine nor the add-on ever write into: the engine's own installation and system
folders they do not own. STDLIB ONLY (part of the contract: the server checks a request's ``job_dir`` and
``out`` with it, engine/server/containment.py; the add-on its Output Folder before exporting anything).

* the engine's installation: its package folder, the folder holding it (the repository — but for its
  git-ignored ``out/``, where ``bin/demo`` writes —, or the Blender extension, which Blender replaces on an
  update), the running Python's environment (``sys.prefix``,
  ``sys.exec_prefix``, ``sys.base_prefix``: the engine's venv, or Blender's own Python in the add-on);
* system folders: ``/etc``, ``/usr``, ``/bin``, ``/sbin``, ``/lib*``, ``/boot``, ``/proc``, ``/sys``, ``/dev``,
  macOS ``/System``, ``/Library``, ``/Applications``; on Windows ``%SystemRoot%`` and the Program Files
  folders; the root of a file system.

Paths are compared as written (normalised) and after following symbolic links, so a link into such a folder
or a ``..`` climbing out of a job folder is caught too.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ENGINE_PACKAGE = Path(__file__).resolve().parents[1]
# a git checkout's own output folder (git ignores it; bin/demo writes out/demo): the one place inside a
# checkout that may be written into. An installed extension has none.
CHECKOUT_OUTPUT_DIRS = ("out",)

_POSIX_SYSTEM = ("/etc", "/usr", "/bin", "/sbin", "/boot", "/proc", "/sys", "/dev", "/System", "/Library",
                 "/Applications", "/private/etc", "/private/var/db")
_WINDOWS_SYSTEM = (("SystemRoot", r"C:\Windows"), ("ProgramFiles", r"C:\Program Files"),
                   ("ProgramFiles(x86)", r"C:\Program Files (x86)"), ("ProgramW6432", r"C:\Program Files"))


def forbidden_roots() -> list:
    """(folder, what it is) for every folder never written into."""
    roots = [(ENGINE_PACKAGE, "the engine's own package folder"),
             (ENGINE_PACKAGE.parent, "the engine's installation (the repository or extension folder holding "
                                     "engine/)")]
    for prefix in dict.fromkeys((sys.prefix, sys.exec_prefix, sys.base_prefix)):
        roots.append((Path(prefix), "a Python environment the engine or Blender runs from"))
    if os.name == "nt":
        for var, default in _WINDOWS_SYSTEM:
            roots.append((Path(os.environ.get(var) or default), "a Windows system folder"))
    else:
        roots += [(Path(p), "a system folder") for p in _POSIX_SYSTEM]
        try:
            roots += [(Path("/") / name, "a system folder") for name in sorted(os.listdir("/"))
                      if name.startswith("lib")]
        except OSError:
            pass
    return roots


def _parts(path: Path) -> tuple:
    fold = os.name == "nt" or sys.platform == "darwin"      # case-insensitive file systems by default
    return tuple(os.path.normcase(p).casefold() if fold else p for p in path.parts)


def _inside(path: Path, root: Path) -> bool:
    p, r = _parts(path), _parts(root)
    return len(p) >= len(r) and p[:len(r)] == r


def forbidden_reason(path) -> str | None:
    """None when ``path`` (absolute) may be written into, else why not: "is the root of a file system" or
    "is inside <what> (<folder>)"."""
    raw = Path(os.path.expanduser(str(path)))
    candidates = [Path(os.path.normpath(raw)), Path(os.path.realpath(raw))]
    if any(c.parent == c for c in candidates):
        return "is the root of a file system"
    home = ENGINE_PACKAGE.parent
    if (home / ".git").exists() and any(_inside(c, home / d) or _inside(c, Path(os.path.realpath(home / d)))
                                        for c in candidates for d in CHECKOUT_OUTPUT_DIRS):
        return None
    for root, what in forbidden_roots():
        for r in dict.fromkeys((root, Path(os.path.realpath(root)))):
            if any(_inside(c, r) for c in candidates):
                return f"is inside {what} ({root})"
    return None
