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
    recent CameraInfos. :meth:`take` hands out the newest image with its depth (the closest stamp within
    ``sync_tolerance``, arrived before or after the image) and its CameraInfo (below) once both are there,
    or after ``sync_wait`` seconds without them (the image is then handed out alone, for the caller to
    reject). Not thread-safe: the caller holds its lock.

    CameraInfo by stamp: the one with the image's own stamp (within ``sync_tolerance``) if it arrived, else
    the latest *valid* one stamped before the image, so a calibration change applies from its own frame on,
    whatever the arrival order. An invalid CameraInfo is never used for another frame; the frame with its
    stamp gets it (and is rejected by the conversion). :meth:`put_info` says why one is invalid.
    """

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
        self.infos: deque = deque(maxlen=depth_history)  # (stamp ns, msg, valid)

    def put_image(self, msg: Any, now: float) -> bool:
        """Keep ``msg`` as the newest image; True when it replaced one that was never taken (a drop)."""
        dropped = self.image is not None
        self.image = (msg, now)
        return dropped

    def put_info(self, msg: Any) -> str | None:
        """Keep a CameraInfo; returns why it is unusable (``None`` when valid). One with a stamp that is no
        time is not kept."""
        try:
            stamp_ns = stamp_to_ns(msg.header.stamp)
        except ValueError as exc:
            return f"camera info with a bad stamp ignored: {exc}"
        try:
            camera_info_to_intrinsics(msg)
        except ValueError as exc:  # CameraInfoError
            self.infos.append((stamp_ns, msg, False))
            return f"invalid camera info at {stamp_ns * 1e-9:.6f} (its frame is rejected): {exc}"
        self.infos.append((stamp_ns, msg, True))
        return None

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

    def _match_info(self, stamp_ns: int) -> Any:
        own = [m for s, m, _ in self.infos if abs(s - stamp_ns) <= self.tolerance_ns]
        if own:
            return own[-1]  # the image's own calibration, valid or not (the latest arrival wins)
        before = [(s, m) for s, m, ok in self.infos if ok and s < stamp_ns]
        return max(before, key=lambda sm: sm[0])[1] if before else None

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
        info = self._match_info(stamp_ns) if self.need_info else None
        missing = (self.need_depth and depth is None) or (self.need_info and info is None)
        if missing and now - arrived < self.sync_wait:
            return None
        self.image = None
        return msg, depth, info
