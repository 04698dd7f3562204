"""Benchmark: G-buffer export against a bare render of the same passes (run by ``bin/bench-export`` with
the bpy venv's Python; speed figures live here, not in the tests).

Scene: the add-on's procedural demo scene (``diffusion_renderer_addon.demo_scene``), Cycles on the CPU,
in this process. Measured, warm (one export first, so kernels are loaded and caches filled), best of
``--repeats`` runs each, wall-clock and process CPU time:

* **export** — ``export.export_gbuffers``: passes and AOVs set up, render, split every frame into 7
  single-layer EXRs (rgb, basecolor, normal, depth, roughness, metallic, alpha) + manifest + cameras,
  scene restored;
* **bare render** — the same passes and AOV nodes set up once, then one multilayer EXR per frame the
  plain way (``render.render(write_still=True)``), with Blender's default 32-bit float ZIP, and with
  codec NONE (the fastest a bare render can write).

The ratios (export / bare) say what the export costs on top of rendering. Process CPU time is less
sensitive to other load on the machine than wall time; a busy machine still skews both.

    bin/bench-export --size 512 --samples 16 --frames 3 --repeats 5 [--json]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="dr-bench-user-"))

CODECS = ("ZIP", "NONE")


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h or w)


def _scene(size, frames: int):
    import bpy

    from diffusion_renderer_addon.demo_scene import build_demo_scene

    bpy.ops.wm.read_factory_settings(use_empty=True)
    return build_demo_scene(frames=frames, resolution=size, name="DR Bench")


def _timed(fn) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def export_once(scene, out: Path, samples: int) -> tuple[float, float]:
    from diffusion_renderer_addon.export import export_gbuffers

    return _timed(lambda: export_gbuffers(scene, out, samples=samples, overwrite=True, background=False))


def bare_render(scene, out: Path, samples: int, codec: str) -> tuple[float, float]:
    """The same passes rendered the plain way: passes + AOV nodes set up once (not timed), one multilayer
    EXR per frame (32-bit float, ``codec``). Returns (wall, CPU) seconds of the renders."""
    import bpy

    from diffusion_renderer_addon import compat
    from diffusion_renderer_addon.export import aov_injection
    from diffusion_renderer_addon.export.restore import ChangeLog

    log, vl, r = ChangeLog(), scene.view_layers[0], scene.render
    r.engine, scene.cycles.samples, scene.cycles.use_denoising = "CYCLES", samples, False
    scene.cycles.filter_width, r.film_transparent, r.use_compositing = 0.01, True, False
    compat.set_exr_format(r.image_settings, multilayer=True, color_depth="32", codec=codec)
    vl.use_pass_z = vl.use_pass_normal = True
    names = aov_injection.choose_aov_names(vl)
    aov_injection.add_view_layer_aovs(vl, names, log)
    aov_injection.inject_materials(names, log)

    def render_all():
        for f in range(scene.frame_start, scene.frame_end + 1):
            scene.frame_set(f)
            r.filepath = str(out / f"bare_{codec}_{f:04d}.exr")
            bpy.ops.render.render(write_still=True, scene=scene.name)
    return _timed(render_all)


def run(size=(64, 64), samples: int = 1, frames: int = 3, repeats: int = 5, workdir=None) -> dict:
    import bpy

    tmp = Path(workdir or tempfile.mkdtemp(prefix="dr-bench-export-"))
    scene = _scene(size, frames)
    export_once(scene, tmp / "warm", samples)
    exports = [export_once(scene, tmp / "set", samples) for _ in range(repeats)]
    bare = {codec: [] for codec in CODECS}
    for _ in range(repeats):
        for codec in CODECS:                         # a fresh scene: the bare set-up is not restored
            bare[codec].append(bare_render(_scene(size, frames), tmp, samples, codec))
    best = lambda runs, k: min(r[k] for r in runs)  # noqa: E731
    exp = {"wall": best(exports, 0), "cpu": best(exports, 1)}
    result = {"blender": bpy.app.version_string, "size": list(size), "samples": samples, "frames": frames,
              "repeats": repeats, "cpus": os.cpu_count(), "export": exp, "bare": {}}
    for codec, runs in bare.items():
        wall, cpu = best(runs, 0), best(runs, 1)
        result["bare"][codec] = {"wall": wall, "cpu": cpu, "ratio_wall": exp["wall"] / wall,
                                 "ratio_cpu": exp["cpu"] / cpu}
    return result


def table(res: dict) -> str:
    w, h = res["size"]
    head = (f"G-buffer export vs bare render — Blender {res['blender']}, {w}×{h}, {res['samples']} spp, "
            f"{res['frames']} frames, best of {res['repeats']} ({res['cpus']} CPUs)")
    rows = [head, f"{'':26} {'wall ms':>9} {'CPU ms':>9} {'export/bare wall':>17} {'export/bare CPU':>16}",
            f"{'export (7 EXRs a frame)':26} {res['export']['wall'] * 1e3:9.0f} {res['export']['cpu'] * 1e3:9.0f}"]
    for codec, b in res["bare"].items():
        rows.append(f"{'bare render, ' + codec:26} {b['wall'] * 1e3:9.0f} {b['cpu'] * 1e3:9.0f} "
                    f"{b['ratio_wall']:17.2f} {b['ratio_cpu']:16.2f}")
    return "\n".join(rows)


@contextlib.contextmanager
def _render_output_silenced():
    """Blender prints a line per saved file on stdout (fd 1): keep it off the table / JSON."""
    sys.stdout.flush()
    saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=_size, default=(64, 64), help="N or WxH pixels (default 64)")
    ap.add_argument("--samples", type=int, default=1, help="Cycles samples per pixel (default 1)")
    ap.add_argument("--frames", type=int, default=3, help="frames per run (default 3)")
    ap.add_argument("--repeats", type=int, default=5, help="runs of each, the best counts (default 5)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args(argv)
    if min(args.samples, args.frames, args.repeats, *args.size) < 1:
        ap.error("--size, --samples, --frames and --repeats must be at least 1")
    with tempfile.TemporaryDirectory(prefix="dr-bench-export-") as tmp, _render_output_silenced():
        res = run(args.size, args.samples, args.frames, args.repeats, tmp)
    print(json.dumps(res) if args.json else table(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
