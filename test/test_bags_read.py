"""Reading bags not made by us (evo's test data: rosbag2 sqlite3 folder, MCAP, ROS 1 .bag): topics listed,
trajectories from odometry, poses and TF chains extracted and checked against each other.
Skipped without ../shared/data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="rosbags is not installed")

from online3r_ros.bags import (  # noqa: E402
    NoTrajectoryError,
    UnknownTopicError,
    bag_summary,
    list_topics,
    list_trajectories,
    read_trajectory,
)
from online3r_ros.cli.main import main  # noqa: E402
from online3r_ros.eval.poses import interpolate_poses  # noqa: E402

pytestmark = pytest.mark.realdata

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "evo_bags_and_trajectories"
NAV2 = DATA / "nav2_turtlebot.mcap"
TF_DIR = DATA / "tf_example"
TF_BAG = DATA / "tf_example.bag"
ROS1 = DATA / "ROS_example.bag"


@pytest.fixture(autouse=True)
def _data() -> None:
    if not DATA.exists():
        pytest.skip(f"shared data not found: {DATA}")


def _rigid(T: np.ndarray) -> None:
    assert np.all(np.isfinite(T))
    R = T[:, :3, :3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-9)
    np.testing.assert_array_equal(T[:, 3], np.broadcast_to([0.0, 0.0, 0.0, 1.0], (len(T), 4)))


def test_topics_of_each_format() -> None:
    def topics(path):
        return {t.name: (t.msgtype.split("/")[-1], t.count) for t in list_topics(path)}

    assert topics(NAV2) == {
        "/amcl_pose": ("PoseWithCovarianceStamped", 135),
        "/odom": ("Odometry", 2639),
        "/tf": ("TFMessage", 5422),
        "/tf_static": ("TFMessage", 1),
    }
    tf = {"/tf": ("TFMessage", 517), "/tf_static": ("TFMessage", 1)}
    assert topics(TF_DIR) == tf and topics(TF_DIR / "tf_example.db3") == tf and topics(TF_BAG) == tf
    assert topics(ROS1) == {
        "groundtruth": ("PoseStamped", 12765),
        "ORB-SLAM": ("PoseStamped", 8362),
        "S-PTAM": ("PoseStamped", 5439),
    }
    summary = bag_summary(ROS1)
    assert summary.storage == "rosbag1" and summary.message_count == 12765 + 8362 + 5439
    assert summary.duration_s == pytest.approx(889.02, abs=0.01)
    assert bag_summary(NAV2).storage == "mcap" and bag_summary(TF_DIR).storage == "sqlite3"


def test_odometry_equals_its_tf() -> None:
    t_odom, T_odom = read_trajectory(NAV2, "/odom")
    t_tf, T_tf = read_trajectory(NAV2, frames=("odom", "base_link"))
    assert len(t_odom) == 2639
    np.testing.assert_array_equal(t_odom, t_tf)
    np.testing.assert_allclose(T_odom, T_tf, atol=1e-12)
    _rigid(T_odom)
    assert np.all(np.diff(t_odom) > 0)
    # walking the edge backwards inverts it
    _, T_inv = read_trajectory(NAV2, frames=("base_link", "odom"))
    np.testing.assert_allclose(T_inv @ T_tf, np.broadcast_to(np.eye(4), T_tf.shape), atol=1e-9)


def test_tf_chain_with_static_and_two_dynamic_edges() -> None:
    # odom -> base_link (dynamic) -> base_footprint (static)
    t_a, T_a = read_trajectory(NAV2, frames=("odom", "base_link"))
    t_b, T_b = read_trajectory(NAV2, frames=("odom", "base_footprint"))
    np.testing.assert_array_equal(t_a, t_b)
    static = np.linalg.inv(T_a) @ T_b  # the same base_link -> base_footprint transform at every time
    np.testing.assert_allclose(static, np.broadcast_to(static[0], static.shape), atol=1e-9)
    # map -> odom (amcl, ~10 Hz) -> base_link (odometry, ~30 Hz): AMCL's own pose agrees with the chain
    t_amcl, T_amcl = read_trajectory(NAV2, "/amcl_pose")
    t_map, T_map = read_trajectory(NAV2, frames=("map", "base_link"))
    _rigid(T_map)
    assert len(t_map) > 2500 and t_map[0] >= t_amcl[0] - 5.0
    T_at, valid = interpolate_poses(t_map, T_map, t_amcl, max_difference=0.1)
    assert valid.sum() >= 130
    err = np.linalg.norm(T_at[valid, :3, 3] - T_amcl[valid, :3, 3], axis=1)
    assert np.median(err) < 0.1 and err.max() < 0.3
    travelled = np.linalg.norm(np.diff(T_map[:, :3, 3], axis=0), axis=1).sum()
    assert travelled > 1.0  # the robot moved: the comparison is not trivial


def test_rosbag2_sqlite3_and_ros1_agree() -> None:
    results = [
        read_trajectory(p, frames=("odom", "base_link")) for p in (TF_DIR, TF_DIR / "tf_example.db3", TF_BAG)
    ]
    t0, T0 = results[0]
    assert len(t0) == 517
    _rigid(T0)
    for t, T in results[1:]:
        np.testing.assert_array_equal(t, t0)
        np.testing.assert_array_equal(T, T0)
    # the chain through the static edge is the dynamic edge composed with the static transform
    _, T_fp = read_trajectory(TF_BAG, frames=("odom", "base_footprint"))
    t_static, T_static = read_trajectory(TF_BAG, frames=("base_footprint", "base_link"))
    assert t_static.shape == (1,)  # a static-only chain: one pose
    np.testing.assert_allclose(T0, T_fp @ T_static[0], atol=1e-12)


def test_ros1_pose_topics() -> None:
    t_gt, T_gt = read_trajectory(ROS1, "groundtruth")
    t_orb, T_orb = read_trajectory(ROS1, "/ORB-SLAM")  # leading slash optional
    assert (len(t_gt), len(t_orb)) == (12765, 8362)
    _rigid(T_gt)
    _rigid(T_orb)
    assert t_gt[0] == pytest.approx(1502792570.283404827) and np.all(np.diff(t_gt) > 0)
    assert t_gt[0] <= t_orb[0] and t_orb[-1] <= t_gt[-1] + 1.0  # the estimate lies within the reference
    with pytest.raises(NoTrajectoryError, match="several pose topics"):
        read_trajectory(ROS1)
    with pytest.raises(UnknownTopicError, match="groundtruth"):
        read_trajectory(ROS1, "/nope")
    with pytest.raises(NoTrajectoryError, match="not in the bag's TF tree"):
        read_trajectory(TF_BAG, frames=("map", "base_link"))


def test_list_trajectories() -> None:
    found = {(s.topic, s.frames, s.count) for s in list_trajectories(NAV2)}
    assert ("/odom", ("odom", "base_link"), 2639) in found
    assert ("/amcl_pose", ("map", ""), 135) in found
    assert ("tf", ("map", "odom"), 921) in found and ("tf", ("odom", "base_link"), 2639) in found
    assert [s.describe() for s in list_trajectories(TF_DIR)] == [
        "TF odom -> base_footprint (TFMessage, 517 poses)"
    ]


def test_info_cli(capsys) -> None:
    assert main(["bag", "info", str(NAV2)]) == 0
    out = capsys.readouterr().out
    assert "/odom" in out and "nav_msgs/msg/Odometry" in out and "2639" in out
    assert "TF map -> odom (TFMessage, 921 poses)" in out and "no colour image topic" in out
    assert main(["bag", "info", str(ROS1)]) == 0
    out = capsys.readouterr().out
    assert "(rosbag1)" in out and "groundtruth (PoseStamped, 12765 poses)" in out
