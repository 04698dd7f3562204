"""Runs inside ``blender -b copy.blend --python background_runner.py -- job.json`` for
:func:`.gbuffer_export.export_gbuffers` (background path). Imports this package by its folder (the
add-on need not be installed or enabled in that Blender), exports the job's scene in-process and prints
``DR_PROGRESS {json}`` lines and one final ``DR_RESULT {"ok": …}`` line on stdout."""
import importlib
import json
import sys
import traceback
from pathlib import Path


def main(argv) -> int:
    args = argv[argv.index("--") + 1:] if "--" in argv else argv[1:]
    job = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    pkg_dir = Path(__file__).resolve().parents[1]  # …/<add-on package>
    sys.path.insert(0, str(pkg_dir.parent))
    try:
        import bpy

        mod = importlib.import_module(f"{pkg_dir.name}.export.gbuffer_export")
        scene = bpy.data.scenes[job["scene"]]

        def progress(done, total, message=""):
            print("DR_PROGRESS " + json.dumps({"done": done, "total": total, "message": message}), flush=True)

        out = mod.export_gbuffers(scene, job["out_dir"], frame_range=job["frames"],
                                  resolution=tuple(job["resolution"]) if job.get("resolution") else None,
                                  samples=job["samples"], engine=job["engine"],
                                  view_layer=job["view_layer"], filter_width=job["filter_width"],
                                  overwrite=job["overwrite"], background=False, progress=progress,
                                  source=job.get("source"))
        print("DR_RESULT " + json.dumps({"ok": True, "out_dir": str(out)}), flush=True)
        return 0
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        traceback.print_exc()
        plain = type(exc).__name__ == "ExportError"  # its message already says what to change
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print("DR_RESULT " + json.dumps({"ok": False, "error": msg if plain else f"{type(exc).__name__}: {msg}"}),
              flush=True)
        return 3


if __name__ == "__main__":
    code = main(sys.argv)
    if code:
        sys.exit(code)
