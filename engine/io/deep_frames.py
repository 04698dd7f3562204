"""16-bit colour PNG/TIFF frames, which Pillow would truncate to 8 bits, decoded through the ffmpeg bundled
with ``imageio-ffmpeg``: :func:`read_deep_rgba` for one file, :class:`DeepStream` for a clip — ONE ffmpeg
process (concat demuxer → ``rgba64le``) streams all of a sequence's frames, never one process per frame."""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["DeepStream", "is_deep", "is_deep_image", "png_header", "read_deep_rgba"]


def png_header(path: Path) -> tuple[int, int] | None:
    with open(path, "rb") as fh:
        head = fh.read(29)
    if len(head) < 29 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]  # bit depth, colour type


def read_deep_rgba(path: Path, size) -> np.ndarray:
    """Decode a 16-bit colour PNG/TIFF with the bundled ffmpeg → float32 (H, W, 4) in [0, 1]."""
    import imageio_ffmpeg

    w, h = size
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(path),
           "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgba64le", "-"]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0 or len(proc.stdout) != w * h * 8:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise ValueError(f"{path}: cannot decode this 16-bit image ({msg[-1] if msg else 'wrong size'})")
    return np.frombuffer(proc.stdout, dtype="<u2").reshape(h, w, 4).astype(np.float32) / 65535.0


def is_deep(path: Path, im) -> bool:
    """True for a 16-bit colour PNG/TIFF (which Pillow would truncate to 8 bits)."""
    suffix = path.suffix.lower()
    if suffix == ".png":
        hdr = png_header(path)
        return hdr is not None and hdr[0] == 16 and hdr[1] in (2, 4, 6)
    if suffix in (".tif", ".tiff"):
        bits = im.tag_v2.get(258, (8,)) if hasattr(im, "tag_v2") else (8,)
        bits = bits if isinstance(bits, tuple) else (bits,)
        if max(bits) > 16 and len(bits) > 1:
            raise ValueError(f"{path}: {max(bits)}-bit multi-channel TIFF is not supported; use EXR")
        return max(bits) == 16 and len(bits) > 1
    return False


def is_deep_image(path) -> bool:
    """True when ``path`` is a 16-bit colour PNG/TIFF (decoded through ffmpeg)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if path.suffix.lower() not in (".png", ".tif", ".tiff"):
        return False
    try:
        with Image.open(path) as im:
            return is_deep(path, im)
    except (UnidentifiedImageError, OSError):
        return False


class DeepStream:
    """16-bit colour PNG/TIFF files decoded by ONE ffmpeg process (concat demuxer → ``rgba64le``),
    read forwards; ``frame(j)`` before the stream's position restarts it at ``j``."""

    def __init__(self, files: list, size: tuple):
        self.files, self.size = files, size
        self.proc, self.pos, self._dir = None, 0, None

    def _start(self, j: int) -> None:
        import imageio_ffmpeg

        self.close()
        self._dir = tempfile.TemporaryDirectory(prefix="dr-seq-")
        lst = Path(self._dir.name) / "frames.ffconcat"
        lines = ["ffconcat version 1.0"]
        for f in self.files[j:]:
            lines += ["file '" + str(Path(f).resolve()).replace("'", "'\\''") + "'", "duration 1"]
        lst.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self._err = tempfile.TemporaryFile()
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-nostdin", "-f", "concat", "-safe", "0", "-i",
               str(lst), "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgba64le", "-"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._err, stdin=subprocess.DEVNULL)
        self.pos = j

    def frame(self, j: int) -> np.ndarray:
        if self.proc is None or j < self.pos:
            self._start(j)
        w, h = self.size
        while True:
            data = self.proc.stdout.read(w * h * 8)
            if len(data) != w * h * 8:
                self.proc.wait()
                self._err.seek(0)
                msg = self._err.read().decode(errors="replace").strip().splitlines()
                path = self.files[min(self.pos, len(self.files) - 1)]
                self.close()
                raise ValueError(f"{path}: cannot decode this 16-bit image ({msg[-1] if msg else 'wrong size'}); "
                                 f"every frame must be {w}x{h}")
            self.pos += 1
            if self.pos - 1 == j:
                rgba = np.frombuffer(data, dtype="<u2").reshape(h, w, 4).astype(np.float32) / 65535.0
                return rgba[..., :3] * rgba[..., 3:4]

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()
            self._err.close()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None



