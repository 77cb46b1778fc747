"""Trajectories from bags: pose topics and TF chains as ``(timestamps [N] s, T [N, 4, 4])``.

Sources (message stamps, not log times, are the timestamps):

* ``nav_msgs/Odometry``, ``geometry_msgs/PoseStamped``, ``geometry_msgs/PoseWithCovarianceStamped``: one
  pose per message, ``header.frame_id`` <- body;
* ``nav_msgs/Path``: the poses of the *last* message (a path is re-published whole);
* TF (every ``tf2_msgs/TFMessage`` topic; ``/tf_static`` and topics named ``*tf_static`` are static): the
  chain between two frames (:class:`~online3r_ros.bags.tf_tree.TfTree`).

Samples are sorted by time; for a repeated stamp the last message wins; poses whose quaternion is not a unit
quaternion or that hold NaN are left out (counted in :class:`TrajectorySource`). No ROS dependency.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from online3r_ros.bags.errors import NoTrajectoryError, UnknownTopicError
from online3r_ros.bags.reader import (
    describe_topics,
    deserialize,
    iter_messages,
    open_bag,
    topic_connections,
    topics_text,
)
from online3r_ros.bags.tf_tree import TfTree
from online3r_ros.ros.errors import PoseError
from online3r_ros.ros.pose import pose_to_matrix
from online3r_ros.ros.time import stamp_to_ns

__all__ = [
    "POSE_TYPES",
    "TF_TYPE",
    "TrajectorySource",
    "list_trajectories",
    "read_tf_tree",
    "read_trajectory",
]

ODOMETRY = "nav_msgs/msg/Odometry"
PATH = "nav_msgs/msg/Path"
POSE_TYPES = (ODOMETRY, "geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/PoseWithCovarianceStamped", PATH)
TF_TYPE = "tf2_msgs/msg/TFMessage"
#: Preferred topics when a bag holds several pose topics (the tracker's camera pose, then ground truth).
PREFERRED_TOPICS = ("online3r/camera_pose", "groundtruth/pose")


@dataclass(frozen=True)
class TrajectorySource:
    """An extractable trajectory: a pose ``topic`` (``frames`` = its header frame id, child) or a dynamic TF
    edge (``topic`` = ``"tf"``, ``frames`` = ``(parent, child)``) and its number of samples."""

    topic: str
    msgtype: str
    frames: tuple[str, str]
    count: int

    def describe(self) -> str:
        what = f"TF {self.frames[0]} -> {self.frames[1]}" if self.topic == "tf" else self.topic
        return f"{what} ({self.msgtype.split('/')[-1]}, {self.count} poses)"


def _pose_of(msg: Any) -> tuple[int, np.ndarray, str, str] | None:
    """``(stamp ns, T, frame_id, child_frame_id)`` of a pose message, ``None`` when its pose is invalid."""
    try:
        T = pose_to_matrix(msg.pose)
    except PoseError:
        return None
    return stamp_to_ns(msg.header.stamp), T, msg.header.frame_id, getattr(msg, "child_frame_id", "")


def _as_arrays(samples: list[tuple[int, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(t s, T)`` with repeated stamps reduced to their last sample."""
    if not samples:
        return np.zeros(0), np.zeros((0, 4, 4))
    order = sorted(range(len(samples)), key=lambda i: samples[i][0])  # stable: arrival order within a stamp
    t = np.array([samples[i][0] for i in order], dtype=np.int64)
    T = np.stack([samples[i][1] for i in order])
    keep = np.ones(t.size, dtype=bool)
    keep[:-1] = t[1:] != t[:-1]
    return t[keep] / 1e9, T[keep]


def _is_static(topic: str) -> bool:
    return topic.rstrip("/").endswith("tf_static")


def _topic_samples(reader: Any, topic: str) -> tuple[str, list[tuple[int, np.ndarray]], tuple[str, str]]:
    """``(msgtype, [(stamp ns, T)], (frame_id, child))`` of a pose topic."""
    conns = topic_connections(reader, topic)
    msgtype = conns[0].msgtype
    if msgtype not in POSE_TYPES:
        raise UnknownTopicError(
            f"topic {topic} is a {msgtype}, not a trajectory "
            f"({', '.join(t.split('/')[-1] for t in POSE_TYPES)} or TF with frames=(parent, child))"
        )
    samples: list[tuple[int, np.ndarray]] = []
    frames = ("", "")
    last_path = None
    for conn, _, raw in iter_messages(reader, conns):
        msg = deserialize(reader, raw, conn.msgtype)
        if msgtype == PATH:
            last_path = msg
            continue
        pose = _pose_of(msg)
        if pose is not None:
            samples.append(pose[:2])
            frames = (pose[2], pose[3])
    if last_path is not None:
        samples = [p[:2] for p in map(_pose_of, last_path.poses) if p is not None]
        frames = (last_path.header.frame_id, "")
    return msgtype, samples, frames


def read_tf_tree(reader: Any) -> TfTree:
    """Every transform of every TF topic of an open reader."""
    tree = TfTree()
    conns = [c for c in reader.connections if c.msgtype == TF_TYPE]
    for conn, _, raw in iter_messages(reader, conns):
        for tr in deserialize(reader, raw, conn.msgtype).transforms:
            try:
                T = pose_to_matrix(tr.transform)
            except PoseError:
                continue
            stamp = stamp_to_ns(tr.header.stamp)
            tree.add(tr.header.frame_id, tr.child_frame_id, stamp, T, is_static=_is_static(conn.topic))
    return tree


def list_trajectories(path: str | Path) -> list[TrajectorySource]:
    """Every trajectory :func:`read_trajectory` can extract: pose topics, then dynamic TF edges."""
    out: list[TrajectorySource] = []
    with open_bag(path) as reader:
        for info in describe_topics(reader):
            if info.msgtype in POSE_TYPES:
                msgtype, samples, frames = _topic_samples(reader, info.name)
                out.append(TrajectorySource(info.name, msgtype, frames, len(samples)))
        tree = read_tf_tree(reader)
    for parent, child, count, is_static in tree.edges():
        if not is_static:
            out.append(TrajectorySource("tf", TF_TYPE, (parent, child), count))
    return out


def _auto_topic(reader: Any) -> str:
    """The one pose topic of the bag, or the preferred one among several; else a clear error."""
    topics = [t for t in describe_topics(reader) if t.msgtype in POSE_TYPES]
    if len(topics) == 1:
        return topics[0].name
    for suffix in PREFERRED_TOPICS:
        hits = [t.name for t in topics if t.name.strip("/").endswith(suffix)]
        if len(hits) == 1:
            return hits[0]
    if not topics:
        raise NoTrajectoryError(
            "the bag has no pose topic (Odometry, PoseStamped, PoseWithCovarianceStamped, Path); for TF pass "
            f"frames=(parent, child); it holds {topics_text(describe_topics(reader))}"
        )
    raise NoTrajectoryError(
        f"the bag has several pose topics, choose one: {', '.join(t.name for t in topics)}"
    )


def read_trajectory(
    path: str | Path, topic: str | None = None, *, frames: tuple[str, str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A trajectory of the bag at ``path``: ``(timestamps [N] float64 s, T [N, 4, 4] float64)``.

    Args:
        path: a rosbag2 folder, ``.mcap``/``.db3`` file or ROS 1 ``.bag``.
        topic: a pose topic (Odometry / PoseStamped / PoseWithCovarianceStamped / Path); ``None``: the only
            pose topic (or the tracker's camera pose / the ground truth among several).
        frames: ``(parent, child)``: the TF chain ``T_parent_child`` instead of a topic (``/tf`` +
            ``/tf_static``; static and dynamic edges chained).

    Raises:
        BagError: missing / corrupt bag (:class:`BagNotFoundError`, :class:`CorruptBagError`), unknown topic
            (:class:`UnknownTopicError`), nothing to extract or an empty result (:class:`NoTrajectoryError`).
    """
    with open_bag(path) as reader:
        if frames is not None:
            t_ns, T = read_tf_tree(reader).trajectory(*frames)
            what = f"TF {frames[0]} -> {frames[1]}"
            t, T = t_ns / 1e9, T
        else:
            name = topic if topic is not None else _auto_topic(reader)
            _, samples, _ = _topic_samples(reader, name)
            t, T = _as_arrays(samples)
            what = name
    if t.size == 0:
        raise NoTrajectoryError(f"{path}: {what} holds no valid pose")
    return t.astype(np.float64), np.ascontiguousarray(T, dtype=np.float64)
