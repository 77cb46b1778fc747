"""``path_cdr``: a nav_msgs/Path serialised with numpy is what rclpy's serialiser makes of the same message
(same length, deserialised equal)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")

from nav_msgs.msg import Path  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from online3r_ros.ros.errors import PoseError, ScaleError, StampError  # noqa: E402
from online3r_ros.ros.path_cdr import PathCdrError, path_cdr, path_from_cdr  # noqa: E402
from online3r_ros.ros.pose import matrices_to_poses, matrices_to_tqs, pose_to_matrix  # noqa: E402
from online3r_ros.ros.time import ns_to_stamp  # noqa: E402


def _poses(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    x, y, z, w = q.T
    R = np.stack(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    ).transpose(2, 0, 1)
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, :3], T[:, :3, 3] = R, rng.normal(size=(n, 3)) * 10
    return T


def _reference(frame_id: str, stamp_ns: int, stamps_ns: np.ndarray, poses: np.ndarray) -> Path:
    from geometry_msgs.msg import PoseStamped

    msg = Path(header=Header(frame_id=frame_id, stamp=ns_to_stamp(stamp_ns)))
    msg.poses = [
        PoseStamped(header=Header(frame_id=frame_id, stamp=ns_to_stamp(int(t))), pose=p)
        for t, p in zip(stamps_ns, matrices_to_poses(poses), strict=True)
    ]
    return msg


@pytest.mark.parametrize("frame_id", ["map", "", "m", "world_frame", "карта"])  # every padding case
@pytest.mark.parametrize("n", [0, 1, 2, 7])
def test_bytes_equal_rclpy_serialisation(frame_id, n):
    poses = _poses(n, seed=n)
    stamps = 1_700_000_000 * 10**9 + np.arange(n, dtype=np.int64) * 33_333_333 + 7
    stamp = int(stamps[-1]) if n else 5
    ours = path_cdr(frame_id, stamp, stamps, poses)
    reference = _reference(frame_id, stamp, stamps, poses)
    # same length and the same message back (rclpy leaves its alignment padding uninitialised, ours is 0)
    assert len(ours) == len(serialize_message(reference))
    back = deserialize_message(ours, Path)
    assert back == reference
    assert back.header.frame_id == frame_id and len(back.poses) == n
    for p, T in zip(back.poses, poses, strict=True):
        assert p.header.frame_id == frame_id
        np.testing.assert_allclose(pose_to_matrix(p.pose), T, atol=1e-12)


def test_a_long_path_round_trips():
    n = 3000
    poses, stamps = _poses(n), np.arange(n, dtype=np.int64) * 10**9 // 30
    back = deserialize_message(path_cdr("map", int(stamps[-1]), stamps, poses), Path)
    got = [(p.header.stamp.sec * 10**9 + p.header.stamp.nanosec) for p in back.poses]
    assert got == stamps.tolist()
    assert back.poses[-1].pose.position.x == pytest.approx(poses[-1, 0, 3])


def test_bad_input_is_refused():
    poses = _poses(2)
    with pytest.raises(ValueError, match="2 stamps for 1 poses"):
        path_cdr("map", 0, np.array([1, 2]), poses[:1])
    with pytest.raises(StampError):
        path_cdr("map", 0, np.array([1, -2]), poses)
    with pytest.raises(StampError):
        path_cdr("map", 2**62, np.array([1, 2]), poses)
    scaled = poses.copy()
    scaled[1, :3, :3] *= 2.0
    with pytest.raises(ScaleError):
        path_cdr("map", 0, np.array([1, 2]), scaled)
    broken = poses.copy()
    broken[0, 0, 0] = np.nan
    with pytest.raises(PoseError):
        path_cdr("map", 0, np.array([1, 2]), broken)


@pytest.mark.parametrize("frame_id", ["map", "", "m", "world_frame", "карта"])
@pytest.mark.parametrize("n", [0, 1, 2, 7])
def test_path_from_cdr_reads_what_rclpy_writes(frame_id, n):
    """rclpy's own serialisation of a path whose poses share its frame id reads back exactly."""
    poses = _poses(n, seed=n)
    stamps = 1_700_000_000 * 10**9 + np.arange(n, dtype=np.int64) * 33_333_333 + 7
    stamp = int(stamps[-1]) if n else 5
    frame, got_stamp, got_stamps, got = path_from_cdr(
        serialize_message(_reference(frame_id, stamp, stamps, poses))
    )
    assert frame == frame_id and got_stamp == stamp and got_stamps.tolist() == stamps.tolist()
    t, q, _ = matrices_to_tqs(poses) if n else (np.zeros((0, 3)), np.zeros((0, 4)), None)
    np.testing.assert_array_equal(got, np.concatenate([t, q], axis=1).reshape(n, 7))


def test_path_from_cdr_refuses_what_it_cannot_read():
    poses, stamps = _poses(3), np.arange(3, dtype=np.int64)
    mixed = _reference("map", 2, stamps, poses)
    mixed.poses[1].header.frame_id = "odom"
    with pytest.raises(PathCdrError, match="frame ids differ"):
        path_from_cdr(serialize_message(mixed))
    data = path_cdr("map", 2, stamps, poses)
    with pytest.raises(PathCdrError, match="need"):
        path_from_cdr(data[:-8])
    with pytest.raises(PathCdrError, match="little-endian"):
        path_from_cdr(b"\x00\x00" + data[2:])
