"""Turn exceptions into one actionable line for the CLI (and later the protocol)."""
from __future__ import annotations

# Exceptions whose message is already written for the user.
_USER_FACING = ("UserError", "WeightsUnavailableError", "CheckpointMismatchError", "LoraLoadError")


def describe(exc: BaseException) -> str:
    name = type(exc).__name__
    text = str(exc).strip() or name
    if "out of memory" in text.lower() or isinstance(exc, MemoryError):
        return (f"out of memory ({text.splitlines()[0][:200]}); lower the resolution or --frames per chunk, "
                "use --dtype fp16, or a smaller --decode-chunk")
    if name in _USER_FACING or isinstance(exc, (FileNotFoundError, PermissionError, ValueError)):
        return text
    return f"{name}: {text} (rerun with --verbose for the traceback)"
