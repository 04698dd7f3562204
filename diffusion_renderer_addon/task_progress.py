"""A running task where Blender shows progress: the status bar (``window_manager.progress_*`` and a line
in the status bar's header), the task operator's modal handler (Esc cancels), a finish report, and the
export's frame count while Blender renders the G-buffers.

:class:`TaskWatch` holds no job itself: the job registry and the add-on's persistent timer drive the jobs
(a modal operator is cancelled when another file is loaded; the jobs go on). The operator's ``modal()``
hands each event to :meth:`TaskWatch.on_event`; tests call it the same way (modal handlers do not run when
bpy is a Python module)."""
from __future__ import annotations

import bpy

from . import client as dr
from . import compat

__all__ = ["TaskWatch", "export_progress", "TIMER_STEP"]

TIMER_STEP = 0.2          # seconds between the modal operator's timer events
BAR = 1000                # window_manager.progress_update range


def _status(context=None):
    return getattr((context or bpy.context).window_manager, "diffusion_renderer", None)


def export_progress(context, label: str = "Exporting"):
    """A ``progress(done, total, message)`` callback for the G-buffer export: the status line says which
    frame Blender renders ("exporting frame 3/40") and the status bar's counter follows."""
    wm = context.window_manager
    st = _status(context)
    started = []

    def report(done: int, total: int, message: str = "") -> None:
        if not started:
            started.append(True)
            _call(wm, "progress_begin", 0, BAR)
        if st is not None:
            st.status = (f"{label.lower()} frame {done + 1}/{total}" if done < total
                         else f"{label.lower()}: {total} frames written")
        _call(wm, "progress_update", int(BAR * done / max(1, total)))
        if done >= total:
            _call(wm, "progress_end")
        dr.timer.tag_redraw()
    return report


def _call(wm, name: str, *args) -> None:
    fn = getattr(wm, name, None)
    if fn is not None:
        try:
            fn(*args)
        except (RuntimeError, TypeError):   # no window (background mode)
            pass


class TaskWatch:
    """Watches a task from submission to its end: ``active()`` returns the job the task runs now (None once
    the chain of jobs has ended, loaded or failed); ``cancel()`` cancels it."""

    def __init__(self, label: str, active, cancel):
        self.label, self._active, self._cancel = label, active, cancel
        self.last_job, self.cancel_requested, self.finished = None, False, False
        self._wm = None

    # ---- the status bar
    def begin(self, wm) -> None:
        self._wm = wm
        _call(wm, "progress_begin", 0, BAR)
        _statusbar(True)

    def end(self) -> None:
        if self._wm is not None:
            _call(self._wm, "progress_end")
        _statusbar(False)
        dr.timer.tag_redraw()

    # ---- events
    def on_event(self, event_type: str) -> set:
        """One event of the modal handler: Esc cancels the running job (once; the handler stays until the
        engine confirms), a timer event updates the status bar; everything else passes through."""
        if self.finished:
            return {"FINISHED"}
        if event_type == "ESC":
            if not self.cancel_requested:
                self.cancel_requested = True
                self._cancel()
                st = _status()
                if st is not None:
                    st.status = "cancelling…"
                dr.timer.tag_redraw()
            return {"RUNNING_MODAL"}
        if event_type == "TIMER":
            return self.tick()
        return {"PASS_THROUGH"}

    def tick(self) -> set:
        job = self._active()
        if job is not None:
            self.last_job = job
        st = _status()
        if job is not None or (st is not None and st.running):
            if self._wm is not None and st is not None:
                _call(self._wm, "progress_update", int(BAR * st.progress))
            dr.timer.tag_redraw()
            return {"PASS_THROUGH"}
        self.finished = True
        self.end()
        return {"FINISHED"}

    def outcome(self) -> tuple[set, str]:
        """The report of a finished task: ({level}, sentence)."""
        st = _status()
        job = self.last_job
        error = (st.last_error if st is not None else "") or ""
        state = job.state if job is not None else ""
        if state == dr.CANCELLED or (self.cancel_requested and state != dr.DONE):
            return {"WARNING"}, f"{self.label} was cancelled."
        if error or state == dr.FAILED:
            first = (error.splitlines() or [job.message if job is not None else "failed"])[0]
            return {"ERROR"}, f"{self.label} failed: {first}"
        status = (st.status if st is not None else "") or "done"
        return {"INFO"}, f"{self.label} finished ({status})."


def _draw_statusbar(self, context) -> None:
    st = _status(context)
    if st is None or not st.running:
        return
    compat.progress_widget(self.layout, st.progress, f"{st.task.title()}: {st.status}" if st.task else st.status)


def _statusbar(on: bool) -> None:
    compat.show_in_statusbar(_draw_statusbar, on)


def unregister() -> None:
    """The add-on is disabled: its status-bar entry goes too."""
    _statusbar(False)
