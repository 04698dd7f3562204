"""Background export: render a saved copy of the .blend in ``blender -b copy.blend --python
background_runner.py -- job.json`` and poll it (modal operators). The child prints ``DR_PROGRESS`` /
``DR_RESULT`` lines (:mod:`.background_runner`); a failure of any kind (an export error in the copy, a
crash, a kill) ends as one :class:`~.render_request.ExportError` line, Blender's last output on stderr.
Tested with a Blender-compatible command line over the ``bpy`` module (tests/blender/bpy_blender.py)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bpy

from .render_request import ExportError, check_output_folder, check_request, frame_size, pick_view_layer


class BackgroundExport:
    """A G-buffer export running in a background Blender on a saved copy of the open file.

    Start it with :func:`start_export_gbuffers`; then either ``wait(progress)`` (blocking) or, from a
    modal operator / timer, ``poll()`` regularly: it returns the latest ``(done, total, message)`` and
    never blocks (a reader thread collects the child's stdout into a queue; no bpy access off the main
    thread). ``finished`` tells when the child has exited; ``result()`` then returns the set folder or
    raises :class:`ExportError`. ``cancel()`` terminates the child; the folder is left without
    render.json (incomplete). The open file is never modified."""

    def __init__(self, cmd: list[str], tmp_dir: Path, out_dir: Path):
        import queue
        import threading

        self.out_dir = out_dir
        self._tmp_dir = tmp_dir
        self._queue: "queue.Queue" = queue.Queue()
        self._tail: list[str] = []
        self._result = None
        self._progress = (0, 0, "starting Blender")
        self._cancelled = False
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     errors="replace", stdin=subprocess.DEVNULL)
        self._reader = threading.Thread(target=self._read, name="dr-gbuffer-bg", daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def _drain(self):
        import queue

        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return
            if line is None:
                continue
            if line.startswith("DR_PROGRESS "):
                try:
                    msg = json.loads(line[len("DR_PROGRESS "):])
                    self._progress = (int(msg["done"]), int(msg["total"]), str(msg.get("message", "")))
                except (ValueError, KeyError):
                    pass
            elif line.startswith("DR_RESULT "):
                try:
                    self._result = json.loads(line[len("DR_RESULT "):])
                except ValueError:
                    self._result = {"ok": False, "error": line}
            else:
                self._tail = (self._tail + [line])[-40:]

    @property
    def finished(self) -> bool:
        return self.proc.poll() is not None and not self._reader.is_alive()

    def poll(self) -> tuple[int, int, str]:
        """The latest progress ``(done, total, message)``; non-blocking."""
        self._drain()
        return self._progress

    def cancel(self) -> None:
        self._cancelled = True
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(10)  # stdout closes with the child
        self._cleanup()

    def wait(self, progress=None, timeout: float | None = None) -> Path:
        """Block until the child exits, calling ``progress(done, total, message)`` on every update."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = None
        try:
            while not self.finished:
                cur = self.poll()
                if progress is not None and cur != last:
                    progress(*cur)
                    last = cur
                if deadline is not None and time.monotonic() > deadline:
                    self.cancel()
                    raise ExportError(f"background export timed out after {timeout:g} s")
                time.sleep(0.05)
        except BaseException:
            self.cancel()
            raise
        cur = self.poll()
        if progress is not None and cur != last:
            progress(*cur)
        return self.result()

    def result(self) -> Path:
        if not self.finished:
            raise ExportError("the background export is still running")
        self._drain()
        self._cleanup()
        if self._cancelled:
            raise ExportError(f"export cancelled; {self.out_dir} is incomplete (no render.json)")
        if self._result is None or not self._result.get("ok"):
            code = self.proc.returncode
            if self._result is not None:
                why = self._result.get("error") or f"exit code {code}"
            elif code is not None and code < 0:
                why = f"Blender stopped ({_signal_name(-code)}) before finishing"
            else:
                why = f"Blender exited with code {code} before finishing"
            for partial in self.out_dir.glob(".*.partial.exr"):  # a frame Blender was writing when it stopped
                partial.unlink(missing_ok=True)
            if self._tail:  # the details go to the console; the error stays one line
                print("background export: Blender's last output:\n" + "\n".join(self._tail[-15:]), file=sys.stderr)
            raise ExportError(f"background export failed: {why}; {self.out_dir} is incomplete (no render.json)")
        return Path(self._result["out_dir"])

    def _cleanup(self):
        shutil.rmtree(self._tmp_dir, ignore_errors=True)


def start_export_gbuffers(scene, out_dir, *, frame_range=None, resolution=None, samples: int = 1,
                          engine: str = "CYCLES", view_layer=None, filter_width: float | None = 0.01,
                          overwrite: bool = False, blender_binary: str | None = None,
                          source: str | None = None) -> BackgroundExport:
    """Save a copy of the open file and start exporting it in ``blender -b`` (returns at once). The
    options are those of :func:`export_gbuffers`. Raises ExportError when there is no Blender executable
    (the ``bpy`` module build: use ``export_gbuffers(..., background=False)``)."""
    binary = bpy.app.binary_path if blender_binary is None else blender_binary
    if not (binary and os.path.isfile(binary) and os.access(binary, os.X_OK)):
        raise ExportError(f"no Blender executable to export in the background (binary_path {binary!r}); "
                          "export in this process instead (background=False)")
    frames = check_request(scene, frame_range)
    out_dir = Path(out_dir).resolve()
    vl = pick_view_layer(scene, view_layer)
    source = source or (bpy.path.abspath(bpy.data.filepath) if bpy.data.filepath else None)
    size = tuple(int(v) for v in resolution) if resolution is not None else frame_size(scene)
    check_output_folder(out_dir, source=source, frames=frames, size=size, overwrite=overwrite)  # fail early
    tmp_dir = Path(tempfile.mkdtemp(prefix="dr_gbuffer_bg_"))
    try:
        blend = tmp_dir / "scene_copy.blend"
        bpy.ops.wm.save_as_mainfile(filepath=str(blend), copy=True, relative_remap=True)
        job = {"scene": scene.name, "out_dir": str(out_dir), "frames": frames,
               "resolution": list(resolution) if resolution is not None else None, "samples": samples,
               "engine": engine, "view_layer": vl.name, "filter_width": filter_width,
               "overwrite": overwrite,
               "source": source}
        job_path = tmp_dir / "job.json"
        job_path.write_text(json.dumps(job), encoding="utf-8")
        runner = Path(__file__).with_name("background_runner.py")
        # no --factory-startup: the user's preferences hold the Cycles GPU set-up
        cmd = [binary, "-b", str(blend), "--python-exit-code", "3", "--python", str(runner), "--", str(job_path)]
        return BackgroundExport(cmd, tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"
