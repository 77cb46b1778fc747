"""``nav_msgs/Path`` serialised and read in one vectorised pass, for paths of thousands of poses.

Built as Python message objects, a path costs about 15 µs per pose to build and 3 µs per pose to serialise
(a 9,000-frame path: ~170 ms per publish on this project's CPU, under the mapper's lock). rclpy publishers
also take serialised bytes, so the mapper writes the CDR stream with numpy instead (well under a millisecond
per 1,000 poses; ``test_ros_path_cdr.py`` checks it against rclpy's own serialiser).

The layout (XCDR1, little-endian, alignment relative to the payload after the 4-byte encapsulation
header): ``Header`` (``int32 sec, uint32 nanosec, string frame_id``: ``uint32`` length with the NUL, bytes,
NUL), ``uint32`` pose count, then per ``PoseStamped`` its ``Header`` and 7 ``float64`` (position, then
orientation ``x y z w``) aligned to 8. Every record after the first starts 8-aligned, so they share one
numpy record type; the first may start 4 bytes off and gets its own.

:func:`path_from_cdr` reads such a stream back (a subscription with ``raw=True``): deserialised into
message objects and converted pose by pose, an 11,000-pose path took the recorder 722 ms per message, read
with numpy 4.5 ms (``benchmarks/bench_path_publish.py``).
"""

from __future__ import annotations

import numpy as np

from online3r_ros.ros.errors import StampError
from online3r_ros.ros.pose import matrices_to_tqs, require_unit_scale
from online3r_ros.ros.time import MAX_STAMP_NS, NS_PER_SEC

__all__ = ["PathCdrError", "path_cdr", "path_from_cdr"]

#: CDR little-endian encapsulation header
_CDR_LE = b"\x00\x01\x00\x00"


class PathCdrError(ValueError):
    """A byte stream that is not a little-endian CDR ``nav_msgs/Path`` whose poses share one frame id."""


def _ceil(x: int, n: int) -> int:
    return -(-x // n) * n


def _record_type(start: int, name_len: int) -> np.dtype:
    """numpy record type of one ``PoseStamped`` whose stamp starts at payload offset ``start`` (4-aligned);
    ``name_len``: bytes of the frame id with its NUL."""
    pose = _ceil(start + 12 + name_len, 8) - start
    return np.dtype(
        {
            "names": ["sec", "nanosec", "name_len", "name", "pose"],
            "formats": ["<i4", "<u4", "<u4", f"S{name_len}", ("<f8", 7)],
            "offsets": [0, 4, 8, 12, pose],
            "itemsize": pose + 56,
        }
    )


def _fill(records: np.ndarray, name: bytes, stamps_ns: np.ndarray, t: np.ndarray, q: np.ndarray) -> bytes:
    records["sec"], records["nanosec"] = np.divmod(stamps_ns, NS_PER_SEC)
    records["name_len"] = len(name)
    records["name"] = name
    records["pose"][:, :3], records["pose"][:, 3:] = t, q
    return records.tobytes()


def path_cdr(frame_id: str, stamp_ns: int, stamps_ns: np.ndarray, poses: np.ndarray) -> bytes:
    """Serialised ``nav_msgs/msg/Path`` (CDR with its encapsulation header, what
    ``rclpy.serialization.serialize_message`` returns and ``Publisher.publish`` accepts): header
    ``frame_id`` at ``stamp_ns``, and one ``PoseStamped`` per rigid pose ``poses [N, 4, 4]`` in that frame at
    ``stamps_ns [N]`` (integer nanoseconds).

    Raises:
        PoseError: an invalid pose matrix (:func:`~online3r_ros.ros.pose.matrices_to_tqs`).
        ScaleError: a pose with a scale.
        StampError: a stamp that is negative or beyond ``builtin_interfaces/Time``'s range.
        ValueError: ``stamps_ns`` and ``poses`` of different lengths.
    """
    poses = np.asarray(poses, dtype=np.float64).reshape(-1, 4, 4)
    stamps = np.asarray(stamps_ns, dtype=np.int64).reshape(-1)
    if len(stamps) != len(poses):
        raise ValueError(f"{len(stamps)} stamps for {len(poses)} poses")
    all_ns = np.append(stamps, np.int64(stamp_ns))
    bad = (all_ns < 0) | (all_ns > MAX_STAMP_NS)
    if bad.any():
        worst = int(all_ns[bad.argmax()])
        raise StampError("path stamp outside builtin_interfaces/Time's range", nanoseconds=worst)
    t, q, scale = matrices_to_tqs(poses)
    require_unit_scale(scale)
    name = frame_id.encode() + b"\x00"
    head = np.zeros(1, _record_type(0, len(name)))  # the path's own header: a record without the pose
    sec, nanosec = divmod(int(stamp_ns), NS_PER_SEC)
    head["sec"], head["nanosec"], head["name_len"], head["name"] = sec, nanosec, len(name), name
    size = _ceil(12 + len(name), 4)
    out = [_CDR_LE, head.tobytes()[:size], np.uint32(len(poses)).tobytes()]
    start = size + 4
    if len(poses):
        first = np.zeros(1, _record_type(start, len(name)))
        out.append(_fill(first, name, stamps[:1], t[:1], q[:1]))
        rest = np.zeros(len(poses) - 1, _record_type(0, len(name)))
        out.append(_fill(rest, name, stamps[1:], t[1:], q[1:]))
    return b"".join(out)


def path_from_cdr(data: bytes) -> tuple[str, int, np.ndarray, np.ndarray]:
    """``(frame_id, stamp_ns, stamps_ns [N] int64, poses [N, 7] float64)`` of a serialised
    ``nav_msgs/msg/Path`` (poses: position, then orientation ``x y z w``), read with numpy.

    Raises:
        PathCdrError: not little-endian CDR, truncated, or poses whose frame ids differ from the path's
            (this reader's uniform layout; read such a path with rclpy's ``deserialize_message``).

    >>> data = path_cdr("map", 7, np.array([5, 7]), np.stack([np.eye(4)] * 2))
    >>> frame, stamp, stamps, poses = path_from_cdr(data)
    >>> frame, stamp, stamps.tolist(), poses[1].tolist()
    ('map', 7, [5, 7], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])
    """
    buf = np.frombuffer(data, np.uint8)
    if len(buf) < 20 or bytes(buf[:4]) != _CDR_LE:
        raise PathCdrError("not a little-endian CDR stream")
    payload = buf[4:]
    sec, nanosec, name_len = payload[:12].view("<u4").astype(np.int64)
    sec = int(np.int32(np.uint32(sec)))
    size = _ceil(12 + int(name_len), 4)
    if name_len < 1 or size + 4 > len(payload):
        raise PathCdrError("truncated header")
    name = bytes(payload[12 : 12 + name_len - 1])
    n = int(payload[size : size + 4].view("<u4")[0])
    start = size + 4
    first, rest = _record_type(start, int(name_len)), _record_type(0, int(name_len))
    end = start + (first.itemsize + (n - 1) * rest.itemsize if n else 0)
    if end > len(payload):
        raise PathCdrError(f"{n} poses of frame {name!r} need {end} bytes, the stream holds {len(payload)}")
    records = [np.frombuffer(payload[start : start + first.itemsize].tobytes(), first)] if n else []
    if n > 1:
        records.append(np.frombuffer(payload[start + first.itemsize : end].tobytes(), rest))
    stamps, poses = np.zeros(n, np.int64), np.zeros((n, 7))
    at = 0
    for rec in records:
        if np.any(rec["name_len"] != name_len) or np.any(rec["name"] != name):
            raise PathCdrError("the poses' frame ids differ from the path's")
        stamps[at : at + len(rec)] = rec["sec"].astype(np.int64) * NS_PER_SEC + rec["nanosec"]
        poses[at : at + len(rec)] = rec["pose"]
        at += len(rec)
    return name.decode(), sec * NS_PER_SEC + int(nanosec), stamps, poses
