"""``--split windows``: a sampler (engine/pipelines/samplers.py) that hands a segment's denoising loop to a window
group of workers (:func:`engine.cluster.window_group.sample_clip_group`).

It travels inside a segment unit to the worker computing that segment (the *host*), which encodes and decodes
as in one process and calls this sampler where it would sample: the group's ranks (every worker of the pool,
the host included) rebuild the window function from the renderer's recipe and denoise their windows,
exchanging the overlap outputs each step. The ranks' progress comes back on the group's own queue and is
relayed, step by step, to the host's callback (so the job's progress counts group steps like local ones)."""
from __future__ import annotations

from typing import Optional


class GroupSampler:
    """Picklable: the pool's actor handles, a progress queue for the ranks and the renderer they load."""

    def __init__(self, actors: list, queue, renderer_spec, ranks: Optional[int] = None):
        self.actors, self.queue, self.renderer_spec, self.ranks = list(actors), queue, renderer_spec, ranks

    def drain(self) -> list:
        try:
            return self.queue.get_nowait_batch(self.queue.qsize()) if self.queue.qsize() else []
        except Exception:  # noqa: BLE001 - an empty or closed queue
            return []

    def __call__(self, renderer, scheduler_factory, num_steps: int, noise, make_window_fn, window_args: tuple, plan,
                 mode: str = "latent", *, callback=None, should_cancel=None):
        from engine.cluster.window_group import sample_clip_group
        from engine.pipelines.samplers import local_sampler

        if mode != "latent" or len(plan) < 2 or len(self.actors) < 2:     # nothing to split
            return local_sampler(renderer, scheduler_factory, num_steps, noise, make_window_fn, window_args, plan,
                                 mode, callback=callback, should_cancel=should_cancel)
        seen = [0]

        def relay(ev, fraction):
            while seen[0] < ev.done:
                seen[0] += 1
                if callback is not None:
                    callback(seen[0] - 1, num_steps, None, None, None)

        args = tuple(a.cpu() if hasattr(a, "cpu") else [t.cpu() for t in a] if isinstance(a, list) else a
                     for a in window_args)
        latents = sample_clip_group(self, scheduler_factory, num_steps, noise.cpu(), make_window_fn, args, plan,
                                    renderer=self.renderer_spec, ranks=self.ranks, on_progress=relay,
                                    should_cancel=should_cancel)
        return "clip", latents.to(noise.device)
