"""The ``estimate`` command: a job's predicted time and peak memory from its size (the traced cost model through
:func:`engine.jobs.job_estimate.estimate_job`); options and defaults from the contract's parameter table."""
from __future__ import annotations

import argparse
import json

from engine.contract import params as _P
from engine.cli_options import size_argument


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
    p.add_argument("--json", action="store_true")


def cmd_estimate(args) -> int:
    from engine.jobs.job_estimate import estimate_job

    params = {"steps": args.steps, "frames": args.window, "overlap": args.overlap, "memory": args.memory,
              "device": args.device, "dtype": args.dtype, "guidance": args.guidance, "resolution": args.resolution}
    w, h = args.size
    est = estimate_job(args.kind, {"width": w, "height": h, "frames": args.frames, "passes": args.passes,
                                   "lights": args.lights}, params)
    if args.json:
        print(json.dumps(est, indent=2))
        return 0
    fits = "" if "fits" not in est else f" of {est['device_memory_gb']} GB ({'fits' if est['fits'] else 'does NOT fit'})"
    print(f"{args.kind}: ≈ {est['seconds']:.0f} s, peak ≈ {est['peak_memory_gb']} GB{fits} on {est['device']} "
          f"({est['dtype']}, memory mode {est['memory']}); {est['unet_evals']} UNet calls of batch {est['unet_batch']} "
          f"over {est['windows']} window(s), {est['unet_tflop']} TFLOP; throughput profile: {est['profile']}")
    return 0
