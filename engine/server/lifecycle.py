"""Process plumbing for `serve`: stdout reserved for the protocol, the log file, signals, parent watch.

Nothing here imports torch."""
from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger("engine.server")

KEEP_LOGS = 20


class Oversize:
    """Stands for a line longer than the limit (its bytes were discarded)."""

    def __init__(self, size: int):
        self.size = size


def reserve_stdio() -> tuple[int, int]:
    """Take the protocol's stdin/stdout away from everything else in the process.

    Returns private (inheritable=False) duplicates of fd 0 and fd 1; afterwards fd 1 and sys.stdout
    point at stderr (a stray print or a C library's write lands in the log stream, never in the
    protocol) and fd 0 / sys.stdin read /dev/null, so child processes (ffmpeg) cannot eat our input."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    in_fd, out_fd = os.dup(0), os.dup(1)
    os.dup2(2, 1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdout = sys.stderr
    sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    return in_fd, out_fd


def read_lines(fd: int, limit: int) -> Iterator[bytes | Oversize]:
    """Lines (without the newline) from a raw fd until EOF. A line longer than ``limit`` bytes is not
    kept in memory: its bytes are skipped and one ``Oversize`` is yielded in its place. Raw os.read (no
    buffered file object) so a thread blocked here never holds a lock the interpreter needs at exit."""
    buf = bytearray()
    skipping = 0
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except InterruptedError:
            continue
        except OSError as exc:
            log.warning("stdin read failed (%s); treating it as closed", exc)
            chunk = b""
        if not chunk:
            if skipping:
                yield Oversize(skipping)
            elif buf:
                yield bytes(buf)
            return
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            piece = chunk[start:] if nl < 0 else chunk[start:nl]
            if skipping:
                skipping += len(piece)
            else:
                buf += piece
                if len(buf) > limit:
                    skipping, buf = len(buf), bytearray()
            if nl < 0:
                break
            if skipping:
                yield Oversize(skipping)
            else:
                yield bytes(buf)
            skipping, buf = 0, bytearray()
            start = nl + 1


# ----------------------------------------------------------------------------- logging
def default_log_dir() -> Path:
    from engine.user_cache import user_cache_dir

    return user_cache_dir() / "logs"


def _prune(folder: Path, keep: int) -> None:
    try:
        logs = sorted(folder.glob("engine-*.log"), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return
    for old in logs[keep:]:
        try:
            old.unlink()
        except OSError:
            pass


def setup_logging(log_file: str | None, verbose: bool) -> Path | None:
    """Logs to stderr and to a file (default ``<user cache>/diffusion-renderer/logs/engine-<pid>.log``,
    the newest 20 kept). Returns the log file's path, or None when it could not be opened."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s")
    level = logging.DEBUG if verbose else logging.INFO
    root.setLevel(logging.INFO)
    logging.getLogger("engine").setLevel(level)
    err = logging.StreamHandler(sys.stderr)
    err.setFormatter(fmt)
    root.addHandler(err)
    logging.captureWarnings(True)
    path = Path(log_file).expanduser() if log_file else default_log_dir() / f"engine-{os.getpid()}.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(path, encoding="utf-8")
    except OSError as exc:
        log.warning("cannot write the log file %s (%s); logging to stderr only", path, exc)
        return None
    fh.setFormatter(fmt)
    root.addHandler(fh)
    try:
        faulthandler.enable(fh.stream, all_threads=True)  # a hard crash still leaves its traceback
    except (AttributeError, ValueError, OSError):
        pass
    if not log_file:
        _prune(path.parent, KEEP_LOGS)
    return path.resolve()


# ----------------------------------------------------------------------------- signals
def install_signal_handlers(on_interrupt: Callable[[], None], on_terminate: Callable[[], None]) -> None:
    """SIGINT (the client's escalation; on Windows CTRL_BREAK_EVENT → SIGBREAK, as a process started with
    CREATE_NEW_PROCESS_GROUP cannot get Ctrl+C) → ``on_interrupt``: cancel the running job, keep serving.
    SIGTERM/SIGHUP → ``on_terminate``: stop cleanly. Handlers must only set flags."""
    for name in ("SIGINT", "SIGBREAK"):
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, lambda *_: on_interrupt())
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None:
            try:
                signal.signal(sig, lambda *_: on_terminate())
            except (OSError, ValueError):
                pass


# ----------------------------------------------------------------------------- parent watch
def _pid_alive_posix(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a dead but unreaped parent (zombie) counts as dead
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


class _WinProcess:
    """A handle kept open from the start, so the watch cannot be fooled by pid reuse."""

    def __init__(self, pid: int):
        import ctypes

        self.k32 = ctypes.WinDLL("kernel32", use_last_error=True)
        self.handle = self.k32.OpenProcess(0x00100000 | 0x1000, False, pid)  # SYNCHRONIZE | QUERY_LIMITED

    def alive(self) -> bool:
        if not self.handle:
            return False
        return self.k32.WaitForSingleObject(self.handle, 0) != 0  # WAIT_OBJECT_0 = exited


class ParentWatch(threading.Thread):
    """Calls ``on_death(reason)`` once when the parent goes away: ``os.getppid()`` changes (POSIX
    re-parenting) or the ``parent_pid`` process has exited (``--parent-pid``; on Windows the default,
    the pid of the process that started the engine)."""

    def __init__(self, on_death: Callable[[str], None], parent_pid: int | None = None, interval: float = 0.5):
        super().__init__(name="parent-watch", daemon=True)
        self.on_death, self.interval = on_death, interval
        self.initial_ppid = os.getppid()
        if parent_pid is None and sys.platform == "win32":
            parent_pid = self.initial_ppid
        self.parent_pid = parent_pid
        self._win = _WinProcess(parent_pid) if parent_pid and sys.platform == "win32" else None

    def check(self) -> str | None:
        if sys.platform != "win32" and os.getppid() != self.initial_ppid:
            return f"parent process {self.initial_ppid} exited"
        if self.parent_pid:
            alive = self._win.alive() if self._win else _pid_alive_posix(self.parent_pid)
            if not alive:
                return f"parent process {self.parent_pid} (--parent-pid) exited"
        return None

    def run(self) -> None:
        while True:
            time.sleep(self.interval)
            reason = self.check()
            if reason:
                self.on_death(reason)
                return
