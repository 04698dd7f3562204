"""Environment-map processing for the forward renderer (HDR I/O, tone mappings, projection)."""

from .conformance_case import MissingInputError, run_envproj_case, run_envproj_cases
from .cubemap import latlong_to_cubemap, pad_cubemap, sample_cubemap
from .directions import (
    ball_reflect_vec,
    env_direction_map,
    envmap_vec,
    ideal_ball,
    latlong_vec,
    rotation_y,
)
from .encoding import encode_ldr, encode_log, reinhard16, srgb_oetf
from .hdr_io import EnvmapLoadError, load_envmap, read_exr, read_hdr, write_hdr
from .projection import (
    BLENDER_FROM_ENV,
    env_rotation_from_blender,
    fixed_camera_pose,
    get_cam_matrix,
    light_rotation_angles,
    prepare_envmap,
    process_environment_map,
    rotate_vectors,
)

__all__ = [
    "BLENDER_FROM_ENV",
    "EnvmapLoadError",
    "MissingInputError",
    "ball_reflect_vec",
    "encode_ldr",
    "encode_log",
    "env_direction_map",
    "env_rotation_from_blender",
    "envmap_vec",
    "fixed_camera_pose",
    "get_cam_matrix",
    "ideal_ball",
    "latlong_to_cubemap",
    "latlong_vec",
    "light_rotation_angles",
    "load_envmap",
    "pad_cubemap",
    "prepare_envmap",
    "process_environment_map",
    "read_exr",
    "read_hdr",
    "reinhard16",
    "rotate_vectors",
    "rotation_y",
    "run_envproj_case",
    "run_envproj_cases",
    "sample_cubemap",
    "srgb_oetf",
    "write_hdr",
]
