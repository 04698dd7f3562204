#!/usr/bin/env python3
"""Submit a diffusion-renderer job to OpenCue from its plan (docs/FARM.md).

    diffusion-renderer plan inverse plate.mov --out gbuffers --json > plan.json
    python tools/farm/opencue_submit.py plan.json --show myshow --shot sh010          # submits
    python tools/farm/opencue_submit.py plan.json --dry-run                          # prints the layers

One OpenCue layer per task of the plan (its command: the job with ``--only-segments``; a one-frame range),
and an ``assemble`` layer that depends on every task layer (the same job without ``--only-segments``: it
finds every segment in the resume cache and writes the outputs). Tasks are idempotent, so a retried frame
recomputes only its own segments. Needs OpenCue's ``pyoutline`` (``outline``) to submit; ``--dry-run`` runs
anywhere (stdlib only).
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path


def load_plan(path) -> dict:
    """The ``plan --json`` output, checked: its ``tasks`` (each with a command) and its ``assemble`` command."""
    try:
        plan = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{path}: not a readable plan ({exc}); write it with "
                         "`diffusion-renderer plan inverse|forward ... --json > plan.json`") from None
    if not isinstance(plan, dict) or not plan.get("tasks") or not plan.get("assemble"):
        raise SystemExit(f"{path}: a plan needs 'tasks' and 'assemble' (the output of `diffusion-renderer plan ... "
                         "--json`)")
    return plan


def argv(command) -> list[str]:
    """A plan command (an argument list, a ``{"command": ...}`` record or a shell string) → argument list."""
    command = command.get("command") if isinstance(command, dict) else command
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def build_layers(plan: dict) -> list[dict]:
    """The layers to submit: ``{name, command, depends_on, type}``, the tasks in the plan's order, the assemble
    layer last."""
    tasks = [{"name": f"task{i:04d}", "command": argv(t), "depends_on": [], "type": "Render"}
             for i, t in enumerate(plan["tasks"])]
    assemble = {"name": "assemble", "command": argv(plan["assemble"]), "depends_on": [t["name"] for t in tasks],
                "type": "Render"}
    return tasks + [assemble]


def submit(layers: list[dict], *, name: str, show: str, shot: str, user: str | None, cores: float, tags: str):
    """Build the outline (one single-frame Shell layer per task, then assemble) and launch it."""
    try:
        import outline
        import outline.cuerun
        from outline.modules.shell import Shell
    except ImportError:
        raise SystemExit("OpenCue's pyoutline is not installed here (pip install opencue-pyoutline), or use "
                         "--dry-run to print the layers") from None
    job = outline.Outline(name, show=show, shot=shot, **({"user": user} if user else {}))
    made = {}
    for layer in layers:
        shell = Shell(layer["name"], command=layer["command"], range="1-1", chunk=1, type=layer["type"],
                      cores=cores, tags=tags)
        for dep in layer["depends_on"]:
            shell.depend_on(made[dep])
        job.add_layer(shell)
        made[layer["name"]] = shell
    return outline.cuerun.launch(job, use_pycuerun=False)


def main(args=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("plan", help="the output of `diffusion-renderer plan inverse|forward ... --json`")
    p.add_argument("--name", default=None, help="OpenCue job name (default: dr-<kind>-<output folder name>)")
    p.add_argument("--show", default="testing")
    p.add_argument("--shot", default="dr")
    p.add_argument("--user", default=None)
    p.add_argument("--cores", type=float, default=1.0, help="cores reserved per task (the GPU does the work)")
    p.add_argument("--tags", default="gpu", help="OpenCue host tags the tasks run on (default: gpu)")
    p.add_argument("--dry-run", action="store_true", help="print the layers instead of submitting")
    a = p.parse_args(args)
    plan = load_plan(a.plan)
    layers = build_layers(plan)
    name = a.name or re.sub(r"[^A-Za-z0-9_-]+", "_", f"dr-{plan.get('kind', 'job')}-{Path(plan.get('out', 'out')).name}")
    if a.dry_run:
        print(f"job {name}: {len(layers) - 1} task layer(s) + assemble")
        for layer in layers:
            after = f"  (after {len(layer['depends_on'])} layer(s))" if layer["depends_on"] else ""
            print(f"{layer['name']}: {shlex.join(layer['command'])}{after}")
        return 0
    submit(layers, name=name, show=a.show, shot=a.shot, user=a.user, cores=a.cores, tags=a.tags)
    print(f"submitted {name}: {len(layers) - 1} task layer(s) + assemble")
    return 0


if __name__ == "__main__":
    sys.exit(main())
