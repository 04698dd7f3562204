"""The model manager of the preferences: one Download button per published model. The engine fetches the
weights at their pinned revisions (the protocol's ``download`` request: ack, progress in MiB, a ``result`` of
kind ``download`` or an error); the add-on itself never opens a connection. Downloads honour Blender's
Preferences › System › Network › Allow Online Access (``bpy.app.online_access``) and the manifest's
``network`` permission. Progress shows in the preferences and in the status bar."""
from __future__ import annotations

import bpy
from bpy.props import EnumProperty

from . import client as dr
from . import compat
from .contract import protocol

MODELS = protocol.DOWNLOAD_MODELS
LABELS = {"inverse": "Inverse (Delight)", "forward": "Forward (Neural Render, Relight)",
          "forward-objaverse": "Forward, Objaverse (Synthetic Objects)"}
ONLINE_SETTING = "Preferences › System › Network › Allow Online Access"
OFFLINE_MESSAGE = (f"Blender is not allowed to go online, so the weights cannot be downloaded. Turn on "
                   f"{ONLINE_SETTING}, then press Download again.")

_MODEL_ITEMS = [(m, LABELS[m], f"The {m} model's weights") for m in MODELS]
_STATE: dict = {}          # model → {"job": job id, "text": progress line, "error": str, "done": snapshot path}
_PENDING: list = []        # (client, job id, model) waiting for the engine's hello


def online_access() -> bool:
    """Blender's Allow Online Access (always true before 4.2, which has no such setting)."""
    return bool(getattr(bpy.app, "online_access", True))


def state(model: str) -> dict:
    return _STATE.setdefault(model, {"job": "", "text": "", "error": "", "done": "", "fraction": 0.0})


def running() -> list:
    """The models being downloaded now."""
    return [m for m in MODELS if state(m)["job"]]


def cached(model: str, client=None) -> bool | None:
    """Whether the engine last reported ``model`` as cached (None: not known until the engine has started)."""
    if state(model)["done"]:
        return True
    client = client or dr.current()
    info = getattr(client, "info", None) or {}
    for entry in info.get("models") or ():
        if isinstance(entry, dict) and entry.get("name") == model:
            return bool(entry.get("cached"))
    return None


def redraw() -> None:
    """Redraw the Preferences editor and the status bar (and the areas the job timer redraws)."""
    dr.timer.tag_redraw()
    wm = getattr(bpy.context, "window_manager", None)
    for window in getattr(wm, "windows", ()) or ():
        for area in (window.screen.areas if window.screen else ()):
            if area.type in {"PREFERENCES", "STATUSBAR"}:
                area.tag_redraw()


def _on_update(job) -> None:
    st = state(job.params.get("model", ""))
    if job.total:
        st["fraction"] = min(1.0, job.step / job.total)
        st["text"] = f"Downloading: {job.step / 1024:.2f} of {job.total / 1024:.2f} GB"
    redraw()


def _on_done(job) -> None:
    model = job.params.get("model", "")
    st = state(model)
    st.update(job="", fraction=1.0 if job.state == dr.DONE else st["fraction"])
    if job.state == dr.DONE:
        st.update(text=f"{LABELS.get(model, model)} downloaded", error="",
                  done=(job.result or {}).get("out", "") or "yes")
    elif job.state == dr.CANCELLED:
        st.update(text="Download cancelled", error="")
    else:
        err = job.error
        st.update(text="", error=err.short() if hasattr(err, "short") else str(err or job.message))
    if not running():
        _statusbar(False)
    redraw()


def _send(client, job, model: str) -> None:
    rid = client._request_id()
    client._requests[rid] = job.id          # an error carrying only reply_to still finds the job
    if not client._send(protocol.download(job.id, model, id=rid)):
        client.registry.set_state(job, dr.FAILED, "The engine stopped before the download could start.")


def _flush_pending() -> float | None:
    """Timer: send the downloads that waited for the engine's hello; fail them if the engine did not start."""
    for item in list(_PENDING):
        client, job_id, model = item
        job = client.registry.get(job_id)
        if job is None or job.is_terminal:
            _PENDING.remove(item)
        elif client.state == "ready":
            _PENDING.remove(item)
            _send(client, job, model)
        elif client.state in ("failed", "crashed", "stopped"):
            _PENDING.remove(item)
            err = client.last_error
            client.registry.set_state(job, dr.FAILED, err.short() if err else "The engine did not start.", error=err)
    return 0.2 if _PENDING else None


def start_download(client, model: str):
    """Register a download job in the client's registry and send it (now, or once the engine has said hello).
    Raises dr.ClientError when the engine cannot be started."""
    job = client.registry.add("download", {"model": model})
    job.on_update(_on_update)
    job.on_done(_on_done)
    state(model).update(job=job.id, text="Starting the engine…", error="", fraction=0.0)
    try:
        client.ensure_started()
    except dr.ClientError as exc:
        client.registry.set_state(job, dr.FAILED, exc.short(), error=exc)
        raise
    if client.state == "ready":
        _send(client, job, model)
    else:
        _PENDING.append((client, job.id, model))
        if not bpy.app.timers.is_registered(_flush_pending):
            bpy.app.timers.register(_flush_pending, first_interval=0.2)
    _statusbar(True)
    redraw()
    return job


class DR_OT_download_model(bpy.types.Operator):
    """Download the model's weights at the pinned revision into the weights folder (about 3 GB per model)"""
    bl_idname = "diffusion_renderer.download_model"
    bl_label = "Download"
    bl_options = {"REGISTER"}

    model: EnumProperty(name="Model", description="The published model to download", items=_MODEL_ITEMS)

    @classmethod
    def poll(cls, context):
        if running():
            cls.poll_message_set("A download is already running; wait for it to finish.")
            return False
        return True

    def execute(self, context):
        if not online_access():
            state(self.model).update(error=OFFLINE_MESSAGE, text="")
            self.report({"ERROR"}, OFFLINE_MESSAGE)
            return {"CANCELLED"}
        from . import preferences as prefs_mod
        try:
            start_download(prefs_mod.client(prefs_mod.get(context)), self.model)
        except dr.ClientError as exc:
            state(self.model).update(error=exc.short(), text="", job="")
            self.report({"ERROR"}, f"The engine could not start, so nothing was downloaded: {exc.short()}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Downloading the {self.model} model; progress is shown in the preferences.")
        return {"FINISHED"}


def draw(layout) -> None:
    """The Model Weights box of the preferences: one row per model with its state and a Download button."""
    box = layout.box()
    box.label(text="Model Weights", icon="FILE_3D")
    if not online_access():
        box.label(text=f"Downloads need {ONLINE_SETTING}.", icon="INFO")
    for model in MODELS:
        st = state(model)
        row = box.row()
        have = cached(model)
        icon = "CHECKMARK" if have else "QUESTION" if have is None else "IMPORT"
        row.label(text=LABELS[model], icon=icon)
        if st["job"]:
            if hasattr(row, "progress"):
                row.progress(factor=st["fraction"], type="BAR", text=st["text"] or "Downloading…")
            else:
                row.label(text=st["text"] or "Downloading…")
        else:
            row.label(text="Downloaded" if have else "Not Checked (press Test Engine)" if have is None else "Missing")
            op = row.operator(DR_OT_download_model.bl_idname, text="Download", icon="IMPORT")
            op.model = model
        if st["error"]:
            sub = box.column()
            sub.alert = True
            for i, line in enumerate(st["error"].splitlines()[:4] or [""]):
                sub.label(text=line, icon="ERROR" if i == 0 else "BLANK1")
        elif st["text"] and not st["job"]:
            box.label(text=st["text"], icon="INFO")


def _draw_statusbar(self, context) -> None:
    for model in running():
        compat.progress_widget(self.layout, state(model)["fraction"], f"Weights: {model}")


def _statusbar(on: bool) -> None:
    compat.show_in_statusbar(_draw_statusbar, on)


classes = (DR_OT_download_model,)


def unregister() -> None:
    """The add-on is disabled: its status-bar entry and its timer go too (a timer left registered keeps this
    module, and with it bpy, alive: bpy 4.2 as a module then crashes at exit)."""
    _statusbar(False)
    _PENDING.clear()
    if bpy.app.timers.is_registered(_flush_pending):
        bpy.app.timers.unregister(_flush_pending)
