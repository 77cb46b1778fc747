"""The tracker node's pose outputs in the robot's frames (REP 105): odometry, the camera pose and TF.

``map`` is the base frame at the first image, ``odom`` follows the continuous odometry, ``map -> odom``
carries the mapper's corrections. The base -> camera transform comes from the ``base_to_camera`` parameter
(published on ``/tf_static``), else from ``/tf_static`` (the tracker waits ``tf_static_wait`` s for it),
else the REP-103 optical rotation at the base origin (with a warning). With ``external_odometry`` another
node owns ``odom -> base`` on ``/tf`` and only ``map -> odom`` is published, against that node's transform
at the image's stamp. The algebra: :class:`~online3r_ros.ros.frames.RobotFrames`,
:class:`~online3r_ros.ros.frames.ExternalOdometry`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from tf2_msgs.msg import TFMessage

from online3r_ros.ros import topics as T
from online3r_ros.ros.frames import ExternalOdometry, RobotFrames, StaticTfChain
from online3r_ros.ros.nodes.common import LogOnce
from online3r_ros.ros.nodes.diagnostics import NodeStats
from online3r_ros.ros.nodes.params import TrackerParams
from online3r_ros.ros.pose import T_LINK_OPTICAL, odometry, pose_stamped, pose_to_matrix, tqs_to_matrix
from online3r_ros.ros.pose import transform_stamped as tf_stamped
from online3r_ros.ros.qos import tf_qos, tf_static_qos
from online3r_ros.ros.tf import TfBroadcaster
from online3r_ros.ros.time import stamp_to_ns
from online3r_ros.slam.frontend import TrackerStep

__all__ = ["RobotPoses"]


class RobotPoses:
    """Owns the tracker's odometry, pose and TF outputs and its base -> camera transform (module docstring).

    ``on_error``: reports a bad input transform; ``running``: ``False`` ends a wait for external odometry.
    """

    def __init__(
        self,
        node: Any,
        params: TrackerParams,
        stats: NodeStats,
        log_once: LogOnce,
        on_error: Callable[[str], None],
        running: Callable[[], bool],
    ) -> None:
        self.node, self.p, self.stats = node, params, stats
        self._log_once, self._on_error, self._running = log_once, on_error, running
        self.frames: RobotFrames | None = None  # once base -> camera is known
        self._static = StaticTfChain()
        self._odom_ext = ExternalOdometry(params.odom_tolerance, params.odom_wait)
        self.pub_odom = node.create_publisher(Odometry, T.ODOMETRY.name, T.qos_for(T.ODOMETRY))
        self.pub_pose = node.create_publisher(PoseStamped, T.CAMERA_POSE.name, T.qos_for(T.CAMERA_POSE))
        self.tf = TfBroadcaster(node) if params.publish_tf else None
        if not params.base_to_camera:
            node.create_subscription(TFMessage, "/tf_static", self._on_tf_static, tf_static_qos(10))
        if params.external_odometry:
            node.create_subscription(TFMessage, "/tf", self._on_tf, tf_qos())
        if params.base_to_camera:
            b2c = params.base_to_camera
            self.set_base_camera(tqs_to_matrix(b2c[:3], b2c[3:]), publish=True)

    def set_base_camera(self, T_bc: np.ndarray, publish: bool) -> None:
        """The base -> camera transform ``[4, 4]`` (``publish``: also on ``/tf_static``)."""
        self.frames = RobotFrames(T_bc)
        if publish and self.tf is not None:
            now = self.node.get_clock().now().to_msg()
            self.tf.send_static_transform(tf_stamped(T_bc, self.p.base_frame, self.p.camera_frame, now))

    def robot_frames(self) -> RobotFrames:
        """The robot frames, falling back to the optical rotation at the base origin (logged) when no
        base -> camera transform came."""
        if self.frames is None:
            self.set_base_camera(T_LINK_OPTICAL, publish=True)
            self.node.get_logger().warning(
                f"no {self.p.base_frame} -> {self.p.camera_frame} transform (parameter or /tf_static): "
                "using the REP-103 optical rotation at the base origin"
            )
        return self.frames

    @property
    def T_bc(self) -> np.ndarray:
        """The base -> camera transform ``[4, 4]`` known so far (the optical rotation until one came)."""
        return self.frames.T_bc if self.frames is not None else T_LINK_OPTICAL

    def publish(self, step: TrackerStep, stamp: Any, T_W_odom: np.ndarray) -> None:
        """Odometry, camera pose and TF of a posed frame (``T_W_odom [4, 4]``: the frontend's map -> odom)."""
        p, frames = self.p, self.robot_frames()
        T_odom_base = frames.base_in_odom(step.T_odom)
        self.pub_odom.publish(odometry(T_odom_base, p.odom_frame, p.base_frame, stamp))
        self.pub_pose.publish(pose_stamped(frames.camera_in_map(step.T_WC), p.map_frame, stamp))
        T_map_odom = frames.odom_in_map(T_W_odom)
        if p.external_odometry:  # map -> odom against the other node's odom -> base at this stamp
            T_odom_ext = self._odom_ext.at(stamp_to_ns(stamp), self._running)
            T_map_odom = None if T_odom_ext is None else frames.odom_in_map_external(step.T_WC, T_odom_ext)
            if T_map_odom is None:
                self.stats.count("odometry_missing")
                self._log_once(
                    self.node.get_logger().warning,
                    f"no external {p.odom_frame} -> {p.base_frame} on /tf near the image stamp: "
                    "map -> odom not published",
                )
        if self.tf is None:
            return
        tfs = []
        if p.publish_odom_tf and not p.external_odometry:
            tfs.append(tf_stamped(T_odom_base, p.odom_frame, p.base_frame, stamp))
        if p.publish_map_tf and T_map_odom is not None:
            tfs.append(tf_stamped(T_map_odom, p.map_frame, p.odom_frame, stamp))
        if tfs:
            self.tf.send_transform(tfs)

    def _on_tf(self, msg: Any) -> None:
        for tr in msg.transforms:
            if tr.header.frame_id == self.p.odom_frame and tr.child_frame_id == self.p.base_frame:
                try:
                    self._odom_ext.add(stamp_to_ns(tr.header.stamp), pose_to_matrix(tr))
                except ValueError as exc:
                    self._on_error(f"external odometry transform: {exc}")

    def _on_tf_static(self, msg: Any) -> None:
        self._static.add(msg)
        if self.frames is None:
            T_bc = self._static.lookup(self.p.base_frame, self.p.camera_frame)
            if T_bc is not None:
                self.set_base_camera(T_bc, publish=False)
                self.node.get_logger().info(
                    f"base -> camera from /tf_static: t={T_bc[:3, 3].round(4).tolist()}"
                )
