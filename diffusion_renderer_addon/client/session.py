"""EngineClient: one engine process + the job registry, driven from the main thread (stdlib only; no bpy).

Nothing here blocks except where named (``wait_ready``, ``shutdown``, ``pump(timeout>0)``): the timer
calls ``pump()`` to drain the reader's queue, and blocking.py calls ``pump(timeout)`` in a loop.
"""
from __future__ import annotations

import atexit
import os
import queue
import tempfile
import time
from typing import Optional

from ..contract import protocol
from . import errors, jobs
from .events import CLIENT_PROTOCOL_MAJOR, CRASHED, FAILED, READY, STARTING, STOPPED, STOPPING, EventHandlers
from .preview import PREVIEW, PreviewRequests
from .process import EngineConfig, EngineProcess, probe_python, resolve_python

CLIENT_NAME = "diffusion-renderer-blender-addon"
__all__ = ["EngineClient", "EngineConfig", "configure", "current", "shutdown_all", "CLIENT_PROTOCOL_MAJOR",
           "STOPPED", "STARTING", "READY", "STOPPING", "CRASHED", "FAILED"]


class EngineClient(EventHandlers, PreviewRequests):
    def __init__(self, config: EngineConfig, registry: Optional[jobs.JobRegistry] = None):
        self.config, self.registry = config, registry or jobs.REGISTRY
        self.events: "queue.Queue" = queue.Queue()
        self.proc: Optional[EngineProcess] = None
        self.protocol = protocol                # the contract's; the engine's version is checked at hello
        self.state, self.info, self.last_error, self.last_status = STOPPED, None, None, None
        self.probe: Optional[dict] = None
        self._generation, self._next_id = 0, 0
        self._outbox: list = []                 # job ids submitted before the engine said hello
        self._requests: dict = {}               # request id → job id (to place errors that only carry reply_to)
        self._escalation: dict = {}             # job id → {since, signalled}: cancel → SIGINT → kill
        self._expect_exit = False
        self._start_error: Optional[errors.ClientError] = None     # an engine error before its hello
        self._stale_config = False              # configure() changed the config while the engine was busy
        self._estimates: dict = {}              # estimate request id → reply (estimate or error message), once come

    # ------------------------------------------------------------------ lifecycle
    @property
    def log_path(self) -> Optional[str]:
        return (self.info or {}).get("log_file") or self.config.stderr_log

    @property
    def busy(self) -> bool:
        return self.state in (STARTING, STOPPING) or bool(self.registry.active())

    def stderr_tail(self, n: int = 40) -> list:
        return self.proc.stderr.tail(n) if self.proc else []

    def start(self) -> None:
        """Check the interpreter, spawn the engine and send hello (whose reply carries the engine's protocol
        version: another major fails the start with a protocol_mismatch error).
        Returns at once (state STARTING; READY after the engine's hello). Raises errors.ClientError."""
        if self.proc is not None and self.proc.alive():
            return
        try:
            self.probe = probe_python(resolve_python(self.config.python), self.config.engine_root,
                                      self.config.probe_timeout, self.config.env)
            self._generation += 1
            self.proc = EngineProcess(self.config, self.protocol, self.events, self._generation,
                                      self.probe["engine_dir"])
        except errors.ClientError as exc:
            self.state, self.last_error = FAILED, exc
            raise
        self.state, self.info, self._expect_exit, self._start_error = STARTING, None, False, None
        self._stale_config = False
        self._send(self.protocol.hello(client=CLIENT_NAME, id=self._request_id()))

    def ensure_started(self) -> None:
        """Start the engine unless it runs; a dead one is first reported (its jobs fail), and one started
        with an older configuration is replaced once it is idle."""
        self._settle()
        if self.proc is None or not self.proc.alive() or self.state in (STOPPED, CRASHED, FAILED, STOPPING):
            self._discard_process()
            self.start()

    def _settle(self) -> None:
        """If the engine has exited, handle that now (instead of at the next pump); if it was started
        with an older configuration and is idle, stop it (the next start uses the new one)."""
        if self.proc is not None and not self.proc.alive():
            self.proc.stdout.join(2.0)
            self.pump()
        if self.proc is not None and self._stale_config and not self.registry.active():
            self.shutdown()

    def wait_ready(self, timeout: Optional[float] = None) -> dict:
        """Start if needed and block (pumping) until the engine's hello; returns it or raises ClientError."""
        self.ensure_started()
        deadline = time.monotonic() + (timeout if timeout is not None else self.config.hello_timeout)
        while self.state == STARTING and time.monotonic() < deadline:
            self.pump(timeout=0.1)
        if self.state != READY:
            raise self.last_error or errors.engine_start_failed(
                f"no hello within {timeout if timeout is not None else self.config.hello_timeout:g} s",
                self.stderr_tail(), self.log_path)
        return self.info

    def shutdown(self, timeout: float = 10.0) -> None:
        """Ask the engine to exit (shutdown message, then stdin EOF, SIGINT, kill). Blocks up to ~timeout."""
        if self.proc is None:
            return
        self._expect_exit, self.state = True, STOPPING
        self._send(self.protocol.shutdown(id=self._request_id()))
        self.proc.close_stdin()                 # EOF means "stop" too, should the message not be understood
        deadline = time.monotonic() + timeout / 2
        while self.proc is not None and time.monotonic() < deadline:
            self.pump(timeout=0.1)
        if self.proc is not None:
            self.proc.stop(timeout / 4)
            self.pump(timeout=1.0)
        self._discard_process()
        self.state = STOPPED

    def restart(self) -> None:
        self.shutdown()
        self.start()

    def kill(self) -> None:
        """Hard stop (tests, emergencies): jobs still running end failed/cancelled at the next pump."""
        if self.proc is not None:
            self.proc.kill()

    def _discard_process(self) -> None:
        if self.proc is not None:
            if self.proc.alive():
                self.proc.stop(2.0)
            self.proc.release()
        self.proc = None

    # ------------------------------------------------------------------ requests
    def _request_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _send(self, msg: dict) -> bool:
        return self.proc is not None and self.proc.send(msg)

    def job_dir_for(self, job_id: str) -> str:
        base = self.config.jobs_dir or os.path.join(tempfile.gettempdir(), "diffusion-renderer-jobs")
        return os.path.join(base, job_id)

    def submit(self, kind: str, params: dict, job_dir: Optional[str] = None, job_id: Optional[str] = None) -> jobs.Job:
        """Register a job and send it (at once, or after the engine's hello). Starts the engine when needed.
        Raises ClientError (the job is then recorded as failed too) for an unusable engine or bad params."""
        self._settle()
        job = self.registry.add(kind, jobs.plain(params), job_dir, job_id)
        try:
            self.ensure_started()
            job.folder = os.path.abspath(job.folder or self.job_dir_for(job.id))
            os.makedirs(job.folder, exist_ok=True)
            problems = self.protocol.validate(self._submit_msg(job, 0), self.protocol.TO_ENGINE)
            if problems:
                raise errors.ClientError("invalid_params", f"{kind} job: {problems[0]}",
                                         "; ".join(problems[1:]), job=job.id)
        except errors.ClientError as exc:
            exc.job = job.id
            self.registry.set_state(job, jobs.FAILED, exc.short(), error=exc)
            raise
        if self.state == READY:
            self._send_submit(job)
        else:
            self._outbox.append(job.id)
        return job

    def _submit_msg(self, job: jobs.Job, rid: int) -> dict:
        if job.kind == PREVIEW:                 # a live preview: its request body is the job's params
            p = job.params
            return self.protocol.preview(job.id, p["set"], p["hdri"], p["frame"], p["out"], p["params"], id=rid)
        return self.protocol.submit(job.id, job.kind, job.folder, job.params, id=rid)

    def _send_submit(self, job: jobs.Job) -> None:
        rid = self._request_id()
        self._requests[rid] = job.id
        if not self._send(self._submit_msg(job, rid)):
            pass  # the engine is gone: the EOF event fails the job with the crash report

    def cancel(self, job_id: str) -> bool:
        """Cancel a job: removed at once if not sent yet, else a cancel message. If the engine has not
        ended it after two denoising steps (at least ``cancel_grace`` s) it gets SIGINT / CTRL_BREAK, and
        ``kill_grace`` s later it is killed (and restarted for the next job)."""
        job = self.registry.get(job_id)
        if job is None or job.is_terminal:
            return False
        if job_id in self._outbox or self.proc is None:
            if job_id in self._outbox:
                self._outbox.remove(job_id)
            self.registry.set_state(job, jobs.CANCELLED, "cancelled")
            return True
        self._send(self.protocol.cancel(job_id, id=self._request_id()))
        self.registry.set_state(job, jobs.CANCELLING, "cancelling…")
        self._escalation[job_id] = {"since": time.time(), "signalled": None}
        return True

    def estimate(self, kind: str, size: dict, params: Optional[dict] = None, timeout: float = 60.0) -> dict:
        """Predicted ``seconds`` and ``peak_memory_gb`` (+ ``fits``, ``device_memory_gb`` when the GPU is
        known) of a job before submitting it (protocol 1.1 ``estimate``). Blocks, pumping; starts the engine
        when needed. Raises ClientError for an engine without estimates, a bad request or a timeout."""
        self.wait_ready()
        if tuple(int(v) for v in str((self.info or {}).get("protocol", "1.0")).split(".")[:2]) < (1, 1):
            raise errors.ClientError("unsupported", "this engine cannot estimate jobs (protocol 1.1 needed)",
                                     "update the engine (Preferences › Add-ons › DiffusionRenderer › Set Up Engine)")
        rid = self._request_id()
        self._estimates[rid] = None
        msg = self.protocol.estimate(kind, dict(size), jobs.plain(params or {}), id=rid)
        problems = self.protocol.validate(msg, self.protocol.TO_ENGINE)
        if problems:
            self._estimates.pop(rid, None)
            raise errors.ClientError("invalid_params", f"estimate: {problems[0]}")
        self._send(msg)
        deadline = time.monotonic() + timeout
        while self._estimates.get(rid) is None and self.proc is not None and time.monotonic() < deadline:
            self.pump(timeout=0.05)
        reply = self._estimates.pop(rid, None)
        if reply is None:
            raise errors.ClientError("timeout", f"no estimate from the engine within {timeout:g} s")
        if reply.get("type") == "error":
            raise errors.from_engine(reply, self.stderr_tail(), self.log_path)
        return reply

    def unload(self) -> bool:
        """Free the engine's models (VRAM) but keep it running."""
        return self.state == READY and self._send(self.protocol.unload(id=self._request_id()))

    def request_status(self) -> bool:
        return self.state == READY and self._send(self.protocol.status(id=self._request_id()))


# ---------------------------------------------------------------------- the add-on's one client
_CLIENT: Optional[EngineClient] = None


def configure(config: EngineConfig) -> EngineClient:
    """Create the add-on's client, or give it a new configuration (a running engine with another
    interpreter/folder/environment is stopped when idle; otherwise the new one is used at the next start)."""
    global _CLIENT
    if _CLIENT is None:
        _CLIENT = EngineClient(config)
    elif config.key() != _CLIENT.config.key():
        _CLIENT.config = config
        if _CLIENT.proc is not None and not _CLIENT.registry.active():
            _CLIENT.shutdown()
        elif _CLIENT.proc is not None:
            _CLIENT._stale_config = True        # replaced by ensure_started() once idle
    else:
        _CLIENT.config = config
    return _CLIENT


def current() -> Optional[EngineClient]:
    return _CLIENT


def shutdown_all(timeout: float = 5.0) -> None:
    """Stop the engine (add-on unregister, Blender exit)."""
    global _CLIENT
    if _CLIENT is not None:
        try:
            _CLIENT.shutdown(timeout)
        finally:
            _CLIENT = None


atexit.register(shutdown_all, 3.0)
