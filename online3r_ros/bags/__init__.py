"""Bags without ROS: read and write rosbag2 (MCAP, sqlite3) and read ROS 1 bags with ``rosbags``.

- :mod:`.reader`: :func:`open_bag`, :func:`list_topics`, :func:`bag_summary` (any bag; one-line errors).
- :mod:`.trajectory`: :func:`read_trajectory` ``(path, topic=None, *, frames=None) -> (t [N] s, T [N, 4, 4])``
  from Odometry / PoseStamped / PoseWithCovarianceStamped / Path topics or a TF chain;
  :func:`list_trajectories`.
- :mod:`.rgbd`: :func:`find_rgbd_topics`, :func:`iter_rgbd_frames` (colour + depth + intrinsics as numpy).
- :mod:`.convert`: :func:`convert_dataset` (7-Scenes / TUM / image folder -> rosbag2).
- :mod:`.writer`: :class:`BagWriter`; :mod:`.messages`: ``rosbags`` message builders;
  :mod:`.stream`: the ROS 2 CDR stream a player publishes; :mod:`.errors`: :class:`BagError` and subclasses.

Nothing here imports rclpy; publishing and recording over DDS live in :mod:`online3r_ros.ros.bag_play` and
:mod:`online3r_ros.ros.bag_record`.
"""

from online3r_ros.bags.errors import (
    BagError,
    BagNotFoundError,
    CorruptBagError,
    FrameSizeError,
    NoImageTopicError,
    NoTrajectoryError,
    UnknownTopicError,
)
from online3r_ros.bags.reader import BagSummary, TopicInfo, bag_summary, list_topics, open_bag
from online3r_ros.bags.rgbd import BagFrame, RgbdTopics, find_rgbd_topics, iter_rgbd_frames
from online3r_ros.bags.trajectory import TrajectorySource, list_trajectories, read_trajectory
from online3r_ros.bags.writer import STORAGES, BagWriter

__all__ = [
    "STORAGES",
    "BagError",
    "BagFrame",
    "BagNotFoundError",
    "BagSummary",
    "BagWriter",
    "CorruptBagError",
    "FrameSizeError",
    "NoImageTopicError",
    "NoTrajectoryError",
    "RgbdTopics",
    "TopicInfo",
    "TrajectorySource",
    "UnknownTopicError",
    "bag_summary",
    "find_rgbd_topics",
    "iter_rgbd_frames",
    "list_topics",
    "list_trajectories",
    "open_bag",
    "read_trajectory",
]
