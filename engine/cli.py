"""Command-line interface: `diffusion-renderer <command>` (also `python -m engine`)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from engine import __version__

log = logging.getLogger("engine")


class UserError(Exception):
    """An error caused by the user's input or settings: printed as one line, no traceback."""


def _add_model_args(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--model", default=default,
                   help=f"published model name (inverse, forward, forward-objaverse) or a checkpoint folder "
                        f"(default: {default})")
    p.add_argument("--revision", default=None, help="hub revision (commit) to use instead of the pinned/recorded one")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 … (default: cuda when available)")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                   help="weights/compute precision (default: fp16 on CUDA, fp32 on CPU)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="diffusion-renderer",
                                 description="DiffusionRenderer engine: neural inverse and forward rendering.")
    ap.add_argument("--version", action="version", version=f"diffusion-renderer {__version__}")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("inverse", help="de-light a clip (folder of frames) into G-buffer passes")
    p.add_argument("input", type=Path, help="folder of frames (png/jpg/tiff), sorted by name")
    p.add_argument("--out", type=Path, required=True, help="output folder (created; existing files are kept)")
    p.add_argument("--passes", default="basecolor,metallic,roughness,normal,depth",
                   help="comma-separated passes: basecolor, metallic, roughness, normal, depth, diffuse_albedo")
    p.add_argument("--frames", type=int, default=24, help="frames per chunk (default 24)")
    p.add_argument("--steps", type=int, default=20, help="denoising steps (default 20)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--decode-chunk", type=int, default=8, help="frames per VAE decode call (default 8)")
    _add_model_args(p, "inverse")

    p = sub.add_parser("conformance", help="re-run every case of a golden folder and compare with the recording")
    p.add_argument("golden", type=Path, help="golden folder (format of ../shared/golden)")
    p.add_argument("--only", default=None, help="run only suites whose folder name contains this text")

    p = sub.add_parser("download", help="download published weights through huggingface_hub")
    from engine.hub import add_download_arguments

    add_download_arguments(p)

    sub.add_parser("info", help="print versions, devices and locally available models as JSON")
    return ap


def cmd_inverse(args) -> int:
    import numpy as np

    from engine.frames_io import list_images, read_frames, write_png
    from engine.pipelines import PASS_INDEX, InverseRenderer

    passes = [p.strip() for p in args.passes.split(",") if p.strip()]
    bad = [p for p in passes if p not in PASS_INDEX]
    if bad or not passes:
        raise UserError(f"--passes: unknown pass {', '.join(bad) or '(none)'}; choose from {', '.join(PASS_INDEX)}")
    if not args.input.exists():
        raise UserError(f"{args.input}: input not found")
    files = list_images(args.input)
    if not files:
        raise UserError(f"{args.input}: no frames found (png, jpg, tiff)")
    if args.frames < 1 or args.steps < 1:
        raise UserError("--frames and --steps must be at least 1")
    t0 = time.monotonic()
    renderer = InverseRenderer.from_pretrained(args.model, revision=args.revision, device=args.device,
                                               dtype=args.dtype, allow_download=True)
    t_load = time.monotonic() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm

    chunks = [files[s:s + args.frames] for s in range(0, len(files), args.frames)]
    bar = tqdm(total=len(chunks) * args.steps, desc="inverse", unit="step", file=sys.stderr,
               disable=not sys.stderr.isatty() and not args.verbose)
    for chunk in chunks:
        frames = read_frames(chunk)
        out = renderer(frames, passes, num_inference_steps=args.steps, seed=args.seed,
                       decode_chunk_size=args.decode_chunk, callback=lambda *a: bar.update(1) if a[0] < args.steps else None)
        for name, video in out.items():
            for src, img in zip(chunk, video):
                write_png(args.out / name / f"{src.stem}.{name}.png", np.asarray(img))
    bar.close()
    print(f"inverse: {len(files)} frames × {len(passes)} passes → {args.out} "
          f"(load {t_load:.1f} s, total {time.monotonic() - t0:.1f} s)")
    return 0


def cmd_conformance(args) -> int:
    from engine import conformance

    try:
        _, failed = conformance.run(args.golden, only=args.only)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from None
    return 1 if failed else 0


def cmd_info(args) -> int:
    import torch

    from engine.hub import describe_local_models

    info = {"engine": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
            "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
            "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
            "models": describe_local_models()}
    print(json.dumps(info, indent=2))
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    handlers = {"inverse": cmd_inverse, "conformance": cmd_conformance, "info": cmd_info}
    try:
        if args.command == "download":
            from engine.hub import run_download

            return run_download(args)
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("diffusion-renderer: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns errors into a clear line
        if args.verbose:
            raise
        from engine.errors import describe

        print(f"diffusion-renderer {args.command}: error: {describe(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
