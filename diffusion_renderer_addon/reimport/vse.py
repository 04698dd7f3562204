"""Sequencer strips for imported results (4.2 ``sequences`` / 5.x ``strips``, via :mod:`..compat`) — only
when the artist asks for one (scene setting *Add Sequencer Strip*, off by default).

Strips are added **muted**: with Post Processing › Sequencer on, an unmuted strip would replace what F12
renders. Unmute it to watch the result in the sequencer.

* :func:`add_image_sequence_strip` — an image strip over a pass's frame files (``new_image`` with the
  first file, then ``elements.append`` per further frame), starting at the first frame number, colour
  space set from the pass encoding (relit EXRs: ``Linear Rec.709``), directory relative to the saved .blend.
* :func:`add_movie_strip` — a movie strip for an mp4 (``new_movie``).
A strip of the same name from an earlier run is replaced on its channel; a new one goes on the first
channel that is free over its frame range.
"""
from __future__ import annotations

import os

from .. import compat
from . import names
from .sequences import PassSequence, colorspace_for

__all__ = ["add_image_sequence_strip", "add_movie_strip", "free_channel"]


def free_channel(scene, start: int, end: int) -> int:
    ed = scene.sequence_editor
    used = set()
    if ed is not None:
        for s in compat.vse_strips(ed):
            _, first, after = compat.strip_timing(s)
            if first < end and after > start:
                used.add(s.channel)
    ch = 1
    while ch in used:
        ch += 1
    return ch


def _replace(ed, name: str, channel):
    """Remove the add-on's earlier strip ``name`` (tagged); returns the channel to use (its channel)."""
    strips = compat.vse_strips(ed)
    old = strips.get(name)
    if old is not None and names.TAG in old.keys():
        channel = old.channel if channel is None else channel
        strips.remove(old)
    return channel


def add_image_sequence_strip(scene, name: str, seq: PassSequence, *, channel: int | None = None, mute: bool = True):
    ed = scene.sequence_editor or scene.sequence_editor_create()
    first = seq.frame_numbers[0]
    channel = _replace(ed, name, channel)
    if channel is None:
        channel = free_channel(scene, first, first + len(seq.files))
    strip = compat.vse_new_image(ed, name, str(seq.files[0]), channel, first)
    for f in seq.files[1:]:
        strip.elements.append(f.name)
    strip.directory = os.path.join(names.blend_path(seq.files[0].parent), "")
    if hasattr(strip, "colorspace_settings"):
        strip.colorspace_settings.name = colorspace_for(seq.encoding)
    strip.mute = mute
    names.tag(strip, name)
    return strip


def add_movie_strip(scene, name: str, path: str, *, frame_start: int = 1, channel: int | None = None,
                    mute: bool = True):
    ed = scene.sequence_editor or scene.sequence_editor_create()
    channel = _replace(ed, name, channel)
    if channel is None:
        channel = free_channel(scene, frame_start, frame_start + 10 ** 6)
    strip = compat.vse_new_movie(ed, name, str(path), channel, frame_start)
    strip.mute = mute
    names.tag(strip, name)
    return strip
