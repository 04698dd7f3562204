"""The engine's errors: one hierarchy and one mapping from an exception to the protocol's error code
(``engine/contract/protocol.py`` ERROR_CODES), its one-line message and its hint — used by the CLI
(``describe``, exit status 2) and by the server (``classify``, the ``error`` message), so the same
exception reads the same on both.

* ``EngineError``: ``code`` (a protocol error code) and ``hint`` (the fix, or None). Its subclasses:
  ``UserError`` (``input_error``: a file or setting the user can fix; no traceback, no "report a bug"),
  ``ModelMemoryError`` (``out_of_memory``), ``InternalError`` (``internal``). The engine's own classes
  (``JobError``, ``OptionError``, ``WeightsUnavailableError``, ``CheckpointMismatchError``, ``Cancelled`` …)
  subclass these and keep their names and their old built-in bases.
* Exceptions from outside the hierarchy are classified by type, never by their text:
  ``torch.OutOfMemoryError`` and ``MemoryError`` → ``out_of_memory``; the contract's ``ValueError``\\ s
  (a malformed set, render.json, …) and any ``ValueError`` → ``input_error``; an ``OSError`` whose errno is
  a user's matter (not found, not a folder, permission, disk full, read-only …) → ``input_error`` naming
  the file; everything else → ``internal``.
STDLIB ONLY at import time (torch is looked at only when it is already imported)."""
from __future__ import annotations

import errno
import sys
from dataclasses import dataclass

USER_CODES = ("input_error", "weights_unavailable", "out_of_memory", "cancelled")
OOM_HINT = ("lower the resolution or the frames per window, or choose the low-VRAM memory mode (memory: low-vram, "
            "≈ 5 GB at 512²)")
INTERNAL_HINT = "an engine bug or an unexpected environment problem; the traceback is in {log}"


class EngineError(Exception):
    """Base of the engine's errors: ``code`` (protocol error code) and ``hint`` (the fix, or None)."""
    code = "internal"
    hint: str | None = None

    def __init__(self, *args, hint: str | None = None):
        super().__init__(*args)
        if hint is not None:
            self.hint = hint

    @property
    def user_facing(self) -> bool:
        return self.code != "internal"


class UserError(EngineError):
    """An error caused by the user's input or settings: one line naming the file or setting and the fix."""
    code = "input_error"


class ModelMemoryError(EngineError):
    """The job does not fit in the device's memory (refused before it ran, or out of memory while it ran)."""
    code = "out_of_memory"
    hint = OOM_HINT


class InternalError(EngineError):
    """An engine failure that is not the user's doing (a bug or a broken environment)."""
    code = "internal"


@dataclass(frozen=True)
class Classified:
    code: str
    message: str           # one line: what is wrong, naming the file or setting
    hint: str | None = None
    details: tuple = ()    # further lines of a multi-line text (e.g. a checkpoint's mismatched keys)

    @property
    def user_facing(self) -> bool:
        return self.code != "internal"


# errno → (what it means for the user, the fix)
_OS_ERRORS = {
    errno.ENOENT: ("not found", "check the path"),
    errno.ENOTDIR: ("not a folder (a part of the path is a file)", "choose a folder"),
    errno.EISDIR: ("is a folder where a file was expected", "choose a file"),
    errno.EEXIST: ("already exists", "choose another name or remove it"),
    errno.EACCES: ("permission denied", "choose a location you may read and write"),
    errno.EPERM: ("operation not permitted", "choose a location you may read and write"),
    errno.ENOSPC: ("no space left on the disk", "free disk space or choose an output folder on another disk"),
    errno.EDQUOT: ("disk quota exceeded", "free disk space or choose an output folder on another disk"),
    errno.EROFS: ("read-only file system", "choose an output folder on a writable disk"),
    errno.ENAMETOOLONG: ("file name too long", "choose a shorter path"),
    errno.ELOOP: ("too many levels of symbolic links", "fix the link"),
    errno.ENXIO: ("no such device", "choose a regular file or folder"),
    errno.ENODEV: ("no such device", "choose a regular file or folder"),
}


# The allocators' own words in a RuntimeError (torch raises plain RuntimeErrors for these): the CPU allocator
# ("DefaultCPUAllocator: can't allocate memory", "… not enough memory" on Windows), CUDA/HIP/MPS and the cuDNN /
# cuBLAS handles failing to allocate. Matched on the allocator's phrase, never on "memory" alone.
_OOM_PHRASES = ("defaultcpuallocator: can't allocate memory", "defaultcpuallocator: not enough memory",
                "cuda out of memory", "cuda error: out of memory", "hip out of memory", "hip error: out of memory",
                "mps backend out of memory", "cudnn_status_alloc_failed", "cublas_status_alloc_failed",
                "cufft_alloc_failed", "cusolver_status_alloc_failed")


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (MemoryError, ModelMemoryError)):
        return True
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom is not None and isinstance(exc, oom):
        return True
    if type(exc) is RuntimeError:                   # the allocator's message, not an error that mentions memory
        text = str(exc).lower()
        return any(phrase in text for phrase in _OOM_PHRASES)
    return False


def _lines(text: str) -> list:
    return [line.rstrip() for line in text.strip().splitlines() if line.strip()]


# OSError subclasses that are about a path the user gave, also when raised with a message of our own
_PATH_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, FileExistsError)


def _os_error(exc: OSError) -> Classified | None:
    known = _OS_ERRORS.get(exc.errno)
    if known is None or exc.strerror is None:           # raised with a message of its own
        if not isinstance(exc, _PATH_ERRORS):
            return None
        lines = _lines(str(exc)) or [f"{type(exc).__name__} (no file named)"]
        return Classified("input_error", lines[0].strip(), None, tuple(lines[1:]))
    what, fix = known
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        what += _disk_space(exc)
    if exc.filename is None:
        return Classified("input_error", what[0].upper() + what[1:], fix)
    target = f"{exc.filename} → {exc.filename2}" if exc.filename2 is not None else f"{exc.filename}"
    return Classified("input_error", f"{target}: {what}", fix)


def format_size(n: float) -> str:
    """Bytes for a message: ``512 B``, ``3.4 MB``, ``1.2 GB`` (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


def _disk_space(exc: OSError) -> str:
    """A full disk's figures: the space the write needed (when the writer recorded it) and what is free."""
    import os
    import shutil

    parts = []
    if getattr(exc, "needed_bytes", None):
        parts.append(f"needs about {format_size(exc.needed_bytes)}")
    if exc.filename is not None:
        where = os.path.abspath(str(exc.filename))
        while not os.path.exists(where) and os.path.dirname(where) != where:
            where = os.path.dirname(where)
        try:
            parts.append(f"{format_size(shutil.disk_usage(where).free)} free there")
        except OSError:
            pass
    return f" ({', '.join(parts)})" if parts else ""


def classify(exc: BaseException, log_file=None) -> Classified:
    """The one mapping: exception → (protocol error code, one-line message, hint)."""
    text = str(exc).strip()
    if isinstance(exc, EngineError):
        code, hint = exc.code, exc.hint
    elif _is_oom(exc):
        code, hint = "out_of_memory", OOM_HINT
    elif isinstance(exc, ValueError):      # contract errors (set, render.json, manifest) and reader checks
        code, hint = "input_error", None
    elif isinstance(exc, OSError):
        found = _os_error(exc)
        if found is not None:
            return found
        code, hint = "internal", None
    else:
        code, hint = "internal", None
    if code == "out_of_memory" and not isinstance(exc, EngineError):
        text = f"out of memory ({(_lines(text) or [type(exc).__name__])[0].strip()[:200]})"
    if code == "internal":
        hint = INTERNAL_HINT.format(log=log_file or "the engine log (rerun with --verbose to see it here)")
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    lines = _lines(text) or [type(exc).__name__]
    return Classified(code, lines[0].strip(), hint, tuple(lines[1:]))


def describe(exc: BaseException) -> str:
    """The command line's text: one line (the message, then the fix), followed by the indented detail
    lines of a multi-line error (a checkpoint's mismatched keys, the ways to provide missing weights)."""
    c = classify(exc)
    if c.code == "internal":
        first = f"{c.message} (an engine bug or an unexpected environment problem; rerun with --verbose for " \
                "the traceback)"
    else:
        first = f"{c.message}; {c.hint}" if c.hint and c.code != "weights_unavailable" else c.message
    return "\n".join([first, *(f"  {d.strip()}" for d in c.details)])
