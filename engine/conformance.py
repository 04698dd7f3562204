"""`diffusion-renderer conformance GOLDEN_DIR`: re-run every recorded case of a golden folder.

A golden folder (format of ../shared/golden, see its README) holds sub-folders with either a
``call_args.json`` (an inverse ``rgbx`` or forward ``xrgb`` script run: checkpoint, inputs, call
arguments and recorded tensors) or a ``cases.json`` (environment-map processing cases). Every case
found is run with our implementation and each recorded tensor compared within the golden README's
tolerances. Nothing here is specific to one golden set.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from engine.conformance_settings import UnsupportedSetting, check_top_level, resolve_run

# (atol, rtol) per recorded tensor, from the golden README §5 ("suggested acceptance thresholds")
TOLERANCES = {
    "frames": (1e-4, 0.0), "unet0_output": (1e-4, 1e-4), "unet_outputs": (1e-4, 1e-4),
    "step_latents": (1e-3, 0.0), "vae_decode_in": (1e-3 / 0.18215, 0.0), "noise": (0.0, 0.0),
    "cond_latents": (1e-5, 0.0), "vae_encode_mean": (1e-5, 0.0), "vae_encode_env_mean": (1e-5, 0.0),
    "vae_encode_gbuf_mean": (1e-5, 0.0), "env_ldr": (1e-5, 0.0), "env_log": (1e-5, 0.0), "env_nrm": (1e-5, 0.0),
}
ENVPROJ_DEFAULT = (1e-5, 0.0)
ENVPROJ_HDR = (1e-5, 1e-5)  # un-tonemapped radiance (values up to ~2e4): atol 1e-5 plus rtol 1e-5


def tolerance(name: str, envproj: bool = False) -> tuple[float, float]:
    if name.startswith("env_embedding_"):
        # end to end (our VAE means, 1.5e-6 from the recording at float32 rounding, amplified by the
        # EnvEncoder); the EnvEncoder alone reproduces the recording exactly (tests/test_models_*).
        return (1e-5, 1e-5)
    if envproj:
        return ENVPROJ_HDR if ("hdr" in name or name == "cubemap_probe_value") else ENVPROJ_DEFAULT
    return TOLERANCES.get(name, (1e-4, 0.0))


@dataclass
class CaseResult:
    name: str
    errors: dict = field(default_factory=dict)   # tensor -> (max_abs_err, ok)
    error: Optional[str] = None
    skipped: Optional[str] = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.errors) and all(ok for _, ok in self.errors.values())

    @property
    def max_error(self) -> float:
        return max((e for e, _ in self.errors.values()), default=float("nan"))

    def compare(self, name: str, ours, golden, envproj: bool = False) -> None:
        a = torch.as_tensor(np.asarray(ours) if not isinstance(ours, torch.Tensor) else ours).double().cpu()
        b = torch.as_tensor(np.asarray(golden) if not isinstance(golden, torch.Tensor) else golden).double().cpu()
        if a.shape != b.shape:
            self.errors[name] = (float("inf"), False)
            self.error = f"{name}: shape {tuple(a.shape)} != recorded {tuple(b.shape)}"
            return
        atol, rtol = tolerance(name, envproj)
        diff = (a - b).abs()
        ok = bool((diff <= atol + rtol * b.abs()).all())
        self.errors[name] = (float(diff.max()) if diff.numel() else 0.0, ok)


def _load_tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def _golden_path(value: str, root: Path, fallback: Path) -> Path:
    """Resolve '<GOLDEN>/x' against the folder being checked; fall back when absent."""
    if value and value.startswith("<GOLDEN>"):
        p = root / value[len("<GOLDEN>/"):]
        if p.exists():
            return p
    elif value and Path(value).exists():
        return Path(value)
    return fallback


class _UnetRecorder:
    """Forward hook collecting the UNet's raw outputs (both CFG halves) of one sampling run."""

    def __init__(self, unet):
        self.outputs: list[torch.Tensor] = []
        self.handle = unet.register_forward_hook(lambda m, i, o: self.outputs.append(o.detach().float().cpu()))

    def close(self):
        self.handle.remove()


def _resize_to(frames, st, what: str):
    """The reference's sizing (MODEL_SPEC §7.3): cover ``inference_res``, sides rounded up to ×64, PIL
    bilinear on the 8-bit image; the result must be the recorded call's height × width."""
    h, w = frames.shape[1:3]
    size = (w, h)
    if st.inference_res is not None:
        th, tw = st.inference_res
        s = max(tw / w, th / h)
        size = tuple(max(64, -(-int(v * s) // 64) * 64) for v in (w, h))
    if (st.width, st.height) != (None, None) and (st.width or size[0], st.height or size[1]) != size:
        raise UnsupportedSetting(f"{what}: call height/width {st.height}x{st.width} differ from the reference's "
                                 f"sizing of {h}x{w} inputs to inference_res {st.inference_res} ({size[1]}x{size[0]})")
    if size == (w, h):
        return frames
    from PIL import Image

    u8 = np.round(np.asarray(frames) * 255).astype(np.uint8)
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in u8]).astype(np.float32) / 255


def run_inverse_suite(folder: Path, root: Path, models: dict) -> list[CaseResult]:
    from engine.io.images import read_frames
    from engine.pipelines import InverseRenderer
    from engine.pipelines.components import load_components
    from engine.pipelines.sampling import initial_noise
    from engine.pipelines.vae_codec import decode_frames

    args = json.loads((folder / "call_args.json").read_text())
    results, settings = [], {}
    for name, run in args["runs"].items():   # every key of every run resolved first (unknown: the case fails)
        try:
            check_top_level(args, "call_args.json")
            st = resolve_run("inverse", run, args.get("cli_overrides", []))
            if st.guidance != (1.0, 1.0):
                raise UnsupportedSetting(f"guidance {st.guidance} on the inverse model is not implemented (the "
                                         "reference's CFG branch there is undefined: input_context is not repeated "
                                         "for the doubled batch, MODEL_SPEC §2.2/§10.1)")
            settings[name] = st
        except UnsupportedSetting as exc:
            results.append(CaseResult(f"{folder.name}/{name}", error=f"unsupported setting: {exc}"))
    if not settings:
        return results
    first = next(iter(settings.values()))
    ckpt = _golden_path(first.checkpoint, root, folder / "checkpoint")
    inputs = _golden_path(first.inputs, root, folder / "inputs" / "video")
    frames = read_frames([inputs / f for f in args["input_frames"]])
    key = ("inverse", str(ckpt))
    if key not in models:
        models[key] = InverseRenderer(load_components(ckpt, kind="inverse", device="cpu", dtype="fp32"))
    renderer = models[key]
    # runs that differ only in pass / decode chunk share one batched sampling
    groups: dict = {}
    for name, run in args["runs"].items():
        if name not in settings:
            continue
        st = settings[name]
        n = st.num_frames
        if len(frames) > n and st.chunk_mode != "first":
            results.append(CaseResult(f"{folder.name}/{name}", error=f"unsupported setting: {len(frames)} input "
                                      f"frames in chunks of {n} with chunk_mode {st.chunk_mode!r} (one chunk only)"))
            continue
        try:
            clip = _resize_to(frames[:n], st, f"{folder.name}/{name}")
        except UnsupportedSetting as exc:
            results.append(CaseResult(f"{folder.name}/{name}", error=f"unsupported setting: {exc}"))
            continue
        gkey = (st.steps, st.seed, st.fps, st.motion_bucket_id, n, clip.shape)
        groups.setdefault(gkey, ([], clip))[0].append((name, run, st))
    for (steps, seed, fps, mb, _n, _shape), (runs, clip) in groups.items():
        t0 = time.monotonic()
        cond = renderer.encode_video(clip)
        passes = list(dict.fromkeys(st.passes[0] for _, _, st in runs))
        steps_seen: list = []
        rec = _UnetRecorder(renderer.unet)
        try:
            res = renderer(clip, passes, num_inference_steps=steps, seed=seed, fps=fps, motion_bucket_id=mb,
                           cond_latents=cond, output="pt",
                           callback=lambda i, n, t, out, lat: steps_seen.append(lat.detach().cpu()))
        finally:
            rec.close()
        del res
        step_lat = torch.stack(steps_seen)                       # (S, P, F, 4, h, w)
        unet_out = torch.stack(rec.outputs)                      # (S, P, F, 4, h, w)
        elapsed = (time.monotonic() - t0) / len(runs)
        for name, run, st in runs:
            r = CaseResult(f"{folder.name}/{name}", seconds=elapsed)
            try:
                i = passes.index(st.passes[0])
                rec_t = _load_tensors(folder / run["file"])
                final = step_lat[-1, i:i + 1]
                video = decode_frames(renderer.vae, final, st.decode_chunk)
                extra = {"frames": video, "step_latents": step_lat[:, i:i + 1], "unet_outputs": unet_out[:, i:i + 1],
                         "cond_latents": cond, "vae_encode_mean": cond[0],
                         "vae_decode_in": final[0] / renderer.vae.config.scaling_factor,
                         "unet0_output": unet_out[0, i:i + 1],
                         "noise": initial_noise(tuple(final.shape), seed)}
                _compare_recorded(r, rec_t, extra, renderer.c.scheduler_config, run, spacing=None)
            except UnsupportedSetting as exc:
                r.error = f"unsupported setting: {exc}"
            except Exception as exc:  # noqa: BLE001 - reported per case
                r.error = f"{type(exc).__name__}: {exc}"
            results.append(r)
    return results


# recorded tensors that are inputs of a step rather than results (the first UNet call's arguments, the
# VAE posterior's log-variance, which the pipeline never uses): not compared, by name
_RECORDED_INPUTS = {"unet0_sample", "unet0_timestep", "unet0_encoder_hidden_states", "unet0_added_time_ids",
                    "unet0_input_context", "vae_encode_logvar", "vae_encode_env_logvar", "vae_encode_gbuf_logvar"}


def _compare_recorded(r: CaseResult, recorded: dict, ours: dict, scheduler_config: dict, run: dict, spacing) -> None:
    """Compare every recorded tensor (a recorded name we do not produce fails the case) and the recorded
    schedule (sigmas, timesteps, initial noise sigma)."""
    from engine.pipelines.sampling import make_scheduler

    for tname, golden in recorded.items():
        if tname in ours:
            r.compare(tname, ours[tname], golden)
        elif tname not in _RECORDED_INPUTS:
            raise UnsupportedSetting(f"recorded tensor {tname!r} has no counterpart in the conformance runner")
    sched = run.get("scheduler")
    if sched:
        steps = len(sched.get("timesteps", [])) or None
        ours_s = make_scheduler(scheduler_config, timestep_spacing=sched.get("timestep_spacing", spacing))
        ours_s.set_timesteps(steps)
        for key, value in (("timesteps", ours_s.timesteps), ("sigmas", ours_s.sigmas),
                           ("init_noise_sigma", torch.tensor([float(ours_s.init_noise_sigma)]))):
            if key in sched:
                want = torch.tensor(sched[key] if isinstance(sched[key], list) else [sched[key]], dtype=torch.float64)
                got = value.double().flatten()
                ok = got.shape == want.shape and bool(((got - want).abs() <= 1e-6 + 1e-6 * want.abs()).all())
                err = float((got - want).abs().max()) if got.shape == want.shape else float("inf")
                r.errors[f"scheduler.{key}"] = (err, ok)


def run_forward_suite(folder: Path, root: Path, models: dict) -> list[CaseResult]:
    from engine.io.images import read_frames
    from engine.pipelines import GBUFFER_ORDER, EnvLight, ForwardRenderer
    from engine.pipelines.components import load_components
    from engine.envmap import env_direction_map
    from engine.pipelines.sampling import initial_noise
    from engine.pipelines.vae_codec import decode_frames, encode_mean

    args = json.loads((folder / "call_args.json").read_text())
    order = tuple(args.get("gbuffer_labels_in_latent_order", GBUFFER_ORDER))
    if order != GBUFFER_ORDER:
        raise ValueError(f"{folder}: G-buffer latent order {order} differs from the model's {GBUFFER_ORDER}")
    results = []
    for name, run in args["runs"].items():
        r = CaseResult(f"{folder.name}/{name}")
        t0 = time.monotonic()
        try:
            check_top_level(args, "call_args.json")
            st = resolve_run("forward", run, args.get("cli_overrides", []))
            ckpt = _golden_path(st.checkpoint, root, folder / "checkpoint")
            inputs = _golden_path(st.inputs, root, folder / "inputs" / "gbuffers")
            key = ("forward", str(ckpt), st.lora)
            if key not in models:
                models[key] = ForwardRenderer(load_components(ckpt, kind="forward", device="cpu", dtype="fp32",
                                                              lora=st.lora))
            fr = models[key]
            # the reference uses the first inference_n_frames of every pass (MODEL_SPEC §7.5)
            gb = {p: read_frames([inputs / f for f in files][:st.num_frames]) for p, files in args["gbuffer_files"].items()}
            short = {p: len(v) for p, v in gb.items() if len(v) < st.num_frames}
            if short:
                raise UnsupportedSetting(f"inference_n_frames {st.num_frames} but the recording lists {short} frames")
            gb = {p: _resize_to(v, st, r.name) for p, v in gb.items()}
            env_path = _golden_path(st.envlight, root, root / run["envlight"])
            light = EnvLight(env_path, rotate=bool(st.env.get("rotate", False)),
                             elevation=float(st.env.get("elevation", 0.0)), rotation=float(st.env.get("rotation", 180.0)),
                             flip=bool(st.env.get("flip", False)), strength=float(st.env.get("strength", 1.0)),
                             log_scale=float(st.env.get("log_scale", 10000.0)))
            # use_fixed_frame_ind: frame fixed_frame_ind of every G-buffer on all F frames (MODEL_SPEC §7.5)
            cond = fr.encode_gbuffers(gb, st.fixed_frame, st.num_frames if st.fixed_frame is not None else None)
            env_ldr, env_log = light.maps(cond.shape[1], st.env_resolution or (512, 512))
            tokens = fr.env_tokens(env_ldr, env_log)
            steps_seen: list = []
            rec = _UnetRecorder(fr.unet)
            try:
                latents = fr.sample(cond, tokens, num_inference_steps=st.steps, guidance_scale=st.guidance,
                                    lora_scale=st.lora_scale, seed=st.seed, fps=st.fps,
                                    motion_bucket_id=st.motion_bucket_id,
                                    callback=lambda i, n, t, out, lat: steps_seen.append(lat.detach().cpu()))
            finally:
                rec.close()
            video = decode_frames(fr.vae, latents, st.decode_chunk)
            ours = {"frames": video, "step_latents": torch.stack(steps_seen), "unet_outputs": torch.stack(rec.outputs),
                    "unet0_output": rec.outputs[0], "cond_latents": cond[:1],
                    "env_ldr": env_ldr.permute(0, 3, 1, 2)[None], "env_log": env_log.permute(0, 3, 1, 2)[None],
                    "vae_decode_in": latents[0] / fr.vae.config.scaling_factor}
            ours.update({f"env_embedding_{i}": t for i, t in enumerate(tokens)})
            f, (h, w) = cond.shape[1], env_ldr.shape[1:3]
            nrm = env_direction_map(h, w).permute(2, 0, 1)[None].float()
            ours["env_nrm"] = nrm[None]
            ours["noise"] = initial_noise(tuple(latents.shape), st.seed)
            scale = fr.vae.config.scaling_factor
            ours["vae_encode_gbuf_mean"] = (cond[0] / scale).unflatten(1, (len(order), 4)).transpose(0, 1)
            env_imgs = [env_ldr.permute(0, 3, 1, 2), env_log.permute(0, 3, 1, 2), nrm.expand(f, -1, -1, -1)]
            ours["vae_encode_env_mean"] = torch.stack([encode_mean(fr.vae, x.float()) for x in env_imgs])
            _compare_recorded(r, _load_tensors(folder / run["file"]), ours, fr.c.scheduler_config, run, "trailing")
        except UnsupportedSetting as exc:
            r.error = f"unsupported setting: {exc}"
        except Exception as exc:  # noqa: BLE001 - reported per case
            r.error = f"{type(exc).__name__}: {exc}"
        r.seconds = time.monotonic() - t0
        results.append(r)
    return results


def run_envproj_suite(folder: Path, root: Path, models: dict) -> list[CaseResult]:
    from engine.envmap.conformance_case import MissingInputError, UnsupportedCaseSetting, run_envproj_case

    spec = json.loads((folder / "cases.json").read_text())
    results = []
    for name, case in spec["cases"].items():
        r = CaseResult(f"{folder.name}/{name}")
        t0 = time.monotonic()
        try:
            hdri_dirs = [root / "hdri", root.parent / "hdri"]
            for tname, (ours, golden) in run_envproj_case(case, folder, hdri_dirs=hdri_dirs).items():
                r.compare(tname, ours, golden, envproj=True)
        except MissingInputError as exc:
            r.skipped = f"input missing: {exc}"
        except UnsupportedCaseSetting as exc:
            r.error = f"unsupported setting: {exc}"
        except Exception as exc:  # noqa: BLE001
            r.error = f"{type(exc).__name__}: {exc}"
        r.seconds = time.monotonic() - t0
        results.append(r)
    return results


def discover(root: Path) -> list[tuple[Path, Callable]]:
    suites = []
    for index in sorted(root.rglob("call_args.json")) + sorted(root.rglob("cases.json")):
        data = json.loads(index.read_text())
        script = str(data.get("script", ""))
        if index.name == "cases.json" and "process_environment_map" in str(data.get("function", "")):
            suites.append((index.parent, run_envproj_suite))
        elif "rgbx" in script:
            suites.append((index.parent, run_inverse_suite))
        elif "xrgb" in script:
            suites.append((index.parent, run_forward_suite))
    return suites


def run(root: Path, out=None, only: Optional[str] = None) -> tuple[list[CaseResult], int]:
    out = out or sys.stdout
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: golden folder not found")
    suites = discover(root)
    if not suites:
        raise ValueError(f"{root}: no call_args.json or cases.json found (not a golden folder)")
    torch.manual_seed(0)
    models: dict = {}
    results: list[CaseResult] = []
    skipped: list[CaseResult] = []
    for folder, fn in suites:
        if only and only not in folder.name:
            continue
        for r in fn(folder, root, models):
            if r.skipped:
                skipped.append(r)
                print(f"skip {r.name:<46} ({r.skipped})", file=out, flush=True)
                continue
            results.append(r)
            worst = max(r.errors.items(), key=lambda kv: kv[1][0], default=(None, (float("nan"), True)))
            status = "ok  " if r.ok else "FAIL"
            detail = r.error or ", ".join(f"{k} {e:.2e}" for k, (e, ok) in r.errors.items() if not ok) or \
                f"worst {worst[0]}"
            frames = f"frames {r.errors['frames'][0]:.2e}, " if "frames" in r.errors else ""
            print(f"{status} {r.name:<46} max abs error {r.max_error:.3e}  ({frames}{detail}; {r.seconds:.1f} s)",
                  file=out, flush=True)
    failed = sum(not r.ok for r in results)
    max_err = max((r.max_error for r in results if r.errors), default=float("nan"))
    note = f" ({len(skipped)} skipped: input missing)" if skipped else ""
    print(f"conformance: {len(results)} cases, {failed} failed, max error {max_err:.3e}{note}", file=out, flush=True)
    return results, failed
