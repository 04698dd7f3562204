"""Add-on preferences: the engine's interpreter, weights cache, device/precision, the "Set Up Engine" /
"Test Engine" operators and the model manager (model_manager.py). Also the one place that turns preferences into
the client's EngineConfig."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty

from . import client as dr
from . import model_manager

ADDON_DIR = os.path.dirname(os.path.abspath(__file__))
_SETUP = {"proc": None, "log": None, "started": None, "rc": None}
_TEST_INFO = {"text": "", "error": ""}
_WIN = sys.platform == "win32"


def _venv_python(venv: str) -> str:
    return os.path.join(venv, "Scripts", "python.exe") if _WIN else os.path.join(venv, "bin", "python")


def engine_root() -> str | None:
    """The folder holding engine/: the extension itself (bundled copy) or the checkout above the add-on."""
    for cand in (ADDON_DIR, os.path.dirname(ADDON_DIR)):
        if os.path.isfile(os.path.join(cand, "engine", "contract", "__init__.py")):
            return cand
    return None


def user_dir(*parts: str, create: bool = False) -> str:
    """The extension's persistent user folder (survives upgrades); a temp folder for legacy installs."""
    try:
        return bpy.utils.extension_path_user(__package__, path=os.path.join(*parts) if parts else "", create=create)
    except (ValueError, AttributeError, RuntimeError):
        import tempfile
        path = os.path.join(tempfile.gettempdir(), "diffusion-renderer-addon", *parts)
        if create:
            os.makedirs(path, exist_ok=True)
        return path


def default_engine_python() -> str:
    """DR_ENGINE_PYTHON, else the checkout's .venv when run from one, else the user-folder engine venv."""
    if os.environ.get("DR_ENGINE_PYTHON"):
        return os.environ["DR_ENGINE_PYTHON"]
    checkout = os.path.dirname(ADDON_DIR)
    if os.path.isfile(os.path.join(checkout, "pyproject.toml")):
        py = _venv_python(os.path.join(checkout, ".venv"))
        if os.path.isfile(py):
            return py
    return _venv_python(user_dir("engine-venv"))


def get(context=None) -> "DR_AddonPreferences | None":
    context = context or bpy.context
    addon = context.preferences.addons.get(__package__)
    return addon.preferences if addon is not None else None


def engine_config(prefs=None) -> dr.EngineConfig:
    prefs = prefs or get()
    env = {}
    if prefs is not None and prefs.weights_dir:
        env["HF_HOME"] = bpy.path.abspath(prefs.weights_dir)
    if not model_manager.online_access():      # jobs download only with allow_download (a job parameter)
        env["HF_HUB_OFFLINE"] = "1"
    elif os.environ.get("HF_HUB_OFFLINE"):
        env["HF_HUB_OFFLINE"] = os.environ["HF_HUB_OFFLINE"]
    python = (prefs.engine_python if prefs is not None else "") or default_engine_python()
    return dr.EngineConfig(python=bpy.path.abspath(python), engine_root=engine_root(), env=env,
                           jobs_dir=user_dir("jobs"), stderr_log=os.path.join(user_dir("logs", create=True),
                                                                               "engine-stderr.log"))


def allow_download(prefs=None) -> bool:
    """Weights may be downloaded only when the user allows it AND Blender allows online access."""
    return bool(prefs is not None and prefs.allow_download and getattr(bpy.app, "online_access", True))


def client(prefs=None) -> dr.EngineClient:
    return dr.configure(engine_config(prefs))


def job_options(prefs=None) -> dict:
    """Per-job params decided by the preferences."""
    prefs = prefs or get()
    if prefs is None:
        return {}
    return {"device": prefs.device, "dtype": prefs.precision, "memory": prefs.memory,
            "allow_download": allow_download(prefs)}


def _setup_poll() -> float | None:
    """Timer while the set-up runs: redraws the preferences (elapsed time, stage, last log line)."""
    proc = _SETUP["proc"]
    if proc is None:
        return None
    rc = proc.poll()
    model_manager.redraw()
    if rc is None:
        return 0.5
    _SETUP.update(proc=None, rc=rc)
    return None


def setup_progress() -> dict:
    """What the preferences show of the set-up: running, elapsed seconds, stage (its last "[setup]" line),
    last log line, exit status and the log's tail (more lines after a failure, so the root cause shows)."""
    lines = _log_tail(_SETUP["log"], 200) if _SETUP["log"] else []
    stages = [ln.split("]", 1)[1].strip() for ln in lines if ln.startswith("[setup]")]
    rc = _SETUP["rc"]
    return {"running": _SETUP["proc"] is not None, "rc": rc, "log": _SETUP["log"],
            "elapsed": time.time() - _SETUP["started"] if _SETUP["started"] else 0.0,
            "stage": stages[-1] if stages else ("Starting…" if _SETUP["proc"] is not None else ""),
            "last": next((ln for ln in reversed(lines) if ln.strip()), ""),
            "tail": lines[-(12 if rc not in (None, 0) else 3):]}


class DR_OT_setup_engine(bpy.types.Operator):
    """Create the engine's Python environment (torch, diffusers…) in the extension's user folder in the
    background; its progress shows in the preferences"""
    bl_idname = "diffusion_renderer.setup_engine"
    bl_label = "Set Up Engine"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        if _SETUP["proc"] is not None:
            cls.poll_message_set("The engine set-up is already running.")
            return False
        return True

    def execute(self, context):
        root = engine_root()
        boot = os.path.join(root or "", "bin", "_bootstrap.py")
        if not root or not os.path.isfile(boot):
            self.report({"ERROR"}, "The engine's set-up files are missing from this installation. Reinstall the "
                                   "extension, or point Engine Python at an existing engine environment.")
            return {"CANCELLED"}
        if _SETUP["proc"] is not None:
            self.report({"WARNING"}, "The engine set-up is already running.")
            return {"CANCELLED"}
        if not model_manager.online_access():
            self.report({"WARNING"}, "The set-up downloads Python packages, but Blender is not allowed online "
                                     f"({model_manager.ONLINE_SETTING} is off); it may fail.")
        venv = user_dir("engine-venv")
        log = os.path.join(user_dir("logs", create=True), "engine-setup.log")
        env = dr.clean_env(None, {"DR_VENV": venv})
        env.pop("PYTHONPATH", None)
        py = os.environ.get("DR_SETUP_PYTHON") or ("python" if _WIN else "python3")
        with open(log, "w", encoding="utf-8") as fh:
            fh.write(f"[setup] starting with {py}; the environment goes to {venv}\n")
            fh.flush()
            try:
                _SETUP["proc"] = subprocess.Popen([py, boot, "--print-python"], stdout=fh, stderr=subprocess.STDOUT,
                                                  stdin=subprocess.DEVNULL, env=env, cwd=root)
            except OSError as exc:
                self.report({"ERROR"}, f"Python could not be started ({py}: {exc}). Install Python 3.11 or newer, "
                                       "or set the DR_SETUP_PYTHON environment variable to one.")
                return {"CANCELLED"}
        _SETUP.update(log=log, started=time.time(), rc=None)
        prefs = get(context)
        if prefs is not None:
            prefs.engine_python = _venv_python(venv)
        bpy.app.timers.register(_setup_poll, first_interval=0.5)
        self.report({"INFO"}, f"Setting up the engine in {venv}; progress is shown in the preferences.")
        return {"FINISHED"}


class DR_OT_test_engine(bpy.types.Operator):
    """Start the engine and wait until it answers; shows its device, versions and which weights are present"""
    bl_idname = "diffusion_renderer.test_engine"
    bl_label = "Test Engine"
    bl_options = {"REGISTER"}

    timeout: bpy.props.FloatProperty(name="Timeout", default=180.0, min=1.0,
                                     description="Seconds to wait for the engine to start")

    def execute(self, context):
        try:
            info = client(get(context)).wait_ready(self.timeout)
        except dr.ClientError as exc:
            _TEST_INFO.update(text="", error=exc.full_text() if hasattr(exc, "full_text") else exc.short())
            self.report({"ERROR"}, exc.short())
            return {"CANCELLED"}
        _TEST_INFO.update(text=describe_hello(info), error="")
        status = getattr(context.window_manager, "diffusion_renderer", None)
        if status is not None:
            status.engine_info = _TEST_INFO["text"]
        self.report({"INFO"}, f"The engine works: {_TEST_INFO['text']}.")
        return {"FINISHED"}


def describe_hello(info: dict) -> str:
    """One line from the engine's hello: engine/torch versions, device (GPU name), CUDA."""
    info = info or {}
    devices = info.get("devices") or []
    dev = info.get("device") or "?"
    if dev != "cpu" and devices and isinstance(devices[0], dict) and devices[0].get("name"):
        dev = f"{dev} ({devices[0]['name']})"
    parts = [f"engine {info.get('engine', '?')}", f"torch {info.get('torch', '?')}", f"Python {info.get('python', '?')}",
             f"device {dev}"]
    if info.get("cuda"):
        parts.append(f"CUDA {info['cuda']}")
    return ", ".join(parts)


class DR_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    engine_python: StringProperty(name="Engine Python", subtype="FILE_PATH", default="",
                                  description="Interpreter of the engine's environment (empty: found automatically)")
    weights_dir: StringProperty(name="Weights Folder", subtype="DIR_PATH", default="",
                                description="Folder for the model weights, a Hugging Face cache (empty: the usual "
                                            "Hugging Face cache)")
    allow_download: BoolProperty(name="Download Missing Weights During Jobs", default=False,
                                 description="Let a job fetch weights that are not downloaded yet (about 3 GB per "
                                             "model); also needs Allow Online Access in Preferences › System › "
                                             "Network")
    device: EnumProperty(name="Device", default="auto", description="Where the engine runs the models", items=[
        ("auto", "Auto", "CUDA when available, else CPU"), ("cuda", "CUDA", "NVIDIA GPU"),
        ("cpu", "CPU", "Very slow for full-size models")])
    precision: EnumProperty(name="Precision", default="auto", description="Number format of the models' weights",
                            items=[("auto", "Auto", "FP16 on CUDA, FP32 on CPU"),
                                   ("fp16", "FP16", "Half precision (less GPU memory)"),
                                   ("bf16", "BF16", "bfloat16 half precision"), ("fp32", "FP32", "Full precision")])
    memory: EnumProperty(name="GPU Memory", default="default",
                         description="How much GPU memory the engine may keep busy", items=[
        ("default", "Default", "Models stay on the GPU (≈ 12 GB at 512², 24 frames)"),
        ("low-vram", "Low VRAM", "Idle models wait in system memory, smaller batches and decode chunks "
                                 "(≈ 5 GB at 512², 24 frames; somewhat slower)"),
        ("minimal", "Minimal", "Weights streamed layer by layer (≈ 2–3 GB; much slower)")])
    keep_warm: BoolProperty(name="Keep Models Loaded", default=True,
                            description="Keep models in GPU memory between jobs (off: unload after each job)")

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        col = layout.column()
        col.prop(self, "engine_python")
        if not self.engine_python:
            col.label(text=f"Auto: {default_engine_python()}", icon="INFO")
        row = layout.row()
        row.operator(DR_OT_setup_engine.bl_idname, icon="CONSOLE")
        row.operator(DR_OT_test_engine.bl_idname, icon="PLAY")
        draw_engine_status(layout)
        col = layout.column()
        col.prop(self, "weights_dir")
        col.prop(self, "allow_download")
        if self.allow_download and not model_manager.online_access():
            col.label(text=f"Turn on {model_manager.ONLINE_SETTING} to download.", icon="ERROR")
        model_manager.draw(layout)
        col = layout.column()
        col.prop(self, "device")
        col.prop(self, "precision")
        col.prop(self, "memory")
        col.prop(self, "keep_warm")
        layout.label(text="Model weights: NVIDIA Source Code License (non-commercial research use only)",
                     icon="INFO")


def draw_engine_status(layout) -> None:
    """The set-up's progress (elapsed time, stage, last log line; the log's tail after a failure) and the
    result of Test Engine."""
    setup = setup_progress()
    if not (setup["log"] or _TEST_INFO["text"] or _TEST_INFO["error"]):
        return
    box = layout.box()
    if setup["running"]:
        box.label(text=f"Setting up the engine… {setup['elapsed']:.0f} s", icon="SORTTIME")
        box.label(text=f"Stage: {setup['stage']}")
        if setup["last"] and setup["last"] != f"[setup] {setup['stage']}":
            box.label(text=f"Last: {setup['last']}")
    elif setup["rc"] is not None:
        ok = setup["rc"] == 0
        box.label(text="The engine is set up. Press Test Engine." if ok else
                  f"The engine set-up failed (exit status {setup['rc']}); the end of its log:",
                  icon="CHECKMARK" if ok else "ERROR")
        sub = box.column(align=True)
        sub.alert = not ok
        for line in setup["tail"]:
            sub.label(text=line)
    if setup["log"]:
        box.label(text=f"Log: {setup['log']}", icon="TEXT")
    if _TEST_INFO["text"]:
        box.label(text=_TEST_INFO["text"], icon="CHECKMARK")
    if _TEST_INFO["error"]:
        sub = box.column()
        sub.alert = True
        for i, line in enumerate(_TEST_INFO["error"].splitlines()[:16]):
            sub.label(text=line, icon="ERROR" if i == 0 else "BLANK1")


def _log_tail(path: str, n: int) -> list:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return [ln.rstrip() for ln in fh.readlines()[-n:]]
    except OSError:
        return []


def test_info() -> dict:
    return dict(_TEST_INFO)


classes = (*model_manager.classes, DR_OT_setup_engine, DR_OT_test_engine, DR_AddonPreferences)


def unregister() -> None:
    """The add-on is disabled: the Set Up Engine poll timer goes too (the setup process itself goes on)."""
    if bpy.app.timers.is_registered(_setup_poll):
        bpy.app.timers.unregister(_setup_poll)
