"""Command-line front end of ``diffusion-renderer bench`` (arguments, table, JSON)."""
from __future__ import annotations

import argparse
import json
import sys

from engine.cli_options import size_argument
from engine.contract import params as _P
from engine.perf.bench import DEFAULT_VARIANTS, VARIANTS


def _variants(text: str) -> tuple[str, ...]:
    if text in ("", "none"):
        return ()
    if text == "all":
        return VARIANTS
    names = tuple(v.strip().replace("-", "_") for v in text.split(",") if v.strip())
    bad = [v for v in names if v not in VARIANTS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown variant(s) {', '.join(bad)}; choose from {', '.join(VARIANTS)}, "
                                         "'all' or 'none'")
    return names


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tiny", action="store_true", help="tiny random models (seconds on a CPU) instead of the "
                   "full-size published configurations")
    p.add_argument("--preview", action="store_true", help="time the live preview instead: seconds per update after "
                   "a rotation of the light, against its denoising loop (docs/PERFORMANCE.md)")
    p.add_argument("--cluster", default=None, metavar="local:N|auto|ADDRESS",
                   help="time the tiny-model inverse and forward jobs on one cluster worker and on this cluster, in "
                        "the same run: the speed-up and whether the outputs are bit-identical (docs/CLUSTER.md)")
    p.add_argument("--split", default="segments", choices=("segments", "windows", "auto"),
                   help="with --cluster: how the jobs are split across the workers (default segments)")
    p.add_argument("--resolution", type=size_argument, default=None, metavar="WxH",
                   help="frame size (default 512x512; with --preview 384x256)")
    p.add_argument("--frames", type=int, default=None, help=f"frames per clip (default {_P.default('frames')}; with "
                   f"--preview the preview window, {_P.default('preview_frames', _P.PREVIEW)})")
    p.add_argument("--steps", type=int, default=None, help=f"denoising steps (default {_P.default('steps')}; with "
                   f"--preview {_P.default('steps', _P.PREVIEW)})")
    p.add_argument("--env-resolution", type=size_argument, default=None, metavar="WxH",
                   help="env-map size (default 512x512 full-size, the frame size with --tiny)")
    p.add_argument("--device", default=_P.default("device"), help=_P.param("device").help)
    p.add_argument("--dtype", default=_P.default("dtype"), choices=_P.param("dtype").choices, help=_P.param("dtype").help)
    p.add_argument("--repeats", type=int, default=1, help="timed runs per case after one warm-up (fastest reported)")
    p.add_argument("--variants", type=_variants, default=DEFAULT_VARIANTS, metavar="LIST",
                   help=f"extra cases: comma list of {', '.join(VARIANTS)}; 'all' or 'none' "
                        f"(default {','.join(DEFAULT_VARIANTS)})")
    p.add_argument("--no-reference", action="store_true", help="skip the reference-pattern cases")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP count (one extra 1-step call per case)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--out", default=None, help="also write the JSON report to this file")
    p.add_argument("--save-profile", action="store_true", help="store the measured throughput for the cost model "
                   "(`estimate`, the add-on's warnings); full-size runs only")


def _fmt(v, nd=3):
    return "-" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def format_table(r: dict) -> str:
    head = ["case", "wall s", "spread", "cpu s", "envmap", "env enc", "vae enc", "unet", "decode", "UNet evals (items)",
            "peak GB", "UNet TFLOP/s", "of peak"]
    rows = [head]
    for name, c in r["cases"].items():
        st = c["stages"]
        util = c.get("unet_utilisation")
        spread = c.get("wall_spread")
        rows.append([name, _fmt(c["wall_seconds"]), "-" if spread is None else f"+{100 * spread:.0f} %",
                     _fmt(c.get("cpu_seconds")), _fmt(st["envmap"]),
                     _fmt(st["env_encode"]), _fmt(st["vae_encode"]), _fmt(st["unet"]), _fmt(st["decode"]),
                     f"{c['unet_evals']} ({c['unet_batch_items']})", _fmt(c["peak_memory_gb"], 2),
                     _fmt(c.get("unet_tflops_per_s"), 3), "-" if util is None else f"{100 * util:.0f} %"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    w, h = r["resolution"]
    title = (f"{r['size']} models, {w}x{h}, {r['frames']} frames, {r['steps']} steps, env {r['env_resolution'][0]}x"
             f"{r['env_resolution'][1]} — {r['device_name']} ({r['device']}, {r['dtype']}, {r['threads']} threads); "
             f"peak {r['peak_tflops']} TFLOP/s ({r['peak_source']}); attention: {', '.join(r['attention'])}")
    summary = [f"{k}: {_fmt(r.get(k))}" for k in ("forward_over_inverse", "batched_speedup_5_passes",
                                                 "reference_forward_over_inverse", "five_passes_over_one",
                                                 "two_hdris_over_one")]
    speed = ", ".join(f"{k} ×{_fmt(v, 2)}" for k, v in r.get("speedups", {}).items())
    note = ("wall s: the fastest of the timed runs; spread: how much slower the slowest was (timing noise: "
            "compare ratios only where it is small)")
    return "\n".join([title, "", *lines, "", *summary, f"speed-up over the reference pattern: {speed or '-'}", note])


def cmd_bench(args) -> int:
    import torch

    from engine.atomic import atomic_write_text
    from engine.perf.bench import run_bench

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cluster:
        return _cmd_bench_cluster(args, (lambda *a: print(*a, file=sys.stderr)) if args.json else print)
    kind = _P.PREVIEW if args.preview else None
    args.frames = args.frames if args.frames is not None else _P.default("preview_frames" if kind else "frames", kind)
    args.steps = args.steps if args.steps is not None else _P.default("steps", kind)
    args.resolution = args.resolution or ((384, 256) if args.preview else (512, 512))
    for name in ("frames", "steps", "repeats"):
        if getattr(args, name) < 1:
            raise SystemExit(f"diffusion-renderer bench: --{name} must be at least 1")
    if args.save_profile and args.tiny:
        raise SystemExit("diffusion-renderer bench: --save-profile needs full-size models (drop --tiny)")
    w, h = args.resolution
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    if args.preview:
        return _cmd_bench_preview(args, log)
    report = run_bench(size="tiny" if args.tiny else "full", width=w, height=h, frames=args.frames, steps=args.steps,
                       device=args.device, dtype=args.dtype, repeats=args.repeats, variants=args.variants,
                       reference=not args.no_reference, flops=not args.no_flops,
                       env_resolution=(args.env_resolution[1], args.env_resolution[0]) if args.env_resolution else None,
                       log=log)
    text = json.dumps(report, indent=2)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    if args.save_profile:
        from engine.perf.cost_model import profile_from_bench, save_profile

        log(f"throughput profile saved to {save_profile(profile_from_bench(report))}")
    print(text if args.json else format_table(report))
    return 0


def _cmd_bench_preview(args, log) -> int:
    from engine.atomic import atomic_write_text
    from engine.perf.bench import run_preview_bench

    w, h = args.resolution
    r = run_preview_bench(size="tiny" if args.tiny else "full", width=w, height=h, frames=args.frames,
                          steps=args.steps, device=args.device, dtype=args.dtype, repeats=max(args.repeats, 3),
                          env_resolution=(args.env_resolution[1], args.env_resolution[0]) if args.env_resolution
                          else None, log=log)
    text = json.dumps(r, indent=2)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    if args.json:
        print(text)
        return 0
    st = r["stages"]
    print(f"preview, {r['size']} models, {w}x{h}, {r['frames']} frames, {r['steps']} steps — {r['device_name']} "
          f"({r['device']}, {r['dtype']}, {r['threads']} threads)\n"
          f"first preview (caches cold, model warm): {r['first_s']:.3f} s\n"
          f"update after a rotation: {r['update_s']:.3f} s = {r['update_over_denoise']:.2f} × the denoising loop "
          f"({r['denoise_s']:.3f} s); encode {st['encode']:.3f} s, decode {st['decode']:.3f} s, write "
          f"{st['write']:.3f} s, inputs {st['inputs']:.3f} s")
    return 0


def _cmd_bench_cluster(args, log) -> int:
    """``bench --cluster``: the tiny-model jobs (engine/perf/cluster_bench.py); the size options apply, the
    defaults are the cluster test's (64², 40 frames, 4 steps, windows of 8 overlapping 2)."""
    from engine.atomic import atomic_write_text
    from engine.perf.cluster_bench import ClusterBenchUnavailable, format_cluster_report, run_cluster_bench

    w, h = args.resolution or (64, 64)
    try:
        r = run_cluster_bench(args.cluster, split=args.split, width=w, height=h, frames=args.frames or 40,
                              steps=args.steps or 4, log=log)
    except ClusterBenchUnavailable as exc:
        raise SystemExit(f"diffusion-renderer {exc}") from None
    text = json.dumps(r, indent=2)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    print(text if args.json else format_cluster_report(r))
    return 0
