"""Synthetic RGB-D test scenes: analytic ray casting of a textured room, exact depth and poses, closed loops.

seq = make_synthetic_sequence(n_frames=120, width=160, height=120, seed=0)
for frame in seq: ...            # same Frame records as online3r_ros.datasets readers
"""

from __future__ import annotations

from .scene import Box, Sphere, SyntheticScene, default_scene
from .sequence import (
    DepthNoise,
    RenderResult,
    SyntheticSequence,
    default_K,
    make_synthetic_sequence,
    make_wall_sequence,
    pixel_rays,
    render,
    save_seven_scenes,
    save_tum,
)
from .texture import SolidTexture
from .trajectory import look_at, orbit_trajectory, wall_trajectory

__all__ = [
    "Box",
    "DepthNoise",
    "RenderResult",
    "SolidTexture",
    "Sphere",
    "SyntheticScene",
    "SyntheticSequence",
    "default_K",
    "default_scene",
    "look_at",
    "make_synthetic_sequence",
    "make_wall_sequence",
    "orbit_trajectory",
    "pixel_rays",
    "render",
    "save_seven_scenes",
    "save_tum",
    "wall_trajectory",
]
