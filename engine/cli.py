"""Command-line interface: `diffusion-renderer <command>` (also `python -m engine`)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from engine import __version__
from engine.cli_options import add_job_arguments, check_params, params_from_args
from engine.contract.params import default
from engine.errors import UserError  # noqa: F401  (engine.cli.UserError: its historical home)

log = logging.getLogger("engine")
JOB_COMMANDS = {
    "inverse": "de-light footage into a G-buffer set (linear EXR sequences + manifest)",
    "forward": "render G-buffers under HDR environment maps (one relit set per HDRI)",
    "gbuffers": "convert a Blender render folder (multilayer EXRs + render.json) into a G-buffer set",
}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="diffusion-renderer",
                                 description="DiffusionRenderer engine: neural inverse and forward rendering.")
    ap.add_argument("--version", action="version", version=f"diffusion-renderer {__version__}")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for kind, text in JOB_COMMANDS.items():
        add_job_arguments(sub.add_parser(kind, help=text), kind)

    p = sub.add_parser("preview", help="relight one frame of a G-buffer set quickly (the add-on's Live Preview)")
    p.add_argument("set", metavar="SET", help="G-buffer set or Blender render folder (render.json)")
    p.add_argument("--hdri", required=True, metavar="FILE", help="environment map (.hdr/.exr)")
    p.add_argument("--frame", required=True, type=int, metavar="N", help="the frame number to relight")
    p.add_argument("--out", required=True, metavar="FILE", help="the .exr to write (linear); a .png beside it")
    add_job_arguments(p, "preview")

    p = sub.add_parser("seams", help="seam metric of a written set at the chunk boundaries of given window settings")
    p.add_argument("set", type=Path, help="a G-buffer or relit set folder")
    p.add_argument("--frames", type=int, default=default("frames"),
                   help=f"window length the job used (default {default('frames')})")
    p.add_argument("--overlap", type=int, default=default("overlap"),
                   help=f"window overlap the job used (default {default('overlap')})")

    p = sub.add_parser("conformance", help="re-run every case of a golden folder and compare with the recording")
    p.add_argument("golden", type=Path, help="golden folder (format of ../shared/golden)")
    p.add_argument("--only", default=None, help="run only suites whose folder name contains this text")

    p = sub.add_parser("download", help="download published weights through huggingface_hub")
    from engine.hub import add_download_arguments

    add_download_arguments(p)

    sub.add_parser("info", help="print versions, devices and locally available models as JSON")

    from engine.jobs.estimate_cli import add_estimate_arguments
    from engine.perf.bench_cli import add_bench_arguments

    add_bench_arguments(sub.add_parser("bench", help="speed, memory and FLOPs on random-weight models against the "
                                                     "reference's call pattern (docs/PERFORMANCE.md)"))
    add_estimate_arguments(sub.add_parser("estimate", help="predict a job's time and peak GPU memory from its size"))

    from engine.jobs.farm_plan import add_plan_arguments

    add_plan_arguments(sub.add_parser("plan", help="a job's units for a render farm: one command per segment "
                                                   "(--only-segments) and the assemble command (docs/FARM.md)"))

    from engine.server.serve import add_serve_arguments

    add_serve_arguments(sub.add_parser("serve", help="run as the Blender add-on's engine: JSON lines on stdin/stdout "
                                                     "(docs/PROTOCOL.md)"))
    return ap


def _report(summary: dict, as_json: bool, what: str) -> None:
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    for c in summary["clips"]:
        w, h = c["resolution"]
        resumed = f", resumed {c['resumed_segments']}/{c['segments']} segments" if c.get("resumed_segments") else ""
        status = "up to date" if c["status"] == "up-to-date" else f"{c['seconds'].get('total', 0):.1f} s{resumed}"
        if c["status"] == "segments-cached":     # --only-segments: a farm task (docs/FARM.md)
            status = (f"segments {','.join(map(str, c.get('cached_segments', [])))} of {c['segments']} in the resume "
                      "cache; no outputs yet")
        print(f"{what}: {c['clip']} → {c['out']}: {c['frames']} frames × {len(c['passes'])} passes at {w}x{h}"
              f"{_framing_note(c.get('framing'))} ({status})")
        for warning in c.get("warnings", []):
            print(f"  warning: {warning}", file=sys.stderr)


def _framing_note(framing) -> str:
    """', processed at 960x512 (padded 25,0,25,0)' when the model ran at another size than the output."""
    if not framing or list(framing.get("processing", [])) == list(framing.get("output", [])):
        return ""
    pw, ph = framing["processing"]
    how = {"pad": f"padded {','.join(map(str, framing.get('padding', [])))}", "crop": "cropped",
           "stretch": "stretched"}.get(framing.get("fit"), framing.get("fit"))
    return f", processed at {pw}x{ph} ({how})"


def cmd_job(args) -> int:
    """inverse / forward / gbuffers: options → the protocol's params → the same checks and settings as a
    submit from the add-on (engine/jobs/settings.py)."""
    from engine.jobs.settings import build_settings

    kind = args.command
    params = params_from_args(kind, args)           # OptionError names the option
    problems = check_params(kind, params)
    if problems:
        raise UserError(problems[0])
    built = build_settings(kind, params)
    summary = built.run(*built.inputs, built.settings, show_progress=sys.stderr.isatty() or args.verbose)
    _report(summary, args.json, kind)
    return 0


def cmd_preview(args) -> int:
    """`preview`: the same params, checks and code as the protocol's "preview" request."""
    from engine.jobs.preview_job import run_preview

    params = params_from_args("preview", args)
    problems = check_params("preview", params)
    if problems:
        raise UserError(problems[0])
    out = Path(args.out).expanduser().absolute()
    summary = run_preview(Path(args.set).expanduser(), Path(args.hdri).expanduser(), args.frame, out, params)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        w, h = summary["size"]
        print(f"preview: frame {summary['frame']} (window {summary['frames'][0]}..{summary['frames'][1]}) at {w}x{h}, "
              f"{summary['steps']} steps → {out} ({summary['latency_s']:.2f} s)")
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
        raise UserError(str(exc)) from exc
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
    handlers = {**dict.fromkeys(JOB_COMMANDS, cmd_job), "seams": cmd_seams, "preview": cmd_preview,
                "conformance": cmd_conformance,
                "info": cmd_info}
    try:
        if args.command == "serve":
            from engine.server.serve import main as serve_main

            return serve_main(args)
        if args.command == "bench":
            from engine.perf.bench_cli import cmd_bench

            return cmd_bench(args)
        if args.command == "estimate":
            from engine.jobs.estimate_cli import cmd_estimate

            return cmd_estimate(args)
        if args.command == "plan":
            from engine.jobs.farm_plan import cmd_plan

            return cmd_plan(args)
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
