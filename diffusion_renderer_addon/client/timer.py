"""Main-thread polling: ONE persistent ``bpy.app.timers`` function drains the engine's queue, updates the
job registry (callbacks run here, on the main thread) and tags UI regions for redraw.

``register()`` / ``unregister()`` from the add-on's register/unregister. ``tick()`` is the timer function;
it is safe without an engine (and without bpy: it then only pumps), and tests call it directly in a loop
because timers do not fire when bpy runs as a module.
"""
from __future__ import annotations

import sys
import traceback

from . import session

ACTIVE_INTERVAL = 0.1        # seconds between ticks while the engine starts or a job runs
IDLE_INTERVAL = 0.5
REDRAW_AREAS = frozenset({"PROPERTIES", "VIEW_3D", "IMAGE_EDITOR", "NODE_EDITOR", "SEQUENCE_EDITOR", "PREFERENCES",
                          "STATUSBAR"})
_last_redraw = [None]


def tick() -> float:
    """Drain the engine's events; returns the seconds until the next call (never None: it stays alive)."""
    try:
        client = session.current()
        if client is None:
            return IDLE_INTERVAL
        changed = client.pump(timeout=0.0)
        stamp = (client.registry.revision, client.state)
        if changed or stamp != _last_redraw[0]:
            _last_redraw[0] = stamp
            tag_redraw()
        return ACTIVE_INTERVAL if client.busy else IDLE_INTERVAL
    except Exception:  # noqa: BLE001 - the timer must survive anything
        print("DiffusionRenderer: engine timer error:", file=sys.stderr)
        traceback.print_exc()
        return IDLE_INTERVAL


def tag_redraw() -> None:
    """Redraw the areas that show job progress (no-op without bpy or without windows)."""
    bpy = sys.modules.get("bpy")
    if bpy is None:
        return
    wm = getattr(getattr(bpy, "context", None), "window_manager", None)
    for window in getattr(wm, "windows", ()) or ():
        screen = window.screen
        for area in (screen.areas if screen else ()):
            if area.type in REDRAW_AREAS:
                area.tag_redraw()


def register() -> None:
    import bpy

    if not bpy.app.timers.is_registered(tick):
        bpy.app.timers.register(tick, first_interval=ACTIVE_INTERVAL, persistent=True)


def unregister() -> None:
    import bpy

    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)


def is_registered() -> bool:
    bpy = sys.modules.get("bpy")
    return bool(bpy is not None and bpy.app.timers.is_registered(tick))
