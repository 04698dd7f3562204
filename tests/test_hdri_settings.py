"""Per-HDRI light settings (params ``hdri_settings``): validated in the contract, applied per light by the forward
job over the job-wide env_rotation / env_strength / env_flip."""
from __future__ import annotations

import pytest

from engine.contract import params, protocol
from engine.jobs.common import JobError
from engine.jobs.forward_job import ForwardSettings, light_settings
from engine.jobs.settings import build_settings


def _params(**extra):
    return {"gbuffers": "/tmp/set", "hdri": ["/tmp/a.hdr", "/tmp/b.exr"], **extra}


def test_submit_with_per_hdri_settings_validates():
    ok = _params(hdri_settings=[{"rotation": 90.0, "strength": 2.0, "flip": True}, {}])
    assert protocol.validate(protocol.submit("j", "forward", "/tmp/j", ok)) == []
    assert params.param("hdri_settings").cli is None          # protocol only: the CLI takes one value for all


@pytest.mark.parametrize("items, fragment", [
    ([{"rotation": 1.0}], "1 entries for 2 HDRIs"),
    ([{"spin": 1.0}, {}], "unknown key 'spin'"),
    ([{"strength": -1.0}, {}], "strength must be between 0 and"),
    ([{"flip": "yes"}, {}], "flip must be bool"),
])
def test_bad_per_hdri_settings_are_named(items, fragment):
    problems = params.problems("forward", _params(hdri_settings=items))
    assert len(problems) == 1 and fragment in problems[0] and "hdri_settings" in problems[0]


def test_each_light_gets_its_own_rotation_strength_and_flip(tmp_path):
    (tmp_path / "set").mkdir()
    built = build_settings("forward", {"gbuffers": str(tmp_path / "set"), "hdri": ["a.hdr", "b.hdr"], "out": "o",
                                       "env_rotation": 30.0, "env_strength": 0.5,
                                       "hdri_settings": [{"rotation": 90.0, "flip": True}, {"strength": 3.0}]})
    first, second = light_settings(built.settings, 2)
    assert (first.env_rotation, first.env_strength, first.env_flip) == (90.0, 0.5, True)
    assert (second.env_rotation, second.env_strength, second.env_flip) == (30.0, 3.0, False)
    assert first.hdri_settings is None and first.model == built.settings.model


def test_without_per_hdri_settings_every_light_shares_the_jobs():
    s = ForwardSettings(env_rotation=45.0)
    assert light_settings(s, 3) == [s, s, s]
    with pytest.raises(JobError, match="2 entries for 3 HDRIs"):
        light_settings(ForwardSettings(hdri_settings=[{}, {}]), 3)
