"""Image frames, image sequences and the lazy :class:`Clip` interface shared with videos.

* :func:`list_frames` — the frames of a folder (png/jpg/jpeg/exr/tif/tiff/dpx), ordered by the frame
  number parsed from each name (the last run of digits: ``shot_0012.png`` → 12, ``0012.basecolor.png``
  → 12), so ``frame_9`` comes before ``frame_10``. Hidden files are skipped. A folder holding two
  naming patterns (``a_####.png`` and ``b_####.png``, or png and exr) is an error.
* :func:`pattern_files` — a sequence named by a pattern, ``folder/shot_####.png`` (Blender's notation:
  the ``#`` run stands for the frame number, at least that many digits) → its files in frame order. Every
  function taking a clip path accepts such a pattern, so one sequence can be picked from a folder that
  holds several.
* :func:`read_frame` — one file → float32 ``(H, W, 3)``: DPX, TIFF and 16-bit PNG of any bit depth
  through OpenImageIO (:mod:`engine.io.oiio_frames`; without it TIFF and 16-bit PNG fall back to Pillow and
  ONE bundled ffmpeg per clip, :mod:`engine.io.deep_frames`, and DPX is refused saying what to install),
  8-bit PNG and JPEG through Pillow, EXR through OpenEXR (``R,G,B`` or ``Y``; a Blender multilayer EXR
  gives its Combined pass). RGBA is composited over black (EXR colour is already premultiplied, so its
  alpha is ignored), greyscale is replicated to RGB. Integer images are scaled to [0, 1] (10-bit DPX code
  ``c`` → ``c / 1023``); float EXR/TIFF/DPX values are NOT clipped (``is_linear=True``). Colour spaces are
  not applied here: the inverse job converts (``engine.colour``); a clip exposes ``is_linear`` and, for
  DPX, the header's ``transfer`` for the ``auto`` rule.
  NaN becomes 0 and ±Inf the largest/smallest finite value of the frame, with a warning and a count.
* :func:`open_clip` — a folder of frames or a video file → :class:`Clip` (frames read lazily).
* :func:`find_clips` — a file, a folder of frames, or a folder of clips (a batch).

The :class:`~engine.io.clip.Clip` interface and the frame-selection rule (``frame_range``, ``fps``)
live in :mod:`engine.io.clip`, shared with :mod:`engine.io.video`.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from .clip import DEFAULT_FPS, FRAME_SUFFIXES, VIDEO_SUFFIXES, Clip, select_frames
from . import oiio_frames
from .deep_frames import DeepStream, is_deep, is_deep_image, png_header, read_deep_rgba
from .exr import read_exr

__all__ = ["ImageSequenceClip", "list_frames", "frame_number", "read_frame", "open_clip", "find_clips",
           "pattern_files", "is_pattern",
           # re-exported from .clip
           "FRAME_SUFFIXES", "VIDEO_SUFFIXES", "DEFAULT_FPS", "Clip", "select_frames"]

_DIGITS = re.compile(r"(\d+)(?!.*\d)")
_HASHES = re.compile(r"#+")


def is_pattern(path) -> bool:
    """True for a sequence pattern path: its file name holds a ``#`` run (``shot_####.png``)."""
    return bool(_HASHES.search(Path(path).name))


def pattern_files(path) -> list[Path]:
    """The files of the sequence ``folder/name_####.ext`` (last ``#`` run = frame number, at least as many
    digits as ``#``), ordered by number. Raises naming the pattern when its folder or files are missing."""
    path = Path(path)
    runs = list(_HASHES.finditer(path.name))
    if not runs:
        raise ValueError(f"{path}: not a sequence pattern (put a '#' run where the frame number goes)")
    m = runs[-1]
    rx = re.compile(re.escape(path.name[:m.start()]) + r"(\d{%d,})" % len(m.group()) +
                    re.escape(path.name[m.end():]) + "$", re.IGNORECASE)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: no such folder {path.parent}")
    found = []
    for p in path.parent.iterdir():
        mm = rx.match(p.name)
        if mm and p.is_file():
            found.append((int(mm.group(1)), p))
    if not found:
        raise FileNotFoundError(f"{path}: no files match this sequence pattern in {path.parent}")
    found.sort()
    numbers = [n for n, _ in found]
    if len(set(numbers)) != len(numbers):
        dup = sorted({n for n in numbers if numbers.count(n) > 1})
        raise ValueError(f"{path}: frame numbers appear twice ({dup[:5]}), e.g. 'f_9.png' and 'f_009.png'")
    return [p for _, p in found]


# --------------------------------------------------------------------------- listing
def frame_number(path) -> int | None:
    """The last run of digits in the file's stem (``None`` when it has none)."""
    m = _DIGITS.search(Path(path).stem)
    return int(m.group(1)) if m else None


def _pattern(path: Path) -> str:
    stem = path.stem
    m = _DIGITS.search(stem)
    if m:
        stem = stem[:m.start()] + "#" + stem[m.end():]
    return stem + path.suffix.lower().replace(".jpeg", ".jpg").replace(".tiff", ".tif")


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _frame_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in FRAME_SUFFIXES]


def list_frames(folder) -> list[Path]:
    """The frame files of ``folder`` in frame order (see the module docstring)."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder of frames")
    files = _frame_files(folder)
    patterns: dict[str, int] = {}
    for p in files:
        patterns[_pattern(p)] = patterns.get(_pattern(p), 0) + 1
    if len(patterns) > 1:
        desc = ", ".join(f"{k} ({v} files)" for k, v in sorted(patterns.items()))
        raise ValueError(f"{folder}: holds several image sequences ({desc}); put each in its own folder")
    files.sort(key=lambda p: (frame_number(p) if frame_number(p) is not None else -1, _natural_key(p.name)))
    numbers = [frame_number(p) for p in files]
    if None not in numbers and len(set(numbers)) != len(numbers):
        dup = sorted({n for n in numbers if numbers.count(n) > 1})
        raise ValueError(f"{folder}: frame numbers appear twice ({dup[:5]}), e.g. 'f_9.png' and 'f_009.png'")
    return files


# --------------------------------------------------------------------------- one frame
def _replace_nonfinite(img: np.ndarray, path) -> tuple[np.ndarray, int]:
    bad = ~np.isfinite(img)
    n = int(bad.sum())
    if n:
        finite = img[~bad]
        hi = float(finite.max()) if finite.size else 0.0
        lo = float(finite.min()) if finite.size else 0.0
        img = np.where(np.isnan(img), 0.0, np.where(np.isposinf(img), hi, np.where(np.isneginf(img), lo, img)))
        img = img.astype(np.float32)
        warnings.warn(f"{path}: replaced {n} non-finite value(s) (NaN → 0, ±Inf → largest/smallest finite)",
                      RuntimeWarning, stacklevel=3)
    return img, n


def _exr_rgb(path: Path) -> np.ndarray:
    chans = read_exr(path)
    for keys in (("R", "G", "B"),):
        if all(k in chans for k in keys):
            return np.stack([chans[k] for k in keys], axis=-1)
    if "Y" in chans:
        return np.repeat(chans["Y"][..., None], 3, axis=-1)
    from .blender_exr import read_blender_passes

    passes = read_blender_passes(path)
    for name in ("combined", "composite"):
        if name in passes and passes[name].shape[-1] >= 3:
            return passes[name][..., :3]
    layers = sorted({n.rpartition(".")[0] for n in chans})
    raise ValueError(f"{path}: EXR has no R,G,B or Y channels nor a Combined pass (layers: {', '.join(layers)})")


def _pillow_frame(path: Path) -> tuple[np.ndarray, bool]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            deep = is_deep(path, im)
            if deep:
                rgba = read_deep_rgba(path, im.size)
                return rgba[..., :3] * rgba[..., 3:4], False
            im.load()
            mode = im.mode
            if mode == "F":  # 32-bit float greyscale TIFF: linear, not clipped
                arr = np.asarray(im, dtype=np.float32)
                return np.repeat(arr[..., None], 3, axis=-1), True
            if mode.startswith("I"):  # 16-bit greyscale (I;16*), or 32-bit int holding 16-bit data
                arr = np.asarray(im).astype(np.float32) / 65535.0
                return np.repeat(np.clip(arr, 0.0, 1.0)[..., None], 3, axis=-1), False
            if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
                rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
                return rgba[..., :3] * rgba[..., 3:4], False
            return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0, False
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"{path}: cannot read this image ({exc})") from None


def _through_oiio(path: Path) -> bool:
    """DPX always; TIFF and 16-bit PNG when OpenImageIO is installed (Pillow would truncate them)."""
    suffix = path.suffix.lower()
    if suffix == ".dpx":
        return True
    if not oiio_frames.AVAILABLE:
        return False
    if suffix in (".tif", ".tiff"):
        return True
    if suffix == ".png":
        hdr = png_header(path)
        return hdr is not None and hdr[0] == 16
    return False


def read_frame(path, *, info: bool = False):
    """One frame file → float32 ``(H, W, 3)`` (see the module docstring).

    With ``info=True`` returns ``(image, {"is_linear": bool, "nonfinite": int})``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such image file")
    suffix = path.suffix.lower()
    if suffix not in FRAME_SUFFIXES:
        raise ValueError(f"{path}: not a frame file (use {', '.join(FRAME_SUFFIXES)})")
    if suffix == ".exr":
        img, linear = _exr_rgb(path), True
    elif _through_oiio(path):
        img, linear = oiio_frames.read_rgb(path)
    else:
        img, linear = _pillow_frame(path)
    img = np.ascontiguousarray(img, dtype=np.float32)
    img, n = _replace_nonfinite(img, path) if linear else (img, 0)
    return (img, {"is_linear": linear, "nonfinite": n}) if info else img


def _frame_size(path: Path) -> tuple[int, int]:
    if path.suffix.lower() == ".exr":
        from .exr import read_exr_header

        h = read_exr_header(path)
        return h["width"], h["height"]
    if _through_oiio(path):
        return oiio_frames.file_info(path)["size"]
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path}: cannot read this image ({exc})") from None


class ImageSequenceClip(Clip):
    """A folder of frames (or one image file) as a :class:`Clip`."""

    def __init__(self, path, *, frame_range=None, fps: float | None = None, source_fps: float | None = None,
                 first_number: int | None = None):
        super().__init__()
        self.path = Path(path)
        if is_pattern(self.path) and not self.path.exists():
            files = pattern_files(self.path)
        else:
            files = [self.path] if self.path.is_file() else list_frames(self.path)
        if not files:
            hint = ""
            if any(p.is_dir() or p.suffix.lower() in VIDEO_SUFFIXES for p in self.path.iterdir()):
                hint = "; it holds clips (sub-folders or videos): open them one by one, see find_clips()"
            raise ValueError(f"{self.path}: no frames ({', '.join(FRAME_SUFFIXES)}) in this folder{hint}")
        if self.path.is_file() and self.path.suffix.lower() not in FRAME_SUFFIXES:
            raise ValueError(f"{self.path}: not a frame file (use {', '.join(FRAME_SUFFIXES)})")
        numbers = [frame_number(p) for p in files]
        if None in numbers:
            numbers = list(range(len(files)))
        if first_number is not None:  # renumbered: the first file gets first_number, gaps are kept
            numbers = [n - numbers[0] + int(first_number) for n in numbers]
        keep = list(range(len(files)))
        if frame_range is not None:
            a, b = int(frame_range[0]), int(frame_range[1])
            if a > b or a < numbers[0] or b > numbers[-1]:
                raise ValueError(f"{self.path}: frame range ({a}, {b}) is outside the clip, which has "
                                 f"{len(files)} frames ({numbers[0]}..{numbers[-1]})")
            keep = [j for j, n in enumerate(numbers) if a <= n <= b]
            if not keep:
                raise ValueError(f"{self.path}: no frames numbered {a}..{b} (the sequence has a gap there)")
        # a sequence has no rate of its own: fps alone labels it, fps with source_fps resamples;
        # gaps in the numbering are ignored (the kept files count as consecutive frames)
        source_fps_given = source_fps
        source_fps = float(source_fps or fps or DEFAULT_FPS)
        picks = [keep[k] for k in select_frames(len(keep), source_fps=source_fps, fps=fps, what=str(self.path))]
        self.files = [files[j] for j in picks]
        self.frame_numbers = [numbers[j] for j in picks]
        self.fps = float(fps or source_fps)
        self.fps_origin = "given" if (fps or source_fps_given) else "default"
        self.is_linear = self.files[0].suffix.lower() == ".exr"
        self.transfer = None                 # a DPX header's transfer characteristic (the 'auto' colour space)
        if _through_oiio(self.files[0]):
            head = oiio_frames.file_info(self.files[0])
            self.size, self.transfer = tuple(head["size"]), head["transfer"]
            self.is_linear = head["is_float"]
        else:
            self.size = tuple(_frame_size(self.files[0]))
        self._deep = (DeepStream(self.files, self.size)
                      if not oiio_frames.AVAILABLE and is_deep_image(self.files[0]) else None)
        where = self.path if self.path.is_file() else f"{files[0].parent}/{files[0].name} .. {files[-1].name}"
        self.source = (f"image sequence {where} ({len(self)} of {len(files)} frames, numbers "
                       f"{self.frame_numbers[0]}..{self.frame_numbers[-1]}, {self.size[0]}x{self.size[1]}, "
                       f"{self.fps:g} fps{', linear' if self.is_linear else ''}"
                       f"{f', DPX transfer {self.transfer}' if self.transfer else ''})")

    def _read(self, j: int) -> np.ndarray:
        path = self.files[j]
        if self._deep is not None and is_deep_image(path):
            return self._deep.frame(j)
        img, meta = read_frame(path, info=True)
        if (img.shape[1], img.shape[0]) != self.size:
            raise ValueError(f"{path}: frame is {img.shape[1]}x{img.shape[0]}, the clip's first frame "
                             f"{self.files[0].name} is {self.size[0]}x{self.size[1]}")
        self._count(j, meta["nonfinite"])
        return img

    def close(self) -> None:
        if getattr(self, "_deep", None) is not None:
            self._deep.close()


def open_clip(path, *, frame_range: tuple[int, int] | None = None, fps: float | None = None,
              source_fps: float | None = None, first_number: int | None = None) -> Clip:
    """A video file, a folder of frames, a sequence pattern (``shot_####.png``) or one image → a lazily
    read :class:`Clip`.

    ``first_number``: the number of the first frame — a video's decode indices count from it (default
    0); a sequence is renumbered so that its first file gets it (default: its files' own numbers).
    ``frame_range=(first, last)``: inclusive, in those frame numbers. ``fps``: output rate, reached
    by frame selection (:func:`select_frames`) from the source rate. ``source_fps``: overrides a video's
    own rate; for an image sequence, which has none, it is the rate the frames were made at — ``fps``
    alone just labels a sequence (no frames dropped), ``fps`` with ``source_fps`` resamples it; neither
    gives 24 fps (``clip.fps_origin == "default"``)."""
    path = Path(path)
    if not path.exists() and not (is_pattern(path) and path.parent.is_dir()):
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        from .video import VideoClip

        return VideoClip(path, frame_range=frame_range, fps=fps, source_fps=source_fps,
                         first_number=0 if first_number is None else first_number)
    return ImageSequenceClip(path, frame_range=frame_range, fps=fps, source_fps=source_fps, first_number=first_number)


def find_clips(path) -> list[Path]:
    """The clips under ``path``: a file or a sequence pattern is one clip; a folder holding frames is one clip; otherwise a
    folder whose sub-folders hold frames and/or which holds video files is a batch (natural order)."""
    path = Path(path)
    if not path.exists() and is_pattern(path):
        pattern_files(path)  # raises naming the pattern when nothing matches
        return [path]
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() not in FRAME_SUFFIXES + VIDEO_SUFFIXES:
            raise ValueError(f"{path}: neither a video ({', '.join(VIDEO_SUFFIXES)}) nor an image "
                             f"({', '.join(FRAME_SUFFIXES)})")
        return [path]
    if _frame_files(path):
        return [path]
    clips = [p for p in path.iterdir() if not p.name.startswith(".") and (
        (p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES) or (p.is_dir() and _frame_files(p)))]
    if not clips:
        raise ValueError(f"{path}: no clips found (no frames, no videos, no sub-folders of frames)")
    return sorted(clips, key=lambda p: _natural_key(p.name))
