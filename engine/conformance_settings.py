"""The settings of one recorded reference run (a golden folder's ``call_args.json``), resolved into the
arguments of our pipelines — every key read, none ignored.

A run is described in four places: the script's command-line overrides of its yaml (``cli_overrides``,
MODEL_SPEC §8.1's table), the pipeline call's keyword arguments (``call_kwargs``), the environment-map
call (``process_environment_map_kwargs``) and the pipeline's construction (``pipeline_init``). Each key
of each place has a handler here: it sets a setting (a key given twice, e.g. ``inference_n_steps`` and
``num_inference_steps``, must agree), checks a value we reproduce only in one form (``autocast=false``,
``dynamic_guidance=false``) or is named as output-only / unused by the reference itself. Any other key
raises :class:`UnsupportedSetting` naming it, so a case is never run with a setting silently dropped.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

__all__ = ["RunSettings", "UnsupportedSetting", "resolve_run", "check_top_level", "yaml_value"]


class UnsupportedSetting(ValueError):
    """A recorded setting the conformance runner does not implement (the message names it)."""


@dataclass
class RunSettings:
    kind: str                                    # "inverse" | "forward"
    checkpoint: str = ""
    inputs: str = ""
    steps: int = 20
    num_frames: int = 24
    guidance: tuple = (1.2, 1.2)                 # (min, max): linspace over the frames
    fps: int = 7
    motion_bucket_id: int = 127
    decode_chunk: int = 8
    seed: Optional[int] = 0
    height: Optional[int] = None
    width: Optional[int] = None
    inference_res: Optional[tuple] = None        # (H, W) cover target, MODEL_SPEC §7.3
    lora: bool = False
    lora_scale: float = 0.25
    fixed_frame: Optional[int] = None            # use_fixed_frame_ind → fixed_frame_ind
    use_fixed_frame: bool = False
    fixed_frame_ind: int = 0
    overlap: int = 6
    chunk_mode: str = "first"
    passes: Optional[tuple] = None
    envlight: str = ""
    env: dict = field(default_factory=dict)      # EnvLight / process_environment_map arguments
    env_resolution: Optional[tuple] = None       # (H, W)
    _source: dict = field(default_factory=dict)  # setting -> where it was read (conflict messages)

    def set(self, name: str, value, source: str) -> None:
        if name in self._source and getattr(self, name) != value:
            raise UnsupportedSetting(f"{source} = {value!r} contradicts {self._source[name]} = "
                                     f"{getattr(self, name)!r} (inconsistent recording)")
        setattr(self, name, value)
        self._source.setdefault(name, source)


def yaml_value(text: str):
    """An OmegaConf command-line value: true/false, null/None, numbers, [a,b] lists, else the string."""
    t = str(text).strip()
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    if t in ("null", "None", "~", ""):
        return None
    if t.startswith("[") and t.endswith("]"):
        return [yaml_value(v) for v in t[1:-1].split(",") if v.strip()]
    for cast in (int, float):
        try:
            return cast(t)
        except ValueError:
            pass
    return t.strip("'\"")


def _must(name: str, want):
    def check(st, v, src):
        if v != want and not (v is None and want in (0, False)):
            raise UnsupportedSetting(f"{src} = {v!r} is not implemented (only {want!r}; {name})")
    return check


def _ignore(_reason: str):
    return lambda st, v, src: None


def _to(name: str, cast=lambda v: v):
    return lambda st, v, src: st.set(name, cast(v), src)


def _guid(i: int):
    def put(st, v, src):
        g = list(st.guidance)
        g[i] = float(v)
        st.guidance = tuple(g)
        key = ("guidance_min", "guidance_max")[i]
        if key in st._source and st._source[key][1] != float(v):
            raise UnsupportedSetting(f"{src} = {v!r} contradicts {st._source[key][0]} = {st._source[key][1]!r}")
        st._source.setdefault(key, (src, float(v)))
    return put


def _env(name: str, cast=float):
    def put(st, v, src):
        if name in st.env and st.env[name] != cast(v):
            raise UnsupportedSetting(f"{src} = {v!r} contradicts an earlier {name} = {st.env[name]!r}")
        st.env[name] = cast(v)
    return put


def _res(st, v, src):
    st.set("env_resolution", tuple(int(x) for x in v), src)


def _seed_from_generator(st, v, src):
    m = re.fullmatch(r"torch\.Generator\('(?:cpu|cuda)'\)\.manual_seed\((\d+)\)", str(v).replace('"', "'"))
    if not m:
        raise UnsupportedSetting(f"{src} = {v!r} is not implemented (a seeded torch.Generator only)")
    st.set("seed", int(m.group(1)), src)


def _cond_mapping(st, v, src):
    from engine.pipelines import GBUFFER_ORDER

    want = ({"rgb": "vae"} if st.kind == "inverse" else
            {**{p: "vae" for p in GBUFFER_ORDER}, "env_ldr": "env", "env_log": "env", "env_nrm": "env"})
    if dict(v) != want or list(v) != list(want):
        raise UnsupportedSetting(f"{src} = {v!r} is not implemented (the model's mapping is {want})")


def _cross_attention_kwargs(st, v, src):
    v = dict(v or {})
    extra = sorted(set(v) - {"scale"})
    if extra:
        raise UnsupportedSetting(f"{src}.{extra[0]} is not implemented (only 'scale', the LoRA scale)")
    if "scale" in v:
        st.set("lora_scale", float(v["scale"]), f"{src}.scale")


def _scheduler_override(st, v, src):
    for k, val in dict(v or {}).items():
        if (k, val) != ("timestep_spacing", "trailing"):
            raise UnsupportedSetting(f"{src}.{k} = {val!r} is not implemented (the forward pipeline uses "
                                     "timestep_spacing='trailing', as the reference's xrgb script)")


def _lora(st, v, src):
    v = dict(v or {}) if v else {}
    extra = sorted(set(v) - {"subfolder", "adapter_name"})
    if extra or v.get("subfolder", "lora") != "lora":
        raise UnsupportedSetting(f"{src} = {v!r} is not implemented (the checkpoint's lora/ folder only)")
    st.lora = bool(v)


def _env_format(st, v, src):
    if "proj" not in list(v):
        raise UnsupportedSetting(f"{src} = {v!r}: the pipeline needs the 'proj' format")


def _chunk_mode(st, v, src):
    if v not in ("first", "all", "drop_last"):
        raise UnsupportedSetting(f"{src} = {v!r} is not a chunk mode of the reference")
    st.chunk_mode = v


def _envlight(st, v, src):
    if isinstance(v, list):
        raise UnsupportedSetting(f"{src} = {v!r}: a recorded run has one environment map")
    st.set("envlight", str(v), src)


_OUTPUT_ONLY = _ignore("where/how the reference saves files: no effect on the tensors")
_UNUSED = _ignore("read by no inference code of the reference (MODEL_SPEC §8.1)")
_DISCOVERY = _ignore("file discovery: the recording lists the files used")

# cli_overrides (the yaml keys, MODEL_SPEC §8.1)
OVERRIDES = {
    "inference_model_weights": _to("checkpoint", str),
    "inference_input_dir": _to("inputs", str),
    "inference_save_dir": _OUTPUT_ONLY,
    "inference_res": lambda st, v, src: st.set("inference_res", tuple(int(x) for x in v), src),
    "inference_n_frames": _to("num_frames", int),
    "inference_n_steps": _to("steps", int),
    "inference_min_guidance_scale": _guid(0),
    "inference_max_guidance_scale": _guid(1),
    "overlap_n_frames": _to("overlap", int),
    "chunk_mode": _chunk_mode,
    "decode_chunk_size": _to("decode_chunk", int),
    "seed": lambda st, v, src: st.set("seed", None if v is None else int(v), src),
    "autocast": _must("autocast (fp16 on CUDA)", False),
    "weight_dtype": _must("weight_dtype", "fp32"),
    "model_dtype": _UNUSED,
    "save_video": _OUTPUT_ONLY, "save_image": _OUTPUT_ONLY, "save_video_fps": _OUTPUT_ONLY,
    "model_passes": lambda st, v, src: st.set("passes", tuple(v), src),
    "cond_mode": lambda st, v, src: _must("cond_mode", "skip" if st.kind == "inverse" else "env")(st, v, src),
    "image_group_mode": _DISCOVERY, "image_extensions": _DISCOVERY,
    "subsample_every_n_frames": _must("subsample_every_n_frames", 1),
    "use_deterministic_mode": _must("use_deterministic_mode", False),
    "fps": _to("fps", int), "motion_bucket_id": _to("motion_bucket_id", int),
    "cond_aug": _must("cond_aug (noise_aug_strength)", 0),
    "envlight": _envlight,
    "lora_scale": _to("lora_scale", float),
    "rotate_light": _env("rotate", bool),
    "cam_elevation": _env("elevation"),
    "use_fixed_frame_ind": lambda st, v, src: st.set("use_fixed_frame", bool(v), src),
    "fixed_frame_ind": lambda st, v, src: st.set("fixed_frame_ind", int(v), src),
    "model_pipeline.env_resolution": _res,
    "model_pipeline.scale_cond_latents": _must("scale_cond_latents", True),
    "model_pipeline.cond_images": _UNUSED,   # checked through call_kwargs.cond_mapping
}
_UNUSED_PIPELINE = re.compile(r"model_pipeline\.(fps|motion_bucket_id|cond_aug|cond_sigma_mean|cond_sigma_std|"
                              r"cond_mode|target_image|unet_kwargs(\..*)?)$")

# call_kwargs (the pipeline call, MODEL_SPEC §4.0)
CALL = {
    "height": _to("height", int), "width": _to("width", int),
    "num_frames": _to("num_frames", int), "num_inference_steps": _to("steps", int),
    "min_guidance_scale": _guid(0), "max_guidance_scale": _guid(1),
    "fps": _to("fps", int), "motion_bucket_id": _to("motion_bucket_id", int),
    "noise_aug_strength": _must("noise_aug_strength", 0),
    "cross_attention_kwargs": _cross_attention_kwargs,
    "dynamic_guidance": _must("dynamic_guidance", False),
    "decode_chunk_size": _to("decode_chunk", int),
    "cond_mapping": _cond_mapping,
    "cond_images": _ignore("describes the inputs, read from the recorded files"),
    "generator": _seed_from_generator,
    "output_type": _must("output_type", "np"),
}

# process_environment_map_kwargs (MODEL_SPEC §6)
ENVMAP = {
    "resolution": _res, "num_frames": _to("num_frames", int),
    "fixed_pose": _must("fixed_pose", True), "pose_file": _must("pose_file", None),
    "pose_offset": _must("pose_offset", 0), "pose_reset": _must("pose_reset", False),
    "rotate_envlight": _env("rotate", bool), "elevation": _env("elevation"),
    "env_format": _env_format, "log_scale": _env("log_scale"), "env_strength": _env("strength"),
    "env_flip": _env("flip", bool), "env_rot": _env("rotation"),
    "save_dir": _OUTPUT_ONLY, "prefix": _OUTPUT_ONLY, "device": _ignore("device only"),
}

PIPELINE_INIT = {
    "scale_cond_latents": lambda st, v, src: _must("scale_cond_latents", st.kind == "forward")(st, v, src),
    "cond_mode": lambda st, v, src: _must("cond_mode", "skip" if st.kind == "inverse" else "env")(st, v, src),
    "scheduler_override": _scheduler_override,
    "lora": _lora,
}

# keys of a run that are the recording itself (what to compare) rather than settings
RUN_RECORD = {"file", "tensors", "scheduler", "env_tensors_stored_in", "input_context_index",
              "unet_timesteps_seen"}
TOP_LEVEL = {"script", "config", "runs", "gbuffer_labels_in_latent_order", "gbuffer_files",
             "shared_tensors_stored_in", "cli_overrides", "input_frames", "input_images"}


def _apply(table: dict, items: dict, st: RunSettings, where: str) -> None:
    for key, value in items.items():
        handler = table.get(key)
        if handler is None and table is OVERRIDES and _UNUSED_PIPELINE.match(key):
            continue   # the yaml's training-only model_pipeline keys: unused at inference (MODEL_SPEC §8.1)
        if handler is None:
            raise UnsupportedSetting(f"{where} key {key!r} is not implemented by the conformance runner")
        handler(st, value, f"{where} {key}")


def check_top_level(args: dict, where: str) -> None:
    unknown = sorted(set(args) - TOP_LEVEL)
    if unknown:
        raise UnsupportedSetting(f"{where}: key {unknown[0]!r} is not implemented by the conformance runner")


def resolve_run(kind: str, run: dict, top_overrides=()) -> RunSettings:
    """Every setting of one recorded run, in our terms (raises UnsupportedSetting on any key not implemented)."""
    st = RunSettings(kind, guidance=(1.0, 1.0) if kind == "inverse" else (1.2, 1.2),
                     lora_scale=0.25 if kind == "forward" else 0.0)
    known = {"cli_overrides", "call_kwargs", "process_environment_map_kwargs", "pipeline_init", "envlight",
             "input_context"} | RUN_RECORD
    unknown = sorted(set(run) - known)
    if unknown:
        raise UnsupportedSetting(f"run key {unknown[0]!r} is not implemented by the conformance runner")
    overrides = {}
    for item in [*top_overrides, *run.get("cli_overrides", [])]:
        key, _, value = str(item).partition("=")
        overrides[key.strip()] = yaml_value(value)
    _apply(OVERRIDES, overrides, st, "cli_overrides")
    _apply(CALL, run.get("call_kwargs", {}), st, "call_kwargs")
    _apply(ENVMAP, run.get("process_environment_map_kwargs", {}), st, "process_environment_map_kwargs")
    _apply(PIPELINE_INIT, run.get("pipeline_init", {}), st, "pipeline_init")
    if "input_context" in run:
        st.passes = (run["input_context"],)
    if "envlight" in run and not st.envlight:
        st.envlight = str(run["envlight"])
    if st.use_fixed_frame:
        st.fixed_frame = st.fixed_frame_ind
    return st
