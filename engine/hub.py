"""Published DiffusionRenderer checkpoints: name -> local folder, download, local cache report.

Weights live in the ordinary Hugging Face cache (HF_HUB_CACHE, else HF_HOME/hub), so `hf cache scan`
and `hf cache delete` keep working. Only what inference needs is fetched (model_registry.allow_patterns).

Revisions: `forward` is pinned in code. For the others `main` is resolved to a commit once
(HfApi.model_info) and recorded in `<cache>/models--<org>--<repo>/diffusion-renderer-revision.json`, beside
the repo's `snapshots/`; later runs reuse it. Not at the cache root: `hf cache scan` reports any file there
as a corrupted repo, while `hf cache delete` removes this one with the weights it describes. An explicit
`revision=` overrides; `download()` with an explicit revision records it as the new default.

Offline (HF_HUB_OFFLINE=1), or when downloading is not allowed, only local files are used.
huggingface_hub is imported lazily (local checkpoint folders need none of it); the cache is read through
its own API (`snapshot_download(local_files_only=True)`, `repo_folder_name`), never parsed by hand.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

from engine.atomic import atomic_write_text
from engine.errors import EngineError
from engine.model_registry import (  # noqa: F401  (re-exported: engine.hub is the public entry point)
    ALL,
    IGNORE_PATTERNS,
    LICENCE_NOTICE,
    PUBLISHED_MODELS,
    REVISION_RECORD,
    ModelSpec,
    allow_patterns,
)

logger = logging.getLogger(__name__)

_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_licence_shown = False


class WeightsUnavailableError(EngineError, RuntimeError):
    """The weights of a published model are neither cached nor downloadable right now."""
    code = "weights_unavailable"

    @property
    def hint(self) -> str:
        return (f"download the model (in Blender: Preferences › Add-ons › DiffusionRenderer › Model Weights › "
                f"Download; on the command line: `diffusion-renderer download {self.model_name}`), or set the model "
                "to a local checkpoint folder")

    def __init__(self, name: str, reason: str = "", *, cache_dir: Path | None = None):
        self.model_name, self.reason, self.cache_dir = name, reason, cache_dir
        spec = PUBLISHED_MODELS.get(name)
        repo = f" ({spec.repo_id})" if spec else ""
        cache = cache_dir if cache_dir is not None else hub_cache_dir()
        super().__init__(
            f"Weights for the DiffusionRenderer model '{name}'{repo} are not available"
            f"{': ' + reason if reason else ''}.\nProvide them in one of these ways:\n"
            f"  1. on a machine with internet access run `bin/diffusion-renderer download {name}`, then copy "
            "its Hugging Face cache folder here;\n"
            "  2. pass `--model /path/to/checkpoint_folder`, a folder with unet/, vae/, scheduler/ ... "
            "sub-folders;\n"
            f"  3. set HF_HOME (or HF_HUB_CACHE) to a Hugging Face cache that has them (now: {cache})."
        )


# ----------------------------------------------------------------------------- cache locations
def hub_cache_dir() -> Path:
    """The cache huggingface_hub would use, read from the environment now (not at import time)."""
    def expand(p: str) -> Path:
        return Path(os.path.expandvars(os.path.expanduser(p)))

    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(key):
            return expand(os.environ[key])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return expand(home) / "hub"


def is_offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE as huggingface_hub reads them, but evaluated now."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    if value is not None:
        return value.strip().upper() in {"1", "ON", "YES", "TRUE"}
    return bool(getattr(sys.modules.get("huggingface_hub.constants"), "HF_HUB_OFFLINE", False))


def _repo_dir(spec: ModelSpec, cache: Path) -> Path:
    """The repo's folder in the cache, as huggingface_hub names it (``models--owner--name``)."""
    from huggingface_hub.file_download import repo_folder_name

    return cache / repo_folder_name(repo_id=spec.repo_id, repo_type="model")


def record_path(spec: ModelSpec, cache: Path | None = None) -> Path:
    return _repo_dir(spec, cache or hub_cache_dir()) / REVISION_RECORD


def recorded_revision(spec: ModelSpec, cache: Path | None = None) -> str | None:
    """The recorded commit, or None. A corrupt record is ignored with a warning."""
    path = record_path(spec, cache)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        logger.warning("Ignoring unreadable revision record %s (%s); it will be rewritten.", path, exc)
        return None
    commit = data.get("commit") if isinstance(data, dict) else None
    if not (isinstance(commit, str) and _SHA_RE.match(commit)) or data.get("repo_id") != spec.repo_id:
        logger.warning("Ignoring invalid revision record %s (no commit for %s); it will be rewritten.",
                       path, spec.repo_id)
        return None
    return commit


def _write_record(spec: ModelSpec, cache: Path, commit: str, requested: str) -> None:
    """Atomically record `commit` (temp file in the same folder + os.replace). Never raises."""
    path = record_path(spec, cache)
    data = {"repo_id": spec.repo_id, "commit": commit, "requested_revision": requested,
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "written_by": __name__}
    try:
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")
        logger.info("Recorded %s revision %r -> %s in %s", spec.repo_id, requested, commit, path)
    except OSError as exc:  # e.g. a read-only shared cache: keep working, just not pinned
        logger.warning("Could not record the revision of %s in %s (%s).", spec.repo_id, path, exc)


def _choose_revision(spec: ModelSpec, revision: str | None, cache: Path) -> tuple[str | None, str]:
    """(revision, source): explicit > recorded > pinned in code > unresolved (`main`)."""
    if revision:
        return revision, "explicit"
    recorded = recorded_revision(spec, cache)
    if recorded:
        return recorded, "recorded"
    if spec.revision:
        return spec.revision, "pinned"
    return None, "unresolved"


def _local_snapshot(spec: ModelSpec, revision: str | None, cache: Path) -> Path | None:
    """Snapshot folder for a commit, or for a branch/tag through the cache's refs (huggingface_hub's own
    lookup with ``local_files_only``: no network), or None when the cache does not hold it."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = snapshot_download(spec.repo_id, revision=revision or "main", cache_dir=str(cache),
                                   local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    return Path(folder)


def _missing_files(folder: Path, spec: ModelSpec | None) -> list[str]:
    """Files inference needs that `folder` lacks (a local folder: only unet/config.json is required)."""
    required = ["unet/config.json"]
    weights: list[str] = []
    if spec is not None:
        required += ["vae/config.json", "scheduler/scheduler_config.json"]
        weights = ["unet", "vae"]
        if spec.kind == "forward":
            required.append("env_encoder/config.json")
            weights.append("env_encoder")
    missing = [f for f in required if not (folder / f).is_file()]
    return missing + [f"{d}/*.safetensors" for d in weights if not any((folder / d).glob("*.safetensors"))]


def _check_local_folder(path: Path) -> Path:
    known = ", ".join(PUBLISHED_MODELS)
    if not path.exists():
        raise FileNotFoundError(f"Model folder {path} does not exist (published models: {known}).")
    if not path.is_dir():
        raise NotADirectoryError(f"--model must be a checkpoint folder, but {path} is a file.")
    missing = _missing_files(path, None)
    if missing:
        hint = (" It looks like a sub-folder: pass its parent folder instead."
                if (path / "config.json").is_file() and (path.parent / "unet").is_dir() else "")
        raise FileNotFoundError(
            f"{path} is not a DiffusionRenderer checkpoint folder: missing {path / missing[0]} "
            f"(expected unet/, vae/, scheduler/ ... sub-folders).{hint}")
    return path


def _lookup(name_or_path: str | Path) -> ModelSpec | None:
    """A published spec, None for a local path; ValueError for an unknown name."""
    if isinstance(name_or_path, Path):
        return None
    key = str(name_or_path).strip()
    for spec in PUBLISHED_MODELS.values():
        if key in (spec.name, spec.repo_id):
            return spec
    if any(c in key for c in "/\\") or key.startswith((".", "~")) or Path(key).exists():
        return None
    raise ValueError(f"Unknown model {key!r}: use one of {', '.join(PUBLISHED_MODELS)} "
                     "or the path of a checkpoint folder.")


# ----------------------------------------------------------------------------- public API
def resolve_model(name_or_path: str | Path, revision: str | None = None, *, allow_download: bool = False) -> Path:
    """A local checkpoint folder for a published name or a local path (see module docstring)."""
    spec = _lookup(name_or_path)
    if spec is None:
        return _check_local_folder(Path(name_or_path).expanduser())
    cache = hub_cache_dir()
    rev, source = _choose_revision(spec, revision, cache)
    snapshot = _local_snapshot(spec, rev, cache)
    if snapshot is not None and not _missing_files(snapshot, spec):
        if source == "unresolved":  # found via refs/main: pin it from now on
            _write_record(spec, cache, snapshot.name, "main (local cache)")
        return snapshot
    if snapshot is not None:
        missing = ", ".join(_missing_files(snapshot, spec))
        reason = f"the cached snapshot {snapshot} is incomplete (missing {missing})"
    else:
        reason = f"they are not in the Hugging Face cache{f' at revision {rev}' if rev else ''}"
    if is_offline():
        raise WeightsUnavailableError(spec.name, reason + " and HF_HUB_OFFLINE is set", cache_dir=cache)
    if not allow_download:
        raise WeightsUnavailableError(spec.name, reason + " and downloading is not enabled", cache_dir=cache)
    return _fetch(spec, revision, cache, record_explicit=False, progress=True)


def download(name: str, revision: str | None = None, *, progress: bool = True, on_progress=None) -> Path:
    """Download (or complete) one published model; returns its snapshot folder. ``on_progress(done, total)``
    (bytes, called from the download's threads) replaces the progress bars (the engine's "download" request)."""
    spec = PUBLISHED_MODELS.get(name)
    if spec is None:
        raise ValueError(f"Unknown model {name!r}: use one of {', '.join(PUBLISHED_MODELS)} "
                         f"(the CLI's {ALL!r} calls download() once per name).")
    cache = hub_cache_dir()
    if is_offline():
        return resolve_model(name, revision)  # cached -> path, else WeightsUnavailableError
    return _fetch(spec, revision, cache, record_explicit=True, progress=progress, on_progress=on_progress)


def describe_local_models() -> list[dict]:
    """One dict per published model: is it cached (complete), at which commit, where. No network."""
    cache, out = hub_cache_dir(), []
    for spec in PUBLISHED_MODELS.values():
        rev, source = _choose_revision(spec, None, cache)
        snapshot = _local_snapshot(spec, rev, cache)
        cached = snapshot is not None and not _missing_files(snapshot, spec)
        out.append({"name": spec.name, "repo_id": spec.repo_id, "kind": spec.kind,
                    "description": spec.description, "cached": cached,
                    "commit": snapshot.name if cached else None,
                    "revision_source": ("refs/main" if source == "unresolved" else source) if cached else None,
                    "path": str(snapshot) if cached else None})
    return out


def show_licence_notice(stream=None) -> None:
    """Print (stream) or log the weights licence, once per process."""
    global _licence_shown
    if not _licence_shown:
        _licence_shown = True
        if stream is not None:
            print(LICENCE_NOTICE, file=stream)
        else:
            logger.warning(LICENCE_NOTICE)


# ----------------------------------------------------------------------------- hub calls
@contextlib.contextmanager
def _progress_bars(hf, enabled: bool):
    utils = getattr(hf, "utils", None)
    if enabled or not hasattr(utils, "disable_progress_bars"):
        yield
        return
    was_disabled = utils.are_progress_bars_disabled()
    utils.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            utils.enable_progress_bars()


def byte_reporter(on_progress):
    """A silent tqdm class for ``snapshot_download(tqdm_class=...)`` that calls ``on_progress(done, total)`` with
    the bytes of its largest byte-counting bar (the whole snapshot's bytes written)."""
    from tqdm.auto import tqdm

    seen = {"done": 0, "total": 0}     # the largest so far: the transfer and write bars share one total

    class _Reporter(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            super().__init__(*args, **{**kwargs, "file": open(os.devnull, "w"), "disable": False})  # noqa: SIM115

        def _report(self):
            if getattr(self, "unit", "") == "B" and getattr(self, "total", 0):
                done, total = max(seen["done"], int(self.n)), max(seen["total"], int(self.total))
                if (done, total) != (seen["done"], seen["total"]):
                    seen.update(done=done, total=total)
                    on_progress(min(done, total), total)

        def update(self, n=1):
            out = super().update(n)
            self._report()
            return out

        def refresh(self, *args, **kwargs):
            out = super().refresh(*args, **kwargs)
            self._report()
            return out

        def close(self):
            fp = getattr(self, "fp", None)
            super().close()
            if fp is not None and fp not in (sys.stderr, sys.stdout):
                try:
                    fp.close()
                except (AttributeError, OSError):
                    pass

    return _Reporter


def _hub_error_reason(exc: Exception, spec: ModelSpec, revision: str | None) -> str:
    errors = sys.modules.get("huggingface_hub.errors")  # imported by huggingface_hub's HfApi

    def is_(name: str) -> bool:
        cls = getattr(errors, name, None)
        return isinstance(cls, type) and isinstance(exc, cls)

    detail = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
    if is_("GatedRepoError"):
        return (f"{spec.repo_id} is gated: accept its terms on https://huggingface.co/{spec.repo_id} "
                f"and log in with `hf auth login` ({detail})")
    if is_("RepositoryNotFoundError"):
        return f"{spec.repo_id} was not found or is not accessible with your token ({detail})"
    if is_("RevisionNotFoundError"):
        return f"revision {revision or 'main'!r} does not exist in {spec.repo_id} ({detail})"
    kind = type(exc).__name__.lower()
    if (is_("LocalEntryNotFoundError") or is_("OfflineModeIsEnabled") or "connect" in kind or "timeout" in kind
            or isinstance(exc, (ConnectionError, TimeoutError))):
        return f"the Hugging Face Hub could not be reached and they are not cached ({detail})"
    return f"the download failed ({detail})"


def _fetch(spec: ModelSpec, revision: str | None, cache: Path, *, record_explicit: bool, progress: bool,
           on_progress=None) -> Path:
    try:
        import huggingface_hub as hf
    except ImportError as exc:  # pragma: no cover - a dependency of the engine
        raise WeightsUnavailableError(spec.name, f"huggingface_hub is not installed ({exc})") from exc
    rev, source = _choose_revision(spec, revision, cache)
    try:
        commit = rev
        if rev is None or not _SHA_RE.match(rev):  # a branch or tag: resolve to a commit once
            commit = hf.HfApi().model_info(spec.repo_id, revision=rev or "main").sha
            if not commit or not _SHA_RE.match(commit):
                raise RuntimeError(f"the Hub returned no commit for {spec.repo_id}@{rev or 'main'}")
        if source == "unresolved":  # recorded before downloading so an interrupted download resumes it
            _write_record(spec, cache, commit, "main")
        show_licence_notice()
        logger.info("Downloading %s (%s @ %s) into %s", spec.name, spec.repo_id, commit, cache)
        extra = {"tqdm_class": byte_reporter(on_progress)} if on_progress is not None else {}
        with _progress_bars(hf, progress and on_progress is None):
            path = Path(hf.snapshot_download(
                spec.repo_id, revision=commit, cache_dir=str(cache),
                allow_patterns=allow_patterns(spec), ignore_patterns=IGNORE_PATTERNS, **extra))
    except Exception as exc:
        raise WeightsUnavailableError(spec.name, _hub_error_reason(exc, spec, rev), cache_dir=cache) from exc
    missing = _missing_files(path, spec)
    if missing:
        raise WeightsUnavailableError(
            spec.name, f"{spec.repo_id}@{commit} lacks {', '.join(missing)} after download", cache_dir=cache)
    if source == "explicit" and record_explicit:
        _write_record(spec, cache, commit, rev)
    return path


# ----------------------------------------------------------------------------- CLI
def add_download_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    choices = [*PUBLISHED_MODELS, ALL]
    parser.add_argument("download_name", metavar="MODEL", nargs="?", default=ALL, choices=choices,
                        help=f"{' | '.join(choices)} (default: {ALL})")
    parser.add_argument("--revision", dest="download_revision", metavar="REV", default=None,
                        help="branch, tag or commit to download instead of the pinned/recorded one "
                             "(recorded as the new default); needs a single MODEL")
    parser.add_argument("--no-progress", dest="download_progress", action="store_false",
                        help="hide download progress bars")
    return parser


def run_download(args: argparse.Namespace) -> int:
    name = getattr(args, "download_name", ALL) or ALL
    revision = getattr(args, "download_revision", None)
    names = list(PUBLISHED_MODELS) if name == ALL else [name]
    if revision and len(names) > 1:
        print("error: --revision needs a single MODEL, not 'all'", file=sys.stderr)
        return 2
    show_licence_notice(sys.stderr)
    failures = 0
    for n in names:
        spec = PUBLISHED_MODELS[n]
        try:
            path = download(n, revision, progress=getattr(args, "download_progress", True))
        except (WeightsUnavailableError, ValueError) as exc:
            print(f"error: cannot download {n} ({spec.repo_id}): {getattr(exc, 'reason', exc)}", file=sys.stderr)
            failures += 1
            continue
        print(f"{n}: {spec.repo_id} @ {path.name} -> {path}", flush=True)
    return 1 if failures else 0
