"""Record what the tracker and mapper publish (:mod:`online3r_ros.ros.topics`), keyed by stamp.

:class:`OutputRecorder` subscribes to odometry, camera pose, both paths, the map (full and incremental),
markers, statuses and ``/tf``, with the monotonic arrival time of each message (latency = arrival - send
time of the image with that stamp; both clocks are this process's). Callbacks run on an executor thread;
the getters copy under a lock.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from online3r_ros.ros import topics as T
from online3r_ros.ros.path_cdr import PathCdrError, path_from_cdr
from online3r_ros.ros.pointcloud import pointcloud2_to_numpy
from online3r_ros.ros.pose import pose_to_matrix, tqs_to_matrix
from online3r_ros.ros.qos import tf_qos
from online3r_ros.ros.time import stamp_to_ns

__all__ = ["OutputRecorder", "RecordedPose"]


@dataclass
class _Cloud:
    xyz: np.ndarray
    rgb: np.ndarray | None
    confidence: np.ndarray | None
    frame_id: str
    stamp_ns: int
    received: float


@dataclass
class RecordedPose:
    """A pose message: stamp (ns), ``T`` (4x4, parent <- child), frame ids and monotonic arrival time."""

    stamp_ns: int
    T: np.ndarray
    frame_id: str
    child_frame_id: str
    received: float


@dataclass
class _Store:
    odometry: list = field(default_factory=list)
    camera_poses: list = field(default_factory=list)
    path: list = field(default_factory=list)
    frame_ids: dict = field(default_factory=dict)
    path_count: int = 0
    keyframe_path: list = field(default_factory=list)
    keyframe_path_count: int = 0
    map_cloud: _Cloud | None = None
    map_count: int = 0
    map_updates: dict = field(default_factory=dict)
    markers: int = 0
    loop_segments: np.ndarray = field(default_factory=lambda: np.zeros((0, 2, 3)))
    tracker_status: dict | None = None
    mapper_status: dict | None = None
    tf_edges: dict = field(default_factory=dict)


class OutputRecorder:
    """Subscribe to the tracker's and mapper's outputs (topic names relative to ``namespace``) and keep them.

    Read with the properties (copies, taken under a lock); :meth:`counts` summarises what arrived.
    """

    def __init__(self, node: Any, namespace: str = "", *, record_tf: bool = True) -> None:
        from geometry_msgs.msg import PoseStamped
        from nav_msgs.msg import Odometry, Path
        from sensor_msgs.msg import PointCloud2
        from std_msgs.msg import String
        from visualization_msgs.msg import MarkerArray

        self._lock = threading.Lock()
        self._s = _Store()
        ns = namespace.rstrip("/")

        def name(spec: T.TopicSpec) -> str:
            return spec.name if spec.name.startswith("/") or not ns else f"{ns}/{spec.name}"

        def sub(msg_type: Any, spec: T.TopicSpec, callback: Callable[[Any], None], raw: bool = False) -> None:
            node.create_subscription(msg_type, name(spec), callback, T.qos_for(spec), raw=raw)

        sub(Odometry, T.ODOMETRY, self._on_odometry)
        sub(PoseStamped, T.CAMERA_POSE, self._on_camera_pose)
        sub(Path, T.PATH, self._on_path, raw=True)  # serialised: read with numpy
        sub(Path, T.KEYFRAME_PATH, self._on_keyframe_path, raw=True)
        sub(PointCloud2, T.MAP, self._on_map)
        sub(PointCloud2, T.MAP_UPDATES, self._on_map_update)
        sub(MarkerArray, T.MARKERS, self._on_markers)
        sub(String, T.TRACKER_STATUS, lambda m: self._on_status("tracker_status", m))
        sub(String, T.MAPPER_STATUS, lambda m: self._on_status("mapper_status", m))
        if record_tf:
            from online3r_ros.ros.tf import tf2_msgs_available, tf_message_type

            if tf2_msgs_available():
                node.create_subscription(tf_message_type(), "/tf", self._on_tf, tf_qos())

    # callbacks (executor thread)
    def _on_odometry(self, msg: Any) -> None:
        rec = RecordedPose(
            stamp_to_ns(msg.header.stamp),
            pose_to_matrix(msg.pose.pose),
            msg.header.frame_id,
            msg.child_frame_id,
            time.monotonic(),
        )
        with self._lock:
            self._s.odometry.append(rec)
            self._s.frame_ids["odometry"] = f"{rec.frame_id}->{rec.child_frame_id}"

    def _on_camera_pose(self, msg: Any) -> None:
        rec = RecordedPose(
            stamp_to_ns(msg.header.stamp), pose_to_matrix(msg.pose), msg.header.frame_id, "", time.monotonic()
        )
        with self._lock:
            self._s.camera_poses.append(rec)
            self._s.frame_ids["camera_pose"] = rec.frame_id

    @staticmethod
    def _path_poses(data: bytes) -> tuple[str, list[tuple[int, np.ndarray]]]:
        """The frame id and ``(stamp_ns, [4, 4] pose)`` per pose of a serialised ``nav_msgs/Path``: read
        with numpy (:func:`~online3r_ros.ros.path_cdr.path_from_cdr`), or with rclpy where its poses carry
        other frame ids."""
        try:
            frame_id, _, stamps, poses = path_from_cdr(data)
        except PathCdrError:
            from nav_msgs.msg import Path
            from rclpy.serialization import deserialize_message

            msg = deserialize_message(data, Path)
            return msg.header.frame_id, [
                (stamp_to_ns(p.header.stamp), pose_to_matrix(p.pose)) for p in msg.poses
            ]
        matrices = tqs_to_matrix(poses[:, :3], poses[:, 3:]) if len(poses) else np.zeros((0, 4, 4))
        return frame_id, list(zip(stamps.tolist(), matrices, strict=True))

    def _on_path(self, data: bytes) -> None:
        frame_id, poses = self._path_poses(data)
        with self._lock:
            self._s.path = poses
            self._s.frame_ids["path"] = frame_id
            self._s.path_count += 1

    def _on_keyframe_path(self, data: bytes) -> None:
        frame_id, poses = self._path_poses(data)
        with self._lock:
            self._s.keyframe_path = poses
            self._s.frame_ids["keyframe_path"] = frame_id
            self._s.keyframe_path_count += 1

    @staticmethod
    def _cloud(msg: Any) -> _Cloud:
        arr = pointcloud2_to_numpy(msg, skip_nans=True)
        return _Cloud(
            arr.xyz,
            arr.rgb,
            arr.confidence,
            msg.header.frame_id,
            stamp_to_ns(msg.header.stamp),
            time.monotonic(),
        )

    def _on_map(self, msg: Any) -> None:
        cloud = self._cloud(msg)
        with self._lock:
            self._s.map_cloud = cloud
            self._s.frame_ids["map"] = cloud.frame_id
            self._s.map_count += 1

    def _on_map_update(self, msg: Any) -> None:
        cloud = self._cloud(msg)
        with self._lock:
            self._s.map_updates[cloud.stamp_ns] = cloud  # a re-sent keyframe replaces its old chunk

    def _on_markers(self, msg: Any) -> None:
        loops = [m for m in msg.markers if m.ns == "loops"]
        pts = np.array([[p.x, p.y, p.z] for m in loops for p in m.points], dtype=np.float64).reshape(-1, 2, 3)
        with self._lock:
            self._s.markers += 1
            self._s.loop_segments = pts

    def _on_status(self, key: str, msg: Any) -> None:
        try:
            data = json.loads(msg.data)
        except ValueError:
            data = {"unparsed": msg.data}
        with self._lock:
            setattr(self._s, key, data)

    def _on_tf(self, msg: Any) -> None:
        with self._lock:
            for tr in msg.transforms:
                key = (tr.header.frame_id, tr.child_frame_id)
                self._s.tf_edges[key] = max(self._s.tf_edges.get(key, 0), stamp_to_ns(tr.header.stamp))

    # readers (any thread)
    def _get(self, attr: str) -> Any:
        with self._lock:
            value = getattr(self._s, attr)
            return (
                list(value) if isinstance(value, list) else dict(value) if isinstance(value, dict) else value
            )

    @property
    def odometry(self) -> list[RecordedPose]:
        return self._get("odometry")

    @property
    def camera_poses(self) -> list[RecordedPose]:
        return self._get("camera_poses")

    @property
    def path(self) -> list[tuple[int, np.ndarray]]:
        """Latest all-frames path: ``[(stamp_ns, T_map_camera)]``."""
        return self._get("path")

    @property
    def keyframe_path(self) -> list[tuple[int, np.ndarray]]:
        return self._get("keyframe_path")

    @property
    def map_cloud(self) -> _Cloud | None:
        return self._get("map_cloud")

    @property
    def map_updates(self) -> dict[int, _Cloud]:
        return self._get("map_updates")

    @property
    def tracker_status(self) -> dict | None:
        return self._get("tracker_status")

    @property
    def loop_segments(self) -> np.ndarray:
        """``[M, 2, 3]`` end points (map frame) of the loop-closure edges of the last markers."""
        return self._get("loop_segments")

    @property
    def mapper_status(self) -> dict | None:
        return self._get("mapper_status")

    @property
    def tf_edges(self) -> dict[tuple[str, str], int]:
        """``{(parent, child): latest stamp ns}`` seen on ``/tf``."""
        return self._get("tf_edges")

    @property
    def frame_ids(self) -> dict[str, str]:
        """Latest ``header.frame_id`` per output (odometry: ``"frame->child"``)."""
        return self._get("frame_ids")

    def counts(self) -> dict[str, int]:
        """How many messages of each output arrived (paths/map: publications; map_updates: keyframes)."""
        with self._lock:
            s = self._s
            return {
                "odometry": len(s.odometry),
                "camera_pose": len(s.camera_poses),
                "path": s.path_count,
                "path_poses": len(s.path),
                "keyframe_path": s.keyframe_path_count,
                "map": s.map_count,
                "map_points": 0 if s.map_cloud is None else len(s.map_cloud.xyz),
                "map_updates": len(s.map_updates),
                "markers": s.markers,
                "tf_edges": len(s.tf_edges),
            }
