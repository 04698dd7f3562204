"""The G-buffer set format (docs/GBUFFER_SET.md): the pass vocabulary, per-pass channels/encodings/dtypes,
pass file naming, and ``manifest.json`` — schema, validation, versioning, the JSON writer. STDLIB ONLY: the
engine (``engine.gbuffer`` re-exports it) and the Blender add-on both use it.

`Manifest` wraps the dict, validates it and keeps every key it does not know (forward compatibility: a
file written by a newer *minor* writer round-trips unchanged).
"""
from __future__ import annotations

import copy
import json
import math
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .atomic import atomic_write_text
from .json_text import dumps

FORMAT = "diffusion-renderer/gbuffer-set"
VERSION = 1  # major version; additive changes keep it, breaking changes bump it
MANIFEST_NAME = "manifest.json"
KINDS = ("gbuffer", "relit")
DTYPES = ("half", "float")
SENSOR_FITS = ("AUTO", "HORIZONTAL", "VERTICAL")

# encoding → number of channels in the file
ENCODINGS = {
    "linear-rec709": 3,
    "camera-normal": 3,
    "non-color": 1,
    "depth-planar-metric": 1,
    "depth-normalised": 1,
}
DEPTH_ENCODINGS = {"metric": "depth-planar-metric", "normalised": "depth-normalised"}


@dataclass(frozen=True)
class PassSpec:
    channels: tuple[str, ...]
    encoding: str
    dtype: str


# Canonical passes. Scalars use the single channel "V": Blender loads a one-channel EXR named V as
# grey (it does not load a lone "Z" channel as an image before 5.1) and writes float sockets as V.
PASS_SPECS: dict[str, PassSpec] = {
    "rgb": PassSpec(("R", "G", "B"), "linear-rec709", "half"),
    "basecolor": PassSpec(("R", "G", "B"), "linear-rec709", "half"),
    "diffuse_albedo": PassSpec(("R", "G", "B"), "linear-rec709", "half"),
    "relit": PassSpec(("R", "G", "B"), "linear-rec709", "half"),
    "normal": PassSpec(("X", "Y", "Z"), "camera-normal", "half"),
    "depth": PassSpec(("V",), "depth-planar-metric", "float"),  # encoding follows depth.kind
    "roughness": PassSpec(("V",), "non-color", "half"),
    "metallic": PassSpec(("V",), "non-color", "half"),
    "alpha": PassSpec(("V",), "non-color", "half"),
}
# The models' pass vocabulary: the inverse model's pass index order (engine.pipelines PASS_INDEX), what an
# inverse job computes by default, and what the forward model reads (in its latent order).
MODEL_PASSES = ("basecolor", "metallic", "roughness", "normal", "depth", "diffuse_albedo")
DEFAULT_PASSES = MODEL_PASSES[:5]
FORWARD_PASSES = ("basecolor", "normal", "depth", "roughness", "metallic")
# the passes of a set converted from a Blender render folder (engine/gbuffer/blender_render.py)
RENDER_PASSES = ("rgb", "basecolor", "normal", "depth", "roughness", "metallic", "alpha")
# Display / contact-sheet order.
PASS_ORDER = ("rgb", "relit", "basecolor", "normal", "depth", "roughness", "metallic", "diffuse_albedo", "alpha")


class GBufferSetError(ValueError):
    """A G-buffer set problem, with a message written for the user (names the file and what to do)."""


class ManifestError(GBufferSetError):
    def __init__(self, source, field: str, message: str):
        self.source, self.field = source, field
        where = f"{source}: " if source else ""
        super().__init__(f"{where}field '{field}': {message}" if field else f"{where}{message}")


class UnsupportedVersionError(ManifestError):
    pass


def pass_pattern(name: str, ext: str = "exr", folder: str | None = None) -> str:
    """`basecolor/basecolor.####.exr` — Blender's `#` run: the frame number, zero-padded to ≥ 4 digits."""
    return f"{folder or name}/{name}.####.{ext}"


def frame_path(pattern: str, frame: int) -> str:
    """Substitute the (last) run of `#` in `pattern` with `frame`, zero-padded to the run's length."""
    runs = list(re.finditer(r"#+", pattern))
    if not runs:
        raise ValueError(f"path pattern {pattern!r} has no '#' run for the frame number")
    m = runs[-1]
    return f"{pattern[:m.start()]}{int(frame):0{len(m.group())}d}{pattern[m.end():]}"


def default_pass_entry(name: str, *, depth_kind: str | None = None, dtype: str | None = None) -> dict:
    spec = PASS_SPECS.get(name)
    if spec is None:
        raise GBufferSetError(f"unknown pass {name!r}; known passes: {', '.join(PASS_SPECS)}")
    encoding = spec.encoding
    if name == "depth":
        if depth_kind not in DEPTH_ENCODINGS:
            raise GBufferSetError(f"the depth pass needs depth.kind 'metric' or 'normalised' in the manifest "
                                  f"(got {depth_kind!r})")
        encoding = DEPTH_ENCODINGS[depth_kind]
    return {"path": pass_pattern(name), "channels": list(spec.channels), "encoding": encoding,
            "dtype": dtype or spec.dtype}


def make_provenance(producer: str, *, model: str | None = None, revision: str | None = None,
                    settings: dict | None = None, source: str | None = None, **extra) -> dict:
    """Provenance block: who made the set, from what, with which model and settings, when."""
    from .. import __version__   # the engine package this contract belongs to

    prov = {"producer": producer, "engine_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")}
    if model is not None:
        prov["model"] = {"name": model, "revision": revision}
    if settings is not None:
        prov["settings"] = dict(settings)
    if source is not None:
        prov["source"] = str(source)
    prov.update(extra)
    return prov


# ---------------------------------------------------------------------------------------------- checks
def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def parse_version(value, source=None) -> int:
    """Major version of a manifest; raises UnsupportedVersionError for a newer major version."""
    major = None
    if _int(value):
        major = value
    elif isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)*", value):
        major = int(value.split(".")[0])
    if major is None or major < 1:
        raise ManifestError(source, "version", f"expected a positive integer, got {value!r}")
    if major > VERSION:
        raise UnsupportedVersionError(
            source, "version", f"this set was written in format version {major}, newer than this reader "
            f"(version {VERSION}); update the DiffusionRenderer engine/add-on to read it")
    return major


def validate(data, source=None) -> None:
    """Raise ManifestError naming the file (`source`) and the field at the first problem."""
    def err(field, msg):
        raise ManifestError(source, field, msg)

    if not isinstance(data, dict):
        err("", f"the manifest must be a JSON object, got {type(data).__name__}")
    if data.get("format") != FORMAT:
        err("format", f"expected {FORMAT!r}, got {data.get('format')!r} — not a G-buffer set manifest")
    if "version" not in data:
        err("version", "missing")
    parse_version(data["version"], source)
    if data.get("kind", "gbuffer") not in KINDS:
        err("kind", f"expected one of {KINDS}, got {data.get('kind')!r}")

    frames = data.get("frame_numbers")
    if not isinstance(frames, list) or not frames:
        err("frame_numbers", "expected a non-empty list of frame numbers")
    for i, f in enumerate(frames):
        if not _int(f) or f < 0:
            err(f"frame_numbers[{i}]", f"expected a non-negative integer, got {f!r}")
        if i and f <= frames[i - 1]:
            err(f"frame_numbers[{i}]", f"frame numbers must be strictly increasing ({frames[i - 1]} then {f})")
    if not _num(data.get("fps")) or data["fps"] <= 0:
        err("fps", f"expected a positive number, got {data.get('fps')!r}")
    res = data.get("resolution")
    if not (isinstance(res, list) and len(res) == 2 and all(_int(v) and v > 0 for v in res)):
        err("resolution", f"expected [width, height] in pixels, got {res!r}")

    passes = data.get("passes")
    if not isinstance(passes, dict) or not passes:
        err("passes", "expected a non-empty object {pass name: {path, channels, encoding, dtype}}")
    for name, entry in passes.items():
        f = f"passes.{name}"
        if not isinstance(entry, dict):
            err(f, "expected an object with path, channels, encoding, dtype")
        path = entry.get("path")
        if not isinstance(path, str) or "#" not in path:
            err(f + ".path", f"expected a relative path pattern with a '#' run for the frame, got {path!r}")
        if os.path.isabs(path) or ".." in Path(path).parts or path.startswith(("/", "\\")):
            err(f + ".path", f"must be relative to the set folder and stay inside it, got {path!r}")
        ch = entry.get("channels")
        if not (isinstance(ch, list) and ch and all(isinstance(c, str) and c for c in ch)):
            err(f + ".channels", f"expected a list of channel names, got {ch!r}")
        enc = entry.get("encoding")
        if not isinstance(enc, str):
            err(f + ".encoding", f"expected a string, got {enc!r}")
        spec = PASS_SPECS.get(name)
        if spec is not None:
            allowed = tuple(DEPTH_ENCODINGS.values()) if name == "depth" else (spec.encoding,)
            if enc not in allowed:
                err(f + ".encoding", f"pass {name!r} must be {' or '.join(map(repr, allowed))}, got {enc!r}")
        if enc in ENCODINGS and len(ch) != ENCODINGS[enc]:
            err(f + ".channels", f"encoding {enc!r} has {ENCODINGS[enc]} channel(s), got {ch!r}")
        if entry.get("dtype", "half") not in DTYPES:
            err(f + ".dtype", f"expected one of {DTYPES}, got {entry.get('dtype')!r}")

    depth_encs = {n: e.get("encoding") for n, e in passes.items() if str(e.get("encoding")).startswith("depth-")}
    depth = data.get("depth")
    if depth is not None or depth_encs:
        if not isinstance(depth, dict):
            err("depth", "a set with a depth pass needs a depth object {kind, near, far}")
        kind = depth.get("kind")
        if kind not in DEPTH_ENCODINGS:
            err("depth.kind", f"expected 'metric' or 'normalised', got {kind!r}")
        for n, e in depth_encs.items():
            if e != DEPTH_ENCODINGS[kind]:
                err(f"passes.{n}.encoding", f"depth.kind is {kind!r} so the encoding must be "
                    f"{DEPTH_ENCODINGS[kind]!r}, got {e!r}")
        near, far = depth.get("near"), depth.get("far")
        if (near is None) != (far is None):
            err("depth.near" if near is None else "depth.far", "near and far come together (or neither)")
        if near is not None:
            if not _num(near):
                err("depth.near", f"expected a number, got {near!r}")
            if not _num(far) or far <= near:
                err("depth.far", f"expected a number greater than near ({near}), got {far!r}")
        if not isinstance(depth.get("invert", False), bool):
            err("depth.invert", f"expected true or false, got {depth.get('invert')!r}")

    alpha = data.get("alpha")
    if alpha is not None and (not isinstance(alpha, str) or alpha not in passes):
        err("alpha", f"must name one of the passes ({', '.join(passes)}), got {alpha!r}")

    cams = data.get("camera")
    if cams is not None:
        if not isinstance(cams, list) or len(cams) != len(frames):
            err("camera", f"expected a list of one camera per frame ({len(frames)}), "
                f"got {len(cams) if isinstance(cams, list) else type(cams).__name__}")
        for i, cam in enumerate(cams):
            f = f"camera[{i}]"
            if not isinstance(cam, dict):
                err(f, "expected an object")
            if cam.get("frame", frames[i]) != frames[i]:
                err(f + ".frame", f"expected {frames[i]} (frame_numbers[{i}]), got {cam.get('frame')!r}")
            m = cam.get("matrix_world")
            if not (isinstance(m, list) and len(m) == 4 and all(isinstance(r, list) and len(r) == 4
                                                                   and all(_num(v) for v in r) for r in m)):
                err(f + ".matrix_world", "expected a 4×4 list of rows of finite numbers")
            for key in ("lens_mm", "sensor_width_mm", "clip_start", "clip_end"):
                if not _num(cam.get(key)) or cam[key] <= 0:
                    err(f"{f}.{key}", f"expected a positive number, got {cam.get(key)!r}")
            if cam["clip_end"] <= cam["clip_start"]:
                err(f + ".clip_end", f"must exceed clip_start ({cam['clip_start']})")
            if cam.get("sensor_fit", "AUTO") not in SENSOR_FITS:
                err(f + ".sensor_fit", f"expected one of {SENSOR_FITS}, got {cam.get('sensor_fit')!r}")

    prov = data.get("provenance")
    if not isinstance(prov, dict) or not isinstance(prov.get("producer"), str) or not prov["producer"]:
        err("provenance.producer", "expected provenance {producer: 'blender' | 'inverse-model' | ...}")
    for key in ("previews", "videos"):
        if key in data and not (isinstance(data[key], dict) and all(isinstance(v, str) for v in data[key].values())):
            err(key, "expected an object {pass name: path relative to the set folder}")
    if "contact_sheet" in data and not isinstance(data["contact_sheet"], str):
        err("contact_sheet", "expected a path relative to the set folder")


# ---------------------------------------------------------------------------------------------- class
class Manifest:
    """A validated manifest. `.data` is the full dict, unknown keys included."""

    def __init__(self, data: dict, source=None):
        validate(data, source)
        self.data = data
        self.source = source

    # --- fields
    version = property(lambda self: parse_version(self.data["version"]))
    kind = property(lambda self: self.data.get("kind", "gbuffer"))
    frame_numbers = property(lambda self: list(self.data["frame_numbers"]))
    fps = property(lambda self: float(self.data["fps"]))
    resolution = property(lambda self: tuple(self.data["resolution"]))  # (W, H)
    passes = property(lambda self: self.data["passes"])
    depth = property(lambda self: self.data.get("depth"))
    alpha = property(lambda self: self.data.get("alpha"))
    camera = property(lambda self: self.data.get("camera"))
    provenance = property(lambda self: self.data["provenance"])

    @property
    def pass_names(self) -> list[str]:
        known = [p for p in PASS_ORDER if p in self.passes]
        return known + [p for p in self.passes if p not in known]

    @property
    def depth_range(self) -> tuple[float, float] | None:
        d = self.depth or {}
        return (float(d["near"]), float(d["far"])) if d.get("near") is not None else None

    def pass_file(self, name: str, frame: int) -> str:
        if name not in self.passes:
            raise GBufferSetError(f"{self.source or 'set'}: no pass {name!r} (passes: {', '.join(self.pass_names)})")
        return frame_path(self.passes[name]["path"], frame)

    def to_dict(self) -> dict:
        return copy.deepcopy(self.data)

    def to_json(self) -> str:
        return dumps(self.data) + "\n"

    @classmethod
    def load(cls, path) -> "Manifest":
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(path, "", f"not valid JSON ({exc})") from None
        return cls(data, source=path)

    def save(self, path) -> None:
        """Write atomically (temp file + rename)."""
        atomic_write_text(Path(path), self.to_json())


def same_clip(a: dict, b: dict) -> bool:
    """Whether two manifests (or manifest bases) describe the same clip: same kind and the same
    non-empty provenance.source, and equal frame numbers / resolution where both give them."""
    if a.get("kind", "gbuffer") != b.get("kind", "gbuffer"):
        return False
    sa = (a.get("provenance") or {}).get("source")
    sb = (b.get("provenance") or {}).get("source")
    if not sa or not sb or os.path.normpath(str(sa)) != os.path.normpath(str(sb)):
        return False
    for key in ("frame_numbers", "resolution"):
        if key in a and key in b and list(a[key]) != list(b[key]):
            return False
    return True
