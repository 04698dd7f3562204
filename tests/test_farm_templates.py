"""The render-farm templates of docs/FARM.md (tools/farm/), checked against a recorded ``plan --json`` sample.

| case | expected |
|---|---|
| Deadline Cloud / OpenJD template | parses as YAML; jobtemplate-2023-09; step Segments (INT task parameter over the plan's task indices) and step Assemble depending on it |
| the same, through openjd-model | validates; a job made for the sample plan has one OpenJD task per plan task |
| the template's runner, per task | executes exactly the plan task's command (`inverse|forward … --only-segments K`); for Assemble the command without `--only-segments` |
| OpenCue submitter, dry run (no OpenCue installed) | one single-frame layer per plan task with its command, an assemble layer after all of them, printed |
| OpenCue submitter without pyoutline / with a bad plan | one-line error naming the fix |
"""
import importlib.util
import json
import shlex
import sys
from pathlib import Path

import pytest
import yaml

FARM = Path(__file__).resolve().parents[1] / "tools" / "farm"
TEMPLATE = FARM / "deadline_job_template.yaml"
SAMPLE = FARM / "plan_example.json"


@pytest.fixture(scope="module")
def plan():
    return json.loads(SAMPLE.read_text())


@pytest.fixture(scope="module")
def template():
    return yaml.safe_load(TEMPLATE.read_text())


@pytest.fixture(scope="module")
def opencue():
    spec = importlib.util.spec_from_file_location("opencue_submit", FARM / "opencue_submit.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _without_only_segments(cmd):
    i = cmd.index("--only-segments")
    return cmd[:i] + cmd[i + 2:]


def test_sample_plan_has_the_cli_forms(plan):
    assert len(plan["tasks"]) == len(plan["units"]) == 5                  # 300 frames: 17 windows, 5 segments
    for t, u in zip(plan["tasks"], plan["units"]):
        assert t["command"][:2] == ["diffusion-renderer", plan["kind"]] and plan["kind"] in ("inverse", "forward")
        assert t["command"][t["command"].index("--only-segments") + 1] == str(u["segment"])
        assert _without_only_segments(t["command"]) == plan["assemble"]["command"]   # the same job, without it


def test_openjd_template_structure(template):
    assert template["specificationVersion"] == "jobtemplate-2023-09"
    params = {p["name"]: p for p in template["parameterDefinitions"]}
    assert params["PlanFile"]["type"] == "PATH" and params["Tasks"]["type"] == "STRING"
    segments, assemble = template["steps"]
    (task,) = segments["parameterSpace"]["taskParameterDefinitions"]
    assert task == {"name": "Index", "type": "INT", "range": "{{Param.Tasks}}"}
    assert assemble["dependencies"] == [{"dependsOn": segments["name"]}] and "parameterSpace" not in assemble
    for step, last in ((segments, "{{Task.Param.Index}}"), (assemble, "assemble")):
        run = step["script"]["actions"]["onRun"]
        assert run["args"] == ["{{Task.File.RunTask}}", "{{Param.PlanFile}}", last]
        assert [f["name"] for f in step["script"]["embeddedFiles"]] == ["RunTask"]


def test_openjd_model_validates_and_makes_one_task_per_plan_task(template, plan):
    model = pytest.importorskip("openjd.model")
    t = model.decode_job_template(template=template)
    n = len(plan["tasks"])
    values = {"PlanFile": model.ParameterValue(type=model.ParameterValueType.PATH, value=str(SAMPLE)),
              "Tasks": model.ParameterValue(type=model.ParameterValueType.STRING, value=f"0-{n - 1}"),
              "Python": model.ParameterValue(type=model.ParameterValueType.STRING, value="python3")}
    job = model.create_job(job_template=t, job_parameter_values=values)
    assert [s.name for s in job.steps] == ["Segments", "Assemble"]
    tasks = [int(ts["Index"].value) for ts in model.StepParameterSpaceIterator(space=job.steps[0].parameterSpace)]
    assert tasks == list(range(n))
    bad = dict(template, specificationVersion="jobtemplate-1999-01")
    with pytest.raises(Exception):
        model.decode_job_template(template=bad)


def _run_runner(template, step, which, monkeypatch):
    code = template["steps"][step]["script"]["embeddedFiles"][0]["data"]
    seen = []
    monkeypatch.setattr("os.execvp", lambda prog, args: seen.append((prog, list(args))))
    monkeypatch.setattr(sys, "argv", ["RunTask", str(SAMPLE), which])
    exec(compile(code, "RunTask", "exec"), {"__name__": "__main__"})
    (prog, args), = seen
    assert prog == args[0]
    return args


def test_openjd_runner_executes_the_plans_commands(template, plan, monkeypatch, capsys):
    for i, t in enumerate(plan["tasks"]):
        args = _run_runner(template, 0, str(i), monkeypatch)
        assert args == t["command"] and "--only-segments" in args
    args = _run_runner(template, 1, "assemble", monkeypatch)
    assert args == plan["assemble"]["command"] and "--only-segments" not in args
    assert f"running: {shlex.join(args)}" in capsys.readouterr().out


def test_opencue_layers_from_the_plan(opencue, plan, capsys):
    layers = opencue.build_layers(opencue.load_plan(SAMPLE))
    units, assemble = layers[:-1], layers[-1]
    assert [layer["command"] for layer in units] == [t["command"] for t in plan["tasks"]]
    assert len({layer["name"] for layer in layers}) == len(layers)
    assert all(not layer["depends_on"] for layer in units)
    assert assemble["name"] == "assemble" and assemble["command"] == plan["assemble"]["command"]
    assert assemble["depends_on"] == [layer["name"] for layer in units]
    assert opencue.main([str(SAMPLE), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"job dr-inverse-gbuffers: {len(units)} task layer(s) + assemble"
    assert out[1] == "task0000: " + shlex.join(plan["tasks"][0]["command"])
    assert out[-1].startswith("assemble: ") and f"(after {len(units)} layer(s))" in out[-1]
    assert opencue.argv("diffusion-renderer inverse 'a b.mov' --out o") == ["diffusion-renderer", "inverse", "a b.mov",
                                                                            "--out", "o"]


def test_opencue_errors_are_one_line(opencue, tmp_path):
    bad = tmp_path / "plan.json"
    bad.write_text('{"tasks": []}')
    with pytest.raises(SystemExit, match="needs 'tasks' and 'assemble'"):
        opencue.main([str(bad), "--dry-run"])
    with pytest.raises(SystemExit, match="not a readable plan"):
        opencue.main([str(tmp_path / "missing.json"), "--dry-run"])
    if importlib.util.find_spec("outline") is None:
        with pytest.raises(SystemExit, match="pyoutline is not installed"):
            opencue.main([str(SAMPLE)])
