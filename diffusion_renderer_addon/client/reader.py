"""Reader threads: they only parse lines and fill a queue / ring buffer. They never touch bpy or any job
state — everything else happens on the main thread (timer.py, blocking.py) when the queue is drained."""
from __future__ import annotations

import collections
import json
import threading
from typing import Callable, NamedTuple

MESSAGE = "message"    # data: the decoded message (dict)
INVALID = "invalid"    # data: (line, error text, raw dict or None)
EOF = "eof"            # data: None — the engine closed its stdout (exited or is exiting)


def _close(stream) -> None:
    try:
        stream.close()
    except (OSError, ValueError):
        pass


class Event(NamedTuple):
    generation: int    # which engine process produced it (stale events after a restart are dropped)
    kind: str
    data: object


class StdoutReader(threading.Thread):
    """Reads JSON lines from the engine's stdout, decodes them with the engine's own protocol module and
    puts Events on ``out``. A line that does not decode is reported as INVALID (with the raw JSON when it
    parses at all, so a hello from a newer protocol can still be recognised)."""

    def __init__(self, stream, out, decode: Callable[[str], dict], generation: int):
        super().__init__(name=f"dr-engine-stdout-{generation}", daemon=True)
        self.stream, self.out, self.decode, self.generation = stream, out, decode, generation

    def run(self) -> None:
        try:
            for line in self.stream:
                if not line.strip():
                    continue
                try:
                    self.out.put(Event(self.generation, MESSAGE, self.decode(line)))
                except Exception as exc:  # noqa: BLE001 - any decode failure is reported, never raised here
                    try:
                        raw = json.loads(line)
                    except ValueError:
                        raw = None
                    self.out.put(Event(self.generation, INVALID,
                                       (line.rstrip("\n"), f"{type(exc).__name__}: {exc}",
                                        raw if isinstance(raw, dict) else None)))
        except (OSError, ValueError):
            pass  # stream closed under us
        finally:
            _close(self.stream)
            self.out.put(Event(self.generation, EOF, None))


class StderrRing(threading.Thread):
    """Keeps the last ``maxlen`` lines of the engine's stderr (for error messages and the UI) and appends
    every line to ``log_file`` when one is given."""

    def __init__(self, stream, maxlen: int = 200, log_file=None, generation: int = 0):
        super().__init__(name=f"dr-engine-stderr-{generation}", daemon=True)
        self.stream, self.log_file = stream, log_file
        self.lines: collections.deque[str] = collections.deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def run(self) -> None:
        try:
            for line in self.stream:
                line = line.rstrip("\r\n")
                with self._lock:
                    self.lines.append(line)
                if self.log_file is not None:
                    try:
                        self.log_file.write(line + "\n")
                        self.log_file.flush()
                    except (OSError, ValueError):
                        self.log_file = None
        except (OSError, ValueError):
            pass
        finally:
            _close(self.stream)

    def tail(self, n: int | None = None) -> list[str]:
        with self._lock:
            lines = list(self.lines)
        return lines if n is None else lines[-n:]

    def add(self, line: str) -> None:
        """Lines from elsewhere (stdout noise, client notes) shown alongside the engine's stderr."""
        with self._lock:
            self.lines.append(line)
