"""LoRA loading for the DiffusionRenderer UNet via ``peft`` (MODEL_SPEC §4.7).

Accepted file layouts (safetensors), with or without the ``unet.`` prefix:

* diffusers' legacy format: ``<module>.lora.down.weight`` (A, ``(r, in)``) / ``<module>.lora.up.weight``
  (B, ``(out, r)``) -- the released ``lora/pytorch_lora_weights.safetensors``;
* PEFT format: ``<module>.lora_A.weight`` / ``<module>.lora_B.weight``;
* optional ``<module>.alpha`` scalars (kohya style).

Rank is taken per module from the B shape, alpha from ``.alpha`` if present (else alpha = rank, i.e.
base scaling 1).  The layers are injected unmerged with ``peft.inject_adapter_in_model`` and filled
with ``peft.set_peft_model_state_dict``; the runtime multiplier is the UNet's ``lora_scale`` argument.
Every problem raises :class:`LoraLoadError` (never a silent fallback to the base model).
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path

import torch
import torch.nn as nn

from engine.errors import UserError

log = logging.getLogger(__name__)

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"

_KEY_RE = re.compile(r"^(?P<module>.+?)\.(?P<kind>lora_A|lora_B|lora\.down|lora\.up|lora_down|lora_up)\.weight$")
_ALPHA_RE = re.compile(r"^(?P<module>.+?)\.alpha$")
_KIND = {"lora_A": "A", "lora.down": "A", "lora_down": "A", "lora_B": "B", "lora.up": "B", "lora_up": "B"}


class LoraLoadError(UserError, RuntimeError):
    """A LoRA file could not be applied; names the file and the reason."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot load LoRA {self.path!r}: {reason}")


def _preview(items, n=10) -> str:
    items = list(items)
    more = f" ... ({len(items)} in total)" if len(items) > n else ""
    return ", ".join(map(str, items[:n])) + more


def read_lora_file(path) -> tuple[Path, dict[str, torch.Tensor]]:
    path = Path(path)
    if path.is_dir():
        path = path / LORA_WEIGHT_NAME
    if not path.is_file():
        raise LoraLoadError(path, "file not found")
    try:
        from safetensors.torch import load_file

        return path, load_file(str(path), device="cpu")
    except Exception as exc:  # corrupt/unsupported file
        raise LoraLoadError(path, f"not a readable safetensors file ({type(exc).__name__}: {exc})") from exc


def parse_lora_state_dict(path, state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, dict]:
    """Group a LoRA state dict per target module -> ``{module: {"A": t, "B": t, "alpha": float|None}}``.

    Validates key names, prefixes, the existence/type of every target module and all shapes.
    """
    if not state:
        raise LoraLoadError(path, "the file holds no tensors")
    prefixes = {k.split(".", 1)[0] for k in state}
    if "unet" in prefixes and prefixes != {"unet"}:
        raise LoraLoadError(path, f"keys for components other than the UNet: prefixes {sorted(prefixes - {'unet'})}")
    strip = prefixes == {"unet"}

    modules: dict[str, dict] = {}
    bad = []
    for key, tensor in state.items():
        name = key[len("unet."):] if strip else key
        m = _KEY_RE.match(name)
        if m:
            entry = modules.setdefault(m["module"], {"A": None, "B": None, "alpha": None})
            slot = _KIND[m["kind"]]
            if entry[slot] is not None:
                raise LoraLoadError(path, f"two {slot} tensors for module {m['module']!r} (mixed key formats?)")
            entry[slot] = tensor
            continue
        m = _ALPHA_RE.match(name)
        if m:
            if tensor.numel() != 1:
                raise LoraLoadError(path, f"{key}: alpha must be a scalar, got shape {tuple(tensor.shape)}")
            modules.setdefault(m["module"], {"A": None, "B": None, "alpha": None})["alpha"] = float(tensor.item())
            continue
        bad.append(key)
    if bad:
        raise LoraLoadError(path, f"{len(bad)} keys are not LoRA A/B/alpha weights: {_preview(bad)}")

    named = dict(model.named_modules())
    problems = []
    for mod_name, entry in modules.items():
        if entry["A"] is None or entry["B"] is None:
            problems.append(f"{mod_name}: missing {'A (lora_A/lora.down)' if entry['A'] is None else 'B (lora_B/lora.up)'}")
            continue
        target = named.get(mod_name)
        if target is None:
            problems.append(f"{mod_name}: no such module in the UNet")
            continue
        a, b = entry["A"], entry["B"]
        r = b.shape[1] if b.ndim >= 2 else -1
        if isinstance(target, nn.Linear):
            ok = (a.ndim == 2 and b.ndim == 2 and a.shape == (r, target.in_features)
                  and b.shape == (target.out_features, r))
        elif isinstance(target, nn.Conv2d):
            ok = (a.ndim == 4 and b.ndim == 4 and a.shape[0] == r and a.shape[1] == target.in_channels
                  and b.shape[0] == target.out_channels)
        else:
            problems.append(f"{mod_name}: target is a {type(target).__name__}, only Linear/Conv2d are supported")
            continue
        if not ok:
            problems.append(f"{mod_name}: A {tuple(a.shape)} / B {tuple(b.shape)} do not fit {target}")
    if problems:
        raise LoraLoadError(path, f"{len(problems)} problems: {_preview(problems, 5)}")
    return modules


def load_lora(unet: nn.Module, path, adapter_name: str = "default") -> dict:
    """Inject the LoRA in ``path`` (file or folder holding ``pytorch_lora_weights.safetensors``) into ``unet``.

    Returns a summary ``{"path", "adapter_name", "modules", "ranks", "alphas"}``.  Raises
    :class:`LoraLoadError` on any problem; the model is left without this adapter in that case.
    """
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
    from peft.tuners.lora import LoraLayer

    path, state = read_lora_file(path)
    for m in unet.modules():
        if isinstance(m, LoraLayer) and adapter_name in m.lora_A:
            raise LoraLoadError(path, f"the UNet already has a LoRA adapter named {adapter_name!r}")
    modules = parse_lora_state_dict(path, state, unet)

    ranks = {name: int(e["B"].shape[1]) for name, e in modules.items()}
    alphas = {name: (e["alpha"] if e["alpha"] is not None else float(ranks[name])) for name, e in modules.items()}
    r_default = Counter(ranks.values()).most_common(1)[0][0]
    a_default = Counter(alphas.values()).most_common(1)[0][0]
    # peft matches pattern keys as regexes against the module path; escape the dots.
    config = LoraConfig(
        r=r_default,
        lora_alpha=a_default,
        target_modules=sorted(modules),
        rank_pattern={re.escape(n): r for n, r in ranks.items() if r != r_default},
        alpha_pattern={re.escape(n): a for n, a in alphas.items() if a != a_default},
        lora_dropout=0.0,
        bias="none",
        init_lora_weights=False,
    )
    peft_state = {}
    for name, e in modules.items():
        peft_state[f"{name}.lora_A.weight"] = e["A"]
        peft_state[f"{name}.lora_B.weight"] = e["B"]

    was_training = unet.training
    try:
        inject_adapter_in_model(config, unet, adapter_name=adapter_name)
        result = set_peft_model_state_dict(unet, peft_state, adapter_name=adapter_name)
        unexpected = list(getattr(result, "unexpected_keys", []) or [])
        if unexpected:
            raise LoraLoadError(path, f"{len(unexpected)} tensors were not consumed: {_preview(unexpected)}")
        # Check that every targeted layer now holds exactly the file's values and the intended scaling.
        named = dict(unet.named_modules())
        wrong = []
        for name, e in modules.items():
            layer = named.get(name)
            if not isinstance(layer, LoraLayer) or adapter_name not in layer.lora_A:
                wrong.append(f"{name}: not injected")
                continue
            a = layer.lora_A[adapter_name].weight
            b = layer.lora_B[adapter_name].weight
            if not (torch.equal(a.detach().cpu(), e["A"].to(a.dtype)) and torch.equal(b.detach().cpu(), e["B"].to(b.dtype))):
                wrong.append(f"{name}: weights differ after loading")
            expected_scaling = alphas[name] / ranks[name]
            if abs(layer.scaling[adapter_name] - expected_scaling) > 1e-12:
                wrong.append(f"{name}: scaling {layer.scaling[adapter_name]} != {expected_scaling}")
        injected = [n for n, m in unet.named_modules() if isinstance(m, LoraLayer) and adapter_name in m.lora_A]
        extra = sorted(set(injected) - set(modules))
        if extra:
            wrong.append(f"layers injected that the file does not name: {_preview(extra)}")
        if wrong:
            raise LoraLoadError(path, f"{len(wrong)} layers wrong after loading: {_preview(wrong, 5)}")
    except Exception as exc:
        _remove_adapter(unet, adapter_name)
        if isinstance(exc, LoraLoadError):
            raise
        raise LoraLoadError(path, f"peft could not inject the adapter ({type(exc).__name__}: {exc})") from exc
    finally:
        unet.train(was_training)

    for m in unet.modules():
        if isinstance(m, LoraLayer):
            for p in m.parameters():
                p.requires_grad_(False)
    summary = {"path": str(path), "adapter_name": adapter_name, "modules": len(modules),
               "ranks": sorted(set(ranks.values())), "alphas": sorted(set(alphas.values()))}
    log.info("loaded LoRA %s as %r: %d modules, ranks %s, alphas %s", path, adapter_name, len(modules),
             summary["ranks"], summary["alphas"])
    return summary


def _remove_adapter(unet: nn.Module, adapter_name: str) -> None:
    """Best-effort removal of a (partially) injected adapter; unwraps layers left without adapters."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(unet.named_modules()):
        if not isinstance(module, LoraLayer):
            continue
        if adapter_name in module.lora_A:
            try:
                module.delete_adapter(adapter_name)
            except Exception:  # pragma: no cover - last adapter of a layer cannot always be deleted
                for dct in (module.lora_A, module.lora_B, module.lora_dropout):
                    dct.pop(adapter_name, None)
                module.scaling.pop(adapter_name, None)
        if len(module.lora_A) == 0:
            parent_name, _, child = name.rpartition(".")
            parent = unet.get_submodule(parent_name) if parent_name else unet
            setattr(parent, child, module.get_base_layer())
    if not any(isinstance(m, LoraLayer) for m in unet.modules()) and hasattr(unet, "peft_config"):
        try:
            del unet.peft_config
        except AttributeError:  # pragma: no cover
            pass
