"""The job registry: job id → state, progress, result, error, callbacks (stdlib only; no bpy).

``REGISTRY`` lives at module level, so jobs survive loading another .blend (a modal operator would be
cancelled; the persistent timer and this registry are not). Only the main thread changes it (the timer
or a blocking wait draining the engine's queue), so callbacks run on the main thread too.

States: ``queued`` (submitted, engine not running it yet) → ``running`` (first progress) →
``done`` | ``failed`` | ``cancelled``; ``cancelling`` between a cancel request and the engine's answer.
"""
from __future__ import annotations

import collections
import itertools
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Optional

QUEUED, RUNNING, CANCELLING = "queued", "running", "cancelling"
DONE, FAILED, CANCELLED = "done", "failed", "cancelled"
TERMINAL = frozenset({DONE, FAILED, CANCELLED})
STATES = (QUEUED, RUNNING, CANCELLING, DONE, FAILED, CANCELLED)

_counter = itertools.count(1)


def new_job_id(kind: str) -> str:
    return f"{kind}-{os.getpid()}-{int(time.time() * 1000) % 100000000:08d}-{next(_counter)}"


@dataclass
class Job:
    id: str
    kind: str
    params: dict
    folder: Optional[str] = None
    state: str = QUEUED
    stage: str = ""
    step: int = 0
    total: int = 0
    chunk: object = None
    eta: Optional[float] = None
    light: Optional[int] = None         # forward jobs: the HDRI being rendered (1-based) of ``lights``
    lights: Optional[int] = None
    fraction: float = 0.0               # 0..1, never decreases (what a progress bar shows)
    message: str = ""                   # a short human line: "denoise 3/20", "done", the error …
    result: Optional[dict] = None       # the engine's result message (manifest paths, summary)
    error: object = None                # errors.ClientError when failed
    accepted: bool = False
    queue_position: Optional[int] = None
    created: float = field(default_factory=time.time)
    started: Optional[float] = None
    finished: Optional[float] = None
    history: list = field(default_factory=list)            # states in order, e.g. [queued, running, done]
    progress_log: collections.deque = field(default_factory=lambda: collections.deque(maxlen=500))
    _on_update: list = field(default_factory=list, repr=False)
    _on_done: list = field(default_factory=list, repr=False)

    @property
    def finished_ok(self) -> bool:
        return self.state == DONE

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def manifest(self) -> Optional[str]:
        """The first manifest path of the result (None until done)."""
        paths = manifest_paths(self.result)
        return paths[0] if paths else None

    def on_update(self, fn: Callable[["Job"], None]) -> "Job":
        self._on_update.append(fn)
        return self

    def on_done(self, fn: Callable[["Job"], None]) -> "Job":
        """Called once when the job reaches done/failed/cancelled (at once if it already has)."""
        if self.is_terminal:
            _call(fn, self)
        else:
            self._on_done.append(fn)
        return self


def manifest_paths(result: Optional[dict]) -> list:
    if not result:
        return []
    found = result.get("manifests") or result.get("manifest") or []
    if isinstance(found, str):
        found = [found]
    if isinstance(found, dict):
        found = list(found.values())
    return [str(p) for p in found]


def read_job_folder(job_dir) -> dict:
    """What a job folder says about its job, e.g. after an engine crash or a Blender restart
    (docs/PROTOCOL.md §5): {"state": done | failed | cancelled | incomplete | unknown, "message": the
    engine's result/error message or None, "manifests": the manifest files that exist}."""
    def load(name):
        try:
            with open(os.path.join(str(job_dir), name), encoding="utf-8") as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return None

    result, error = load("result.json"), load("error.json")
    if isinstance(result, dict):
        found = [p for p in manifest_paths(result) if os.path.isfile(p)]
        return {"state": DONE, "message": result, "manifests": found}
    if isinstance(error, dict):
        return {"state": CANCELLED if error.get("code") == "cancelled" else FAILED, "message": error, "manifests": []}
    started = os.path.isfile(os.path.join(str(job_dir), "request.json"))
    return {"state": "incomplete" if started else "unknown", "message": None, "manifests": []}


def _call(fn, job) -> None:
    try:
        fn(job)
    except Exception:  # noqa: BLE001 - a UI callback must never stop the pump
        print(f"DiffusionRenderer: callback for job {job.id} failed:", file=sys.stderr)
        traceback.print_exc()


class JobRegistry:
    def __init__(self, keep_finished: int = 50):
        self._jobs: "collections.OrderedDict[str, Job]" = collections.OrderedDict()
        self.keep_finished = keep_finished
        self.revision = 0                # bumped on every change: the timer redraws only when it moved

    def __contains__(self, job_id) -> bool:
        return job_id in self._jobs

    def __len__(self) -> int:
        return len(self._jobs)

    def add(self, kind: str, params: dict, folder=None, job_id: Optional[str] = None) -> Job:
        job = Job(id=job_id or new_job_id(kind), kind=kind, params=dict(params),
                  folder=None if folder is None else str(folder))
        if job.id in self._jobs and not self._jobs[job.id].is_terminal:
            raise ValueError(f"job {job.id} already exists and is {self._jobs[job.id].state}")
        job.history.append(QUEUED)
        self._jobs[job.id] = job
        self._jobs.move_to_end(job.id)
        self._prune()
        self.revision += 1
        return job

    def get(self, job_id) -> Optional[Job]:
        return self._jobs.get(job_id)

    def all(self) -> list:
        return list(self._jobs.values())

    def active(self) -> list:
        return [j for j in self._jobs.values() if not j.is_terminal]

    def latest(self, kind: Optional[str] = None) -> Optional[Job]:
        for job in reversed(self._jobs.values()):
            if kind is None or job.kind == kind:
                return job
        return None

    def forget(self, job_id) -> None:
        if self._jobs.pop(job_id, None) is not None:
            self.revision += 1

    def set_state(self, job: Job, state: str, message: Optional[str] = None, **fields) -> None:
        """Move a job to ``state`` (no-op once terminal), set fields, fire callbacks."""
        if state not in STATES:
            raise ValueError(f"unknown job state {state!r}")
        if job.is_terminal:
            return
        for name, value in fields.items():
            setattr(job, name, value)
        if state != job.state:
            job.state = state
            job.history.append(state)
            if state == RUNNING and job.started is None:
                job.started = time.time()
            if state in TERMINAL:
                job.finished = time.time()
                if state == DONE:
                    job.fraction = 1.0
        if message is not None:
            job.message = message
        self.revision += 1
        self._fire(job)

    def progress(self, job: Job, stage=None, step=None, total=None, chunk=None, eta=None, fraction=None,
                 message: Optional[str] = None, light=None, lights=None) -> None:
        """Record a progress report; the first one moves a queued job to running."""
        if job.is_terminal:
            return
        job.progress_log.append({"t": time.time(), "stage": stage, "step": step, "total": total,
                                 "chunk": chunk, "eta": eta, "fraction": fraction, "light": light})
        if light is not None:
            job.light, job.lights = int(light), int(lights or light)
        job.stage = stage if stage is not None else job.stage
        job.step = int(step) if step is not None else job.step
        job.total = int(total) if total is not None else job.total
        job.chunk, job.eta = (chunk if chunk is not None else job.chunk), eta
        if fraction is None and job.total:
            fraction = job.step / job.total
        if fraction is not None:
            job.fraction = max(job.fraction, min(1.0, max(0.0, float(fraction))))
        if message is None:
            message = f"{job.stage} {job.step}/{job.total}" if job.total else (job.stage or "running")
        if job.state == QUEUED:
            self.set_state(job, RUNNING, message)
        else:
            job.message = message
            self.revision += 1
            self._fire(job)

    def _fire(self, job: Job) -> None:
        for fn in list(job._on_update):
            _call(fn, job)
        if job.is_terminal:
            callbacks, job._on_done = job._on_done, []
            for fn in callbacks:
                _call(fn, job)
            self._prune()

    def _prune(self) -> None:
        """Forget the oldest finished jobs beyond ``keep_finished`` (active jobs are always kept)."""
        finished = sorted((j for j in self._jobs.values() if j.is_terminal), key=lambda j: j.finished or 0)
        for job in finished[:max(0, len(finished) - self.keep_finished)]:
            del self._jobs[job.id]


REGISTRY = JobRegistry()


def plain(value):
    """Paths → str (the protocol carries JSON), recursively through lists and dicts."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
