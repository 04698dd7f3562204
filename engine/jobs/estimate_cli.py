"""The ``estimate`` command: a job's predicted time and peak memory from its size (the traced cost model through
:func:`engine.jobs.job_estimate.estimate_job`); options and defaults from the contract's parameter table."""
from __future__ import annotations

import argparse
import json

from engine.contract import params as _P
from engine.cli_options import size_argument
from engine.perf.cluster_cost import SPLITS


def add_estimate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=["inverse", "forward"])
    p.add_argument("--size", type=size_argument, required=True, metavar="WxH", help="input clip size (e.g. 1920x1080)")
    p.add_argument("--frames", type=int, required=True, help="frames in the clip")
    p.add_argument("--passes", type=int, default=len(_P.default("passes", "inverse")),
                   help=f"inverse passes (default {len(_P.default('passes', 'inverse'))})")
    p.add_argument("--lights", type=int, default=1, help="forward HDRIs (default 1)")
    p.add_argument("--resolution", default=_P.default("resolution"), metavar="WxH", help=_P.param("resolution").help)
    p.add_argument("--steps", type=int, default=_P.default("steps"), help=_P.param("steps").help)
    p.add_argument("--window", type=int, default=_P.default("frames"), help=_P.param("frames").help)
    p.add_argument("--overlap", type=int, default=_P.default("overlap"), help=_P.param("overlap").help)
    p.add_argument("--guidance", type=float, default=_P.default("guidance", "forward"),
                   help=_P.param("guidance", "forward").help)
    p.add_argument("--memory", default=_P.default("memory"), choices=_P.param("memory").choices,
                   help=_P.param("memory").help)
    p.add_argument("--device", default=_P.default("device"), help="the device to predict for (cuda works without a GPU here)")
    p.add_argument("--dtype", default=_P.default("dtype"), choices=_P.param("dtype").choices)
    p.add_argument("--gpus", type=_gpu_counts, default=(1,), metavar="N[,N...]",
                   help="predict for N GPUs on a cluster (docs/CLUSTER.md); a list (1,2,4,8) prints one row each")
    p.add_argument("--split", default="auto", choices=SPLITS,
                   help="how the cluster splits the job: segments, windows of a segment, or auto (the faster)")
    p.add_argument("--windows-per-segment", type=int, default=_P.default("windows_per_segment"),
                   help=_P.param("windows_per_segment").help)
    p.add_argument("--json", action="store_true")


def _gpu_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"--gpus {text!r}: expected GPU counts of at least 1, e.g. 4 or 1,2,4,8")
    return counts


def cmd_estimate(args) -> int:
    from engine.jobs.job_estimate import estimate_job

    params = {"steps": args.steps, "frames": args.window, "overlap": args.overlap, "memory": args.memory,
              "device": args.device, "dtype": args.dtype, "guidance": args.guidance, "resolution": args.resolution,
              "windows_per_segment": args.windows_per_segment}
    w, h = args.size
    size = {"width": w, "height": h, "frames": args.frames, "passes": args.passes, "lights": args.lights}
    if args.gpus != (1,):
        rows = [estimate_job(args.kind, size, params, gpus=n, split=args.split) for n in args.gpus]
        print(json.dumps(rows, indent=2) if args.json else format_gpu_table(args.kind, rows))
        return 0
    est = estimate_job(args.kind, size, params)
    if args.json:
        print(json.dumps(est, indent=2))
        return 0
    fits = "" if "fits" not in est else f" of {est['device_memory_gb']} GB ({'fits' if est['fits'] else 'does NOT fit'})"
    print(f"{args.kind}: ≈ {est['seconds']:.0f} s, peak ≈ {est['peak_memory_gb']} GB{fits} on {est['device']} "
          f"({est['dtype']}, memory mode {est['memory']}); {est['unet_evals']} UNet calls of batch {est['unet_batch']} "
          f"over {est['windows']} window(s), {est['unet_tflop']} TFLOP; throughput profile: {est['profile']}")
    return 0


def format_gpu_table(kind: str, rows: list[dict]) -> str:
    """One Markdown row per GPU count (docs/PERFORMANCE.md's cluster table is this output)."""
    first = rows[0]
    what = f"{first['lights']} HDRIs" if first.get("lights") else f"{first['unet_batch']} passes per UNet batch"
    lines = [f"{kind}, {what}, {first['windows']} windows; {first['device']} ({first['dtype']}), throughput profile: "
             f"{first['profile']}", "",
             "| GPUs | split | units | start-up s | compute s | total s | speed-up | efficiency |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r.get("cluster")
        if c is None:
            lines.append(f"| 1 | — (no cluster) | — | 0 | {r['seconds']:.0f} | {r['seconds']:.0f} | ×1.00 | 100 % |")
            continue
        lines.append(f"| {c['gpus']} | {c['split']} | {c['units']} | {c['startup_s']:.0f} | {c['compute_s']:.0f} | "
                     f"{c['seconds']:.0f} | ×{c['speedup']:.2f} | {100 * c['efficiency']:.0f} % |")
    return "\n".join(lines)
