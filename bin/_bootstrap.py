#!/usr/bin/env python3
"""Create or refresh the engine's virtual environment (stdlib only, runs on the system Python).

Used by bin/diffusion-renderer and bin/test. The environment is (re)installed when it is missing or
when its inputs changed (pyproject.toml dependencies, torch selection, extras); otherwise this is a
no-op costing a few milliseconds. Environment variables:

  DR_VENV               where the environment lives (default: <repo>/.venv)
  DR_PYTHON             interpreter used to create it (default: first of python3.11/3.12/3.13 >= 3.11)
  DR_TORCH              full torch requirement, e.g. "torch==2.13.0+cu128" (default: torch==2.13.0)
  DR_TORCH_INDEX_URL    extra package index for torch (e.g. https://download.pytorch.org/whl/cu128)
  DR_TORCH_DEVICE       "cpu" or "cuda": skip GPU detection

On a machine without an NVIDIA GPU the pinned CPU build is used: a local wheel when pip's find-links
has one, else PyTorch's CPU index. With a GPU, PyPI's default (CUDA) build of the same version.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TORCH_VERSION = "2.13.0"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
STAMP = ".dr-bootstrap.json"


def log(msg: str) -> None:
    print(f"[setup] {msg}", file=sys.stderr, flush=True)


def find_python() -> str:
    explicit = os.environ.get("DR_PYTHON")
    candidates = [explicit] if explicit else ["python3.11", "python3.12", "python3.13", "python3", sys.executable]
    for cand in candidates:
        exe = shutil.which(cand) if cand and not os.path.isabs(cand) else cand
        if not exe:
            continue
        try:
            out = subprocess.run([exe, "-c", "import sys; print(sys.version_info[:2] >= (3, 11))"],
                                 capture_output=True, text=True, timeout=30)
        except OSError:
            continue
        if out.stdout.strip() == "True":
            return exe
        if explicit:
            sys.exit(f"error: DR_PYTHON={explicit} is not Python >= 3.11; point it at a 3.11+ interpreter")
    sys.exit("error: no Python >= 3.11 found (tried python3.11, python3.12, python3.13, python3); "
             "install one or set DR_PYTHON=/path/to/python3.11")


def has_nvidia_gpu() -> bool:
    forced = os.environ.get("DR_TORCH_DEVICE", "").lower()
    if forced in ("cpu", "cuda"):
        return forced == "cuda"
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        return subprocess.run([smi, "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _find_links_dirs() -> list[str]:
    dirs = [d for d in os.environ.get("PIP_FIND_LINKS", "").split() if d]
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    for line in out.splitlines():
        if "find-links" in line and "=" in line:
            dirs += line.split("=", 1)[1].strip().strip("'\"").split()
    return [d.removeprefix("file://") for d in dirs]


def torch_selection() -> tuple[list[str], str]:
    """pip arguments selecting torch, and a short description for the log."""
    index = os.environ.get("DR_TORCH_INDEX_URL")
    extra = ["--extra-index-url", index] if index else []
    if os.environ.get("DR_TORCH"):
        return [os.environ["DR_TORCH"], *extra], f"{os.environ['DR_TORCH']} (DR_TORCH)"
    if has_nvidia_gpu():
        return [f"torch=={TORCH_VERSION}", *extra], f"torch=={TORCH_VERSION} (CUDA build, NVIDIA GPU found)"
    local = [w for d in _find_links_dirs() for w in glob.glob(os.path.join(d, f"torch-{TORCH_VERSION}+cpu-*.whl"))]
    if local or index:
        return [f"torch=={TORCH_VERSION}", *extra], f"torch=={TORCH_VERSION} (CPU build, no NVIDIA GPU)"
    return [f"torch=={TORCH_VERSION}+cpu", "--extra-index-url", CPU_INDEX], \
        f"torch=={TORCH_VERSION}+cpu from {CPU_INDEX} (no NVIDIA GPU)"


def run_pip(cmd: list[str]) -> int:
    """Run pip, passing its messages through except the noise of unreachable local index folders."""
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if not (line.startswith("WARNING: Location 'file:") and "is ignored" in line):
            sys.stderr.write(line)
    return proc.wait()


def venv_dir() -> Path:
    return Path(os.environ.get("DR_VENV") or REPO / ".venv")


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


@contextlib.contextmanager
def locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        try:
            import fcntl
            fcntl.flock(fh, fcntl.LOCK_EX)
        except ImportError:  # Windows: no concurrent set-ups expected
            pass
        yield


def ensure(extras: list[str]) -> Path:
    venv = venv_dir()
    torch_args, torch_desc = torch_selection()
    pyproject = (REPO / "pyproject.toml").read_bytes()
    key = hashlib.sha256(json.dumps([pyproject.decode(), torch_args, sorted(extras)]).encode()).hexdigest()
    stamp = venv / STAMP
    with locked(venv.parent / (venv.name + ".lock")):
        if stamp.exists() and venv_python(venv).exists():
            try:
                if json.loads(stamp.read_text()).get("key") == key:
                    return venv
            except (OSError, ValueError):
                pass
        t0 = time.monotonic()
        py = find_python()
        log(f"creating the engine environment in {venv} with {py} (one-time, a few minutes)")
        if stamp.exists():
            stamp.unlink()
        if not venv_python(venv).exists():
            subprocess.run([py, "-m", "venv", str(venv)], check=True)
        target = str(REPO) + (f"[{','.join(extras)}]" if extras else "")
        log(f"installing {torch_desc} and the engine's dependencies")
        cmd = [str(venv_python(venv)), "-m", "pip", "install", "--disable-pip-version-check", "-q",
               *torch_args, "-e", target]
        if run_pip(cmd) != 0:
            sys.exit(f"error: installing the engine environment failed (command: {' '.join(cmd)}). "
                     f"Fix the cause above, or delete {venv} and retry; DR_TORCH / DR_TORCH_INDEX_URL "
                     "select another torch build")
        tmp = stamp.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "torch": torch_desc, "extras": extras,
                                   "seconds": round(time.monotonic() - t0, 1)}))
        os.replace(tmp, stamp)
        log(f"environment ready in {time.monotonic() - t0:.0f} s")
    return venv


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--extras", default="", help="comma-separated optional dependency groups (e.g. test)")
    ap.add_argument("--print-python", action="store_true", help="print the environment's interpreter path")
    args = ap.parse_args()
    venv = ensure([e for e in args.extras.split(",") if e])
    if args.print_python:
        print(venv_python(venv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
