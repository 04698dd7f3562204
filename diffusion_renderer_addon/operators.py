"""The task operators. ``execute()`` runs a task to the end by default (``wait``: scripts, ``blender -b``,
tests — timers do not fire there); ``invoke()`` (the UI) turns ``wait`` off: the task is exported and
submitted, then the persistent client timer reports progress into ``window_manager.diffusion_renderer``,
chains the next step from ``job.on_done`` and finally loads the result into the scene (``load``). What each
step exports and submits is :mod:`.task_steps`."""
from __future__ import annotations

import os

import bpy
from bpy.props import BoolProperty, IntProperty, StringProperty

from . import client as dr
from . import preferences as prefs_mod
from . import results, task_progress, validate
from .client import blocking
from .reimport.names import blend_path
from .task_steps import (FORWARD_PASSES, abspath, delight_for_relight, delight_step, planned_jobs, relight_step,
                         render_step, set_passes, settings)

_ACTIVE: dict = {"job": None}


def _status(context=None):
    wm = (context or bpy.context).window_manager
    return getattr(wm, "diffusion_renderer", None)


def _set_error(context, message: str) -> None:
    st = _status(context)
    if st is not None:
        st.last_error, st.running, st.status = message, False, "failed"
    dr.timer.tag_redraw()


def _on_update(job) -> None:
    st = _status()
    if st is not None and st.job_id == job.id:
        st.progress, st.status = float(job.fraction), job.message or job.state


def _finish(job, origin=None) -> None:
    """Common end of a job: status, last manifest / error, model unload when not kept warm. A de-lit set
    becomes the G-buffer set of the scene that started the job (``origin``), only while its file is open."""
    st = _status()
    if st is not None and st.job_id == job.id:
        st.running, st.progress = False, 1.0 if job.state == dr.DONE else st.progress
        st.status = job.message or job.state
        if job.state == dr.DONE and job.manifest:
            st.last_manifest, st.last_error = job.manifest, ""
        elif job.state == dr.FAILED:
            err = job.error
            st.last_error = err.full_text() if hasattr(err, "full_text") else str(err or job.message)
    if job.state == dr.DONE and job.kind == "inverse" and job.manifest and (origin is None or origin.is_open()):
        try:
            scene = origin.scene_here() if origin is not None else bpy.context.scene
            scene.diffusion_renderer.gbuffer_set = blend_path(os.path.dirname(job.manifest))
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
    bl_options = {"REGISTER", "UNDO"}
    task = ""

    wait: BoolProperty(name="Wait", default=True, options={"HIDDEN", "SKIP_SAVE"},
                       description="Run every step to the end before returning (scripts, background mode); "
                                   "off: submit and return, the add-on's timer reports progress and goes on")
    load: BoolProperty(name="Load Result", default=True, options={"SKIP_SAVE"},
                       description="Import the result into the scene when the task has finished")

    @classmethod
    def poll(cls, context):
        st = _status(context)
        if st is not None and st.running:
            cls.poll_message_set("A task is already running; wait for it to finish or press Cancel.")
            return False
        return True

    def steps(self, context) -> list:
        raise NotImplementedError

    def invoke(self, context, event):
        """From the UI: validate, export and submit, then a modal handler shows progress in the status bar,
        Esc cancels and a report says how it ended (the add-on's timer drives the jobs, so they go on when
        another file is loaded). In background mode there is no event loop: blocking ``execute()``."""
        self.wait = bool(bpy.app.background)
        result = self.execute(context)
        if self.wait or result != {"FINISHED"} or context.window is None:
            return result
        self._watch = watch_task(self.bl_label)
        wm = context.window_manager
        self._timer = wm.event_timer_add(task_progress.TIMER_STEP, window=context.window)
        self._watch.begin(wm)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        result = self._watch.on_event(event.type)
        if "FINISHED" in result:
            context.window_manager.event_timer_remove(self._timer)
            level, text = self._watch.outcome()
            self.report(level, text)
        return result

    def cancel(self, context):
        """Blender ends the modal handler (e.g. another file is loaded): the job goes on, the bar goes."""
        context.window_manager.event_timer_remove(self._timer)
        self._watch.end()

    def execute(self, context):
        """``wait``: export, run every step to the end (pumping the engine here), load, report. Otherwise
        export and submit the first step, then return: the timer drives progress and the next steps.
        Everything the task needs is checked first (:func:`.validate.check_task`), before any export."""
        try:
            client = prefs_mod.client(prefs_mod.get(context))
            steps = list(self.steps(context))
            validate.check_task(context, client, self.task, planned_jobs(context, steps),
                                results.output_root(context))
            origin = results.Origin.capture(context, self.task)    # results go back to this file and scene
            if not self.wait:
                _submit_chain(context, client, self.task, steps, None, self.load, origin)
                self.report({"INFO"}, f"{self.bl_label} started; its progress shows in the Neural Render panel.")
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
                    _finish(job, origin)
            loaded = _load_results(prev, origin) if self.load else []
        except _ERRORS as exc:
            msg = _message(exc)
            _set_error(context, msg)
            self.report({"ERROR"}, msg)
            return {"CANCELLED"}
        self.report({"INFO"}, f"{self.bl_label} finished: {len(loaded)} result{'s' if len(loaded) != 1 else ''} "
                              f"loaded{f' from {os.path.dirname(prev.manifest)}' if prev and prev.manifest else ''}.")
        return {"FINISHED"}


_ERRORS = (dr.ClientError, RuntimeError, ValueError, OSError)


def watch_task(label: str) -> "task_progress.TaskWatch":
    """What the modal handler of a task operator follows: the running job and its cancel."""
    def cancel():
        st, client = _status(), dr.current()
        if client is not None and st is not None and st.job_id:
            client.cancel(st.job_id)
    return task_progress.TaskWatch(label, lambda: _ACTIVE["job"], cancel)


def _message(exc) -> str:
    return exc.short() if isinstance(exc, dr.ClientError) else str(exc)


def _submit_chain(context, client, task, steps, prev, load=True, origin=None) -> None:
    """Submit the first step; when it is done (on the timer, main thread) the next one is exported and
    submitted, and after the last one the result is loaded (``load``) into the file and scene that started
    the task (``origin``; it waits for that file when another one is open)."""
    kind, params, folder = steps[0](context, prev)
    job = client.submit(kind, params, folder)
    _start_status(context, task, job)
    job.on_update(_on_update)
    rest = steps[1:]

    def done(j):
        _finish(j, origin)
        if j.state != dr.DONE:
            return
        try:
            if rest and origin is not None and not origin.is_open():
                _set_error(None, f"{task.title()} stopped after its first step: the file that started it "
                                 f"({origin.blend or 'unsaved'}) was closed; run it again there")
            elif rest:
                _submit_chain(bpy.context, client, task, rest, j, load, origin)
            elif load:
                _load_results(j, origin)
        except _ERRORS as exc:
            _set_error(None, _message(exc))
    job.on_done(done)


def _load_results(job, origin=None) -> list:
    """Import every set the job wrote (a forward job writes one per HDRI) into the file and scene that
    started it (``origin``, default the open file's scene). When another file is open the sets wait for
    that one (:func:`.results.deliver`). Returns what was loaded. Raises RuntimeError naming the set that
    failed."""
    if job is None or job.state != dr.DONE:
        return []
    manifests = dr.jobs.manifest_paths(job.result)
    origin = origin or results.Origin.capture(bpy.context, "")
    outcome, loaded = results.deliver(origin, manifests, job.id)
    st = _status()
    if st is not None and outcome == "pending":
        st.status = (f"{job.message or job.state}: the result waits for {os.path.basename(origin.blend)} "
                     f"and is loaded when that file is opened")
    elif st is not None and outcome == "orphaned":
        st.status = (f"{job.message or job.state}: the unsaved file that started it is closed; "
                     f"the result is in {os.path.dirname(os.path.dirname(manifests[0]))} (Load Result)")
    elif st is not None and loaded:
        st.status = f"{job.message or job.state}: loaded {len(loaded)} set{'s' if len(loaded) > 1 else ''}"
        notes = list(dict.fromkeys(w for item in loaded for w in (item.get("warnings") or [])))
        if notes:  # e.g. the set's frame rate differs from the scene's (nothing is retimed)
            st.status += f" ({notes[0]})" if len(notes) == 1 else f" ({notes[0]} and {len(notes) - 1} more)"
    dr.timer.tag_redraw()
    return loaded


def _task_operator(name: str, label: str, task: str, steps: tuple, doc: str):
    """An operator class ``DIFFUSION_RENDERER_OT_<name>`` running the fixed ``steps``."""
    return type(f"DR_OT_{name}", (_Task, bpy.types.Operator), {
        "__doc__": doc, "bl_idname": f"diffusion_renderer.{name}", "bl_label": label, "task": task,
        "steps": lambda self, context: list(steps)})


DR_OT_neural_render = _task_operator(
    "neural_render", "Neural Render", "render", (render_step,),
    "Render the scene's G-buffers and relight them with the forward model under the chosen light")
DR_OT_delight = _task_operator(
    "delight", "Delight", "delight", (delight_step,),
    "Delight footage into G-buffers (Base Color, normals, depth…) with the inverse model")


class DR_OT_relight_preview(_Task, bpy.types.Operator):
    """Relight G-buffers under each HDRI of the list (delighting the footage first when there are none)"""
    bl_idname = "diffusion_renderer.relight_preview"
    bl_label = "Relight Preview"
    task = "relight"

    def steps(self, context):
        s = settings(context)
        folder = abspath(s.gbuffer_set)
        have = set_passes(folder) if folder else None
        if have is None:
            return [delight_for_relight, relight_step]
        missing = [p for p in FORWARD_PASSES if p not in have]
        if missing:
            raise ValueError(f"The G-buffer set {folder} has no {', '.join(missing)} pass (the forward model needs "
                             f"{', '.join(FORWARD_PASSES)}): clear Relight Preview › G-Buffer Set to delight the footage again.")
        return [relight_step]


class DR_OT_cancel(bpy.types.Operator):
    """Cancel the running task"""
    bl_idname = "diffusion_renderer.cancel"
    bl_label = "Cancel"
    bl_options = {"REGISTER"}

    def execute(self, context):
        st, client = _status(context), dr.current()
        job_id = st.job_id if st is not None else ""
        if client is None or not job_id or not client.cancel(job_id):
            if st is not None:
                st.running = False
            self.report({"WARNING"}, "No task is running.")
            return {"CANCELLED"}
        st.status = "cancelling…"
        return {"FINISHED"}


class DR_OT_load_result(bpy.types.Operator):
    """Load a result into the scene: a G-buffer set or a relit set (its manifest.json), or a result of the list"""
    bl_idname = "diffusion_renderer.load_result"
    bl_label = "Load Result"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(name="Manifest", subtype="FILE_PATH", default="", options={"SKIP_SAVE"},
                             description="The manifest.json of a G-buffer set or a relit set (or its folder)")
    filter_glob: StringProperty(default="manifest.json", options={"HIDDEN"})
    index: IntProperty(name="Result", default=-1, options={"HIDDEN", "SKIP_SAVE"},
                       description="The entry of the scene's result list to load again (-1: the file chosen)")

    def invoke(self, context, event):
        """A list entry, or the results waiting for this file, load at once; otherwise a file browser opens
        in the Output Folder."""
        if self.index >= 0 or self.filepath or results.pending():
            return self.execute(context)
        try:
            self.filepath = os.path.join(results.output_root(context), "")
        except ValueError:
            pass
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        s = settings(context)
        if self.index >= 0:
            if self.index >= len(s.results):
                self.report({"ERROR"}, "That result is no longer in the list")
                return {"CANCELLED"}
            entry = s.results[self.index]
            path, name, task = abspath(entry.path), entry.name, entry.task
        elif not self.filepath and results.pending():
            try:
                loaded = results.deliver_pending()
            except RuntimeError as exc:
                self.report({"ERROR"}, str(exc))
                return {"CANCELLED"}
            self.report({"INFO"}, f"Loaded {len(loaded)} result{'s' if len(loaded) != 1 else ''} that waited for this file")
            return {"FINISHED"}
        else:
            st = _status(context)
            path = abspath(self.filepath) or (st.last_manifest if st is not None else "")
            if os.path.isdir(path):
                path = os.path.join(path, "manifest.json")
            same = next((r for r in s.results if path and abspath(r.path) == os.path.abspath(path)), None)
            name, task = (same.name, same.task) if same is not None else (None, "")
        if not path or not os.path.isfile(path):
            self.report({"ERROR"}, f"No result to load at {path}: choose the manifest.json of a G-buffer or "
                                   f"relit set" if path else "No result to load: choose a manifest.json (Load Result)")
            return {"CANCELLED"}
        try:
            loaded = results.load_into(context.scene, [path], task, name=name)
        except RuntimeError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Loaded {loaded[0]['name']} from {path}")
        return {"FINISHED"}


classes = (DR_OT_neural_render, DR_OT_delight, DR_OT_relight_preview, DR_OT_cancel, DR_OT_load_result)
