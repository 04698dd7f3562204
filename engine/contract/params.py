"""Job parameters, defined once: every parameter of every job kind with its type (the protocol's notation),
default, choices/range, help sentence and command-line form. STDLIB ONLY.

Derived from this table (nowhere else is a default, range or help text of a job parameter written):
the protocol's ``submit.params`` checks (``protocol.INVERSE_PARAMS`` ...), the CLI's options
(``engine/cli_options.py``), the settings dataclasses' defaults (``engine/jobs``), the add-on's property
defaults, limits and tooltips (``diffusion_renderer_addon/properties.py``) and the option tables of
docs/CLI.md and docs/PROTOCOL.md (``docs.py``).

>>> default("model", "forward"), default("steps"), for_kind("gbuffers")["input"].cli
('forward', 20, 'positional')
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

from .fields import Field, is_type, table_problems
from .gbuffer_set import DEFAULT_PASSES, MODEL_PASSES

KINDS = ("inverse", "forward", "gbuffers")
MEMORY_MODES = ("default", "low-vram", "minimal")
CLI_FORMS = ("positional", "option", "flag", "no-flag", "list", "range", "ramp", "size", "append")
_MODELS = ("inverse", "forward")


@dataclass(frozen=True)
class Param:
    """One job parameter. ``kinds``: the job kinds taking it; ``required``: required in a submit;
    ``cli``: its command-line form (None: protocol only) — ``positional``, ``option`` (``--name VALUE``),
    ``flag`` (``--name``, store_true), ``no-flag`` (``--no-name`` sets false), ``list`` (comma-separated),
    ``range`` ('FIRST:LAST'), ``ramp`` ('A' or 'A:B' numbers → a number or [A, B]), ``size`` ('WxH'), ``append`` (repeatable); ``cli_required``: the CLI insists
    on it although the protocol has a default; ``kind_default``: defaults that differ per kind;
    ``doc_default``: how the docs show the default when the value alone says little; ``ui_max``: the
    add-on's upper limit where the protocol has none; ``item``: the noun of one list element (errors)."""
    name: str
    type: str
    default: object = None
    help: str = ""
    kinds: tuple = _MODELS
    required: bool = False
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    length: tuple | None = None
    cli: str | None = "option"
    cli_required: bool = False
    metavar: str | None = None
    kind_default: dict | None = None
    doc_default: str | None = None
    ui_max: float | None = None
    item: str = "value"
    aliases: tuple = ()          # further command-line spellings (``--size`` for preview_size)

    @property
    def flag(self) -> str:
        """The command-line spelling (``--decode-chunk``, ``--no-previews``; the name for positionals)."""
        dashed = self.name.replace("_", "-")
        return {"positional": self.name.upper(), "no-flag": f"--no-{dashed}"}.get(self.cli, f"--{dashed}")

    @property
    def cli_help(self) -> str:
        """The help of the command-line option (a ``--no-x`` flag says what it turns off)."""
        return f"Do not {self.help[0].lower()}{self.help[1:]}" if self.cli == "no-flag" else self.help

    def default_for(self, kind: str | None = None):
        value = (self.kind_default or {}).get(kind, self.default)
        return copy.deepcopy(value)

    def field(self) -> Field:
        return Field(self.type, self.required, choices=self.choices, minimum=self.minimum, maximum=self.maximum,
                     length=self.length, doc=self.help)


_INV, _FWD, _GB, _ALL = ("inverse",), ("forward",), ("gbuffers",), KINDS
# bounds of the numeric parameters (every int/num parameter has a range; non-finite numbers are never valid)
MAX_FRAME_NUMBER = 999_999_999   # a frame number (sequence numbers run to 9 digits; Blender's frames to 1048574)
MAX_FPS = 1000.0
MAX_WINDOW = 256                 # frames per window / decode call (the model is trained on 24)

PARAMS: tuple = (
    # ------------------------------------------------------------------ inputs and outputs
    Param("input", "str", None, "Video file (mp4/mov/mkv…), folder of frames (png/jpg/exr/tiff) or folder of such "
          "clips (batch: one set per clip).", _INV, required=True, cli="positional"),
    Param("input", "str", None, "Blender render folder: the multilayer EXRs Blender wrote plus the add-on's "
          "render.json.", _GB, required=True, cli="positional", metavar="RENDER_DIR"),
    Param("gbuffers", "str", None, "G-buffer set, Blender render folder (render.json + multilayer EXRs) or the "
          "reference's <clip>/<chunk>.<frame>.<pass>.png layout.", _FWD, required=True, cli="positional"),
    Param("hdri", "list[str]", None, "Environment map (.hdr/.exr), one relit set each; repeat for several lights.",
          _FWD, required=True, length=(1, 64), cli="append", metavar="FILE"),
    Param("out", "str|null", None, "Output folder (one sub-folder per clip or HDRI when there are several); "
          "relative paths are inside the job folder.", _ALL, cli_required=True, doc_default="`<job_dir>/out`",
          metavar="DIR"),
    # ------------------------------------------------------------------ inverse
    Param("passes", "list[str]", list(DEFAULT_PASSES), "G-buffer passes to compute.", _INV, choices=MODEL_PASSES,
          length=(1, len(MODEL_PASSES)), cli="list", metavar="a,b,…", item="pass"),
    Param("frame_range", "list[int]|null", None, "Frames to use, inclusive, in the set's frame numbers (a sequence's own "
          "numbers; a video's count from first_frame, 1 by default).", _INV, length=(2, 2), minimum=0,
          maximum=MAX_FRAME_NUMBER, cli="range", metavar="FIRST:LAST", doc_default="whole clip"),
    Param("fps", "num|null", None, "Resample the clip to this frame rate (by frame selection).", _INV,
          minimum=0.001, maximum=MAX_FPS, metavar="F", doc_default="source"),
    Param("source_fps", "num|null", None, "Frame rate of the source: an image sequence's (24 when unknown); "
          "overrides a video's own rate.", _INV,
          minimum=0.001, maximum=MAX_FPS, metavar="F", doc_default="24 for sequences"),
    Param("first_frame", "int|null", None, "Frame number given to the first frame: a video's (1) or, renumbering it, an "
          "image sequence's.", _INV, minimum=0, maximum=MAX_FRAME_NUMBER,
          metavar="N", doc_default="1"),
    Param("allow_missing_frames", "bool", False, "Continue when frames of a video cannot be decoded (a damaged "
          "file): the set leaves them out, its manifest lists them (missing_frames) and the job warns; without "
          "it such a video is refused, naming the lost frames.", _INV, cli="flag"),
    Param("colorspace", "str", "auto", "Colour space of the input frames: auto (EXR/float linear, log DPX "
          "Cineon, others sRGB), srgb, linear, or an OpenColorIO name ('ACEScg', 'ARRI LogC4', 'Cineon Log (DPX)'; "
          "list: python -m engine.colour).", _INV, metavar="NAME"),
    # ------------------------------------------------------------------ forward
    Param("lora_scale", "num", 0.25, "Real-footage LoRA strength (0–0.5 recommended; 0 for synthetic objects).",
          _FWD, minimum=0.0, maximum=2.0, metavar="S"),
    Param("guidance", "num|list[num]", 1.2, "Classifier-free guidance (1.0 = 2× faster preview); 'MIN:MAX' "
          "([MIN, MAX] in a submit) ramps it linearly over each window's frames, as the reference's "
          "min/max_guidance_scale.", _FWD, minimum=1.0, maximum=20.0, length=(2, 2), cli="ramp",
          metavar="G[:MAX]"),
    Param("rotate_light", "bool", False, "Turn the light once around over the clip.", _FWD, cli="flag"),
    Param("fixed_frame", "int|null", None, "Use this G-buffer frame (0-based) for every frame (a static scene, "
          "e.g. with rotate_light).", _FWD, minimum=0, maximum=MAX_FRAME_NUMBER, metavar="N", doc_default="–"),
    Param("elevation", "num", 0.0, "Camera elevation in degrees.", _FWD, minimum=-90.0, maximum=90.0, metavar="DEG"),
    Param("elevation_convention", "str", "reference", "Sign of elevation: 'reference' tilts the view up for "
          "positive values, as the original; 'correct' looks down.", _FWD, choices=("reference", "correct")),
    Param("env_rotation", "num", 180.0, "Horizontal rotation of the HDRI in degrees.", _FWD, minimum=-3600.0,
          maximum=3600.0, metavar="DEG"),
    Param("env_strength", "num", 1.0, "Multiplier on the HDRI's radiance.", _FWD, minimum=0.0, maximum=1e6,
          metavar="S"),
    Param("env_flip", "bool", False, "Mirror the HDRI left–right.", _FWD, cli="flag"),
    Param("hdri_settings", "list[obj]|null", None, "Per-HDRI light settings, one object per hdri in the same order: "
          "{\"rotation\": degrees as env_rotation, \"strength\": S, \"flip\": bool}; a key left out takes "
          "env_rotation / env_strength / env_flip.", _FWD, length=(1, 64), cli=None, doc_default="–"),
    Param("env_resolution", "str", "512x512", "Environment-map size fed to the model ('WxH', multiples of 8).",
          _FWD, cli="size", metavar="WxH"),
    Param("camera_follow", "bool", False, "Use the set's per-frame camera poses so the light stays fixed in the "
          "world while the camera moves.", _FWD, cli="flag"),
    # ------------------------------------------------------------------ model, windows, sampling (both models)
    Param("model", "str", None, "Published model name (inverse, forward, forward-objaverse) or a checkpoint "
          "folder.", kind_default={"inverse": "inverse", "forward": "forward"}, metavar="NAME|PATH"),
    Param("revision", "str|null", None, "Hub revision (commit) to use instead of the pinned one.",
          metavar="COMMIT", doc_default="pinned"),
    Param("frames", "int", 24, "Frames the model sees at once (one window; lower = less memory).", minimum=1,
          maximum=MAX_WINDOW, metavar="N"),
    Param("overlap", "int", 6, "Frames shared by neighbouring windows (less than frames).", minimum=0,
          maximum=MAX_WINDOW - 1, metavar="N"),
    Param("blend", "str", "latent", "How overlapping windows are joined: fused in latent space at every step, "
          "cross-faded after decoding, or not at all (the reference).", choices=("latent", "crossfade", "none")),
    Param("windows_per_segment", "int", 4, "Windows fused together per resumable segment.", minimum=1,
          maximum=1024, metavar="N"),
    Param("steps", "int", 20, "Denoising (Euler) steps.", minimum=1, maximum=1000, metavar="N"),
    Param("resolution", "str|null", None, "Processing size 'WxH', multiples of 64; null or 'auto' scales the "
          "input to cover 512×512 keeping the aspect (1920×1080 → 960×512).", cli="size", metavar="WxH",
          doc_default="cover 512"),
    Param("output_size", "str", "source", "Size of the outputs: 'source' = the input's own size, 'processing' "
          "= the model's size, or 'WxH'.", metavar="source|processing|WxH"),
    Param("fit", "str", "pad", "How the input's aspect is fitted into the processing size.",
          choices=("pad", "crop", "stretch")),
    Param("seed", "int|null", 0, "Noise seed (-1 or null: a random seed, recorded in the manifest).", minimum=-1,
          maximum=2**63 - 1, metavar="N"),
    Param("decode_chunk", "int", 8, "Frames per VAE decode call (lower = less memory).", minimum=1,
          maximum=MAX_WINDOW, metavar="N"),
    Param("decode_overlap", "int", 2, "Frames cross-faded between VAE decode calls (less than decode_chunk).",
          minimum=0, maximum=MAX_WINDOW - 1, metavar="N"),
    Param("device", "str", "auto", "Device: auto (cuda when available), cpu, cuda, cuda:1 …", metavar="DEVICE"),
    Param("dtype", "str", "auto", "Weights and compute precision (auto: fp16 on CUDA, fp32 on CPU).",
          choices=("auto", "fp32", "fp16", "bf16")),
    Param("memory", "str", "default", "GPU memory mode: low-vram offloads idle models, chunks the UNet "
          "feed-forward and decodes 2 frames per call (≈ 5 GB at 512², 24 frames); minimal streams weights layer "
          "by layer (slow); docs/PERFORMANCE.md §3.", choices=MEMORY_MODES),
    Param("allow_download", "bool", True, "Download missing published weights (false: weights_unavailable at "
          "once).", cli=None),
    # ------------------------------------------------------------------ where the work runs (docs/CLUSTER.md, FARM.md)
    Param("cluster", "str|null", None, "Compute the segments on a Ray cluster: local[:N] (a private one on this "
          "machine, N workers), auto (the cluster Ray finds) or a Ray head's HOST:PORT; bit-identical to a run "
          "without it.", metavar="local[:N]|auto|HOST:PORT", doc_default="this process"),
    Param("split", "str", "auto", "How a cluster shares the work: segments (a segment per worker), windows (one "
          "segment's windows across every worker, exchanging their overlaps each step) or auto (windows when "
          "there are fewer segments than workers).", choices=("segments", "windows", "auto")),
    Param("only_segments", "list[int]|null", None, "Compute only these segments (0-based, of every clip × HDRI; "
          "`plan … --json` lists them) into the resume cache and write no outputs (a render-farm task); the same "
          "command without it assembles.", cli="list", length=(1, 100_000), minimum=0, maximum=100_000,
          metavar="K,K,…", item="segment",
          doc_default="all"),
    # ------------------------------------------------------------------ every kind
    Param("overwrite", "bool", False, "Replace a different set already in the output folder.", _ALL, cli="flag"),
    Param("previews", "bool", True, "Write PNG previews and an mp4 beside the EXRs.", _ALL, cli="no-flag"),
)

# Options of the command line that are not job parameters (how the CLI reports), shown in its tables.
CLI_ONLY: tuple = (
    Param("json", "bool", False, "Print a machine-readable summary on stdout.", (*_ALL, "preview"), cli="flag"),
)

_BY_KIND = {k: {p.name: p for p in PARAMS if k in p.kinds} for k in KINDS}
assert all(len(_BY_KIND[k]) == sum(k in p.kinds for p in PARAMS) for k in KINDS), "a parameter twice for a kind"

# ------------------------------------------------------------------ the live preview (protocol 1.3 "preview")
# Not a job kind (no submit): the parameters of a "preview" request's params (engine/jobs/preview_job.py).
# The forward parameters it shares keep their one definition; only its defaults may differ (PREVIEW_DEFAULTS).
PREVIEW = "preview"
PREVIEW_OWN: tuple = (
    Param("preview_size", "str", "auto", "Preview processing size 'WxH' (multiples of 64); auto: the set's aspect "
          "with the long side 384, the short side rounded up to a multiple of 64 (1920×1080 → 384×256, padded).",
          (PREVIEW,), cli="size", metavar="WxH", aliases=("--size",)),
    Param("preview_frames", "int", 8, "Frames relit around the previewed one (the contract's preview_window: "
          "centred on it, kept inside the clip); the clip's length for a preview equal to the forward job.",
          (PREVIEW,), minimum=1, ui_max=256, metavar="N"),
)
PREVIEW_SHARED = ("env_rotation", "env_strength", "env_flip", "steps", "seed", "guidance", "lora_scale", "model",
                  "revision", "elevation", "elevation_convention", "rotate_light", "camera_follow", "fixed_frame",
                  "env_resolution", "frames", "overlap", "blend", "fit", "decode_chunk", "decode_overlap", "device",
                  "dtype", "memory", "allow_download")
PREVIEW_DEFAULTS = {"model": "forward", "steps": 8,   # where a preview's default differs from the forward job's
                    "decode_chunk": 1, "decode_overlap": 0}   # the one frame decoded alone (the job: chunks of 8)


def _for_preview(p: Param) -> Param:
    from dataclasses import replace

    kind_default = {**(p.kind_default or {}), PREVIEW: PREVIEW_DEFAULTS.get(p.name, p.default_for("forward"))}
    return replace(p, kinds=(*p.kinds, PREVIEW), kind_default=kind_default)


_BY_KIND[PREVIEW] = {**{p.name: p for p in PREVIEW_OWN},
                     **{n: _for_preview(_BY_KIND["forward"][n]) for n in PREVIEW_SHARED}}
assert all(p.cli in CLI_FORMS + (None,) for p in PARAMS)


def for_kind(kind: str) -> dict:
    """``{name: Param}`` of one job kind, in table order."""
    if kind not in _BY_KIND:
        raise KeyError(f"unknown job kind {kind!r}; kinds are {', '.join(KINDS)} (and {PREVIEW})")
    return _BY_KIND[kind]


def param(name: str, kind: str | None = None) -> Param:
    """The parameter ``name`` (of ``kind``; without a kind, the first kind that has it)."""
    for k in ((kind,) if kind else KINDS):
        if name in for_kind(k):
            return for_kind(k)[name]
    raise KeyError(f"no job parameter {name!r}" + (f" for {kind} jobs" if kind else ""))


def default(name: str, kind: str | None = None):
    """The default of ``name`` (a fresh copy: lists may be changed by the caller)."""
    return param(name, kind).default_for(kind)


def defaults(kind: str) -> dict:
    """Every optional parameter of ``kind`` with its default."""
    return {n: p.default_for(kind) for n, p in for_kind(kind).items() if not p.required}


def fields(kind: str) -> dict:
    """The protocol's field table of ``kind``'s ``submit.params``."""
    return {n: p.field() for n, p in for_kind(kind).items()}


MAX_SIDE = 4096   # the largest processing or environment-map side a job accepts (pixels; the model works at 512)


def parse_size(text: str) -> tuple:
    """'WxH' → (W, H) positive integers; ValueError otherwise."""
    w, h = (int(v) for v in str(text).lower().replace("×", "x").split("x"))
    if w <= 0 or h <= 0:
        raise ValueError(f"{text!r}: both sides must be positive")
    return w, h


HDRI_SETTING_TYPES = {"rotation": "num", "strength": "num", "flip": "bool"}   # the keys of one hdri_settings entry
_HDRI_SETTING_RANGES = {"rotation": "env_rotation", "strength": "env_strength"}


def _hdri_settings_problems(params: dict, label) -> list:
    """hdri_settings: one entry per hdri, known keys of the right type, strength not negative."""
    items, hdris = params.get("hdri_settings"), params.get("hdri")
    if not is_type(items, "list[obj]"):
        return []
    out = []
    if is_type(hdris, "list[str]") and len(items) != len(hdris):
        out.append(f"{label('hdri_settings')} {len(items)} entries for {len(hdris)} HDRIs (one per hdri, in order)")
    for i, item in enumerate(items):
        for key, value in item.items():
            if key not in HDRI_SETTING_TYPES:
                out.append(f"{label('hdri_settings')} entry {i + 1}: unknown key {key!r} (keys: "
                           f"{', '.join(HDRI_SETTING_TYPES)})")
            elif not is_type(value, HDRI_SETTING_TYPES[key]):
                out.append(f"{label('hdri_settings')} entry {i + 1}: {key} must be {HDRI_SETTING_TYPES[key]}, "
                           f"got {value!r}")
            elif key in _HDRI_SETTING_RANGES:      # the range of the job-wide parameter it overrides
                p = for_kind("forward")[_HDRI_SETTING_RANGES[key]]
                if not p.minimum <= value <= p.maximum:
                    out.append(f"{label('hdri_settings')} entry {i + 1}: {key} must be between {p.minimum:g} and "
                               f"{p.maximum:g}, got {value!r}")
    return out


def _size_problems(params: dict, table: dict, label) -> list:
    """'WxH' sizes (resolution, env_resolution): two positive integers, at most MAX_SIDE each."""
    out = []
    for name in ("resolution", "env_resolution", "preview_size"):
        value = params.get(name)
        if name not in table or not isinstance(value, str) or value in ("", "auto"):
            continue
        try:
            w, h = parse_size(value)
        except ValueError:
            out.append(f"{label(name)} expected WIDTHxHEIGHT, e.g. 960x512, got {value!r}")
            continue
        if max(w, h) > MAX_SIDE:
            out.append(f"{label(name)} {w}x{h} is larger than {MAX_SIDE} pixels per side; choose a smaller size")
    return out


def problems(kind: str, params: dict, *, inputs: bool = True, label=None) -> list:
    """Problems of a job's params ([] = valid). ``inputs=False`` (estimates): required fields may be left
    out. ``label(name)`` names a parameter in the messages: ``field 'params.<name>':`` (protocol) by
    default; the CLI passes one that names its option."""
    table = for_kind(kind)
    label = label or (lambda n: f"field 'params.{n}':")
    ref = (lambda n: n) if label("x").startswith("field") else (lambda n: table[n].flag if n in table else n)
    out = [f"{label(k)} unknown parameter for {kind} jobs" for k in params if k not in table]
    checked = {n: p.field() for n, p in table.items() if inputs or not p.required}
    out += table_problems(params, checked, "params.", f"for {kind} jobs", label)
    if "frames" in table:
        frames, overlap = params.get("frames", default("frames")), params.get("overlap", default("overlap"))
        if is_type(frames, "int") and is_type(overlap, "int") and frames >= 1 and not 0 <= overlap < frames:
            out.append(f"{label('overlap')} must be between 0 and {ref('frames')} - 1 ({frames - 1}), got {overlap}")
    out += _hdri_settings_problems(params, label)
    if "decode_chunk" in table:
        # left out, the default overlap is capped to the chunk (engine/jobs decode_settings)
        chunk, d_overlap = params.get("decode_chunk", default("decode_chunk")), params.get("decode_overlap")
        if is_type(chunk, "int") and is_type(d_overlap, "int") and chunk >= 1 and not 0 <= d_overlap < chunk:
            out.append(f"{label('decode_overlap')} must be between 0 and {ref('decode_chunk')} - 1 ({chunk - 1}), "
                       f"got {d_overlap}")
    out += _size_problems(params, table, label)
    fr = params.get("frame_range")
    if is_type(fr, "list[int]") and len(fr) == 2 and fr[1] < fr[0]:
        out.append(f"{label('frame_range')} last frame {fr[1]} is before first {fr[0]}")
    return out
