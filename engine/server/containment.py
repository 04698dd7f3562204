"""Where the server may write: the rules a client's job folder (``job_dir``) and output folders (``params.out``)
must follow, and which files in a job folder the engine may replace.

* Never inside the engine's own installation nor system folders it does not own: the folder list is the
  contract's (engine/contract/containment.py, which the add-on checks its Output Folder with), compared
  after following symbolic links and ``..``.
* The JSON files the engine writes into a job folder (``request.json``, ``result.json``, ``error.json``)
  never replace a file of that name it did not write: a job folder holding one is refused at submit, and
  one that appears later is left alone (the engine writes under a free name beside it).

:func:`check_output_path` is the one check for any folder a request asks the engine to write into (the
``preview`` request uses it as well); :func:`submit_problems` applies the rules to a ``submit``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from engine.contract.containment import forbidden_reason

JOB_FILES = ("request.json", "result.json", "error.json")
PRODUCER = "diffusion-renderer-engine"   # the "producer" field of the request.json the engine writes
_MAX_JSON = 16 << 20                     # a larger "job file" is not one the engine wrote
FIX = "choose a folder of your own (e.g. in your home or project folder)"


def check_output_path(path, field: str, base=None) -> str | None:
    """None when the engine may write into folder ``path``, else the problem (one line naming ``field``
    and the fix). A relative ``path`` is taken inside ``base`` (the job folder)."""
    raw = Path(os.path.expanduser(str(path)))
    if not raw.is_absolute():
        if base is None:
            return f"field {field!r}: must be an absolute path, got {str(path)!r}"
        raw = Path(base) / raw
    reason = forbidden_reason(raw)
    if reason:
        return f"field {field!r}: {str(path)!r} {reason}; the engine never writes there: {FIX}"
    return None


# ----------------------------------------------------------------------------- the job folder's JSON files
def written_by_engine(path: Path) -> bool:
    """True for a missing file or one the engine wrote (a protocol result/error message, or a request.json
    with the engine's "producer" — or the job/kind/params of older engines); False for anything else
    (another file of that name, a link, a folder, unreadable or huge)."""
    path = Path(path)
    if not os.path.lexists(path):
        return True
    if path.is_symlink() or not path.is_file():
        return False
    try:
        if path.stat().st_size > _MAX_JSON:
            return False
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict):
        return False
    if data.get("type") in ("result", "error") and isinstance(data.get("v"), str):
        return True
    return data.get("producer") == PRODUCER or set(data) == {"job", "kind", "params"}


def foreign_job_files(job_dir) -> list[str]:
    """The names of JOB_FILES in ``job_dir`` the engine did not write."""
    return [name for name in JOB_FILES if not written_by_engine(Path(job_dir) / name)]


def free_name(path: Path) -> Path:
    """``path`` when the engine may replace it, else the first free ``<stem>.engine-N<suffix>`` beside it."""
    path = Path(path)
    n = 1
    candidate = path
    while not written_by_engine(candidate):
        candidate = path.with_name(f"{path.stem}.engine-{n}{path.suffix}")
        n += 1
    return candidate


def submit_problems(job_dir, params: dict) -> list[str]:
    """Every containment problem of a submit: its job folder and its output folder (``params.out``)."""
    problems = []
    bad_dir = check_output_path(job_dir, "job_dir")
    if bad_dir:
        problems.append(bad_dir)
    elif Path(job_dir).is_dir():
        foreign = foreign_job_files(job_dir)
        if foreign:
            problems.append(f"field 'job_dir': {str(job_dir)!r} already holds {', '.join(foreign)} that the engine "
                            "did not write (it never replaces such files): choose a new, empty job folder")
    out = params.get("out")
    if isinstance(out, str) and out:
        bad_out = check_output_path(out, "params.out", base=job_dir)
        if bad_out:
            problems.append(bad_out)
    return problems
