"""The tracker node: images in -> odometry, camera pose, TF, keyframes and observations for the mapper.

Thin ROS shell around :class:`online3r_ros.slam.tracking_frontend.TrackerFrontend` (topics:
:mod:`online3r_ros.ros.topics`; parameters: :data:`online3r_ros.ros.nodes.params.TRACKER_PARAMS`).

- Never queues stale frames: the image callback keeps only the newest image (a replaced one counts as
  ``dropped``); a worker thread processes it once its depth (same stamp within ``sync_tolerance``) and
  CameraInfo are there (or ``sync_wait`` passed), so the ROS callbacks never wait for the SLAM work.
- Bad input (unknown encoding, zero size, size change within a session, CameraInfo disagreeing with the
  image, missing depth) is rejected with a log line and ``/diagnostics`` at ERROR; the node keeps running.
- An image more than ``time_jump_threshold`` older than the previous one (a looping bag) starts a new
  session (``reset_on_time_jump``); a smaller step back is rejected as out of order.
- Frames: SLAM poses are camera-optical poses in the SLAM world (the first camera frame). With the static
  ``T_bc = base_frame -> camera_frame``, ``map`` is the base frame at the first image:
  ``T_map_cam = T_bc · T_WC``, ``T_map_base = T_bc · T_WC · T_bc⁻¹``; ``odom`` starts equal to ``map`` and
  follows the continuous odometry; ``map -> odom`` carries the mapper's corrections.
- ``external_odometry``: another node owns ``odom -> base`` (wheel odometry, an EKF); the tracker then
  publishes only ``map -> odom = T_map_base · T_odom_base⁻¹`` with that node's transform interpolated at
  the image stamp (``/tf`` history), so the chain map -> odom -> base gives the SLAM pose. The odometry
  and pose are published first; ``map -> odom`` then waits (at most ``odom_wait``) for an ``odom -> base``
  sample at or after the image stamp, so odometry arriving after the image is interpolated, not held
  (a held previous sample would put one frame's motion into ``map -> odom``).
- Lost frames publish nothing (a downstream EKF must not get a confident pose); diagnostics say ``lost``.

Run with ``ros2 run online3r_ros tracker --ros-args --params-file config/online3r_ros.yaml`` or
``python -m online3r_ros.ros.nodes.tracker ...``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rclpy.node import Node

from online3r_ros.ros import topics as T
from online3r_ros.ros.nodes.common import (
    LogOnce,
    PoseHistory,
    StaticTfChain,
    publish_node_diagnostics,
    run_node,
    setup_node_params,
    start_worker,
    stop_worker,
)
from online3r_ros.ros.nodes.diagnostics import NodeStats
from online3r_ros.ros.nodes.inputs import decode_inputs
from online3r_ros.ros.nodes.msgs import (
    MessageFormatError,
    array_to_poses,
    keyframe_to_cloud,
    observation_to_cloud,
    parse_mapper_state,
)
from online3r_ros.ros.nodes.params import TRACKER_PARAMS, ParameterError
from online3r_ros.ros.pose import (
    T_LINK_OPTICAL,
    invert,
    odometry,
    pose_stamped,
    tqs_to_matrix,
    transform_stamped,
)
from online3r_ros.ros.time import stamp_to_ns, stamp_to_sec

__all__ = ["TrackerNode", "main", "decode_inputs"]

_STATE_NAMES = {"init": "initialising", "tracking": "tracking", "reloc": "tracking", "lost": "lost"}


class TrackerNode(Node):
    """See the module docstring."""

    def __init__(self, context: Any = None, node_name: str = "tracker") -> None:
        super().__init__(node_name, context=context)
        self.p, cfg = setup_node_params(self, TRACKER_PARAMS)
        from online3r_ros.slam.runner import build_source
        from online3r_ros.slam.tracking_frontend import TrackerFrontend

        if cfg.source.kind == "depth":
            for name in ("depth_topic", "camera_info_topic"):
                if not self.p[name]:
                    raise ParameterError(name, "the RGB-D source (source.kind 'depth') needs it")
        source = build_source(cfg)
        self._warm_up(cfg, source, self.p["warmup_frames"])
        self.frontend = TrackerFrontend(cfg, source)
        self.stats = NodeStats("tracker", self.p["error_hold"], self.p["input_timeout"])
        self.stats.values["session"] = self.frontend.session
        self._log_once = LogOnce(2.0)
        self._lock = threading.Lock()  # the frontend (worker, services)
        self._wake = threading.Condition()  # the input slots (callbacks <-> worker)
        self._running = True
        self._image: tuple[Any, float] | None = None  # (msg, monotonic arrival)
        self._depths: deque = deque(maxlen=30)
        self._info: Any = None
        self._poses: tuple[int, torch.Tensor] | None = None
        self._mapper_state: dict | None = None
        self._mapper_generation: int | None = None
        self._reset_request = False
        self._size: tuple[int, int] | None = None
        self._kf_stamps: dict[int, Any] = {}  # keyframe id -> its image stamp (re-sending keeps it)
        self._rectify_cache: dict = {}
        self._static = StaticTfChain()
        self._odom_ext = PoseHistory()  # external odom -> base samples (external_odometry)
        self._odom_cond = threading.Condition()  # guards _odom_ext; notified on each new sample
        self._T_bc: np.ndarray | None = None
        self._start = time.monotonic()
        self._build_io()
        if self.p["base_to_camera"]:
            b = self.p["base_to_camera"]
            self._set_base_camera(tqs_to_matrix(b[:3], b[3:]), publish=True)
        start_worker(
            self,
            "tracker",
            cfg,
            f"image={self.p['image_topic']} "
            f"({self.p['image_transport']}) depth={self.p['depth_topic'] or '-'} "
            f"camera_info={self.p['camera_info_topic'] or '-'} session={self.frontend.session}",
        )

    # --------------------------------------------------------------------------------------------- set-up
    def _warm_up(self, cfg: Any, source: Any, n: int) -> None:
        """Run ``n`` small synthetic RGB-D frames through a throw-away frontend (torch first-call costs)."""
        if n <= 0 or cfg.source.kind != "depth":
            return
        from online3r_ros.slam.tracking_frontend import TrackerFrontend
        from online3r_ros.synthetic import make_synthetic_sequence

        t0 = time.perf_counter()
        throwaway = TrackerFrontend(cfg, source)
        for f in make_synthetic_sequence(n_frames=480, width=160, height=120, max_frames=n):
            throwaway.process(f.rgb, f.depth, f.K, f.timestamp)
        self.get_logger().info(f"warm-up: {n} frames in {time.perf_counter() - t0:.2f} s")

    def _build_io(self) -> None:
        from geometry_msgs.msg import PoseStamped
        from nav_msgs.msg import Odometry
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
        from std_msgs.msg import Float64MultiArray, String
        from std_srvs.srv import Trigger

        from online3r_ros.ros.qos import qos_from_parameter, tf_static_qos

        p = self.p
        qos_in = qos_from_parameter(p["image_qos"])
        self.pub_odom = self.create_publisher(Odometry, T.ODOMETRY.name, T.qos_for(T.ODOMETRY))
        self.pub_pose = self.create_publisher(PoseStamped, T.CAMERA_POSE.name, T.qos_for(T.CAMERA_POSE))
        self.pub_status = self.create_publisher(String, T.TRACKER_STATUS.name, T.qos_for(T.TRACKER_STATUS))
        self.pub_kf = self.create_publisher(PointCloud2, T.KEYFRAMES.name, T.qos_for(T.KEYFRAMES))
        self.pub_obs = self.create_publisher(PointCloud2, T.OBSERVATIONS.name, T.qos_for(T.OBSERVATIONS))
        from diagnostic_msgs.msg import DiagnosticArray

        self.pub_diag = self.create_publisher(DiagnosticArray, T.DIAGNOSTICS.name, T.qos_for(T.DIAGNOSTICS))
        self.tf = None
        if p["publish_tf"]:
            from online3r_ros.ros.tf import TfBroadcaster

            self.tf = TfBroadcaster(self)
        image_type = CompressedImage if p["image_transport"] == "compressed" else Image
        self.create_subscription(image_type, p["image_topic"], self._on_image, qos_in)
        if p["depth_topic"]:
            self.create_subscription(Image, p["depth_topic"], self._on_depth, qos_in)
        if p["camera_info_topic"]:
            self.create_subscription(CameraInfo, p["camera_info_topic"], self._on_info, qos_in)
        self.create_subscription(
            Float64MultiArray, T.KEYFRAME_SIM3.name, self._on_poses, T.qos_for(T.KEYFRAME_SIM3)
        )
        self.create_subscription(
            String, T.MAPPER_STATE.name, self._on_mapper_state, T.qos_for(T.MAPPER_STATE)
        )
        if not p["base_to_camera"]:
            from tf2_msgs.msg import TFMessage

            self.create_subscription(TFMessage, "/tf_static", self._on_tf_static, tf_static_qos(10))
        if p["external_odometry"]:
            from tf2_msgs.msg import TFMessage

            from online3r_ros.ros.qos import tf_qos

            self.create_subscription(TFMessage, "/tf", self._on_tf, tf_qos())
        self.create_service(Trigger, "~/reset", self._srv_reset)
        self.create_service(Trigger, "~/save_trajectory", self._srv_save_trajectory)
        self.create_timer(p["diagnostics_period"], self._publish_diagnostics)

    def _set_base_camera(self, T_bc: np.ndarray, publish: bool) -> None:
        T_bc = np.asarray(T_bc, dtype=np.float64)
        self._T_cb = invert(T_bc)  # before _T_bc: the worker starts using both once _T_bc is set
        self._T_bc = T_bc
        if publish and self.tf is not None:
            self.tf.send_static_transform(
                transform_stamped(
                    self._T_bc,
                    self.p["base_frame"],
                    self.p["camera_frame"],
                    stamp=self.get_clock().now().to_msg(),
                )
            )

    # ------------------------------------------------------------------------------------------ callbacks
    def _on_image(self, msg: Any) -> None:
        self.stats.count("received")
        self.stats.input_seen()
        with self._wake:
            if self._image is not None:
                self.stats.count("dropped")
            self._image = (msg, time.monotonic())
            self._wake.notify()

    def _on_depth(self, msg: Any) -> None:
        with self._wake:
            self._depths.append(msg)
            self._wake.notify()

    def _on_info(self, msg: Any) -> None:
        with self._wake:
            self._info = msg
            self._wake.notify()

    def _on_poses(self, msg: Any) -> None:
        try:
            session, poses = array_to_poses(msg)
        except MessageFormatError as exc:
            self._input_error(f"keyframe poses: {exc}")
            return
        with self._wake:
            self._poses = (session, poses)
            self._wake.notify()

    def _on_mapper_state(self, msg: Any) -> None:
        try:
            state = parse_mapper_state(msg)
        except MessageFormatError as exc:
            self._input_error(str(exc))
            return
        with self._wake:
            self._mapper_state = state
            self._wake.notify()

    def _on_tf(self, msg: Any) -> None:
        from online3r_ros.ros.pose import pose_to_matrix

        odom, base = self.p["odom_frame"], self.p["base_frame"]
        for tr in msg.transforms:
            if tr.header.frame_id == odom and tr.child_frame_id == base:
                try:
                    stamp_ns, T = stamp_to_ns(tr.header.stamp), pose_to_matrix(tr)
                except ValueError as exc:
                    self._input_error(f"external odometry transform: {exc}")
                    continue
                with self._odom_cond:
                    self._odom_ext.add(stamp_ns, T)
                    self._odom_cond.notify_all()

    def _on_tf_static(self, msg: Any) -> None:
        self._static.add(msg)
        if self._T_bc is None:
            T_bc = self._static.lookup(self.p["base_frame"], self.p["camera_frame"])
            if T_bc is not None:
                self._set_base_camera(T_bc, publish=False)
                self.get_logger().info(f"base -> camera from /tf_static: t={T_bc[:3, 3].round(4).tolist()}")

    def _srv_reset(self, request: Any, response: Any) -> Any:
        with self._wake:
            self._reset_request = True
            self._wake.notify()
        response.success, response.message = True, "reset requested: a new session starts with the next image"
        return response

    def _srv_save_trajectory(self, request: Any, response: Any) -> Any:
        from online3r_ros.eval import write_tum

        with self._lock:
            ts, poses = self.frontend.trajectory()
        path = Path(self.p["trajectory_path"]).expanduser()
        try:
            if len(ts) == 0:
                raise ValueError("no posed frame yet")
            write_tum(path, ts, poses)
        except (OSError, ValueError) as exc:
            response.success, response.message = False, f"cannot write {path}: {exc}"
            return response
        response.success, response.message = True, f"{len(ts)} poses written to {path}"
        return response

    # ----------------------------------------------------------------------------------------------- work
    def _input_error(self, text: str) -> None:
        self.stats.error(text)
        self._log_once(self.get_logger().error, text)

    def _match_depth(self, stamp_ns: int) -> Any:
        tol = int(self.p["sync_tolerance"] * 1e9)
        best = None
        for d in list(self._depths):
            try:
                dt = abs(stamp_to_ns(d.header.stamp) - stamp_ns)
            except ValueError:
                self._depths.remove(d)
                continue
            if dt <= tol and (best is None or dt < best[0]):
                best = (dt, d)
        return None if best is None else best[1]

    def _take_input(self) -> tuple[Any, Any, Any] | None:
        """Under the lock: the newest image with its depth/info when complete (or timed out), else None."""
        if self._image is None:
            return None
        msg, arrived = self._image
        if self._T_bc is None and time.monotonic() - self._start < self.p["tf_static_wait"]:
            return None
        stamp_ns = stamp_to_ns(msg.header.stamp)
        depth = self._match_depth(stamp_ns) if self.p["depth_topic"] else None
        need_depth = bool(self.p["depth_topic"]) and depth is None
        need_info = bool(self.p["camera_info_topic"]) and self._info is None
        if (need_depth or need_info) and time.monotonic() - arrived < self.p["sync_wait"]:
            return None
        self._image = None
        return msg, depth, self._info

    def _work(self) -> None:
        while self._running:
            item = None
            try:
                with self._wake:
                    self._wake.wait(timeout=0.02)
                    if not self._running:
                        return
                    reset, self._reset_request = self._reset_request, False
                    poses, self._poses = self._poses, None
                    state, self._mapper_state = self._mapper_state, None
                    try:
                        item = self._take_input()
                    except ValueError as exc:  # a stamp that is no time (negative, ...): drop that input
                        self._image = None
                        self.stats.count("rejected")
                        self._input_error(f"bad stamp: {exc}")
                with self._lock:
                    if reset:
                        self._reset("reset service")
                    self._apply_mapper_messages(poses, state)
                if item is not None:
                    self._process(*item)
            except Exception as exc:  # noqa: BLE001 - the node must survive anything one frame does
                if not self._running or not self.context.ok():  # shutting down: nothing to report
                    return
                if item is not None:
                    self.stats.count("rejected")
                self._input_error(f"frame failed: {type(exc).__name__}: {exc}")

    def _reset(self, why: str) -> None:
        self.frontend.reset()
        self._size = None
        self._kf_stamps.clear()
        self.stats.count("resets")
        self.stats.state = "initialising"
        self.stats.values["session"] = self.frontend.session
        self.get_logger().warning(f"new session {self.frontend.session} ({why})")

    def _apply_mapper_messages(self, poses: tuple[int, torch.Tensor] | None, state: dict | None) -> None:
        if poses is not None and poses[0] == self.frontend.session:
            self.frontend.apply_keyframe_poses(poses[1])
            self.stats.count("corrections")
        if state is None or state["generation"] == self._mapper_generation:
            return
        first = self._mapper_generation is None
        if state["reset"] and not first:
            self._mapper_generation = state["generation"]
            self._reset("mapper reset")
            return
        n_local = self.frontend.num_keyframes
        start = state["num_keyframes"] if state["session"] == self.frontend.session else 0
        if start < n_local and self.pub_kf.get_subscription_count() == 0:
            # the (re)started mapper's latched state came before its keyframe subscription was matched:
            # keyframes sent now would be lost; keep the state and re-send once a subscriber is there
            with self._wake:
                if self._mapper_state is None:
                    self._mapper_state = state
            return
        self._mapper_generation = state["generation"]
        if start < n_local:
            T_bc = self._T_bc if self._T_bc is not None else T_LINK_OPTICAL
            for k in range(start, n_local):
                stamp = self._kf_stamps.get(k) or self.get_clock().now().to_msg()
                self.pub_kf.publish(keyframe_to_cloud(self.frontend.keyframe_packet(k), stamp, T_bc))
            self.stats.count("keyframes_resent", n_local - start)
            self.get_logger().info(
                f"mapper generation {state['generation']}: re-sent keyframes {start}..{n_local - 1}"
            )

    def _process(self, msg: Any, depth_msg: Any, info_msg: Any) -> None:
        from online3r_ros.sources.base import SourceError

        stamp = msg.header.stamp
        t_sec = stamp_to_sec(stamp)
        if self.p["depth_topic"] and depth_msg is None:
            self.stats.count("rejected")
            self._input_error(
                f"no depth image with the stamp of image {t_sec:.6f} within {self.p['sync_wait']} s"
            )
            return
        try:
            rgb, depth, K = decode_inputs(
                msg, depth_msg, info_msg, self.p["image_transport"] == "compressed", self._rectify_cache
            )
        except ValueError as exc:  # ConversionError subclasses ValueError
            self.stats.count("rejected")
            self._input_error(f"{type(exc).__name__}: {exc}")
            return
        size = (rgb.shape[1], rgb.shape[0])
        with self._lock:
            if self._T_bc is None:
                self._set_base_camera(T_LINK_OPTICAL, publish=True)
                self.get_logger().warning(
                    f"no {self.p['base_frame']} -> {self.p['camera_frame']} transform "
                    "(parameter or /tf_static): "
                    "using the REP-103 optical rotation at the base origin"
                )
            last = self.frontend.last_timestamp
            if t_sec < last - self.p["time_jump_threshold"] and self.p["reset_on_time_jump"]:
                self._reset(f"time went backwards: {t_sec:.6f} < {last:.6f}")
            elif t_sec <= last:
                self.stats.count("rejected")
                self._input_error(f"image stamp {t_sec:.6f} is not after the previous one {last:.6f}")
                return
            if self._size is not None and size != self._size:
                self.stats.count("rejected")
                self._input_error(
                    f"image size changed from {self._size[0]}x{self._size[1]} to {size[0]}x{size[1]} "
                    "within a session (call ~/reset to change cameras)"
                )
                return
            try:
                step = self.frontend.process(rgb, depth, K, t_sec)
            except (SourceError, ValueError) as exc:
                self.stats.count("rejected")
                self._input_error(f"{type(exc).__name__}: {exc}")
                return
            self._size = size
            T_map_odom_W = self.frontend.map_to_odom()
            max_lost = self.frontend.config.system.max_lost_frames
            if not step.has_pose and 0 < max_lost <= self.frontend.lost_streak:
                self._reset(f"lost for {self.frontend.lost_streak} frames (system.max_lost_frames)")
        self.stats.count("processed")
        self.stats.state = _STATE_NAMES.get(step.state.value, step.state.value)
        self._publish_step(step, stamp, T_map_odom_W)
        self.stats.add_times(step.timings_ms)
        now_ns = self.get_clock().now().nanoseconds
        self.stats.add_latency((now_ns - stamp_to_ns(stamp)) * 1e-6)
        self.stats.values["keyframes"] = self.frontend.num_keyframes

    def _publish_step(self, step: Any, stamp: Any, T_W_odom: np.ndarray) -> None:
        from online3r_ros.slam.tracking_frontend import rigid_matrix

        p = self.p
        if step.observation is not None:
            self.pub_obs.publish(observation_to_cloud(step.observation, stamp))
        if step.keyframe is not None:
            self._kf_stamps[step.keyframe.kf_id] = stamp
            self.pub_kf.publish(keyframe_to_cloud(step.keyframe, stamp, self._T_bc))
            self.stats.count("keyframes")
        if not step.has_pose:
            return
        T_bc, T_cb = self._T_bc, self._T_cb
        T_map_cam = T_bc @ rigid_matrix(step.T_WC)
        T_odom_base = T_bc @ step.T_odom @ T_cb
        T_map_odom = T_bc @ T_W_odom @ T_cb
        self.pub_odom.publish(odometry(T_odom_base, p["odom_frame"], p["base_frame"], stamp))
        self.pub_pose.publish(pose_stamped(T_map_cam, p["map_frame"], stamp))
        if p["external_odometry"]:  # map -> odom against the other node's odom -> base at this stamp
            T_odom_ext = self._external_odometry(stamp_to_ns(stamp))
            if T_odom_ext is None:
                self.stats.count("odometry_missing")
                self._log_once(
                    self.get_logger().warning,
                    f"no external {p['odom_frame']} -> {p['base_frame']} on /tf near the image stamp: "
                    "map -> odom not published",
                )
                T_map_odom = None
            else:
                T_map_odom = T_bc @ rigid_matrix(step.T_WC) @ T_cb @ invert(T_odom_ext)
        if self.tf is not None:
            tfs = []
            if p["publish_odom_tf"] and not p["external_odometry"]:
                tfs.append(transform_stamped(T_odom_base, p["odom_frame"], p["base_frame"], stamp))
            if p["publish_map_tf"] and T_map_odom is not None:
                tfs.append(transform_stamped(T_map_odom, p["map_frame"], p["odom_frame"], stamp))
            if tfs:
                self.tf.send_transform(tfs)

    def _external_odometry(self, stamp_ns: int) -> np.ndarray | None:
        """The external ``odom -> base [4, 4]`` at ``stamp_ns``: waits (at most ``odom_wait`` s, while the
        node runs) for a sample at or after the stamp, then interpolates; ``None`` when nothing is within
        ``odom_tolerance``."""
        deadline = time.monotonic() + self.p["odom_wait"]
        with self._odom_cond:
            while self._running and not self._odom_ext.covers(stamp_ns):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._odom_cond.wait(min(left, 0.05))
            return self._odom_ext.lookup(stamp_ns, int(self.p["odom_tolerance"] * 1e9))

    def _publish_diagnostics(self) -> None:
        publish_node_diagnostics(self, self.stats, "online3r_tracker")

    def stop(self) -> None:
        stop_worker(self)


def main(args: list[str] | None = None) -> int:
    return run_node(lambda ctx: TrackerNode(ctx), "tracker", args)


if __name__ == "__main__":
    raise SystemExit(main())
