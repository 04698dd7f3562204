"""Benchmark: the G-buffer export against a bare render of the same passes (run by ``bin/bench-export`` with
the bpy venv's Python; speed figures live here, not in the tests).

Scene: the add-on's procedural demo scene (``diffusion_renderer_addon.demo_scene``), Cycles on the CPU, in
this process, 512², 3 frames by default. For each sample count (1, 4 and 16 spp by default), best of
``--repeats`` runs each, export and bare render alternating, wall-clock and process CPU time:

* **export** — ``export.export_gbuffers`` as the add-on runs it: settings, passes and shader AOVs set up,
  every frame rendered and written by Blender (one multilayer EXR, codec ``gbuffer_export.EXR_CODEC``),
  cameras recorded, render.json written, the scene restored;
* **bare render** — the same scene with the same passes (Combined, Z, Normal, the three view-layer AOVs;
  no material injection, no camera records) set up once, untimed, then one ``render.render(write_still=True)``
  per frame into Blender's default multilayer EXR (32-bit float, ZIP).

``export_over_render`` = export / bare wall time: what the export costs on top of rendering. The headline
is the first sample count (1 spp: where the overhead shows most). ``--codecs NONE,ZIP,…`` also times the
export with each EXR codec (how ``EXR_CODEC`` was chosen). Process CPU time is less sensitive to other load
on the machine than wall time; a busy machine still skews both.

    bin/bench-export [--size 512] [--frames 3] [--samples 1,4,16] [--repeats 3] [--codecs NONE,ZIP] [--json]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="dr-bench-user-"))


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h or w)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _scene(size, frames: int):
    import bpy

    from diffusion_renderer_addon.demo_scene import build_demo_scene

    bpy.ops.wm.read_factory_settings(use_empty=True)
    return build_demo_scene(frames=frames, resolution=size, name="DR Bench")


def _timed(fn) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def _mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*.exr")) / 1e6


def export_once(size, frames: int, samples: int, out: Path, codec: str | None = None) -> tuple[float, float, float]:
    """One export of a fresh demo scene: (wall s, CPU s, MB written)."""
    from diffusion_renderer_addon.export import export_gbuffers, gbuffer_export

    scene = _scene(size, frames)
    shutil.rmtree(out, ignore_errors=True)
    saved = getattr(gbuffer_export, "EXR_CODEC", None)
    if codec:
        gbuffer_export.EXR_CODEC = codec
    try:
        wall, cpu = _timed(lambda: export_gbuffers(scene, out, samples=samples, overwrite=True, background=False))
    finally:
        if codec:
            gbuffer_export.EXR_CODEC = saved
    return wall, cpu, _mb(out)


def bare_once(size, frames: int, samples: int, out: Path) -> tuple[float, float, float]:
    """The same scene and passes rendered the plain way (set-up untimed): (wall s, CPU s, MB written)."""
    import bpy

    from diffusion_renderer_addon import compat
    from diffusion_renderer_addon.export import aov_injection

    scene = _scene(size, frames)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    vl, r = scene.view_layers[0], scene.render
    r.engine, scene.cycles.samples, scene.cycles.use_denoising = "CYCLES", samples, False
    scene.cycles.filter_width, r.film_transparent = 0.01, True
    r.use_compositing = r.use_sequencer = False
    compat.set_exr_format(r.image_settings, multilayer=True, color_depth="32", codec="ZIP")  # Blender's default
    vl.use_pass_z = vl.use_pass_normal = True
    for key, kind in aov_injection.AOV_TYPES.items():  # the same passes in the file (no material injection)
        aov = vl.aovs.add()
        aov.name, aov.type = key, kind

    def render_all():
        with bpy.context.temp_override(scene=scene, view_layer=vl):
            for f in range(scene.frame_start, scene.frame_end + 1):
                scene.frame_set(f)
                r.filepath = str(out / f"bare_{f:06d}.exr")
                bpy.ops.render.render(write_still=True, layer=vl.name)
    wall, cpu = _timed(render_all)
    return wall, cpu, _mb(out)


def _best(runs) -> dict:
    return {"wall": min(r[0] for r in runs), "cpu": min(r[1] for r in runs),
            "mb_per_frame": None if not runs else runs[0][2]}


def run(size=(512, 512), frames: int = 3, samples=(1, 4, 16), repeats: int = 3, codecs=(), workdir=None) -> dict:
    import bpy

    from diffusion_renderer_addon.export import gbuffer_export

    tmp = Path(workdir or tempfile.mkdtemp(prefix="dr-bench-export-"))
    export_once(size, 1, 1, tmp / "warm")                   # kernels loaded, caches filled
    result = {"blender": bpy.app.version_string, "size": list(size), "frames": frames, "repeats": repeats,
              "cpus": os.cpu_count(), "codec": getattr(gbuffer_export, "EXR_CODEC", None), "bare_codec": "ZIP", "samples": {}}
    for spp in samples:
        exports, bares = [], []
        for _ in range(repeats):                            # alternating: drifting load hits both alike
            exports.append(export_once(size, frames, spp, tmp / "export"))
            bares.append(bare_once(size, frames, spp, tmp / "bare"))
        exp, bare = _best(exports), _best(bares)
        for d in (exp, bare):
            d["mb_per_frame"] = round(d["mb_per_frame"] / frames, 2)
        result["samples"][str(spp)] = {"export": exp, "bare": bare, "export_over_render": exp["wall"] / bare["wall"],
                                       "export_over_render_cpu": exp["cpu"] / bare["cpu"]}
    result["export_over_render"] = result["samples"][str(samples[0])]["export_over_render"]
    result["headline_samples"] = samples[0]
    if codecs:
        spp = samples[0]
        result["codecs"] = {}
        for codec in codecs:
            runs = [export_once(size, frames, spp, tmp / f"codec_{codec}", codec) for _ in range(repeats)]
            best = _best(runs)
            best["mb_per_frame"] = round(best["mb_per_frame"] / frames, 2)
            result["codecs"][codec] = best
    return result


def table(res: dict) -> str:
    w, h = res["size"]
    rows = [f"G-buffer export vs bare render — Blender {res['blender']}, {w}×{h}, {res['frames']} frames, best of "
            f"{res['repeats']} ({res['cpus']} CPUs); export codec {res['codec']}, bare {res['bare_codec']}",
            f"{'spp':>4} {'export ms':>10} {'bare ms':>9} {'export/bare':>12} {'CPU ratio':>10} {'MB/frame exp':>13} "
            f"{'MB/frame bare':>14}"]
    for spp, s in res["samples"].items():
        rows.append(f"{spp:>4} {s['export']['wall'] * 1e3:10.0f} {s['bare']['wall'] * 1e3:9.0f} "
                    f"{s['export_over_render']:12.2f} {s['export_over_render_cpu']:10.2f} "
                    f"{s['export']['mb_per_frame']:13.1f} {s['bare']['mb_per_frame']:14.1f}")
    for codec, c in (res.get("codecs") or {}).items():
        rows.append(f"export with codec {codec:6} ({res['headline_samples']} spp): {c['wall'] * 1e3:7.0f} ms wall, "
                    f"{c['cpu'] * 1e3:7.0f} ms CPU, {c['mb_per_frame']:.1f} MB/frame")
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
    ap.add_argument("--size", type=_size, default=(512, 512), help="N or WxH pixels (default 512)")
    ap.add_argument("--samples", type=_ints, default=[1, 4, 16], help="Cycles samples per pixel, comma-separated; "
                    "the first is the headline (default 1,4,16)")
    ap.add_argument("--frames", type=int, default=3, help="frames per run (default 3)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each, the best counts (default 3)")
    ap.add_argument("--codecs", default="", help="also time the export with these EXR codecs (e.g. NONE,ZIP,PIZ)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args(argv)
    if not args.samples or min(*args.samples, args.frames, args.repeats, *args.size) < 1:
        ap.error("--size, --samples, --frames and --repeats must be at least 1")
    codecs = [c.strip().upper() for c in args.codecs.split(",") if c.strip()]
    with tempfile.TemporaryDirectory(prefix="dr-bench-export-") as tmp, _render_output_silenced():
        res = run(args.size, args.frames, args.samples, args.repeats, codecs, tmp)
    print(json.dumps(res) if args.json else table(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
