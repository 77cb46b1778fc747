"""Dataset -> rosbag2: a 7-Scenes, TUM RGB-D or image-folder sequence as the topics a camera driver and a
motion-capture system would record.

Topics (names fit the tracker's default ``image``/``depth``/``camera_info`` parameters in the root
namespace; :class:`BagTopics` changes them):

==========================  ==========================================  ===================================
topic                       type                                        content
==========================  ==========================================  ===================================
``/image``                  ``sensor_msgs/Image`` ``rgb8``              colour (raw)
``/image/compressed``       ``sensor_msgs/CompressedImage``             colour, ``--compressed jpeg|png``
``/depth``                  ``sensor_msgs/Image`` ``16UC1``             aligned depth, millimetres, 0 = none
``/camera_info``            ``sensor_msgs/CameraInfo``                  the dataset's K, no distortion
``/groundtruth/pose``       ``geometry_msgs/PoseStamped``               ``gt_world`` <- camera (``T_WC``)
``/tf``                     ``tf2_msgs/TFMessage``                      ``gt_world`` -> ``gt_camera``
==========================  ==========================================  ===================================

Camera messages share one stamp per frame and ``frame_id`` ``camera_optical_frame``; log time = stamp.
Stamps are the dataset's (7-Scenes / image folders: frame number / 30 Hz, as their readers assume; TUM: the
recorded times); ``rate_hz`` re-times frame ``i`` to ``t_0 + i / rate_hz``; ``start_s`` shifts them all.
The ground truth is the reader's reference stream within the converted frames' time span (TUM: its own
100 Hz stream), or the per-frame poses when re-timed. Ground truth lives in its own frames so it never
joins the SLAM TF tree.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from online3r_ros.bags.errors import BagError
from online3r_ros.bags.messages import (
    camera_info_msg,
    compressed_image_msg,
    image_msg,
    pose_stamped_msg,
    tf_msg,
    transform_stamped_msg,
)
from online3r_ros.bags.writer import BagWriter, Storage, make_qos
from online3r_ros.datasets import DatasetError, Frame, FrameReader, open_dataset
from online3r_ros.eval.progress import progress
from online3r_ros.ros.time import sec_to_ns

__all__ = ["BagTopics", "ConversionResult", "convert_dataset", "depth_to_millimetres", "write_frames"]

CAMERA_FRAME = "camera_optical_frame"
GT_FRAMES = ("gt_world", "gt_camera")
_SENSOR_QOS = [make_qos(reliable=True, depth=5)]
_TF_QOS = [make_qos(reliable=True, depth=100)]
_POSE_QOS = [make_qos(reliable=True, depth=10)]


@dataclass(frozen=True)
class BagTopics:
    """Topic names and frame ids written by :func:`convert_dataset`."""

    image: str = "/image"
    compressed_image: str = "/image/compressed"
    depth: str = "/depth"
    camera_info: str = "/camera_info"
    groundtruth: str = "/groundtruth/pose"
    tf: str = "/tf"
    camera_frame: str = CAMERA_FRAME
    gt_frames: tuple[str, str] = GT_FRAMES


@dataclass
class ConversionResult:
    """What :func:`convert_dataset` wrote: the bag, its storage, frames, messages per topic, time span (s)."""

    path: Path
    storage: str
    n_frames: int
    counts: dict[str, int]
    start_s: float
    end_s: float
    skipped: list[tuple[str, str]] = field(default_factory=list)


def depth_to_millimetres(depth_m: np.ndarray) -> np.ndarray:
    """``uint16 [H, W]`` millimetres (rounded) from ``float32 [H, W]`` metres; 0 and depths that do not fit
    (non-finite, negative, beyond 65.534 m) become 0 = no measurement."""
    mm = np.rint(np.asarray(depth_m, dtype=np.float64) * 1000.0)
    ok = np.isfinite(mm) & (mm > 0) & (mm < 65535)
    return np.where(ok, mm, 0).astype(np.uint16)


def _frame_messages(frame: Frame, stamp_ns: int, topics: BagTopics, compressed: str | None):
    """``[(topic, message, qos)]`` of one frame: depth and camera info first, then colour."""
    cam = topics.camera_frame
    out = []
    if frame.depth is not None:
        out.append(
            (topics.depth, image_msg(depth_to_millimetres(frame.depth), "16UC1", stamp_ns, cam), _SENSOR_QOS)
        )
    if frame.K is not None:
        out.append(
            (
                topics.camera_info,
                camera_info_msg(frame.K, frame.width, frame.height, stamp_ns, cam),
                _SENSOR_QOS,
            )
        )
    if compressed:
        out.append(
            (topics.compressed_image, compressed_image_msg(frame.rgb, compressed, stamp_ns, cam), _SENSOR_QOS)
        )
    else:
        out.append((topics.image, image_msg(frame.rgb, "rgb8", stamp_ns, cam), _SENSOR_QOS))
    return out


def _groundtruth_messages(T: np.ndarray, stamp_ns: int, topics: BagTopics):
    """``[(topic, message, qos)]`` of one ground-truth pose: ``PoseStamped`` and its ``/tf`` transform."""
    world, camera = topics.gt_frames
    return [
        (topics.groundtruth, pose_stamped_msg(T, stamp_ns, world), _POSE_QOS),
        (topics.tf, tf_msg([transform_stamped_msg(T, stamp_ns, world, camera)]), _TF_QOS),
    ]


def _reference_stream(reader: FrameReader) -> tuple[np.ndarray, np.ndarray] | None:
    """The reader's ground-truth stream as ``(stamps ns int64 [M], T [M, 4, 4])`` or ``None``."""
    gt = reader.gt_trajectory()
    if gt is None or len(gt[0]) == 0:
        return None
    return np.array([sec_to_ns(t) for t in gt[0]], dtype=np.int64), np.asarray(gt[1], dtype=np.float64)


def write_frames(
    writer: BagWriter,
    frames: FrameReader,
    *,
    topics: BagTopics = BagTopics(),
    compressed: str | None = None,
    rate_hz: float | None = None,
    start_ns: int | None = None,
    show_progress: bool | None = None,
) -> list[int]:
    """Write every frame of ``frames`` and the ground truth, in log-time order; returns the frame stamps (ns).

    Without ``rate_hz`` the ground truth is the reader's reference stream between the first and the last
    frame (each sample written before the first frame that is not older); with ``rate_hz`` the frames are
    re-timed and each frame's own pose is written with it. ``start_ns`` shifts every stamp (frames and
    ground truth alike) so that the first frame is at ``start_ns``.
    """
    reference = None if rate_hz else _reference_stream(frames)
    stamps: list[int] = []
    first = shift = 0
    next_gt = 0
    for frame in progress(frames, total=len(frames), desc="convert", enabled=show_progress, unit="frame"):
        raw = sec_to_ns(frame.timestamp)  # the dataset's time line
        if not stamps:
            first, shift = raw, 0 if start_ns is None else int(start_ns) - raw
        if rate_hz:
            raw = first + int(round(len(stamps) * 1e9 / rate_hz))
        stamp = raw + shift
        messages = []
        if reference is not None:
            t_ref, T_ref = reference
            if not stamps:  # nothing before the first frame
                next_gt = int(np.searchsorted(t_ref, raw, side="left"))
            stop = int(np.searchsorted(t_ref, raw, side="right"))
            for i in range(next_gt, stop):
                t_gt = int(t_ref[i]) + shift
                messages += [(t_gt, m) for m in _groundtruth_messages(T_ref[i], t_gt, topics)]
            next_gt = stop
        elif frame.pose_gt is not None:
            messages += [(stamp, m) for m in _groundtruth_messages(frame.pose_gt, stamp, topics)]
        messages += [(stamp, m) for m in _frame_messages(frame, stamp, topics, compressed)]
        for log_ns, (topic, msg, qos) in messages:
            writer.write(topic, msg, log_ns, qos)
        stamps.append(stamp)
    return stamps


def convert_dataset(
    dataset: str | Path,
    out: str | Path,
    *,
    storage: Storage = "mcap",
    compressed: str | None = None,
    rate_hz: float | None = None,
    start_s: float | None = None,
    max_frames: int | None = None,
    stride: int = 1,
    intrinsics=None,
    topics: BagTopics = BagTopics(),
    overwrite: bool = False,
    show_progress: bool | None = None,
) -> ConversionResult:
    """Convert the dataset folder ``dataset`` into the rosbag2 folder ``out`` (see the module docstring).

    Args:
        storage: ``"mcap"`` or ``"sqlite3"``.
        compressed: ``None`` (raw ``rgb8``), ``"jpeg"`` or ``"png"`` (``CompressedImage``).
        rate_hz: re-time the frames at this rate (default: the dataset's own stamps).
        start_s: shift all stamps so that the first frame is at this time (s); e.g. for 7-Scenes, whose
            first frame is at 0 s (a zero stamp means "latest" to tf2 and "no time yet" to a sim clock).
        max_frames, stride, intrinsics: as :func:`online3r_ros.datasets.open_dataset`.

    Raises:
        BagError: unreadable dataset, no usable frame, existing ``out``, bad options.
    """
    if compressed not in (None, "jpeg", "png"):
        raise BagError(f"--compressed must be jpeg or png, got {compressed!r}")
    if rate_hz is not None and not rate_hz > 0:
        raise BagError(f"--rate must be positive, got {rate_hz}")
    if start_s is not None and not start_s >= 0:
        raise BagError(f"--start must be >= 0 s, got {start_s}")
    try:
        reader = open_dataset(
            dataset, intrinsics=intrinsics, stride=stride, max_frames=max_frames, bad_depth="keep"
        )
    except DatasetError as exc:
        raise BagError(str(exc)) from exc
    writer = BagWriter(out, storage, overwrite=overwrite)
    try:
        with writer:
            stamps = write_frames(
                writer,
                reader,
                topics=topics,
                compressed=compressed,
                rate_hz=rate_hz,
                start_ns=None if start_s is None else sec_to_ns(start_s),
                show_progress=show_progress,
            )
        if not stamps:
            raise BagError(f"{dataset}: no usable frames")
    except DatasetError as exc:
        shutil.rmtree(writer.path, ignore_errors=True)
        raise BagError(str(exc)) from exc
    except BaseException:
        shutil.rmtree(writer.path, ignore_errors=True)  # no half-written bag
        raise
    return ConversionResult(
        path=Path(out),
        storage=storage,
        n_frames=len(stamps),
        counts=dict(writer.counts),
        start_s=stamps[0] / 1e9,
        end_s=stamps[-1] / 1e9,
        skipped=[(s.path, s.reason) for s in reader.skipped],
    )
