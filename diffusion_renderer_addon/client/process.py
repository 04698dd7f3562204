"""Start, signal and stop the engine subprocess (stdlib only; no bpy).

The engine runs with the interpreter chosen in the preferences: ``<python> -m engine serve --parent-pid
<blender pid>``, cwd and PYTHONPATH = the engine root, in a clean environment and its own process group
(a cancel signal must never reach Blender). Messages are encoded and decoded with the contract's protocol
module (``..contract``); the engine's protocol version is checked in the hello handshake.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from . import errors
from .reader import StderrRing, StdoutReader

# Variables of Blender's own interpreter that must not leak into the engine's.
_DROP_ENV = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONUSERBASE", "PYTHONEXECUTABLE", "PYTHONSAFEPATH",
             "PYTHONPLATLIBDIR", "PYTHONNOUSERSITE", "__PYVENV_LAUNCHER__", "VIRTUAL_ENV", "CONDA_PREFIX")
_WIN = sys.platform == "win32"
_PROBE = ("import sys, json, os\n"
          "info = {'python': list(sys.version_info[:3]), 'executable': sys.executable}\n"
          "try:\n"
          "    import engine\n"
          "    info['engine_version'] = getattr(engine, '__version__', None)\n"
          "    info['engine_dir'] = os.path.dirname(os.path.abspath(engine.__file__))\n"
          "except Exception as exc:\n"
          "    info['import_error'] = type(exc).__name__ + ': ' + str(exc)\n"
          "print('DR-PROBE ' + json.dumps(info))\n")


@dataclass
class EngineConfig:
    """What the preferences decide. ``engine_root`` is the folder containing ``engine/`` (None: the engine
    is installed into the interpreter's environment and found by importing it)."""
    python: str
    engine_root: Optional[str] = None
    env: dict = field(default_factory=dict)          # extra variables (HF_HOME, HF_HUB_OFFLINE, CUDA_VISIBLE_DEVICES…)
    args: list = field(default_factory=list)        # extra `serve` arguments
    jobs_dir: Optional[str] = None                  # default parent of job folders
    parent_pid: Optional[int] = None                # default: this process
    probe_timeout: float = 30.0                     # `python -c "import engine"` check
    hello_timeout: float = 180.0                    # engine start → hello (torch import can be slow)
    cancel_grace: float = 10.0                      # cancel message → SIGINT / CTRL_BREAK (≥ 2 steps)
    kill_grace: float = 10.0                        # SIGINT → kill
    finish_grace: float = 300.0                     # … while the model loads or results are written
    stderr_lines: int = 200
    stderr_log: Optional[str] = None                # also append the engine's stderr to this file

    def key(self) -> tuple:
        return (self.python, self.engine_root, tuple(sorted(self.env.items())), tuple(self.args))


def clean_env(engine_root: Optional[str], extra: Optional[dict] = None, base: Optional[dict] = None) -> dict:
    """The engine's environment: ours minus Blender's Python variables, plus PYTHONPATH = engine root."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in _DROP_ENV}
    env.update({"PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8", "PYTHONNOUSERSITE": "1"})
    if engine_root:
        env["PYTHONPATH"] = str(engine_root)
    env.update({str(k): str(v) for k, v in (extra or {}).items() if v is not None})
    return env


def resolve_python(path: str) -> str:
    """A venv folder is accepted for its interpreter; ``~`` and variables are expanded."""
    path = os.path.expandvars(os.path.expanduser(str(path or "").strip()))
    if path and os.path.isdir(path):
        for rel in (("Scripts", "python.exe") if _WIN else ("bin", "python3"), ("bin", "python"), ("python.exe",)):
            candidate = os.path.join(path, *rel)
            if os.path.isfile(candidate):
                return candidate
    return path


def probe_python(python: str, engine_root: Optional[str], timeout: float = 30.0, extra_env=None) -> dict:
    """Run ``<python> -c "import engine"`` (with a timeout) and return {python, engine_version, engine_dir};
    raise errors.ClientError saying what is wrong with the interpreter otherwise."""
    if not python:
        raise errors.invalid_python("", "no engine Python is set")
    if os.path.isdir(python):
        raise errors.invalid_python(python, "is a folder without a Python interpreter in bin/ or Scripts/")
    if not os.path.exists(python):
        raise errors.invalid_python(python, "not found")
    if not _WIN and not os.access(python, os.X_OK):
        raise errors.invalid_python(python, "is not executable (chmod +x it, or choose the interpreter file)")
    if engine_root and not os.path.isdir(os.path.join(engine_root, "engine")):
        raise errors.engine_not_importable(python, f"{engine_root} has no engine/ folder", engine_root)
    try:
        proc = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=timeout,
                              env=clean_env(engine_root, extra_env), cwd=engine_root or tempfile.gettempdir(),
                              creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0) if _WIN else 0)
    except subprocess.TimeoutExpired:
        raise errors.invalid_python(python, f"did not answer within {timeout:g} s") from None
    except OSError as exc:
        raise errors.invalid_python(python, f"cannot be run ({exc.strerror or exc})") from None
    line = next((x for x in proc.stdout.splitlines() if x.startswith("DR-PROBE ")), None)
    if line is None:
        tail = (proc.stderr or proc.stdout).strip()
        last = tail.splitlines()[-1] if tail else f"exit code {proc.returncode}"
        problem = ("is not a Python ≥ 3.11 that can run the engine check" if "SyntaxError" in tail
                   else f"failed the engine check ({last[:200]})")
        raise errors.invalid_python(python, problem, details=tail)
    info = json.loads(line[len("DR-PROBE "):])
    if tuple(info.get("python", ())) < errors.MIN_PYTHON:
        have = ".".join(map(str, info.get("python", ())))
        need = ".".join(map(str, errors.MIN_PYTHON))
        raise errors.invalid_python(python, f"is Python {have}; the engine needs Python {need} or newer")
    if "import_error" in info:
        raise errors.engine_not_importable(python, info["import_error"], engine_root)
    return info


def _group_kwargs() -> dict:
    """Its own process group / session, so SIGINT or CTRL_BREAK for the engine never reaches Blender.
    Windows: CTRL_BREAK_EVENT needs a console shared with the engine, so the engine inherits Blender's
    (hidden) console when there is one; without one it gets none (no window pops up) and a cancel that
    the engine ignores ends with a kill instead of CTRL_BREAK."""
    if not _WIN:
        return {"start_new_session": True}
    import ctypes

    flags = subprocess.CREATE_NEW_PROCESS_GROUP
    if not ctypes.windll.kernel32.GetConsoleWindow():
        flags |= subprocess.CREATE_NO_WINDOW
    return {"creationflags": flags}


class EngineProcess:
    """One running engine: pipes, reader threads, signals. Events go to ``events`` (a queue.Queue) tagged
    with ``generation`` so events of an older process are recognisable."""

    def __init__(self, config: EngineConfig, protocol, events: "queue.Queue", generation: int, engine_dir: str):
        self.config, self.protocol, self.events, self.generation = config, protocol, events, generation
        self.engine_dir = engine_dir
        self.root = config.engine_root or os.path.dirname(engine_dir)
        self._write_lock = threading.Lock()
        cmd = [resolve_python(config.python), "-m", "engine", "serve",
               "--parent-pid", str(config.parent_pid or os.getpid()), *map(str, config.args)]
        self.started = time.monotonic()
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         cwd=self.root, env=clean_env(config.engine_root, config.env), text=True,
                                         encoding="utf-8", errors="replace", bufsize=1, **_group_kwargs())
        except OSError as exc:
            raise errors.engine_start_failed(f"{cmd[0]} could not be started ({exc.strerror or exc})") from None
        self._log_file = open(config.stderr_log, "a", encoding="utf-8") if config.stderr_log else None  # noqa: SIM115
        self.pid = self.proc.pid
        self.stderr = StderrRing(self.proc.stderr, config.stderr_lines, self._log_file, generation)
        self.stdout = StdoutReader(self.proc.stdout, events, protocol.decode, generation)
        self.stderr.start()
        self.stdout.start()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, msg: dict) -> bool:
        """Write one message; False when the engine is gone (its stdin is closed)."""
        line = self.protocol.encode(msg) + "\n"
        with self._write_lock:
            try:
                self.proc.stdin.write(line)
                self.proc.stdin.flush()
                return True
            except (OSError, ValueError):
                return False

    def close_stdin(self) -> None:
        with self._write_lock:
            try:
                self.proc.stdin.close()
            except (OSError, ValueError):
                pass

    def interrupt(self) -> None:
        """SIGINT to the engine's process group (POSIX) / CTRL_BREAK_EVENT (Windows) — never to Blender."""
        if not self.alive():
            return
        try:
            if _WIN:
                self.proc.send_signal(signal.CTRL_BREAK_EVENT)
            else:
                try:
                    os.killpg(self.pid, signal.SIGINT)
                except OSError:
                    os.kill(self.pid, signal.SIGINT)
        except OSError:
            pass

    def kill(self) -> None:
        if self.alive():
            try:
                if not _WIN:
                    os.killpg(self.pid, signal.SIGKILL)
                else:
                    self.proc.kill()
            except OSError:
                try:
                    self.proc.kill()
                except OSError:
                    pass

    def wait(self, timeout: float) -> Optional[int]:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def finish_output(self, timeout: float = 2.0) -> None:
        """After the process ended: let the stderr thread read the last lines."""
        self.stderr.join(timeout)

    def stop(self, timeout: float = 5.0) -> Optional[int]:
        """Close stdin (the engine treats EOF as shutdown), then SIGINT, then kill."""
        self.close_stdin()
        rc = self.wait(timeout)
        if rc is None:
            self.interrupt()
            rc = self.wait(timeout)
        if rc is None:
            self.kill()
            rc = self.wait(5.0)
        self.finish_output(1.0)
        self.release()
        return rc

    def release(self) -> None:
        """Close our end of stdin and the log file. stdout/stderr are closed by their reader threads at EOF
        (closing a stream another thread is blocked reading would block here)."""
        self.close_stdin()
        if self._log_file is not None:
            try:
                self._log_file.close()
            except OSError:
                pass
            self._log_file = None
