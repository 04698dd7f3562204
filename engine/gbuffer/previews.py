"""Display previews of a G-buffer set: 8-bit PNGs per pass and frame, an mp4 contact sheet.

Previews show each pass exactly as the models see it (engine.gbuffer.encodings): colour passes
sRGB-encoded, normals n·0.5+0.5, depth normalised grey with the clip's range (near black, far and
background white), roughness / metallic / alpha grey.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from .encodings import DepthRangeAccumulator, encode_pass
from .gbuffer_set import GBufferSet, open_gbuffer_set
from engine.contract.gbuffer_set import MANIFEST_NAME, frame_path, pass_pattern


def _set(gset) -> GBufferSet:
    return gset if isinstance(gset, GBufferSet) else open_gbuffer_set(gset)


def clip_depth_range(gset: GBufferSet) -> tuple[float, float] | None:
    """The set's metric depth range: recorded in the manifest, else computed over the whole clip."""
    m = gset.manifest
    if (m.depth or {}).get("kind") != "metric" or "depth" not in m.passes:
        return None
    if m.depth_range is not None:
        return m.depth_range
    acc = DepthRangeAccumulator()
    for i, f in enumerate(gset.frame_numbers):
        alpha = gset.read(m.alpha, f) if m.alpha else None
        acc.add(gset.read("depth", f), alpha=alpha, clip_end=m.camera[i]["clip_end"] if m.camera else None)
    return acc.range() or (0.0, 1.0)


def display_frames(gset, name: str, *, depth_range=None) -> Iterator[np.ndarray]:
    """Frames of one pass, display-encoded: float32 (H, W, 3) in [0, 1], one at a time."""
    gset = _set(gset)
    m = gset.manifest
    entry = m.passes[name]
    enc = entry["encoding"]
    if enc.startswith("depth-") and depth_range is None:
        depth_range = clip_depth_range(gset)
    for f in gset.frame_numbers:
        kw = {}
        if enc.startswith("depth-"):
            kw = {"depth_range": depth_range, "background": gset.background(f),
                  "invert": bool((m.depth or {}).get("invert", False))}
        yield encode_pass(enc, gset.read(name, f)[None], **kw)[0]


def _update_manifest(gset: GBufferSet, key: str, value) -> None:
    gset.manifest.data[key] = value
    gset.manifest.save(gset.folder / MANIFEST_NAME)


def write_previews(gset, passes=None, *, update_manifest: bool = True) -> dict[str, list[Path]]:
    """Write `previews/<pass>/<pass>.####.png` for every pass (or `passes`); record the patterns in the
    manifest's `previews` (rewritten atomically) unless update_manifest=False. Returns the paths."""
    from engine.io.images import write_png

    gset = _set(gset)
    out: dict[str, list[Path]] = {}
    patterns = dict(gset.manifest.data.get("previews") or {})
    for name in passes or gset.passes:
        pattern = pass_pattern(name, "png", folder=f"previews/{name}")
        paths = []
        for f, img in zip(gset.frame_numbers, display_frames(gset, name)):
            path = gset.folder / frame_path(pattern, f)
            write_png(path, img)
            paths.append(path)
        out[name] = paths
        patterns[name] = pattern
    if update_manifest:
        _update_manifest(gset, "previews", patterns)
    return out


def _even(n: int) -> int:
    return n + (n % 2)


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    if tile.shape[0] < 24 or tile.shape[1] < 48:
        return tile
    im = Image.fromarray(np.round(np.clip(tile, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    draw.text((5, 5), text, fill=(0, 0, 0))
    draw.text((4, 4), text, fill=(255, 255, 255))
    return np.asarray(im, dtype=np.float32) / 255.0


def contact_sheet_passes(gset: GBufferSet, passes=None) -> list[str]:
    """[input, pass1, pass2, …]: the rgb (input) pass first when the set has one, alpha left out."""
    names = list(passes) if passes else [p for p in gset.passes if p != gset.manifest.alpha]
    return sorted(names, key=lambda p: p != "rgb")


def contact_sheet_frames(gset, passes=None, *, labels: bool = True) -> Iterator[np.ndarray]:
    """uint8 (H', W', 3) frames: the passes side by side, padded to even width and height (h264)."""
    gset = _set(gset)
    names = contact_sheet_passes(gset, passes)
    streams = [display_frames(gset, n) for n in names]
    w, h = gset.resolution
    W, H = _even(w * len(names)), _even(h)
    for tiles in zip(*streams):
        sheet = np.zeros((H, W, 3), np.float32)
        for i, (name, tile) in enumerate(zip(names, tiles)):
            sheet[:h, i * w:(i + 1) * w] = _label(tile, name) if labels else tile
        yield np.round(sheet * 255.0).astype(np.uint8)


def write_contact_sheet(gset, path=None, fps: float | None = None, *, passes=None, labels: bool = True,
                        quality=None, update_manifest: bool = True) -> Path:
    """mp4 of [input | pass1 | pass2 …] per frame (default `<set>/contact_sheet.mp4`, manifest fps).
    Width = (number of tiles)·W rounded up to even. Recorded as `contact_sheet` in the manifest when
    written inside the set folder."""
    from engine.io.video import write_mp4

    gset = _set(gset)
    path = Path(path) if path is not None else gset.folder / "contact_sheet.mp4"
    write_mp4(path, contact_sheet_frames(gset, passes, labels=labels), fps or gset.fps,
              **({} if quality is None else {"quality": quality}))
    if update_manifest:
        try:
            rel = path.resolve().relative_to(gset.folder.resolve())
        except ValueError:
            rel = None
        if rel is not None:
            _update_manifest(gset, "contact_sheet", rel.as_posix())
    return path


def write_pass_video(gset, name: str, path=None, fps: float | None = None, *, quality=None,
                     update_manifest: bool = True) -> Path:
    """mp4 of one pass, display-encoded (e.g. a relit set's `relit.mp4`); recorded under `videos`."""
    from engine.io.video import write_mp4

    gset = _set(gset)
    path = Path(path) if path is not None else gset.folder / f"{name}.mp4"
    w, h = gset.resolution

    def frames():
        for img in display_frames(gset, name):
            out = np.zeros((_even(h), _even(w), 3), np.uint8)
            out[:h, :w] = np.round(img * 255.0).astype(np.uint8)
            yield out

    write_mp4(path, frames(), fps or gset.fps, **({} if quality is None else {"quality": quality}))
    if update_manifest:
        try:
            rel = path.resolve().relative_to(gset.folder.resolve()).as_posix()
            _update_manifest(gset, "videos", {**(gset.manifest.data.get("videos") or {}), name: rel})
        except ValueError:
            pass
    return path


__all__ = ["clip_depth_range", "contact_sheet_frames", "contact_sheet_passes", "display_frames",
           "write_contact_sheet", "write_pass_video", "write_previews"]
