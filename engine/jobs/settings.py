"""Job params (the protocol's ``submit.params``, or the CLI's options turned into the same dict) → the job's
settings dataclass, run function and inputs. The one mapping used by the CLI (engine/cli.py) and the
server (engine/server/worker.py); parameter names equal the settings fields (engine/contract/params.py)."""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

from engine.contract import params as P

# params that are the job's inputs/outputs or the server's business, not settings fields
NOT_SETTINGS = frozenset({"input", "gbuffers", "hdri", "out", "allow_download"})
_MISSING = {"inverse": "input not found", "forward": "G-buffer input not found",
            "gbuffers": "render folder not found"}


def _seed(value, _kind):
    return None if value in (None, -1) else value


def _resolution(value, _kind):
    from engine.jobs.common import parse_resolution

    return parse_resolution(value)


def _env_resolution(value, _kind):
    from engine.jobs.common import parse_resolution

    w, h = parse_resolution(value, multiple=8) or (512, 512)
    return h, w                                   # ForwardSettings.env_resolution is (H, W)


def _tuple(value, _kind):
    return None if value is None else tuple(dict.fromkeys(value))


# param → its settings value, where the wire form differs from the dataclass field
CONVERT: dict[str, Callable] = {"seed": _seed, "resolution": _resolution, "env_resolution": _env_resolution,
                                "passes": _tuple, "frame_range": lambda v, _k: None if v is None else tuple(v),
                                "only_segments": _tuple}


def to_setting(name: str, value, kind: str):
    """One param's value as its settings field holds it."""
    return CONVERT[name](value, kind) if name in CONVERT else value


def settings_class(kind: str):
    """(settings dataclass, run function) of a job kind (imports the job module)."""
    if kind == "inverse":
        from engine.jobs.inverse_job import InverseSettings, run_inverse

        return InverseSettings, run_inverse
    if kind == "forward":
        from engine.jobs.forward_job import ForwardSettings, run_forward

        return ForwardSettings, run_forward
    if kind == "gbuffers":
        from engine.jobs.gbuffers_job import GBuffersSettings, run_gbuffers

        return GBuffersSettings, run_gbuffers
    raise KeyError(f"unknown job kind {kind!r}; kinds are {', '.join(P.KINDS)}")


@dataclass
class BuiltJob:
    settings: object
    run: Callable
    inputs: tuple          # the run function's positional arguments before the settings


def _path(value, base_dir: Path | None) -> Path | None:
    if value in (None, ""):
        return None
    p = Path(value).expanduser()
    return p if p.is_absolute() or base_dir is None else Path(base_dir) / p


def build_settings(kind: str, params: dict, base_dir=None, *, default_out=None) -> BuiltJob:
    """Settings, run function and inputs of a job from its (validated) params. Relative paths are inside
    ``base_dir`` (the job folder; None: as given, i.e. the working directory); ``out`` defaults to
    ``default_out``. Raises JobError for a bad value or a missing input."""
    from engine.jobs.common import JobError

    cls, run = settings_class(kind)
    names = {f.name for f in fields(cls)}
    values = {n: to_setting(n, v, kind) for n, v in params.items() if n in names}
    if "model" in names and "model" not in values:
        values["model"] = P.default("model", kind)
    settings = cls(**values)
    out = _path(params.get("out"), base_dir) or (Path(default_out) if default_out is not None else None)
    if out is None:
        raise JobError("--out: required (the output folder)")
    if out.exists() and not out.is_dir():
        raise JobError(f"output folder {out} is an existing file, not a folder; choose a folder for the output")
    main = "gbuffers" if kind == "forward" else "input"
    src = _path(params.get(main), base_dir)
    if src is None or not (src.exists() or _is_sequence_pattern(kind, src)):
        raise JobError(f"{src}: {_MISSING[kind]}")
    _check_file_or_folder(src, "input", "a video file or a folder of frames" if kind == "inverse" else "a folder")
    if "model" in names:
        _check_model(settings.model)
        from engine.jobs.memory_check import check_inputs, check_memory

        check_memory(kind, settings)          # before any model is loaded (a cached prediction)
        check_inputs(kind, settings, src)     # the footage at its real processing size: side limit, RAM
    if kind == "forward":
        hdris = [_path(h, base_dir) for h in params["hdri"]]
        for h in hdris:
            if h.exists():
                _check_file_or_folder(h, "environment map", "a .hdr or .exr file")
        return BuiltJob(settings, run, (src, hdris, out))
    return BuiltJob(settings, run, (src, out))


def _check_file_or_folder(path: Path, what: str, fix: str) -> None:
    """Refuse a character device, pipe or socket (``/dev/zero``) where a file or folder is read."""
    if path.exists() and not (path.is_file() or path.is_dir()):
        from engine.jobs.common import JobError

        raise JobError(f"{what} {path} is not a regular file or folder (a device, pipe or socket); choose {fix}")


def _check_model(model: str) -> None:
    """A model that names a path must be a checkpoint folder (a published name is looked up later)."""
    from engine.jobs.common import JobError
    from engine.model_registry import PUBLISHED_MODELS

    path = Path(str(model)).expanduser()
    if str(model) not in PUBLISHED_MODELS and path.exists() and not path.is_dir():
        raise JobError(f"model {path} is a file, not a checkpoint folder; choose the folder holding unet/, vae/ … "
                       "(its parent?) or a published model name (inverse, forward, forward-objaverse)")


def _is_sequence_pattern(kind: str, src: Path) -> bool:
    """An inverse input like ``folder/shot_####.png`` (one sequence of a folder holding several): its files
    are checked when the clip is opened, with a message naming the pattern."""
    from engine.io.sequence import is_pattern

    return kind == "inverse" and is_pattern(src) and src.parent.is_dir()
