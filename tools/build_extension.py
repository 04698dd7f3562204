#!/usr/bin/env python3
"""Stage and build the Blender extension zip (stdlib only; run by bin/build-extension).

An extension's Python package IS the zip root, so the repository cannot be built as it is. This stages
a folder with:

    __init__.py, client/, export/, …     the add-on package (diffusion_renderer_addon/ content)
    blender_manifest.toml                 from the repository root
    engine/                               a copy of the engine (what the add-on starts as a subprocess)
    bin/_bootstrap.py, pyproject.toml,    what "Set up engine" needs to create the engine's environment
    README.md, LICENSE*

The engine and add-on files are the ones git tracks (``git ls-files``; deleted ones left out) — a
development build (``--include-untracked``, used by the Blender tests) adds Python sources git does not
ignore but that are not added yet, listed on stderr; never anything else lying in the tree (``.env``, ``.dr-resume/`` caches,
``.DS_Store``, outputs, stray blobs, ``__pycache__``). Outside a git checkout an explicit allow-list is used
instead (``*.py`` under ``engine/`` and the add-on folder), and the build says so.

It then runs Blender's own extension tool (``blender_ext.py`` from the ``bpy`` wheel, the same code as
``blender -c extension build``) to build ``dist/diffusion_renderer-<version>.zip`` and ``validate`` it.

    python tools/build_extension.py [--python PY] [--out-dir DIST] [--keep-stage] [--no-setup] [--include-untracked]

On a fresh clone (no bpy venv yet) it first creates one with bin/test-blender's set-up (``DR_SETUP_ONLY=1``;
bpy only, not the engine's environment), unless ``--python`` names one or ``--no-setup`` is given.
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ADDON = REPO / "diffusion_renderer_addon"
EXTRA_FILES = ("pyproject.toml", "README.md", "LICENSE", "LICENSE.txt", "NOTICE")
ALLOW_SUFFIXES = (".py",)      # outside git (and for not-yet-added files): what the two packages consist of


class BuildError(Exception):
    pass


def find_blender_ext(python: str | None) -> tuple[str, str]:
    """(python, blender_ext.py) from an explicit interpreter or DR_BLENDER_VENV / .venv-blender / /tmp/bpy50."""
    candidates = []
    if python:
        candidates.append(python)
    for venv in (os.environ.get("DR_BLENDER_VENV"), str(REPO / ".venv-blender"), "/tmp/bpy50", "/tmp/bpy42"):
        if venv:
            candidates.append(os.path.join(venv, "bin", "python"))
    for py in candidates:
        if not py or not os.path.isfile(py):
            continue
        venv = Path(py).resolve().parent.parent if not Path(py).parent.name == "bin" else Path(py).parent.parent
        hits = sorted(glob.glob(str(venv / "lib" / "python3*" / "site-packages" / "bpy" / "*" / "scripts" /
                                    "addons_core" / "bl_pkg" / "cli" / "blender_ext.py")))
        if hits:
            return py, hits[-1]
    raise BuildError("Blender's extension tool (bpy/<ver>/scripts/addons_core/bl_pkg/cli/blender_ext.py) was not "
                     "found: create a venv with `pip install bpy` (e.g. bin/test-blender makes .venv-blender) or "
                     "set DR_BLENDER_VENV=/path/to/venv")


def ensure_blender_ext(python: str | None, setup: bool = True) -> tuple[str, str]:
    """find_blender_ext(); when no venv has the tool (a fresh clone) and ``setup``, create .venv-blender (or
    DR_BLENDER_VENV) with bin/test-blender's set-up first. The engine's environment is not needed to build:
    DR_ENGINE_PYTHON is set so the set-up skips it."""
    try:
        return find_blender_ext(python)
    except BuildError:
        if python or not setup:
            raise
    script = REPO / "bin" / "test-blender"
    print("[build-extension] no Blender Python module found: installing one with bin/test-blender's set-up "
          "(DR_SETUP_ONLY=1, ~360 MB download)", file=sys.stderr)
    env = {**os.environ, "DR_SETUP_ONLY": "1", "DR_ENGINE_PYTHON": os.environ.get("DR_ENGINE_PYTHON") or sys.executable}
    proc = subprocess.run([str(script)], env=env, cwd=str(REPO))
    if proc.returncode != 0:
        raise BuildError(f"setting up the Blender Python module failed ({script} exit {proc.returncode}); "
                         "see its messages above")
    return find_blender_ext(None)


def manifest() -> dict:
    path = REPO / "blender_manifest.toml"
    if not path.is_file():
        raise BuildError(f"{path} is missing")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise BuildError(f"{path}: {exc}") from None


def _git_list(folder: Path, *args: str) -> list[str] | None:
    """``git ls-files -z ARGS`` in ``folder`` (paths relative to it), or None when git or a checkout is missing."""
    try:
        proc = subprocess.run(["git", "-C", str(folder), "ls-files", "-z", *args], capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return [name for name in proc.stdout.decode("utf-8", "surrogateescape").split("\0") if name]


def _plain_source(rel: str) -> bool:
    """An allow-listed file: a Python source, no hidden or cache folder on the way."""
    parts = rel.split("/")
    return (rel.endswith(ALLOW_SUFFIXES) and not any(p.startswith(".") or p == "__pycache__" for p in parts))


def _walk(folder: Path) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            found.append(Path(root, name).relative_to(folder).as_posix())
    return sorted(found)


def package_files(folder: Path, include_untracked: bool = False) -> tuple[list[str], list[str]]:
    """(files to ship, notes) for one package folder, paths relative to it: git's tracked files that exist
    (+ untracked, not ignored Python sources when ``include_untracked``), else the allow-list."""
    tracked = _git_list(folder, "--cached")
    present = set(_walk(folder))
    notes = []
    if tracked:
        chosen = {rel for rel in tracked if rel in present}
        extra = [rel for rel in (_git_list(folder, "--others", "--exclude-standard") or ()) if _plain_source(rel)]
        if extra and include_untracked:
            chosen.update(extra)
            notes.append(f"{folder.name}/: shipping {len(extra)} Python source(s) git does not track yet "
                         f"({', '.join(extra[:5])}{' …' if len(extra) > 5 else ''}); a release build leaves them out")
    else:
        chosen = {rel for rel in present if _plain_source(rel)}
        notes.append(f"{folder.name}/ is not tracked by a git checkout: shipping the allow-list "
                     f"({', '.join('*' + s for s in ALLOW_SUFFIXES)}, no hidden folders)")
    left = sorted(rel for rel in present - chosen if not rel.endswith((".pyc", ".pyo")))
    if left:
        notes.append(f"{folder.name}/: left out {len(left)} file(s) git does not track "
                     f"({', '.join(left[:5])}{' …' if len(left) > 5 else ''})")
    return sorted(chosen), notes


def stage(dest: Path, include_untracked: bool = False) -> Path:
    """Fill ``dest`` with the extension's content (package_files of the add-on and the engine, plus the
    set-up and metadata files); returns it."""
    if not (ADDON / "__init__.py").is_file():
        raise BuildError(f"{ADDON / '__init__.py'} is missing")
    dest.mkdir(parents=True, exist_ok=True)
    addon_files, notes = package_files(ADDON, include_untracked)
    if "__init__.py" not in addon_files:
        raise BuildError(f"{ADDON / '__init__.py'} is not among the files to ship (not tracked by git?)")
    if any(rel.split("/")[0] == "engine" for rel in addon_files):
        raise BuildError("diffusion_renderer_addon/ has an engine/ entry; it would clash with the bundled engine")
    engine_files, engine_notes = package_files(REPO / "engine", include_untracked)
    for src, files, prefix in ((ADDON, addon_files, ""), (REPO / "engine", engine_files, "engine/")):
        for rel in files:
            target = dest / (prefix + rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, target)
    for note in notes + engine_notes:
        print(f"[build-extension] {note}", file=sys.stderr)
    (dest / "bin").mkdir(exist_ok=True)
    shutil.copy2(REPO / "bin" / "_bootstrap.py", dest / "bin" / "_bootstrap.py")
    for name in EXTRA_FILES:
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, dest / name)
    shutil.copy2(REPO / "blender_manifest.toml", dest / "blender_manifest.toml")
    return dest


def run_tool(python: str, tool: str, *args: str) -> str:
    proc = subprocess.run([python, tool, *args], capture_output=True, text=True)
    out = (proc.stdout + proc.stderr).strip()
    bad = [ln for ln in out.splitlines() if ln.strip().lower().startswith("error")]
    if proc.returncode != 0 or bad:
        raise BuildError(f"blender_ext.py {args[0]} failed (exit {proc.returncode}):\n{out}")
    return out


def build(out_dir: Path, python: str | None = None, keep_stage: bool = False, setup: bool = True,
          include_untracked: bool = False) -> Path:
    meta = manifest()
    py, tool = ensure_blender_ext(python, setup)
    zip_path = out_dir / f"{meta['id']}-{meta['version']}.zip"
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="dr-ext-stage-"))
    try:
        src = stage(tmp / meta["id"], include_untracked)
        if zip_path.exists():
            zip_path.unlink()
        print(f"[build-extension] staged {src}", file=sys.stderr)
        print(run_tool(py, tool, "build", "--source-dir", str(src), "--output-filepath", str(zip_path)))
        if not zip_path.is_file():
            raise BuildError(f"the build reported success but {zip_path} was not written")
        print(run_tool(py, tool, "validate", str(zip_path)))
    finally:
        if keep_stage:
            print(f"[build-extension] stage kept at {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"[build-extension] built and validated {zip_path} (tool: {tool})", file=sys.stderr)
    return zip_path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", help="interpreter of a venv holding the bpy wheel")
    ap.add_argument("--out-dir", default=str(REPO / "dist"))
    ap.add_argument("--keep-stage", action="store_true")
    ap.add_argument("--no-setup", dest="setup", action="store_false",
                    help="fail instead of installing the Blender Python module when none is found")
    ap.add_argument("--include-untracked", action="store_true",
                    help="a development build: also ship Python sources git does not track yet (named on stderr)")
    args = ap.parse_args(argv)
    try:
        zip_path = build(Path(args.out_dir).resolve(), args.python, args.keep_stage, args.setup, args.include_untracked)
    except BuildError as exc:
        print(f"build-extension: error: {exc}", file=sys.stderr)
        return 1
    print(zip_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
