"""The job queue and the one worker thread that runs jobs (run_inverse / run_forward / run_gbuffers, chosen
with their settings by engine/jobs/settings.py from the submit's params).

Every accepted job ends with exactly one terminal message: ``result`` or ``error`` (code ``cancelled``
when it was cancelled). Lock order: the writer's lock may be held while taking the queue lock, never
the reverse (nothing is sent while holding only the queue lock)."""
from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.contract import protocol
from engine.server import containment
from engine.server.model_cache import ModelCache, free_device_memory

log = logging.getLogger("engine.server")

PROGRESS_INTERVAL = 0.1   # at most 10 progress messages a second per job (first and last step always)


@dataclass
class Job:
    id: str
    kind: str
    job_dir: Path
    params: dict
    reply_to: object = None
    received: float = field(default_factory=time.monotonic)
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str = ""
    stage: str = "queued"
    step: int = 0
    total: int = 0


class DuplicateJob(ValueError):
    pass


class _Timed:
    """Wraps a renderer; adds up the time spent inside its __call__ (the pipeline's own compute)."""

    def __init__(self, renderer):
        self._r, self.seconds = renderer, 0.0

    def __getattr__(self, name):
        return getattr(self._r, name)

    def __call__(self, *args, **kwargs):
        t0 = time.monotonic()
        try:
            return self._r(*args, **kwargs)
        finally:
            self.seconds += time.monotonic() - t0


# ----------------------------------------------------------------------------- errors
def classify(exc: BaseException, log_file) -> tuple[str, str, str | None, list | None]:
    """Exception → (code, message, hint, problems): engine/errors.py's one mapping (the CLI's too);
    ``problems``: the further lines of a multi-line error (None when it has one line)."""
    from engine.errors import classify as classify_error

    c = classify_error(exc, log_file or "stderr")
    return c.code, c.message, c.hint, list(c.details) or None


def _write_json(path: Path, data: dict) -> None:
    """Write a job-folder JSON file atomically; a file of that name the engine did not write is never
    replaced (the data goes under a free name beside it; engine/server/containment.py)."""
    from engine.atomic import atomic_write_text

    try:
        target = containment.free_name(path)
        if target != path:
            log.warning("%s was not written by the engine; writing %s instead", path, target.name)
        atomic_write_text(target, json.dumps(data, indent=2, default=str) + "\n")
    except OSError as exc:
        log.warning("could not write %s (%s)", path, exc)


def _remove_earlier_outcome(job_dir: Path) -> None:
    """A job folder used again: the result.json/error.json of the earlier run (the engine's own only) go,
    so the folder never says "done" or "failed" about a run that is not this one."""
    for name in ("result.json", "error.json"):
        path = job_dir / name
        if path.is_file() and not path.is_symlink() and containment.written_by_engine(path):
            try:
                path.unlink()
            except OSError as exc:
                log.warning("could not remove the earlier %s (%s)", path, exc)


# ----------------------------------------------------------------------------- the worker
class Worker(threading.Thread):
    def __init__(self, send: Callable[[dict], None], cache: ModelCache, log_file=None,
                 progress_interval: float = PROGRESS_INTERVAL, send_lock=None):
        super().__init__(name="worker", daemon=True)
        self.send, self.cache, self.log_file = send, cache, log_file
        self.send_lock = send_lock or threading.RLock()   # the writer's lock (re-entrant)
        self.progress_interval = progress_interval
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self.running: Job | None = None
        self.stopping = False
        self.cluster = None          # serve --cluster: the ClusterRunner the inverse/forward jobs run on

    # -- called from other threads ------------------------------------------------------------
    def submit(self, job: Job) -> int:
        """Queue a job; returns its position (0 = starts now). Raises DuplicateJob / RuntimeError."""
        with self._cond:
            if self.stopping:
                raise RuntimeError("the engine is shutting down")
            if (self.running and self.running.id == job.id) or any(j.id == job.id for j in self._queue):
                raise DuplicateJob(f"a job with id {job.id!r} is already queued or running")
            self._queue.append(job)
            position = len(self._queue) - 1 + (1 if self.running else 0)
            self._cond.notify()
        return position

    def cancel(self, job_id: str, reason: str = "cancel message") -> tuple[str, Job | None]:
        """('cancelling', job) for the running job, ('removed', job) for a queued one (the caller
        sends its terminal error), ('unknown', None) otherwise (finished, or never seen)."""
        with self._cond:
            if self.running is not None and self.running.id == job_id:
                self.running.cancel_reason = self.running.cancel_reason or reason
                self.running.cancel.set()
                return "cancelling", self.running
            for job in self._queue:
                if job.id == job_id:
                    self._queue.remove(job)
                    return "removed", job
        return "unknown", None

    def cancel_running(self, reason: str) -> Job | None:
        with self._cond:
            job = self.running
            if job is not None:
                job.cancel_reason = job.cancel_reason or reason
                job.cancel.set()
        return job

    def stop(self, reason: str) -> list[Job]:
        """No more jobs: cancel the running one and return the queued ones (removed)."""
        with self._cond:
            self.stopping = True
            dropped = list(self._queue)
            self._queue.clear()
            if self.running is not None:
                self.running.cancel_reason = self.running.cancel_reason or reason
                self.running.cancel.set()
            self._cond.notify_all()
        return dropped

    def snapshot(self) -> tuple[dict | None, list[str]]:
        with self._cond:
            r = self.running
            running = None if r is None else {"job": r.id, "kind": r.kind, "stage": r.stage, "step": r.step,
                                              "total": r.total, "cancelling": r.cancel.is_set()}
            return running, [j.id for j in self._queue]

    # -- the worker thread ----------------------------------------------------------------------
    def run(self) -> None:
        try:  # import the job code now, while idle, not when the first job arrives
            import engine.jobs.forward_job  # noqa: F401
            import engine.jobs.inverse_job  # noqa: F401
            import engine.jobs.settings  # noqa: F401
            import engine.pipelines  # noqa: F401
        except Exception:  # noqa: BLE001 - the job that needs them reports the problem
            log.exception("could not import the job modules")
        while True:
            with self._cond:
                while not self._queue and not self.stopping:
                    self._cond.wait()
                if self.stopping:
                    return
                job = self._queue.popleft()
                self.running = job
            try:
                msg = self._execute(job)
            except BaseException as exc:  # noqa: BLE001 - the worker must survive anything a job does
                log.exception("job %s: unexpected failure while reporting", job.id)
                msg = protocol.error("internal", f"{type(exc).__name__}: {exc}", job=job.id, reply_to=job.reply_to)
            # one step under the writer's lock: a cancel or status sees the job running and its terminal
            # message not yet sent, or the job gone and its terminal message already on the wire
            with self.send_lock:
                with self._cond:
                    self.running = None
                self.send(msg)
            if self.cache.needs_empty_cache:
                self.cache.needs_empty_cache = False
                free_device_memory()

    def _execute(self, job: Job) -> dict:
        """Run one job; returns its terminal message (result or error)."""
        t_start = time.monotonic()
        seconds = {"queued": round(t_start - job.received, 3)}
        log.info("job %s (%s) started in %s", job.id, job.kind, job.job_dir)
        try:
            job.job_dir.mkdir(parents=True, exist_ok=True)
            _remove_earlier_outcome(job.job_dir)
            _write_json(job.job_dir / "request.json", {"job": job.id, "kind": job.kind, "params": job.params,
                                                       "producer": containment.PRODUCER})
            from engine.jobs.settings import build_settings

            built = build_settings(job.kind, job.params, job.job_dir, default_out=job.job_dir / "out")
            settings = built.settings
            timed, load_s, cached = None, 0.0, False
            on_cluster = self.cluster is not None and job.kind in ("inverse", "forward")
            if hasattr(settings, "model") and not on_cluster:   # the model kinds (a gbuffers job only converts)
                def on_load():
                    job.stage = "load_model"
                    self.send(protocol.progress(job.id, "load_model", 0, 0, elapsed_s=time.monotonic() - t_start))

                renderer, load_s, cached = self.cache.get(
                    job.kind, settings.model, settings.revision, settings.device, settings.dtype, settings.memory,
                    allow_download=job.params.get("allow_download", True), on_load=on_load)
                timed = _Timed(renderer)
                del renderer
            seconds["load_model"] = round(load_s, 3)
            if job.cancel.is_set():
                from engine.pipelines import Cancelled

                raise Cancelled("cancelled before the job started")
            t_run = time.monotonic()
            summary = built.run(*built.inputs, settings, renderer=timed, listener=self._listener(job, t_start),
                                should_cancel=job.cancel.is_set, show_progress=False,
                                **({"cluster": self.cluster} if on_cluster else {}))
            seconds.update(job=round(time.monotonic() - t_run, 3),
                           pipeline=round(timed.seconds if timed is not None else time.monotonic() - t_run, 3))
            del timed
        except BaseException as exc:  # noqa: BLE001 - everything becomes an error message
            code, message, hint, problems = classify(exc, self.log_file)
            if job.cancel.is_set() and code != "cancelled":
                # e.g. SIGINT sent to the whole process group also killed an ffmpeg reader: the user asked
                # for the job to stop, so that is what it did
                log.info("job %s failed after its cancel (%s: %s)", job.id, code, message)
                code, message, hint = "cancelled", f"stopped with {code}: {message}", None
            if code == "cancelled":
                message = f"job cancelled ({job.cancel_reason or 'cancel'}; {message})"
                log.info("job %s: %s", job.id, message)
            elif code == "internal":
                log.error("job %s failed:\n%s", job.id, "".join(traceback.format_exception(exc)))
            else:
                log.warning("job %s failed (%s): %s", job.id, code, message)
            if code == "out_of_memory":
                free_device_memory()
            msg = protocol.error(code, message, hint, job=job.id, reply_to=job.reply_to, step=job.step,
                                 problems=problems, log_file=str(self.log_file) if self.log_file else None)
            _write_json(job.job_dir / "error.json", msg)
            return msg
        summary.update(load_seconds=seconds["load_model"], model_load_seconds=seconds["load_model"],
                       model_cached=cached)
        seconds["total"] = round(time.monotonic() - job.received, 3)
        manifests = [str(Path(c["out"]) / "manifest.json") for c in summary.get("clips", [])]
        msg = protocol.result(job.id, job.kind, manifests, summary["out"], summary, seconds, reply_to=job.reply_to)
        _write_json(job.job_dir / "result.json", msg)
        log.info("job %s done in %.2f s (pipeline %.2f s, model %s)", job.id, seconds["total"], seconds["pipeline"],
                 "cached" if cached else f"loaded in {load_s:.2f} s")
        return msg

    def _listener(self, job: Job, t_start: float):
        last = [0.0, None]      # when the last report was sent, and its (stage, light)

        def listener(info: dict) -> None:
            stage = info.get("stage", "denoise")
            stage = stage if stage in protocol.PROGRESS_STAGES else "denoise"
            job.stage, job.step, job.total = stage, int(info["step"]), int(info["total"])
            now, where = time.monotonic(), (stage, info.get("light"))
            # a new stage or light is always reported (as are the first and the last step)
            if (job.step <= 1 or job.step >= job.total or where != last[1]
                    or now - last[0] >= self.progress_interval):
                last[0], last[1] = now, where
                self.send(protocol.progress(job.id, stage, job.step, job.total, chunk=info.get("chunk"),
                                            eta_s=info.get("eta_s"), elapsed_s=now - t_start,
                                            light=info.get("light"), lights=info.get("lights")))
        return listener
