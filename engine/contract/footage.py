"""What the engine accepts as footage (STDLIB ONLY): the file types of frame sequences and videos, and the
frame rate an image sequence gets when nobody says. The add-on uses the same lists to decide whether a
source can be handed to the engine as it is."""
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".exr", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
DEFAULT_FPS = 24.0  # the rate of an image sequence when neither fps nor source_fps is given

__all__ = ["FRAME_SUFFIXES", "VIDEO_SUFFIXES", "DEFAULT_FPS"]
