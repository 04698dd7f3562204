"""Engine failures → actionable messages (stdlib only; no bpy, no imports from the rest of the package).

Every failure the UI shows is a :class:`ClientError`: a one-line ``message`` (what happened), a ``hint``
(what to do), and ``details`` (the engine's last stderr lines) plus ``log_path`` (the engine's log file)
for the "show details" box. ``str(err)`` is the message; ``err.full_text()`` is everything.
"""
from __future__ import annotations

import os
import signal
import sys

# Client-side codes (engine codes are passed through unchanged, see from_engine()).
INVALID_PYTHON = "invalid_python"
ENGINE_NOT_IMPORTABLE = "engine_not_importable"
PROTOCOL_MISMATCH = "protocol_mismatch"
ENGINE_START_FAILED = "engine_start_failed"
ENGINE_CRASHED = "engine_crashed"
ENGINE_STOPPED = "engine_stopped"
BAD_MESSAGE = "bad_message"
TIMEOUT = "timeout"
OUT_OF_MEMORY = "out_of_memory"
WEIGHTS_MISSING = "weights_missing"

MIN_PYTHON = (3, 11)

OOM_HINT = ("Lower the Resolution or Frames per Window (Neural Render › Sampling & Output), choose Low VRAM "
            "(Preferences › Add-ons › DiffusionRenderer › GPU Memory), and close other GPU work (a Cycles GPU "
            "render) before running.")
WEIGHTS_HINT = ("Download the model once (Preferences › Add-ons › DiffusionRenderer › Model Weights › "
                "Download, ~3 GB per model; needs Preferences › System › Network › Allow Online Access), or copy "
                "a Hugging Face cache from a machine with internet into the Weights Folder, or set Model to a "
                "local checkpoint folder.")
CUDA_HINT = ("The engine's torch cannot use this GPU: install the torch build that matches the driver "
             "(DR_TORCH / DR_TORCH_INDEX_URL when creating the engine environment), update the NVIDIA driver, "
             "or set the device to CPU.")
ENV_HINT = ("Press Set Up Engine (Preferences › Add-ons › DiffusionRenderer) to create the engine's Python, "
            "or point Engine Python there at an existing engine environment's interpreter.")

_ENGINE_CODE_ALIASES = {
    "cuda_oom": OUT_OF_MEMORY, "oom": OUT_OF_MEMORY, "out_of_memory": OUT_OF_MEMORY,
    "weights_missing": WEIGHTS_MISSING, "weights_unavailable": WEIGHTS_MISSING, "model_not_found": WEIGHTS_MISSING,
    "missing_weights": WEIGHTS_MISSING, "version_mismatch": PROTOCOL_MISMATCH,
}


class ClientError(Exception):
    """A failure with a user-facing message, a hint and optional details (stderr tail, log path)."""

    def __init__(self, code: str, message: str, hint: str = "", details: str = "", log_path: str | None = None,
                 engine_code: str | None = None, job: str | None = None):
        super().__init__(message)
        self.code, self.message, self.hint = code, message, hint
        self.details, self.log_path, self.engine_code, self.job = details, log_path, engine_code, job

    def __str__(self) -> str:
        return self.message

    def short(self) -> str:
        """Message and hint on one line (for ``operator.report``)."""
        return f"{self.message} — {self.hint}" if self.hint else self.message

    def full_text(self) -> str:
        parts = [self.message]
        if self.hint:
            parts.append(self.hint)
        if self.details:
            parts.append("Engine output (last lines):\n" + self.details)
        if self.log_path:
            parts.append(f"Engine log: {self.log_path}")
        return "\n".join(parts)

    def as_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "hint": self.hint, "details": self.details,
                "log_path": self.log_path, "engine_code": self.engine_code, "job": self.job}


def _tail_text(stderr_tail, n: int = 40) -> str:
    lines = list(stderr_tail or ())[-n:]
    return "\n".join(line.rstrip("\n") for line in lines)


def _pattern_hint(text: str) -> tuple[str | None, str]:
    """(canonical code or None, hint) recognised from an error text."""
    low = text.lower()
    if "out of memory" in low or "cublas_status_alloc_failed" in low or "memoryerror" in low:
        return OUT_OF_MEMORY, OOM_HINT
    if ("weightsunavailable" in low or ("weights" in low and ("not found" in low or "unavailable" in low))
            or "hf_hub_offline" in low or "localentrynotfound" in low):
        return WEIGHTS_MISSING, WEIGHTS_HINT
    if ("not compiled with cuda" in low or "cuda driver version is insufficient" in low
            or "no kernel image is available" in low or "found no nvidia driver" in low):
        return None, CUDA_HINT
    return None, ""


def from_engine(msg: dict, stderr_tail=(), log_path: str | None = None) -> ClientError:
    """An engine ``error`` message → ClientError; known codes/patterns get an actionable hint."""
    engine_code = str(msg.get("code") or "engine_error")
    message = str(msg.get("message") or engine_code)
    hint = str(msg.get("hint") or "")
    code = _ENGINE_CODE_ALIASES.get(engine_code, engine_code)
    pattern_code, pattern_hint = _pattern_hint(f"{engine_code} {message}")
    code = pattern_code if code == "engine_error" and pattern_code else code
    if not hint:
        hint = {OUT_OF_MEMORY: OOM_HINT, WEIGHTS_MISSING: WEIGHTS_HINT}.get(code) or pattern_hint
    problems = msg.get("problems") or []
    details = "\n".join(str(p) for p in problems[1:]) if len(problems) > 1 else _tail_text(stderr_tail)
    return ClientError(code, message, hint, details=details, log_path=msg.get("log_file") or log_path,
                       engine_code=engine_code, job=msg.get("job"))


_SIGNAL_NOTES = {"SIGKILL": "killed from outside; on Linux often by the system's out-of-memory killer",
                 "SIGSEGV": "a crash in native code (torch / the GPU driver)",
                 "SIGABRT": "aborted in native code (torch / the GPU driver)"}


def describe_returncode(rc, during: str = "") -> str:
    """'exited with code 3', 'was terminated by SIGKILL while running a job (killed from outside; …)'."""
    what = f" while {during}" if during else ""
    if rc is None:
        return f"exited{what}"
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        note = _SIGNAL_NOTES.get(name)
        return f"was terminated by {name}{what}" + (f" ({note})" if note else "")
    if sys.platform == "win32" and rc & 0xFFFFFFFF >= 0xC0000000:
        return f"crashed with Windows status 0x{rc & 0xFFFFFFFF:08X}{what}"
    return f"exited with code {rc}{what}"


def engine_crashed(returncode, stderr_tail=(), log_path: str | None = None, job: str | None = None,
                   during: str = "") -> ClientError:
    """The engine process ended without being asked to."""
    tail = _tail_text(stderr_tail)
    pattern_code, pattern_hint = _pattern_hint(tail)
    message = f"The engine process {describe_returncode(returncode, during)}."
    last = next((line for line in reversed(tail.splitlines()) if line.strip()), "")
    if last:
        message += f" Last output: {last.strip()[:300]}"
    hint = pattern_hint or ("It will be restarted for the next job. If it keeps failing, check the engine output "
                            "below" + (" and its log" if log_path else "") + ".")
    return ClientError(ENGINE_CRASHED if pattern_code is None else pattern_code, message, hint, details=tail,
                       log_path=log_path, job=job)


def engine_start_failed(reason: str, stderr_tail=(), log_path: str | None = None, hint: str = "") -> ClientError:
    tail = _tail_text(stderr_tail)
    pattern_code, pattern_hint = _pattern_hint(f"{reason}\n{tail}")
    hint = " ".join(h.rstrip(".") + "." for h in (hint, pattern_hint or ENV_HINT) if h)
    return ClientError(pattern_code or ENGINE_START_FAILED, f"The engine did not start: {reason}", hint,
                       details=tail, log_path=log_path)


def _version_text(v) -> str:
    return ".".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v)


def protocol_mismatch(engine_protocol, client_major: int, engine_version: str | None = None,
                      engine_dir: str | None = None) -> ClientError:
    """Major protocol versions differ: name both and say which side to update."""
    try:
        engine_major = int(engine_protocol[0] if isinstance(engine_protocol, (list, tuple))
                           else str(engine_protocol).split(".")[0])
    except (ValueError, IndexError, TypeError):
        engine_major = None
    where = f" at {engine_dir}" if engine_dir else ""
    ev = f" {engine_version}" if engine_version else ""
    message = (f"Protocol mismatch: the engine{ev}{where} speaks protocol {_version_text(engine_protocol)}, "
               f"this add-on speaks protocol {client_major}.x.")
    if engine_major is not None and engine_major > client_major:
        hint = "The engine is newer than the add-on: update the DiffusionRenderer add-on (or use an older engine)."
    else:
        hint = ("The engine is older than the add-on: press Set Up Engine (Preferences › Add-ons › "
                "DiffusionRenderer) to rebuild it from the add-on's own engine, or point Engine Python to a newer "
                "engine.")
    return ClientError(PROTOCOL_MISMATCH, message, hint)


def _blender_python_note(python: str) -> str:
    """A prefix for hints when the chosen interpreter is the one running Blender."""
    if python and "bpy" in sys.modules:
        try:
            if os.path.samefile(python, sys.executable):
                return "That is Blender's own Python; the engine needs its own environment. "
        except OSError:
            pass
    return ""


def invalid_python(python: str, problem: str, details: str = "") -> ClientError:
    """The configured engine interpreter cannot be used (problem: the reason, already phrased)."""
    return ClientError(INVALID_PYTHON, f"Engine Python {python!r}: {problem}",
                       _blender_python_note(python) + ENV_HINT, details=details)


def engine_not_importable(python: str, error: str, engine_root: str | None) -> ClientError:
    where = (f"from the engine folder {engine_root}" if engine_root else "(no engine folder set)")
    hint = ("Set the engine folder to the checkout that contains engine/ (Preferences → Add-ons → "
            "DiffusionRenderer), or install the engine into that environment (pip install -e <engine folder>). "
            + ENV_HINT)
    return ClientError(ENGINE_NOT_IMPORTABLE, f"The engine cannot be imported by {python} {where}: {error}",
                       _blender_python_note(python) + hint)
