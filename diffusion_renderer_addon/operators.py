"""The task operators. ``execute()`` runs a task to the end by default (``wait``: scripts, ``blender -b``,
tests — timers do not fire there); ``invoke()`` (the UI) turns ``wait`` off: the task is exported and
submitted, then the persistent client timer reports progress into ``window_manager.diffusion_renderer``,
chains the next step from ``job.on_done`` and finally loads the result into the scene (``load``)."""
from __future__ import annotations

import json
import os
import time

import bpy
from bpy.props import BoolProperty, StringProperty

from . import client as dr
from . import preferences as prefs_mod
from . import properties
from .client import blocking
from .contract import gbuffer_set

_ACTIVE: dict = {"job": None}
FORWARD_PASSES = gbuffer_set.FORWARD_PASSES   # what a forward job reads


def _status(context=None):
    wm = (context or bpy.context).window_manager
    return getattr(wm, "diffusion_renderer", None)


def _settings(context):
    return context.scene.diffusion_renderer


def _abs(path: str) -> str:
    return os.path.abspath(bpy.path.abspath(path)) if path else path


def _model(name: str) -> str:
    """A published model name stays as it is; a folder becomes absolute."""
    name = (name or "").strip()
    if name and (os.sep in name or "/" in name or name.startswith("//") or os.path.isdir(_abs(name))):
        return _abs(name)
    return name


def job_folder(context, task: str) -> str:
    base = _abs(_settings(context).output_dir) or prefs_mod.user_dir("jobs")
    path = os.path.join(base, f"{task}-{time.strftime('%Y%m%d-%H%M%S')}-{int(time.time() * 1000) % 1000:03d}")
    os.makedirs(path, exist_ok=True)
    return path


def _set_error(context, message: str) -> None:
    st = _status(context)
    if st is not None:
        st.last_error, st.running, st.status = message, False, "failed"
    dr.timer.tag_redraw()


def _on_update(job) -> None:
    st = _status()
    if st is not None and st.job_id == job.id:
        st.progress, st.status = float(job.fraction), job.message or job.state


def _finish(job) -> None:
    """Common end of a job: status, last manifest / error, model unload when not kept warm."""
    st = _status()
    if st is not None and st.job_id == job.id:
        st.running, st.progress = False, 1.0 if job.state == dr.DONE else st.progress
        st.status = job.message or job.state
        if job.state == dr.DONE and job.manifest:
            st.last_manifest, st.last_error = job.manifest, ""
        elif job.state == dr.FAILED:
            err = job.error
            st.last_error = err.full_text() if hasattr(err, "full_text") else str(err or job.message)
    if job.state == dr.DONE and job.kind == "inverse" and job.manifest:
        try:
            bpy.context.scene.diffusion_renderer.gbuffer_set = os.path.dirname(job.manifest)
        except (AttributeError, ReferenceError):
            pass
    prefs = prefs_mod.get()
    if prefs is not None and not prefs.keep_warm:
        client = dr.current()
        if client is not None:
            client.unload()
    _ACTIVE["job"] = None
    dr.timer.tag_redraw()


def _start_status(context, task: str, job) -> None:
    st = _status(context)
    if st is not None:
        st.running, st.task, st.job_id, st.progress = True, task, job.id, float(job.fraction)
        st.status, st.last_error = job.message or "queued", ""
    _ACTIVE["job"] = job


class _Task:
    """A task = a list of steps; each step exports what it needs and returns (kind, params, job_dir), and
    may use the previous step's finished job. Subclasses define ``steps(context)``."""
    bl_options = {"REGISTER"}
    task = ""

    wait: BoolProperty(name="Wait", default=True, options={"HIDDEN", "SKIP_SAVE"},
                       description="Run every step to the end before returning (scripts, background mode); "
                                   "off: submit and return, the add-on's timer reports progress and goes on")
    load: BoolProperty(name="Load result", default=True, options={"SKIP_SAVE"},
                       description="Import the result into the scene when the task has finished")

    @classmethod
    def poll(cls, context):
        st = _status(context)
        return st is None or not st.running

    def steps(self, context) -> list:
        raise NotImplementedError

    def invoke(self, context, event):
        """From the UI: non-blocking. In background mode there is no event loop to fire the timer: blocking."""
        self.wait = bool(bpy.app.background)
        return self.execute(context)

    def execute(self, context):
        """``wait``: export, run every step to the end (pumping the engine here), load, report. Otherwise
        export and submit the first step, then return: the timer drives progress and the next steps."""
        try:
            client = prefs_mod.client(prefs_mod.get(context))
            steps = list(self.steps(context))
            if not self.wait:
                _submit_chain(context, client, self.task, steps, None, self.load)
                self.report({"INFO"}, f"{self.bl_label}: started")
                return {"FINISHED"}
            prev = None
            for step in steps:
                kind, params, folder = step(context, prev)
                job = client.submit(kind, params, folder)
                _start_status(context, self.task, job)
                job.on_update(_on_update)
                try:
                    prev = blocking.wait(job, client, on_progress=_on_update)
                finally:
                    _finish(job)
            loaded = _load_results(prev) if self.load else []
        except _ERRORS as exc:
            msg = _message(exc)
            _set_error(context, msg)
            self.report({"ERROR"}, msg)
            return {"CANCELLED"}
        self.report({"INFO"}, f"{self.bl_label}: done ({prev.manifest if prev else ''}; {len(loaded)} loaded)")
        return {"FINISHED"}


_ERRORS = (dr.ClientError, RuntimeError, ValueError, OSError)


def _message(exc) -> str:
    return exc.short() if isinstance(exc, dr.ClientError) else str(exc)


def _common(context) -> dict:
    return {**properties.shared_params(_settings(context)), **prefs_mod.job_options(prefs_mod.get(context))}


def _submit_chain(context, client, task, steps, prev, load=True) -> None:
    """Submit the first step; when it is done (on the timer, main thread) the next one is exported and
    submitted, and after the last one the result is loaded (``load``)."""
    kind, params, folder = steps[0](context, prev)
    job = client.submit(kind, params, folder)
    _start_status(context, task, job)
    job.on_update(_on_update)
    rest = steps[1:]

    def done(j):
        _finish(j)
        if j.state != dr.DONE:
            return
        try:
            if rest:
                _submit_chain(bpy.context, client, task, rest, j, load)
            elif load:
                _load_results(j)
        except _ERRORS as exc:
            _set_error(None, _message(exc))
    job.on_done(done)


def _load_results(job) -> list:
    """Import every set the job wrote (a forward job writes one per HDRI) into the current scene; returns
    what :func:`reimport.import_result` created for each. Raises RuntimeError naming the set that failed."""
    if job is None or job.state != dr.DONE:
        return []
    from .reimport import import_result
    loaded = []
    for path in dr.jobs.manifest_paths(job.result):
        try:
            loaded.append(import_result(path))
        except Exception as exc:  # noqa: BLE001 - reported like any other task error
            raise RuntimeError(f"Loading {path} failed: {exc}") from exc
    st = _status()
    if st is not None and loaded:
        st.status = f"{job.message or job.state}: loaded {len(loaded)} set{'s' if len(loaded) > 1 else ''}"
        notes = list(dict.fromkeys(w for item in loaded for w in (item.get("warnings") or [])))
        if notes:  # e.g. the set's frame rate differs from the scene's (nothing is retimed)
            st.status += f" ({notes[0]})" if len(notes) == 1 else f" ({notes[0]} and {len(notes) - 1} more)"
    dr.timer.tag_redraw()
    return loaded


def _delight_step(context, prev, required=()):
    """De-light the chosen footage into the ticked passes plus ``required`` ones."""
    from .export import export_footage
    s = _settings(context)
    folder = job_folder(context, "delight")
    source = {"CLIP": s.movie_clip, "IMAGE": s.image, "STRIP": None}[s.footage_source]
    if s.footage_source != "STRIP" and source is None:
        raise ValueError(f"choose a {'movie clip' if s.footage_source == 'CLIP' else 'image sequence'} to de-light")
    chosen = properties.passes(s)
    passes = [p for p in properties.PASS_NAMES if p in chosen or p in required]
    if not passes:
        raise ValueError("choose at least one pass to compute")
    # the engine reads the footage itself (movie file or sequence pattern, frame numbers, rate, colour
    # space); Blender renders frames into <job>/footage only when its colour management must be applied
    footage = export_footage(source, os.path.join(folder, "footage"), scene=context.scene)
    params = {**_common(context), **footage["params"], "passes": passes, "model": _model(s.inverse_model)}
    return "inverse", params, folder


def _delight_for_relight(context, prev):
    """Relight preview's first step: every pass the forward model needs, whatever is ticked."""
    return _delight_step(context, prev, required=FORWARD_PASSES)


def _set_passes(folder: str):
    """The pass names of the G-buffer set in ``folder``; None when it has no readable manifest."""
    try:
        with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as fh:
            return set((json.load(fh) or {}).get("passes") or {})
    except (OSError, ValueError, AttributeError):
        return None


def _forward_params(context, gbuffers, hdris, extra=None) -> dict:
    s = _settings(context)
    return {**_common(context), "gbuffers": gbuffers, "hdri": hdris, "model": _model(s.forward_model),
            "lora_scale": s.lora_scale, "guidance": s.guidance, "rotate_light": s.rotate_light, **(extra or {})}


def _render_step(context, prev):
    """Blender renders the scene's G-buffers into a render folder (frame EXRs + render.json); the forward
    job reads that folder itself (the engine converts it, docs/GBUFFER_SET.md)."""
    from .export import export_environment, export_gbuffers
    s = _settings(context)
    folder = job_folder(context, "render")
    render_dir = export_gbuffers(context.scene, os.path.join(folder, "render"), samples=s.render_samples)
    extra = {}
    if s.hdri_source == "WORLD":
        env = export_environment(context.scene, os.path.join(folder, "env"))
        hdri = env["path"]
        extra = {"env_rotation": float(env.get("env_rotation", 180.0)),
                 "env_strength": float(env.get("env_strength", 1.0)), "env_flip": bool(env.get("env_flip", False))}
    else:
        hdri = _abs(s.hdri_path)
        if not hdri or not os.path.isfile(hdri):
            raise ValueError(f"HDRI file not found: {s.hdri_path or '(none chosen)'}")
    return "forward", _forward_params(context, str(render_dir), [hdri], extra), folder


def _relight_step(context, prev):
    s = _settings(context)
    gbuffers = os.path.dirname(prev.manifest) if prev is not None and prev.manifest else _abs(s.gbuffer_set)
    if not gbuffers or not os.path.isdir(gbuffers):
        raise ValueError("no G-buffer set to relight: run Delight first or choose a set")
    hdris = [_abs(h.path) for h in s.hdris if h.path]
    missing = [h for h in hdris if not os.path.isfile(h)]
    if not hdris or missing:
        raise ValueError(f"HDRI not found: {missing[0]}" if missing else "add at least one HDRI to the list")
    return "forward", _forward_params(context, gbuffers, hdris), job_folder(context, "relight")


def _task_operator(name: str, label: str, task: str, steps: tuple, doc: str):
    """An operator class ``DIFFUSION_RENDERER_OT_<name>`` running the fixed ``steps``."""
    return type(f"DR_OT_{name}", (_Task, bpy.types.Operator), {
        "__doc__": doc, "bl_idname": f"diffusion_renderer.{name}", "bl_label": label, "task": task,
        "steps": lambda self, context: list(steps)})


DR_OT_neural_render = _task_operator(
    "neural_render", "Neural Render", "render", (_render_step,),
    "Render the scene's G-buffers and relight them with the forward model under the chosen light")
DR_OT_delight = _task_operator(
    "delight", "Delight Footage", "delight", (_delight_step,),
    "De-light footage into G-buffers (base colour, normals, depth…) with the inverse model")


class DR_OT_relight_preview(_Task, bpy.types.Operator):
    """Relight G-buffers under each HDRI of the list (de-lighting the footage first when there are none)"""
    bl_idname = "diffusion_renderer.relight_preview"
    bl_label = "Relight Preview"
    task = "relight"

    def steps(self, context):
        s = _settings(context)
        folder = _abs(s.gbuffer_set)
        have = _set_passes(folder) if folder else None
        if have is None:
            return [_delight_for_relight, _relight_step]
        missing = [p for p in FORWARD_PASSES if p not in have]
        if missing:
            raise ValueError(f"the G-buffer set {folder} has no {', '.join(missing)} pass (the forward model needs "
                             f"{', '.join(FORWARD_PASSES)}): clear 'G-buffer set' to de-light the footage again")
        return [_relight_step]


class DR_OT_cancel(bpy.types.Operator):
    """Cancel the running job"""
    bl_idname = "diffusion_renderer.cancel"
    bl_label = "Cancel"

    def execute(self, context):
        st, client = _status(context), dr.current()
        job_id = st.job_id if st is not None else ""
        if client is None or not job_id or not client.cancel(job_id):
            if st is not None:
                st.running = False
            self.report({"WARNING"}, "No job is running")
            return {"CANCELLED"}
        st.status = "cancelling…"
        return {"FINISHED"}


class DR_OT_load_result(bpy.types.Operator):
    """Load a result set (its manifest.json) into Blender: image sequences, compositor nodes"""
    bl_idname = "diffusion_renderer.load_result"
    bl_label = "Load Result"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(name="Manifest", subtype="FILE_PATH", default="")

    def execute(self, context):
        st = _status(context)
        path = _abs(self.filepath) or (st.last_manifest if st is not None else "")
        if os.path.isdir(path):
            path = os.path.join(path, "manifest.json")
        if not path or not os.path.isfile(path):
            self.report({"ERROR"}, f"No result to load ({path or 'run a task first'})")
            return {"CANCELLED"}
        try:
            from .reimport import import_result
        except ImportError:
            self.report({"ERROR"}, "Loading results is not available in this build (no reimport module)")
            return {"CANCELLED"}
        try:
            import_result(path)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            self.report({"ERROR"}, f"Loading {path} failed: {exc}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Loaded {path}")
        return {"FINISHED"}


class DR_OT_hdri_add(bpy.types.Operator):
    """Add an HDRI to the relight list"""
    bl_idname = "diffusion_renderer.hdri_add"
    bl_label = "Add HDRI"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(subtype="FILE_PATH", default="")
    filter_glob: StringProperty(default="*.hdr;*.exr", options={"HIDDEN"})

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        s = _settings(context)
        item = s.hdris.add()
        item.path = self.filepath
        s.hdri_index = len(s.hdris) - 1
        return {"FINISHED"}


class DR_OT_hdri_remove(bpy.types.Operator):
    """Remove the selected HDRI from the relight list"""
    bl_idname = "diffusion_renderer.hdri_remove"
    bl_label = "Remove HDRI"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        s = _settings(context)
        if 0 <= s.hdri_index < len(s.hdris):
            s.hdris.remove(s.hdri_index)
            s.hdri_index = max(0, min(s.hdri_index, len(s.hdris) - 1))
        return {"FINISHED"}


classes = (DR_OT_neural_render, DR_OT_delight, DR_OT_relight_preview, DR_OT_cancel, DR_OT_load_result,
           DR_OT_hdri_add, DR_OT_hdri_remove)
