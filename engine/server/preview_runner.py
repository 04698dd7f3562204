"""The server's live previews: one preview thread beside the job worker, latest request wins.

A ``preview`` request (docs/PROTOCOL.md) is acknowledged at once and runs on the preview thread, not
behind the job queue. A newer preview supersedes the older ones: a queued one ends at once, the running one
at its next denoising step (the sampler checks ``should_cancel`` before every step), each with ``error``
code ``cancelled``, message ``superseded by preview <newer id>``. Previews keep their caches (engine/jobs/
preview_job.py) across requests and take their renderer from the server's ModelCache, warm for jobs too.

Sharing a renderer: a loaded renderer must not run two calls at once (the LoRA is folded into its weights
per call, memory modes move weights per call), so every call of a renderer by a job (one segment) and every
preview hold the renderer's gate (:class:`RendererGates`). A preview that arrives while a forward job of the
same model runs waits for the job's current segment, then goes before the job's next one; a preview on
another model (an inverse job running) runs beside it. Loads are serialised (one at a time)."""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine.contract import protocol
from engine.server.model_cache import ModelCache

log = logging.getLogger("engine.server")
PROGRESS_INTERVAL = 0.1


class RendererGates:
    """One gate per loaded renderer: a job's call or a preview holds it; waiting previews go first."""

    def __init__(self):
        self._cond = threading.Condition()
        self._busy: set = set()
        self._waiting: dict = {}        # renderer id → previews waiting for it

    @contextlib.contextmanager
    def use(self, renderer, *, preview: bool = False, should_cancel=None):
        key = id(renderer)
        with self._cond:
            if preview:
                self._waiting[key] = self._waiting.get(key, 0) + 1
            try:
                while key in self._busy or (not preview and self._waiting.get(key)):
                    self._cond.wait(0.05)
                    if should_cancel is not None and should_cancel():
                        from engine.pipelines.sampling import Cancelled

                        raise Cancelled("cancelled while waiting for the running job's current segment")
            finally:
                if preview:
                    self._waiting[key] -= 1
            self._busy.add(key)
        try:
            yield renderer
        finally:
            with self._cond:
                self._busy.discard(key)
                self._cond.notify_all()


class _GatedRenderer:
    """A job's view of a renderer: every call (a segment) holds the renderer's gate."""

    def __init__(self, renderer, gates: RendererGates):
        self._r, self._gates = renderer, gates

    def __getattr__(self, name):
        return getattr(self._r, name)

    def __call__(self, *args, **kwargs):
        with self._gates.use(self._r):
            return self._r(*args, **kwargs)


class SharedModelCache(ModelCache):
    """The server's ModelCache, shared by the job worker and the preview thread: one load at a time, and the
    renderers handed to jobs call through their gate."""

    def __init__(self, max_models: int = 1):
        super().__init__(max_models)
        self.gates = RendererGates()
        self._load_lock = threading.Lock()

    def get_raw(self, *args, **kwargs) -> tuple:
        with self._load_lock:
            return super().get(*args, **kwargs)

    def get(self, *args, **kwargs) -> tuple:
        renderer, seconds, cached = self.get_raw(*args, **kwargs)
        return _GatedRenderer(renderer, self.gates), seconds, cached


@dataclass
class PreviewRequest:
    id: str
    msg: dict
    cancel: threading.Event = field(default_factory=threading.Event)
    superseded_by: str | None = None
    received: float = field(default_factory=time.monotonic)


class PreviewRunner(threading.Thread):
    def __init__(self, send, cache: SharedModelCache, send_lock, log_file=None):
        super().__init__(name="preview", daemon=True)
        self.send, self.cache, self.send_lock, self.log_file = send, cache, send_lock, log_file
        self._cond = threading.Condition()
        self.pending: PreviewRequest | None = None
        self.running: PreviewRequest | None = None
        self.stopping = False
        self._previewer = None

    # -- other threads --------------------------------------------------------------------------
    def submit(self, msg: dict) -> list[PreviewRequest]:
        """Queue a preview (the caller sends its ack first, under the writer's lock); returns the queued
        preview it replaced (the caller sends its error); the running one is told to stop."""
        req = PreviewRequest(msg["job"], msg)
        with self._cond:
            if self.stopping:
                raise RuntimeError("the engine is shutting down")
            dropped = [self.pending] if self.pending is not None else []
            for old in (self.running, self.pending):
                if old is not None:
                    old.superseded_by = req.id
                    old.cancel.set()
            self.pending = req
            self._cond.notify()
        return dropped

    def cancel(self, preview_id: str) -> str:
        """'cancelling' (running), 'removed' (queued: its error is sent here) or 'unknown'."""
        with self._cond:
            if self.running is not None and self.running.id == preview_id:
                self.running.cancel.set()
                return "cancelling"
            req = self.pending if self.pending is not None and self.pending.id == preview_id else None
            if req is not None:
                self.pending = None
        if req is None:
            return "unknown"
        self.send(self.cancelled_message(req, "cancel message"))
        return "removed"

    def stop(self, reason: str) -> None:
        with self._cond:
            self.stopping = True
            req, self.pending = self.pending, None
            if self.running is not None:
                self.running.cancel.set()
            self._cond.notify_all()
        if req is not None:
            self.send(self.cancelled_message(req, reason))

    def cancelled_message(self, req: PreviewRequest, reason: str) -> dict:
        text = f"superseded by preview {req.superseded_by}" if req.superseded_by else f"preview cancelled ({reason})"
        return protocol.error("cancelled", text, job=req.id, reply_to=req.msg.get("id"))

    # -- the preview thread ----------------------------------------------------------------------
    def run(self) -> None:
        while True:
            with self._cond:
                while self.pending is None and not self.stopping:
                    self._cond.wait()
                if self.stopping:
                    return
                req, self.pending = self.pending, None
                self.running = req
            try:
                msg = self._execute(req)
            except BaseException as exc:  # noqa: BLE001 - the thread must survive anything
                log.exception("preview %s: unexpected failure", req.id)
                msg = protocol.error("internal", f"{type(exc).__name__}: {exc}", job=req.id,
                                     reply_to=req.msg.get("id"))
            with self.send_lock:
                with self._cond:
                    self.running = None
                self.send(msg)

    def _previewer_for(self, stack: contextlib.ExitStack, req: PreviewRequest, t0: float):
        from engine.jobs.preview_job import Previewer

        def renderer_for(settings):
            def on_load():
                self.send(protocol.progress(req.id, "load_model", 0, 0, elapsed_s=time.monotonic() - t0))

            renderer, _, _ = self.cache.get_raw("forward", settings.model, settings.revision, settings.device,
                                                settings.dtype, settings.memory,
                                                allow_download=req.msg.get("params", {}).get("allow_download", True),
                                                on_load=on_load)
            return stack.enter_context(self.cache.gates.use(renderer, preview=True, should_cancel=req.cancel.is_set))

        if self._previewer is None:
            self._previewer = Previewer(renderer_for)
        self._previewer.renderer_for = renderer_for
        return self._previewer

    def _execute(self, req: PreviewRequest) -> dict:
        from engine.errors import classify

        msg, t0 = req.msg, time.monotonic()
        last = [0.0, None]

        def listener(info: dict) -> None:
            now, stage = time.monotonic(), info["stage"]
            if stage == "load_model":
                return                       # sent by the cache's on_load, only when a model really loads
            if stage != last[1] or info["step"] >= info["total"] or now - last[0] >= PROGRESS_INTERVAL:
                last[0], last[1] = now, stage
                self.send(protocol.progress(req.id, stage, info["step"], info["total"], elapsed_s=now - t0))

        try:
            if req.cancel.is_set():
                from engine.pipelines.sampling import Cancelled

                raise Cancelled("cancelled before it started")
            with contextlib.ExitStack() as stack:
                previewer = self._previewer_for(stack, req, t0)
                summary = previewer.preview(Path(msg["set"]), Path(msg["hdri"]), msg["frame"], Path(msg["out"]),
                                            msg.get("params") or {}, should_cancel=req.cancel.is_set,
                                            listener=listener)
        except BaseException as exc:  # noqa: BLE001 - everything becomes an error message
            c = classify(exc, self.log_file or "stderr")
            if req.cancel.is_set():
                log.info("preview %s: %s", req.id, f"superseded by {req.superseded_by}" if req.superseded_by
                         else "cancelled")
                return self.cancelled_message(req, "cancel message")
            if c.code == "internal":
                log.exception("preview %s failed", req.id)
            return protocol.error(c.code, c.message, c.hint, job=req.id, reply_to=msg.get("id"),
                                  problems=list(c.details) or None,
                                  log_file=str(self.log_file) if self.log_file else None)
        summary.pop("image", None)
        outputs = summary.pop("outputs")
        summary.pop("out", None)
        log.info("preview %s: frame %s in %.2f s", req.id, summary["frame"], summary["latency_s"])
        return protocol.result(req.id, protocol.PREVIEW, [], outputs[0], summary,
                               {"total": round(time.monotonic() - req.received, 3)}, reply_to=msg.get("id"),
                               outputs=outputs)
