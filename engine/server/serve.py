"""`diffusion-renderer serve`: the JSON-lines protocol on stdin/stdout (docs/PROTOCOL.md).

Threads: the main thread starts everything, then waits for a stop and handles signals (set as flags by
the handlers); a reader thread decodes stdin lines and dispatches them (all quick: queue, flags,
replies); the worker thread runs the jobs; a parent-watch thread notices the parent's death. Every
protocol write goes through one Writer (one lock, one line per message). No network port is opened.
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import threading
import time
from pathlib import Path

from engine import __version__
from engine.contract import protocol
from engine.server import containment, lifecycle
from engine.server.model_cache import ModelCache, cuda_allocated
from engine.server.preview_runner import PreviewRunner, SharedModelCache
from engine.server.request_pool import BoundedPool
from engine.server.worker import PROGRESS_INTERVAL, DuplicateJob, Job, Worker

log = logging.getLogger("engine.server")

HINTS = {
    "bad_message": "send one JSON object per line, built with engine.contract.protocol.encode() (docs/PROTOCOL.md)",
    "unknown_type": "see docs/PROTOCOL.md for the message types of this protocol version",
    "version_mismatch": f"this engine speaks protocol {protocol.VERSION}; update the engine or the add-on so the "
                        "major versions match",
    "invalid_params": "fix the listed fields (docs/PROTOCOL.md lists every field and its type)",
    "internal": "check the engine's Python environment (bin/diffusion-renderer info); the log has the traceback",
    "busy": "send the request again after one of the earlier ones has been answered",
}
ESTIMATE_WORKERS, ESTIMATE_WAITING = 2, 8     # estimate requests traced at once / queued behind them (docs/PROTOCOL.md)


def add_serve_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--log-file", default=None, metavar="PATH",
                   help="log file (default: <user cache dir>/diffusion-renderer/logs/engine-<pid>.log)")
    p.add_argument("--max-models", type=int, default=1, metavar="N",
                   help="loaded models kept between jobs, least recently used dropped first (default 1; 0 = none)")
    p.add_argument("--parent-pid", type=int, default=None, metavar="PID",
                   help="exit when this process exits (besides watching the parent process)")
    p.add_argument("--stop-timeout", type=float, default=60.0, metavar="S",
                   help="seconds a cancelled job may take to stop when the engine exits (default 60)")
    p.add_argument("--cluster", default=None, metavar="local[:N]|auto|HOST:PORT",
                   help="run the inverse/forward jobs' segments on this Ray cluster (docs/CLUSTER.md); hello reports "
                        "it (default: in this process)")
    return p


class Writer:
    """Protocol output: one encoded line per message, written whole under a lock; validated first."""

    def __init__(self, fd: int, on_broken):
        self.fd, self.on_broken = fd, on_broken
        self.lock = threading.RLock()
        self.closed = False

    def write(self, msg: dict) -> bool:
        problems = protocol.validate(msg, protocol.TO_CLIENT)
        if problems:
            log.error("engine bug: invalid outgoing %s message: %s", msg.get("type"), "; ".join(problems))
        try:
            data = (protocol.encode(msg) + "\n").encode("ascii")
        except protocol.ProtocolError as exc:
            log.error("engine bug: cannot encode a %s message (%s)", msg.get("type"), exc)
            data = (protocol.encode(protocol.error("internal", f"unencodable {msg.get('type')} message: {exc}",
                                                   job=msg.get("job"))) + "\n").encode("ascii")
        with self.lock:
            if self.closed:
                return False
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self.fd, view):]
            except OSError as exc:
                self.closed = True
                log.warning("stdout closed (%s)", exc)
                self.on_broken("stdout closed")
                return False
        return True


def engine_info(cache: ModelCache, log_file: Path | None, cluster=None) -> dict:
    import torch

    from engine.hub import describe_local_models

    try:
        models = describe_local_models()
    except Exception as exc:  # noqa: BLE001 - a broken cache must not stop the handshake
        log.warning("could not list local models: %s", exc)
        models = []
    devices = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            devices.append({"index": i, "name": props.name, "total_memory": int(props.total_memory),
                            "capability": f"{props.major}.{props.minor}"})
    return {"protocol": protocol.VERSION, "engine": __version__, "pid": os.getpid(),
            "python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
            "device": "cuda" if torch.cuda.is_available() else "cpu", "devices": devices, "models": models,
            "max_models": cache.max_models, "log_file": str(log_file) if log_file else None,
            "loaded_models": cache.loaded(), "cluster": cluster.describe() if cluster is not None else None}


class Server:
    def __init__(self, in_fd: int, out_fd: int, log_file: Path | None, max_models: int = 1,
                 parent_pid: int | None = None, stop_timeout: float = 60.0, cluster: str | None = None):
        self.in_fd, self.log_file, self.stop_timeout = in_fd, log_file, stop_timeout
        self.cluster_spec, self.cluster = cluster, None      # connected in run(), before the hello
        self.writer = Writer(out_fd, self.request_stop)
        self.cache: ModelCache = SharedModelCache(max_models)    # shared by the worker and the preview thread
        self.worker = Worker(self.send, self.cache, log_file, send_lock=self.writer.lock)
        self.previews = PreviewRunner(self.send, self.cache, self.writer.lock, log_file)
        self.parent_watch = lifecycle.ParentWatch(self.request_stop, parent_pid)
        self.stop_event = threading.Event()
        self.stop_reason: str | None = None
        self._interrupts = 0        # set by the SIGINT handler, handled by the main loop
        self._terminate = False     # set by the SIGTERM/SIGHUP handler
        self._rejected = 0          # malformed lines so far (the first 10 are logged at INFO)
        # requests served beside the job queue: a fixed number of threads, the rest answered "busy"
        self.estimates = BoundedPool("estimate", ESTIMATE_WORKERS, ESTIMATE_WAITING)
        self.downloads = {name: BoundedPool(f"download-{name}", 1, 0) for name in protocol.DOWNLOAD_MODELS}

    def send(self, msg: dict) -> bool:
        return self.writer.write(msg)

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.stop_event.set()

    # -- signals (flags only: the handlers run between bytecodes of the main thread) --------
    def _on_sigint(self) -> None:
        self._interrupts += 1

    def _on_sigterm(self) -> None:
        self._terminate = True

    def _handle_signals(self) -> None:
        while self._interrupts:
            self._interrupts -= 1
            with self.writer.lock:  # the ack goes out before the job's terminal message
                job = self.worker.cancel_running("SIGINT")
                self.send(protocol.ack("interrupt", job=job.id if job else None, state="cancelling" if job else "idle",
                                       step=job.step if job else None))
            log.info("SIGINT: %s", f"cancelling job {job.id}" if job else "no job running")
        if self._terminate:
            self.request_stop("SIGTERM")

    # -- main ---------------------------------------------------------------------------------------
    def run(self) -> int:
        lifecycle.install_signal_handlers(self._on_sigint, self._on_sigterm)
        if self.cluster_spec:
            from engine.cluster.job_runner import ClusterRunner

            self.cluster = self.worker.cluster = ClusterRunner(self.cluster_spec)
            log.info("cluster %s: %s", self.cluster_spec, self.cluster.describe())
        self.info = engine_info(self.cache, self.log_file, self.cluster)
        log.info("engine %s, protocol %s, pid %d, torch %s, device %s", __version__, protocol.VERSION, os.getpid(),
                 self.info["torch"], self.info["device"])
        self.send(protocol.hello_reply(self.info))
        self.worker.start()
        self.previews.start()
        threading.Thread(target=self._read_loop, name="reader", daemon=True).start()
        self.parent_watch.start()
        while not self.stop_event.wait(0.05):
            self._handle_signals()
        self._handle_signals()
        return self._shutdown()

    def _shutdown(self) -> int:
        log.info("stopping: %s", self.stop_reason)
        for job in self.worker.stop(self.stop_reason or "stop"):
            self.send(protocol.error("cancelled", f"job cancelled before it started ({self.stop_reason})",
                                     job=job.id, reply_to=job.reply_to))
        for pool in (self.estimates, *self.downloads.values()):
            pool.shutdown()
        self.previews.stop(self.stop_reason or "stop")
        self.worker.join(self.stop_timeout)
        if self.worker.is_alive():
            log.warning("the running job did not stop within %.0f s; exiting anyway", self.stop_timeout)
        if self.cluster is not None:
            self.cluster.close()
        log.info("engine stopped")
        return 0

    # -- stdin --------------------------------------------------------------------------------------
    def _read_loop(self) -> None:
        for line in lifecycle.read_lines(self.in_fd, protocol.MAX_LINE_BYTES + 1):
            try:
                self.handle_line(line)
            except Exception as exc:  # noqa: BLE001 - one bad line never takes the engine down
                log.exception("while handling a line")
                self.send(protocol.error("internal", f"{type(exc).__name__}: {exc}", log_file=self._log_str()))
        self.request_stop("stdin closed")

    def _log_str(self) -> str | None:
        return str(self.log_file) if self.log_file else None

    def handle_line(self, line) -> None:
        if isinstance(line, lifecycle.Oversize):
            self.send(protocol.error("bad_message", f"line of {line.size} bytes exceeds the "
                                     f"{protocol.MAX_LINE_BYTES} byte limit", HINTS["bad_message"]))
            return
        if not line.strip():
            return
        try:
            msg = protocol.check(protocol.decode(line), protocol.TO_ENGINE)
        except protocol.ProtocolError as exc:
            self._rejected += 1
            log.log(logging.INFO if self._rejected <= 10 else logging.DEBUG, "rejected line #%d (%s): %s",
                    self._rejected, exc.code, exc)
            self.send(protocol.error(exc.code, str(exc), HINTS.get(exc.code), job=exc.job, reply_to=exc.reply_to,
                                     problems=exc.problems[:20]))
            return
        getattr(self, f"on_{msg['type']}")(msg)

    # -- messages -----------------------------------------------------------------------------------
    def on_hello(self, msg: dict) -> None:
        if msg.get("client"):
            log.info("client: %s", msg["client"])
        info = engine_info(self.cache, self.log_file, self.cluster)
        self.send(protocol.hello_reply(info, reply_to=msg.get("id")))

    def on_submit(self, msg: dict) -> None:
        rid, job_id = msg.get("id"), msg["job"]
        job_dir = Path(msg["job_dir"]).expanduser()
        if not job_dir.is_absolute():
            self.send(protocol.error("invalid_params", f"field 'job_dir': must be an absolute path, got "
                                     f"{msg['job_dir']!r}", HINTS["invalid_params"], job=job_id, reply_to=rid))
            return
        problems = containment.submit_problems(job_dir, msg["params"])
        if problems:
            log.info("job %s refused: %s", job_id, "; ".join(problems))
            self.send(protocol.error("invalid_params", problems[0] if len(problems) == 1 else
                                     f"{problems[0]} (and {len(problems) - 1} more problem(s))",
                                     containment.FIX, job=job_id, reply_to=rid, problems=problems))
            return
        job = Job(job_id, msg["kind"], job_dir, msg["params"], reply_to=rid)
        with self.writer.lock:  # the ack goes out before the worker can say anything about the job
            try:
                position = self.worker.submit(job)
            except DuplicateJob as exc:
                self.send(protocol.error("invalid_params", str(exc), "choose a new job id", job=job_id, reply_to=rid))
                return
            except RuntimeError as exc:
                self.send(protocol.error("cancelled", str(exc), job=job_id, reply_to=rid))
                return
            self.send(protocol.ack("submit", rid, job=job_id, state="queued", queue_position=position))
        log.info("job %s (%s) queued at position %d", job_id, msg["kind"], position)

    def on_cancel(self, msg: dict) -> None:
        with self.writer.lock:  # the ack goes out before the job's terminal message
            state, job = self.worker.cancel(msg["job"])
            if state == "unknown" and self.previews.cancel(msg["job"]) != "unknown":
                self.send(protocol.ack("cancel", msg.get("id"), job=msg["job"], state="cancelling"))
                return
            self.send(protocol.ack("cancel", msg.get("id"), job=msg["job"], state=state,
                                   step=job.step if state == "cancelling" else None))
        log.info("cancel %s: %s", msg["job"], state)
        if state == "removed":
            self.send(protocol.error("cancelled", "job cancelled before it started", job=job.id,
                                     reply_to=job.reply_to))

    def on_estimate(self, msg: dict) -> None:
        """Predicted time and peak memory of a job (engine/perf/cost_model.py); traced on the meta device
        on one of ESTIMATE_WORKERS pool threads (≈ 1–5 s the first time for a size), so a running job is not
        held up; beyond ESTIMATE_WAITING queued ones the request is answered ``busy``."""
        def run():
            from engine.jobs.job_estimate import estimate_job

            try:
                est = estimate_job(msg["kind"], msg["size"], msg.get("params"))
            except Exception as exc:  # noqa: BLE001 - a bad size or setting, reported to the client
                self.send(protocol.error("invalid_params", f"cannot estimate this job: {exc}",
                                         HINTS["invalid_params"], reply_to=msg.get("id")))
                return
            self.send(protocol.estimate_reply(msg["kind"], est, reply_to=msg.get("id")))

        if not self.estimates.try_submit(run):
            self.send(protocol.error("busy", self.estimates.busy_message("estimate"), HINTS["busy"],
                                     reply_to=msg.get("id")))

    def on_download(self, msg: dict) -> None:
        """Fetch a published model (engine/hub.py, pinned revision) on its model's one download thread: ack,
        progress (stage "download", MiB), then a "result" of kind "download" (out = the snapshot folder) or an
        error; a second download of a model while one runs is answered ``busy`` (no ack)."""
        rid, job_id, name = msg.get("id"), msg["job"], msg["model"]
        pool = self.downloads[name]

        def report(done: int, total: int, last=[0.0]) -> None:  # noqa: B006 - per-download throttle state
            now = time.monotonic()
            if done < total and now - last[0] < PROGRESS_INTERVAL:
                return
            last[0] = now
            self.send(protocol.progress(job_id, "download", done >> 20, max(1, total >> 20),
                                        elapsed_s=now - started))

        def run() -> None:
            from engine.hub import WeightsUnavailableError, download

            try:
                path = download(name, msg.get("revision"), progress=False, on_progress=report)
            except (WeightsUnavailableError, ValueError) as exc:
                reason = getattr(exc, "reason", "") or str(exc)
                self.send(protocol.error("weights_unavailable", f"cannot download {name}: {reason}",
                                         "check the network connection and that the Hugging Face Hub is reachable",
                                         job=job_id, reply_to=rid))
                return
            except Exception as exc:  # noqa: BLE001 - reported to the client, the log has the traceback
                log.exception("download of %s failed", name)
                self.send(protocol.error("internal", f"download of {name} failed: {type(exc).__name__}: {exc}",
                                         HINTS["internal"], job=job_id, reply_to=rid, log_file=self._log_str()))
                return
            self.send(protocol.result(job_id, "download", [], str(path),
                                      {"model": name, "commit": path.name, "path": str(path)},
                                      {"total": time.monotonic() - started}, reply_to=rid))
            log.info("download %s: %s", name, path)

        started = time.monotonic()
        with self.writer.lock:  # the ack goes out before the download thread can report anything
            if not pool.try_submit(run):
                self.send(protocol.error("busy", f"a download of {name} is already running; this one was not "
                                         "started", "wait for its result, then send the request again if needed",
                                         job=job_id, reply_to=rid))
                return
            self.send(protocol.ack("download", rid, job=job_id, state="queued"))

    def on_preview(self, msg: dict) -> None:
        """A live preview (engine/server/preview_runner.py): ack, progress, one result or error; it supersedes
        any running or queued preview (their error: cancelled, "superseded by preview <id>")."""
        rid, preview_id = msg.get("id"), msg["job"]
        problem = containment.check_output_path(Path(msg["out"]).parent, "out")
        if problem is None and not Path(msg["out"]).parent.is_dir():
            problem = f"field 'out': folder {Path(msg['out']).parent} does not exist; create it or choose another file"
        if problem:
            self.send(protocol.error("invalid_params", problem, HINTS["invalid_params"], job=preview_id, reply_to=rid))
            return
        with self.writer.lock:  # the ack goes out before the preview thread can say anything about it
            try:
                dropped = self.previews.submit(msg)
            except RuntimeError as exc:
                self.send(protocol.error("cancelled", str(exc), job=preview_id, reply_to=rid))
                return
            self.send(protocol.ack("preview", rid, job=preview_id, state="queued"))
            for old in dropped:
                self.send(self.previews.cancelled_message(old, "superseded"))
        log.info("preview %s queued (frame %s)", preview_id, msg["frame"])

    def on_status(self, msg: dict) -> None:
        with self.writer.lock:  # consistent with the job messages around it
            running, queued = self.worker.snapshot()
            self.send(protocol.status_reply(running, queued, self.cache.loaded(), reply_to=msg.get("id")))

    def on_unload(self, msg: dict) -> None:
        unloaded = self.cache.unload()
        self.send(protocol.ack("unload", msg.get("id"), state="done", unloaded=unloaded,
                               cuda_memory_allocated=cuda_allocated()))

    def on_shutdown(self, msg: dict) -> None:
        self.send(protocol.ack("shutdown", msg.get("id"), state="stopping"))
        self.request_stop("shutdown message")


def main(args) -> int:
    """Entry point of `diffusion-renderer serve` (args from add_serve_arguments + the global -v)."""
    in_fd, out_fd = lifecycle.reserve_stdio()
    log_file = lifecycle.setup_logging(args.log_file, getattr(args, "verbose", False))
    code = 1
    server = Server(in_fd, out_fd, log_file, max_models=args.max_models, parent_pid=args.parent_pid,
                    stop_timeout=args.stop_timeout, cluster=getattr(args, "cluster", None))
    try:
        code = server.run()
    except Exception as exc:  # noqa: BLE001 - start-up failure: tell the client, the log has the traceback
        log.exception("the engine failed")
        server.send(protocol.error("internal", f"engine start-up failed: {type(exc).__name__}: {exc}",
                                   HINTS.get("internal"), log_file=server._log_str()))
    finally:
        logging.shutdown()
        for stream in (sys.stderr, sys.__stderr__):
            try:
                stream.flush()
            except (AttributeError, OSError, ValueError):
                pass
    # os._exit: a job that did not stop in time or a library's non-daemon thread must not keep the
    # process alive after the protocol said goodbye
    os._exit(code)
