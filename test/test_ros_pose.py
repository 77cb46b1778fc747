"""Pose conversions (SE(3)/Sim(3) <-> geometry_msgs / nav_msgs), REP-103 chain, stamps and QoS."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed (run scripts/setup.sh)")
geometry_msgs = pytest.importorskip("geometry_msgs.msg", reason="geometry_msgs is not installed")
pytest.importorskip("nav_msgs.msg", reason="nav_msgs is not installed")

from rclpy.qos import DurabilityPolicy, HistoryPolicy, ReliabilityPolicy  # noqa: E402

from online3r_ros.ros import qos  # noqa: E402
from online3r_ros.ros.errors import PoseError, ScaleError, StampError  # noqa: E402
from online3r_ros.ros.pose import (  # noqa: E402
    Q_LINK_OPTICAL,
    T_LINK_OPTICAL,
    as_matrix,
    base_pose_from_camera_pose,
    check_quaternion,
    invert,
    matrices_to_poses,
    matrices_to_tqs,
    matrix_to_pose,
    matrix_to_quat,
    matrix_to_tqs,
    odometry,
    pose_stamped,
    pose_to_matrix,
    pose_to_tq,
    quat_to_matrix,
    rigid_matrix,
    slam_points_to_map,
    slam_pose_to_map,
    split_sim3,
    tqs_to_matrix,
    transform_points,
    transform_stamped,
)
from online3r_ros.ros.time import (  # noqa: E402
    MAX_STAMP_NS,
    make_header,
    ns_to_sec,
    ns_to_stamp,
    sec_to_ns,
    sec_to_stamp,
    stamp_to_ns,
    stamp_to_sec,
)

pytestmark = pytest.mark.ros


def _random_quats(rng: np.random.Generator, n: int) -> np.ndarray:
    q = rng.normal(size=(n, 4))
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def _rodrigues(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    Kx = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * Kx + (1 - math.cos(angle)) * Kx @ Kx


def test_quat_to_matrix_against_rodrigues_and_known_rotations() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        axis, angle = rng.normal(size=3), rng.uniform(-math.pi, math.pi)
        q = np.concatenate([axis / np.linalg.norm(axis) * math.sin(angle / 2), [math.cos(angle / 2)]])
        np.testing.assert_allclose(quat_to_matrix(q), _rodrigues(axis, angle), atol=1e-12)
    # 90 degrees about z maps x to y
    qz = [0, 0, math.sin(math.pi / 4), math.cos(math.pi / 4)]
    np.testing.assert_allclose(quat_to_matrix(qz) @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_matrix_to_quat_inverts_and_is_canonical_including_180_degrees() -> None:
    rng = np.random.default_rng(1)
    q = _random_quats(rng, 500)
    q = np.concatenate(
        [q, [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0.7071067811865476, 0.7071067811865476, 0, 0]]]
    )
    back = matrix_to_quat(quat_to_matrix(q))
    canonical = np.where(q[:, 3:4] < 0, -q, q)
    assert (back[:, 3] >= 0).all()
    # at exactly 180 degrees q and -q both have w = 0: compare rotations instead
    np.testing.assert_allclose(quat_to_matrix(back), quat_to_matrix(q), atol=1e-12)
    np.testing.assert_allclose(back[:-4], canonical[:-4], atol=1e-12)


def test_pose_messages_match_4x4_matrices_numerically() -> None:
    rng = np.random.default_rng(2)
    for q in _random_quats(rng, 10):
        t = rng.normal(size=3) * 5
        T = tqs_to_matrix(t, q)
        msg = matrix_to_pose(T)
        assert (msg.position.x, msg.position.y, msg.position.z) == tuple(t)
        # the message's quaternion rotates vectors exactly as T does
        q_msg = [msg.orientation.x, msg.orientation.y, msg.orientation.z, msg.orientation.w]
        np.testing.assert_allclose(quat_to_matrix(q_msg), T[:3, :3], atol=1e-12)
        np.testing.assert_allclose(pose_to_matrix(msg), T, atol=1e-12)
        X = rng.normal(size=(7, 3))
        np.testing.assert_allclose(transform_points(pose_to_matrix(msg), X), X @ T[:3, :3].T + t, atol=1e-12)


def test_many_matrices_convert_as_one_at_a_time_and_bad_ones_raise() -> None:
    rng = np.random.default_rng(3)
    T = np.stack([tqs_to_matrix(rng.normal(size=3), q) for q in _random_quats(rng, 50)])
    for msg, M in zip(matrices_to_poses(T), T, strict=True):
        np.testing.assert_allclose(pose_to_matrix(msg), pose_to_matrix(matrix_to_pose(M)), atol=1e-14, rtol=0)
        np.testing.assert_allclose(pose_to_matrix(msg), M, atol=1e-12, rtol=0)
    assert matrices_to_poses(np.zeros((0, 4, 4))) == []
    scaled, reflected, nan = T[:3].copy(), T[:3].copy(), T[:3].copy()
    scaled[1, :3, :3] *= 1.1
    reflected[2, :3, 0] *= -1
    nan[0, 0, 3] = np.nan
    with pytest.raises(ScaleError):
        matrices_to_poses(scaled)
    with pytest.raises(PoseError):
        matrices_to_poses(reflected)
    with pytest.raises(PoseError):
        matrices_to_poses(nan)
    # the batched validation is matrix_to_tqs's, Sim(3) included
    sim3 = T[:5].copy()
    sim3[:, :3, :3] *= np.array([0.5, 1.0, 2.0, 3.0, 1.5])[:, None, None]
    t, q, s = matrices_to_tqs(sim3)
    for i, M in enumerate(sim3):
        ti, qi, si = matrix_to_tqs(M)
        assert np.array_equal(t[i], ti) and np.array_equal(q[i], qi) and s[i] == si
    bottom = sim3.copy()
    bottom[3, 3, 0] = 1.0
    with pytest.raises(PoseError, match="bottom row"):
        matrices_to_tqs(bottom)


def test_stamped_transform_and_odometry_messages() -> None:
    T = tqs_to_matrix([1.0, -2.0, 0.5], [0.0, 0.0, math.sin(0.3), math.cos(0.3)])
    ps = pose_stamped(T, "map", stamp=1_700_000_000_123_456_789)
    assert ps.header.frame_id == "map" and (ps.header.stamp.sec, ps.header.stamp.nanosec) == (
        1_700_000_000,
        123_456_789,
    )
    np.testing.assert_allclose(pose_to_matrix(ps), T, atol=1e-12)
    ts = transform_stamped(T, "odom", "base_link", stamp=2.5)
    assert (ts.header.frame_id, ts.child_frame_id) == ("odom", "base_link")
    assert (ts.header.stamp.sec, ts.header.stamp.nanosec) == (2, 500_000_000)
    np.testing.assert_allclose(pose_to_matrix(ts), T, atol=1e-12)
    od = odometry(T, "odom", "base_link", stamp=ts.header.stamp, linear_velocity=[0.1, 0, 0],
                  pose_covariance=np.eye(6) * 0.01)  # fmt: skip
    assert (od.header.frame_id, od.child_frame_id) == ("odom", "base_link")
    np.testing.assert_allclose(pose_to_matrix(od), T, atol=1e-12)
    assert od.twist.twist.linear.x == 0.1 and od.pose.covariance[7] == 0.01 and od.pose.covariance[1] == 0.0
    pwc = geometry_msgs.PoseWithCovarianceStamped()
    pwc.pose.pose = matrix_to_pose(T)
    np.testing.assert_allclose(pose_to_matrix(pwc), T, atol=1e-12)
    with pytest.raises(PoseError, match="child"):
        transform_stamped(T, "odom", "")
    with pytest.raises(PoseError, match="covariance"):
        odometry(T, "odom", "base_link", pose_covariance=np.eye(3))


def test_vector_inputs_and_torch_tensors() -> None:
    q = np.array([0.1, -0.2, 0.3, 0.9])
    q /= np.linalg.norm(q)
    vec7 = np.concatenate([[1.0, 2.0, 3.0], q])
    np.testing.assert_allclose(as_matrix(vec7), tqs_to_matrix([1, 2, 3], q), atol=1e-15)
    torch = pytest.importorskip("torch")
    tensor = torch.tensor(vec7, dtype=torch.float32)
    np.testing.assert_allclose(pose_to_matrix(matrix_to_pose(tensor)), as_matrix(vec7), atol=1e-6)


def test_sim3_scale_is_never_dropped_silently() -> None:
    q = np.array([0.0, math.sin(0.2), 0.0, math.cos(0.2)])
    t = np.array([0.3, -0.1, 2.0])
    sim3 = np.concatenate([t, q, [2.5]])
    T = as_matrix(sim3)
    np.testing.assert_allclose(T[:3, :3], 2.5 * quat_to_matrix(q), atol=1e-12)
    with pytest.raises(ScaleError) as err:
        matrix_to_pose(sim3)
    assert err.value.fields["scale"] == pytest.approx(2.5)
    with pytest.raises(ScaleError):
        transform_stamped(T, "map", "camera")
    rigid, s = split_sim3(sim3)
    assert s == pytest.approx(2.5, abs=1e-12)
    np.testing.assert_allclose(rigid, tqs_to_matrix(t, q), atol=1e-12)  # translation unchanged: world units
    msg = matrix_to_pose(rigid)
    np.testing.assert_allclose(pose_to_matrix(msg, scale=s), T, atol=1e-12)  # scale re-attached explicitly
    # the camera-frame point X maps to the same world point through (rigid, s) as through the Sim(3)
    X = np.array([[0.5, 0.2, 1.5]])
    np.testing.assert_allclose(transform_points(rigid, s * X), transform_points(T, X), atol=1e-12)
    t_out, q_out, s_out = matrix_to_tqs(T)
    np.testing.assert_allclose(t_out, t)
    np.testing.assert_allclose(q_out, q, atol=1e-12)
    assert s_out == pytest.approx(2.5)
    np.testing.assert_allclose(invert(T) @ T, np.eye(4), atol=1e-12)


@pytest.mark.parametrize(
    "q",
    [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0], [0.1, 0.1, 0.1, 0.9], [np.nan, 0, 0, 1], [0, 0, np.inf, 1]],
)
def test_bad_quaternions_raise_naming_the_field(q: list[float]) -> None:
    msg = geometry_msgs.Pose()
    msg.orientation.x, msg.orientation.y, msg.orientation.z, msg.orientation.w = q
    with pytest.raises(PoseError) as err:
        pose_to_matrix(msg)
    assert "orientation" in err.value.fields
    ts = geometry_msgs.TransformStamped()
    ts.transform.rotation.x, ts.transform.rotation.y, ts.transform.rotation.z, ts.transform.rotation.w = q
    with pytest.raises(PoseError) as err:
        pose_to_tq(ts)
    assert "transform.rotation" in err.value.fields
    with pytest.raises(PoseError):
        tqs_to_matrix([0, 0, 0], q)


def test_slightly_denormalised_quaternion_is_renormalised() -> None:
    q = np.array([0.0, 0.0, 0.0, 1.0 + 5e-4])
    np.testing.assert_allclose(check_quaternion(q), [0, 0, 0, 1])


def test_bad_matrices_and_positions_raise() -> None:
    with pytest.raises(PoseError, match="4x4"):
        as_matrix(np.eye(3))
    with pytest.raises(PoseError, match="bottom row"):
        bad = np.eye(4)
        bad[3, 0] = 1.0
        as_matrix(bad)
    with pytest.raises(PoseError, match="determinant"):
        as_matrix(np.diag([1.0, 1.0, -1.0, 1.0]))
    with pytest.raises(PoseError, match="scaled rotation"):
        as_matrix(np.diag([1.0, 2.0, 1.0, 1.0]))
    with pytest.raises(PoseError, match="NaN"):
        nan = np.eye(4)
        nan[0, 3] = np.nan
        as_matrix(nan)
    msg = geometry_msgs.Pose()
    msg.orientation.w = 1.0
    msg.position.x = float("nan")
    with pytest.raises(PoseError, match="position"):
        pose_to_matrix(msg)
    with pytest.raises(PoseError, match="positive"):
        tqs_to_matrix([0, 0, 0], [0, 0, 0, 1], scale=0.0)


# ----------------------------------------------------------------------------------------- REP-103 chain


def test_link_to_optical_rotation_follows_rep103() -> None:
    np.testing.assert_allclose(quat_to_matrix(Q_LINK_OPTICAL), T_LINK_OPTICAL[:3, :3], atol=1e-15)
    R = T_LINK_OPTICAL[:3, :3]
    np.testing.assert_array_equal(R @ [0, 0, 1], [1, 0, 0])  # optical forward (z) = link forward (x)
    np.testing.assert_array_equal(R @ [1, 0, 0], [0, -1, 0])  # optical right (x) = link -y (y is left)
    np.testing.assert_array_equal(R @ [0, 1, 0], [0, 0, -1])  # optical down (y) = link -z (z is up)
    # the usual static TF "camera_link -> camera_optical_frame" rpy (-pi/2, 0, -pi/2)
    roll, yaw = -math.pi / 2, -math.pi / 2
    Rx = np.array([[1, 0, 0], [0, math.cos(roll), -math.sin(roll)], [0, math.sin(roll), math.cos(roll)]])
    Rz = np.array([[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0], [0, 0, 1]])
    np.testing.assert_allclose(Rz @ Rx, R, atol=1e-15)


def test_slam_pose_to_map_chain() -> None:
    # camera mounted 0.2 m ahead, 0.5 m above base_link, looking forward
    T_base_cam = T_LINK_OPTICAL.copy()
    T_base_cam[:3, 3] = [0.2, 0.0, 0.5]
    # first frame: SLAM pose identity -> robot at map origin
    np.testing.assert_allclose(slam_pose_to_map(np.eye(4), T_base_cam), np.eye(4), atol=1e-12)
    # camera moved 1 m along its optical z (forward): robot moved 1 m along map x
    T_wc = np.eye(4)
    T_wc[2, 3] = 1.0
    expected = np.eye(4)
    expected[0, 3] = 1.0
    np.testing.assert_allclose(slam_pose_to_map(T_wc, T_base_cam), expected, atol=1e-12)
    # camera yawed left by 90 degrees (about optical -y, i.e. up): robot yawed +90 degrees about map z
    T_wc = np.eye(4)
    T_wc[:3, :3] = _rodrigues(np.array([0.0, -1.0, 0.0]), math.pi / 2)
    T_mb = slam_pose_to_map(T_wc, T_base_cam)
    np.testing.assert_allclose(T_mb[:3, :3], _rodrigues(np.array([0.0, 0.0, 1.0]), math.pi / 2), atol=1e-12)
    # the camera turned in place at (0.2, 0, 0.5), so the base (0.2 m behind it, now facing +y) moved
    np.testing.assert_allclose(T_mb[:3, 3], [0.2, -0.2, 0.0], atol=1e-12)
    np.testing.assert_allclose(T_mb @ T_base_cam, T_base_cam @ T_wc, atol=1e-12)
    # base pose from a camera pose in map
    np.testing.assert_allclose(base_pose_from_camera_pose(T_base_cam, T_base_cam), np.eye(4), atol=1e-12)
    # a point 2 m in front of the first camera lies 2.2 m ahead of the base, 0.5 m up
    np.testing.assert_allclose(slam_points_to_map(np.array([[0.0, 0.0, 2.0]]), T_base_cam), [[2.2, 0.0, 0.5]])
    with pytest.raises(ScaleError):
        slam_pose_to_map(np.concatenate([[0, 0, 0, 0, 0, 0, 1], [2.0]]), T_base_cam)


def test_rigid_matrix_accepts_unit_scale_sim3() -> None:
    np.testing.assert_allclose(
        rigid_matrix([1, 2, 3, 0, 0, 0, 1, 1.0]), tqs_to_matrix([1, 2, 3], [0, 0, 0, 1])
    )


# -------------------------------------------------------------------------------------------------- stamps


def test_stamp_nanoseconds_round_trip_exact() -> None:
    for ns in (0, 1, 999_999_999, 1_000_000_000, 1_700_000_000_123_456_789, MAX_STAMP_NS):
        stamp = ns_to_stamp(ns)
        assert stamp.nanosec < 1_000_000_000
        assert stamp_to_ns(stamp) == ns


def test_float_seconds_conversions() -> None:
    assert sec_to_ns(1.5) == 1_500_000_000
    assert sec_to_ns(0.1) == 100_000_000  # 0.1 is 0.1000000000000000055...: nearest ns
    stamp = sec_to_stamp(1_700_000_000.25)
    assert (stamp.sec, stamp.nanosec) == (1_700_000_000, 250_000_000)
    # nanoseconds -> float is correctly rounded; float -> ns recovers it within the float's resolution
    ns = 1_700_000_000_123_456_789
    sec = ns_to_sec(ns)
    assert sec == float(ns) / 1e9 or abs(sec - ns / 1e9) == 0.0
    assert abs(sec_to_ns(sec) - ns) <= 120  # ulp(1.7e9) = 238 ns
    assert stamp_to_sec(ns_to_stamp(ns)) == sec
    # a stamp with nanosec close to 1e9 carries instead of overflowing
    assert sec_to_ns(0.9999999999) == 1_000_000_000
    assert (sec_to_stamp(0.9999999999).sec, sec_to_stamp(0.9999999999).nanosec) == (1, 0)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), 2.0**31 + 1])
def test_bad_float_seconds_raise(bad: float) -> None:
    with pytest.raises(StampError):
        sec_to_ns(bad)


def test_bad_stamps_raise() -> None:
    with pytest.raises(StampError):
        ns_to_stamp(-5)
    with pytest.raises(StampError):
        ns_to_stamp(MAX_STAMP_NS + 1)

    class Stamp:
        sec, nanosec = 1, 1_000_000_000

    with pytest.raises(StampError, match="nanosec"):
        stamp_to_ns(Stamp())
    with pytest.raises(StampError, match="not a time stamp"):
        stamp_to_ns(object())


def test_make_header_stamp_forms() -> None:
    assert make_header("cam").stamp.sec == 0 and make_header("cam").frame_id == "cam"
    by_ns = make_header("a", np.int64(3_000_000_007))
    assert (by_ns.stamp.sec, by_ns.stamp.nanosec) == (3, 7)
    by_sec = make_header("a", 2.25)
    assert (by_sec.stamp.sec, by_sec.stamp.nanosec) == (2, 250_000_000)
    assert make_header("a", by_sec.stamp).stamp is by_sec.stamp
    assert make_header("ignored", header=by_sec) is by_sec
    with pytest.raises(StampError):
        make_header("a", True)
    with pytest.raises(StampError):
        make_header("a", -1)


def test_rclpy_time_is_accepted() -> None:
    from rclpy.time import Time

    assert stamp_to_ns(Time(nanoseconds=42_000_000_007)) == 42_000_000_007


# ----------------------------------------------------------------------------------------------------- QoS


def test_qos_profiles() -> None:
    sensor = qos.sensor_data_qos()
    assert (sensor.reliability, sensor.durability, sensor.history, sensor.depth) == (
        ReliabilityPolicy.BEST_EFFORT,
        DurabilityPolicy.VOLATILE,
        HistoryPolicy.KEEP_LAST,
        5,
    )
    assert qos.sensor_data_qos(2, reliable=True).reliability == ReliabilityPolicy.RELIABLE
    for profile, depth in ((qos.map_qos(), 1), (qos.tf_static_qos(), 1)):
        assert profile.reliability == ReliabilityPolicy.RELIABLE
        assert profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
        assert profile.depth == depth
    tf = qos.tf_qos()
    assert (tf.reliability, tf.durability, tf.depth) == (
        ReliabilityPolicy.RELIABLE,
        DurabilityPolicy.VOLATILE,
        100,
    )
    assert qos.reliable_qos().reliability == ReliabilityPolicy.RELIABLE
    assert qos.qos_from_parameter("SENSOR_DATA", 3).depth == 3
    assert qos.qos_from_parameter("reliable").reliability == ReliabilityPolicy.RELIABLE
    assert qos.qos_from_parameter("map").durability == DurabilityPolicy.TRANSIENT_LOCAL
    with pytest.raises(ValueError, match="unknown QoS"):
        qos.qos_from_parameter("fastest")
    with pytest.raises(ValueError, match="depth"):
        qos.sensor_data_qos(0)
