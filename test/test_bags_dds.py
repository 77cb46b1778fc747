"""``online3r bag record`` (a child process) records what :func:`play_bag` publishes over Fast DDS: every
message comes back byte for byte, ``/tf_static`` latched, ``/clock`` with the bag time; a ROS 1 bag plays as
ROS 2 messages. Isolated on a reserved DDS domain (conftest ``dds_domain``) with localhost discovery."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="rosbags is not installed")
pytest.importorskip("rclpy", reason="rclpy is not installed (run scripts/setup.sh)")
pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs is not built (run scripts/setup.sh)")
pytest.importorskip("rosgraph_msgs.msg", reason="rosgraph_msgs is not installed")

from online3r_ros.bags import BagWriter, list_topics, read_trajectory  # noqa: E402
from online3r_ros.bags.messages import (  # noqa: E402
    camera_info_msg,
    image_msg,
    pose_stamped_msg,
    tf_msg,
    transform_stamped_msg,
)
from online3r_ros.bags.reader import iter_messages, open_bag  # noqa: E402
from online3r_ros.bags.writer import make_qos  # noqa: E402
from online3r_ros.ros.bag_play import play_bag, standalone_node  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "evo_bags_and_trajectories"
START_NS = 1_700_000_000_000_000_000
N_FRAMES = 4


def _source_bag(path: Path) -> Path:
    """4 RGB-D frames (seeded) at 10 Hz with CameraInfo, a pose, /tf and a latched /tf_static."""
    rng = np.random.default_rng(11)
    K = np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])
    sensor = [make_qos(depth=5)]
    with BagWriter(path, "mcap") as w:
        T_static = np.eye(4)
        T_static[:3, 3] = [0.1, 0.0, 0.2]
        static = tf_msg([transform_stamped_msg(T_static, START_NS, "base_link", "camera_optical_frame")])
        w.write("/tf_static", static, START_NS, [make_qos(transient_local=True, depth=1)])
        for i in range(N_FRAMES):
            stamp = START_NS + i * 100_000_000
            T = np.eye(4)
            T[:3, 3] = [0.01 * i, 0.02 * i, 0.0]
            w.write(
                "/depth",
                image_msg(rng.integers(0, 4000, (48, 64), dtype=np.uint16), "16UC1", stamp, "cam"),
                stamp,
                sensor,
            )
            w.write("/camera_info", camera_info_msg(K, 64, 48, stamp, "cam"), stamp, sensor)
            w.write(
                "/image",
                image_msg(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), "rgb8", stamp, "cam"),
                stamp,
                sensor,
            )
            w.write("/groundtruth/pose", pose_stamped_msg(T, stamp, "gt_world"), stamp, [make_qos()])
            w.write(
                "/tf",
                tf_msg([transform_stamped_msg(T, stamp, "gt_world", "gt_camera")]),
                stamp,
                [make_qos(depth=100)],
            )
    return path


def _payloads(path: Path) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    with open_bag(path) as reader:
        for conn, _, raw in iter_messages(reader):
            out.setdefault(conn.topic, []).append(bytes(raw))
    return out


def _record(out: Path, topics: list[str], domain: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "ROS_DOMAIN_ID": str(domain),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
    }
    cmd = [
        sys.executable,
        "-m",
        "online3r_ros.cli.main",
        "bag",
        "record",
        *topics,
        "--out",
        str(out),
        "--duration",
        "90",
    ]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the recorder did not stop on SIGINT: {err}")
    assert proc.returncode == 0, err
    return err


def test_play_then_record_gives_the_same_messages(tmp_path, dds_domain, monkeypatch) -> None:
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    source = _source_bag(tmp_path / "source")
    recorded = tmp_path / "recorded"
    proc = _record(recorded, ["/image", "/depth", "/camera_info", "/groundtruth/pose", "/clock"], dds_domain)
    try:
        with standalone_node("test_player", domain_id=dds_domain) as node:
            report = play_bag(node, source, rate=2.0, clock_hz=20.0, wait_for_subscribers=60.0, settle=1.0)
    finally:
        err = _stop(proc)
    assert report.skipped == {} and sum(report.published.values()) == 1 + 5 * N_FRAMES
    want, got = _payloads(source), _payloads(recorded)
    clock = got.pop("/clock", [])
    assert set(got) == set(want), err
    for topic, payloads in want.items():
        # DDS pads a serialized payload to a multiple of 4 bytes (zeros): CameraInfo's 357 arrive as 360
        padded = [p + b"\0" * (-len(p) % 4) for p in payloads]
        assert got[topic] == padded, (
            f"{topic}: {len(got[topic])} of {len(payloads)} messages, or bytes differ"
        )
    # the clock carried the bag time, never backwards, up to the last message
    from online3r_ros.bags.messages import TYPESTORE

    times = [TYPESTORE.deserialize_cdr(c, "rosgraph_msgs/msg/Clock").clock for c in clock]
    ns = [t.sec * 1_000_000_000 + t.nanosec for t in times]
    assert ns and ns == sorted(ns) and ns[-1] == START_NS + (N_FRAMES - 1) * 100_000_000
    assert {t.name: t.msgtype for t in list_topics(recorded)}["/tf_static"] == "tf2_msgs/msg/TFMessage"
    np.testing.assert_array_equal(read_trajectory(recorded)[1], read_trajectory(source)[1])


def test_ros1_bag_plays_as_ros2(tmp_path, dds_domain, monkeypatch) -> None:
    if not DATA.exists():
        pytest.skip(f"shared data not found: {DATA}")
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    recorded = tmp_path / "from_ros1"
    proc = _record(recorded, ["/tf"], dds_domain)  # and /tf_static, added by default
    try:
        with standalone_node("test_player_ros1", domain_id=dds_domain) as node:
            report = play_bag(
                node, DATA / "tf_example.bag", rate=100.0, wait_for_subscribers=60.0, settle=1.0
            )
    finally:
        _stop(proc)
    assert report.published == {"/tf": 517, "/tf_static": 1}
    t_src, T_src = read_trajectory(DATA / "tf_example.bag", frames=("odom", "base_link"))
    t_rec, T_rec = read_trajectory(recorded, frames=("odom", "base_link"))
    np.testing.assert_array_equal(t_rec, t_src)
    np.testing.assert_array_equal(T_rec, T_src)


def test_latest_only_topics_keep_their_last_message(tmp_path, dds_domain, monkeypatch) -> None:
    """A topic that restates a whole state (a path after every optimisation) keeps only its last message,
    written at close; the others every message; the counts are of the messages received."""
    import time

    from geometry_msgs.msg import PoseStamped

    from online3r_ros.ros.bag_record import BagRecorder
    from online3r_ros.ros.replay import SpinThread

    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    with standalone_node("test_latest_only", domain_id=dds_domain) as node:
        pubs = {name: node.create_publisher(PoseStamped, name, 10) for name in ("/every", "/state")}
        recorder = BagRecorder(node, tmp_path / "out", list(pubs), latest_only=["/state"])
        spin = SpinThread(node)
        try:
            deadline = time.monotonic() + 20
            while len(recorder.subscribed) < 2 and time.monotonic() < deadline:
                recorder.poll()
                time.sleep(0.05)
            while min(p.get_subscription_count() for p in pubs.values()) == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            for i in range(5):
                for pub in pubs.values():
                    msg = PoseStamped()
                    msg.pose.position.x = float(i)
                    pub.publish(msg)
            while sum(recorder.counts.values()) < 10 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            spin.stop()
            counts = recorder.close()
    assert counts == {"/every": 5, "/state": 5}
    got = _payloads(tmp_path / "out")
    assert len(got["/every"]) == 5 and len(got["/state"]) == 1
    t, T = read_trajectory(tmp_path / "out", "/state")[:2]
    assert len(t) == 1 and T[0][0, 3] == 4.0
