"""Golden-vector conformance for environment-map processing (``env-proj`` cases).

Works on any folder laid out like the golden ``env-proj/`` set: a ``cases.json`` with
``{"cases": {name: {"file", "hdr", "hdr_sha256"?, "kwargs", "tensors"}}}`` beside an ``outputs``
folder of safetensors files.  The HDR of a case is found, in order, at:

1. ``<golden root>/<hdr>`` (``<GOLDEN>/`` prefixes are stripped), the golden root being the folder
   above the one holding ``cases.json`` (skipped for ``<original repo>/...`` paths, i.e. files not
   shipped with the golden set);
2. ``<cases dir>/inputs/<basename>``;
3. ``<basename>`` in ``hdri_dirs``, ``$DR_HDRI_DIR`` and ``<golden root>/../hdri``.

A candidate is accepted only when its sha256 equals the case's ``hdr_sha256`` (when given).

A missing (or hash-mismatched) HDR raises :class:`MissingInputError` with a plain message.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from .hdr_io import load_envmap
from .projection import process_environment_map

__all__ = ["MissingInputError", "UnsupportedCaseSetting", "find_case_hdr", "load_cases", "run_envproj_case", "run_envproj_cases"]

# recorded inputs rather than outputs: compared implicitly through the tensors they index
_INPUT_TENSORS = ("cubemap_probe_index",)


class MissingInputError(FileNotFoundError):
    """The HDR a case needs is not available."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _dirs(golden_dir) -> tuple[Path, Path]:
    """(golden root, cases dir) from either the golden root or the env-proj folder."""
    g = Path(golden_dir)
    if (g / "cases.json").is_file():
        return g.parent, g
    return g, g / "env-proj"


def load_cases(golden_dir) -> dict:
    _, cases_dir = _dirs(golden_dir)
    with open(cases_dir / "cases.json", encoding="utf-8") as f:
        return json.load(f)["cases"]


def find_case_hdr(case: dict, golden_dir, hdri_dirs=()) -> Path:
    root, cases_dir = _dirs(golden_dir)
    ref = str(case["hdr"]).replace("\\", "/")
    want = case.get("hdr_sha256")
    name = ref.rsplit("/", 1)[-1]
    ref = ref.removeprefix("<GOLDEN>/")
    candidates = [] if ref.startswith("<") else [root / ref]
    candidates.append(cases_dir / "inputs" / name)
    extra = [Path(d) for d in hdri_dirs]
    if os.environ.get("DR_HDRI_DIR"):
        extra.append(Path(os.environ["DR_HDRI_DIR"]))
    extra.append(root.parent / "hdri")
    candidates += [d / name for d in extra]
    mismatched = []
    for path in candidates:
        if not path.is_file():
            continue
        if want and _sha256(path) != want:  # a different file of the same name: never compare against it
            mismatched.append(str(path))
            continue
        return path
    msg = f"HDR {case['hdr']!r} not found (looked in {[str(p) for p in candidates]})"
    if mismatched:
        msg += f"; sha256 mismatch for {mismatched}"
    raise MissingInputError(msg)


# every key of a case and of its process_environment_map kwargs that the runner understands; any other key
# fails the case by name (a setting is never dropped silently)
CASE_KEYS = {"file", "hdr", "hdr_sha256", "kwargs", "metadata_returned", "cubemap_shape", "tensors"}
KWARGS = {"resolution", "num_frames", "fixed_pose", "pose_file", "pose_offset", "pose_reset", "rotate_envlight",
          "env_format", "log_scale", "env_strength", "env_flip", "env_rot", "elevation",
          "save_dir", "prefix", "device"}   # save_dir/prefix: where the reference saves; device: where it runs
FORMATS = {"proj", "fixed", "ball", "cubemap"}


class UnsupportedCaseSetting(ValueError):
    """A case key or argument value the runner does not implement (the message names it)."""


def _kwargs(case: dict, recorded: set) -> dict:
    unknown = sorted(set(case) - CASE_KEYS) or sorted(f"kwargs.{k}" for k in set(case.get("kwargs", {})) - KWARGS)
    if unknown:
        raise UnsupportedCaseSetting(f"key {unknown[0]!r} is not implemented by the conformance runner")
    kw = dict(case.get("kwargs", {}))
    if not kw.get("fixed_pose", True) or kw.get("pose_file") or kw.get("pose_offset") or kw.get("pose_reset"):
        raise UnsupportedCaseSetting("fixed_pose=false / pose_file / pose_offset / pose_reset are not implemented "
                                     "(camera poses from a file)")
    bad = sorted(set(kw.get("env_format", ())) - FORMATS)
    if bad:
        raise UnsupportedCaseSetting(f"kwargs.env_format {bad[0]!r} is not implemented")
    fmts = list(kw.get("env_format", ["proj", "fixed", "ball"]))
    if "cubemap_probe_value" in recorded and "cubemap" not in fmts:
        fmts.append("cubemap")
    return {
        "resolution": tuple(kw.get("resolution", (512, 512))),
        "num_frames": int(kw.get("num_frames", 24)),
        "rotate_envlight": bool(kw.get("rotate_envlight", False)),
        "elevation": float(kw.get("elevation", 0.0)),
        "elevation_convention": "reference",
        "env_rot": float(kw.get("env_rot", 180.0)),
        "env_flip": bool(kw.get("env_flip", False)),
        "env_strength": float(kw.get("env_strength", 1.0)),
        "log_scale": float(kw.get("log_scale", 10000.0)),
        "env_format": tuple(fmts),
        "cube_resolution": int(case.get("cubemap_shape", [6, 512])[1]),
    }


def run_envproj_case(case_dict: dict, golden_dir, *, hdri_dirs=(), device=None) -> dict:
    """Compute our tensor and load the recorded one for every recorded output of one case.

    Returns ``{name: (ours, golden)}`` (CPU float tensors of equal shape).  ``cubemap_probe_value``
    is our cube map at the recorded ``cubemap_probe_index`` (the index itself is an input and is
    not listed).  Raises :class:`MissingInputError` when the case's HDR is unavailable.
    """
    from safetensors.torch import load_file

    _, cases_dir = _dirs(golden_dir)
    golden = load_file(str(cases_dir / case_dict["file"]))
    hdr = load_envmap(find_case_hdr(case_dict, golden_dir, hdri_dirs))
    res = process_environment_map(hdr, device=device, **_kwargs(case_dict, set(golden)))
    pairs = {}
    for name, ref in golden.items():
        if name in _INPUT_TENSORS:
            continue
        if name == "cubemap_probe_value":
            idx = golden["cubemap_probe_index"].long().to(res["cubemap"].device)
            ours = res["cubemap"][idx[:, 0], idx[:, 1], idx[:, 2]]
        elif name in res:
            ours = res[name]
        else:
            raise KeyError(f"recorded tensor {name!r} has no counterpart in process_environment_map's output")
        pairs[name] = (ours.detach().cpu().to(ref.dtype if ref.is_floating_point() else torch.float32), ref)
    return pairs


def run_envproj_cases(golden_dir, *, hdri_dirs=(), device=None) -> dict:
    """All cases: ``{case: {name: (ours, golden)}}`` or ``{case: MissingInputError}`` when skipped."""
    out = {}
    for name, case in load_cases(golden_dir).items():
        try:
            out[name] = run_envproj_case(case, golden_dir, hdri_dirs=hdri_dirs, device=device)
        except MissingInputError as e:
            out[name] = e
    return out
