"""The cost model applied to a job request: the same defaults and size rules as the jobs themselves
(``engine.jobs``), so the add-on can ask "how long and how much memory?" before submitting."""
from __future__ import annotations


def estimate_job(kind: str, size: dict, params: dict | None = None, *, profile=None, gpus: int = 1,
                 split: str = "auto", cluster_costs=None) -> dict:
    """``size``: {width, height, frames, passes | lights} of the *input* clip; ``params``: the job's
    submit parameters (anything left out takes the job's default). ``gpus`` > 1: the time on that many
    cluster workers with ``split`` (engine/perf/cluster_cost.py; ``seconds`` is then the cluster's, the plain
    job's is ``seconds_one_gpu`` and the details are under ``cluster``)."""
    from engine.jobs.common import cover_resolution, parse_resolution
    from engine.perf.cost_model import estimate

    if int(gpus) < 1:
        raise ValueError(f"gpus must be at least 1, not {gpus}")
    p = dict(params or {})
    res = parse_resolution(p.get("resolution")) if p.get("resolution") not in (None, "", "auto") else None
    width, height = res or cover_resolution(int(size["width"]), int(size["height"]))
    kw = dict(width=width, height=height, frames=int(size["frames"]), steps=int(p.get("steps", 20)),
              window=int(p.get("frames", 24)), overlap=int(p.get("overlap", 6)),
              decode_chunk=int(p.get("decode_chunk", 8)), decode_overlap=int(p.get("decode_overlap", 2)),
              memory=p.get("memory", "default"), device=p.get("device", "auto"), dtype=p.get("dtype", "auto"),
              profile=profile)
    if kind == "preview":       # one live-preview update after a rotation (engine/jobs/preview_job.py)
        return _estimate_preview(size, p, profile)
    if kind == "inverse":
        passes = size.get("passes") or len(p.get("passes") or ()) or 5
        one = estimate("inverse", passes=int(passes), **kw)
        return _on_gpus(one, kw, p, gpus, split, cluster_costs, jobs=1, items=one["unet_batch"])
    env = parse_resolution(p["env_resolution"], multiple=8) if p.get("env_resolution") else (512, 512)
    lights = int(size.get("lights") or len(p.get("hdri") or ()) or 1)
    guidance = p.get("guidance", 1.2)   # a ramp [min, max] guides (doubles the batch) iff max > 1
    guidance = float(guidance[-1] if isinstance(guidance, (list, tuple)) else guidance)
    one = estimate("forward", lights=1, guidance=guidance, env_resolution=(env[1], env[0]),
                   rotate_light=bool(p.get("rotate_light", False)), **kw)
    if gpus > 1:     # each HDRI is its own job: units are HDRI × segment
        return _on_gpus(one, kw, p, gpus, split, cluster_costs, jobs=lights, items=1, lights=lights)
    if lights == 1:
        return one
    # the job renders one HDRI after the other (one relit set each): time adds up, memory does not
    out = dict(one, seconds=round(one["seconds"] * lights, 2), unet_evals=one["unet_evals"] * lights,
               lights=lights)
    return out


def _on_gpus(one: dict, kw: dict, p: dict, gpus: int, split: str, costs, *, jobs: int, items: int, **extra) -> dict:
    """The plain job (``gpus`` 1, unchanged) or its prediction on ``gpus`` cluster workers."""
    from engine.contract.params import default
    from engine.perf.cluster_cost import LATENT_FACTOR, cluster_estimate

    if int(gpus) == 1:
        return one
    c = cluster_estimate(one, frames=kw["frames"], window=kw["window"], overlap=kw["overlap"],
                         windows_per_segment=int(p.get("windows_per_segment", default("windows_per_segment"))),
                         steps=kw["steps"], jobs=jobs, exchange_items=items, gpus=int(gpus), split=split,
                         latent_hw=(kw["height"] // LATENT_FACTOR, kw["width"] // LATENT_FACTOR), costs=costs)
    return dict(one, seconds=c["seconds"], seconds_one_gpu=c["seconds_one_gpu"],
                unet_evals=one["unet_evals"] * jobs, cluster=c, **extra)


def _estimate_preview(size: dict, p: dict, profile) -> dict:
    """``size``: the set's {width, height, frames}; ``p``: the preview's params (its defaults otherwise)."""
    from engine.contract import params as P
    from engine.jobs.common import parse_resolution
    from engine.jobs.preview_job import auto_size
    from engine.perf.cost_model import estimate_preview

    p = {**P.defaults(P.PREVIEW), **p}
    res = parse_resolution(p["preview_size"]) if p["preview_size"] not in (None, "", "auto") else None
    width, height = res or auto_size((int(size["width"]), int(size["height"])))
    env = parse_resolution(p["env_resolution"], multiple=8)
    guidance = p["guidance"]
    return estimate_preview(width=width, height=height, frames=min(int(p["preview_frames"]), int(size["frames"])),
                            steps=int(p["steps"]), decode_chunk=int(p["decode_chunk"]), env_resolution=(env[1], env[0]),
                            guidance=float(guidance[-1] if isinstance(guidance, (list, tuple)) else guidance),
                            memory=p["memory"], device=p["device"], dtype=p["dtype"], profile=profile)
