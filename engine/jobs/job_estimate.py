"""The cost model applied to a job request: the same defaults and size rules as the jobs themselves
(``engine.jobs``), so the add-on can ask "how long and how much memory?" before submitting."""
from __future__ import annotations


def estimate_job(kind: str, size: dict, params: dict | None = None, *, profile=None) -> dict:
    """``size``: {width, height, frames, passes | lights} of the *input* clip; ``params``: the job's
    submit parameters (anything left out takes the job's default)."""
    from engine.jobs.common import cover_resolution, parse_resolution
    from engine.perf.cost_model import estimate

    p = dict(params or {})
    res = parse_resolution(p.get("resolution")) if p.get("resolution") not in (None, "", "auto") else None
    width, height = res or cover_resolution(int(size["width"]), int(size["height"]))
    kw = dict(width=width, height=height, frames=int(size["frames"]), steps=int(p.get("steps", 20)),
              window=int(p.get("frames", 24)), overlap=int(p.get("overlap", 6)),
              decode_chunk=int(p.get("decode_chunk", 8)), decode_overlap=int(p.get("decode_overlap", 2)),
              memory=p.get("memory", "default"), device=p.get("device", "auto"), dtype=p.get("dtype", "auto"),
              profile=profile)
    if kind == "inverse":
        passes = size.get("passes") or len(p.get("passes") or ()) or 5
        return estimate("inverse", passes=int(passes), **kw)
    env = parse_resolution(p["env_resolution"], multiple=8) if p.get("env_resolution") else (512, 512)
    lights = int(size.get("lights") or len(p.get("hdri") or ()) or 1)
    guidance = p.get("guidance", 1.2)   # a ramp [min, max] guides (doubles the batch) iff max > 1
    guidance = float(guidance[-1] if isinstance(guidance, (list, tuple)) else guidance)
    one = estimate("forward", lights=1, guidance=guidance, env_resolution=(env[1], env[0]),
                   rotate_light=bool(p.get("rotate_light", False)), **kw)
    if lights == 1:
        return one
    # the job renders one HDRI after the other (one relit set each): time adds up, memory does not
    out = dict(one, seconds=round(one["seconds"] * lights, 2), unet_evals=one["unet_evals"] * lights,
               lights=lights)
    return out
