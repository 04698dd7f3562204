"""Lighting input of the forward renderer: an HDR environment map and how it is posed."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

HdrSource = Union[str, Path, np.ndarray, torch.Tensor]


@dataclass
class EnvLight:
    """An HDR environment map plus the reference's posing options (MODEL_SPEC §6).

    hdr: path to a .hdr/.exr lat-long map, or a linear (H, W, 3) array.
    rotate: turn the light once around the vertical axis over the clip (frame 0 == last frame, as the
        reference). elevation: camera elevation in degrees; ``elevation_convention="reference"`` keeps
        the original's inverted sign (positive tilts the view up), "correct" flips it.
    rotation: horizontal roll of the map in degrees (reference default 180). flip: mirror the map.
    strength: multiplier on the radiance. log_scale: range of the log encoding.
    cam_rotations: optional (F, 3, 3) camera-to-world rotations so the light stays fixed in the world
        while the camera moves (overrides the reference's fixed pose).
    """

    hdr: HdrSource
    rotate: bool = False
    elevation: float = 0.0
    elevation_convention: str = "reference"
    rotation: float = 180.0
    flip: bool = False
    strength: float = 1.0
    log_scale: float = 10000.0
    cam_rotations: Optional[np.ndarray] = None

    def load(self) -> np.ndarray:
        if isinstance(self.hdr, (str, Path)):
            from engine.envmap import load_envmap

            return load_envmap(self.hdr)
        return self.hdr

    def maps(self, num_frames: int, resolution, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(env_ldr, env_log), each (F, h, w, 3) in [0, 1]."""
        from engine.envmap import process_environment_map

        cam = None
        if self.cam_rotations is not None:
            cam = torch.as_tensor(np.asarray(self.cam_rotations), dtype=torch.float32)
            if cam.shape != (num_frames, 3, 3):
                raise ValueError(f"cam_rotations must be shaped ({num_frames}, 3, 3), got {tuple(cam.shape)}")
        out = process_environment_map(
            self.load(), resolution=tuple(resolution), num_frames=num_frames, rotate_envlight=self.rotate,
            elevation=self.elevation, elevation_convention=self.elevation_convention, env_rot=self.rotation,
            env_flip=self.flip, env_strength=self.strength, log_scale=self.log_scale, cam_rotations=cam,
            env_format=("proj",), device=device)
        return out["env_ldr"], out["env_log"]


def as_env_maps(light, num_frames: int, resolution, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Accept an EnvLight, a path/array (default posing) or a dict with precomputed env_ldr/env_log."""
    if isinstance(light, dict):
        try:
            ldr, logm = light["env_ldr"], light["env_log"]
        except KeyError:
            raise ValueError("a light given as a dict needs 'env_ldr' and 'env_log' arrays (F, h, w, 3)") from None
        ldr = torch.as_tensor(np.asarray(ldr) if not isinstance(ldr, torch.Tensor) else ldr, dtype=torch.float32)
        logm = torch.as_tensor(np.asarray(logm) if not isinstance(logm, torch.Tensor) else logm, dtype=torch.float32)
        if ldr.shape != logm.shape or ldr.ndim != 4 or ldr.shape[0] not in (1, num_frames):
            raise ValueError(f"env_ldr/env_log must both be (F={num_frames} or 1, h, w, 3); got "
                             f"{tuple(ldr.shape)} and {tuple(logm.shape)}")
        if ldr.shape[0] == 1:
            ldr, logm = ldr.expand(num_frames, -1, -1, -1), logm.expand(num_frames, -1, -1, -1)
        return ldr, logm
    if not isinstance(light, EnvLight):
        light = EnvLight(hdr=light)
    return light.maps(num_frames, resolution, device)
