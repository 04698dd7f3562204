"""``diffusion-renderer bench --cluster local:N``: the tiny-model jobs on one cluster worker and on N workers in
the same run, their speed-up, and whether their outputs are bit-identical.

Tiny random checkpoints, a synthetic clip (inverse, 5 passes) and a synthetic G-buffer set with two synthetic
HDRIs (forward) are written to a temporary folder; each job then runs through ``run_inverse`` /
``run_forward`` with ``settings.cluster`` = ``local:1`` and = the asked cluster (``settings.split`` as
asked), each into its own output folder. Wall seconds include the cluster's start-up (Ray, the worker
processes, each worker's model load) — reported apart as ``startup_s`` where the job summary gives it.
"""
from __future__ import annotations

import dataclasses
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from engine.contract.gbuffer_set import FORWARD_PASSES

KINDS = ("inverse", "forward")


class ClusterBenchUnavailable(RuntimeError):
    """The jobs cannot run on a cluster in this engine."""


def _needs_cluster_setting(kind: str) -> None:
    from engine.jobs.settings import settings_class

    names = {f.name for f in dataclasses.fields(settings_class(kind)[0])}
    if not {"cluster", "split"} <= names:
        raise ClusterBenchUnavailable("bench --cluster: this engine's jobs have no cluster/split settings yet "
                           "(issue 14, the jobs' cluster wiring); run bench without --cluster")


def _write_inputs(root: Path, frames: int, width: int, height: int) -> dict:
    from engine.envmap import write_hdr
    from engine.gbuffer import GBufferSetWriter, make_provenance
    from engine.io.images import write_png
    from engine.perf.bench import synthetic_hdri
    from engine.random_checkpoint import write_random_checkpoint

    rng = np.random.default_rng(0)
    clip = root / "clip"
    clip.mkdir()
    for i in range(frames):
        write_png(clip / f"frame_{i + 1:04d}.png", rng.random((height, width, 3), dtype=np.float32))
    w = GBufferSetWriter(root / "set", {"fps": 24, "depth": {"kind": "normalised"},
                                        "provenance": make_provenance("bench", source="synthetic")})
    for i in range(frames):
        for p in FORWARD_PASSES:
            value = rng.random((height, width, 3), dtype=np.float32)
            value = value * 2 - 1 if p == "normal" else value
            w.write_frame(p, i + 1, value if p in ("basecolor", "normal") else value[..., 0])
    w.finish()
    hdris = []
    for k in (1, 2):
        hdris.append(root / f"sky{k}.hdr")
        write_hdr(hdris[-1], synthetic_hdri(k, 32))
    return {"clip": clip, "set": root / "set", "hdris": hdris,
            "inverse": write_random_checkpoint(root / "ckpt-inv", "inverse"),
            "forward": write_random_checkpoint(root / "ckpt-fwd", "forward")}


def _outputs(out: Path) -> dict:
    """Every output image's pixels by relative path (EXR channels, or the file's bytes otherwise)."""
    from engine.io.exr import read_exr

    files = {}
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out)
        if not p.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        if p.suffix.lower() == ".exr":
            files[str(rel)] = read_exr(p)
        elif p.suffix.lower() in (".png", ".jpg"):
            files[str(rel)] = p.read_bytes()
    return files


def _identical(a: dict, b: dict) -> bool:
    if a.keys() != b.keys() or not a:
        return False
    for k, x in a.items():
        y = b[k]
        if isinstance(x, bytes):
            if x != y:
                return False
        elif x.keys() != y.keys() or any(not np.array_equal(x[c], y[c]) for c in x):
            return False
    return True


def _run(kind: str, inputs: dict, out: Path, params: dict) -> tuple[float, dict]:
    from engine.jobs.settings import settings_class

    cls, run = settings_class(kind)
    names = {f.name for f in dataclasses.fields(cls)}
    settings = cls(**{k: v for k, v in params.items() if k in names}, model=str(inputs[kind]))
    t0 = time.perf_counter()
    if kind == "inverse":
        summary = run(inputs["clip"], out, settings, show_progress=False)
    else:
        summary = run(inputs["set"], inputs["hdris"], out, settings, show_progress=False)
    return time.perf_counter() - t0, summary


def run_cluster_bench(cluster: str = "local:2", *, kinds=KINDS, split: str = "segments", frames: int = 40,
                      width: int = 64, height: int = 64, steps: int = 4, window: int = 8, overlap: int = 2,
                      windows_per_segment: int = 1, log=print) -> dict:
    """Each job in ``kinds`` with one worker (``local:1``) and on ``cluster``; returns one JSON-able dict."""
    for kind in kinds:
        _needs_cluster_setting(kind)
    common = {"steps": steps, "frames": window, "overlap": overlap, "windows_per_segment": windows_per_segment,
              "resolution": (width, height), "device": "cpu", "dtype": "float32", "seed": 1, "split": split,
              "previews": False, "env_resolution": (height // 2, width // 2)}
    report = {"cluster": cluster, "split": split, "frames": frames, "resolution": [width, height], "steps": steps,
              "window": window, "overlap": overlap, "windows_per_segment": windows_per_segment,
              "device_name": platform.processor() or "cpu", "torch": torch.__version__, "jobs": {}}
    with tempfile.TemporaryDirectory(prefix="dr-bench-cluster-") as tmp:
        root = Path(tmp)
        log("  writing the tiny checkpoints and the synthetic inputs …")
        inputs = _write_inputs(root, frames, width, height)
        for kind in kinds:
            runs = {}
            for spec in ("local:1", cluster):
                label = "one_worker" if spec == "local:1" else "cluster"
                log(f"  {kind} on {spec} …")
                wall, summary = _run(kind, inputs, root / f"out-{kind}-{label}", {**common, "cluster": spec})
                runs[label] = {"spec": spec, "wall_s": round(wall, 3), "summary_cluster": summary.get("cluster")}
                log(f"  {kind} on {spec}: {wall:.2f} s")
            same = _identical(_outputs(root / f"out-{kind}-one_worker"), _outputs(root / f"out-{kind}-cluster"))
            one, many = runs["one_worker"]["wall_s"], runs["cluster"]["wall_s"]
            report["jobs"][kind] = {**runs, "speedup": round(one / many, 3), "bit_identical": same}
    return report


def format_cluster_report(r: dict) -> str:
    w, h = r["resolution"]
    lines = [f"bench --cluster {r['cluster']} (split {r['split']}): tiny models, {w}x{h}, {r['frames']} frames, "
             f"{r['steps']} steps, windows {r['window']}/overlap {r['overlap']}, {r['windows_per_segment']} window(s) "
             f"per segment — {r['device_name']}", "",
             "| job | one worker s | cluster s | speed-up | bit-identical |", "|---|---|---|---|---|"]
    for kind, j in r["jobs"].items():
        lines.append(f"| {kind} | {j['one_worker']['wall_s']:.2f} | {j['cluster']['wall_s']:.2f} | "
                     f"×{j['speedup']:.2f} | {'yes' if j['bit_identical'] else 'NO'} |")
    lines.append("")
    lines.append("wall seconds include each run's cluster start-up (Ray, worker processes, model loads)")
    return "\n".join(lines)
