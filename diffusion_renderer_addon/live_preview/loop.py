"""The Live Preview loop: while it is on, one ``bpy.app.timers`` function compares the scene's preview
fingerprint (:func:`.plan.fingerprint`: light, frame, preview settings) every POLL seconds and, DEBOUNCE
seconds after the last change, sends one ``preview`` request through the engine client; a
``depsgraph_update_post`` handler only marks Neural Render's exported G-buffers (or a rendered World) stale
when the scene is edited. A newer preview supersedes the running one in the engine, whose ``cancelled``
error is ignored; each result reloads the "Neural Preview" image and the latency goes to the status.

Turning it off (or unregistering the add-on) cancels the running preview and removes the timer and the
handler. Neither is persistent: loading another file ends the loop (:func:`active_task` is then None)."""
from __future__ import annotations

import contextlib
import sys
import time
import traceback

import bpy

from .. import client as dr
from .. import preferences as prefs_mod
from .. import results
from . import image
from . import plan as plans
from . import shot as shots

DEBOUNCE = 0.3        # seconds without a change before a preview is sent
POLL = 0.1            # seconds between two looks at the scene


class _State:
    """The loop's state (module level: Python data, not saved, no bpy references kept)."""

    def __init__(self):
        self.reset(None)

    def reset(self, task) -> None:
        self.task = task                 # plans.RENDER | plans.RELIGHT | None (off)
        self.fingerprint = None          # what the last look at the scene saw
        self.changed_at = None           # when a change was seen that no preview has answered yet
        self.dirty = False               # the depsgraph saw a scene edit since the last look
        self.frame = None                # the frame the depsgraph handler saw last
        self.exporting = False           # our own export is changing the scene: not an edit
        self.shot = None                 # shots.Shot of the previewed scene
        self.job = None                  # the latest preview sent
        self.sent = self.shown = 0       # sequence numbers of the latest preview sent / shown
        self.requests = 0                # previews sent since it was turned on (tests, status)


_LIVE = _State()


def _status(**values) -> None:
    st = getattr(getattr(bpy.context, "window_manager", None), "diffusion_renderer", None)
    if st is not None:
        for name, value in values.items():
            setattr(st, name, value)
    dr.timer.tag_redraw()


def active_task():
    """The task being previewed live (``render`` | ``relight``), or None."""
    return _LIVE.task if _LIVE.task is not None and bpy.app.timers.is_registered(tick) else None


def state() -> _State:
    return _LIVE


def start(context, task: str) -> None:
    """Turn Live Preview on for ``task`` (the other task's preview stops): a first preview at the next tick."""
    if task not in plans.TASKS:
        raise ValueError(f"Live Preview previews {' or '.join(plans.TASKS)}, not {task!r}")
    stop()
    _LIVE.reset(task)
    _LIVE.frame = context.scene.frame_current
    bpy.app.timers.register(tick, first_interval=POLL)
    bpy.app.handlers.depsgraph_update_post.append(on_depsgraph_update)
    _status(live_status="Live Preview on: preparing the first preview…", live_error="")


def stop() -> None:
    """Turn Live Preview off: the running preview is cancelled, the timer and the handler removed."""
    job, _LIVE.job = _LIVE.job, None
    client = dr.current()
    if job is not None and not job.is_terminal and client is not None:
        client.cancel_preview(job.id)
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)
    while on_depsgraph_update in bpy.app.handlers.depsgraph_update_post:
        bpy.app.handlers.depsgraph_update_post.remove(on_depsgraph_update)
    was_on = _LIVE.task is not None
    _LIVE.reset(None)
    if was_on:
        _status(live_status="")


def tick():
    """The timer function: one look at the scene; returns the seconds to the next (None ends the timer)."""
    if _LIVE.task is None:
        return None
    try:
        step(time.monotonic())
    except Exception:  # noqa: BLE001 - the timer must survive anything
        print("DiffusionRenderer: live preview error:", file=sys.stderr)
        traceback.print_exc()
    return POLL if _LIVE.task is not None else None


def step(now: float, context=None) -> str:
    """Look at the scene at time ``now`` (seconds, monotonic): ``off``, ``idle`` (nothing changed),
    ``waiting`` (a change waits for DEBOUNCE s of quiet), ``sent`` (a preview was sent) or ``failed``
    (the error is in the status)."""
    if _LIVE.task is None:
        return "off"
    context = context or bpy.context
    seen = plans.fingerprint(context, _LIVE.task)
    if seen != _LIVE.fingerprint or _LIVE.dirty:
        first = _LIVE.fingerprint is None
        _LIVE.fingerprint, _LIVE.dirty = seen, False
        _LIVE.changed_at = -float("inf") if first else now         # the first preview goes at once
    if _LIVE.changed_at is None:
        return "idle"
    if now < _LIVE.changed_at + DEBOUNCE:
        return "waiting"
    _LIVE.changed_at = None
    return _send(context, seen)


@contextlib.contextmanager
def _exporting(context):
    """Our own export changes the scene (and sets frames) and restores it: no edit, no stale G-buffers."""
    _LIVE.exporting = True
    try:
        yield
    finally:
        try:
            context.view_layer.update()             # flush the export's updates while they are ignored
        finally:
            _LIVE.exporting = False
            _LIVE.frame = context.scene.frame_current


def _shot(context, scene_name: str) -> shots.Shot:
    folder = shots.preview_folder(results.output_root(context), scene_name)
    if _LIVE.shot is None or _LIVE.shot.folder != folder:
        _LIVE.shot = shots.Shot(folder)
    return _LIVE.shot


def _send(context, p) -> str:
    if not isinstance(p, plans.Plan):
        _status(live_error=f"Live Preview: {p[2]}")
        return "failed"
    exported_s = 0.0
    try:
        shot = _shot(context, p.scene)
        if p.task == plans.RENDER:
            s = context.scene.diffusion_renderer
            exports = shot.exports
            with _exporting(context):
                set_path = shot.render_folder(context.scene, plans.window(p), s.render_samples)
                hdri = p.light.hdri or shot.world_file(context.scene)
            exported_s = shot.last_export_s if shot.exports != exports else 0.0
        else:
            set_path, hdri = p.set_path, p.light.hdri
        client = prefs_mod.client(prefs_mod.get(context))
        job = client.preview(set_path, hdri, p.frame, shot.image_path(), p.request_params())
    except dr.ClientError as exc:
        _status(live_error=f"Live Preview: {exc.short()}")
        return "failed"
    except (ValueError, RuntimeError, OSError) as exc:      # ExportError / EnvExportError are RuntimeErrors
        _status(live_error=f"Live Preview: {exc}")
        return "failed"
    _LIVE.sent += 1
    _LIVE.requests += 1
    _LIVE.job = job
    job.on_done(_on_done_for(_LIVE.sent, time.monotonic(), p.frame, exported_s))
    _status(live_status=f"Frame {p.frame}: relighting…", live_error="")
    return "sent"


def _on_done_for(seq: int, sent_at: float, frame: int, exported_s: float):
    def done(job) -> None:
        if _LIVE.task is None:
            return                                      # turned off meanwhile
        if job.state == dr.DONE and seq > _LIVE.shown:
            result = job.result or {}
            path = result.get("out") or (result.get("outputs") or [""])[0]
            try:
                image.show(path)
            except (RuntimeError, OSError) as exc:
                _status(live_error=f"Live Preview: the preview image {path} could not be loaded ({exc})")
                return
            _LIVE.shown = seq
            summary = result.get("summary") or {}
            text = f"Frame {summary.get('frame', frame)}: {time.monotonic() - sent_at:.1f} s"
            if isinstance(summary.get("latency_s"), (int, float)):
                text += f" ({summary['latency_s']:.1f} s in the engine)"
            if exported_s:
                text += f", G-buffers exported in {exported_s:.1f} s"
            _status(live_status=text, live_error="")
        elif job.state == dr.FAILED and seq == _LIVE.sent:
            err = job.error
            _status(live_error=f"Live Preview: {err.short() if hasattr(err, 'short') else err or job.message}")
        # cancelled: superseded by a newer preview, or turned off — nothing to say
    return done


# ------------------------------------------------------------------ scene edits (Neural Render's G-buffers)
def _types(*names) -> tuple:
    return tuple(t for t in (getattr(bpy.types, n, None) for n in names) if t is not None)


_EDIT_TYPES = _types("Object", "Mesh", "Curve", "Material", "Camera", "Collection", "NodeTree", "Action", "Curves",
                     "PointCloud", "Volume", "MetaBall", "GreasePencil", "GreasePencilv3", "Lattice", "Armature",
                     "Key")


def classify(updates) -> set:
    """What the depsgraph updates touch: ``world`` (a World or its node tree) and/or ``scene`` (what the
    G-buffers show: geometry, materials, cameras, animation). Lights, images, the scene's settings and UI
    data are none of these."""
    out = set()
    worlds = None
    for update in updates:
        idb = getattr(update.id, "original", update.id)
        if isinstance(idb, bpy.types.World):
            out.add("world")
        elif isinstance(idb, bpy.types.NodeTree):
            if worlds is None:
                worlds = {w.node_tree for w in bpy.data.worlds if w.node_tree is not None}
            out.add("world" if idb in worlds else "scene")
        elif isinstance(idb, bpy.types.Object) and idb.type == "LIGHT":
            continue
        elif isinstance(idb, _EDIT_TYPES):
            out.add("scene")
    return out


def on_depsgraph_update(scene, depsgraph) -> None:
    """Marks Neural Render's preview inputs stale after a scene edit (a new preview follows the debounce).
    A frame change moves animated objects: not an edit (the frame is part of the fingerprint)."""
    if _LIVE.task != plans.RENDER or _LIVE.exporting:
        return
    if scene.frame_current != _LIVE.frame:
        _LIVE.frame = scene.frame_current
        return
    edits = classify(depsgraph.updates)
    if "scene" in edits and _LIVE.shot is not None:
        _LIVE.shot.stale()
    if "world" in edits and _LIVE.shot is not None:
        _LIVE.shot.world_stale()
    if edits:
        _LIVE.dirty = True


def unregister() -> None:
    stop()


__all__ = ["DEBOUNCE", "POLL", "active_task", "state", "start", "stop", "tick", "step", "classify",
           "on_depsgraph_update", "unregister"]
