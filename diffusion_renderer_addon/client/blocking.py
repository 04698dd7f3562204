"""The blocking path for scripts, operators' ``execute()`` and ``blender -b`` (stdlib only; no bpy).

Timers never fire in background mode, so these functions pump the engine's queue themselves:

    from diffusion_renderer_addon.client import blocking
    job = blocking.run_job("inverse", {"input": "/shots/plate", "passes": ["basecolor"]})
    print(job.manifest)

Ctrl+C while waiting cancels the job (and waits for the engine to confirm) before re-raising.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

from . import errors, jobs, session


class JobFailed(errors.ClientError):
    """run_job/wait: the job ended failed or cancelled (``.job`` is the Job object's id; ``.job_obj`` the Job)."""


def _client(client) -> session.EngineClient:
    client = client or session.current()
    if client is None:
        raise errors.ClientError(errors.INVALID_PYTHON, "The engine is not configured.",
                                 "Set the engine Python in the add-on preferences (or call client.configure()).")
    return client


def wait(job: jobs.Job, client: Optional[session.EngineClient] = None, timeout: Optional[float] = None,
         on_progress: Optional[Callable[[jobs.Job], None]] = None, raise_on_error: bool = True,
         poll: float = 0.2) -> jobs.Job:
    """Pump until ``job`` is done/failed/cancelled. On timeout the job is cancelled and TimeoutError raised."""
    client = _client(client)
    deadline = None if timeout is None else time.monotonic() + timeout
    seen = None
    try:
        while not job.is_terminal:
            client.pump(timeout=poll)
            if on_progress is not None and (job.state, job.stage, job.step, job.total) != seen:
                seen = (job.state, job.stage, job.step, job.total)
                on_progress(job)
            if client.proc is None and not job.is_terminal and job.state != jobs.CANCELLING:
                client.pump(timeout=poll)           # the engine is gone and nothing will answer
                if not job.is_terminal:
                    client.registry.set_state(job, jobs.FAILED, "the engine is not running",
                                              error=client.last_error or errors.ClientError(
                                                  errors.ENGINE_STOPPED, "The engine is not running.", job=job.id))
            if deadline is not None and time.monotonic() > deadline and not job.is_terminal:
                _cancel_and_wait(client, job)
                raise TimeoutError(f"job {job.id} did not finish within {timeout:g} s (cancelled)")
    except KeyboardInterrupt:
        _cancel_and_wait(client, job)
        raise
    if raise_on_error and job.state != jobs.DONE:
        base = job.error if isinstance(job.error, errors.ClientError) else errors.ClientError(
            "cancelled", f"Job {job.id} was cancelled.")
        exc = JobFailed(base.code, base.message, base.hint, base.details, base.log_path, base.engine_code, job.id)
        exc.job_obj = job
        raise exc
    return job


def _cancel_and_wait(client: session.EngineClient, job: jobs.Job) -> None:
    client.cancel(job.id)
    limit = time.monotonic() + client.config.cancel_grace + client.config.kill_grace + 10
    while not job.is_terminal and time.monotonic() < limit:
        client.pump(timeout=0.2)


def run_job(kind: str, params: dict, job_dir: Optional[str] = None, *, client=None, job_id: Optional[str] = None,
            timeout: Optional[float] = None, on_progress=None, raise_on_error: bool = True) -> jobs.Job:
    """Submit an inverse/forward job and wait for it (starts the engine when needed)."""
    client = _client(client)
    job = client.submit(kind, params, job_dir, job_id)
    return wait(job, client, timeout, on_progress, raise_on_error)


def start_engine(client=None, timeout: Optional[float] = None) -> dict:
    """Start the engine and wait for its hello (the "Test engine" button); returns the hello message."""
    return _client(client).wait_ready(timeout)
