"""Which files in a set folder are the engine's: what a manifest lists (or recognisably belongs to it) and
what a writer wrote, recorded in a journal, so that a finished set leaves exactly its manifest's files and
nothing the engine did not write is ever deleted or overwritten.

The journal ``<set>/.dr-writing`` (one relative path a line) is written when a writer starts: first every file
the folder's previous manifest (or an earlier unfinished writer's journal) accounts for, then, appended before
each write, every file the new writer writes. ``GBufferSetWriter.finish`` removes the journal's files the new
manifest does not list (with the engine's temporaries beside them) and then the journal itself.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from engine.contract.gbuffer_set import FORMAT, MANIFEST_NAME, frame_path, pass_pattern

JOURNAL_NAME = ".dr-writing"
_TEMP = re.compile(r"^\.(?P<stem>.+)\.[0-9a-f]{12}\.tmp(\.[^.]*)?$")   # engine.atomic.temp_path's names


def read_manifest_json(folder: Path):
    """The folder's manifest.json as JSON (None when absent or not JSON)."""
    try:
        return json.loads((Path(folder) / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def engine_manifest(data) -> bool:
    """Whether a manifest's JSON carries the G-buffer set format marker (the engine or the add-on wrote it)."""
    return isinstance(data, dict) and data.get("format") == FORMAT


def _safe(rel: str) -> bool:
    p = Path(rel)
    return bool(rel) and not p.is_absolute() and ".." not in p.parts


def listed_files(data: dict) -> set[str]:
    """Relative paths an engine manifest accounts for: every pass × frame, previews (listed or at their
    default place), the contact sheet and pass videos."""
    out: set[str] = set()
    frames = [f for f in data.get("frame_numbers") or [] if isinstance(f, int)]
    passes = data.get("passes") if isinstance(data.get("passes"), dict) else {}
    previews = data.get("previews") if isinstance(data.get("previews"), dict) else {}
    patterns = [e.get("path") for e in passes.values() if isinstance(e, dict)]
    patterns += list(previews.values()) + [pass_pattern(n, "png", folder=f"previews/{n}") for n in passes]
    for pattern in patterns:
        if isinstance(pattern, str) and "#" in pattern:
            out.update(frame_path(pattern, f) for f in frames)
    videos = data.get("videos") if isinstance(data.get("videos"), dict) else {}
    out.update(v for v in [data.get("contact_sheet"), *videos.values(), "contact_sheet.mp4",
                           *(f"{n}.mp4" for n in passes)] if isinstance(v, str))
    return {r for r in out if _safe(r)}


def read_journal(folder: Path) -> set[str]:
    try:
        text = (Path(folder) / JOURNAL_NAME).read_text(encoding="utf-8")
    except OSError:
        return set()
    return {line for line in text.splitlines() if _safe(line)}


def known_files(folder: Path) -> set[str]:
    """Everything in ``folder`` the engine accounts for before a new writer starts."""
    data = read_manifest_json(folder)
    return read_journal(folder) | (listed_files(data) if engine_manifest(data) else set())


def remove_stale(folder: Path, candidates: set[str], keep: set[str]) -> list[str]:
    """Delete the ``candidates`` not in ``keep`` (and the engine's temporaries beside any candidate), then the
    folders this emptied. Returns the removed relative paths."""
    folder = Path(folder)
    removed, dirs = [], set()
    for rel in sorted(candidates - keep):
        p = folder / rel
        if p.is_file() or p.is_symlink():
            p.unlink()
            removed.append(rel)
            dirs.add(p.parent)
    stems = {}
    for rel in candidates | keep:
        stems.setdefault(Path(rel).parent, set()).add(Path(rel).stem.rstrip("0123456789").rstrip("."))
    for sub, names in stems.items():
        d = folder / sub
        if not d.is_dir():
            continue
        for p in d.iterdir():
            m = _TEMP.match(p.name)
            if m and p.is_file() and m.group("stem").rstrip("0123456789").rstrip(".") in names:
                p.unlink()
                removed.append(str(p.relative_to(folder)))
                dirs.add(d)
    root = os.path.abspath(folder)
    for d in sorted(dirs, key=lambda x: len(x.parts), reverse=True):
        while os.path.abspath(d) != root and d.is_dir() and not any(d.iterdir()):
            d.rmdir()
            d = d.parent
    return removed


class Journal:
    """The append-only record of the files a writer writes (see the module docstring)."""

    def __init__(self, folder: Path, known: set[str]):
        from engine.atomic import atomic_write_text

        self.path = Path(folder) / JOURNAL_NAME
        self.files = set(known)
        atomic_write_text(self.path, "".join(f"{r}\n" for r in sorted(self.files)))
        self._fh = open(self.path, "a", encoding="utf-8")

    def add(self, rel: str) -> None:
        if rel not in self.files:
            self.files.add(rel)
            self._fh.write(rel + "\n")
            self._fh.flush()

    def close(self, remove: bool) -> None:
        if not self._fh.closed:
            self._fh.close()
        if remove:
            self.path.unlink(missing_ok=True)


__all__ = ["JOURNAL_NAME", "Journal", "engine_manifest", "known_files", "listed_files", "read_journal",
           "read_manifest_json", "remove_stale"]
