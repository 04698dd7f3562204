"""Verified checkpoint loading for the DiffusionRenderer modules.

Every component folder (``unet/``, ``vae/``, ``env_encoder/``) holds a ``config.json`` and a
``diffusion_pytorch_model.safetensors`` (a ``.fp16`` variant or a sharded ``.index.json`` is also
accepted).  Loading is:

1. read ``config.json`` and build the module on the ``meta`` device (no memory, no random init);
2. read only the safetensors *header* (``safetensors.safe_open``) and compare it with the module's state
   dict: every key present, none extra, same shapes, floating dtypes -- otherwise
   :class:`CheckpointMismatchError` naming the folder and the offending keys;
3. load it with diffusers' ``ModelMixin.from_pretrained`` (local files only, ``torch_dtype``,
   ``output_loading_info=True``: anything it reports missing, unexpected or mismatched is an error too),
   then move it to the device.

The original checkpoints' root ``config.json`` is an empty (0-byte) file; :func:`read_config`
returns ``{}`` for it.  The components load one by one, not through ``DiffusionPipeline.from_pretrained``
(the released ``model_index.json`` refers to the original project's Python modules).
"""
from __future__ import annotations

import json
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
import torch.nn as nn

from engine.errors import UserError

log = logging.getLogger(__name__)

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
WEIGHTS_NAME_FP16 = "diffusion_pytorch_model.fp16.safetensors"
WEIGHTS_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
CONFIG_NAME = "config.json"

_FLOAT_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
_LIST_LIMIT = 50    # keys per kind listed in the verbose details


class CheckpointMismatchError(UserError, ValueError):
    """A checkpoint folder does not match the module its config describes (or cannot be read).

    Attributes: ``folder``, ``missing`` (keys the module needs but the file lacks), ``unexpected``
    (keys in the file the module does not have), ``shape_mismatched`` (``(key, file_shape,
    module_shape)``), ``bad_dtype`` (``(key, dtype)``), ``reason`` (free text for other problems).
    """

    def __init__(self, folder, *, missing: Sequence[str] = (), unexpected: Sequence[str] = (),
                 shape_mismatched: Sequence[tuple] = (), bad_dtype: Sequence[tuple] = (),
                 reason: str | None = None, what: str = "module"):
        self.folder = str(folder)
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.shape_mismatched = list(shape_mismatched)
        self.bad_dtype = list(bad_dtype)
        self.reason = reason
        self.what = what
        keyed = bool(self.missing or self.unexpected or self.shape_mismatched or self.bad_dtype)
        super().__init__(self._format(), hint=(KEYS_HINT if keyed else FILE_HINT))
        self.details = tuple(self._detail_lines())
        for line in self.details:           # shown under -v (the traceback), never in the one-line message
            self.add_note(line)

    def _format(self) -> str:
        """One line: the folder, what is wrong, the counts and the first few keys of each kind."""
        if self.reason:
            return f"checkpoint folder {self.folder!r}: {_first_line(self.reason)}"
        parts = []
        for label, items, fmt in self._sections():
            if items:
                shown = ", ".join(fmt(x) for x in items[:_SHOWN])
                parts.append(f"{len(items)} {label} ({shown}{', …' if len(items) > _SHOWN else ''})")
        return (f"checkpoint folder {self.folder!r} does not match the {self.what} its config.json describes"
                + (f": {'; '.join(parts)}" if parts else ""))

    def _sections(self):
        return (("missing keys", self.missing, str), ("unexpected keys", self.unexpected, str),
                ("shape-mismatched keys", self.shape_mismatched,
                 lambda x: f"{x[0]}: file {tuple(x[1])} vs module {tuple(x[2])}"),
                ("non-floating-point tensors", self.bad_dtype, lambda x: f"{x[0]}: {x[1]}"))

    def _detail_lines(self):
        """Every offending key (the verbose details: ``-v``, the server log)."""
        if self.reason and "\n" in self.reason.strip():
            yield from (ln.strip() for ln in self.reason.strip().splitlines()[1:] if ln.strip())
        for label, items, fmt in self._sections():
            for x in items[:_LIST_LIMIT]:
                yield f"{label[:-1] if label.endswith('s') else label}: {fmt(x)}"
            if len(items) > _LIST_LIMIT:
                yield f"… and {len(items) - _LIST_LIMIT} more {label}"


KEYS_HINT = ("the folder's config.json describes another model than its weights (wrong model type, an edited "
             "config.json or a damaged download): re-download the checkpoint or restore its config.json; rerun "
             "with -v for every key")
FILE_HINT = "re-download the checkpoint (or restore the named file)"
_SHOWN = 2


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[0] if lines else "unreadable"


class CheckpointFileMissingError(CheckpointMismatchError, FileNotFoundError):
    """A required file (config.json or the weights) is absent from a checkpoint folder."""

    def __init__(self, folder, path, what: str = "file"):
        self.path = str(path)
        super().__init__(folder, reason=f"{what} {self.path!r} is missing")


# ---------------------------------------------------------------------- configs
def read_config(path, *, allow_empty: bool = False) -> dict:
    """Read a JSON config.  ``allow_empty``: a 0-byte/blank file (the released root config.json) gives ``{}``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointFileMissingError(path.parent, path, "config")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        if allow_empty:
            return {}
        raise CheckpointMismatchError(path.parent, reason=f"{path.name} is empty")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CheckpointMismatchError(path.parent, reason=f"{path.name} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointMismatchError(path.parent, reason=f"{path.name} is not a JSON object")
    return data


def read_root_config(root) -> dict:
    """The checkpoint root's config.json (0 bytes in the released repositories) -> dict, ``{}`` if absent/empty."""
    path = Path(root) / CONFIG_NAME
    return read_config(path, allow_empty=True) if path.is_file() else {}


# ---------------------------------------------------------------------- safetensors headers
def read_safetensors_header(path) -> dict[str, dict]:
    """Only the header of a safetensors file (the ``safetensors`` library's ``safe_open``, which checks
    that every tensor lies inside the file) -> ``{name: {"dtype": str, "shape": [..]}}``."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            slices = {key: fh.get_slice(key) for key in fh.keys()}
            return {key: {"dtype": sl.get_dtype(), "shape": list(sl.get_shape())} for key, sl in slices.items()}
    except SafetensorError as exc:
        if "incomplete metadata" in str(exc) or "not fully covered" in str(exc):
            reason = f"{path.name} is truncated or corrupt (a tensor lies outside the file: {exc})"
        else:
            reason = f"{path.name} is not a readable safetensors file ({exc})"
        raise CheckpointMismatchError(path.parent, reason=reason) from None


def find_weight_files(folder) -> list[Path]:
    """The safetensors file(s) of a component folder (single file, fp16 variant, or sharded index)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointFileMissingError(folder, folder, "folder")
    for name in (WEIGHTS_NAME, WEIGHTS_NAME_FP16):
        if (folder / name).is_file():
            return [folder / name]
    index = folder / WEIGHTS_INDEX_NAME
    if index.is_file():
        data = read_config(index)
        shards = sorted(set((data.get("weight_map") or {}).values()))
        if not shards:
            raise CheckpointMismatchError(folder, reason=f"{index.name} has an empty weight_map")
        paths = [folder / s for s in shards]
        for p in paths:
            if not p.is_file():
                raise CheckpointFileMissingError(folder, p, "weights shard")
        if not isinstance(data.get("metadata"), dict):   # diffusers' sharded loading reads it
            raise CheckpointMismatchError(folder, reason=f"{index.name} has no \"metadata\" object (a Hugging Face "
                                                         "shard index has {\"metadata\": {\"total_size\": …}})")
        return paths
    raise CheckpointFileMissingError(folder, folder / WEIGHTS_NAME, "weights file")


def verify_header_against_module(folder, header: Mapping[str, Mapping], module: nn.Module, what: str = "module") -> None:
    """Raise :class:`CheckpointMismatchError` unless ``header`` has exactly the module's keys and shapes."""
    expected = OrderedDict((k, tuple(v.shape)) for k, v in module.state_dict().items())
    missing = [k for k in expected if k not in header]
    unexpected = sorted(k for k in header if k not in expected)
    mismatched = [(k, tuple(header[k]["shape"]), expected[k]) for k in expected
                  if k in header and tuple(header[k]["shape"]) != expected[k]]
    bad_dtype = [(k, header[k]["dtype"]) for k in expected if k in header and header[k]["dtype"] not in _FLOAT_DTYPES]
    if missing or unexpected or mismatched or bad_dtype:
        raise CheckpointMismatchError(folder, missing=missing, unexpected=unexpected, shape_mismatched=mismatched,
                                      bad_dtype=bad_dtype, what=what)


def verified_header(folder, module: nn.Module, what: str = "module") -> tuple[list[Path], dict]:
    """The weight files of ``folder`` and their merged header, verified against ``module`` (usually on
    ``meta``): :class:`CheckpointMismatchError` naming every missing/unexpected/mismatched key otherwise."""
    folder = Path(folder)
    files = find_weight_files(folder)
    header: dict[str, dict] = {}
    for f in files:
        for k, v in read_safetensors_header(f).items():
            if k in header:
                raise CheckpointMismatchError(folder, reason=f"tensor {k!r} appears in more than one shard")
            header[k] = v
    verify_header_against_module(folder, header, module, what=what)
    return files, header


def _from_pretrained(cls, folder: Path, files: list[Path], *, dtype, device, what: str) -> nn.Module:
    """diffusers' ``from_pretrained`` on a verified local folder: strict (any key it reports missing,
    unexpected or mismatched is an error), offline, cast to ``dtype``, then moved to ``device``."""
    variant = "fp16" if files[0].name == WEIGHTS_NAME_FP16 else None
    try:
        module, info = cls.from_pretrained(str(folder), torch_dtype=dtype, variant=variant, use_safetensors=True,
                                           low_cpu_mem_usage=True, local_files_only=True, output_loading_info=True)
    except Exception as exc:  # safetensors/diffusers raise their own error types for corrupt payloads
        raise CheckpointMismatchError(folder, reason=f"cannot read the weights ({type(exc).__name__}: {exc})") from exc
    if any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")):
        raise CheckpointMismatchError(folder, missing=info.get("missing_keys", ()),   # pragma: no cover - verified
                                      unexpected=info.get("unexpected_keys", ()),
                                      shape_mismatched=info.get("mismatched_keys", ()),
                                      reason="; ".join(info.get("error_msgs") or ()) or None, what=what)
    leftovers = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if leftovers:  # pragma: no cover - no module here has non-persistent buffers
        raise CheckpointMismatchError(folder, reason=f"tensors not materialised after loading: {leftovers[:_LIST_LIMIT]}")
    module.to(device=torch.device(device))
    module.requires_grad_(False)
    return module.eval()


def _load_component(folder, cls, builder: Callable, what: str, dtype, device) -> nn.Module:
    """Verify ``folder`` against the module its config.json builds (on ``meta``: no memory), then load it
    with diffusers' ``from_pretrained``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointFileMissingError(folder, folder, "component folder")
    config = read_config(folder / CONFIG_NAME)
    try:
        skeleton = builder(config, device="meta")
    except (TypeError, ValueError, NotImplementedError) as exc:
        raise CheckpointMismatchError(folder, reason=f"config.json cannot build a {what}: {exc}") from exc
    files, header = verified_header(folder, skeleton, what)
    del skeleton
    module = _from_pretrained(cls, folder, files, dtype=dtype, device=device, what=what)
    log.info("loaded %s from %s (%d tensors, %s, %s)", what, folder, len(header), str(dtype).replace("torch.", ""),
             device)
    return module


def load_unet(folder, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """Build a :class:`~engine.models.unet.DRUNet` from ``folder/config.json`` and load its weights (verified)."""
    from .unet import DRUNet, build_unet_from_config

    return _load_component(folder, DRUNet, build_unet_from_config, "DiffusionRenderer UNet", dtype, device)


def load_vae(folder, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """Build diffusers' ``AutoencoderKLTemporalDecoder`` from ``folder/config.json`` and load it (verified)."""
    from .vae import AutoencoderKLTemporalDecoder, build_vae_from_config

    return _load_component(folder, AutoencoderKLTemporalDecoder, build_vae_from_config, "AutoencoderKLTemporalDecoder",
                           dtype, device)


def load_env_encoder(folder, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """Build an :class:`~engine.models.env_encoder.EnvEncoder` from ``folder/config.json`` and load it (verified)."""
    from .env_encoder import EnvEncoder, build_env_encoder_from_config

    return _load_component(folder, EnvEncoder, build_env_encoder_from_config, "EnvEncoder", dtype, device)
