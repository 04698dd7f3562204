"""The README's main job, end to end in headless Blender (run by ``bin/demo`` with the bpy venv's Python):

1. a synthetic HDR sky (written by the engine's Python: ``engine.envmap.write_hdr``) — nothing shipped;
2. a small procedural scene using it as World (``diffusion_renderer_addon.demo_scene``);
3. its G-buffers rendered by Blender into a render folder (``export.export_gbuffers``: frame EXRs +
   render.json) and its world described (``export.export_environment``);
4. the engine started through the add-on client, the forward model run on the render folder
   (``allow_download`` true); ``--tiny``: a random-weight forward checkpoint written on the fly instead
   (offline smoke check); the render folder converted into a G-buffer set by a ``gbuffers`` job;
5. the G-buffer set and the relit set imported back (``reimport.import_result``), ``demo.blend``
   saved and the relit mp4 copied to ``demo.mp4`` in the output folder (default ``out/demo``).

Before anything is rendered it checks the forward weights (``engine.hub``, no network): cached → go on;
missing with hub access → downloaded first (``diffusion-renderer download forward``, pinned revision); missing
offline → ONE message with the options that work, exit status 2. ``--model FOLDER`` uses a local checkpoint
instead. Each run starts from a clean work folder (no stale frames of an earlier run).

Exit status 0 on success; 2 when the weights are unavailable; 1 on any other failure (one line, ``-v`` for
the traceback).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("BLENDER_USER_RESOURCES", str(Path(tempfile.gettempdir()) / "dr-bpy-user"))

HDR_CODE = r"""
import sys, numpy as np
from engine.envmap import write_hdr
h, w = 64, 128
v = (np.arange(h) + 0.5) / h                      # 0 = zenith, 1 = nadir
u = (np.arange(w) + 0.5) / w
sky = np.stack([0.35 + 0.4 * v, 0.55 + 0.3 * v, 1.0 - 0.2 * v], -1)[:, None, :] * np.ones((1, w, 1))
ground = np.array([0.25, 0.2, 0.15])
img = np.where((v > 0.5)[:, None, None], ground, sky)
theta = (v - 0.3)[:, None] * np.pi
phi = (u - 0.35)[None, :] * 2 * np.pi
sun = np.exp(-(theta ** 2 + phi ** 2) / (2 * 0.06 ** 2))
img = img + 40.0 * sun[..., None] * np.array([1.0, 0.92, 0.8])
write_hdr(sys.argv[1], img.astype(np.float32))
"""
CKPT_CODE = "import sys; from engine.random_checkpoint import write_random_checkpoint as w; w(sys.argv[1], 'forward')"
# prints "ok <folder>" when the weights are usable without network, else "missing <offline 0|1> <reason>"
CHECK_CODE = r"""
import sys
from engine.hub import WeightsUnavailableError, is_offline, resolve_model
try:
    print("ok", resolve_model(sys.argv[1], allow_download=False))
except (WeightsUnavailableError, FileNotFoundError, NotADirectoryError, ValueError) as exc:
    print("missing", int(is_offline()), (getattr(exc, "reason", "") or str(exc)).splitlines()[0])
"""
WORK_PARTS = ("render", "env", "jobs", "engine.log")     # what a run writes into work/ (the tiny checkpoint stays)


def weights_message(reason: str) -> str:
    """The one message when the forward weights are missing: what happened and the options that work."""
    return (f"the forward model's weights are not available ({reason}). Options: run `bin/diffusion-renderer "
            "download forward` where the Hugging Face Hub is reachable (then copy its cache here, or set HF_HOME to "
            "it); or `bin/demo --model /path/to/checkpoint_folder`; or `bin/demo --tiny` for an offline smoke check "
            "with random weights.")


def clean_work(work: Path) -> None:
    """Remove what an earlier run left in the work folder (rendered frames, env maps, job folders, logs)."""
    for name in WORK_PARTS:
        target = work / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def check_weights(py: str, model: str) -> None:
    """Make sure ``model`` can run before anything is rendered: cached → nothing; missing and the Hub is
    reachable → downloaded now (the engine's own download, progress on stderr); else _Stop(code 2)."""
    from diffusion_renderer_addon.client import clean_env

    env = clean_env(str(REPO))
    r = subprocess.run([py, "-c", CHECK_CODE, model], cwd=REPO, env=env, capture_output=True, text=True)
    line = (r.stdout.strip().splitlines() or [""])[-1]
    if r.returncode or not line.startswith(("ok", "missing")):
        raise _Stop(f"engine python failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    if line.startswith("ok"):
        return
    _, offline, reason = line.split(" ", 2)
    if offline == "1" or os.sep in model or "/" in model:
        raise _Stop(weights_message(reason) if os.sep not in model and "/" not in model else
                    f"--model {model}: {reason}", 2)
    log("downloading the forward model's weights (about 3 GB, pinned revision) before rendering")
    d = subprocess.run([py, "-m", "engine", "download", model], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    if d.returncode:
        raise _Stop(weights_message((d.stderr.strip().splitlines() or ["the download failed"])[-1]
                                    .removeprefix("error: ")), 2)


def log(msg: str) -> None:
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="random-weight forward checkpoint, 64×64, 3 frames (offline)")
    ap.add_argument("--out", default=str(REPO / "out" / "demo"), help="output folder (default out/demo)")
    ap.add_argument("--engine-python", default=os.environ.get("DR_ENGINE_PYTHON", ""),
                    help="the engine's interpreter (default $DR_ENGINE_PYTHON)")
    ap.add_argument("--model", default=None, metavar="FOLDER",
                    help="a local forward checkpoint folder instead of the published forward model")
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--resolution", default=None, help="WxH (multiples of 64)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("-v", "--verbose", action="store_true")
    return ap


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args)
    except _Stop as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return exc.code
    except Exception as exc:  # one line for the user; -v for the traceback
        if args.verbose:
            raise
        print(f"demo: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


class _Stop(Exception):
    def __init__(self, msg, code=1):
        super().__init__(msg)
        self.code = code


def _engine(py: str, code: str, *args: str) -> None:
    from diffusion_renderer_addon.client import clean_env

    env = clean_env(str(REPO), {"HF_HUB_OFFLINE": "1"})
    r = subprocess.run([py, "-c", code, *args], cwd=REPO, env=env, capture_output=True, text=True)
    if r.returncode:
        raise _Stop(f"engine python failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")


def run(args) -> int:
    t0 = time.monotonic()
    if not args.engine_python:
        raise _Stop("no engine interpreter (set DR_ENGINE_PYTHON or pass --engine-python)", 2)
    out = Path(args.out).resolve()
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    clean_work(work)
    model = "forward"
    if args.tiny and args.model:
        raise _Stop("--tiny and --model exclude each other (--tiny writes its own random checkpoint)", 2)
    if not args.tiny:
        model = str(Path(args.model).resolve()) if args.model else "forward"
        log("checking the forward model's weights")
        check_weights(args.engine_python, model)
    frames = args.frames or (3 if args.tiny else 12)
    res = args.resolution or ("64x64" if args.tiny else "512x512")
    w, h = (int(x) for x in res.lower().split("x"))

    import bpy

    from diffusion_renderer_addon import client as drc
    from diffusion_renderer_addon.client import blocking
    from diffusion_renderer_addon.demo_scene import build_demo_scene
    from diffusion_renderer_addon.export import export_environment, export_gbuffers
    from diffusion_renderer_addon.reimport import import_result

    log("writing a synthetic HDR sky")
    hdr = work / "sky.hdr"
    _engine(args.engine_python, HDR_CODE, str(hdr))
    if args.tiny:
        log("writing a tiny random-weight forward checkpoint")
        ckpt = work / "tiny-forward"
        if not (ckpt / "model_index.json").is_file() and not ckpt.is_dir():
            _engine(args.engine_python, CKPT_CODE, str(ckpt))
        model = str(ckpt)

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = build_demo_scene(frames=frames, resolution=(w, h), hdri=hdr)
    for s in list(bpy.data.scenes):
        if s != scene:
            bpy.data.scenes.remove(s)
    log(f"rendering G-buffers ({frames} frames, {w}x{h})")
    render_dir = export_gbuffers(scene, work / "render", samples=1 if args.tiny else 4, background=False,
                                 overwrite=True, progress=lambda d, t, m: None)
    env = export_environment(scene, work / "env", render="auto", width=128 if args.tiny else 512)
    log(f"environment: {env['kind']} {env['path']}")

    cfg = drc.EngineConfig(python=args.engine_python, engine_root=str(REPO),
                           env={"HF_HUB_OFFLINE": "1"} if args.tiny else {}, jobs_dir=str(work / "jobs"),
                           args=["--log-file", str(work / "engine.log")])
    client = drc.configure(cfg)
    params = {"gbuffers": str(render_dir), "camera_follow": True, "hdri": [env["path"]], "env_rotation": float(env["env_rotation"]),
              "env_strength": float(env["env_strength"]), "env_flip": bool(env.get("env_flip", False)),
              "model": model, "allow_download": True, "overwrite": True, "frames": frames, "overlap": 0,
              "previews": True}
    if args.tiny:
        params.update(steps=args.steps or 2, resolution=res, device="cpu", lora_scale=0.0)
    elif args.steps:
        params["steps"] = args.steps
    last = [0.0]

    def progress(job):
        if time.monotonic() - last[0] > 5 or job.step == job.total:
            last[0] = time.monotonic()
            log(f"forward: {job.message or job.state}")

    log(f"running the forward model ({'tiny random weights' if args.tiny else model})")
    try:
        try:
            job = blocking.run_job("forward", params, str(work / "jobs" / f"forward-{int(time.time())}"),
                                   client=client, on_progress=progress)
        except blocking.JobFailed as exc:
            code = exc.engine_code or exc.code
            if code == "weights_unavailable":
                raise _Stop(weights_message(exc.message.splitlines()[0]), 2) from None
            raise _Stop(f"forward job failed ({code}): {exc.short()}") from None
        log("converting the render folder into a G-buffer set (to show the passes in Blender)")
        try:
            gjob = blocking.run_job("gbuffers", {"input": str(render_dir), "overwrite": True, "previews": False},
                                    str(work / "jobs" / f"gbuffers-{int(time.time())}"), client=client)
        except blocking.JobFailed as exc:
            raise _Stop(f"gbuffers job failed ({exc.engine_code or exc.code}): {exc.short()}") from None
    except drc.ClientError as exc:
        raise _Stop(f"engine: {exc.short()}") from None
    finally:
        drc.shutdown_all()
    relit_manifest = Path(job.manifest)
    log(f"relit set: {relit_manifest.parent}")

    created_g = import_result(gjob.manifest, scene=scene, make_vse=False)
    created_r = import_result(relit_manifest, scene=scene, vse_movie=False)
    relit = json.loads(relit_manifest.read_text(encoding="utf-8"))
    mp4 = relit_manifest.parent / (relit.get("videos") or {}).get("relit", "relit.mp4")
    if not mp4.is_file():
        raise _Stop(f"{mp4}: the relit set has no mp4 (previews off?)")
    shutil.copyfile(mp4, out / "demo.mp4")
    blend = out / "demo.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend), check_existing=False)
    (out / "demo.json").write_text(json.dumps({"gbuffers": created_g, "relit": created_r,
                                               "seconds": round(time.monotonic() - t0, 2)}, indent=2) + "\n")
    print(f"demo: wrote {blend} and {out / 'demo.mp4'} in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
