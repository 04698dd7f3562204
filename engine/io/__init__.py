"""Frame, clip and EXR input/output for the engine (never imports bpy).

* :mod:`.exr` — OpenEXR files (all parts, full dotted channel names), atomic writers;
* :mod:`.blender_exr` — Blender multilayer render passes (4.x / 5.x / File Output) → canonical names;
* :mod:`.clip` — the lazy :class:`Clip` interface and the frame-selection rule;
* :mod:`.sequence` — frame files, image sequences, :func:`open_clip`, :func:`find_clips`;
* :mod:`.video` — video clips through the bundled ffmpeg, :func:`write_mp4`.
* :mod:`.images` — plain PNG/JPEG/TIFF files as float arrays, :func:`~.images.write_png`.
"""
from .blender_exr import BlenderPasses, canonical_pass_name, detect_layout, read_blender_passes
from .clip import FRAME_SUFFIXES, VIDEO_SUFFIXES, Clip, select_frames
from .exr import ExrError, read_exr, read_exr_header, write_exr, write_exr_rgb
from .sequence import ImageSequenceClip, find_clips, frame_number, list_frames, open_clip, read_frame
from .video import VideoClip, VideoInfo, open_video, probe_video, write_mp4

__all__ = [
    "ExrError", "read_exr", "read_exr_header", "write_exr", "write_exr_rgb",
    "BlenderPasses", "read_blender_passes", "detect_layout", "canonical_pass_name",
    "FRAME_SUFFIXES", "VIDEO_SUFFIXES", "Clip", "ImageSequenceClip", "list_frames", "frame_number", "read_frame",
    "select_frames", "open_clip", "find_clips",
    "VideoClip", "VideoInfo", "open_video", "probe_video", "write_mp4",
]
