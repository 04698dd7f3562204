"""G-buffer sets: per-pass linear EXR sequences + manifest.json (docs/GBUFFER_SET.md; the format itself is
part of the contract, ``engine/contract/gbuffer_set.py``, re-exported here), their reading and writing,
and THE conversions to and from the models' encodings (`encodings`)."""
from engine.contract.gbuffer_set import (DEFAULT_PASSES, FORMAT, FORWARD_PASSES, MANIFEST_NAME, MODEL_PASSES,
                                         PASS_SPECS, VERSION, GBufferSetError, Manifest, ManifestError,
                                         UnsupportedVersionError, default_pass_entry, dumps, frame_path,
                                         make_provenance, pass_pattern, same_clip, validate)

from .encodings import (BACKGROUND_DEPTH, DEPTH_RANGE_RULE, DepthRangeAccumulator, compute_depth_range,
                        decode_depth, decode_normal, decode_scalar, denormalise_depth, depth_background_mask,
                        depth_manifest, encode_normal, encode_pass, encode_scalar, from_model_outputs,
                        linear_to_srgb, normalise_depth, resolve_depth_range, srgb_to_linear, to_model_inputs)
from .gbuffer_set import (DEPTH_BACKGROUND, GBufferSet, GBufferSetWriter, IncompleteSetError, SetConflictError,
                          open_gbuffer_set)
from .previews import (clip_depth_range, contact_sheet_frames, display_frames, write_contact_sheet,
                       write_pass_video, write_previews)

__all__ = [
    # manifest
    "FORMAT", "VERSION", "MANIFEST_NAME", "PASS_SPECS", "MODEL_PASSES", "DEFAULT_PASSES", "FORWARD_PASSES",
    "Manifest", "validate", "make_provenance", "default_pass_entry", "pass_pattern", "frame_path", "same_clip", "dumps",
    "GBufferSetError", "ManifestError", "UnsupportedVersionError", "IncompleteSetError", "SetConflictError",
    # set I/O
    "GBufferSetWriter", "GBufferSet", "open_gbuffer_set", "DEPTH_BACKGROUND",
    # encodings
    "linear_to_srgb", "srgb_to_linear", "encode_normal", "decode_normal", "encode_scalar", "decode_scalar",
    "BACKGROUND_DEPTH", "DEPTH_RANGE_RULE", "DepthRangeAccumulator", "compute_depth_range", "depth_background_mask",
    "normalise_depth", "denormalise_depth", "decode_depth", "resolve_depth_range", "depth_manifest", "encode_pass",
    "to_model_inputs", "from_model_outputs",
    # previews
    "write_previews", "write_contact_sheet", "write_pass_video", "display_frames", "contact_sheet_frames",
    "clip_depth_range",
]
