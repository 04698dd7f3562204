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
    cluster: Optional[str] = param_default("cluster")       # local[:N] | auto | HOST:PORT (docs/CLUSTER.md); None: here
    split: str = param_default("split")                     # segments | windows | auto: how a cluster shares the work
    only_segments: Optional[tuple] = param_default("only_segments")   # a farm task's segments (engine/jobs/unit_runs.py)


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


def file_identity(path: Path, exclude=()) -> list:
    """Cheap identity of an input file or folder (names, sizes, mtimes) for the settings key.

    Hidden entries (any path part starting with ``.``: the resume cache, the output lock, temporaries) and
    everything under ``exclude`` (the job's own output folders, when placed inside the input) are left out,
    so writing a job's outputs never changes its input's identity."""
    path = Path(path)
    if path.is_file():
        st = path.stat()
        return [path.name, st.st_size, int(st.st_mtime)]
    skip = [Path(os.path.abspath(e)) for e in exclude]
    items = []
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        absolute = Path(os.path.abspath(p))
        if any(absolute == e or e in absolute.parents for e in skip):
            continue
        st = p.stat()
        items.append([str(rel), st.st_size, int(st.st_mtime)])
    return items


def settings_key(settings: dict) -> str:
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


class ResumeCache:
    """Finished segments of one job, keyed by its settings: ``<out>/.dr-resume/<key>/seg_0003.safetensors``.

    Public API (the inverse/forward jobs and the cluster runtime use it):

    * ``ResumeCache(out_dir, key)`` — ``key`` is the job's settings key (``settings_key``); other keys' folders
      under ``<out>/.dr-resume`` are removed (they cannot be resumed any more; the output lock keeps another
      run from using the folder meanwhile).
    * ``put(name, {tensor name: array})`` — stores each array exactly as the run computes it: float arrays
      as float32 (what ``run_segments`` consumes; float64 is narrowed as ``run_segments`` would), others
      unchanged. Written atomically, with ``key``, ``name``, the tensor names and a CRC-32 per tensor in the
      safetensors metadata.
    * ``get(name)`` → ``{tensor name: torch.Tensor}`` or None; an entry written for another key or name, with
      other tensor names, a checksum that does not match or that cannot be read is deleted and reported as
      missing (the caller recomputes it). A resumed run is therefore bit-identical to an uninterrupted one.
    * ``clear()`` — removes this key's folder (and ``.dr-resume`` when empty) after the job succeeded.
    """

    FORMAT = "diffusion-renderer/resume-segment/2"

    def __init__(self, out_dir: Path, key: str):
        self.key = str(key)
        self.root = Path(out_dir) / CACHE_DIR
        self.dir = self.root / self.key
        if self.root.is_dir():
            for other in self.root.iterdir():
                if other.is_dir() and other.name != self.key:
                    shutil.rmtree(other, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        return self.dir / f"{name}.safetensors"

    @staticmethod
    def _checksum(t: torch.Tensor) -> str:
        import zlib

        return f"{zlib.crc32(t.contiguous().view(torch.uint8).numpy().tobytes()):08x}" if t.numel() else "0"

    def get(self, name: str) -> Optional[dict]:
        from safetensors import safe_open

        p = self._path(name)
        if not p.is_file():
            return None
        try:
            with safe_open(str(p), "pt") as fh:
                meta = fh.metadata() or {}
                names = json.loads(meta.get("tensors", "null"))
                if (meta.get("format") != self.FORMAT or meta.get("key") != self.key or meta.get("name") != name
                        or names is None or sorted(names) != sorted(fh.keys())):
                    raise ValueError("entry of another job, segment or format")
                sums = json.loads(meta["checksums"])
                data = {k: fh.get_tensor(k) for k in names}
            if any(self._checksum(v.view(-1)) != sums.get(k) for k, v in data.items()):
                raise ValueError("checksum mismatch")
            return data
        except Exception:  # noqa: BLE001 - a damaged or foreign cache entry is recomputed
            p.unlink(missing_ok=True)
            return None

    def put(self, name: str, tensors: dict) -> None:
        from safetensors.torch import save_file

        data = {}
        for k, v in tensors.items():
            t = v.detach().cpu() if isinstance(v, torch.Tensor) else torch.from_numpy(np.require(v, requirements=["C", "W"]))
            data[k] = (t.to(torch.float32) if t.is_floating_point() else t).contiguous()
        meta = {"format": self.FORMAT, "key": self.key, "name": str(name), "tensors": json.dumps(list(data)),
                "checksums": json.dumps({k: self._checksum(v.view(-1)) for k, v in data.items()})}
        path = self._path(name)
        needed = sum(v.numel() * v.element_size() for v in data.values())

        def write(tmp):
            try:
                save_file(data, tmp, metadata=meta)
            except OSError:
                raise
            except Exception as exc:       # safetensors reports a full disk as its own error type: check the disk
                from engine.jobs.disk_space import raise_if_disk_full

                raise_if_disk_full(path, needed, exc)
                raise
        atomic_write(path, write)

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
