"""Decoding of the tracker's synchronised inputs (image, depth, CameraInfo messages) into numpy arrays,
with rectification of distorted / rotated cameras. ROS message types are duck-typed (no rclpy import)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["decode_inputs"]


def decode_inputs(image_msg: Any, depth_msg: Any, info_msg: Any, compressed: bool, rectify_cache: dict):
    """``(rgb uint8 [H, W, 3], depth m [H, W] or None, K [3, 3] or None)`` of one synchronised input.

    Raises the conversion layer's typed errors (``EncodingError``, ``ImageLayoutError``, ``CameraInfoError``,
    ``CompressedImageError``) or ``ValueError`` (depth size differs from the image).
    """
    from online3r_ros.ros.camera_info import camera_info_to_intrinsics, rectify_image, rectify_maps
    from online3r_ros.ros.compressed import compressed_image_to_numpy
    from online3r_ros.ros.image import depth_image_to_metres, image_to_rgb8

    if compressed:
        rgb, _ = compressed_image_to_numpy(image_msg, "rgb8")
    else:
        rgb = image_to_rgb8(image_msg)
    h, w = rgb.shape[:2]
    depth = None
    if depth_msg is not None:
        depth = depth_image_to_metres(depth_msg, invalid="zero")
        if depth.shape != (h, w):
            raise ValueError(
                f"depth size {depth.shape[1]}x{depth.shape[0]} differs from the image size {w}x{h}"
            )
    K = None
    if info_msg is not None:
        intr = camera_info_to_intrinsics(info_msg, image_size=(w, h))
        K = intr.K
        if intr.is_distorted or not np.allclose(intr.R, np.eye(3)):
            key = (
                intr.width,
                intr.height,
                intr.K.tobytes(),
                intr.D.tobytes(),
                intr.R.tobytes(),
                intr.P.tobytes(),
            )
            maps = rectify_cache.get(key)
            if maps is None:
                rectify_cache.clear()
                maps = rectify_cache[key] = rectify_maps(intr)
            rgb = rectify_image(rgb, maps)
            if depth is not None:
                import cv2

                depth = rectify_image(depth, maps, interpolation=cv2.INTER_NEAREST)
            K = maps.new_K
    return np.array(rgb, dtype=np.uint8, order="C"), depth, K  # writable copy (torch warns on views)
