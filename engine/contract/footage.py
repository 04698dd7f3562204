"""What the engine accepts as footage (STDLIB ONLY): the file types of frame sequences and videos, the
frame rate an image sequence gets when nobody says, and the Blender colour spaces the engine converts itself.
The add-on uses the same lists to decide whether a source can be handed to the engine as it is."""
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".exr", ".tif", ".tiff", ".dpx")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
DEFAULT_FPS = 24.0  # the rate of an image sequence when neither fps nor source_fps is given

# Blender colour-space name (colorspace_settings.name, Blender 3.x–5.x configs) → the inverse job's
# ``colorspace``: the engine's own ``srgb``/``linear`` or a name of its OpenColorIO config (engine/colour.py;
# tests/test_colour.py checks every value resolves there). Names not listed (Filmic Log, AgX Log, Display P3,
# Rec.2100-PQ …) have no counterpart in that config: Blender's colour management converts them (the add-on
# renders such frames to linear EXR once).
BLENDER_COLORSPACES = {
    "sRGB": "srgb",
    "Non-Color": "srgb",               # values as stored
    "Linear Rec.709": "linear",
    "Linear": "linear",                # Blender < 4.0
    "ACEScg": "ACEScg",
    "Linear ACEScg": "ACEScg",         # Blender < 4.0
    "ACES2065-1": "ACES2065-1",
    "Linear ACES": "ACES2065-1",       # Blender < 4.0
    "ACEScct": "ACEScct",
    "ACEScc": "ACEScc",
    "Linear Rec.2020": "Linear Rec.2020",
    "Linear DCI-P3 D65": "Linear P3-D65",
    "Rec.1886": "Gamma 2.4 Encoded Rec.709",
}
# DPX files: Blender shows their code values as "Linear Rec.709" whatever the header says; with that (its
# default) the engine decides from the file's transfer characteristic instead (``auto``: log → Cineon).
HEADER_DECIDES = {".dpx": "Linear Rec.709"}

__all__ = ["FRAME_SUFFIXES", "VIDEO_SUFFIXES", "DEFAULT_FPS", "BLENDER_COLORSPACES", "HEADER_DECIDES"]
