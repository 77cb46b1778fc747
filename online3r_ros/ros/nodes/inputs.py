"""The tracker's inputs: pairing the newest image with its depth and CameraInfo (:class:`InputSync`), and
decoding them into numpy arrays with rectification of distorted / rotated cameras (:func:`decode_inputs`).
ROS message types are duck-typed (no rclpy import)."""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from online3r_ros.ros.camera_info import camera_info_to_intrinsics, rectify_image, rectify_maps
from online3r_ros.ros.compressed import compressed_image_to_numpy
from online3r_ros.ros.image import depth_image_to_metres, image_to_rgb8
from online3r_ros.ros.time import stamp_to_ns

__all__ = ["decode_inputs", "InputSync"]


def decode_inputs(image_msg: Any, depth_msg: Any, info_msg: Any, compressed: bool, rectify_cache: dict):
    """``(rgb uint8 [H, W, 3], depth m [H, W] or None, K [3, 3] or None)`` of one synchronised input.

    Raises the conversion layer's typed errors (``EncodingError``, ``ImageLayoutError``, ``CameraInfoError``,
    ``CompressedImageError``) or ``ValueError`` (depth size differs from the image).
    """
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


class InputSync:
    """The tracker's input slots (ROS-free; messages duck-typed): the newest image, recent depth images and
    the latest CameraInfo. :meth:`take` hands out the newest image with its depth (the one with the closest
    stamp within ``sync_tolerance``) and CameraInfo once both are there, or after ``sync_wait`` seconds
    without them (the image is then handed out alone, for the caller to reject). Not thread-safe: the caller
    holds its lock."""

    def __init__(
        self,
        need_depth: bool,
        need_info: bool,
        sync_tolerance: float,
        sync_wait: float,
        depth_history: int = 30,
    ) -> None:
        self.need_depth, self.need_info = bool(need_depth), bool(need_info)
        self.tolerance_ns = int(sync_tolerance * 1e9)
        self.sync_wait = float(sync_wait)
        self.image: tuple[Any, float] | None = None  # (msg, monotonic arrival)
        self.depths: deque = deque(maxlen=depth_history)
        self.info: Any = None

    def put_image(self, msg: Any, now: float) -> bool:
        """Keep ``msg`` as the newest image; True when it replaced one that was never taken (a drop)."""
        dropped = self.image is not None
        self.image = (msg, now)
        return dropped

    def _match_depth(self, stamp_ns: int) -> Any:
        best = None
        for d in list(self.depths):
            try:
                dt = abs(stamp_to_ns(d.header.stamp) - stamp_ns)
            except ValueError:
                self.depths.remove(d)
                continue
            if dt <= self.tolerance_ns and (best is None or dt < best[0]):
                best = (dt, d)
        return None if best is None else best[1]

    def take(self, now: float) -> tuple[Any, Any, Any] | None:
        """``(image, depth or None, info or None)`` when ready (see the class docstring), else ``None``.
        Raises ``ValueError`` for an image stamp that is no time (the image is dropped)."""
        if self.image is None:
            return None
        msg, arrived = self.image
        try:
            stamp_ns = stamp_to_ns(msg.header.stamp)
        except ValueError:
            self.image = None
            raise
        depth = self._match_depth(stamp_ns) if self.need_depth else None
        missing = (self.need_depth and depth is None) or (self.need_info and self.info is None)
        if missing and now - arrived < self.sync_wait:
            return None
        self.image = None
        return msg, depth, self.info
