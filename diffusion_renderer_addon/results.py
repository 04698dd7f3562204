"""Results belong to the .blend that started the job.

* :func:`output_root` — where job folders go: the scene's *Output Folder*, by default ``//neural/`` next to
  the saved .blend. An unsaved file with a ``//`` folder is refused with the choice to make (save the file,
  or set an absolute Output Folder); never the working directory, never the extension's own folder, the
  engine's or Blender's installation or a system folder (``contract.containment``).
* :class:`Origin` — the file (``bpy.data.filepath``) and scene that started a job, captured when the task
  starts. :func:`deliver` loads a finished job's sets into that scene when that file is still the open one
  (the same session, even saved under another name since) or open again; otherwise the sets **wait**: a
  small JSON registry in the extension's user folder (``pending.json``, keyed by the .blend path) keeps
  them until that file is opened (a persistent ``load_post`` handler, :func:`on_load_post`) — they are
  never loaded into another file.
* :func:`load_into` — imports sets (:func:`.reimport.import_result`) under the shot's names and records
  each in the scene's result list (``scene.diffusion_renderer.results``, saved in the .blend), which the
  panels list and *Load Result* loads from again.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import bpy
from bpy.app.handlers import persistent

from . import preferences as prefs_mod
from .contract import atomic, containment, json_text

__all__ = ["DEFAULT_OUTPUT", "Origin", "output_root", "deliver", "load_into", "pending", "on_load_post",
           "register", "unregister"]

DEFAULT_OUTPUT = "//neural/"
_TASK_BUTTONS = {"delight": "Delight", "render": "Neural Render", "relight": "Relight Preview"}
REGISTRY_NAME = "pending.json"
_SESSION = {"generation": 0}       # bumped on every file load: an Origin of an older generation is another file


def _key(blend: str) -> str:
    return os.path.normcase(os.path.abspath(blend)) if blend else ""


def output_root(context) -> str:
    """The absolute parent folder of the job folders. Raises ValueError when the folder is relative to an
    unsaved file, or lies in a system folder or the extension's / engine's installation (the contract's
    ``containment``: the engine would refuse it too)."""
    raw = (context.scene.diffusion_renderer.output_dir or "").strip() or DEFAULT_OUTPUT
    if raw.startswith("//") and not bpy.data.filepath:
        raise ValueError(f"Save the .blend file first (File › Save): results go to Output Folder “{raw}” next to "
                         f"it. Or set Output Folder (Neural Render › Sampling & Output) to an absolute folder")
    root = os.path.abspath(bpy.path.abspath(raw))
    reason = containment.forbidden_reason(root)
    if reason:
        raise ValueError(f"The Output Folder {root} {reason}; nothing is written there. Choose another Output "
                         f"Folder (Neural Render › Sampling & Output), e.g. the default //neural/ beside the "
                         f".blend file")
    return root


@dataclass(frozen=True)
class Origin:
    """The file and scene that started a job, and what the job is (``task``: render | delight | relight)."""
    blend: str
    scene: str
    task: str
    generation: int

    @classmethod
    def capture(cls, context, task: str) -> "Origin":
        return cls(bpy.data.filepath, context.scene.name, task, _SESSION["generation"])

    def is_open(self) -> bool:
        """The starting file is the open one: no other file was loaded since, or it was opened again."""
        if self.generation == _SESSION["generation"]:
            return True
        return bool(self.blend) and _key(bpy.data.filepath) == _key(self.blend)

    def scene_here(self):
        return bpy.data.scenes.get(self.scene) or bpy.context.scene


# ------------------------------------------------------------------------------------------ registry
def registry_path() -> str:
    return os.path.join(prefs_mod.user_dir("results", create=True), REGISTRY_NAME)


def _read() -> dict:
    try:
        with open(registry_path(), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(data: dict) -> None:
    atomic.atomic_write_text(registry_path(), json_text.dumps({k: v for k, v in data.items() if v}) + "\n")


def pending(blend: str | None = None) -> list:
    """The results waiting for ``blend`` (default: the open file)."""
    entries = _read().get(_key(bpy.data.filepath if blend is None else blend)) or []
    return [e for e in entries if isinstance(e, dict)]


def _add_pending(origin: Origin, manifests: list, job_id: str) -> None:
    data = _read()
    data.setdefault(_key(origin.blend), []).append(
        {"scene": origin.scene, "task": origin.task, "manifests": list(manifests), "job": job_id,
         "finished": time.strftime("%Y-%m-%d %H:%M")})
    _write(data)


def _take_pending(blend: str) -> list:
    data = _read()
    entries = data.pop(_key(blend), None) or []
    if entries:
        _write(data)
    return [e for e in entries if isinstance(e, dict)]


# ------------------------------------------------------------------------------------------ loading
def _settings_flag(scene, name: str, default=False):
    return getattr(getattr(scene, "diffusion_renderer", None), name, default)


def load_into(scene, manifests, task: str = "", *, name: str | None = None) -> list:
    """Import each set into ``scene`` under the shot's names (a re-run replaces the earlier result) and
    record it in the scene's result list; returns what :func:`.reimport.import_result` made for each.
    Raises RuntimeError naming the set that failed."""
    from .reimport import import_result
    from .reimport.names import blend_path

    for path in manifests:          # every set whole before anything is created or switched
        try:
            _check_complete(path)
        except Exception as exc:  # noqa: BLE001 - reported like any other task error
            raise RuntimeError(_load_failed(path, exc, task)) from exc
    loaded = []
    for path in manifests:
        try:
            item = import_result(path, scene=scene, task=task, name=name,
                                 make_vse=bool(_settings_flag(scene, "add_strip")))
        except Exception as exc:  # noqa: BLE001 - reported like any other task error
            raise RuntimeError(_load_failed(path, exc, task)) from exc
        loaded.append(item)
        _record(scene, item, task, blend_path(os.path.join(item["path"], "manifest.json")))
    return loaded


def _check_complete(path) -> None:
    """Raise ReimportError naming the first frame file of the set that is missing (a pass folder deleted,
    a set copied in part), so that a damaged set changes nothing in the scene."""
    from .reimport.sequences import ReimportError, frame_path, read_manifest

    info = read_manifest(path)
    for name, spec in info.manifest["passes"].items():
        pattern = spec.get("path") if isinstance(spec, dict) else None
        missing = next((f for f in (frame_path(info.path, pattern, n) for n in info.frames) if not f.is_file()),
                       None) if pattern else None
        if missing is not None:
            raise ReimportError(f"{missing}: pass {name!r} frame file is missing")


def _load_failed(path, exc, task: str) -> str:
    button = _TASK_BUTTONS.get(task, "the task that made it")
    return (f"Loading {path} failed: {exc}. Nothing was changed; run {button} again (Neural Render panel) to "
            f"remake the set, or choose another one with Load Result")


def _record(scene, item: dict, task: str, manifest: str) -> None:
    s = getattr(scene, "diffusion_renderer", None)
    if s is None or not hasattr(s, "results"):
        return
    entry = next((r for r in s.results if r.name == item["name"]), None)
    if entry is None:
        entry = s.results.add()
        entry.name = item["name"]
    entry.path, entry.task, entry.kind = manifest, task or entry.task, item["kind"]
    entry.finished = time.strftime("%Y-%m-%d %H:%M")
    s.results_index = list(s.results).index(entry)


def deliver(origin: Origin, manifests: list, job_id: str = "") -> tuple[str, list]:
    """Bring a finished job's sets to the file that started it. Returns (``"loaded"``, what was loaded) when
    that file is open, (``"pending"``, []) when they wait for it in the registry, (``"orphaned"``, []) when
    it was never saved and is closed (the sets stay on disk for Load Result)."""
    if not manifests:
        return "loaded", []
    if origin.is_open():
        return "loaded", load_into(origin.scene_here(), manifests, origin.task)
    if origin.blend:
        _add_pending(origin, manifests, job_id)
        return "pending", []
    return "orphaned", []


def deliver_pending() -> list:
    """Load every result waiting for the open file (its own scenes); returns what was loaded. A set
    deleted meanwhile is skipped."""
    if not bpy.data.filepath:
        return []
    loaded = []
    for entry in _take_pending(bpy.data.filepath):
        found = [m for m in entry.get("manifests") or [] if os.path.isfile(m)]
        scene = bpy.data.scenes.get(entry.get("scene") or "") or bpy.context.scene
        if found and scene is not None:
            task = str(entry.get("task") or "")
            loaded += load_into(scene, found, task)
            if task == "delight":              # what a finished Delight does in its open file: ready to relight
                from .reimport.names import blend_path
                scene.diffusion_renderer.gbuffer_set = blend_path(os.path.dirname(found[0]))
    return loaded


@persistent
def on_load_post(*_args) -> None:
    """A file was opened: Origins captured before belong to another file now; results waiting for this
    file are loaded into it."""
    _SESSION["generation"] += 1
    try:
        loaded = deliver_pending()
    except Exception as exc:  # noqa: BLE001 - a handler must not break file loading; shown in the panel
        st = getattr(bpy.context.window_manager, "diffusion_renderer", None)
        if st is not None:
            st.last_error = f"Loading the results waiting for this file failed: {exc}"
        return
    st = getattr(bpy.context.window_manager, "diffusion_renderer", None)
    if loaded and st is not None:
        st.status = f"Loaded {len(loaded)} result{'s' if len(loaded) > 1 else ''} that finished while this file was closed"


def register() -> None:
    if on_load_post not in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.append(on_load_post)


def unregister() -> None:
    while on_load_post in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(on_load_post)
