"""`diffusion-renderer conformance`: every golden case passes; a tampered recording fails."""
import json
import re
import shutil

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
