"""Fault matrix, packaging class: the extension zip is built from the files git tracks, never from whatever
lies in a used working tree (issue 15, Build 6; tools/build_extension.py ``stage``).

A small repository of the same shape (engine/, diffusion_renderer_addon/, bin/_bootstrap.py, manifest) is
made in a temporary folder, committed, then littered; ``stage()`` runs on it (no Blender needed: the zip
itself is built and validated by tests/test_build_extension.py).

| case | expected behaviour |
|---|---|
| `.env`, `.DS_Store`, `.dr-resume/<key>/seg_0000.safetensors`, `__pycache__/*.pyc` in the packages | not staged |
| a stray blob (`weights.bin`), a G-buffer set written inside `engine/` (`out/manifest.json`, EXRs) | not staged; the build lists what it left out |
| a tracked file deleted from the tree | not staged, no error |
| a new Python source not added to git yet | left out; `--include-untracked` (development) stages it and names it on stderr |
| not a git checkout (e.g. an unpacked source archive) | the allow-list (`*.py`, no hidden folders) is staged, and the build says so |
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import build_extension as B  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

SOURCES = ("engine/__init__.py", "engine/server/serve.py", "engine/contract/protocol.py",
           "diffusion_renderer_addon/__init__.py", "diffusion_renderer_addon/client/session.py",
           "diffusion_renderer_addon/old_module.py", "bin/_bootstrap.py", "blender_manifest.toml", "README.md",
           "pyproject.toml")
JUNK = ("engine/.env", "engine/.DS_Store", "engine/out/.dr-resume/ab12/seg_0000.safetensors", "engine/weights.bin",
        "engine/out/manifest.json", "engine/out/basecolor/frame_0001.exr", "engine/server/__pycache__/serve.cpython-311.pyc",
        "diffusion_renderer_addon/.DS_Store", "diffusion_renderer_addon/.env", "diffusion_renderer_addon/notes.txt",
        "diffusion_renderer_addon/.dr-resume/k/seg_0001.safetensors")


def _tree(root: Path, git: bool) -> Path:
    for rel in SOURCES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"# {rel}\n")
    if git:
        for args in (["init", "-q"], ["add", "-A"],
                     ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "tracked"]):
            subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)
    for rel in JUNK:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"SECRET=1\n" if rel.endswith(".env") else b"\0junk")
    (root / "diffusion_renderer_addon" / "old_module.py").unlink()        # deleted, still in the index
    (root / "engine" / "server" / "new_module.py").write_text("# not added yet\n")
    return root


def _staged(tmp_path, monkeypatch, git: bool, include_untracked: bool = False) -> tuple[set, str]:
    root = _tree(tmp_path / "repo", git)
    monkeypatch.setattr(B, "REPO", root)
    monkeypatch.setattr(B, "ADDON", root / "diffusion_renderer_addon")
    dest = B.stage(tmp_path / "stage" / "diffusion_renderer", include_untracked)
    return {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}, dest


EXPECTED = {"__init__.py", "client/session.py", "engine/__init__.py", "engine/server/serve.py",
            "engine/contract/protocol.py", "bin/_bootstrap.py", "blender_manifest.toml", "README.md", "pyproject.toml"}


def test_a_littered_git_checkout_ships_only_its_tracked_files(tmp_path, monkeypatch, capsys):
    staged, _ = _staged(tmp_path, monkeypatch, git=True)
    assert staged == EXPECTED, staged ^ EXPECTED
    err = capsys.readouterr().err
    assert "engine/: left out 7 file(s)" in err and "diffusion_renderer_addon/: left out 4 file(s)" in err, err


def test_a_development_build_adds_new_sources_and_names_them(tmp_path, monkeypatch, capsys):
    staged, _ = _staged(tmp_path, monkeypatch, git=True, include_untracked=True)
    assert staged == EXPECTED | {"engine/server/new_module.py"}, staged ^ (EXPECTED | {"engine/server/new_module.py"})
    err = capsys.readouterr().err
    assert "server/new_module.py" in err and "release build leaves them out" in err, err
    assert "engine/: left out 6 file(s)" in err, err


def test_outside_git_the_allow_list_is_used_and_announced(tmp_path, monkeypatch, capsys):
    staged, _ = _staged(tmp_path, monkeypatch, git=False)
    assert staged == EXPECTED | {"engine/server/new_module.py"}, staged ^ (EXPECTED | {"engine/server/new_module.py"})
    assert "not tracked by a git checkout: shipping the allow-list" in capsys.readouterr().err
