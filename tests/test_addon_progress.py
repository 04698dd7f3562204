"""The add-on's reading of the engine's progress messages (stdlib client, no bpy, no engine): the text says
what the engine is doing (loading, denoising k/n of light i/n, writing) and the bar never lies."""
from __future__ import annotations

import importlib

import pytest

from addon_client_helpers import dr
from engine.contract import protocol as P

events = importlib.import_module("diffusion_renderer_addon.client.events")


def _msg(stage, step, total, **extra):
    msg = P.progress("j", stage, step, total, **extra)
    assert P.validate(msg, P.TO_CLIENT) == [], msg
    return msg


def test_stage_text_is_true_to_the_message():
    assert events.progress_text(_msg("load_model", 0, 0)) == "loading model…"
    assert events.progress_text(_msg("denoise", 3, 20, eta_s=41.2)) == "denoising 3/20, ~41 s left"
    assert events.progress_text(_msg("denoise", 3, 20, light=2, lights=3)) == "light 2/3: denoising 3/20"
    assert events.progress_text(_msg("write", 20, 20, light=3, lights=3)) == "light 3/3: writing results…"
    assert events.progress_text(_msg("write", 20, 20, light=1, lights=1)) == "writing results…"


def test_fraction_spans_every_light_and_keeps_room_for_writing():
    f = events.progress_fraction
    assert f(_msg("load_model", 0, 0)) is None
    seq = [f(_msg("denoise", s, 4, light=i, lights=2)) for i in (1, 2) for s in (1, 4)]
    assert seq == pytest.approx([0.11875, 0.475, 0.61875, 0.975])
    assert f(_msg("write", 4, 4, light=1, lights=2)) == pytest.approx(0.475)   # not 100 % through light 2
    assert f(_msg("write", 4, 4)) == pytest.approx(0.95) and f(_msg("convert", 2, 4)) == pytest.approx(0.5)


def test_registry_records_the_light():
    reg = dr.JobRegistry()
    job = reg.add("forward", {})
    reg.progress(job, "denoise", 1, 4, fraction=0.1, message="light 2/2: denoising 1/4", light=2, lights=2)
    assert (job.light, job.lights, job.state, job.message) == (2, 2, "running", "light 2/2: denoising 1/4")
    assert job.progress_log[-1]["light"] == 2
