"""An advisory lock per output folder: two runs never write into one set at the same time.

``<out>/.dr-lock`` holds the holder's pid, host, command and start time (JSON). The lock itself is the
operating system's (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows), so it dies with its process: a
lock file left by a killed run is simply reclaimed by the next one. A second run into a locked folder fails at
once (``FolderLockedError``) naming the other process and the fix. The file is removed on release.

``locked_outputs(folders)`` takes the locks of every folder a job writes (its set folders), in a stable
order, before any work; the jobs (inverse, forward, gbuffers) call it first thing.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

from engine.errors import UserError

LOCK_NAME = ".dr-lock"
_HELD: dict[str, list] = {}        # lock path → [thread that holds it, depth]: re-entrant within one thread


class FolderLockedError(UserError):
    """Another run is writing into the output folder."""


def _holder_text(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        info = {}
    if not info.get("pid"):
        return "another process (it is just starting)"
    since = info.get("since")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else "?"
    return f"process {info['pid']} on {info.get('host', '?')} since {when}: {info.get('command') or '?'}"


class OutLock:
    """The lock of one output folder; a context manager (``acquire`` / ``release``)."""

    def __init__(self, folder, command: str | None = None):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.command = command if command is not None else " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
        self._fd: int | None = None
        self._nested = False

    def _refuse(self) -> None:
        raise FolderLockedError(f"output folder {self.folder} is in use by {_holder_text(self.path)}",
                                hint="wait for that run to finish (or stop it), or choose another output folder "
                                     "(--out)")

    def acquire(self) -> "OutLock":
        """Take the lock, or raise FolderLockedError at once. A thread holding it already nests (a job's
        per-set lock inside the job's lock of all its sets)."""
        key = os.path.abspath(self.path)
        held = _HELD.get(key)
        if held is not None and held[0] == threading.get_ident():
            held[1] += 1
            self._nested = True
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_lock(fd):
                os.close(fd)
                self._refuse()
            try:                          # the holder we waited on may have removed the file: lock the new one
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            _unlock(fd)
            os.close(fd)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command, "since": time.time()}
        data = json.dumps(info).encode()
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, data)
        self._fd = fd
        _HELD[key] = [threading.get_ident(), 1]
        return self

    def release(self) -> None:
        if self._nested:
            self._nested = False
            _HELD[os.path.abspath(self.path)][1] -= 1
            return
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        _HELD.pop(os.path.abspath(self.path), None)
        if os.name != "nt":                # POSIX: remove while still holding it (acquirers check the inode)
            try:
                os.unlink(self.path)
            except OSError:
                pass
        _unlock(fd)
        os.close(fd)
        if os.name == "nt":
            try:
                os.unlink(self.path)
            except OSError:
                pass

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


if os.name == "nt":  # pragma: no cover - Windows
    import msvcrt

    _LOCK_OFFSET = 1 << 20     # lock a byte past the JSON so others can still read who holds it

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        except OSError:
            pass
else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


@contextmanager
def locked_outputs(folders, command: str | None = None):
    """Hold the locks of every folder in ``folders`` (deduplicated, in a stable order) for the block."""
    unique = sorted({os.path.abspath(f) for f in folders})
    with ExitStack() as stack:
        for f in unique:
            stack.enter_context(OutLock(f, command))
        yield


__all__ = ["FolderLockedError", "LOCK_NAME", "OutLock", "locked_outputs"]
