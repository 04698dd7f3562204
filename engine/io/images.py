"""Plain image files (8/16-bit PNG/JPEG/TIFF) as float arrays in [0, 1]: read one or several, list a
folder of them, write an 8-bit PNG (previews, demo frames)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from engine.atomic import atomic_write

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def read_image(path) -> np.ndarray:
    """An image file → float32 (H, W, 3) in [0, 1]. RGBA is composited over black (as the reference),
    greyscale is replicated to RGB, 16-bit images keep their precision."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float32) / 65535.0  # 16-bit PNG/TIFF
                arr = np.clip(arr, 0.0, 1.0)[..., None].repeat(3, axis=-1)
                return arr.astype(np.float32)
            if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
                rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
                return (rgba[..., :3] * rgba[..., 3:4]).astype(np.float32)
            return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path}: cannot read this image ({exc}); use PNG, JPEG or TIFF") from None


def read_frames(paths: Iterable) -> np.ndarray:
    """Several image files of one size → (F, H, W, 3) float32."""
    frames = [read_image(p) for p in paths]
    if not frames:
        raise ValueError("no frames to read")
    sizes = {f.shape for f in frames}
    if len(sizes) > 1:
        raise ValueError(f"frames differ in size: {sorted(sizes)}")
    return np.stack(frames)


def list_images(folder) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder of frames")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def write_png(path, image: np.ndarray) -> None:
    """float (H, W, 3|1) in [0, 1] → 8-bit PNG, written atomically (temp name + rename)."""
    from PIL import Image

    path = Path(path)
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    u8 = np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    atomic_write(path, lambda tmp: Image.fromarray(u8).save(tmp, format="PNG"))
