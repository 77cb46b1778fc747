"""Pointmap sources behind one interface (:mod:`online3r_ros.sources.base`).

- :class:`~online3r_ros.sources.rgbd.RGBDSource`: metric pointmaps from depth images (no network).
- ``online3r_ros.sources.mast3r``: the MASt3R network source (imported on demand, it is heavier).
"""

from online3r_ros.sources.base import (
    AsymmetricPrediction,
    Pointmap,
    PointmapSource,
    SourceError,
    SourceFrame,
    SymmetricPrediction,
    image_to_tensor,
)
from online3r_ros.sources.rgbd import RGBDSource

__all__ = [
    "AsymmetricPrediction",
    "Pointmap",
    "PointmapSource",
    "SourceError",
    "SourceFrame",
    "SymmetricPrediction",
    "image_to_tensor",
    "RGBDSource",
]
