"""Build ``rosbags`` messages from numpy and serialise them as ROS 2 CDR (no ROS install needed).

All builders use :data:`TYPESTORE` (ROS 2 Jazzy definitions: their type hashes equal those of the Humble,
Jazzy and Kilted message packages for every type written here). Arrays follow the project's conventions:
colour ``uint8 [H, W, 3]`` RGB, depth ``uint16 [H, W]`` millimetres (0 = no measurement), ``K`` ``[3, 3]``,
poses ``[4, 4]`` parent <- child. Stamps are integer nanoseconds.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from rosbags.typesys import Stores, get_typestore

from online3r_ros.ros.pose import matrix_to_quat
from online3r_ros.ros.time import MAX_STAMP_NS

__all__ = [
    "TYPESTORE",
    "camera_info_msg",
    "compressed_image_msg",
    "header_msg",
    "image_msg",
    "pose_stamped_msg",
    "serialize",
    "tf_msg",
    "transform_stamped_msg",
]

#: Message definitions used to write bags and to read bags that carry no definitions of their own.
TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
_T = TYPESTORE.types


def serialize(msg: Any) -> bytes:
    """ROS 2 CDR bytes (little endian, with the encapsulation header) of a ``rosbags`` message."""
    return bytes(TYPESTORE.serialize_cdr(msg, msg.__msgtype__))


def header_msg(stamp_ns: int, frame_id: str) -> Any:
    """``std_msgs/Header`` with an exact ``builtin_interfaces/Time`` from integer nanoseconds."""
    stamp_ns = int(stamp_ns)
    if not 0 <= stamp_ns <= MAX_STAMP_NS:
        raise ValueError(f"stamp {stamp_ns} ns is outside builtin_interfaces/Time")
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    return _T["std_msgs/msg/Header"](
        stamp=_T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id=frame_id
    )


def image_msg(pixels: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> Any:
    """``sensor_msgs/Image`` (little endian, no row padding).

    Args:
        pixels: ``uint8 [H, W, 3]`` for ``rgb8``, ``uint16 [H, W]`` for ``16UC1``, ``float32 [H, W]`` for
            ``32FC1``.
    """
    expected = {"rgb8": (np.uint8, 3), "16UC1": (np.uint16, 2), "32FC1": (np.float32, 2)}
    if encoding not in expected:
        raise ValueError(f"image_msg writes {sorted(expected)}, not {encoding!r}")
    dtype, ndim = expected[encoding]
    if pixels.dtype != dtype or pixels.ndim != ndim or (ndim == 3 and pixels.shape[2] != 3):
        raise ValueError(
            f"{encoding} needs {np.dtype(dtype)} with {ndim} dims, got {pixels.dtype} {pixels.shape}"
        )
    h, w = pixels.shape[:2]
    raw = np.ascontiguousarray(pixels, dtype=np.dtype(dtype).newbyteorder("<")).view(np.uint8).reshape(-1)
    return _T["sensor_msgs/msg/Image"](
        header=header_msg(stamp_ns, frame_id),
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=0,
        step=raw.size // h,
        data=raw,
    )


def compressed_image_msg(rgb: np.ndarray, fmt: str, stamp_ns: int, frame_id: str, quality: int = 95) -> Any:
    """``sensor_msgs/CompressedImage`` of ``uint8 [H, W, 3]`` RGB, ``fmt`` ``"jpeg"`` or ``"png"``.

    ``format`` is written as ``compressed_image_transport`` does (``"rgb8; jpeg compressed bgr8"``).
    """
    if fmt not in ("jpeg", "png"):
        raise ValueError(f"compressed format must be jpeg or png, got {fmt!r}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, buf = cv2.imencode("." + fmt, np.ascontiguousarray(rgb[..., ::-1]), params)
    if not ok:
        raise ValueError(f"could not encode a {rgb.shape} image as {fmt}")
    return _T["sensor_msgs/msg/CompressedImage"](
        header=header_msg(stamp_ns, frame_id), format=f"rgb8; {fmt} compressed bgr8", data=buf.reshape(-1)
    )


def camera_info_msg(K: np.ndarray, width: int, height: int, stamp_ns: int, frame_id: str) -> Any:
    """``sensor_msgs/CameraInfo`` of a pinhole camera without distortion (``plumb_bob``, zero ``d``)."""
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    P = np.zeros((3, 4))
    P[:, :3] = K
    return _T["sensor_msgs/msg/CameraInfo"](
        header=header_msg(stamp_ns, frame_id),
        height=int(height),
        width=int(width),
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=K.reshape(-1).copy(),
        r=np.eye(3).reshape(-1),
        p=P.reshape(-1),
        binning_x=0,
        binning_y=0,
        roi=_T["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        ),
    )


def _pose_parts(T: np.ndarray) -> tuple[Any, Any]:
    T = np.asarray(T, dtype=np.float64)
    x, y, z = (float(v) for v in T[:3, 3])
    qx, qy, qz, qw = (float(v) for v in matrix_to_quat(T[:3, :3]))
    return (
        _T["geometry_msgs/msg/Vector3"](x=x, y=y, z=z),
        _T["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw),
    )


def pose_stamped_msg(T: np.ndarray, stamp_ns: int, frame_id: str) -> Any:
    """``geometry_msgs/PoseStamped`` of a rigid ``[4, 4]`` pose (``frame_id`` <- the posed body)."""
    t, q = _pose_parts(T)
    point = _T["geometry_msgs/msg/Point"](x=t.x, y=t.y, z=t.z)
    pose = _T["geometry_msgs/msg/Pose"](position=point, orientation=q)
    return _T["geometry_msgs/msg/PoseStamped"](header=header_msg(stamp_ns, frame_id), pose=pose)


def transform_stamped_msg(T: np.ndarray, stamp_ns: int, parent: str, child: str) -> Any:
    """``geometry_msgs/TransformStamped`` ``parent`` <- ``child``."""
    t, q = _pose_parts(T)
    transform = _T["geometry_msgs/msg/Transform"](translation=t, rotation=q)
    return _T["geometry_msgs/msg/TransformStamped"](
        header=header_msg(stamp_ns, parent), child_frame_id=child, transform=transform
    )


def tf_msg(transforms: list[Any]) -> Any:
    """``tf2_msgs/TFMessage`` holding ``transforms``."""
    return _T["tf2_msgs/msg/TFMessage"](transforms=list(transforms))
