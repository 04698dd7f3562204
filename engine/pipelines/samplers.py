"""Who runs a clip's denoising loop: this process (:func:`local_sampler`), or a group of cluster workers.

The renderers do not hand :func:`engine.pipelines.windows.sample_clip` a closure; they hand a *sampler* the
recipe for one: ``make_window_fn(renderer, *window_args)`` (a top-level function or class, so it can travel
to other processes) returns the ``window_fn(x, t, s, e)`` of ``sample_clip``. A sampler is called as::

    sampler(renderer, scheduler_factory, num_steps, noise, make_window_fn, window_args, plan, mode,
            callback=..., should_cancel=...)  ->  sample_clip's result ("clip", latents) | ("windows", [...])

:func:`local_sampler` builds the window function here and calls ``sample_clip``;
``engine.cluster.group_sampler.GroupSampler`` (``--split windows``) gives the same call to a window group
of workers, each building the window function from the same recipe, with a bit-identical result.

A window function may be a context manager (the forward model's folds its LoRA into the weights while
entered): samplers call it only inside ``with`` (:func:`entered`)."""
from __future__ import annotations

import contextlib


def entered(window_fn):
    """``with entered(fn) as window_fn:`` — enters ``fn`` when it is a context manager, else yields it."""
    if hasattr(window_fn, "__enter__"):
        return window_fn
    return contextlib.nullcontext(window_fn)


def local_sampler(renderer, scheduler_factory, num_steps: int, noise, make_window_fn, window_args: tuple, plan,
                  mode: str = "latent", *, callback=None, should_cancel=None):
    """The default sampler: :func:`windows.sample_clip` in this process."""
    from engine.pipelines.windows import sample_clip

    with entered(make_window_fn(renderer, *window_args)) as window_fn:
        return sample_clip(scheduler_factory, num_steps, noise, window_fn, plan, mode, callback=callback,
                           should_cancel=should_cancel)
