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

Outputs (poses, paths, the dense map, markers, in the ``map`` frame):
:mod:`online3r_ros.ros.nodes.map_outputs`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Float32MultiArray, Float64MultiArray, String
from std_srvs.srv import Trigger

from online3r_ros.eval import write_tum
from online3r_ros.ros import topics as T
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
from online3r_ros.ros.nodes.map_outputs import MapOutputs
from online3r_ros.ros.nodes.mapper_prompts import MapperPrompts
from online3r_ros.ros.nodes.markers import frustum_lines
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
from online3r_ros.ros.time import stamp_to_ns
from online3r_ros.slam.backend import BackendHooks, MapperBackend
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
        self.outputs = MapOutputs(self, self.backend, self.p, self.stats)
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
            self.outputs.set_base_camera(T_bc)
            accepted = self.backend.submit_keyframe(pkt)
            self.stats.count("keyframes_received" if accepted else "keyframes_ignored")
        else:
            accepted = self.backend.submit_observation(pkt)
            self.stats.count("observations")
            self.outputs.map_dirty = self.outputs.path_dirty = True
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
        self.outputs.after_keyframe(update.kf_id - 1 if update.kf_id > 0 and integrated else None)
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
        self.outputs.publish_all()

    def _periodic(self, publish_map: bool) -> None:
        now = time.monotonic()
        if self.p.autosave and self._unsaved and now - self._last_save >= self.p.autosave_period:
            with self._lock:
                self._autosave()
        with self._lock:
            self.outputs.periodic(publish_map)

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
