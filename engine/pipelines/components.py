"""Load a checkpoint folder's parts (unet, vae, scheduler, env_encoder, lora) for the pipelines."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def pick_device(device: Optional[str] = None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available in this torch build "
                         f"({torch.__version__}); use --device cpu or install a CUDA build of torch")
    return dev


def pick_dtype(dtype, device: torch.device) -> torch.dtype:
    """Weights/compute dtype: fp16 on CUDA by default (as the reference), fp32 on CPU."""
    if dtype in (None, "", "auto"):
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        dt = DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of fp32, fp16, bf16") from None
    if dt == torch.float16 and device.type == "cpu":
        raise ValueError("--dtype fp16 needs a CUDA device; on the CPU use fp32 (default) or bf16")
    return dt


@dataclass
class Components:
    root: Path
    unet: torch.nn.Module
    vae: torch.nn.Module
    scheduler_config: dict
    device: torch.device
    dtype: torch.dtype
    env_encoder: Optional[torch.nn.Module] = None
    lora_path: Optional[Path] = None
    info: dict = field(default_factory=dict)


def read_scheduler_config(root: Path) -> dict:
    path = root / "scheduler" / "scheduler_config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the checkpoint folder {root} needs scheduler/scheduler_config.json")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); re-download the checkpoint") from None


def load_components(root: Path, *, kind: str, device=None, dtype=None, lora: bool = True) -> Components:
    """Load the parts of the checkpoint folder ``root`` that ``kind`` ("inverse"/"forward") needs."""
    from engine.models import load_env_encoder, load_lora, load_unet, load_vae

    root = Path(root)
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    unet = load_unet(root / "unet", dtype=dt, device=dev).eval()
    vae_cfg_path = root / "vae" / "config.json"
    vae_dtype = dt
    try:
        if json.loads(vae_cfg_path.read_text()).get("force_upcast", False):
            vae_dtype = torch.float32  # honour force_upcast (the reference ignores it and decodes in fp16)
    except (OSError, ValueError):
        pass  # load_vae reports the problem clearly
    vae = load_vae(root / "vae", dtype=vae_dtype, device=dev).eval()
    comps = Components(root=root, unet=unet, vae=vae, scheduler_config=read_scheduler_config(root),
                       device=dev, dtype=dt)
    if kind == "forward":
        if not getattr(unet, "is_forward", False):
            raise ValueError(f"{root} holds an inverse (de-lighting) model; the forward renderer needs a forward "
                             "checkpoint (e.g. --model forward)")
        comps.env_encoder = load_env_encoder(root / "env_encoder", dtype=dt, device=dev).eval()
        lora_file = root / "lora" / "pytorch_lora_weights.safetensors"
        if lora and lora_file.is_file():
            load_lora(unet, lora_file, adapter_name="real-lora")
            comps.lora_path = lora_file
        elif lora and (root / "lora").exists():
            raise FileNotFoundError(f"{root / 'lora'} exists but has no pytorch_lora_weights.safetensors; "
                                    "re-download the checkpoint or pass lora=False")
    elif getattr(unet, "is_forward", False):
        raise ValueError(f"{root} holds a forward (re-lighting) model; the inverse renderer needs an inverse "
                         "checkpoint (e.g. --model inverse)")
    comps.info = {"root": str(root), "device": str(dev), "dtype": str(dt).replace("torch.", ""),
                  "lora": str(comps.lora_path) if comps.lora_path else None}
    log.info("loaded %s model from %s on %s (%s)", kind, root, dev, comps.info["dtype"])
    return comps


def resolve_checkpoint(path_or_name, revision: Optional[str] = None, allow_download: bool = False) -> Path:
    from engine.hub import resolve_model

    return Path(resolve_model(path_or_name, revision=revision, allow_download=allow_download))
