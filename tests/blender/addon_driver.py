"""Driving the installed add-on's jobs from a test as Blender's event loop would (bpy as a module fires no
timers): the status, the engine client, idle, and a pump that calls the add-on's timer function."""
from __future__ import annotations

import sys
import time

import bpy

PKG = "bl_ext.user_default.diffusion_renderer"


def status():
    return bpy.context.window_manager.diffusion_renderer


def client():
    return sys.modules[PKG + ".client"].current()


def idle() -> bool:
    c = client()
    return not status().running and (c is None or not c.registry.active())


def pump(until, timeout=300.0) -> list:
    """Call the add-on's registered timer function at the interval it returns until ``until()``; returns the
    (progress, status, job_id) seen after each tick."""
    timer, seen = sys.modules[PKG + ".client.timer"], []
    assert bpy.app.timers.is_registered(timer.tick), "the add-on's engine timer is not registered"
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, f"timed out; last status {seen[-1:] or status().status!r}"
        interval = timer.tick()
        st = status()
        seen.append((st.progress, st.status, st.job_id))
        time.sleep(min(interval, 0.02))
    return seen
