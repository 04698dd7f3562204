"""``diffusion-renderer plan inverse|forward <the job's arguments> --json``: a job's units for a render farm.

A unit is one segment of one (clip × HDRI) (engine/jobs/units.py). Each *task* is a command line that computes
its units into the output folder's resume cache (``--only-segments K``: no outputs are written); the
*assemble* command is the job's own command, which finds every segment in the cache, blends and writes the
outputs. The tasks are independent (run them anywhere that sees the same files, in any order, at once); the
assemble task depends on all of them. A random seed (``--seed -1``) is fixed here, so every task computes the
same noise. docs/FARM.md has OpenCue and AWS Deadline Cloud templates built on this output."""
from __future__ import annotations

import json
import secrets
import shlex
from pathlib import Path

from engine.contract import params as P
from engine.jobs.units import RendererFacts

RUN_OPTIONS = ("cluster", "split", "only_segments", "json")     # how a job runs, not what it computes


def params_to_argv(kind: str, params: dict) -> list[str]:
    """The command-line arguments of ``params`` (the inverse of ``cli_options.params_from_args``)."""
    table = P.for_kind(kind)
    positional, options = [], []
    for name, value in params.items():
        p = table.get(name)
        if p is None or p.cli is None or value is None:
            continue
        if p.cli == "positional":
            positional.append(str(value))
        elif p.cli == "flag":
            options += [p.flag] if value else []
        elif p.cli == "no-flag":
            options += [] if value else [p.flag]
        elif p.cli == "list":
            options += [p.flag, ",".join(map(str, value))]
        elif p.cli in ("range", "ramp") and isinstance(value, (list, tuple)):
            options += [p.flag, ":".join(map(str, value))]
        elif p.cli == "append":
            for v in value:
                options += [p.flag, str(v)]
        else:
            options += [p.flag, str(value)]
    return [*positional, *options]


def _absolute(params: dict, kind: str) -> dict:
    out = dict(params)
    for name in ("input", "gbuffers", "out"):
        if out.get(name):
            out[name] = str(Path(out[name]).expanduser().absolute())
    if out.get("hdri"):
        out["hdri"] = [str(Path(h).expanduser().absolute()) for h in out["hdri"]]
    model = out.get("model")
    if model and Path(model).expanduser().exists():
        out["model"] = str(Path(model).expanduser().absolute())
    return out


def _command(kind: str, params: dict) -> dict:
    """``diffusion-renderer KIND …`` (the installed command; ``python -m engine`` runs the same)."""
    argv = ["diffusion-renderer", kind, *params_to_argv(kind, params)]
    return {"command": argv, "command_line": shlex.join(argv)}


def plan_job(kind: str, params: dict) -> dict:
    """The units, tasks and assemble command of the job ``kind`` with ``params`` (a validated params dict)."""
    from engine.jobs.common import JobError
    from engine.jobs.settings import build_settings
    from engine.jobs.units import forward_plan, inverse_plan, open_inverse_source

    if kind not in ("inverse", "forward"):
        raise JobError(f"plan: only inverse and forward jobs have units, not {kind!r}")
    params = _absolute({k: v for k, v in params.items() if k not in RUN_OPTIONS}, kind)
    if params.get("seed", 0) in (None, -1):
        params["seed"] = secrets.randbelow(2**31)          # every task must draw the same noise
    built = build_settings(kind, params)
    settings = built.settings
    facts = RendererFacts.from_checkpoint(kind, settings)
    units, tasks = [], {}

    def add(plan, task_params, clip_label, hdri=None):
        for k, (s, e) in enumerate(plan.segments):
            uid = f"{clip_label}{'/' + Path(hdri).stem if hdri else ''}/seg_{k:04d}"
            units.append({"id": uid, "clip": clip_label, "hdri": hdri, "segment": k, "frames": [s, e],
                          "steps": plan.segment_steps(k), "key": plan.key, "out": plan.out})
            cmd = _command(kind, {**task_params, "only_segments": [k]})       # --only-segments K last
            task = tasks.setdefault(cmd["command_line"], {"id": f"task{len(tasks):04d}", "segments": [k], **cmd,
                                                          "units": []})
            task["units"].append(uid)

    if kind == "inverse":
        from engine.io import find_clips

        input_path, out = built.inputs
        clips = find_clips(input_path)
        batch = len(clips) > 1 or (Path(input_path).is_dir() and clips[0] != Path(input_path))
        for clip in clips:
            target = out / (clip.stem if clip.is_file() else clip.name) if batch else out
            with open_inverse_source(clip, settings) as source:
                plan = inverse_plan(clip, target, settings, facts, source, exclude=(out,))
            add(plan, {**params, "input": str(clip), "out": str(target)}, Path(clip).name)
    else:
        from engine.jobs.forward_job import light_settings
        from engine.jobs.gbuffer_inputs import load_gbuffer_clips

        gbuffers, hdris, out = built.inputs
        clips = load_gbuffer_clips(gbuffers)
        lights = light_settings(settings, len(hdris))
        for clip in clips:
            for hdri, light in zip(hdris, lights):
                target = (out / clip.name if len(clips) > 1 else out) / Path(hdri).stem
                plan = forward_plan(clip, hdri, target, light, facts, exclude=(out,))
                add(plan, {**params, "hdri": [str(hdri)]}, clip.name, str(hdri))
    return {"kind": kind, "out": str(built.inputs[-1]), "seed": settings.seed, "units": units,
            "tasks": list(tasks.values()), "assemble": _command(kind, params),
            "note": "run every task (any order, at once), then the assemble command"}


def add_plan_arguments(parser) -> None:
    from engine.cli_options import add_job_arguments

    sub = parser.add_subparsers(dest="plan_kind", required=True, metavar="KIND")
    for kind in ("inverse", "forward"):
        add_job_arguments(sub.add_parser(kind, help=f"the units of an {kind} job"), kind)


def cmd_plan(args) -> int:
    from engine.cli_options import check_params, params_from_args
    from engine.errors import UserError

    kind = args.plan_kind
    params = params_from_args(kind, args)
    problems = check_params(kind, params)
    if problems:
        raise UserError(problems[0])
    plan = plan_job(kind, params)
    if args.json:
        print(json.dumps(plan, indent=2))
    else:
        for task in plan["tasks"]:
            print(f"{task['id']} ({', '.join(task['units'])}): {task['command_line']}")
        print(f"assemble (after every task): {plan['assemble']['command_line']}")
    return 0

