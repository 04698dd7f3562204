"""Add-on preferences: the engine's interpreter, weights cache, device/precision, and the "Set up engine" /
"Test engine" operators. Also the one place that turns preferences into the client's EngineConfig."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty

from . import client as dr

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
    if not allow_download(prefs):
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
    proc = _SETUP["proc"]
    if proc is None:
        return None
    rc = proc.poll()
    if rc is None:
        return 0.5
    _SETUP.update(proc=None, rc=rc)
    dr.timer.tag_redraw()
    return None


class DR_OT_setup_engine(bpy.types.Operator):
    """Create the engine's Python environment (torch, diffusers…) in the extension's user folder, in the
    background; progress goes to a log file shown in the preferences"""
    bl_idname = "diffusion_renderer.setup_engine"
    bl_label = "Set up engine"

    def execute(self, context):
        root = engine_root()
        boot = os.path.join(root or "", "bin", "_bootstrap.py")
        if not root or not os.path.isfile(boot):
            self.report({"ERROR"}, "The bundled engine set-up script (bin/_bootstrap.py) is missing")
            return {"CANCELLED"}
        if _SETUP["proc"] is not None:
            self.report({"WARNING"}, "Engine set-up is already running")
            return {"CANCELLED"}
        if not getattr(bpy.app, "online_access", True):
            self.report({"WARNING"}, "Blender's online access is off; set-up needs pip downloads (it may fail)")
        venv = user_dir("engine-venv")
        log = os.path.join(user_dir("logs", create=True), "engine-setup.log")
        env = dr.clean_env(None, {"DR_VENV": venv})
        env.pop("PYTHONPATH", None)
        py = os.environ.get("DR_SETUP_PYTHON") or ("python" if _WIN else "python3")
        with open(log, "w", encoding="utf-8") as fh:
            fh.write(f"$ {py} {boot} --print-python  (DR_VENV={venv})\n")
            fh.flush()
            try:
                _SETUP["proc"] = subprocess.Popen([py, boot, "--print-python"], stdout=fh, stderr=subprocess.STDOUT,
                                                  stdin=subprocess.DEVNULL, env=env, cwd=root)
            except OSError as exc:
                self.report({"ERROR"}, f"Cannot run {py}: {exc}; set DR_SETUP_PYTHON to a Python ≥ 3.11")
                return {"CANCELLED"}
        _SETUP.update(log=log, started=time.time(), rc=None)
        prefs = get(context)
        if prefs is not None:
            prefs.engine_python = _venv_python(venv)
        bpy.app.timers.register(_setup_poll, first_interval=0.5)
        self.report({"INFO"}, f"Setting up the engine in {venv} (log: {log})")
        return {"FINISHED"}


class DR_OT_test_engine(bpy.types.Operator):
    """Start the engine and wait for its hello: shows its device and versions"""
    bl_idname = "diffusion_renderer.test_engine"
    bl_label = "Test engine"

    timeout: bpy.props.FloatProperty(name="Timeout", default=180.0, min=1.0)

    def execute(self, context):
        try:
            info = client(get(context)).wait_ready(self.timeout)
        except dr.ClientError as exc:
            _TEST_INFO.update(text="", error=exc.short())
            self.report({"ERROR"}, exc.short())
            return {"CANCELLED"}
        _TEST_INFO.update(text=describe_hello(info), error="")
        status = getattr(context.window_manager, "diffusion_renderer", None)
        if status is not None:
            status.engine_info = _TEST_INFO["text"]
        self.report({"INFO"}, "Engine OK: " + _TEST_INFO["text"])
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
                                  description="Interpreter of the engine's environment (empty: auto-detect)")
    weights_dir: StringProperty(name="Weights folder", subtype="DIR_PATH", default="",
                                description="Hugging Face cache for the model weights (HF_HOME; empty: default)")
    allow_download: BoolProperty(name="Allow downloading weights", default=False,
                                 description="Let the engine fetch missing published weights (~3 GB per model); "
                                             "also needs Blender's online access (Preferences › System › Network)")
    device: EnumProperty(name="Device", default="auto", items=[
        ("auto", "Auto", "CUDA when available, else CPU"), ("cuda", "CUDA", "NVIDIA GPU"),
        ("cpu", "CPU", "Very slow for full-size models")])
    precision: EnumProperty(name="Precision", default="auto", items=[
        ("auto", "Auto", "fp16 on CUDA, fp32 on CPU"), ("fp16", "FP16", "Half precision (low VRAM)"),
        ("bf16", "BF16", "bfloat16"), ("fp32", "FP32", "Full precision")])
    memory: EnumProperty(name="GPU memory", default="default", items=[
        ("default", "Default", "Models stay on the GPU (≈ 12 GB at 512², 24 frames)"),
        ("low-vram", "Low VRAM", "Idle models wait in system memory, smaller batches and decode chunks "
                                 "(≈ 5 GB at 512², 24 frames; somewhat slower)"),
        ("minimal", "Minimal", "Weights streamed layer by layer (≈ 2–3 GB; much slower)")])
    keep_warm: BoolProperty(name="Keep models loaded", default=True,
                            description="Keep models in GPU memory between jobs (off: unload after each job)")

    def draw(self, context):
        layout = self.layout
        col = layout.column()
        col.prop(self, "engine_python")
        if not self.engine_python:
            col.label(text=f"Auto: {default_engine_python()}", icon="INFO")
        col.prop(self, "weights_dir")
        row = col.row()
        row.prop(self, "allow_download")
        if self.allow_download and not getattr(bpy.app, "online_access", True):
            col.label(text="Blender's online access is off: downloads stay disabled", icon="ERROR")
        row = col.row()
        row.prop(self, "device")
        row.prop(self, "precision")
        col.prop(self, "memory")
        col.prop(self, "keep_warm")
        row = layout.row()
        row.operator(DR_OT_setup_engine.bl_idname, icon="CONSOLE")
        row.operator(DR_OT_test_engine.bl_idname, icon="PLAY")
        box = layout.box()
        if _SETUP["proc"] is not None:
            box.label(text=f"Setting up… ({time.time() - (_SETUP['started'] or time.time()):.0f} s)", icon="SORTTIME")
        elif _SETUP["rc"] is not None:
            box.label(text="Set-up finished" if _SETUP["rc"] == 0 else f"Set-up failed (exit {_SETUP['rc']})",
                      icon="CHECKMARK" if _SETUP["rc"] == 0 else "ERROR")
        if _SETUP["log"]:
            box.label(text=f"Log: {_SETUP['log']}")
            for line in _log_tail(_SETUP["log"], 6):
                box.label(text=line[:120])
        if _TEST_INFO["text"]:
            box.label(text=_TEST_INFO["text"], icon="CHECKMARK")
        if _TEST_INFO["error"]:
            sub = box.column()
            sub.alert = True
            sub.label(text=_TEST_INFO["error"][:200], icon="ERROR")
        layout.label(text="Model weights: NVIDIA Source Code License (non-commercial research use only)",
                     icon="INFO")


def _log_tail(path: str, n: int) -> list:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return [ln.rstrip() for ln in fh.readlines()[-n:]]
    except OSError:
        return []


def test_info() -> dict:
    return dict(_TEST_INFO)


classes = (DR_OT_setup_engine, DR_OT_test_engine, DR_AddonPreferences)
