"""The mapper node: keyframes + observations in -> optimised poses, paths, dense map, markers.

A ROS host of :class:`online3r_ros.slam.backend.MapperBackend` (topics: :mod:`online3r_ros.ros.topics`;
parameters: :class:`online3r_ros.ros.nodes.params.MapperParams`). A worker thread decodes the packets, hands
them to the backend (which orders them, fuses observations, integrates keyframes: edges + global
optimisation, and follows the frontend's sessions) and publishes; callbacks only queue.

Recovery (documented behaviour): after integrated keyframes the map is saved atomically to ``map_path``
(``autosave``; at most every ``autosave_period`` s, and at shutdown). A (re)started mapper loads
``map_path`` when it exists (``load_on_start``) and announces what it holds on the latched
``online3r/mapper_state``; the tracker then re-sends the keyframes the mapper lacks
(:class:`~online3r_ros.slam.session.MapperLink`). ``~/reset`` clears the map and asks the tracker for a new
session.

Loop closure: the retrieval node answers each keyframe's features with verified loop candidates
(``online3r/loop_candidates``); the mapper adds them as edges once that keyframe is integrated
(:meth:`MapperBackend.close_loops`: the same edge test, then a global optimisation) and re-publishes poses,
paths, markers (loop edges in their own colour) and the map. Without a retrieval node nothing changes.

Output frame: ``map`` = the robot base at the tracker's first image; the base -> camera transform comes with
each keyframe (metadata ``T_bc``), so SLAM-world points/poses become ``T_bc · X`` / ``T_bc · T_WC``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseArray
from nav_msgs.msg import Path as PathMsg
from rclpy.node import Node
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Float32MultiArray, Float64MultiArray, Header, String
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from online3r_ros.eval import write_tum
from online3r_ros.ros import topics as T
from online3r_ros.ros.frames import RobotFrames
from online3r_ros.ros.nodes.common import (
    LogOnce,
    publish_node_diagnostics,
    run_node,
    setup_node_params,
    start_worker,
    stop_worker,
    take_queued,
)
from online3r_ros.ros.nodes.diagnostics import NodeStats
from online3r_ros.ros.nodes.mapper_prompts import MapperPrompts
from online3r_ros.ros.nodes.markers import frustum_lines, map_markers
from online3r_ros.ros.nodes.msgs import (
    MessageFormatError,
    cloud_to_keyframe,
    cloud_to_observation,
    fused_stamps_ns,
    mapper_state_msg,
    poses_to_array,
)
from online3r_ros.ros.nodes.params import MapperParams
from online3r_ros.ros.nodes.retrieval_msgs import array_to_features, array_to_loops
from online3r_ros.ros.path_cdr import path_cdr
from online3r_ros.ros.pointcloud import numpy_to_pointcloud2
from online3r_ros.ros.pose import T_LINK_OPTICAL, matrices_to_poses
from online3r_ros.ros.time import ns_to_stamp, sec_to_ns, stamp_to_ns
from online3r_ros.slam.backend import BackendHooks, MapperBackend
from online3r_ros.slam.map_export import MapPoints
from online3r_ros.slam.packets import MapUpdate
from online3r_ros.slam.runner import build_source
from online3r_ros.tuning import make_online_tuning

__all__ = ["MapperNode", "main", "frustum_lines"]


class MapperNode(Node):
    """See the module docstring."""

    def __init__(self, context: Any = None, node_name: str = "mapper") -> None:
        super().__init__(node_name, context=context)
        self.p, cfg = setup_node_params(self, MapperParams)
        source = build_source(cfg)
        tuning = make_online_tuning(cfg, source, background=True)  # its own thread: never delays the map
        hooks = BackendHooks(on_keyframe=tuning) if tuning is not None else None
        self.backend = MapperBackend(
            cfg, source, hooks, wait_s=self.p.keyframe_wait, gap_s=self.p.keyframe_gap_wait
        )
        self.stats = NodeStats("mapper", error_hold=5.0, input_timeout=3600.0)
        self.stats.state = "waiting"
        self._log_once = LogOnce(2.0)
        self._lock = threading.Lock()  # the backend
        self._wake = threading.Condition()  # the message queue
        self._queue: deque = deque()
        self._running = True
        self._publish_map_request = False
        self.frames = RobotFrames(T_LINK_OPTICAL)  # replaced by the keyframes' base -> camera transform
        self._map_dirty = self._path_dirty = False
        self._last_map = self._last_path = time.monotonic()
        self._last_save = -float("inf")
        self._unsaved = False  # keyframes integrated since the last autosave
        self._loops: dict[tuple[int, int], list] = {}  # (session, kf_id) -> loop candidates not yet used
        self._build_io()
        self.prompts = MapperPrompts(self, self.backend, tuning, self.p.prompts_path, self._lock)
        self._maybe_load_on_start()
        self._publish_state()
        start_worker(
            self, "mapper", cfg, f"map_path={self.p.map_path} keyframes={self.backend.num_keyframes}"
        )

    def _build_io(self) -> None:
        def pub(msg_type: type, spec: Any) -> Any:
            return self.create_publisher(msg_type, spec.name, T.qos_for(spec))

        self.pub_sim3 = pub(Float64MultiArray, T.KEYFRAME_SIM3)
        self.pub_state = pub(String, T.MAPPER_STATE)
        self.pub_kf_poses = pub(PoseArray, T.KEYFRAME_POSES)
        self.pub_kf_path = pub(PathMsg, T.KEYFRAME_PATH)
        self.pub_path = pub(PathMsg, T.PATH)
        self.pub_map = pub(PointCloud2, T.MAP)
        self.pub_updates = pub(PointCloud2, T.MAP_UPDATES)
        self.pub_markers = pub(MarkerArray, T.MARKERS)
        self.pub_status = pub(String, T.MAPPER_STATUS)
        self.pub_diag = pub(DiagnosticArray, T.DIAGNOSTICS)
        self.create_subscription(PointCloud2, T.KEYFRAMES.name, self._on_keyframe, T.qos_for(T.KEYFRAMES))
        self.create_subscription(
            PointCloud2, T.OBSERVATIONS.name, self._on_observation, T.qos_for(T.OBSERVATIONS)
        )
        self.create_subscription(
            Float64MultiArray, T.LOOP_CANDIDATES.name, self._on_loops, T.qos_for(T.LOOP_CANDIDATES)
        )
        self.create_subscription(
            Float32MultiArray, T.KEYFRAME_FEATURES.name, self._on_features, T.qos_for(T.KEYFRAME_FEATURES)
        )
        self.create_service(Trigger, "~/reset", self._srv_reset)
        self.create_service(Trigger, "~/save_map", self._srv_save_map)
        self.create_service(Trigger, "~/load_map", self._srv_load_map)
        self.create_service(Trigger, "~/save_trajectory", self._srv_save_trajectory)
        self.create_service(Trigger, "~/publish_map", self._srv_publish_map)
        self.create_timer(self.p.diagnostics_period, self._publish_diagnostics)

    @property
    def map_path(self) -> Path:
        return Path(self.p.map_path).expanduser()

    def _maybe_load_on_start(self) -> None:
        if not (self.p.load_on_start and self.map_path.is_file()):
            return
        try:
            self.backend.load(self.map_path)
        except (OSError, ValueError) as exc:
            self.stats.error(f"cannot load {self.map_path}: {exc}")
            self.get_logger().error(f"cannot load {self.map_path}: {exc}; starting a new map")
            return
        self.stats.count("maps_loaded")
        n, session = self.backend.num_keyframes, self.backend.session
        self.get_logger().info(f"recovered map {self.map_path}: {n} keyframes (session {session})")
        self._after_map_change()

    # ------------------------------------------------------------------------------------------ callbacks
    def _on_keyframe(self, msg: Any) -> None:
        with self._wake:
            self._queue.append(("kf", msg))
            self._wake.notify()

    def _on_observation(self, msg: Any) -> None:
        with self._wake:
            self._queue.append(("obs", msg))
            self._wake.notify()

    def _on_loops(self, msg: Any) -> None:
        with self._wake:
            self._queue.append(("loops", msg))
            self._wake.notify()

    def _on_features(self, msg: Any) -> None:
        with self._wake:
            self._queue.append(("feat", msg))
            self._wake.notify()

    def _srv_reset(self, request: Any, response: Any) -> Any:
        with self._lock:
            self.backend.reset()
            self.stats.count("resets")
            self._publish_state(reset=True)
        response.success, response.message = True, "map cleared; the tracker starts a new session"
        return response

    def _srv_save_map(self, request: Any, response: Any) -> Any:
        try:
            with self._lock:
                n = self.backend.num_keyframes
                self.backend.save(self.map_path)
                kept = self._report_backup()
        except (OSError, RuntimeError) as exc:
            response.success, response.message = False, f"cannot save {self.map_path}: {exc}"
            return response
        response.success, response.message = True, f"{n} keyframes saved to {self.map_path}{kept}"
        return response

    def _srv_load_map(self, request: Any, response: Any) -> Any:
        try:
            with self._lock:
                self.backend.load(self.map_path)
                self._after_map_change()
        except (OSError, ValueError) as exc:
            response.success, response.message = False, str(exc)
            return response
        response.success = True
        response.message = f"{self.backend.num_keyframes} keyframes loaded from {self.map_path}"
        return response

    def _srv_save_trajectory(self, request: Any, response: Any) -> Any:
        path = Path(self.p.trajectory_path).expanduser()
        kf_path = path.with_name(path.stem + "_keyframes" + (path.suffix or ".txt"))
        try:
            with self._lock:
                ts, poses = self.backend.trajectory()
                kts, kposes = self.backend.keyframe_trajectory()
            if len(ts) == 0:
                raise ValueError("the map is empty")
            write_tum(path, ts, poses)
            write_tum(kf_path, kts, kposes)
        except (OSError, ValueError) as exc:
            response.success, response.message = False, f"cannot write {path}: {exc}"
            return response
        response.success = True
        response.message = f"{len(ts)} frames -> {path}, {len(kts)} keyframes -> {kf_path}"
        return response

    def _srv_publish_map(self, request: Any, response: Any) -> Any:
        with self._wake:
            self._publish_map_request = True
            self._wake.notify()
        response.success, response.message = True, "the full map is published by the worker"
        return response

    # ----------------------------------------------------------------------------------------------- work
    def _work(self) -> None:
        while self._running:
            items = take_queued(self, 0.05)
            if items is None:
                return
            self.stats.values["queue_max"] = max(self.stats.values.get("queue_max", 0), len(items))
            with self._wake:
                publish_map, self._publish_map_request = self._publish_map_request, False
            try:
                with self._lock:
                    self._submit_all(items)
                    for update in self.backend.step():
                        self._after_update(update)
                    self._request_missing()
                    self._close_loops()
                    self.prompts.deliver()
                self._periodic(publish_map)
            except Exception as exc:  # noqa: BLE001 - the node must survive anything one message does
                if not self._running or not self.context.ok():  # shutting down: nothing to report
                    return
                self.stats.error(f"{type(exc).__name__}: {exc}")
                self.get_logger().error(f"mapper step failed: {type(exc).__name__}: {exc}")

    def _submit_all(self, items: list[tuple[str, Any]]) -> None:
        generation = self.backend.generation
        for kind, msg in items:
            self._submit(kind, msg)
        if self.backend.generation != generation:  # packets of another session cleared the map
            self.get_logger().warning(
                f"packets of session {self.backend.session}: started a new map; the tracker re-sends its "
                "keyframes"
            )
            self._publish_state()

    def _submit(self, kind: str, msg: Any) -> None:
        try:
            if kind == "feat":
                session, kf_id, feats = array_to_features(msg)
                self.backend.submit_features(session, kf_id, feats)
                return
            if kind == "loops":
                session, kf_id, candidates = array_to_loops(msg)
                self.stats.count("loop_answers")
                if candidates:
                    self._loops[(session, kf_id)] = candidates
                    while len(self._loops) > 1000:  # bounded: answers of a map that never arrives
                        self._loops.pop(next(iter(self._loops)))
                return
            stamps = {}
            if kind == "kf":
                pkt, T_bc = cloud_to_keyframe(msg)
                stamps = fused_stamps_ns(msg)
            else:
                pkt = cloud_to_observation(msg)
        except (MessageFormatError, ValueError) as exc:
            self.stats.count("rejected")
            self.stats.error(f"{kind}: {exc}")
            self._log_once(self.get_logger().error, f"malformed {kind} message: {exc}")
            return
        if kind == "kf":
            self.frames = RobotFrames(T_bc)
            accepted = self.backend.submit_keyframe(pkt)
            self.stats.count("keyframes_received" if accepted else "keyframes_ignored")
        else:
            accepted = self.backend.submit_observation(pkt)
            self.stats.count("observations")
            self._map_dirty = self._path_dirty = True
        if accepted:
            self.backend.stamps_ns.setdefault(pkt.timestamp, stamp_to_ns(msg.header.stamp))
            for t, ns in stamps.items():  # the frames fused into a re-sent keyframe
                self.backend.stamps_ns.setdefault(t, ns)

    def _request_missing(self) -> None:
        """Ask the tracker again for a keyframe lost in transport (see ``MapperBackend.request_missing``)."""
        kf_id = self.backend.request_missing()
        if kf_id is None:
            return
        self.stats.count("keyframes_requested")
        self.get_logger().warning(
            f"keyframe {kf_id} has not arrived while packets of later keyframes wait "
            f"(>= {self.p.keyframe_gap_wait} s): asking the tracker to send it again"
        )
        self._publish_state()

    def _close_loops(self) -> None:
        """Loop candidates of integrated keyframes of this map become edges (one optimisation each)."""
        for key in [
            k for k in self._loops if k[0] == self.backend.session and k[1] < self.backend.num_keyframes
        ]:
            update = self.backend.close_loops(key[1], self._loops.pop(key))
            if update is not None:
                self.stats.count("loops_closed", len(update.loops))
                self._after_update(update, integrated=False)

    def _after_update(self, update: MapUpdate, integrated: bool = True) -> None:
        self._unsaved = True
        self.stats.count("keyframes_integrated" if integrated else "loop_optimisations")
        if update.optimised:
            self.stats.count("optimisations")
        self.stats.add_times(update.timings_ms)
        self.stats.state = "mapping"
        self.stats.values.update(
            keyframes=self.backend.num_keyframes,
            edges=len(self.backend.graph),
            loop_edges=len(self.backend.loop_edges),
            session=self.backend.session,
            last_optimisation=update.opt_info,
            scales=[round(float(s), 6) for s in update.T_WC[:, 7].tolist()[-20:]],
        )
        self.pub_sim3.publish(poses_to_array(update.T_WC, self.backend.session))
        if update.kf_id > 0 and integrated:
            self._publish_chunk(update.kf_id - 1)
        self._publish_poses_and_paths()
        self._publish_markers()
        self._map_dirty = True
        if self.p.autosave and time.monotonic() - self._last_save >= self.p.autosave_period:
            self._autosave()
        self._publish_state()

    def _autosave(self) -> None:
        """Save the map to ``map_path`` (atomic); called with the backend lock held."""
        try:
            t0 = time.perf_counter()
            self.backend.save(self.map_path)
            self._report_backup()
            self._last_save = time.monotonic()
            self._unsaved = False
            self.stats.add_times({"autosave": 1000 * (time.perf_counter() - t0)})
            self.stats.values["autosaved_keyframes"] = self.backend.num_keyframes
        except (OSError, RuntimeError) as exc:
            self.stats.error(f"autosave failed: {exc}")
            self._log_once(self.get_logger().error, f"autosave to {self.p.map_path} failed: {exc}")

    def _report_backup(self) -> str:
        """Log where the last save kept another session's map (``''`` when it kept none)."""
        backup = self.backend.last_backup
        if backup is None:
            return ""
        self.stats.count("maps_kept")
        self.get_logger().info(f"the previous session's map at {self.map_path} is kept as {backup}")
        return f" (the previous session's map is kept as {backup})"

    def _after_map_change(self) -> None:
        self.prompts.after_map_load()
        self._publish_state()
        if self.backend.num_keyframes:
            self.pub_sim3.publish(poses_to_array(self.backend.keyframe_poses(), self.backend.session))
            self._publish_poses_and_paths()
            self._publish_markers()
            self._publish_full_map()

    def _periodic(self, publish_map: bool) -> None:
        now = time.monotonic()
        if self.p.autosave and self._unsaved and now - self._last_save >= self.p.autosave_period:
            with self._lock:
                self._autosave()
        period = self.p.map_period
        if publish_map or (period > 0 and self._map_dirty and now - self._last_map >= period):
            with self._lock:
                t0 = time.monotonic()
                self._publish_full_map()
                self.stats.add_times({"publish_map": 1000 * (time.monotonic() - t0)})
            self._last_map = now
        period = self.p.path_period
        if period > 0 and self._path_dirty and now - self._last_path >= period:
            with self._lock:
                t0 = time.monotonic()
                self._publish_poses_and_paths()
                self.stats.add_times({"publish_paths": 1000 * (time.monotonic() - t0)})
            self._last_path = now

    # ------------------------------------------------------------------------------------------ publishing
    def _stamp_ns(self, t: float) -> int:
        """Integer-nanosecond stamp of the frame at ``t`` (s): the input's own where known."""
        known = self.backend.stamps_ns.get(t)
        return known if known is not None else sec_to_ns(max(t, 0.0))

    def _stamp(self, t: float) -> Any:
        return ns_to_stamp(self._stamp_ns(t))

    def _last_stamp(self) -> Any:
        kf_stamps = self.backend.kf_stamps
        return self._stamp(kf_stamps[-1]) if kf_stamps else self.get_clock().now().to_msg()

    def _path(self, ts: np.ndarray, poses: np.ndarray) -> bytes:
        """The serialised ``nav_msgs/Path`` of camera poses ``[N, 4, 4]`` at ``ts [N]`` in the map frame
        (numpy-built: :func:`~online3r_ros.ros.path_cdr.path_cdr`; a 9,000-frame path as message objects took
        ~170 ms under the lock)."""
        stamps = np.array([self._stamp_ns(t) for t in np.asarray(ts, np.float64).tolist()], dtype=np.int64)
        stamp = int(stamps[-1]) if len(stamps) else self.get_clock().now().nanoseconds
        return path_cdr(self.p.map_frame, stamp, stamps, poses)

    def _publish_poses_and_paths(self) -> None:
        kts, kposes = self.backend.keyframe_trajectory()
        kmap = self.frames.cameras_in_map(kposes)
        if len(kts):
            header = Header(frame_id=self.p.map_frame, stamp=self._stamp(float(kts[-1])))
            self.pub_kf_poses.publish(PoseArray(header=header, poses=matrices_to_poses(kmap)))
            self.pub_kf_path.publish(self._path(kts, kmap))
        ts, poses = self.backend.trajectory()
        if len(ts):
            self.pub_path.publish(self._path(ts, self.frames.cameras_in_map(poses)))
        self._path_dirty = False

    def _cloud(self, chunk: MapPoints, stamp: Any) -> PointCloud2:
        pts = self.frames.points_in_map(chunk.points)
        return numpy_to_pointcloud2(
            pts, chunk.colors, chunk.confidence, frame_id=self.p.map_frame, stamp=stamp
        )

    def _publish_chunk(self, kf_id: int) -> None:
        chunk = self.backend.map_points([kf_id])
        self.pub_updates.publish(self._cloud(chunk, self._stamp(self.backend.kf_stamps[kf_id])))
        self.stats.values["map_update_points"] = len(chunk)

    def _publish_full_map(self) -> None:
        chunk = self.backend.map_points().subsample(self.p.map_max_points)
        self.pub_map.publish(self._cloud(chunk, self._last_stamp()))
        self.stats.values["map_points"] = len(chunk)
        self.stats.count("maps_published")
        self._map_dirty = False

    def _publish_markers(self) -> None:
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

    def _publish_state(self, reset: bool = False) -> None:
        self.pub_state.publish(mapper_state_msg(self.backend.state(reset)))

    def _publish_diagnostics(self) -> None:
        self.stats.values.update(
            pending_queue=len(self._queue),
            keyframes=self.backend.num_keyframes,
            session=self.backend.session,
            generation=self.backend.generation,
            prompts=self.prompts.status(),
        )
        publish_node_diagnostics(self, self.stats, "online3r_mapper")

    def stop(self) -> None:
        stop_worker(self)
        self.prompts.close()
        with self._lock:
            if self.p.autosave and self._unsaved and self.backend.num_keyframes:
                self._autosave()  # what the period held back


def main(args: list[str] | None = None) -> int:
    return run_node(lambda ctx: MapperNode(ctx), "mapper", args)


if __name__ == "__main__":
    raise SystemExit(main())
