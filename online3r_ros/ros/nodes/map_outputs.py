"""The mapper node's map outputs: keyframe poses and paths, the all-frames path, the dense map and its
per-keyframe updates and the rviz markers, in the ``map`` frame, stamped with the inputs' own stamps.

``map`` = the robot base at the tracker's first image; the base -> camera transform comes with each keyframe
(metadata ``T_bc``, :meth:`MapOutputs.set_base_camera`), so SLAM-world points / poses become ``T_bc · X`` /
``T_bc · T_WC``. Keyframe outputs are published as each keyframe is integrated; the full map and the
all-frames path, whose cost grows with the map, at most every ``map_period`` / ``path_period`` s
(:meth:`MapOutputs.periodic`). Every method is called with the backend lock held.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseArray
from nav_msgs.msg import Path as PathMsg
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from online3r_ros.ros import topics as T
from online3r_ros.ros.frames import RobotFrames
from online3r_ros.ros.nodes.diagnostics import NodeStats
from online3r_ros.ros.nodes.markers import map_markers
from online3r_ros.ros.nodes.params import MapperParams
from online3r_ros.ros.path_cdr import path_cdr
from online3r_ros.ros.pointcloud import numpy_to_pointcloud2
from online3r_ros.ros.pose import T_LINK_OPTICAL, matrices_to_poses
from online3r_ros.ros.time import ns_to_stamp, sec_to_ns
from online3r_ros.slam.backend import MapperBackend
from online3r_ros.slam.map_export import MapPoints

__all__ = ["MapOutputs"]


class MapOutputs:
    """Owns the mapper's map output topics (see the module docstring)."""

    def __init__(self, node: Any, backend: MapperBackend, params: MapperParams, stats: NodeStats) -> None:
        self.node, self.backend, self.p, self.stats = node, backend, params, stats
        self.frames = RobotFrames(T_LINK_OPTICAL)  # replaced by the keyframes' base -> camera transform

        def pub(msg_type: type, spec: Any) -> Any:
            return node.create_publisher(msg_type, spec.name, T.qos_for(spec))

        self.pub_kf_poses = pub(PoseArray, T.KEYFRAME_POSES)
        self.pub_kf_path = pub(PathMsg, T.KEYFRAME_PATH)
        self.pub_path = pub(PathMsg, T.PATH)
        self.pub_map = pub(PointCloud2, T.MAP)
        self.pub_updates = pub(PointCloud2, T.MAP_UPDATES)
        self.pub_markers = pub(MarkerArray, T.MARKERS)
        self.map_dirty = self.path_dirty = False  # the frames' poses moved since the last full map / path
        self._last_map = self._last_path = time.monotonic()

    def set_base_camera(self, T_bc: np.ndarray) -> None:
        """The robot base -> camera transform ``[4, 4]`` of the latest keyframe."""
        self.frames = RobotFrames(T_bc)

    def after_keyframe(self, kf_id: int | None) -> None:
        """Poses moved (an optimisation): keyframe poses, paths and markers now, the full map when due;
        ``kf_id``: a keyframe whose fusion has ended (the one before a newly integrated one), published
        as a map update."""
        if kf_id is not None:
            self._publish_chunk(kf_id)
        self.publish_poses_and_paths()
        self.publish_markers()
        self.map_dirty = True

    def publish_all(self) -> None:
        """Everything, now (a map was loaded); nothing for an empty map."""
        if self.backend.num_keyframes:
            self.publish_poses_and_paths()
            self.publish_markers()
            self.publish_full_map()

    def periodic(self, publish_map: bool) -> None:
        """The full map (``publish_map``: now) and the paths when they changed and their period has passed,
        timed in the status (``publish_map``, ``publish_paths``)."""
        now = time.monotonic()
        period = self.p.map_period
        if publish_map or (period > 0 and self.map_dirty and now - self._last_map >= period):
            t0 = time.monotonic()
            self.publish_full_map()
            self.stats.add_times({"publish_map": 1000 * (time.monotonic() - t0)})
            self._last_map = now
        period = self.p.path_period
        if period > 0 and self.path_dirty and now - self._last_path >= period:
            t0 = time.monotonic()
            self.publish_poses_and_paths()
            self.stats.add_times({"publish_paths": 1000 * (time.monotonic() - t0)})
            self._last_path = now

    def publish_poses_and_paths(self) -> None:
        kts, kposes = self.backend.keyframe_trajectory()
        kmap = self.frames.cameras_in_map(kposes)
        if len(kts):
            header = Header(frame_id=self.p.map_frame, stamp=self._stamp(float(kts[-1])))
            self.pub_kf_poses.publish(PoseArray(header=header, poses=matrices_to_poses(kmap)))
            self.pub_kf_path.publish(self._path(kts, kmap))
        ts, poses = self.backend.trajectory()
        if len(ts):
            self.pub_path.publish(self._path(ts, self.frames.cameras_in_map(poses)))
        self.path_dirty = False

    def publish_full_map(self) -> None:
        chunk = self.backend.map_points().subsample(self.p.map_max_points)
        self.pub_map.publish(self._cloud(chunk, self._last_stamp()))
        self.stats.values["map_points"] = len(chunk)
        self.stats.count("maps_published")
        self.map_dirty = False

    def publish_markers(self) -> None:
        n = self.backend.num_keyframes
        if n == 0:
            return
        K = self.backend.keyframes.intrinsics(n - 1, device="cpu")
        H, W = self.backend.keyframes.image_size(n - 1)
        self.pub_markers.publish(
            map_markers(
                Header(frame_id=self.p.map_frame, stamp=self._last_stamp()),
                self.frames.cameras_in_map(self.backend.keyframe_poses()),
                None if K is None else K.double().numpy(),
                (W, H),
                self.backend.edges(),
                self.p.frustum_scale,
                loops=self.backend.loop_edges,
            )
        )

    def _publish_chunk(self, kf_id: int) -> None:
        chunk = self.backend.map_points([kf_id])
        self.pub_updates.publish(self._cloud(chunk, self._stamp(self.backend.kf_stamps[kf_id])))
        self.stats.values["map_update_points"] = len(chunk)

    def _cloud(self, chunk: MapPoints, stamp: Any) -> PointCloud2:
        pts = self.frames.points_in_map(chunk.points)
        return numpy_to_pointcloud2(
            pts, chunk.colors, chunk.confidence, frame_id=self.p.map_frame, stamp=stamp
        )

    def _stamp_ns(self, t: float) -> int:
        """Integer-nanosecond stamp of the frame at ``t`` (s): the input's own where known."""
        known = self.backend.stamps_ns.get(t)
        return known if known is not None else sec_to_ns(max(t, 0.0))

    def _stamp(self, t: float) -> Any:
        return ns_to_stamp(self._stamp_ns(t))

    def _last_stamp(self) -> Any:
        kf_stamps = self.backend.kf_stamps
        return self._stamp(kf_stamps[-1]) if kf_stamps else self.node.get_clock().now().to_msg()

    def _path(self, ts: np.ndarray, poses: np.ndarray) -> bytes:
        """The serialised ``nav_msgs/Path`` of camera poses ``[N, 4, 4]`` at ``ts [N]`` (N >= 1) in the map
        frame (numpy-built: :func:`~online3r_ros.ros.path_cdr.path_cdr`; a 9,000-frame path as message
        objects took ~170 ms under the lock)."""
        stamps = np.array([self._stamp_ns(t) for t in np.asarray(ts, np.float64).tolist()], dtype=np.int64)
        return path_cdr(self.p.map_frame, int(stamps[-1]), stamps, poses)
