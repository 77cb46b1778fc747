"""The retrieval node: keyframe features in -> verified loop candidates out (ASMK place recognition).

A ROS host of :class:`online3r_ros.retrieval.place.PlaceRecognizer` (topics: :mod:`online3r_ros.ros.topics`;
parameters: :class:`online3r_ros.ros.nodes.params.RetrievalParams`; features and thresholds: the SLAM
config's ``retrieval`` section). Each keyframe's features (``online3r/keyframe_features``, from the tracker)
query the database over keyframes older than its ``retrieval.exclude_recent`` predecessors; the candidates
(verified by a prior-free pose when the features carry depth) go to the mapper on
``online3r/loop_candidates``, which tests and adds the edges. Then the keyframe joins the database.

Sessions: keyframe 0 of another tracker session starts a new database. Recovery: the indexed features are
saved atomically to ``database_path`` (at most every ``autosave_period`` s, and at shutdown) and loaded at
start (``load_on_start``). Nothing is lost to a late start, a restart or transport: the node announces what
it holds on the latched ``online3r/retrieval_state`` (at start, after ``~/reset``, and whenever features
older than the newest indexed keyframe, or of another session, have been missing for ``gap_wait`` s), and
the tracker re-sends the features it lacks (the mapper's protocol, :mod:`online3r_ros.slam.session`); out
of order they are indexed alike. Relocalisation does not depend on this node (the tracker has its own
database).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import torch
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from std_msgs.msg import Float32MultiArray, Float64MultiArray, String
from std_srvs.srv import Trigger

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
from online3r_ros.ros.nodes.msgs import MessageFormatError, mapper_state_msg
from online3r_ros.ros.nodes.params import RetrievalParams
from online3r_ros.ros.nodes.retrieval_msgs import array_to_features, loops_to_array
from online3r_ros.slam.packets import MapperState
from online3r_ros.slam.places import make_place_recognizer
from online3r_ros.slam.session import GapRequests, first_missing, next_generation
from online3r_ros.utils.atomic import save_atomic

__all__ = ["RetrievalNode", "main", "DATABASE_FORMAT"]

DATABASE_FORMAT = "online3r_ros.retrieval"


class RetrievalNode(Node):
    """See the module docstring."""

    def __init__(self, context: Any = None, node_name: str = "retrieval") -> None:
        super().__init__(node_name, context=context)
        self.p, self.cfg = setup_node_params(self, RetrievalParams)
        places = make_place_recognizer(self.cfg.replace(retrieval={"enabled": True}))
        assert places is not None
        self.places = places
        self.session: int | None = None
        self.generation = next_generation()  # changes when the database is cleared (announced)
        self.gaps = GapRequests(self.p.gap_wait)
        self._other_session = False  # features of another session were ignored since the last request
        self.stats = NodeStats("retrieval", error_hold=5.0, input_timeout=3600.0)
        self.stats.state = "waiting"
        self._log_once = LogOnce(2.0)
        self._lock = threading.Lock()  # the database
        self._wake = threading.Condition()
        self._queue: deque = deque(maxlen=1000)
        self._running = True
        self._unsaved = False
        self._last_save = -float("inf")
        self.pub_loops = self.create_publisher(
            Float64MultiArray, T.LOOP_CANDIDATES.name, T.qos_for(T.LOOP_CANDIDATES)
        )
        self.pub_status = self.create_publisher(
            String, T.RETRIEVAL_STATUS.name, T.qos_for(T.RETRIEVAL_STATUS)
        )
        self.pub_diag = self.create_publisher(DiagnosticArray, T.DIAGNOSTICS.name, T.qos_for(T.DIAGNOSTICS))
        self.pub_state = self.create_publisher(String, T.RETRIEVAL_STATE.name, T.qos_for(T.RETRIEVAL_STATE))
        self.create_subscription(
            Float32MultiArray, T.KEYFRAME_FEATURES.name, self._on_features, T.qos_for(T.KEYFRAME_FEATURES)
        )
        self.create_service(Trigger, "~/reset", self._srv_reset)
        self.create_service(Trigger, "~/save_database", self._srv_save)
        self.create_timer(self.p.diagnostics_period, self._publish_diagnostics)
        self._maybe_load()
        self._announce()
        start_worker(
            self, "retrieval", self.cfg, f"database_path={self.p.database_path} keyframes={len(self.places)}"
        )

    @property
    def database_path(self) -> Path:
        return Path(self.p.database_path).expanduser()

    # --------------------------------------------------------------------------------------- persistence
    def _maybe_load(self) -> None:
        if not (self.p.load_on_start and self.database_path.is_file()):
            return
        try:
            state = torch.load(self.database_path, map_location="cpu", weights_only=False)
            if not isinstance(state, dict) or state.get("format") != DATABASE_FORMAT:
                raise ValueError("not an online3r_ros retrieval database")
            self.places.load_state_dict(state["places"])
            self.session = state.get("session")
        except Exception as exc:  # noqa: BLE001 - any unreadable file: report it and start empty
            self.stats.error(f"cannot load {self.database_path}: {exc}")
            self.get_logger().error(f"cannot load {self.database_path}: {exc}; starting an empty database")
            self.places.reset()
            return
        self.get_logger().info(
            f"recovered {len(self.places)} keyframes from {self.database_path} (session {self.session})"
        )

    def _announce(self) -> None:
        """Publish what the database holds: its session and how many keyframes it has without a gap."""
        held = first_missing(self.places.features.keys())
        state = MapperState(self.generation, self.session, held, request=self.gaps.requests)
        self.pub_state.publish(mapper_state_msg(state))

    def _ask_again(self) -> None:
        """Announce again (a request) when features have been missing for ``gap_wait`` s (called with the
        lock held)."""
        ids = self.places.features.keys()
        gap = bool(ids) and first_missing(ids) < max(ids)
        if self.gaps.update(gap or self._other_session):
            self._other_session = False
            self.stats.count("requests")
            self._announce()

    def _save(self) -> None:
        """Save the indexed features atomically (called with the lock held)."""
        state = {"format": DATABASE_FORMAT, "session": self.session, "places": self.places.state_dict()}
        save_atomic(state, self.database_path)
        self._unsaved = False
        self._last_save = time.monotonic()

    # ------------------------------------------------------------------------------------------ callbacks
    def _on_features(self, msg: Any) -> None:
        with self._wake:
            self._queue.append(msg)
            self._wake.notify()

    def _srv_reset(self, request: Any, response: Any) -> Any:
        with self._lock:
            self.places.reset()
            self.session = None
            self._unsaved = True
            self.generation = next_generation(self.generation)
            self._announce()
        response.success, response.message = (
            True,
            "retrieval database cleared (the tracker re-sends its map's)",
        )
        return response

    def _srv_save(self, request: Any, response: Any) -> Any:
        try:
            with self._lock:
                self._save()
        except (OSError, RuntimeError) as exc:
            response.success, response.message = False, f"cannot save {self.database_path}: {exc}"
            return response
        response.success, response.message = (
            True,
            f"{len(self.places)} keyframes saved to {self.database_path}",
        )
        return response

    # ----------------------------------------------------------------------------------------------- work
    def _work(self) -> None:
        while self._running:
            items = take_queued(self, 0.1)
            if items is None:
                return
            try:
                with self._lock:
                    for msg in items:
                        self._handle(msg)
                    self._ask_again()
                    if self._unsaved and time.monotonic() - self._last_save >= self.p.autosave_period:
                        self._save()
            except Exception as exc:  # noqa: BLE001 - the node must survive anything one message does
                if not self._running or not self.context.ok():
                    return
                self.stats.error(f"{type(exc).__name__}: {exc}")
                self.get_logger().error(f"retrieval step failed: {type(exc).__name__}: {exc}")

    def _handle(self, msg: Any) -> None:
        try:
            session, kf_id, feats = array_to_features(msg)
        except (MessageFormatError, ValueError) as exc:
            self.stats.count("rejected")
            self.stats.error(f"features: {exc}")
            self._log_once(self.get_logger().error, f"malformed keyframe features: {exc}")
            return
        self.stats.input_seen()
        if session != self.session:
            if kf_id != 0 and len(self.places):
                self.stats.count("ignored_other_session")
                self._other_session = True  # ours is stale, or that session's keyframe 0 was lost
                return  # a stale keyframe of another session; its keyframe 0 starts the new database
            self.places.reset()
            self.session = session
        if kf_id in self.places:
            self.stats.count("duplicates")
            return
        t0 = time.perf_counter()
        try:
            candidates = self.places.loop_candidates(kf_id, feats, self.cfg.retrieval.exclude_recent)
        except ValueError as exc:  # features of another kind or size than this node's vocabulary
            self.stats.count("rejected")
            self.stats.error(f"features of keyframe {kf_id}: {exc}")
            self._log_once(self.get_logger().error, f"keyframe {kf_id}: {exc} (check retrieval.features)")
            return
        self.stats.add_times({"query_add": 1000 * (time.perf_counter() - t0)})
        self.stats.count("keyframes_indexed")
        self._unsaved = True
        self.stats.state = "indexing"
        if candidates:
            self.stats.count("loop_candidates", len(candidates))
            self.pub_loops.publish(loops_to_array(session, kf_id, candidates))

    def _publish_diagnostics(self) -> None:
        self.stats.values.update(
            keyframes=len(self.places), session=self.session, pending_queue=len(self._queue)
        )
        publish_node_diagnostics(self, self.stats, "online3r_retrieval")

    def stop(self) -> None:
        stop_worker(self)
        with self._lock:
            if self._unsaved:
                try:
                    self._save()
                except (OSError, RuntimeError) as exc:
                    self.get_logger().error(f"cannot save {self.database_path}: {exc}")


def main(args: list[str] | None = None) -> int:
    return run_node(lambda ctx: RetrievalNode(ctx), "retrieval", args)


if __name__ == "__main__":
    raise SystemExit(main())
