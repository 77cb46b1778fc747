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
    """The tracker's input slots (ROS-free; messages duck-typed): recent images, depth images and CameraInfos.

    :meth:`take` hands out the newest image that is complete: its depth (the closest stamp within
    ``sync_tolerance``) and its CameraInfo (below) are there, whichever arrived first. Older waiting images
    are then stale and dropped (counted in :attr:`stale`): a frame whose depth is late never costs the frame
    before it. When no image is complete, the oldest one that waited ``sync_wait`` seconds is handed out
    alone, for the caller to reject. Queues are bounded (``history``). Not thread-safe: the caller holds its
    lock.

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
        history: int = 30,
    ) -> None:
        self.need_depth, self.need_info = bool(need_depth), bool(need_info)
        self.tolerance_ns = int(sync_tolerance * 1e9)
        self.sync_wait = float(sync_wait)
        self.images: deque = deque()  # (msg, monotonic arrival), oldest first
        self.max_images = max(1, int(history) // 3)
        self.depths: deque = deque(maxlen=history)
        self.infos: deque = deque(maxlen=history)  # (stamp ns, msg, valid)
        self.stale = 0  # images dropped because a newer one was ready (or the queue was full)

    def put_image(self, msg: Any, now: float) -> None:
        """Queue an image (the oldest waiting one is dropped as stale when the queue is full)."""
        if len(self.images) >= self.max_images:
            self.images.popleft()
            self.stale += 1
        self.images.append((msg, now))

    def drain_stale(self) -> int:
        """Images dropped as stale since the last call."""
        n, self.stale = self.stale, 0
        return n

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
        Raises ``ValueError`` for an image stamp that is no time (that image is dropped)."""
        stamps = []
        for i, (msg, _) in enumerate(self.images):
            try:
                stamps.append(stamp_to_ns(msg.header.stamp))
            except ValueError:
                del self.images[i]
                raise
        depth = info = None
        for i in range(len(self.images) - 1, -1, -1):  # newest first; ends on the oldest's matches
            depth = self._match_depth(stamps[i]) if self.need_depth else None
            info = self._match_info(stamps[i]) if self.need_info else None
            if (depth is not None or not self.need_depth) and (info is not None or not self.need_info):
                msg = self.images[i][0]
                for _ in range(i + 1):
                    self.images.popleft()
                self.stale += i
                return msg, depth, info
        if self.images and now - self.images[0][1] >= self.sync_wait:
            return self.images.popleft()[0], depth, info  # incomplete, for the caller to reject
        return None
