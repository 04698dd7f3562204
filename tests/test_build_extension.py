"""bin/build-extension: the extension zip is built and validated with Blender's own extension tool (from a
bpy venv: DR_BLENDER_VENV, .venv-blender, /tmp/bpy50 or /tmp/bpy42); skipped where none exists."""
from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import build_extension as B  # noqa: E402

try:
    PY, TOOL = B.find_blender_ext(None)
except B.BuildError as exc:
    pytest.skip(f"no bpy venv with Blender's extension tool: {exc}", allow_module_level=True)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([str(REPO / "bin" / "build-extension"), "--out-dir", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return out, proc


def test_zip_built_and_validated(built):
    out, proc = built
    meta = tomllib.loads((REPO / "blender_manifest.toml").read_text())
    zip_path = out / f"diffusion_renderer-{meta['version']}.zip"
    assert zip_path.is_file()
    assert "built and validated" in proc.stderr and "Success" in proc.stdout
    names = set(zipfile.ZipFile(zip_path).namelist())
    for required in ("blender_manifest.toml", "__init__.py", "engine/contract/__init__.py", "engine/contract/protocol.py", "engine/contract/params.py",
                     "engine/__init__.py",
                     "client/session.py", "preferences.py", "bin/_bootstrap.py", "pyproject.toml"):
        assert required in names, required
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or n.startswith("tests/")]
    # only what git tracks (+ Python sources not added yet): no hidden files, caches, outputs or blobs
    assert not [n for n in names if any(p.startswith(".") for p in n.split("/"))]
    assert {n.rsplit(".", 1)[-1] for n in names if n.startswith(("engine/", "client/"))} == {"py"}
    # validating again with the tool itself passes
    check = subprocess.run([PY, TOOL, "validate", str(zip_path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_manifest_fields():
    meta = tomllib.loads((REPO / "blender_manifest.toml").read_text())
    assert (meta["schema_version"], meta["id"], meta["type"], meta["version"]) == ("1.0.0", "diffusion_renderer",
                                                                                  "add-on", "0.1.0")
    assert meta["license"] == ["SPDX:Apache-2.0"] and meta["blender_version_min"] == "4.2.0"
    assert "files" in meta["permissions"]
    # the engine downloads the weights (Preferences › Model Weights › Download), only with online access
    assert meta["permissions"]["network"].startswith("Download the model weights")


def test_bad_manifest_fails_clearly(tmp_path, monkeypatch):
    bad = tmp_path / "blender_manifest.toml"
    bad.write_text((REPO / "blender_manifest.toml").read_text().replace('tagline = "', 'tagline = "x' * 1 + "y" * 80))
    monkeypatch.setattr(B, "REPO", tmp_path)
    (tmp_path / "engine").symlink_to(REPO / "engine")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "_bootstrap.py").write_text("")
    monkeypatch.setattr(B, "ADDON", REPO / "diffusion_renderer_addon")
    with pytest.raises(B.BuildError, match="tagline"):
        B.build(tmp_path / "dist")


def test_fresh_clone_sets_up_the_blender_module_first(monkeypatch):
    """No bpy venv yet: bin/test-blender's set-up (DR_SETUP_ONLY=1, engine environment skipped) runs, then the
    tool is looked up again; an explicit --python or --no-setup never installs anything."""
    found = iter([B.BuildError("none"), ("py", "tool")])

    def find(python):
        item = next(found)
        if isinstance(item, Exception):
            raise item
        return item

    calls = []
    monkeypatch.setattr(B, "find_blender_ext", find)
    monkeypatch.setattr(B.subprocess, "run", lambda cmd, env, cwd: calls.append((cmd, env)) or
                        subprocess.CompletedProcess(cmd, 0))
    assert B.ensure_blender_ext(None) == ("py", "tool")
    (cmd, env), = calls
    assert cmd == [str(REPO / "bin" / "test-blender")] and env["DR_SETUP_ONLY"] == "1" and env["DR_ENGINE_PYTHON"]
    monkeypatch.setattr(B, "find_blender_ext", lambda python: (_ for _ in ()).throw(B.BuildError("none")))
    for args in ((None, False), ("/x/python", True)):
        with pytest.raises(B.BuildError):
            B.ensure_blender_ext(*args)
    assert len(calls) == 1
