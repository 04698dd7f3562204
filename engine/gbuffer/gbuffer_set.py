"""Writing and reading a G-buffer set: a folder of per-pass linear EXR sequences + manifest.json.

Writing: `GBufferSetWriter(folder, manifest_base)`, `write_frame(pass, frame, array)` per file
(atomic: temporary name + rename, through engine.io.exr), then `finish()`, which removes the files of an
earlier set in the folder that the new manifest does not list and writes manifest.json atomically and
LAST — a folder without a manifest is an incomplete set. Which files are the engine's: `set_files`.
Reading: `open_gbuffer_set(folder)` → `GBufferSet` (`read`, `read_all`, `warnings`).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .encodings import DEPTH_RANGE_RULE, DepthRangeAccumulator, depth_background_mask
from .set_files import Journal, engine_manifest, known_files, read_manifest_json, remove_stale
from engine.contract.gbuffer_set import (FORMAT, MANIFEST_NAME, PASS_ORDER, PASS_SPECS, VERSION, GBufferSetError, Manifest,
                       ManifestError, default_pass_entry, frame_path, same_clip)

DEPTH_BACKGROUND = 1e10  # what non-finite metric depth is written as (Cycles' background value)


class IncompleteSetError(GBufferSetError, FileNotFoundError):
    """The folder has no manifest.json: not a G-buffer set, or one whose writing did not finish."""


class SetConflictError(GBufferSetError):
    """The folder already holds the manifest of a different set."""


# ------------------------------------------------------------------------------------------- writer
class GBufferSetWriter:
    """Writes one set. `manifest_base` holds everything the writer cannot infer: `fps`, `provenance`,
    optional `kind` ("gbuffer"/"relit"), `depth` ({kind: metric|normalised[, near, far, invert]}),
    `camera`, `alpha` (name of the coverage pass) and any extra keys (kept). The writer fills in
    `format`, `version`, `frame_numbers`, `resolution`, `passes` and — for metric depth without a
    recorded range — `depth.near/far` (per clip, see encodings.DepthRangeAccumulator).

    Refuses (SetConflictError) when the folder holds the manifest of a different clip, unless
    `overwrite=True`, and always when it holds a manifest.json that is not a set's (never deleted).
    Never deletes or overwrites a file the engine did not write: a file in the way that no earlier manifest
    or writer journal accounts for is refused (SetConflictError). The old manifest is removed before the
    first file is written, so a half-rewritten folder never looks complete; `finish()` removes the earlier
    set's files the new manifest does not list (`set_files`), so only the new set's files remain.
    Usable as a context manager: `finish()` on success, no manifest on an exception."""

    def __init__(self, folder, manifest_base: dict, *, overwrite: bool = False, dtypes: dict | None = None,
                 passes: dict | None = None):
        self.folder = Path(folder)
        self.base = dict(manifest_base)
        self.base.setdefault("kind", "gbuffer")
        self.dtypes = dict(dtypes or {})
        self.pass_entries = {k: dict(v) for k, v in (passes or {}).items()}  # overrides per pass
        self.warnings: list[str] = []
        self._frames: dict[str, set[int]] = {}
        self._size: tuple[int, int] | None = None  # (W, H)
        self._size_from: str = ""
        self._started = False
        self._finished = False
        fps, prov = self.base.get("fps"), self.base.get("provenance")
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0:
            raise GBufferSetError(f"{self.folder}: the manifest base needs a positive 'fps', got {fps!r}")
        if not isinstance(prov, dict) or not prov.get("producer"):
            raise GBufferSetError(f"{self.folder}: the manifest base needs 'provenance' with a 'producer' "
                                  "(see make_provenance)")
        existing = self.folder / MANIFEST_NAME
        if existing.exists() and not engine_manifest(read_manifest_json(self.folder)):
            raise SetConflictError(f"{existing}: a file the engine did not write (not a G-buffer set manifest) "
                                   "is in the way; it is never deleted: move it away or choose another output "
                                   "folder")
        self._known: set[str] = set()
        self._journal: Journal | None = None
        if existing.is_file() and not overwrite:
            try:
                old = Manifest.load(existing).data
            except GBufferSetError as exc:
                raise SetConflictError(f"{self.folder}: holds an unreadable {MANIFEST_NAME} ({exc}); choose another "
                                       "folder or pass overwrite=True") from None
            if not same_clip(old, self.base):
                src = (old.get("provenance") or {}).get("source") or "an unknown source"
                raise SetConflictError(
                    f"{self.folder}: already holds a {old.get('kind', 'gbuffer')} set of a different clip "
                    f"({src}); choose another output folder or overwrite it (overwrite=True / --overwrite)")

    # --- passes
    def _entry(self, name: str) -> dict:
        if name in self.pass_entries:
            entry = dict(self.pass_entries[name])
        else:
            depth_kind = (self.base.get("depth") or {}).get("kind")
            entry = default_pass_entry(name, depth_kind=depth_kind, dtype=self.dtypes.get(name))
        self.pass_entries[name] = entry
        return entry

    def path(self, name: str, frame: int) -> Path:
        return self.folder / frame_path(self._entry(name)["path"], frame)

    def _begin(self):
        if self._finished:
            raise GBufferSetError(f"{self.folder}: this set is finished; open a new writer")
        if not self._started:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._known = known_files(self.folder)
            self._journal = Journal(self.folder, self._known)   # recorded before the old manifest goes
            old = self.folder / MANIFEST_NAME
            if old.is_file():
                os.unlink(old)
            self._started = True

    def write_frame(self, name: str, frame_number: int, array) -> Path:
        """Write one frame of one pass: (H, W, 3) for colour/normal, (H, W) or (H, W, 1) for scalars
        and depth. Non-finite values are replaced (depth: 1e10 background; others: 0) with a warning."""
        from engine.io.exr import write_exr

        if not isinstance(frame_number, (int, np.integer)) or frame_number < 0:
            raise GBufferSetError(f"pass {name!r}: frame number must be a non-negative integer, got {frame_number!r}")
        frame_number = int(frame_number)
        entry = self._entry(name)
        arr = np.asarray(array.detach().cpu().numpy() if hasattr(array, "detach") else array, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[..., None]
        channels = entry["channels"]
        if arr.ndim != 3 or arr.shape[-1] != len(channels):
            raise GBufferSetError(f"pass {name!r} frame {frame_number}: expected (H, W, {len(channels)}) "
                                  f"for channels {channels}, got shape {arr.shape}")
        size = (arr.shape[1], arr.shape[0])
        if self._size is None:
            self._size, self._size_from = size, name
        elif size != self._size:
            raise GBufferSetError(f"pass {name!r} frame {frame_number} is {size[0]}×{size[1]} but "
                                  f"{self._size_from!r} is {self._size[0]}×{self._size[1]}; all passes of a set "
                                  "have one size")
        bad = ~np.isfinite(arr)
        if bad.any():
            fill = DEPTH_BACKGROUND if entry["encoding"] == "depth-planar-metric" else 0.0
            arr = np.where(bad, np.float32(fill), arr)
            self.warnings.append(f"{name} frame {frame_number}: {int(bad.sum())} NaN/Inf value(s) written as {fill:g}")
        self._begin()
        rel = frame_path(entry["path"], frame_number)
        path = self.folder / rel
        if (path.exists() or path.is_symlink()) and rel not in self._known and \
                frame_number not in self._frames.get(name, ()):
            raise SetConflictError(f"{path}: a file the engine did not write is in the way (no manifest of "
                                   f"{self.folder} lists it); it is never overwritten: move it away or choose "
                                   "another output folder")
        self._journal.add(rel)
        write_exr(path, {c: arr[..., i] for i, c in enumerate(channels)}, dtype=entry.get("dtype", "half"))
        self._frames.setdefault(name, set()).add(frame_number)
        return path

    def write_frames(self, name: str, frame_numbers, arrays) -> None:
        for f, a in zip(frame_numbers, arrays, strict=True):
            self.write_frame(name, f, a)

    # --- finish
    def manifest_dict(self) -> dict:
        if not self._frames:
            raise GBufferSetError(f"{self.folder}: no frames were written; nothing to finish")
        frames = sorted(set().union(*self._frames.values()))
        for name, have in self._frames.items():
            missing = sorted(set(frames) - have)
            if missing:
                raise GBufferSetError(f"{self.folder}: pass {name!r} lacks frame(s) {missing[:10]}"
                                      f"{' …' if len(missing) > 10 else ''}; every pass needs every frame")
        data = {"format": FORMAT, "version": VERSION, "kind": self.base.get("kind", "gbuffer"),
                "frame_numbers": frames, "fps": self.base.get("fps"), "resolution": list(self._size),
                "passes": {n: self.pass_entries[n] for n in sorted(self._frames, key=_pass_order)}}
        for key in ("alpha", "depth", "camera", "provenance"):
            if key in self.base:
                data[key] = self.base[key]
        data.update({k: v for k, v in self.base.items() if k not in data})
        if "depth" in data:
            data["depth"] = {"kind": None, "near": None, "far": None, "invert": False, **data["depth"]}
            if data["depth"]["near"] is None:
                del data["depth"]["near"], data["depth"]["far"]
        if data.get("alpha") is not None and data["alpha"] not in self._frames:
            self.warnings.append(f"alpha pass {data['alpha']!r} was not written; the set has no coverage pass")
            del data["alpha"]
        return data

    def finish(self) -> "GBufferSet":
        """Complete the set: fill the depth range if needed, validate, write manifest.json (last)."""
        data = self.manifest_dict()
        depth = data.get("depth")
        if depth and depth.get("kind") == "metric" and depth.get("near") is None and "depth" in self._frames:
            rng = self._clip_depth_range(data)
            if rng is not None:
                depth.update(near=rng[0], far=rng[1], range_rule=DEPTH_RANGE_RULE)
        manifest = Manifest(data, source=self.folder / MANIFEST_NAME)
        keep = {frame_path(e["path"], f) for e in data["passes"].values() for f in data["frame_numbers"]}
        remove_stale(self.folder, self._journal.files, keep)
        manifest.save(self.folder / MANIFEST_NAME)
        self._journal.close(remove=True)
        self._finished = True
        return GBufferSet(self.folder, manifest)

    def _clip_depth_range(self, data):
        gset = GBufferSet(self.folder, Manifest(data, source=self.folder / MANIFEST_NAME))
        acc = DepthRangeAccumulator()
        alpha = data.get("alpha") if data.get("alpha") in self._frames else None
        for i, f in enumerate(gset.frame_numbers):
            clip_end = data["camera"][i]["clip_end"] if data.get("camera") else None
            acc.add(gset.read("depth", f), alpha=None if alpha is None else gset.read(alpha, f), clip_end=clip_end)
        self.warnings.extend(gset.warnings)
        return acc.range()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None and not self._finished:
            self.finish()
        return False


def _pass_order(name: str):
    return (PASS_ORDER.index(name) if name in PASS_ORDER else len(PASS_ORDER), name)


# ------------------------------------------------------------------------------------------- reader
_ALIASES = {3: (("R", "G", "B"), ("X", "Y", "Z"), ("r", "g", "b"), ("x", "y", "z")),
            1: (("V",), ("Z",), ("Y",), ("R",), ("A",))}


class GBufferSet:
    """A complete set on disk. `warnings` collects non-fatal problems (NaN/Inf replaced) to print."""

    def __init__(self, folder, manifest: Manifest):
        self.folder = Path(folder)
        self.manifest = manifest
        self.warnings: list[str] = []

    frame_numbers = property(lambda self: self.manifest.frame_numbers)
    passes = property(lambda self: self.manifest.pass_names)
    resolution = property(lambda self: self.manifest.resolution)
    fps = property(lambda self: self.manifest.fps)
    kind = property(lambda self: self.manifest.kind)

    def path(self, name: str, frame: int) -> Path:
        return self.folder / self.manifest.pass_file(name, frame)

    def _pick(self, name, path, chans: dict, want: list[str]) -> list[np.ndarray]:
        if all(c in chans for c in want):
            return [chans[c] for c in want]
        by_suffix: dict[str, list[str]] = {}
        for full in chans:
            by_suffix.setdefault(full.rsplit(".", 1)[-1], []).append(full)
        for cand in (tuple(want),) + _ALIASES.get(len(want), ()):
            if all(len(by_suffix.get(c, ())) == 1 for c in cand):
                return [chans[by_suffix[c][0]] for c in cand]
        if len(want) == 1 and len(chans) == 1:
            return list(chans.values())
        raise GBufferSetError(f"{path}: pass {name!r} needs channel(s) {want} (manifest passes.{name}.channels) "
                              f"but the file has {sorted(chans)}")

    def read(self, name: str, frame_number: int) -> np.ndarray:
        """One frame of one pass → float32 (H, W, C), C = number of the pass's channels."""
        from engine.io.exr import read_exr

        if frame_number not in self.manifest.data["frame_numbers"]:
            raise GBufferSetError(f"{self.folder}: frame {frame_number} is not in the set "
                                  f"(frames {self.frame_numbers[0]}…{self.frame_numbers[-1]})")
        path = self.path(name, frame_number)
        if not path.is_file():
            raise GBufferSetError(f"{path}: missing file of pass {name!r}, frame {frame_number} "
                                  f"(listed in {self.folder / MANIFEST_NAME})")
        entry = self.manifest.passes[name]
        arr = np.stack(self._pick(name, path, read_exr(path), list(entry["channels"])), axis=-1)
        w, h = self.resolution
        if arr.shape[:2] != (h, w):
            raise GBufferSetError(f"{path}: pass {name!r} frame {frame_number} is {arr.shape[1]}×{arr.shape[0]} "
                                  f"but the set's resolution is {w}×{h} (manifest resolution, shared by all passes)")
        bad = ~np.isfinite(arr)
        if bad.any():
            enc = entry.get("encoding")
            fill = {"depth-planar-metric": DEPTH_BACKGROUND, "depth-normalised": 1.0}.get(enc, 0.0)
            arr = np.where(bad, np.float32(fill), arr)
            self.warnings.append(f"{path}: {int(bad.sum())} NaN/Inf value(s) replaced by {fill:g}")
        return arr.astype(np.float32, copy=False)

    def read_all(self, name: str) -> np.ndarray:
        """Every frame of a pass → float32 (F, H, W, C)."""
        return np.stack([self.read(name, f) for f in self.frame_numbers])

    def read_frames(self, passes=None) -> dict[str, np.ndarray]:
        """{pass: (F, H, W, C)} for `passes` (default: all) — the input of encodings.to_model_inputs."""
        return {p: self.read_all(p) for p in (passes or self.passes)}

    def background(self, frame_number: int) -> np.ndarray | None:
        """Bool (H, W) background mask of a frame from alpha and/or metric depth; None if unknown."""
        m = self.manifest
        alpha = self.read(m.alpha, frame_number) if m.alpha else None
        if "depth" in m.passes and m.passes["depth"]["encoding"] == "depth-planar-metric":
            i = m.frame_numbers.index(frame_number)
            ce = m.camera[i]["clip_end"] if m.camera else None
            return depth_background_mask(self.read("depth", frame_number)[None], alpha=None if alpha is None else
                                         alpha[None], clip_end=ce)[0]
        return None if alpha is None else alpha[..., 0] < 0.5

    def __repr__(self):
        w, h = self.resolution
        return f"GBufferSet({str(self.folder)!r}, {self.kind}, {len(self.frame_numbers)} frames {w}×{h}, {self.passes})"


def open_gbuffer_set(folder) -> GBufferSet:
    """Open a set folder (or its manifest.json). Raises IncompleteSetError without a manifest,
    ManifestError / UnsupportedVersionError for a bad or newer one (naming field and file)."""
    folder = Path(folder)
    if folder.name == MANIFEST_NAME and folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise IncompleteSetError(f"{folder}: no such folder")
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise IncompleteSetError(f"{folder}: no {MANIFEST_NAME} — not a G-buffer set, or an incomplete one "
                                 "(the manifest is written last; writing may have stopped or still be running)")
    return GBufferSet(folder, Manifest.load(path))


__all__ = ["DEPTH_BACKGROUND", "GBufferSet", "GBufferSetWriter", "IncompleteSetError", "SetConflictError",
           "open_gbuffer_set", "ManifestError", "PASS_SPECS"]
