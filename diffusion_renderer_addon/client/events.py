"""Engine events → job registry: the pump and the message handlers of EngineClient (stdlib only; no bpy).

Runs on the main thread only (the timer, or a blocking wait). The reader thread never gets here.
"""
from __future__ import annotations

import queue
import time
from typing import Optional

from ..contract import protocol
from . import errors, jobs
from .reader import EOF, INVALID, MESSAGE

CLIENT_PROTOCOL_MAJOR = protocol.PROTOCOL_VERSION[0]      # the protocol major this add-on speaks
STOPPED, STARTING, READY, STOPPING, CRASHED, FAILED = "stopped", "starting", "ready", "stopping", "crashed", "failed"


def major(version) -> Optional[int]:
    """'1.0' / [1, 0] / 1 → 1; None when unreadable."""
    try:
        return int(version[0] if isinstance(version, (list, tuple)) else str(version).split(".")[0])
    except (ValueError, TypeError, IndexError):
        return None


WRITE_SHARE = 0.05        # the part of each light's span of the progress bar given to writing its files
STAGE_LABELS = {"load_model": "loading model", "denoise": "denoising", "convert": "converting",
                "write": "writing results"}


def progress_fraction(msg: dict) -> Optional[float]:
    """A progress message → the job's fraction done (0..1), None when it says nothing about it (loading).
    A forward job's lights split the bar evenly; within one light, denoising fills all but WRITE_SHARE."""
    stage, step, total = msg.get("stage"), msg.get("step") or 0, msg.get("total") or 0
    if stage not in ("denoise", "convert", "write"):
        return None
    light, lights = msg.get("light") or 1, msg.get("lights") or 1
    part = 1.0 - WRITE_SHARE if stage == "write" else (step / total if total else 0.0) * (1.0 - WRITE_SHARE)
    if stage == "convert":
        part = step / total if total else 0.0
    return min(1.0, ((light - 1) + part) / max(1, lights))


def progress_text(msg: dict) -> str:
    """What the job is doing, true to the message: "loading model…", "denoising 3/20, ~40 s left",
    "light 2/3: denoising 3/20", "light 2/3: writing results…"."""
    stage, step, total = msg.get("stage"), msg.get("step"), msg.get("total")
    label = STAGE_LABELS.get(stage, stage)
    text = f"{label} {step}/{total}" if total and stage != "write" else f"{label}…"
    text += f", ~{msg['eta_s']:.0f} s left" if msg.get("eta_s") and stage != "write" else ""
    if msg.get("lights") and msg["lights"] > 1 and msg.get("light"):
        text = f"light {msg['light']}/{msg['lights']}: {text}"
    return text


class EventHandlers:
    """Mixed into EngineClient: everything that happens when the engine says something (or exits)."""

    def pump(self, timeout: float = 0.0, max_events: int = 500) -> bool:
        """Drain engine events into the registry (main thread only). Waits up to ``timeout`` s for the
        first event. Returns True when anything changed."""
        before = self.registry.revision, self.state
        try:
            event = self.events.get(timeout=timeout) if timeout > 0 else self.events.get_nowait()
        except queue.Empty:
            event = None
        handled = 0
        while event is not None:
            if event.generation == self._generation:
                self._dispatch(event)
            handled += 1
            if handled >= max_events:
                break
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                event = None
        self._check_deadlines()
        return handled > 0 or (self.registry.revision, self.state) != before

    def _dispatch(self, event) -> None:
        if event.kind == MESSAGE:
            msg = event.data
            handlers = {"hello": self._on_hello, "ack": self._on_ack, "progress": self._on_progress,
                        "result": self._on_result, "error": self._on_error, "status": self._on_status,
                        "estimate": self._on_estimate}
            handler = handlers.get(msg.get("type"))
            if handler is None:
                return                                   # a message type of a newer minor version
            problems = self.protocol.validate(msg, self.protocol.TO_CLIENT)
            if problems:
                self._note(f"engine sent an invalid {msg.get('type')} message: {'; '.join(problems)}")
            try:
                handler(msg)
            except Exception as exc:  # noqa: BLE001 - one odd message must not stop the pump
                self._note(f"could not handle {msg.get('type')} message ({type(exc).__name__}: {exc})")
        elif event.kind == INVALID:
            line, problem, raw = event.data
            if raw and raw.get("type") == "hello":
                self._on_hello(raw)
            else:
                self._note(f"engine stdout, not protocol ({problem}): {line[:500]}")
        elif event.kind == EOF:
            self._on_exit()

    def _note(self, text: str) -> None:
        """A client-side remark, shown with the engine's stderr lines."""
        if self.proc is not None:
            self.proc.stderr.add(f"[client] {text}")

    def _on_hello(self, msg: dict) -> None:
        version = msg.get("protocol", msg.get("v"))
        if major(version) != CLIENT_PROTOCOL_MAJOR:
            err = errors.protocol_mismatch(version, CLIENT_PROTOCOL_MAJOR, msg.get("engine"),
                                           self.proc.engine_dir if self.proc else None)
            self._fail_start(err)
            return
        self.info, self.state = msg, READY
        outbox, self._outbox = self._outbox, []
        for job_id in outbox:
            job = self.registry.get(job_id)
            if job is not None and not job.is_terminal:
                self._send_submit(job)

    def _on_ack(self, msg: dict) -> None:
        job = self.registry.get(msg.get("job") or self._requests.get(msg.get("reply_to")))
        if msg.get("request") == "submit":
            self._requests.pop(msg.get("reply_to"), None)
        if job is None:
            return
        if msg.get("request") == "submit":
            job.accepted = True
            job.queue_position = msg.get("queue_position")
            self.registry.revision += 1
        elif msg.get("request") == "cancel" and msg.get("state") in ("removed", "unknown"):
            # removed: it was still queued; unknown: the engine no longer has it (its terminal message, had
            # there been one, came before this ack) — either way it will not run
            self._escalation.pop(job.id, None)
            self.registry.set_state(job, jobs.CANCELLED, "cancelled")

    def _on_progress(self, msg: dict) -> None:
        job = self.registry.get(msg.get("job"))
        if job is None:
            return
        stage, step, total = msg.get("stage"), msg.get("step"), msg.get("total")
        self.registry.progress(job, stage, step, total, msg.get("chunk"), msg.get("eta_s"),
                               progress_fraction(msg), progress_text(msg), light=msg.get("light"),
                               lights=msg.get("lights"))

    def _on_result(self, msg: dict) -> None:
        job = self.registry.get(msg.get("job"))
        if job is not None:
            self._escalation.pop(job.id, None)
            self.registry.set_state(job, jobs.DONE, "done", result=msg)

    def _on_estimate(self, msg: dict) -> None:
        if msg.get("reply_to") in self._estimates:
            self._estimates[msg["reply_to"]] = msg

    def _on_error(self, msg: dict) -> None:
        if msg.get("reply_to") is not None and msg.get("reply_to") in self._estimates:
            self._estimates[msg["reply_to"]] = msg
            return
        job = self.registry.get(msg.get("job") or self._requests.pop(msg.get("reply_to"), None))
        err = errors.from_engine(msg, self.stderr_tail(), self.log_path)
        if job is None:
            if self.state == STARTING:      # e.g. torch missing: the engine says why, then exits
                err = errors.engine_start_failed(err.message, self.stderr_tail(), err.log_path, err.hint)
                self._start_error = err
            self.last_error = err
            return
        self._escalation.pop(job.id, None)
        if msg.get("code") == "cancelled":
            self.registry.set_state(job, jobs.CANCELLED, "cancelled")
        else:
            self.registry.set_state(job, jobs.FAILED, err.short(), error=err)

    def _on_status(self, msg: dict) -> None:
        self.last_status = msg

    def _fail_start(self, err: errors.ClientError) -> None:
        self.last_error, self._expect_exit = err, True
        self._fail_jobs(err, [self.registry.get(j) for j in self._outbox])
        self._outbox = []
        if self.proc is not None:
            self.proc.stop(2.0)
        self.state = FAILED

    def _fail_jobs(self, err: errors.ClientError, job_list) -> None:
        for job in job_list:
            if job is None or job.is_terminal:
                continue
            if job.state == jobs.CANCELLING:
                self.registry.set_state(job, jobs.CANCELLED, "cancelled (engine stopped)")
            else:
                job_err = errors.ClientError(err.code, err.message, err.hint, err.details, err.log_path, job=job.id)
                self.registry.set_state(job, jobs.FAILED, job_err.short(), error=job_err)

    def _on_exit(self) -> None:
        proc = self.proc
        if proc is None:
            return
        rc = proc.wait(3.0)
        if rc is None:
            proc.kill()
            rc = proc.wait(3.0)
        proc.finish_output(2.0)
        tail = proc.stderr.tail(40)
        expected = self._expect_exit
        if self.state == STARTING and self._start_error is not None:
            self._start_error.details = "\n".join(tail) or self._start_error.details
            self._fail_start(self._start_error)
            err = self._start_error
        elif self.state == STARTING:
            err = errors.engine_start_failed(
                f"the engine {errors.describe_returncode(rc)} before its hello", tail, self.log_path)
            self._fail_start(err)
        elif self.state == FAILED:
            err = self.last_error
        else:
            during = "running a job" if self.registry.active() else "idle"
            err = errors.engine_crashed(rc, tail, self.log_path, during=during)
            if expected:
                err = errors.ClientError(errors.ENGINE_STOPPED, "The engine was stopped before the job finished.",
                                         "Run the job again.", err.details, err.log_path)
            else:
                self.last_error = err
            self.state = STOPPED if expected else CRASHED
        self._fail_jobs(err, self.registry.active())
        self._outbox, self._escalation = [], {}
        proc.release()
        self.proc = None

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        if self.state == STARTING and self.proc is not None and now - self.proc.started > self.config.hello_timeout:
            self._fail_start(errors.engine_start_failed(f"no hello within {self.config.hello_timeout:g} s",
                                                        self.stderr_tail(), self.log_path))
        for job_id, esc in list(self._escalation.items()):
            job = self.registry.get(job_id)
            if job is None or job.is_terminal or self.proc is None:
                self._escalation.pop(job_id, None)
            elif esc["signalled"] is None and time.time() >= self._cancel_deadline(job, esc["since"]):
                self.proc.interrupt()                    # cancels the running job, keeps the engine
                esc["signalled"] = time.time()
            elif esc["signalled"] is not None and time.time() >= esc["signalled"] + self.config.kill_grace:
                self._expect_exit = True                 # hung (driver?): kill; restarted on the next job
                self.proc.kill()
                self._escalation.pop(job_id, None)

    def _cancel_deadline(self, job, since: float) -> float:
        """When a cancelled job that is still running gets SIGINT (docs/PROTOCOL.md §6): two denoising
        steps (at least ``cancel_grace``) after the cancel or the last progress; ``finish_grace`` while
        the engine loads the model or writes the results (neither stops at a cancel)."""
        last = job.progress_log[-1]["t"] if job.progress_log else since
        if job.stage == "load_model" or (job.total and job.step >= job.total):
            return max(since, last) + self.config.finish_grace
        return max(since, last) + max(self.config.cancel_grace, 2 * step_seconds(job))


def step_seconds(job) -> float:
    """Seconds per denoising step, from the job's last two denoise progress reports (0 if unknown)."""
    reports = [p for p in job.progress_log if p["stage"] == "denoise" and p["step"] is not None]
    if len(reports) < 2 or reports[-1]["step"] <= reports[-2]["step"]:
        return 0.0
    a, b = reports[-2], reports[-1]
    return (b["t"] - a["t"]) / (b["step"] - a["step"])
