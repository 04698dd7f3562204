"""Load the passes of a G-buffer / relit set (docs/GBUFFER_SET.md) as Blender image sequences.

``load_set_sequences(manifest)`` loads one image datablock per pass from its first frame file with
``source = 'SEQUENCE'`` and the pass's colour space (``linear-rec709`` → ``Linear Rec.709``, every other
encoding → ``Non-Color``). Blender does not detect a sequence's length (BLENDER_NOTES §3.5), so the
frame range lives on whatever *uses* the image: :meth:`PassSequence.configure` sets ``frame_start`` =
first frame number, ``frame_duration`` = number of frames, ``frame_offset`` = first − 1 and
``use_auto_refresh`` on an ``ImageUser`` (shader Image Texture ``node.image_user``) or directly on a
compositor Image node (which carries those properties itself). With that, scene frame *f* shows file
*f* (frames are the clip's own numbers).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import bpy

from ..contract import gbuffer_set
from . import names

__all__ = ["PassSequence", "SetInfo", "read_manifest", "load_set_sequences", "colorspace_for",
           "configure_image_user", "frame_path", "LINEAR_ENCODINGS", "ReimportError"]

FORMAT = gbuffer_set.FORMAT
SUPPORTED_VERSION = gbuffer_set.VERSION
LINEAR_ENCODINGS = frozenset({"linear-rec709"})


class ReimportError(RuntimeError):
    """A set cannot be imported (missing/invalid manifest, missing files); the message names the file."""


def _colorspace_names() -> set[str]:
    try:
        img_cs = bpy.types.ColorManagedInputColorspaceSettings.bl_rna.properties["name"]
        return {i.identifier for i in img_cs.enum_items}
    except (AttributeError, KeyError):
        return set()


def colorspace_for(encoding: str) -> str:
    """Blender colour space for a pass encoding: ``Linear Rec.709`` (older configs: ``Linear``) for
    linear colour, ``Non-Color`` for everything else."""
    known = _colorspace_names()
    if encoding in LINEAR_ENCODINGS:
        for cand in ("Linear Rec.709", "Linear", "scene_linear"):
            if not known or cand in known:
                return cand
    return "Non-Color"


def frame_path(root: Path, pattern: str, frame: int) -> Path:
    """``root / pattern`` with its last ``#`` run replaced by the zero-padded frame number."""
    try:
        return root / gbuffer_set.frame_path(pattern, frame)
    except ValueError as exc:
        raise ReimportError(str(exc)) from None


@dataclass
class SetInfo:
    path: Path                  # the set folder
    manifest: dict
    kind: str                   # 'gbuffer' | 'relit'
    frames: list[int]
    fps: float
    resolution: tuple[int, int]

    @property
    def label(self) -> str:
        """A short name for datablocks: the set folder's name (``relit <light>`` for a relit set, whose
        folder is named after the HDRI); for the engine's ``<job folder>/out`` the job folder's name."""
        if self.kind == "relit":
            return f"relit {self.path.name}"
        return self.path.parent.name if self.path.name == "out" and self.path.parent.name else self.path.name


def read_manifest(manifest_path) -> SetInfo:
    """Read and sanity-check a set's ``manifest.json`` (a folder is accepted for its manifest)."""
    p = Path(manifest_path).expanduser().resolve()
    if p.is_dir():
        p = p / "manifest.json"
    if not p.is_file():
        raise ReimportError(f"{p}: no manifest.json (not a G-buffer set, or an incomplete one)")
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReimportError(f"{p}: cannot read the manifest ({exc})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise ReimportError(f"{p}: field 'format': expected {FORMAT!r}, got {m.get('format') if isinstance(m, dict) else m!r}")
    try:
        major = int(str(m.get("version", 1)).split(".")[0])
    except ValueError:
        raise ReimportError(f"{p}: field 'version': not a number ({m.get('version')!r})") from None
    if major > SUPPORTED_VERSION:
        raise ReimportError(f"{p}: written in format version {major}; this add-on reads up to "
                            f"{SUPPORTED_VERSION} — update the add-on")
    frames = m.get("frame_numbers")
    if not isinstance(frames, list) or not frames or not all(isinstance(f, int) for f in frames):
        raise ReimportError(f"{p}: field 'frame_numbers': expected a non-empty list of integers")
    passes = m.get("passes")
    if not isinstance(passes, dict) or not passes:
        raise ReimportError(f"{p}: field 'passes': expected a non-empty object")
    res = m.get("resolution") or [0, 0]
    return SetInfo(p.parent, m, str(m.get("kind", "gbuffer")), list(frames), float(m.get("fps", 24) or 24),
                   (int(res[0]), int(res[1])))


@dataclass
class PassSequence:
    name: str                   # pass name
    image: object               # bpy.types.Image
    encoding: str
    files: list[Path]           # every frame's file, in frame order
    frame_numbers: list[int]
    channels: list = field(default_factory=list)

    @property
    def frame_start(self) -> int:
        return self.frame_numbers[0]

    @property
    def frame_duration(self) -> int:
        return len(self.frame_numbers)

    @property
    def frame_offset(self) -> int:
        return self.frame_numbers[0] - 1

    def configure(self, target) -> None:
        """Set the frame range on an ``ImageUser``, a node with ``image_user`` (Image Texture) or a
        compositor Image node (range properties on the node itself)."""
        configure_image_user(target, self.frame_numbers[0], len(self.frame_numbers))


def configure_image_user(target, first: int, count: int) -> None:
    user = getattr(target, "image_user", None)
    if user is None:
        user = target
    user.frame_start = int(first)
    user.frame_duration = int(count)
    user.frame_offset = int(first) - 1
    user.use_auto_refresh = True
    if hasattr(user, "use_cyclic"):
        user.use_cyclic = False


def load_set_sequences(info: SetInfo, *, passes=None, prefix: str | None = None,
                       check_files: bool = True) -> dict[str, PassSequence]:
    """Load every pass (or ``passes``) of the set as an image sequence; returns ``{pass: PassSequence}``.
    Image datablocks are named ``<prefix>.<Pass Label>`` (``Shot010.Delight.Base Color``; prefix default
    ``DR <set label>``); an image of that name made by an earlier run is reused with its file switched.
    Paths are stored relative to the saved .blend. With ``check_files`` every frame file must exist (the
    error names the first missing one)."""
    prefix = prefix or f"DR {info.label}"
    out: dict[str, PassSequence] = {}
    for name, spec in info.manifest["passes"].items():
        if passes is not None and name not in passes:
            continue
        pattern = spec.get("path") if isinstance(spec, dict) else None
        if not pattern:
            raise ReimportError(f"{info.path / 'manifest.json'}: field 'passes.{name}.path' is missing")
        files = [frame_path(info.path, pattern, f) for f in info.frames]
        if check_files:
            missing = next((f for f in files if not f.is_file()), None)
            if missing is not None:
                raise ReimportError(f"{missing}: pass {name!r} frame file is missing")
        encoding = str(spec.get("encoding", "non-color"))
        img_name = f"{prefix}.{names.pass_label(name)}"
        img = names.reusable(bpy.data.images, img_name)
        if img is None:                      # first run: a new image; a re-run switches the files of the old one
            img = bpy.data.images.load(str(files[0]), check_existing=False)
            img.name = img_name
            names.tag(img, prefix)
        img.source = "SEQUENCE"
        img.filepath = names.blend_path(files[0])
        img.colorspace_settings.name = colorspace_for(encoding)
        img.reload()
        out[name] = PassSequence(name, img, encoding, files, list(info.frames), list(spec.get("channels", [])))
    return out

