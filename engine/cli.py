"""Command-line interface: `diffusion-renderer <command>` (also `python -m engine`)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
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


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=int, default=24, help="frames the model sees at once (default 24)")
    p.add_argument("--overlap", type=int, default=6, help="frames shared by neighbouring windows (default 6)")
    p.add_argument("--blend", default="latent", choices=["latent", "crossfade", "none"],
                   help="how overlapping windows are joined (default: fused in latent space at every step)")
    p.add_argument("--steps", type=int, default=20, help="denoising steps (default 20)")
    p.add_argument("--resolution", default=None, metavar="WxH",
                   help="processing size, multiples of 64 (default: cover 512 keeping the aspect)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0; -1 for a random seed)")
    p.add_argument("--decode-chunk", type=int, default=8, help="frames per VAE decode call (default 8)")
    p.add_argument("--decode-overlap", type=int, default=2, help="frames cross-faded between decode calls (2)")
    p.add_argument("--memory", default="default", choices=["default", "low-vram", "minimal"],
                   help="GPU memory mode: low-vram offloads idle models and chunks the UNet's feed-forward "
                        "(≈ 5 GB at 512², 24 frames); minimal streams weights layer by layer (slow); "
                        "see docs/PERFORMANCE.md")
    p.add_argument("--windows-per-segment", type=int, default=4,
                   help="windows fused together per resumable segment (default 4)")
    p.add_argument("--overwrite", action="store_true", help="replace a different set already in --out")
    p.add_argument("--no-previews", action="store_true", help="skip PNG previews and the mp4")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="diffusion-renderer",
                                 description="DiffusionRenderer engine: neural inverse and forward rendering.")
    ap.add_argument("--version", action="version", version=f"diffusion-renderer {__version__}")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("inverse", help="de-light footage into a G-buffer set (linear EXR sequences + manifest)")
    p.add_argument("input", type=Path, help="video file (mp4/mov/mkv…), folder of frames (png/jpg/exr/tiff), "
                                            "or a folder of such clips (batch)")
    p.add_argument("--out", type=Path, required=True, help="output folder (one sub-folder per clip in batch mode)")
    p.add_argument("--passes", default="basecolor,metallic,roughness,normal,depth",
                   help="comma-separated passes: basecolor, metallic, roughness, normal, depth, diffuse_albedo")
    p.add_argument("--frame-range", default=None, metavar="FIRST:LAST",
                   help="source frames to use, inclusive (frame numbers for sequences, 0-based for videos)")
    p.add_argument("--fps", type=float, default=None, help="resample the clip to this frame rate")
    _add_sampling_args(p)
    _add_model_args(p, "inverse")

    p = sub.add_parser("forward", help="render G-buffers under HDR environment maps (one relit set per HDRI)")
    p.add_argument("gbuffers", type=Path, help="a G-buffer set, a folder of Blender multilayer EXRs (+cameras.json), "
                                               "or the reference's <clip>/<chunk>.<frame>.<pass>.png layout")
    p.add_argument("--hdri", type=Path, action="append", required=True, metavar="FILE",
                   help="environment map (.hdr/.exr); repeat for several lights")
    p.add_argument("--out", type=Path, required=True, help="output folder (one sub-folder per HDRI)")
    p.add_argument("--lora-scale", type=float, default=0.25,
                   help="real-footage LoRA strength, 0–0.5 recommended; 0 for synthetic objects (default 0.25)")
    p.add_argument("--guidance", type=float, default=1.2, help="classifier-free guidance (1.0 = fast preview)")
    p.add_argument("--rotate-light", action="store_true", help="turn the light once around over the clip")
    p.add_argument("--fixed-frame", type=int, default=None, metavar="N",
                   help="use G-buffer frame N (0-based) for every frame (static scene, e.g. with --rotate-light)")
    p.add_argument("--elevation", type=float, default=0.0, help="camera elevation in degrees (reference sign)")
    p.add_argument("--elevation-convention", default="reference", choices=["reference", "correct"],
                   help="'reference': positive tilts the view up, as the original; 'correct': positive looks down")
    p.add_argument("--env-rotation", type=float, default=180.0, help="horizontal rotation of the HDRI (degrees)")
    p.add_argument("--env-strength", type=float, default=1.0, help="multiplier on the HDRI's radiance")
    p.add_argument("--env-flip", action="store_true", help="mirror the HDRI left–right")
    p.add_argument("--env-resolution", default="512x512", metavar="WxH", help="env-map size fed to the model")
    p.add_argument("--camera-follow", action="store_true",
                   help="use the set's per-frame camera poses so the light stays fixed in the world")
    _add_sampling_args(p)
    _add_model_args(p, "forward")

    p = sub.add_parser("seams", help="seam metric of a written set at the chunk boundaries of given window settings")
    p.add_argument("set", type=Path, help="a G-buffer or relit set folder")
    p.add_argument("--frames", type=int, default=24, help="window length the job used (default 24)")
    p.add_argument("--overlap", type=int, default=6, help="window overlap the job used (default 6)")

    p = sub.add_parser("conformance", help="re-run every case of a golden folder and compare with the recording")
    p.add_argument("golden", type=Path, help="golden folder (format of ../shared/golden)")
    p.add_argument("--only", default=None, help="run only suites whose folder name contains this text")

    p = sub.add_parser("download", help="download published weights through huggingface_hub")
    from engine.hub import add_download_arguments

    add_download_arguments(p)

    sub.add_parser("info", help="print versions, devices and locally available models as JSON")

    from engine.perf.bench_cli import add_bench_arguments, add_estimate_arguments

    add_bench_arguments(sub.add_parser("bench", help="speed, memory and FLOPs on random-weight models against the "
                                                     "reference's call pattern (docs/PERFORMANCE.md)"))
    add_estimate_arguments(sub.add_parser("estimate", help="predict a job's time and peak GPU memory from its size"))

    from engine.server.serve import add_serve_arguments

    add_serve_arguments(sub.add_parser("serve", help="run as the Blender add-on's engine: JSON lines on stdin/stdout "
                                                     "(docs/PROTOCOL.md)"))
    return ap


def _frame_range(text):
    if not text:
        return None
    try:
        a, b = (int(v) for v in text.split(":"))
    except ValueError:
        raise UserError(f"--frame-range {text!r}: expected FIRST:LAST, e.g. 1001:1048") from None
    if b < a:
        raise UserError(f"--frame-range {text}: LAST is before FIRST")
    return a, b


def _check_sampling(args) -> None:
    if min(args.frames, args.steps, args.decode_chunk, args.windows_per_segment) < 1:
        raise UserError("--frames, --steps, --decode-chunk and --windows-per-segment must be at least 1")
    if not 0 <= args.overlap < args.frames:
        raise UserError(f"--overlap must be between 0 and --frames − 1 ({args.frames - 1}), got {args.overlap}")


def _report(summary: dict, as_json: bool, what: str) -> None:
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    for c in summary["clips"]:
        w, h = c["resolution"]
        resumed = f", resumed {c['resumed_segments']}/{c['segments']} segments" if c.get("resumed_segments") else ""
        status = "up to date" if c["status"] == "up-to-date" else f"{c['seconds'].get('total', 0):.1f} s{resumed}"
        print(f"{what}: {c['clip']} → {c['out']}: {c['frames']} frames × {len(c['passes'])} passes at {w}x{h} "
              f"({status})")
        for warning in c.get("warnings", []):
            print(f"  warning: {warning}", file=sys.stderr)


def cmd_inverse(args) -> int:
    from engine.jobs.common import JobError, parse_resolution
    from engine.jobs.inverse_job import InverseSettings, run_inverse
    from engine.pipelines import PASS_INDEX

    passes = tuple(p.strip() for p in args.passes.split(",") if p.strip())
    bad = [p for p in passes if p not in PASS_INDEX]
    if bad or not passes:
        raise UserError(f"--passes: unknown pass {', '.join(bad) or '(none)'}; choose from {', '.join(PASS_INDEX)}")
    _check_sampling(args)
    try:
        settings = InverseSettings(
            passes=passes, model=args.model, revision=args.revision, frames=args.frames, overlap=args.overlap,
            steps=args.steps, resolution=parse_resolution(args.resolution), seed=None if args.seed == -1 else args.seed,
            device=args.device, dtype=args.dtype, decode_chunk=args.decode_chunk, decode_overlap=args.decode_overlap,
            memory=args.memory, blend=args.blend, frame_range=_frame_range(args.frame_range), fps=args.fps, overwrite=args.overwrite,
            windows_per_segment=args.windows_per_segment,
            previews=not args.no_previews)
        if not args.input.exists():
            raise UserError(f"{args.input}: input not found")
        summary = run_inverse(args.input, args.out, settings, show_progress=sys.stderr.isatty() or args.verbose)
    except JobError as exc:
        raise UserError(str(exc)) from None
    _report(summary, args.json, "inverse")
    return 0


def cmd_forward(args) -> int:
    from engine.jobs.common import JobError, parse_resolution
    from engine.jobs.forward_job import ForwardSettings, run_forward

    _check_sampling(args)
    try:
        env_res = parse_resolution(args.env_resolution, multiple=8)
        settings = ForwardSettings(
            model=args.model, revision=args.revision, lora_scale=args.lora_scale, guidance=args.guidance,
            rotate_light=args.rotate_light, fixed_frame=args.fixed_frame, elevation=args.elevation,
            elevation_convention=args.elevation_convention, env_rotation=args.env_rotation,
            env_strength=args.env_strength, env_flip=args.env_flip, camera_follow=args.camera_follow,
            env_resolution=(env_res[1], env_res[0]), frames=args.frames, overlap=args.overlap, steps=args.steps,
            resolution=parse_resolution(args.resolution), seed=None if args.seed == -1 else args.seed,
            device=args.device, dtype=args.dtype, decode_chunk=args.decode_chunk, decode_overlap=args.decode_overlap,
            memory=args.memory, blend=args.blend, overwrite=args.overwrite, previews=not args.no_previews,
            windows_per_segment=args.windows_per_segment)
        if args.guidance < 1.0:
            raise UserError("--guidance must be at least 1.0")
        summary = run_forward(args.gbuffers, args.hdri, args.out, settings,
                              show_progress=sys.stderr.isatty() or args.verbose)
    except JobError as exc:
        raise UserError(str(exc)) from None
    _report(summary, args.json, "forward")
    return 0


def cmd_seams(args) -> int:
    from engine.jobs.seam_report import seam_report

    if not 0 <= args.overlap < args.frames:
        raise UserError(f"--overlap must be between 0 and --frames − 1 ({args.frames - 1})")
    print(json.dumps(seam_report(args.set, args.frames, args.overlap), indent=2))
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
    from engine.perf.cpu_tuning import tune_malloc

    tune_malloc()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    handlers = {"inverse": cmd_inverse, "forward": cmd_forward, "seams": cmd_seams, "conformance": cmd_conformance, "info": cmd_info}
    try:
        if args.command == "serve":
            from engine.server.serve import main as serve_main

            return serve_main(args)
        if args.command in ("bench", "estimate"):
            from engine.perf import bench_cli

            return getattr(bench_cli, f"cmd_{args.command}")(args)
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
