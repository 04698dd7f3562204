"""Pieces shared by the inverse and forward jobs: resolution rules, resizing, settings keys, resume cache,
progress and summaries."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from engine.atomic import atomic_write
from engine.contract.params import default as param_default
from engine.errors import UserError

CACHE_DIR = ".dr-resume"


@dataclass
class JobSettings:
    """Settings every job shares (model, windows, sampling, device, outputs). Field names are the job
    parameters' and every default is the parameter table's (engine/contract/params.py)."""
    model: str = ""                                    # per kind: InverseSettings / ForwardSettings
    revision: Optional[str] = param_default("revision")
    frames: int = param_default("frames")                   # frames per model window
    overlap: int = param_default("overlap")                 # frames shared by neighbouring windows
    steps: int = param_default("steps")
    resolution: Optional[tuple] = param_default("resolution")   # (W, H); None = cover 512 keeping the aspect (×64)
    seed: Optional[int] = param_default("seed")
    device: str = param_default("device")
    dtype: str = param_default("dtype")
    decode_chunk: int = param_default("decode_chunk")
    decode_overlap: int = param_default("decode_overlap")
    memory: str = param_default("memory")                   # default | low-vram | minimal (engine/pipelines/memory.py)
    blend: str = param_default("blend")
    windows_per_segment: int = param_default("windows_per_segment")
    overwrite: bool = param_default("overwrite")
    previews: bool = param_default("previews")
    output_size: str = param_default("output_size")   # source | processing | WxH (engine/jobs/framing.py)
    fit: str = param_default("fit")                   # pad | crop | stretch: the input's aspect in the processing size


class JobError(UserError):
    """A job cannot run as asked; the message names the file or setting and the fix (engine/errors.py)."""


def parse_resolution(text: Optional[str], multiple: int = 64) -> Optional[tuple[int, int]]:
    """'WxH' → (W, H); both sides must be positive multiples of ``multiple``."""
    if text in (None, "", "auto"):
        return None
    try:
        w, h = (int(v) for v in str(text).lower().replace("×", "x").split("x"))
    except ValueError:
        raise JobError(f"--resolution {text!r}: expected WIDTHxHEIGHT, e.g. 960x512") from None
    if w <= 0 or h <= 0 or w % multiple or h % multiple:
        fix = f"{max(multiple, round(w / multiple) * multiple)}x{max(multiple, round(h / multiple) * multiple)}"
        raise JobError(f"--resolution {w}x{h}: both sides must be multiples of {multiple} (try {fix})")
    return w, h


def cover_resolution(width: int, height: int, target: int = 512, multiple: int = 64) -> tuple[int, int]:
    """The reference's rule (MODEL_SPEC §7.3): scale to cover ``target``² keeping the aspect, truncate,
    round each side up to a multiple of ``multiple`` (1920×1080 → 960×512)."""
    s = max(target / width, target / height)
    w, h = int(width * s), int(height * s)
    return max(multiple, -(-w // multiple) * multiple), max(multiple, -(-h // multiple) * multiple)


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(n, H, W, C) float → (n, size[1], size[0], C), bilinear (antialiased when shrinking)."""
    w, h = size
    if frames.shape[1:3] == (h, w):
        return frames
    t = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    shrink = h < frames.shape[1] or w < frames.shape[2]
    out = torch.nn.functional.interpolate(t, size=(h, w), mode="bilinear", align_corners=False, antialias=shrink)
    return out.permute(0, 2, 3, 1).contiguous().numpy()


def file_identity(path: Path) -> list:
    """Cheap identity of an input file or folder (names, sizes, mtimes) for the settings key."""
    path = Path(path)
    if path.is_file():
        st = path.stat()
        return [path.name, st.st_size, int(st.st_mtime)]
    items = []
    for p in sorted(path.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            st = p.stat()
            items.append([str(p.relative_to(path)), st.st_size, int(st.st_mtime)])
    return items


def settings_key(settings: dict) -> str:
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


class ResumeCache:
    """Finished segments of one job, keyed by its settings: ``<out>/.dr-resume/<key>/seg_0003.safetensors``.

    A changed setting gives another key, so stale results are never reused; other keys' folders are
    removed when a job starts (they cannot be resumed any more)."""

    def __init__(self, out_dir: Path, key: str):
        self.root = Path(out_dir) / CACHE_DIR
        self.dir = self.root / key
        if self.root.is_dir():
            for other in self.root.iterdir():
                if other.is_dir() and other.name != key:
                    shutil.rmtree(other, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        return self.dir / f"{name}.safetensors"

    def get(self, name: str) -> Optional[dict]:
        from safetensors.torch import load_file

        p = self._path(name)
        if not p.is_file():
            return None
        try:
            return {k: v.float() for k, v in load_file(str(p)).items()}
        except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed
            p.unlink(missing_ok=True)
            return None

    def put(self, name: str, tensors: dict) -> None:
        from safetensors.torch import save_file

        data = {k: torch.as_tensor(v).to(torch.float16).contiguous() for k, v in tensors.items()}
        atomic_write(self._path(name), lambda tmp: save_file(data, tmp))

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        try:
            self.root.rmdir()
        except OSError:
            pass


def check_writable(folder: Path) -> None:
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write-test.", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        reason = exc.strerror or exc
        raise JobError(f"output folder {folder} is not writable ({reason}); choose another --out") from None


@dataclass
class Progress:
    """tqdm over chunks × steps on stderr; also forwards to an optional listener (the server)."""
    total: int
    desc: str
    listener: Optional[callable] = None
    enabled: bool = True
    extra: dict = field(default_factory=dict)    # sent with every report, e.g. {"light": 2, "lights": 3}
    done: int = 0
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self):
        from tqdm import tqdm

        self.bar = tqdm(total=self.total, desc=self.desc, unit="step", file=sys.stderr, dynamic_ncols=True,
                        disable=not self.enabled, leave=False)

    def step(self, stage: str = "denoise", chunk: int = 0, n: int = 1) -> None:
        self.done += n
        self.bar.update(n)
        if self.listener is not None:
            elapsed = time.monotonic() - self.started
            eta = elapsed / self.done * (self.total - self.done) if self.done else None
            self.listener({"stage": stage, "chunk": chunk, "step": self.done, "total": self.total, "eta_s": eta,
                           **self.extra})

    def stage(self, stage: str) -> None:
        """Report a stage without a step of its own (``"write"``: the denoising is over, the files are being
        decoded and written)."""
        if self.listener is not None:
            self.listener({"stage": stage, "step": self.done, "total": self.total, "eta_s": None, **self.extra})

    def close(self) -> None:
        self.bar.close()


def load_renderer(kind: str, settings) -> tuple[object, float]:
    """Load the inverse/forward renderer a job's settings ask for; returns (renderer, seconds)."""
    from engine.pipelines.loading import load_renderer as load

    t0 = time.monotonic()
    renderer = load(kind, settings.model, revision=settings.revision, device=settings.device, dtype=settings.dtype,
                    memory=settings.memory, allow_download=True)
    return renderer, time.monotonic() - t0


def decode_settings(settings) -> tuple[int, int]:
    """(decode_chunk, decode_overlap) of a job: its own, capped by its memory mode's."""
    from engine.pipelines.memory import memory_plan

    return memory_plan(settings.memory).decode(settings.decode_chunk, settings.decode_overlap)


def job_summary(kind: str, input_path, out, t0: float, load_seconds: float, results) -> dict:
    from dataclasses import asdict

    return {"job": kind, "input": str(input_path), "out": str(out), "load_seconds": round(load_seconds, 2),
            "model_cached": load_seconds == 0.0, "total_seconds": round(time.monotonic() - t0, 2),
            "clips": [asdict(r) for r in results]}
