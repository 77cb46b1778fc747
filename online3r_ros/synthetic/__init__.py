"""Synthetic RGB-D test scenes: analytic ray casting of a textured room, exact depth and poses, closed loops.

seq = make_synthetic_sequence(n_frames=120, width=160, height=120, seed=0)
for frame in seq: ...            # same Frame records as online3r_ros.datasets readers
loop = make_loop_sequence(400, room=1)           # a loop closure in the second room
covered = OccludedSequence(loop, range(100, 130), mode="blank")
"""

from __future__ import annotations

from .occlusion import OCCLUSION_MODES, OccludedSequence, near_object_rgb
from .scene import ROOMS, Box, Sphere, SyntheticScene, default_scene, room_scene
from .sequence import (
    DepthNoise,
    RenderResult,
    SyntheticSequence,
    default_K,
    make_loop_sequence,
    make_synthetic_sequence,
    make_wall_sequence,
    pixel_rays,
    render,
    save_seven_scenes,
    save_tum,
)
from .texture import SolidTexture
from .trajectory import (
    heading_forward,
    look_at,
    loop_lap_frames,
    loop_trajectory,
    orbit_trajectory,
    wall_trajectory,
)

__all__ = [
    "OCCLUSION_MODES",
    "ROOMS",
    "Box",
    "DepthNoise",
    "OccludedSequence",
    "RenderResult",
    "SolidTexture",
    "Sphere",
    "SyntheticScene",
    "SyntheticSequence",
    "default_K",
    "default_scene",
    "heading_forward",
    "look_at",
    "loop_lap_frames",
    "loop_trajectory",
    "make_loop_sequence",
    "make_synthetic_sequence",
    "make_wall_sequence",
    "orbit_trajectory",
    "near_object_rgb",
    "pixel_rays",
    "render",
    "room_scene",
    "save_seven_scenes",
    "save_tum",
    "wall_trajectory",
]
