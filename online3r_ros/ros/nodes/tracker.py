"""The tracker node: images in -> odometry, camera pose, TF, keyframes and observations for the mapper.

A ROS host of :class:`online3r_ros.slam.frontend.TrackerFrontend` (topics: :mod:`online3r_ros.ros.topics`;
parameters: :class:`online3r_ros.ros.nodes.params.TrackerParams`). The node converts messages, calls the
frontend, and publishes; the decisions live in ROS-free classes: the frontend (state machine, keyframes,
session resets on lost tracking or a time jump, out-of-order and size-change rejection), the re-send
protocol (:class:`~online3r_ros.slam.session.MapperLink`: keyframes the mapper lacks, features the
retrieval node lacks) and the input pairing (:class:`~online3r_ros.ros.nodes.inputs.InputSync`); the
odometry, pose and TF outputs and the robot's frames: :class:`~online3r_ros.ros.nodes.robot_poses.RobotPoses`.

- Never processes stale frames: the worker takes the newest image whose depth and CameraInfo are there
  (either may arrive first); older waiting images count as ``dropped``; one still incomplete after
  ``sync_wait`` is rejected. The ROS callbacks only queue, so they never wait for the SLAM work.
- Bad input is rejected with a log line and ``/diagnostics`` at ERROR; the node keeps running. Inputs DDS
  reports lost on the way are counted (``lost_in_transport``), logged and WARN (``ros/dds.py``: the cause).
- ``map`` is the base frame at the first image, ``odom`` follows the continuous odometry, ``map -> odom``
  carries the mapper's corrections; with ``external_odometry`` another node owns ``odom -> base`` and the
  tracker publishes only ``map -> odom`` against it (after publishing the odometry and pose).
- Lost frames publish nothing (a downstream EKF must not get a confident pose); diagnostics say ``lost``.

Run with ``ros2 run online3r_ros tracker --ros-args --params-file config/online3r_ros.yaml`` or
``python -m online3r_ros.ros.nodes.tracker ...``.
"""

from __future__ import annotations

import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Float32MultiArray, Float64MultiArray, String, UInt8MultiArray
from std_srvs.srv import Trigger

from online3r_ros.eval import write_tum
from online3r_ros.ros import topics as T
from online3r_ros.ros.adaptive_qos import AdaptiveSubscription, create_input_subscription
from online3r_ros.ros.dds import large_data_profile
from online3r_ros.ros.nodes.common import (
    LogOnce,
    publish_node_diagnostics,
    run_node,
    setup_node_params,
    start_worker,
    stop_worker,
)
from online3r_ros.ros.nodes.diagnostics import NodeStats
from online3r_ros.ros.nodes.inputs import InputSync, decode_inputs
from online3r_ros.ros.nodes.msgs import (
    MessageFormatError,
    array_to_poses,
    keyframe_to_cloud,
    msg_to_prompts,
    observation_to_cloud,
    parse_mapper_state,
)
from online3r_ros.ros.nodes.params import ParameterError, TrackerParams
from online3r_ros.ros.nodes.retrieval_msgs import features_to_array
from online3r_ros.ros.nodes.robot_poses import RobotPoses
from online3r_ros.ros.qos import qos_from_parameter
from online3r_ros.ros.time import ns_to_stamp, sec_to_ns, stamp_to_ns, stamp_to_sec
from online3r_ros.slam.frontend import TrackerFrontend, TrackerStep
from online3r_ros.slam.map_files import read_map
from online3r_ros.slam.packets import MapperState
from online3r_ros.slam.runner import build_source
from online3r_ros.slam.session import LinkAction, MapperLink
from online3r_ros.sources.base import SourceError
from online3r_ros.synthetic import make_synthetic_sequence
from online3r_ros.utils.heap import release_free_heap

__all__ = ["TrackerNode", "main", "decode_inputs"]

_STATE_NAMES = {"init": "initialising", "tracking": "tracking", "reloc": "tracking", "lost": "lost"}


class TrackerNode(Node):
    """See the module docstring."""

    def __init__(self, context: Any = None, node_name: str = "tracker") -> None:
        super().__init__(node_name, context=context)
        self.p, cfg = setup_node_params(self, TrackerParams)
        p = self.p
        if cfg.source.kind == "depth":
            for name in ("depth_topic", "camera_info_topic"):
                if not getattr(p, name):
                    raise ParameterError(name, "the RGB-D source (source.kind 'depth') needs it")
        source = build_source(cfg)
        self._warm_up(cfg, source, p.warmup_frames)
        jump = p.time_jump_threshold if p.reset_on_time_jump else None
        self.frontend = TrackerFrontend(cfg, source, time_jump_reset=jump)
        self.link = MapperLink()
        self.retrieval_link = MapperLink()  # the same protocol: features the retrieval node lacks
        self.stats = NodeStats("tracker", p.error_hold, p.input_timeout)
        self.stats.values["session"] = self.frontend.session
        self._log_once = LogOnce(2.0)
        self._lock = threading.Lock()  # the frontend (worker, services)
        self._wake = threading.Condition()  # the input slots (callbacks <-> worker)
        self._running = True
        self._inputs = InputSync(
            bool(p.depth_topic), bool(p.camera_info_topic), p.sync_tolerance, p.sync_wait
        )
        self._poses: tuple[int, torch.Tensor] | None = None
        self._announced: dict[str, MapperState] = {}  # the newest unhandled "mapper"/"retrieval" states
        self._reset_request = False
        self._stamps_ns: dict[float, int] = {}  # input stamp (ns) of every processed frame, by timestamp
        self._rectify_cache: dict = {}
        self._start = time.monotonic()
        self._build_io()
        if p.map_path:
            self._load_map()
        start_worker(
            self,
            "tracker",
            cfg,
            f"image={p.image_topic} ({p.image_transport}) depth={p.depth_topic or '-'} "
            f"camera_info={p.camera_info_topic or '-'} session={self.frontend.session}",
        )

    # --------------------------------------------------------------------------------------------- set-up
    def _warm_up(self, cfg: Any, source: Any, n: int) -> None:
        """Run ``n`` small synthetic RGB-D frames through a throw-away frontend (torch first-call costs)."""
        if n <= 0 or cfg.source.kind != "depth":
            return
        t0 = time.perf_counter()
        throwaway = TrackerFrontend(cfg, source)
        for f in make_synthetic_sequence(n_frames=480, width=160, height=120, max_frames=n):
            throwaway.process(f.rgb, f.depth, f.K, f.timestamp)
        self.get_logger().info(f"warm-up: {n} frames in {time.perf_counter() - t0:.2f} s")

    def _build_io(self) -> None:
        p = self.p
        self.robot = RobotPoses(self, p, self.stats, self._log_once, self._input_error, lambda: self._running)
        self.pub_status = self.create_publisher(String, T.TRACKER_STATUS.name, T.qos_for(T.TRACKER_STATUS))
        self.pub_kf = self.create_publisher(PointCloud2, T.KEYFRAMES.name, T.qos_for(T.KEYFRAMES))
        self.pub_obs = self.create_publisher(PointCloud2, T.OBSERVATIONS.name, T.qos_for(T.OBSERVATIONS))
        self.pub_feat = self.create_publisher(
            Float32MultiArray, T.KEYFRAME_FEATURES.name, T.qos_for(T.KEYFRAME_FEATURES)
        )
        self.pub_diag = self.create_publisher(DiagnosticArray, T.DIAGNOSTICS.name, T.qos_for(T.DIAGNOSTICS))
        image_type = CompressedImage if p.image_transport == "compressed" else Image
        inputs = [("image", image_type, p.image_topic, self._on_image)]
        inputs += [("depth", Image, p.depth_topic, self._on_depth)] if p.depth_topic else []
        if p.camera_info_topic:
            inputs += [("camera_info", CameraInfo, p.camera_info_topic, self._on_info)]
        if p.image_qos == "auto":  # follow the publishers' reliability (ros/adaptive_qos.py)
            self._adaptive = [
                AdaptiveSubscription(self, *args, depth=p.input_queue, on_lost=partial(self._on_lost, role))
                for role, *args in inputs
            ]
            self.create_timer(1.0, self._match_publishers)
        else:
            qos = qos_from_parameter(p.image_qos, depth=p.input_queue)
            for role, msg_type, topic, callback in inputs:
                create_input_subscription(self, msg_type, topic, callback, qos, partial(self._on_lost, role))
        self.create_subscription(
            Float64MultiArray, T.KEYFRAME_SIM3.name, self._on_poses, T.qos_for(T.KEYFRAME_SIM3)
        )
        self.create_subscription(
            String, T.MAPPER_STATE.name, lambda m: self._on_state("mapper", m), T.qos_for(T.MAPPER_STATE)
        )
        self.create_subscription(
            String,
            T.RETRIEVAL_STATE.name,
            lambda m: self._on_state("retrieval", m),
            T.qos_for(T.RETRIEVAL_STATE),
        )
        self.create_subscription(UInt8MultiArray, T.PROMPTS.name, self._on_prompts, T.qos_for(T.PROMPTS))
        self.create_service(Trigger, "~/reset", self._srv_reset)
        self.create_service(Trigger, "~/save_trajectory", self._srv_save_trajectory)
        self.create_service(Trigger, "~/load_map", self._srv_load_map)
        self.create_timer(p.diagnostics_period, self._publish_diagnostics)

    # ------------------------------------------------------------------------------------------ callbacks
    def _on_image(self, msg: Any) -> None:
        self.stats.count("received")
        self.stats.input_seen()
        with self._wake:
            self._inputs.put_image(msg, time.monotonic())
            self._wake.notify()

    def _on_depth(self, msg: Any) -> None:
        with self._wake:
            self._inputs.depths.append(msg)
            self._wake.notify()

    def _on_info(self, msg: Any) -> None:
        with self._wake:
            problem = self._inputs.put_info(msg)
            self._wake.notify()
        if problem is not None:
            self._input_error(problem)

    def _on_lost(self, role: str, n: int) -> None:
        """DDS lost ``n`` ``role`` messages before they reached us: counted, WARN, logged (rate-limited)."""
        self.stats.count("lost_in_transport", n)
        self.stats.count(f"lost_in_transport_{role}", n)
        text = (
            f"{n} {role} message(s) lost in transport (DDS); full-size images get lost this way when the "
            f"publisher uses Fast DDS's default 512 KiB shared-memory segment: start the camera driver with "
            f"FASTDDS_DEFAULT_PROFILES_FILE={large_data_profile()} (online3r dds-profile)"
        )
        self.stats.warning(text)
        self._log_once(self.get_logger().warning, text)

    def _match_publishers(self) -> None:
        for sub in self._adaptive:
            change = sub.refresh()
            if change is not None:
                best_effort = sub.reliability == ReliabilityPolicy.BEST_EFFORT
                (self.get_logger().warning if best_effort else self.get_logger().info)(change)

    def _on_poses(self, msg: Any) -> None:
        try:
            poses = array_to_poses(msg)
        except MessageFormatError as exc:
            self._input_error(f"keyframe poses: {exc}")
            return
        with self._wake:
            self._poses = poses
            self._wake.notify()

    def _on_state(self, holder: str, msg: Any) -> None:
        """An announcement of the mapper or the retrieval node: handled by the worker."""
        try:
            state = parse_mapper_state(msg)
        except MessageFormatError as exc:
            self._input_error(f"{holder} state: {exc}")
            return
        with self._wake:
            self._announced[holder] = state
            self._wake.notify()

    def _on_prompts(self, msg: Any) -> None:
        """Tuned prompts from the mapper: used from the next frame on (never mid-frame)."""
        try:
            update = msg_to_prompts(msg)
        except MessageFormatError as exc:
            self._input_error(str(exc))
            return
        self.frontend.offer_prompts(update)
        self.stats.values["prompt_version_received"] = update.version

    def _srv_reset(self, request: Any, response: Any) -> Any:
        with self._wake:
            self._reset_request = True
            self._wake.notify()
        response.success, response.message = True, "reset requested: a new session starts with the next image"
        return response

    def _load_map(self) -> str:
        """Adopt the map at ``map_path`` (raises ``OSError``/``ValueError``); returns what was loaded."""
        path = Path(self.p.map_path).expanduser()
        state = read_map(path, self.frontend.config)
        with self._lock:
            self.frontend.adopt_map(state)
            self._stamps_ns.clear()
            self.link = MapperLink()  # the mapper's next announcement decides what to re-send
            self.retrieval_link = MapperLink()
            self.stats.values["session"] = self.frontend.session
            self.stats.state = "lost"
        text = (
            f"localising in {path}: {self.frontend.num_keyframes} keyframes (session {self.frontend.session})"
        )
        self.get_logger().info(text)
        return text

    def _srv_load_map(self, request: Any, response: Any) -> Any:
        if not self.p.map_path:
            response.success, response.message = False, "parameter map_path is empty"
            return response
        try:
            response.message = self._load_map()
        except (OSError, ValueError) as exc:
            response.success, response.message = False, str(exc)
            return response
        response.success = True
        return response

    def _srv_save_trajectory(self, request: Any, response: Any) -> Any:
        with self._lock:
            _, ts, poses = self.frontend.trajectory()
        path = Path(self.p.trajectory_path).expanduser()
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

    def _reject(self, kind: str, text: str) -> None:
        """A frame not processed: counted (``rejected`` and ``rejected_<kind>`` in the status), logged
        (rate-limited per kind) and ERROR in ``/diagnostics``."""
        self.stats.count("rejected")
        self.stats.count(f"rejected_{kind}")
        self._input_error(text)

    def _take(self) -> tuple[bool, Any, Any, Any]:
        """Under ``_wake``: the reset request, the mapper messages and the next input (or ``None``)."""
        reset, self._reset_request = self._reset_request, False
        poses, self._poses = self._poses, None
        announced, self._announced = self._announced, {}
        item = None
        waiting_for_tf = self.robot.frames is None and time.monotonic() - self._start < self.p.tf_static_wait
        if not waiting_for_tf:
            try:
                item = self._inputs.take(time.monotonic())
            except ValueError as exc:  # a stamp that is no time (negative, ...): that input is dropped
                self._reject("bad_stamp", f"bad stamp: {exc}")
            self.stats.count("dropped", self._inputs.drain_stale())
        return reset, poses, announced, item

    def _work(self) -> None:
        while self._running:
            item = None
            try:
                with self._wake:
                    self._wake.wait(timeout=0.02)
                    if not self._running:
                        return
                    reset, poses, announced, item = self._take()
                with self._lock:
                    if reset:
                        self.frontend.reset()
                        self._after_reset("reset service")
                    self._apply_mapper_messages(poses, announced.get("mapper"))
                    self._follow_retrieval(announced.get("retrieval"))
                if item is not None:
                    self._process(*item)
                    release_free_heap()  # full-size images and their conversions: see utils/heap.py
            except Exception as exc:  # noqa: BLE001 - the node must survive anything one frame does
                if not self._running or not self.context.ok():  # shutting down: nothing to report
                    return
                text = f"frame failed: {type(exc).__name__}: {exc}"
                if item is not None:
                    self._reject("internal", text)
                else:
                    self._input_error(text)

    def _after_reset(self, why: str) -> None:
        """Bookkeeping after the frontend started a new session."""
        self._stamps_ns.clear()
        self.stats.count("resets")
        self.stats.state = "initialising"
        self.stats.values["session"] = self.frontend.session
        self.get_logger().warning(f"new session {self.frontend.session} ({why})")

    def _apply_mapper_messages(
        self, poses: tuple[int, torch.Tensor] | None, state: MapperState | None
    ) -> None:
        if poses is not None and self.frontend.apply_map_update(poses[1], poses[0]):
            self.stats.count("corrections")
        if state is None:
            return
        fe = self.frontend
        step = self.link.on_state(
            state, fe.session, fe.num_keyframes, self.pub_kf.get_subscription_count() > 0
        )
        if step.action is LinkAction.RESET:
            fe.reset()
            self._after_reset("mapper reset")
        elif step.action is LinkAction.DEFER:  # its keyframe subscription is not matched yet: retry later
            with self._wake:
                self._announced.setdefault("mapper", state)
        elif step.action is LinkAction.RESEND:
            for k in range(step.first, step.stop):
                self._publish_keyframe(fe.keyframe_packet(k), self.robot.T_bc)
            self.stats.count("keyframes_resent", step.stop - step.first)
            self.get_logger().info(
                f"mapper generation {state.generation}: re-sent keyframes {step.first}..{step.stop - 1}"
            )

    def _follow_retrieval(self, state: MapperState | None) -> None:
        """Send again the keyframe features the retrieval node's announcement says it lacks (it never resets
        the session, so only ``RESEND`` comes from it)."""
        if state is None:
            return
        fe = self.frontend
        step = self.retrieval_link.on_state(state, fe.session, fe.num_keyframes)
        if step.action is not LinkAction.RESEND:
            return
        sent = 0
        for k in range(step.first, step.stop):
            feats = fe.keyframe_features(k)
            if feats is not None:
                self.pub_feat.publish(features_to_array(fe.session, k, feats))
                sent += 1
        self.stats.count("features_resent", sent)
        self.get_logger().info(
            f"retrieval generation {state.generation}: re-sent the features of {sent} keyframes "
            f"({step.first}..{step.stop - 1})"
        )

    def _process(self, msg: Any, depth_msg: Any, info_msg: Any) -> None:
        stamp = msg.header.stamp
        if self.p.depth_topic and depth_msg is None:
            t = stamp_to_sec(stamp)
            self._reject(
                "no_depth", f"no depth image with the stamp of image {t:.6f} within {self.p.sync_wait} s"
            )
            return
        if self.p.camera_info_topic and info_msg is None:
            t = stamp_to_sec(stamp)
            self._reject(
                "no_camera_info",
                f"no camera info at or before the stamp of image {t:.6f} within {self.p.sync_wait} s",
            )
            return
        try:
            rgb, depth, K = decode_inputs(
                msg, depth_msg, info_msg, self.p.image_transport == "compressed", self._rectify_cache
            )
        except ValueError as exc:  # ConversionError subclasses ValueError
            self._reject(type(exc).__name__, f"{type(exc).__name__}: {exc}")
            return
        with self._lock:
            self.robot.robot_frames()  # the base -> camera transform now, whatever came
            try:
                step = self.frontend.process(rgb, depth, K, stamp_to_sec(stamp))
            except (SourceError, ValueError) as exc:
                self._reject(type(exc).__name__, f"{type(exc).__name__}: {exc}")
                return
            if step.reset_reason:
                self._after_reset(step.reset_reason)
            T_W_odom = self.frontend.map_to_odom()
        self.stats.count("processed")
        self._stamps_ns[step.timestamp] = stamp_to_ns(stamp)
        self.stats.state = _STATE_NAMES.get(step.state.value, step.state.value)
        if step.state.value == "reloc":
            self.stats.count("relocalised")  # frames posed by a relocalisation (after being lost)
        self._publish_packets(step, stamp)
        if step.has_pose:
            self.robot.publish(step, stamp, T_W_odom)
        self.stats.add_times(step.timings_ms)
        self.stats.add_latency((self.get_clock().now().nanoseconds - stamp_to_ns(stamp)) * 1e-6)
        self.stats.values["keyframes"] = self.frontend.num_keyframes
        self.stats.values["keyframes_reused"] = self.frontend.n_reused
        self.stats.values["prompt_version"] = self.frontend.prompt_version
        if self.frontend.place is not None:
            self.stats.values["place_recognition"] = self.frontend.place.stats()
        if self.frontend.flow is not None:
            self.stats.values["flow_prior"] = self.frontend.flow.stats()

    def _publish_packets(self, step: TrackerStep, stamp: Any) -> None:
        if step.observation is not None:
            self.pub_obs.publish(observation_to_cloud(step.observation, stamp))
        if step.keyframe is not None:
            self._publish_keyframe(step.keyframe, self.robot.T_bc)
            self.stats.count("keyframes")

    def _publish_keyframe(self, pkt: Any, T_bc: np.ndarray) -> None:
        """A keyframe for the mapper (with the input stamps of its frame and of the frames fused into a
        re-sent copy), and its features (mapper and retrieval node) when it has them."""
        stamps = self._stamps_ns
        fused = None if pkt.fused_frames is None else [stamps.get(float(t)) for t in pkt.fused_frames[0]]
        stamp = ns_to_stamp(stamps.get(pkt.timestamp, sec_to_ns(max(pkt.timestamp, 0.0))))
        self.pub_kf.publish(keyframe_to_cloud(pkt, stamp, T_bc, fused))
        if pkt.features is not None:
            self.pub_feat.publish(features_to_array(pkt.session, pkt.kf_id, pkt.features))

    def _publish_diagnostics(self) -> None:
        publish_node_diagnostics(self, self.stats, "online3r_tracker")

    def stop(self) -> None:
        stop_worker(self)  # a wait for external odometry ends within 50 ms once the node stops running


def main(args: list[str] | None = None) -> int:
    return run_node(lambda ctx: TrackerNode(ctx), "tracker", args)


if __name__ == "__main__":
    raise SystemExit(main())
