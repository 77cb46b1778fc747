"""Publish RGB-D frames like a camera driver; spin a node in a thread; call Trigger services.

- :class:`FrameStreamer` publishes ``sensor_msgs/Image`` (``rgb8``), an aligned depth ``Image`` (``32FC1``
  metres) and ``CameraInfo`` with one stamp per frame (reliable, keep-last 5: what drivers do under
  REP-2003; the tracker subscribes best effort and takes the newest frame). :func:`stream_frames` paces the
  frames at a fixed rate (or as fast as a ``ready`` callback allows) and returns when each was sent.
- :class:`SpinThread` spins a node on its own executor thread; :func:`call_trigger` calls a
  ``std_srvs/Trigger`` service with a bounded wait; :func:`wait_until` polls a predicate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from online3r_ros.ros.camera_info import Intrinsics, intrinsics_to_camera_info
from online3r_ros.ros.image import metres_to_depth_image, numpy_to_image
from online3r_ros.ros.qos import reliable_qos

__all__ = ["FrameStreamer", "SentFrame", "SpinThread", "call_trigger", "stream_frames", "wait_until"]


def wait_until(predicate: Callable[[], bool], timeout: float, period: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(period)


class SpinThread:
    """Spin ``node`` on a single-threaded executor in a daemon thread until :meth:`stop`."""

    def __init__(self, node: Any) -> None:
        from rclpy.executors import SingleThreadedExecutor

        self.executor = SingleThreadedExecutor(context=node.context)
        self.executor.add_node(node)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="online3r-spin", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and self.executor.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - context shut down under us: stop spinning
                if not self.executor.context.ok():
                    break
                raise

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5.0)
        self.executor.shutdown(timeout_sec=1.0)


# --------------------------------------------------------------------------------------------- publishing
@dataclass(frozen=True)
class SentFrame:
    """A published frame: its index in the sequence, the header stamp (ns) and the monotonic send time."""

    index: int
    stamp_ns: int
    sent: float


class FrameStreamer:
    """Publishers of one RGB-D camera: colour ``Image``, depth ``Image`` (optional) and ``CameraInfo``.

    Args:
        node: the rclpy node owning the publishers.
        image_topic, depth_topic, camera_info_topic: topic names ('' for depth / camera_info: not published).
        frame_id: ``header.frame_id`` of every message (the camera's optical frame).
        depth: history depth of the publishers.
    """

    def __init__(
        self,
        node: Any,
        image_topic: str,
        depth_topic: str = "",
        camera_info_topic: str = "",
        frame_id: str = "camera_optical_frame",
        depth: int = 5,
    ) -> None:
        from sensor_msgs.msg import CameraInfo, Image

        if not image_topic:
            raise ValueError("image_topic must not be empty")
        qos = reliable_qos(depth)
        self.frame_id = frame_id
        self.image_pub = node.create_publisher(Image, image_topic, qos)
        self.depth_pub = node.create_publisher(Image, depth_topic, qos) if depth_topic else None
        self.info_pub = (
            node.create_publisher(CameraInfo, camera_info_topic, qos) if camera_info_topic else None
        )

    def subscriber_count(self) -> int:
        """Smallest subscription count over the streamer's topics (0 until the tracker listens to all)."""
        pubs = [p for p in (self.image_pub, self.depth_pub, self.info_pub) if p is not None]
        return min(p.get_subscription_count() for p in pubs)

    def publish(
        self, rgb: np.ndarray, depth_m: np.ndarray | None, K: np.ndarray | None, stamp_ns: int
    ) -> None:
        """Publish one frame (depth and camera info first, so the image finds its partners waiting).

        Args:
            rgb: ``uint8 [H, W, 3]``; depth_m: ``float32 [H, W]`` metres (0 = no measurement) or ``None``;
            K: ``[3, 3]`` pinhole intrinsics or ``None``; stamp_ns: header stamp, integer nanoseconds.
        """
        h, w = rgb.shape[:2]
        if self.depth_pub is not None and depth_m is not None:
            self.depth_pub.publish(
                metres_to_depth_image(
                    depth_m, "32FC1", invalid="zero", frame_id=self.frame_id, stamp=stamp_ns
                )
            )
        if self.info_pub is not None and K is not None:
            intr = Intrinsics(width=w, height=h, K=np.asarray(K, np.float64), frame_id=self.frame_id)
            self.info_pub.publish(intrinsics_to_camera_info(intr, stamp=stamp_ns))
        self.image_pub.publish(numpy_to_image(rgb, "rgb8", frame_id=self.frame_id, stamp=stamp_ns))


def stream_frames(
    streamer: FrameStreamer,
    frames: Iterable[Any],
    rate_hz: float | None,
    *,
    start_ns: int | None = None,
    ready: Callable[[int], bool] | None = None,
    ready_timeout: float = 30.0,
    stop: threading.Event | None = None,
) -> list[SentFrame]:
    """Publish ``frames`` (objects with ``rgb``, ``depth``, ``K``) and return what was sent.

    Args:
        rate_hz: publishing rate (frame ``i`` leaves at ``t0 + i / rate``; a late frame is sent at once and
            the schedule is kept, so a slow publisher never bunches frames up). ``None``: as fast as
            ``ready`` allows.
        start_ns: stamp of frame 0 (default: the wall clock at the start); frame ``i`` is stamped
            ``start_ns + i / rate`` (``rate`` 30 Hz when ``rate_hz`` is ``None``), so stamps are unique,
            increasing and on the camera's schedule whatever the publishing jitter.
        ready: ``ready(i) -> bool`` polled before frame ``i`` is sent (e.g. "the tracker answered frame
            i - 1"); waits at most ``ready_timeout`` seconds per frame, then sends anyway.
        stop: set it to end the stream early.
    """
    period_ns = int(round(1e9 / (rate_hz if rate_hz else 30.0)))
    start_ns = time.time_ns() if start_ns is None else int(start_ns)
    sent: list[SentFrame] = []
    t0 = time.monotonic()
    for i, frame in enumerate(frames):
        if stop is not None and stop.is_set():
            break
        if ready is not None:
            wait_until(lambda i=i: ready(i) or (stop is not None and stop.is_set()), ready_timeout, 0.002)
        if rate_hz:
            delay = t0 + i / rate_hz - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        stamp = start_ns + i * period_ns
        streamer.publish(frame.rgb, frame.depth, frame.K, stamp)
        sent.append(SentFrame(i, stamp, time.monotonic()))
    return sent


def call_trigger(node: Any, service: str, timeout: float = 10.0) -> tuple[bool, str]:
    """Call a ``std_srvs/Trigger`` service; ``(success, message)``, or ``(False, reason)`` on time-out.
    The node must be spinning elsewhere (e.g. :class:`SpinThread`)."""
    from std_srvs.srv import Trigger

    client = node.create_client(Trigger, service)
    try:
        if not client.wait_for_service(timeout_sec=timeout):
            return False, f"service {service} not available after {timeout:.0f} s"
        future = client.call_async(Trigger.Request())
        if not wait_until(future.done, timeout):
            return False, f"service {service} did not answer within {timeout:.0f} s"
        result = future.result()
        return bool(result.success), str(result.message)
    finally:
        node.destroy_client(client)
