"""RGB-D frames from a bag: find the camera topics, pair colour with depth by stamp, decode to numpy.

Discovery (:func:`find_rgbd_topics`, used when topics are not given):

* colour: ``sensor_msgs/Image`` whose first message has a colour encoding (``rgb8``, ``bgr8``, ``rgba8``,
  ``bgra8``, ``mono8``) or a ``CompressedImage`` that is not ``compressedDepth``; raw images are preferred
  over compressed ones, then the topic with most messages;
* depth: an ``Image`` with a depth encoding (``16UC1``, ``mono16``, ``32FC1``) or a ``compressedDepth``
  ``CompressedImage``, the one sharing the longest namespace with the colour topic;
* CameraInfo: ``<namespace of the colour topic>/camera_info`` (``/cam/color/image_raw[/compressed]`` ->
  ``/cam/color/camera_info``), else the CameraInfo topic sharing the longest namespace.

Pairing (:func:`iter_rgbd_frames`): each colour image takes the depth image with the nearest stamp within
``max_dt`` seconds (none: ``depth is None``) and the latest CameraInfo received before it (the bag's first
one for images that come before any). Colour and depth (and CameraInfo) of different sizes raise
:class:`~online3r_ros.bags.errors.FrameSizeError`. No ROS dependency.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from online3r_ros.bags.errors import BagError, FrameSizeError, NoImageTopicError
from online3r_ros.bags.reader import (
    describe_topics,
    deserialize,
    iter_messages,
    open_bag,
    topic_connections,
    topics_text,
)
from online3r_ros.ros.camera_info import Intrinsics, camera_info_to_intrinsics
from online3r_ros.ros.compressed import compressed_depth_to_numpy, compressed_image_to_numpy
from online3r_ros.ros.errors import CameraInfoError, ConversionError
from online3r_ros.ros.image import DEPTH_ENCODINGS, depth_to_metres, image_to_numpy, image_to_rgb8
from online3r_ros.ros.time import stamp_to_ns

__all__ = ["BagFrame", "RgbdTopics", "find_rgbd_topics", "iter_rgbd_frames"]

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
_COLOUR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")


@dataclass(frozen=True)
class RgbdTopics:
    """The camera topics of a bag (``depth``/``camera_info`` may be ``None``)."""

    image: str
    depth: str | None = None
    camera_info: str | None = None
    compressed: bool = False


@dataclass(frozen=True)
class BagFrame:
    """One colour image with its depth and intrinsics.

    Attributes:
        index: position among the frames yielded; stamp_ns: the colour image's header stamp.
        rgb: ``uint8 [H, W, 3]``.
        depth: ``float32 [H, W]`` metres (0 = no measurement) or ``None``.
        depth_raw: the depth image as stored (``uint16`` mm for ``16UC1``, ``float32`` m for ``32FC1``).
        depth_stamp_ns: the paired depth image's stamp (``-1`` without depth).
        intrinsics: from the CameraInfo (``K``, distortion, ...) or ``None``.
        frame_id: the colour image's ``header.frame_id``.
    """

    index: int
    stamp_ns: int
    rgb: np.ndarray
    depth: np.ndarray | None
    depth_raw: np.ndarray | None
    depth_stamp_ns: int
    intrinsics: Intrinsics | None
    frame_id: str

    @property
    def timestamp(self) -> float:
        """Stamp in seconds."""
        return self.stamp_ns / 1e9

    @property
    def K(self) -> np.ndarray | None:
        """``[3, 3]`` camera matrix or ``None``."""
        return None if self.intrinsics is None else self.intrinsics.K


def _namespace(topic: str) -> str:
    parts = topic.rstrip("/").split("/")
    if parts[-1] in ("compressed", "compressedDepth") and len(parts) > 2:
        parts = parts[:-1]
    return "/".join(parts[:-1])


def _shared_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a.split("/"), b.split("/"), strict=False):
        if x != y:
            break
        n += 1
    return n


def _first_message(reader: Any, topic: str) -> Any:
    conns = topic_connections(reader, topic)
    for conn, _, raw in iter_messages(reader, conns):
        return deserialize(reader, raw, conn.msgtype)
    return None


def _classify(reader: Any, topic: str, msgtype: str) -> str | None:
    """``"colour"``, ``"depth"`` or ``None`` (unusable) for an image topic, from its first message."""
    msg = _first_message(reader, topic)
    if msg is None:
        return None
    if msgtype == COMPRESSED:
        return "depth" if "compresseddepth" in str(msg.format).lower() else "colour"
    if msg.encoding in DEPTH_ENCODINGS:
        return "depth"
    return "colour" if msg.encoding in _COLOUR_ENCODINGS else None


def _find_topics(reader: Any) -> RgbdTopics:
    topics = describe_topics(reader)
    colour, depth = [], []
    for t in topics:
        if t.msgtype in (IMAGE, COMPRESSED) and t.count:
            kind = _classify(reader, t.name, t.msgtype)
            (colour if kind == "colour" else depth if kind == "depth" else []).append(t)
    if not colour:
        raise NoImageTopicError(f"the bag has no colour image topic; it holds {topics_text(topics)}")
    image = min(colour, key=lambda t: (t.msgtype == COMPRESSED, -t.count, t.name))
    ns = _namespace(image.name)
    best_depth = max(depth, key=lambda t: (_shared_prefix(ns, t.name), t.count), default=None)
    infos = [t for t in topics if t.msgtype == CAMERA_INFO]
    beside = [t for t in infos if t.name == f"{ns}/camera_info"]
    info = (
        beside[0] if beside else max(infos, key=lambda t: (_shared_prefix(ns, t.name), t.count), default=None)
    )
    return RgbdTopics(
        image=image.name,
        depth=None if best_depth is None else best_depth.name,
        camera_info=None if info is None else info.name,
        compressed=image.msgtype == COMPRESSED,
    )


def find_rgbd_topics(path: str | Path) -> RgbdTopics:
    """The colour, depth and CameraInfo topics of the bag at ``path`` (see the module docstring).

    Raises:
        NoImageTopicError: no colour image topic (the message lists the bag's topics).
    """
    with open_bag(path) as reader:
        return _find_topics(reader)


def _check(topic_type: str, reader: Any, topic: str, expected: tuple[str, ...]) -> list:
    conns = topic_connections(reader, topic)
    if conns[0].msgtype not in expected:
        raise BagError(
            f"{topic_type} topic {topic} is a {conns[0].msgtype}, expected {' or '.join(expected)}"
        )
    return conns


def _decode_depth(msg: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(metres float32, raw array)`` of a depth Image or compressedDepth CompressedImage."""
    if hasattr(msg, "format"):
        raw, encoding = compressed_depth_to_numpy(msg)
    else:
        raw, encoding = image_to_numpy(msg), msg.encoding
    return depth_to_metres(raw, "16UC1" if encoding == "mono16" else encoding, invalid="zero"), raw


def _decode(index: int, image: Any, depth: Any, info: Any, topics: RgbdTopics) -> BagFrame:
    stamp = stamp_to_ns(image.header.stamp)
    try:
        rgb = compressed_image_to_numpy(image, "rgb8")[0] if topics.compressed else image_to_rgb8(image)
        h, w = rgb.shape[:2]
        metres = raw = None
        if depth is not None:
            metres, raw = _decode_depth(depth)
            if metres.shape != (h, w):
                raise FrameSizeError(
                    f"frame at {stamp / 1e9:.6f} s: colour {w}x{h} ({topics.image}) but depth "
                    f"{metres.shape[1]}x{metres.shape[0]} ({topics.depth}); colour and depth must be aligned"
                )
        intrinsics = None if info is None else camera_info_to_intrinsics(info, image_size=(w, h))
    except CameraInfoError as exc:
        raise FrameSizeError(
            f"frame at {stamp / 1e9:.6f} s: {topics.camera_info} does not fit {topics.image}: {exc}"
        ) from exc
    except ConversionError as exc:
        raise BagError(f"frame at {stamp / 1e9:.6f} s cannot be decoded: {exc}") from exc
    depth_stamp = -1 if depth is None else stamp_to_ns(depth.header.stamp)
    return BagFrame(index, stamp, rgb, metres, raw, depth_stamp, intrinsics, str(image.header.frame_id))


def iter_rgbd_frames(
    path: str | Path,
    topics: RgbdTopics | None = None,
    *,
    max_dt: float = 0.02,
    max_frames: int | None = None,
) -> Iterator[BagFrame]:
    """Colour + depth + intrinsics of the bag at ``path``, one :class:`BagFrame` per colour image, in order.

    Args:
        topics: the camera topics (default: :func:`find_rgbd_topics`).
        max_dt: the largest stamp difference (s) between a colour image and its depth.
        max_frames: stop after this many frames.

    Raises:
        BagError: missing / corrupt bag, unknown topics, a topic of the wrong type, undecodable images;
            :class:`NoImageTopicError` without a colour topic; :class:`FrameSizeError` for size mismatches.
    """
    tol = int(round(max_dt * 1e9))
    with open_bag(path) as reader:
        topics = topics or _find_topics(reader)
        conns = _check("image", reader, topics.image, (IMAGE, COMPRESSED))
        depth_conns = _check("depth", reader, topics.depth, (IMAGE, COMPRESSED)) if topics.depth else []
        info_conns = (
            _check("camera_info", reader, topics.camera_info, (CAMERA_INFO,)) if topics.camera_info else []
        )
        info = _first_message(reader, topics.camera_info) if topics.camera_info else None
        depth_topic = depth_conns[0].topic if depth_conns else None
        info_topic = info_conns[0].topic if info_conns else None
        pending: deque[tuple[int, Any, Any]] = deque()  # colour images waiting for their depth
        depths: deque[tuple[int, Any]] = deque()
        count = 0

        def ready(final: bool) -> Iterator[BagFrame]:
            nonlocal count
            while pending and (final or not depth_topic or (depths and depths[-1][0] > pending[0][0] + tol)):
                stamp, image, image_info = pending.popleft()
                near = [d for d in depths if abs(d[0] - stamp) <= tol]
                depth = min(near, key=lambda d: abs(d[0] - stamp))[1] if near else None
                while depths and depths[0][0] < stamp - tol:
                    depths.popleft()
                if max_frames is None or count < max_frames:
                    yield _decode(count, image, depth, image_info, topics)
                    count += 1

        for conn, _, raw in iter_messages(reader, [*conns, *depth_conns, *info_conns]):
            msg = deserialize(reader, raw, conn.msgtype)
            if conn.topic == info_topic:
                info = msg
                continue
            entry = stamp_to_ns(msg.header.stamp)
            if conn.topic == depth_topic:
                depths.append((entry, msg))
            else:
                pending.append((entry, msg, info))
            yield from ready(final=False)
            if max_frames is not None and count >= max_frames:
                return
        yield from ready(final=True)
