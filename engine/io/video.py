"""Video clips (mp4/mov/mkv/avi/webm) through the ffmpeg binary bundled with ``imageio-ffmpeg``.

* :func:`probe_video` — fps, size (after the rotation ffmpeg applies), codec, pixel format and a
  reliable frame count: the first video stream is decoded once and the frames counted with their
  timestamps (``-fps_mode passthrough``: every decoded frame once, none duplicated or dropped; each
  frame cropped to 2×2 before ``framecrc``, so the count costs nothing beyond the decode). The
  container's own packet list (a stream copy, no decode) is compared with what decoded: frames the
  container lists but the decoder could not produce while reporting errors are ``missing`` (0-based
  container indices) — footage is never silently shorter than it is. Results are cached per file
  (path, size, modification time).
* :class:`VideoClip` — the :class:`~engine.io.clip.Clip` interface. Frames are streamed from one
  ffmpeg process (``rgb24``, or ``rgb48le`` for >8-bit sources) and converted to float32 RGB in
  [0, 1]. Reading forwards (the usual chunked use) keeps streaming; a frame *before* the stream's
  position re-opens the decoder from the start and skips ahead (exact, never seeks by timestamp).
  ``frame_numbers`` are decode-order indices counted from ``first_number`` (0 by default; the inverse
  job numbers a video from its ``first_frame``, 1 unless told); ``frame_range=(first, last)`` is inclusive
  in those numbers; ``fps=`` resamples by frame selection (:func:`~engine.io.clip.select_frames`: nearest
  source frame in time, ``first + floor(k * source_fps / fps + 0.5)``). A video with frames that do not
  decode is refused (ValueError naming the frames, the fix and ffmpeg's message) unless
  ``allow_missing_frames=True``: then frames keep their container numbers, the lost ones are left out and
  listed in ``clip.missing_frames`` (and ``clip.warnings``).
* :func:`write_mp4` — H.264 (libx264) ``yuv420p`` MP4 written atomically (temporary file + rename);
  odd sizes are padded to even by repeating the last row/column.
"""
from __future__ import annotations

import os
import re
import bisect
import subprocess
import tempfile
import threading
import uuid
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import numpy as np

from .clip import VIDEO_SUFFIXES, Clip, select_frames

__all__ = ["VideoInfo", "VideoClip", "probe_video", "open_video", "write_mp4", "VIDEO_SUFFIXES", "frame_list"]


def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class VideoInfo:
    path: str
    fps: float
    size: tuple[int, int]  # (W, H) of the decoded frames
    frame_count: int
    codec: str
    pix_fmt: str
    duration: float  # container duration in seconds (0 when unknown)
    container_frames: int = 0   # frames (packets) the container lists for the stream
    missing: tuple = ()         # 0-based container indices of frames that did not decode
    decode_errors: str = ""     # the tail of ffmpeg's error messages while decoding ("" when clean)

    @property
    def high_bit_depth(self) -> bool:
        return bool(re.search(r"(9|10|12|14|16)(le|be)$|48|64|f(16|32)", self.pix_fmt))


def _tail(text: str, n: int = 3) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) or "no message"


_FRAME_LINE = re.compile(r"^\s*0,\s*(-?\d+),\s*(-?\d+|NOPTS),\s*(\d+),\s*(\d+),\s*\w+(?:,\s*F=0x([0-9a-fA-F]+))?")
_probe_cache: dict = {}
_probe_lock = threading.Lock()


def _timestamps(text: str) -> list:
    """Times (Fractions of a second) of the frames of a ``framecrc`` listing; packets flagged discard
    (edit-list leaders) are left out. None where a frame has no timestamp."""
    m = re.search(r"^#tb 0: (\d+)/(\d+)", text, re.M)
    tb = Fraction(int(m.group(1)), int(m.group(2))) if m else None
    out = []
    for line in text.splitlines():
        f = _FRAME_LINE.match(line)
        if not f:
            continue
        if f.group(5) and int(f.group(5), 16) & 0x4:      # AV_PKT_FLAG_DISCARD
            continue
        pts = f.group(2)
        out.append(None if tb is None or pts == "NOPTS" else int(pts) * tb)
    return out


def _missing_indices(packets: list, decoded: list) -> tuple:
    """Container indices (presentation order) of packets no decoded frame matches in time (within half
    the smallest frame spacing); () when timestamps are unknown."""
    if not packets or any(t is None for t in packets + decoded):
        return ()
    packets, decoded = sorted(packets), sorted(decoded)
    steps = [b - a for a, b in zip(packets, packets[1:]) if b > a]
    tol = min(steps) / 2 if steps else Fraction(1, 1000)
    missing = []
    for i, t in enumerate(packets):
        k = bisect.bisect_left(decoded, t - tol)
        if not (k < len(decoded) and decoded[k] <= t + tol):
            missing.append(i)
    return tuple(missing)


def _section(err: str, title: str) -> str:
    """The lines of ffmpeg's log after ``title`` ("Output #0") up to the next "Output #" heading."""
    _, _, rest = err.partition(title)
    return rest.split("Output #", 1)[0]


def frame_list(indices) -> str:
    """[4, 5, 6, 9] → '4–6, 9' (runs of consecutive numbers shown as ranges)."""
    out, run = [], []
    for i in list(indices) + [None]:
        if run and (i is None or i != run[-1] + 1):
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}–{run[-1]}")
            run = []
        if i is not None:
            run.append(i)
    return ", ".join(out)


def probe_video(path) -> VideoInfo:
    """Metadata, exact frame count and lost frames of a video file (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such video file")
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, not a video file")
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _probe_lock:
        if key in _probe_cache:
            return _probe_cache[key]
    info = _probe(path)
    with _probe_lock:
        _probe_cache[key] = info
    return info


def _probe(path: Path) -> VideoInfo:
    # output #0: one frame to a null sink (its stream line has the size after ffmpeg's rotation);
    # output #1: every decoded frame, cropped to 2x2, listed with its timestamp
    cmd = [_ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "level+info", "-i", str(path), "-map", "0:v:0",
           "-frames:v", "1", "-f", "null", "-", "-map", "0:v:0", "-fps_mode", "passthrough", "-an", "-sn",
           "-vf", "crop=2:2:0:0", "-f", "framecrc", "pipe:1"]
    proc = subprocess.run(cmd, capture_output=True)
    err = proc.stderr.decode(errors="replace")
    m_in = re.search(r"Input #0, ([^,]+(?:,[^,]+)*?), from", err)
    if not m_in:
        raise ValueError(f"{path}: not a readable video ({_tail(_strip_levels(err), 1)})")
    fmt = m_in.group(1)
    if fmt.endswith("_pipe") or fmt.startswith("image2"):
        raise ValueError(f"{path}: is a still image ({fmt}), not a video; use a folder of frames")
    in_part = err.partition("Output #")[0]
    vin = re.search(r"Stream #0:\d+.*?: Video: (.*)", in_part)
    vout = re.search(r"Stream #0:\d+.*?: Video: (.*)", _section(err, "Output #0"))
    if not vin or "matches no streams" in err:
        raise ValueError(f"{path}: has no video stream")
    decoded = _timestamps(proc.stdout.decode(errors="replace"))
    count = len(decoded)
    if count == 0:
        raise ValueError(f"{path}: video has zero (decodable) frames")
    fields = [f.strip() for f in re.split(r",\s*(?![^()]*\))", vin.group(1))]
    codec = fields[0].split()[0]
    pix_fmt = re.match(r"[a-z0-9_]+", fields[1]).group(0) if len(fields) > 1 else "?"
    size = None
    for f in [x.strip() for x in re.split(r",\s*(?![^()]*\))", (vout or vin).group(1))]:
        m = re.match(r"(\d+)x(\d+)\b", f)
        if m:
            size = (int(m.group(1)), int(m.group(2)))
            break
    m_fps = re.search(r"([\d.]+)\s*fps", vin.group(1)) or re.search(r"([\d.]+)k?\s*tbr", vin.group(1))
    fps = float(m_fps.group(1)) if m_fps else 0.0
    m_dur = re.search(r"Duration: (\d+):(\d+):([\d.]+)", err)
    duration = int(m_dur.group(1)) * 3600 + int(m_dur.group(2)) * 60 + float(m_dur.group(3)) if m_dur else 0.0
    if size is None:
        raise ValueError(f"{path}: cannot tell the video's frame size")
    if fps <= 0:
        fps = count / duration if duration > 0 else 24.0
    errors = [ln for ln in err.splitlines() if "[error]" in ln or "[fatal]" in ln]
    packets, missing = _packets(path), ()
    if len(packets) > count and errors:            # frames the container has but the decoder lost
        missing = _missing_indices(packets, decoded)
    return VideoInfo(str(path), fps, size, count, codec, pix_fmt, duration, container_frames=len(packets) or count,
                     missing=missing, decode_errors=_tail(_strip_levels("\n".join(errors)), 1) if errors else "")


def _strip_levels(text: str) -> str:
    """ffmpeg's log without its ``[h264 @ 0x…]`` and ``[error]`` prefixes."""
    return re.sub(r"\[[^\]]*@ 0x[0-9a-f]+\]\s*|\[(?:info|warning|error|fatal|verbose)\]\s*", "", text)


def _packets(path: Path) -> list:
    """Presentation times of the packets the container lists for the first video stream (a stream copy:
    nothing is decoded)."""
    cmd = [_ffmpeg(), "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "framecrc",
           "pipe:1"]
    proc = subprocess.run(cmd, capture_output=True)
    return _timestamps(proc.stdout.decode(errors="replace"))


class VideoClip(Clip):
    """A video file as a lazily streamed :class:`~engine.io.clip.Clip`."""

    def __init__(self, path, *, frame_range=None, fps: float | None = None, source_fps: float | None = None,
                 first_number: int = 0, allow_missing_frames: bool = False):
        super().__init__()
        self.path = Path(path)
        if self.path.suffix.lower() not in VIDEO_SUFFIXES and self.path.exists():
            raise ValueError(f"{self.path}: not a video file (use {', '.join(VIDEO_SUFFIXES)})")
        self.info = probe_video(self.path)
        src_fps = float(source_fps or self.info.fps)
        first_number = int(first_number)
        lost = set(self.info.missing)
        total = self.info.frame_count + len(lost)          # frames by the container's numbering
        chosen = select_frames(total, source_fps=src_fps, fps=fps, frame_range=frame_range,
                               first_number=first_number, what=str(self.path))
        self.missing_frames = sorted({first_number + c for c in chosen if c in lost})
        self.warnings = []
        if self.missing_frames:
            self._refuse_or_warn(allow_missing_frames, len(set(chosen)))
        decoded = [c for c in range(total) if c not in lost]      # stream index → container index
        stream_index = {c: k for k, c in enumerate(decoded)}
        self._positions = [stream_index[c] for c in chosen if c not in lost]
        self.frame_numbers = [first_number + c for c in chosen if c not in lost]
        self.fps = float(fps or src_fps)
        self.fps_origin = "given" if (fps or source_fps) else "video"
        self.size = self.info.size
        self.is_linear = False
        self._deep = self.info.high_bit_depth
        self._proc = None
        self._pos = 0  # source index of the next frame the running decoder yields
        self._last: tuple[int, np.ndarray] | None = None
        if not self.frame_numbers:
            raise ValueError(f"{self.path}: none of the selected frames can be decoded")
        gaps = f", {len(self.missing_frames)} lost" if self.missing_frames else ""
        self.source = (f"video {self.path} ({self.info.codec} {self.info.pix_fmt}, {self.size[0]}x{self.size[1]}, "
                       f"{self.info.fps:g} fps, {self.info.container_frames} frames{gaps}; using {len(self)} frames "
                       f"{self.frame_numbers[0]}..{self.frame_numbers[-1]} at {self.fps:g} fps)")

    def _refuse_or_warn(self, allow: bool, selected: int) -> None:
        lost = f"frame{'s' if len(self.missing_frames) > 1 else ''} {frame_list(self.missing_frames)}"
        what = (f"{len(self.missing_frames)} of the {selected} frames used ({lost}) cannot be decoded "
                f"(ffmpeg: {self.info.decode_errors or 'no message'})")
        if not allow:
            raise ValueError(f"{self.path}: {what}; repair or re-export the video, or allow missing frames "
                             "(--allow-missing-frames) to continue without them")
        self.warnings.append(f"{self.path.name}: {what}; continued without them (allow missing frames): the set has "
                             "gaps at those frame numbers")

    # -- decoding
    def _start(self) -> None:
        self.close()
        pix = "rgb48le" if self._deep else "rgb24"
        cmd = [_ffmpeg(), "-v", "error", "-nostdin", "-i", str(self.path), "-map", "0:v:0",
               "-fps_mode", "passthrough", "-an", "-sn", "-f", "rawvideo", "-pix_fmt", pix, "-"]
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL)
        self._pos = 0

    def _next_raw(self) -> bytes:
        w, h = self.size
        nbytes = w * h * 3 * (2 if self._deep else 1)
        data = self._proc.stdout.read(nbytes)
        if len(data) != nbytes:
            self._proc.wait()
            self._stderr.seek(0)
            msg = self._stderr.read().decode(errors="replace")
            self.close()
            raise ValueError(f"{self.path}: video ended after {self._pos} of {self.info.frame_count} frames"
                             f" ({_tail(msg, 1) if msg.strip() else 'truncated stream'})")
        self._pos += 1
        return data

    def _read(self, j: int) -> np.ndarray:
        target = self._positions[j]
        if self._last is not None and self._last[0] == target:
            return self._last[1].copy()
        if self._proc is None or target < self._pos:
            self._start()
        while self._pos < target:  # skip (decode and drop)
            self._next_raw()
        raw = self._next_raw()
        w, h = self.size
        if self._deep:
            img = np.frombuffer(raw, dtype="<u2").reshape(h, w, 3).astype(np.float32) / 65535.0
        else:
            img = np.frombuffer(raw, dtype=np.uint8).reshape(h, w, 3).astype(np.float32) / 255.0
        self._last = (target, img)
        return img.copy()

    def close(self) -> None:
        proc, self._proc = getattr(self, "_proc", None), None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()
            self._stderr.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def open_video(path, *, frame_range=None, fps: float | None = None, source_fps: float | None = None,
               first_number: int = 0, allow_missing_frames: bool = False) -> VideoClip:
    """A video file → :class:`VideoClip` (``open_clip`` does the same for any clip path)."""
    return VideoClip(path, frame_range=frame_range, fps=fps, source_fps=source_fps, first_number=first_number,
                     allow_missing_frames=allow_missing_frames)


def _to_rgb8(frame, i: int, path) -> np.ndarray:
    a = np.asarray(frame)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{path}: frame {i} must be (H, W, 3) (or 1/4 channels), got shape {a.shape}")
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    elif a.dtype == np.uint16:
        a = a.astype(np.float32) / 65535.0
    else:
        a = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    if a.shape[-1] == 4:  # over black
        a = a[..., :3] * a[..., 3:4]
    elif a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)


def write_mp4(path, frames: Iterable, fps: float, *, quality: float = 8.0) -> int:
    """Encode frames ((H, W, 3) float in [0, 1], or uint8/uint16) as an H.264 ``yuv420p`` MP4.

    ``quality`` 1..10 maps to x264 ``crf = round(51 * (1 - quality / 10))``, at least 1 (8 → crf 10).
    Odd widths/heights are padded to even by repeating the last column/row. The file appears under
    its final name only when complete. Returns the number of frames written."""
    path = Path(path)
    if not (fps and fps > 0):
        raise ValueError(f"{path}: fps must be positive, got {fps}")
    if not 1 <= quality <= 10:
        raise ValueError(f"{path}: quality must be within 1..10, got {quality}")
    crf = max(1, round(51 * (1 - quality / 10)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp.mp4"))  # same folder, umask applies
    proc, count, size = None, 0, None
    errlog = tempfile.TemporaryFile()
    try:
        for i, frame in enumerate(frames):
            rgb = _to_rgb8(frame, i, path)
            h, w = rgb.shape[:2]
            if size is None:
                size = (w, h)
                ew, eh = w + w % 2, h + h % 2
                cmd = [_ffmpeg(), "-y", "-v", "error", "-nostdin", "-f", "rawvideo", "-pix_fmt", "rgb24",
                       "-s", f"{ew}x{eh}", "-r", f"{fps}", "-i", "-", "-an", "-c:v", "libx264",
                       "-pix_fmt", "yuv420p", "-crf", str(crf), "-movflags", "+faststart", "-f", "mp4", tmp]
                proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errlog)
            elif (w, h) != size:
                raise ValueError(f"{path}: frame {i} is {w}x{h}, the first frame was {size[0]}x{size[1]}")
            if w % 2 or h % 2:
                rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            try:
                proc.stdin.write(np.ascontiguousarray(rgb).tobytes())
            except BrokenPipeError:
                break  # ffmpeg died; its message is reported below
            count += 1
        if proc is None:
            raise ValueError(f"{path}: no frames to write")
        proc.stdin.close()
        rc = proc.wait()
        if rc != 0:
            errlog.seek(0)
            msg = _tail(errlog.read().decode(errors="replace"))
            raise RuntimeError(f"{path}: ffmpeg failed to encode the video ({msg})")
        os.replace(tmp, path)
        return count
    finally:
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            try:
                proc.stdin.close()
            except OSError:  # broken pipe on flush: ffmpeg is gone already
                pass
        errlog.close()
        if os.path.exists(tmp):
            os.unlink(tmp)
