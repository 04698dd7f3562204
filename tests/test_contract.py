"""engine/contract: stdlib only, loaded as a package (never by file path), and the one source of the job
parameters — the protocol's tables, the CLI's options, the settings' defaults and the docs' tables are
derived from it."""
from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine.contract import blender_passes, docs, gbuffer_set, params, protocol

REPO = Path(__file__).resolve().parents[1]

_BLOCKER = """
import importlib.abc, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'numpy', 'diffusers', 'bpy', 'OpenEXR'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Refuse())
"""


def test_contract_imports_with_torch_and_numpy_blocked():
    code = _BLOCKER + (
        "import engine.contract as c, engine.contract.docs\n"
        "assert c.protocol.validate(c.protocol.submit('j', 'gbuffers', '/tmp/j', {'input': '/r'})) == []\n"
        "bad = [m for m in sys.modules if m.split('.')[0] == 'engine' and m != 'engine'\n"
        "       and not m.startswith('engine.contract')]\n"
        "print(bad)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    # and the blocker does block: a module that needs numpy fails under it
    out = subprocess.run([sys.executable, "-c", _BLOCKER + "import engine.gbuffer\n"], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode != 0 and "blocked: numpy" in out.stderr


def test_contract_sources_import_only_the_stdlib_and_each_other():
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    for path in (REPO / "engine" / "contract").glob("*.py"):
        for mod in re.findall(r"^\s*(?:from|import) ([\w.]+)", path.read_text(), re.MULTILINE):
            assert mod.startswith(".") or mod.split(".")[0] in stdlib, (path.name, mod)


def test_no_file_path_loading_in_the_addon_or_the_contract():
    roots = [REPO / "diffusion_renderer_addon", REPO / "engine" / "contract"]
    hits = [str(p.relative_to(REPO)) for root in roots for p in root.rglob("*.py")
            if re.search(r"spec_from_file_location|SourceFileLoader|load_source", p.read_text())]
    assert hits == []
    assert not (REPO / "engine" / "protocol.py").exists() and not (REPO / "engine" / "protocol_fields.py").exists()


def test_protocol_tables_come_from_the_parameter_table():
    for kind in params.KINDS:
        table = protocol.PARAMS[kind]
        assert list(table) == list(params.for_kind(kind))
        for name, f in table.items():
            p = params.param(name, kind)
            assert (f.types, f.required, f.choices, f.minimum, f.maximum, f.length, f.doc) == \
                   (p.type, p.required, p.choices, p.minimum, p.maximum, p.length, p.help), (kind, name)
    assert protocol.JOB_KINDS == params.KINDS
    assert tuple(protocol.PASSES) == gbuffer_set.MODEL_PASSES
    assert protocol.DEFAULT_PASSES == params.default("passes") == list(gbuffer_set.DEFAULT_PASSES)


def test_every_default_passes_the_protocols_own_checks():
    for kind in params.KINDS:
        required = {"input": "/x", "gbuffers": "/x", "hdri": ["/h.hdr"]}
        msg = {n: v for n, v in required.items() if n in params.for_kind(kind)}
        assert params.problems(kind, {**params.defaults(kind), **msg}) == [], kind


@pytest.mark.parametrize("kind", params.KINDS)
def test_cli_defaults_and_options_equal_the_table(kind):
    from engine.cli import build_parser
    from engine.cli_options import params_from_args

    parser = build_parser()
    argv = {"inverse": ["inverse", "clip", "--out", "o"], "forward": ["forward", "set", "--hdri", "a.hdr", "--out", "o"],
            "gbuffers": ["gbuffers", "render", "--out", "o"]}[kind]
    args = parser.parse_args(argv)
    sub = next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == kind)[1]
    flags = {s for a in sub._actions for s in a.option_strings} | {a.dest for a in sub._actions if not a.option_strings}
    for p in params.for_kind(kind).values():
        if p.cli is None:
            assert p.flag not in flags
            continue
        assert (p.name if p.cli == "positional" else p.flag) in flags, p.name
        action = next(a for a in sub._actions if a.dest == p.name)
        if p.cli == "option" and p.choices:
            assert tuple(action.choices) == p.choices
        assert p.help.split(" (")[0][:20].lower() in (action.help or "").lower(), p.name
    # nothing given → only the inputs reach the params: every other value is the table's default
    got = params_from_args(kind, args)
    assert set(got) <= {"input", "gbuffers", "hdri", "out"}
    # every option given → the params dict carries it under the parameter's name
    full = parser.parse_args(argv + {"inverse": ["--passes", "normal,depth", "--frame-range", "3:9", "--seed", "-1",
                                                 "--no-previews", "--overwrite", "--colorspace", "linear"],
                                     "forward": ["--rotate-light", "--guidance", "2.5", "--hdri", "b.exr",
                                                 "--env-resolution", "64x32"],
                                     "gbuffers": ["--no-previews"]}[kind])
    got = params_from_args(kind, full)
    want = {"inverse": {"passes": ["normal", "depth"], "frame_range": [3, 9], "seed": -1, "previews": False,
                        "overwrite": True, "colorspace": "linear"},
            "forward": {"rotate_light": True, "guidance": 2.5, "hdri": ["a.hdr", "b.exr"], "env_resolution": "64x32"},
            "gbuffers": {"previews": False}}[kind]
    assert {k: got[k] for k in want} == want
    assert params.problems(kind, got) == []


def test_cli_errors_name_the_option():
    from engine.cli_options import OptionError, check_params, params_from_args
    from engine.cli import build_parser

    args = build_parser().parse_args(["inverse", "c", "--out", "o", "--passes", "normal,albedo"])
    with pytest.raises(OptionError, match=r"^--passes: unknown pass albedo; choose from basecolor"):
        params_from_args("inverse", args)
    args = build_parser().parse_args(["inverse", "c", "--out", "o", "--frame-range", "9"])
    with pytest.raises(OptionError, match=r"^--frame-range '9': expected FIRST:LAST"):
        params_from_args("inverse", args)
    assert check_params("inverse", {"input": "c", "frames": 8, "overlap": 8}) == [
        "--overlap must be between 0 and --frames - 1 (7), got 8"]
    assert check_params("forward", {"gbuffers": "s", "hdri": ["h"], "guidance": 0.5}) == [
        "--guidance must be at least 1.0, got 0.5"]


@pytest.mark.parametrize("kind", params.KINDS)
def test_settings_defaults_equal_the_table(kind):
    from engine.jobs.settings import NOT_SETTINGS, build_settings, settings_class, to_setting

    cls, _ = settings_class(kind)
    fields = {f.name: f.default for f in dataclasses.fields(cls)}
    table = params.for_kind(kind)
    assert set(table) - NOT_SETTINGS <= set(fields), "every parameter is a settings field"
    for name in set(table) - NOT_SETTINGS:
        assert fields[name] == to_setting(name, params.default(name, kind), kind), name
    # params → settings: the same conversions for the CLI and the server
    given = {"input": str(REPO), "gbuffers": str(REPO), "hdri": ["a.hdr"], "seed": -1, "resolution": "128x64",
             "out": "o"}
    built = build_settings(kind, {k: v for k, v in given.items() if k in table}, base_dir=REPO)
    if kind != "gbuffers":
        assert built.settings.seed is None and built.settings.resolution == (128, 64)
    assert built.inputs[0] == REPO and built.inputs[-1] == REPO / "o"


def test_settings_report_a_missing_input_with_its_path(tmp_path):
    from engine.jobs.common import JobError
    from engine.jobs.settings import build_settings

    with pytest.raises(JobError, match=r"nope: input not found"):
        build_settings("inverse", {"input": "nope", "out": "o"}, base_dir=tmp_path)


def test_docs_tables_are_current():
    assert docs.stale() == [], "run `python -m engine.contract docs` to regenerate the docs' tables"
    text = (REPO / "docs" / "CLI.md").read_text()
    for kind in params.KINDS:
        assert f"<!-- generated: cli {kind} -->" in text
    assert docs.render("<!-- generated: cli gbuffers -->\nold\n<!-- end generated -->") == (
        f"<!-- generated: cli gbuffers -->\n{docs.cli_table('gbuffers')}\n<!-- end generated -->")
    with pytest.raises(ValueError, match="unknown generated block 'nope'"):
        docs.render("<!-- generated: nope -->\n<!-- end generated -->")


def test_docs_check_command_exits_nonzero_when_stale(tmp_path):
    for name in docs.FILES:
        (tmp_path / name).write_text((REPO / "docs" / name).read_text().replace("| `--steps N` | 20 |", "| x |"))
    assert docs.stale(tmp_path) == [str(tmp_path / "CLI.md")]
    assert docs.update(tmp_path) == [str(tmp_path / "CLI.md")] and docs.stale(tmp_path) == []
    out = subprocess.run([sys.executable, "-m", "engine.contract", "docs", "--check"], cwd=REPO, capture_output=True,
                         text=True)
    assert out.returncode == 0 and out.stdout == ""


def test_pass_vocabulary_is_defined_once():
    from engine.pipelines import DEFAULT_PASSES, GBUFFER_ORDER, PASS_INDEX

    assert tuple(PASS_INDEX) == gbuffer_set.MODEL_PASSES and tuple(DEFAULT_PASSES) == gbuffer_set.DEFAULT_PASSES
    assert GBUFFER_ORDER is gbuffer_set.FORWARD_PASSES
    assert set(gbuffer_set.FORWARD_PASSES) <= set(gbuffer_set.PASS_SPECS)


def test_blender_pass_names_serve_both_sides():
    from engine.io import blender_exr

    assert blender_exr.canonical_pass_name is blender_passes.canonical_pass_name
    for canon, (short, long) in blender_passes.LAYER_NAMES.items():
        assert blender_passes.canonical_pass(short) == blender_passes.canonical_pass(long) == canon
        assert {short, long} <= set(blender_passes.pass_layer_names(canon))
    assert blender_passes.canonical_pass("Z") == "depth" and blender_passes.canonical_pass("Combined") == "combined"
    assert blender_passes.canonical_pass_name("AOV_BaseColor") == "basecolor"
    assert blender_passes.canonical_pass_name("diffuse color") == "diffuse_color"
    assert blender_passes.canonical_pass("my_aov") is None and blender_passes.pass_layer_names("x") == ("x",)


def test_one_json_layout_for_the_contracts_files(tmp_path):
    from engine.contract import json_text, render_json

    data = {"a": [1, 2], "b": [{"c": [[1, 0], [0, 1]]}]}
    assert json_text.dumps(data) == '{\n  "a": [1, 2],\n  "b": [\n    {\n      "c": [[1, 0], [0, 1]]\n    }\n  ]\n}'
    assert gbuffer_set.dumps is json_text.dumps
    with pytest.raises(ValueError):
        json_text.dumps({"x": float("nan")})
    assert render_json.dumps(data) == json_text.dumps(data) + "\n"
