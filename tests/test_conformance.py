"""`diffusion-renderer conformance`: every golden case passes; a tampered recording fails."""
import json
import re
import shutil
from pathlib import Path

import pytest

from engine.cli import main


def test_conformance_passes_every_golden_case(golden_dir, capsys):
    code = main(["conformance", str(golden_dir)])
    out = capsys.readouterr().out.strip().splitlines()
    summary = out[-1]
    m = re.fullmatch(r"conformance: (\d+) cases, (\d+) failed, max error (\S+)( \(.*skipped.*\))?", summary)
    assert m, summary
    assert code == 0 and m.group(2) == "0", "\n".join(out)
    names = [line.split()[1] for line in out[:-1] if line.startswith("ok")]
    for expected in ("inverse-tiny/basecolor", "inverse-tiny/diffuse_albedo", "inverse-tiny/basecolor__decode_chunk_size2",
                     "forward-tiny/sky_lora0.5_rotate", "forward-tiny/vondelpark_lora0.25_static_elev30",
                     "env-proj/sky_32_flip_rot90_x2_log100", "env-proj/vondelpark128_64_fixed"):
        assert expected in names, f"{expected} missing from:\n" + "\n".join(out)
    assert int(m.group(1)) >= 19
    # frames of every pipeline case within the README's fp32 tolerance
    for line in out[:-1]:
        fm = re.search(r"frames (\S+),", line)
        if fm:
            assert float(fm.group(1)) <= 1e-4, line


def _small_envproj_copy(golden_dir, tmp_path, case="sky_32_fixed"):
    dst = tmp_path / "golden"
    src = golden_dir / "env-proj"
    (dst / "env-proj" / "outputs").mkdir(parents=True)
    shutil.copytree(src / "inputs", dst / "env-proj" / "inputs")
    cases = json.loads((src / "cases.json").read_text())
    cases["cases"] = {case: cases["cases"][case]}
    (dst / "env-proj" / "cases.json").write_text(json.dumps(cases))
    shutil.copy(src / "outputs" / f"{case}.safetensors", dst / "env-proj" / "outputs")
    return dst, dst / "env-proj" / "outputs" / f"{case}.safetensors"


def test_conformance_runs_on_any_folder_of_the_format_and_fails_on_deviation(golden_dir, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    root, out_file = _small_envproj_copy(golden_dir, tmp_path)
    assert main(["conformance", str(root)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("conformance: 1 cases, 0 failed")
    tensors = load_file(str(out_file))
    tensors["env_ldr"] = tensors["env_ldr"] + 5e-5  # beyond the 1e-5 tolerance
    save_file(tensors, str(out_file), metadata={"format": "pt"})
    assert main(["conformance", str(root)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("conformance: 1 cases, 1 failed")
    assert out[0].startswith("FAIL") and "env_ldr" in out[0]


def test_conformance_rejects_a_folder_without_cases(tmp_path, capsys):
    assert main(["conformance", str(tmp_path)]) == 2
    assert "no call_args.json or cases.json" in capsys.readouterr().err


# ---- every reference setting is implemented or fails the case by name (engine/conformance_settings.py)

def _run(**call):
    return {"cli_overrides": ["inference_n_steps=3", "use_fixed_frame_ind=true", "fixed_frame_ind=2",
                              "inference_min_guidance_scale=1.0", "inference_max_guidance_scale=3.0"],
            "call_kwargs": {"num_inference_steps": 3, "min_guidance_scale": 1.0, "max_guidance_scale": 3.0, **call}}


def test_resolve_run_reads_fixed_frame_and_guidance_ramp():
    from engine.conformance_settings import resolve_run

    st = resolve_run("forward", _run(fps=9, motion_bucket_id=60, decode_chunk_size=2,
                                     cross_attention_kwargs={"scale": 0.5},
                                     generator="torch.Generator('cpu').manual_seed(5)"))
    assert (st.fixed_frame, st.guidance, st.steps) == (2, (1.0, 3.0), 3)
    assert (st.fps, st.motion_bucket_id, st.decode_chunk, st.lora_scale, st.seed) == (9, 60, 2, 0.5, 5)
    assert resolve_run("forward", {"cli_overrides": ["use_fixed_frame_ind=false", "fixed_frame_ind=2"]}).fixed_frame is None


@pytest.mark.parametrize("run, named", [
    ({"cli_overrides": ["inference_magic=1"]}, "inference_magic"),
    ({"call_kwargs": {"bogus_kwarg": 1}}, "bogus_kwarg"),
    ({"call_kwargs": {"dynamic_guidance": True}}, "dynamic_guidance"),
    ({"call_kwargs": {"noise_aug_strength": 0.02}}, "noise_aug_strength"),
    ({"cli_overrides": ["autocast=true"]}, "autocast"),
    ({"process_environment_map_kwargs": {"pose_file": "poses.npy"}}, "pose_file"),
    ({"cli_overrides": ["inference_n_steps=3"], "call_kwargs": {"num_inference_steps": 4}}, "num_inference_steps"),
    ({"pipeline_init": {"scheduler_override": {"timestep_spacing": "leading"}}}, "timestep_spacing"),
    ({"unexpected_run_key": 1}, "unexpected_run_key"),
])
def test_resolve_run_fails_on_what_it_does_not_implement(run, named):
    from engine.conformance_settings import UnsupportedSetting, resolve_run

    with pytest.raises(UnsupportedSetting, match=named):
        resolve_run("forward", run)


def test_envproj_case_with_an_unknown_argument_fails_by_name(golden_dir, tmp_path, capsys):
    root, _ = _small_envproj_copy(golden_dir, tmp_path)
    cases_file = root / "env-proj" / "cases.json"
    cases = json.loads(cases_file.read_text())
    cases["cases"]["sky_32_fixed"]["kwargs"]["exposure_boost"] = 2.0
    cases_file.write_text(json.dumps(cases))
    assert main(["conformance", str(root)]) == 1
    line = capsys.readouterr().out.strip().splitlines()[0]
    assert line.startswith("FAIL") and "kwargs.exposure_boost" in line


@pytest.fixture(scope="module")
def own_cases(golden_dir, ckpts, tmp_path_factory):
    """tests/fixtures/make_conformance_cases.py: a guidance ramp and a fixed frame, expected by construction."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_cases", Path(__file__).parent / "fixtures" /
                                                  "make_conformance_cases.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    hdr = golden_dir / "forward-tiny" / "inputs" / "env" / "synthetic_sky_64x32.hdr"
    return mod.build(tmp_path_factory.mktemp("own-cases"), ckpts[1], hdr)


def test_own_cases_ramp_and_fixed_frame_pass(own_cases, capsys):
    assert main(["conformance", str(own_cases)]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "ok   cases/ramp" in out and "ok   cases/fixed2" in out


def test_own_cases_fail_without_the_settings_or_with_an_unknown_one(own_cases, tmp_path, capsys):
    root = tmp_path / "copy"
    shutil.copytree(own_cases, root)
    index = root / "cases" / "call_args.json"
    args = json.loads(index.read_text())
    fixed = args["runs"]["fixed2"]["cli_overrides"]
    args["runs"]["fixed2"]["cli_overrides"] = [o for o in fixed if "fixed_frame" not in o]  # override dropped
    args["runs"]["ramp"]["call_kwargs"]["min_guidance_scale"] = 3.0                          # ramp made flat
    args["runs"]["ramp"]["cli_overrides"].append("inference_sharpen=true")                   # an unknown key
    index.write_text(json.dumps(args))
    assert main(["conformance", str(root)]) == 1
    out = capsys.readouterr().out
    fixed_line = next(line for line in out.splitlines() if "cases/fixed2" in line)
    ramp_line = next(line for line in out.splitlines() if "cases/ramp" in line)
    assert fixed_line.startswith("FAIL") and "frames" in fixed_line
    assert ramp_line.startswith("FAIL") and "inference_sharpen" in ramp_line
