"""The model manager (Preferences › Model Weights): Download refuses clearly while Blender may not go online,
and otherwise asks the engine (protocol "download") and shows its answer; Set Up Engine's progress."""
from __future__ import annotations

import os
import sys
import time

import pytest

PKG = "bl_ext.user_default.diffusion_renderer"
bpy = pytest.importorskip("bpy", reason="bpy (Blender as a Python module) is not installed; run bin/test-blender")
needs_engine = pytest.mark.skipif(not os.environ.get("DR_ENGINE_PYTHON"),
                                  reason="DR_ENGINE_PYTHON (the engine's interpreter) is not set")


def _mm():
    return sys.modules[PKG + ".model_manager"]


def test_download_offline_names_the_setting_and_starts_nothing(addon):
    assert not bpy.app.online_access          # bpy as a module starts with online access off
    client = sys.modules[PKG + ".client"]
    before = len(client.REGISTRY)
    with pytest.raises(RuntimeError) as err:
        bpy.ops.diffusion_renderer.download_model(model="forward")
    text = str(err.value)
    assert "Preferences › System › Network › Allow Online Access" in text and "Download" in text
    assert len(client.REGISTRY) == before and not _mm().running()
    assert _mm().state("forward")["error"] == _mm().OFFLINE_MESSAGE        # shown in the preferences too


def test_manifest_declares_the_network_permission(addon):
    import tomllib
    from pathlib import Path

    meta = tomllib.loads((Path(addon.__file__).parent / "blender_manifest.toml").read_text())
    assert "weights" in meta["permissions"]["network"]


def test_preferences_draw_the_model_rows(addon):
    from test_addon_ui import FakeLayout

    layout = FakeLayout()
    prefs = bpy.context.preferences.addons[PKG].preferences
    proxy = type("P", (), {"layout": layout, "__getattr__": lambda self, name: getattr(prefs, name)})()
    type(prefs).draw(proxy, bpy.context)
    ops = [c for c in layout.calls if c == ("operator", "diffusion_renderer.download_model")]
    assert len(ops) == len(_mm().MODELS)


def test_setup_progress_shows_the_stage_and_the_last_line(addon, tmp_path):
    prefs_mod = sys.modules[PKG + ".preferences"]
    log = tmp_path / "setup.log"
    log.write_text("[setup] creating the engine environment\nCollecting torch\n[setup] installing torch\n"
                   "Downloading torch-2.13.0.whl (800 MB)\n")
    saved = dict(prefs_mod._SETUP)
    try:
        prefs_mod._SETUP.update(proc=object(), log=str(log), started=time.time() - 5, rc=None)
        info = prefs_mod.setup_progress()
        assert info["running"] and info["stage"] == "installing torch" and info["elapsed"] >= 5
        assert info["last"] == "Downloading torch-2.13.0.whl (800 MB)"
        log.write_text("".join(f"line {i}\n" for i in range(30)) + "ModuleNotFoundError: No module named 'ssl'\n")
        prefs_mod._SETUP.update(proc=None, rc=1)
        info = prefs_mod.setup_progress()
        assert len(info["tail"]) == 12 and info["tail"][-1].startswith("ModuleNotFoundError")   # the root cause
    finally:
        prefs_mod._SETUP.clear()
        prefs_mod._SETUP.update(saved)


@needs_engine
def test_download_round_trip_shows_the_engines_answer(addon, tmp_path, monkeypatch):
    """With online access (patched on), Download sends the protocol request; the engine here runs with
    HF_HUB_OFFLINE=1 and an empty weights folder, so it answers weights_unavailable, shown in the row."""
    mm, client_pkg = _mm(), sys.modules[PKG + ".client"]
    monkeypatch.setattr(mm, "online_access", lambda: True)
    prefs = bpy.context.preferences.addons[PKG].preferences
    prefs.weights_dir = str(tmp_path / "weights")
    try:
        assert bpy.ops.diffusion_renderer.download_model(model="forward") == {"FINISHED"}
        assert mm.running() == ["forward"]
        assert mm._draw_statusbar in bpy.types.STATUSBAR_HT_header._dyn_ui_initialize()
        assert not bpy.ops.diffusion_renderer.download_model.poll()        # one download at a time
        deadline = time.monotonic() + 240
        while mm.running() and time.monotonic() < deadline:
            mm._flush_pending()                # bpy.app.timers do not fire in bpy as a module
            client_pkg.timer.tick()
            time.sleep(0.05)
        st = mm.state("forward")
        assert not mm.running() and "forward" in st["error"] and "HF_HUB_OFFLINE" in st["error"], st
        assert mm._draw_statusbar not in bpy.types.STATUSBAR_HT_header._dyn_ui_initialize()
        assert mm.cached("forward") is False           # the engine's hello listed it as not cached
        mm.unregister()                                # as disabling the add-on does: no timer left behind
        assert not bpy.app.timers.is_registered(mm._flush_pending)
    finally:
        prefs.weights_dir = ""
        mm.state("forward").update(error="", text="")
