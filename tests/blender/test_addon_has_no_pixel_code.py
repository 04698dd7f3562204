"""Blender only renders, the engine converts: the add-on holds no EXR reader or writer, no per-pixel work in
its G-buffer export and no G-buffer manifest writer (render.json goes through the contract's
``render_json.write``). A scan of the add-on's sources (AST, so docstrings and comments do not count); no bpy
needed."""
from __future__ import annotations

import ast
from pathlib import Path

ADDON = Path(__file__).resolve().parents[2] / "diffusion_renderer_addon"
EXPORT_MODULES = ("gbuffer_export.py", "render_request.py", "background_export.py", "background_runner.py",
                  "aov_injection.py", "restore.py")


def _trees():
    files = sorted(p for p in ADDON.rglob("*.py") if "engine" not in p.relative_to(ADDON).parts)
    assert len(files) > 20 and (ADDON / "export" / "gbuffer_export.py") in files
    return {p: ast.parse(p.read_text(encoding="utf-8"), str(p)) for p in files}


def _docstrings(tree) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def test_no_exr_codec_in_the_addon():
    assert not (ADDON / "export" / "exr_io.py").exists() and not (ADDON / "export" / "set_writer.py").exists()
    problems = []
    for path, tree in _trees().items():
        rel = path.relative_to(ADDON.parent)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [node.module or ""]
            else:
                mods = []
            for m in mods:  # the building blocks of a hand-written image codec
                if m.split(".")[0] in ("struct", "zlib", "array", "OpenEXR", "Imath"):
                    problems.append(f"{rel}:{node.lineno}: imports {m}")
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                low = node.name.lower()
                if "exr" in low and any(w in low for w in ("read", "write", "decode", "encode", "pack")):
                    problems.append(f"{rel}:{node.lineno}: defines {node.name}")
            if isinstance(node, ast.Constant) and (node.value in (20000630, 0x762F3101)
                                                   or (isinstance(node.value, bytes) and b"v/1\x01" in node.value)):
                problems.append(f"{rel}:{node.lineno}: the EXR magic number")
    assert problems == []


def test_gbuffer_export_reads_no_pixels_and_writes_no_manifest():
    problems = []
    trees = _trees()
    for path, tree in trees.items():
        if path.parent.name != "export":
            continue
        rel = path.relative_to(ADDON.parent)
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                # the formats come from the contract; a literal here would be a second writer
                if node.value in ("diffusion-renderer/gbuffer-set", "diffusion-renderer/blender-render"):
                    problems.append(f"{rel}:{node.lineno}: format literal {node.value!r}")
        if path.name not in EXPORT_MODULES:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("pixels", "foreach_get", "foreach_set"):
                problems.append(f"{rel}:{node.lineno}: .{node.attr}")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("dump", "dumps")
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "json"
                    and path.name in ("gbuffer_export.py", "render_request.py")):
                problems.append(f"{rel}:{node.lineno}: json.{node.func.attr} (render.json is written by render_json.write)")
    assert problems == []
    src = (ADDON / "export" / "gbuffer_export.py").read_text(encoding="utf-8")
    assert "render_json.write(out_dir" in src  # the one writer of the export's description
