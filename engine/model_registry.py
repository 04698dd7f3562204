"""The published DiffusionRenderer checkpoints and which of their files inference needs.

Static data only (no I/O); engine.hub resolves, downloads and caches them.
"""
from __future__ import annotations

from dataclasses import dataclass

LICENCE_NOTICE = (
    "Note: the DiffusionRenderer weights are published by NVIDIA under the NVIDIA Source Code License "
    "(non-commercial: research or evaluation use only). They are fine-tuned from Stability AI's Stable "
    "Video Diffusion, whose Community License also applies. Downloading them means accepting those terms."
)


@dataclass(frozen=True)
class ModelSpec:
    """One published checkpoint (see MODEL_SPEC.md section 1 for the layouts)."""

    name: str
    repo_id: str
    revision: str | None  # pinned commit, or None: resolve `main` once and record it
    kind: str  # "inverse" or "forward"
    has_lora: bool | None  # None: unknown until downloaded
    description: str

    @property
    def folders(self) -> tuple[str, ...]:
        """Sub-folders inference reads (the only ones downloaded)."""
        folders = ["unet", "vae", "scheduler"]
        if self.kind == "forward":
            folders.append("env_encoder")
        if self.has_lora is not False:
            folders.append("lora")
        return tuple(folders)


PUBLISHED_MODELS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec("inverse", "nexuslrf/diffusion_renderer-inverse-svd", None, "inverse", False,
                  "RGB video -> G-buffers (basecolor, normal, depth, roughness, metallic)"),
        ModelSpec("forward", "nexuslrf/diffusion_renderer-forward-svd",
                  "bea8a656cff77215e70f1081070bd2b39dad004d", "forward", True,
                  "G-buffers + HDRI -> RGB video (synthetic + real data, real-data LoRA)"),
        ModelSpec("forward-objaverse", "nexuslrf/diffusion_renderer-forward-svd-objaverse", None, "forward",
                  None, "G-buffers + HDRI -> RGB video (synthetic Objaverse data only)"),
    )
}
ALL = "all"
REVISION_RECORD = "diffusion-renderer-revision.json"
# Belt and braces: allow_patterns already restricts to json/safetensors.
IGNORE_PATTERNS = ["env_decoder/*", "nrm_encoder/*", "asset/*", "*.bin", "*.ckpt", "*.pt", "*.pth",
                   "*.pkl", "*.pickle", "*.msgpack", "*.h5", "*.onnx", "*.npz"]


def allow_patterns(spec: ModelSpec) -> list[str]:
    """snapshot_download allow_patterns: model_index.json + json/safetensors of the needed folders."""
    return ["model_index.json"] + [f"{d}/*{ext}" for d in spec.folders for ext in (".json", ".safetensors")]
