"""One streaming session against running tracker/mapper nodes: :func:`run_session` -> :class:`SessionResult`.

Streams the frames (:mod:`.streaming`), records the outputs (:mod:`.recorder`), waits for the last pose,
the final path and the full map, and reports what did not go as planned.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from online3r_ros.ros import topics as T
from online3r_ros.ros.replay.recorder import OutputRecorder
from online3r_ros.ros.replay.streaming import (
    FrameStreamer,
    SpinThread,
    call_trigger,
    stream_frames,
    wait_until,
)

__all__ = ["SessionResult", "run_session", "settle_outputs"]


@dataclass
class SessionResult:
    """What one streaming session produced (see :func:`run_session`).

    ``sent``: the frames published; ``camera_poses``, ``odometry``, ``path``, ``keyframe_path``,
    ``map_cloud``, ``map_updates``, ``loop_segments``, ``tracker_status``, ``mapper_status``, ``tf_edges``,
    ``counts``, ``frame_ids``: the
    recorder's content at the end; ``stream_s``: seconds from the first to the last frame sent;
    ``wait_s``: seconds the nodes needed to come up; ``settle_s``: seconds from the last frame sent to the
    last pose; ``notes``: what did not go as planned (time-outs, fallbacks); ``error``: why the session
    stopped early (``None`` when it did not).
    """

    sent: list = field(default_factory=list)
    camera_poses: list = field(default_factory=list)
    odometry: list = field(default_factory=list)
    path: list = field(default_factory=list)
    keyframe_path: list = field(default_factory=list)
    map_cloud: Any = None
    map_updates: dict = field(default_factory=dict)
    loop_segments: Any = None
    tracker_status: dict | None = None
    mapper_status: dict | None = None
    tf_edges: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    frame_ids: dict = field(default_factory=dict)
    stream_s: float = 0.0
    wait_s: float = 0.0
    settle_s: float = 0.0
    notes: list = field(default_factory=list)
    error: str | None = None


def run_session(
    frames: list[Any],
    *,
    rate_hz: float | None,
    topics: dict[str, str],
    check_nodes: Callable[[], str | None] | None = None,
    namespace: str = "",
    startup_timeout: float = 120.0,
    settle_timeout: float = 30.0,
    ready_timeout: float = 10.0,
    say: Callable[[str], Any] = lambda _: None,
) -> SessionResult:
    """Stream ``frames`` to running tracker/mapper nodes and record their outputs (own rclpy context).

    Args:
        frames: objects with ``rgb``, ``depth``, ``K`` (e.g. dataset/synthetic ``Frame``).
        rate_hz: camera rate; ``None``: lock-step (frame ``i`` leaves when the pose of frame ``i - 1``
            arrived, or the tracker's status counts ``i`` frames handled, or after ``ready_timeout`` s; give
            the tracker a short ``diagnostics_period`` so a frame without pose does not stall the stream).
        topics: ``{"image", "depth", "camera_info"}`` topic names the tracker listens to ('' = not sent).
        check_nodes: returns an error text when a node died (polled while waiting); ``None``: not checked.
        startup_timeout: seconds to wait for the tracker's input subscriptions and the mapper.
        settle_timeout: seconds to wait, after the last frame, for its pose, the final path and the map.
    """
    import rclpy

    result = SessionResult()
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("online3r_replay", context=context)
    spin = SpinThread(node)
    dead: list[str] = []

    def nodes_ok() -> bool:
        if check_nodes is not None and not dead:
            err = check_nodes()
            if err:
                dead.append(err)
        return not dead

    try:
        streamer = FrameStreamer(
            node, topics["image"], topics.get("depth", ""), topics.get("camera_info", "")
        )
        recorder = OutputRecorder(node, namespace)
        ns = namespace.rstrip("/")
        kf_topic = f"{ns}/{T.KEYFRAMES.name}" if ns else T.KEYFRAMES.name
        if ns:
            kf_topic = kf_topic if kf_topic.startswith("/") else "/" + kf_topic

        def up() -> bool:
            return not nodes_ok() or (
                streamer.subscriber_count() > 0 and node.count_subscribers(kf_topic) > 0
            )

        t0 = time.monotonic()
        ok = wait_until(up, startup_timeout, 0.1)
        result.wait_s = time.monotonic() - t0
        if dead:
            result.error = dead[0]
            return result
        if not ok:
            result.error = f"the nodes did not come up within {startup_timeout:.0f} s"
            return result
        say(f"[demo] nodes up after {result.wait_s:.1f} s; streaming {len(frames)} frames")
        time.sleep(0.5)  # let the remaining endpoint matches (best-effort readers) settle

        period_ns = int(round(1e9 / (rate_hz if rate_hz else 30.0)))
        start_ns = time.time_ns()
        stop = threading.Event()

        def ready(i: int) -> bool:
            if not nodes_ok():
                stop.set()
                return True
            if rate_hz or i == 0:
                return True
            poses = recorder.camera_poses
            if poses and poses[-1].stamp_ns >= start_ns + (i - 1) * period_ns:
                return True
            # a frame without pose (lost, rejected): the tracker's status counts it as handled
            st = recorder.tracker_status or {}
            return sum(int(st.get(k) or 0) for k in ("processed", "dropped", "rejected")) >= i

        class _Watch:
            def __iter__(self):
                for k, f in enumerate(frames):
                    if rate_hz and k % 10 == 0 and not nodes_ok():
                        stop.set()
                    yield f

        result.sent = stream_frames(
            streamer,
            _Watch(),
            rate_hz,
            start_ns=start_ns,
            ready=ready,
            ready_timeout=ready_timeout,
            stop=stop,
        )
        if result.sent:
            result.stream_s = result.sent[-1].sent - result.sent[0].sent
        if dead:
            result.error = dead[0]
            return result
        last_sent = result.sent[-1]
        say(f"[demo] stream done in {result.stream_s:.1f} s; waiting for the last results")

        result.notes += settle_outputs(
            node,
            recorder,
            last_stamp_ns=last_sent.stamp_ns,
            last_sent=last_sent.sent,
            n_sent=len(result.sent),
            namespace=namespace,
            timeout=settle_timeout,
            nodes_ok=nodes_ok,
        )
        poses = recorder.camera_poses
        result.settle_s = (poses[-1].received if poses else time.monotonic()) - last_sent.sent
        time.sleep(1.2)  # one more status period so the counters cover the whole run
        if dead:
            result.error = dead[0]
        return result
    finally:
        if "recorder" in locals():
            result.camera_poses = recorder.camera_poses
            result.odometry = recorder.odometry
            result.path = recorder.path
            result.keyframe_path = recorder.keyframe_path
            result.map_cloud = recorder.map_cloud
            result.map_updates = recorder.map_updates
            result.loop_segments = recorder.loop_segments
            result.tracker_status = recorder.tracker_status
            result.mapper_status = recorder.mapper_status
            result.tf_edges = recorder.tf_edges
            result.counts = recorder.counts()
            result.frame_ids = recorder.frame_ids
        spin.stop()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def settle_outputs(
    node: Any,
    recorder: OutputRecorder,
    *,
    last_stamp_ns: int,
    last_sent: float,
    n_sent: int,
    namespace: str = "",
    timeout: float = 30.0,
    nodes_ok: Callable[[], bool] = lambda: True,
) -> list[str]:
    """After the last frame: wait for its results and ask for the full map; returns notes on what did not
    arrive. Steps (sharing ``timeout`` seconds): 1. the tracker's pose of the last frame (stamp
    ``last_stamp_ns``, sent at monotonic ``last_sent``), or its status showing all ``n_sent`` frames handled
    (processed, dropped as stale or rejected) and no pose for 2 s; 2. an all-frames path reaching the last
    pose (re-published every ``path_period``); 3. ``mapper/publish_map`` and the map it publishes. The node
    must be spinning elsewhere; ``nodes_ok() -> False`` (a node died) ends every wait."""
    ns = namespace.rstrip("/")
    notes: list[str] = []

    def tracker_done() -> bool:
        poses = recorder.camera_poses
        if not nodes_ok():
            return True
        if poses and poses[-1].stamp_ns >= last_stamp_ns:
            return True
        st = recorder.tracker_status or {}
        handled = sum(int(st.get(k) or 0) for k in ("processed", "dropped", "rejected"))
        received = int(st.get("received") or 0)
        last_arrival = max(poses[-1].received if poses else 0.0, last_sent)
        return received >= n_sent and handled >= received and time.monotonic() - last_arrival > 2.0

    deadline = time.monotonic() + timeout
    wait_until(tracker_done, timeout, 0.05)
    poses = recorder.camera_poses
    if poses and poses[-1].stamp_ns < last_stamp_ns:
        notes.append("the tracker published no pose for the last frame (dropped or lost)")
    if poses:
        target = poses[-1].stamp_ns
        if not wait_until(
            lambda: not nodes_ok() or (recorder.path and recorder.path[-1][0] >= target),
            max(0.0, deadline - time.monotonic()),
            0.1,
        ):
            notes.append("the all-frames path did not reach the last pose before the time-out")
    if nodes_ok():
        before = recorder.counts()["map"]
        ok, message = call_trigger(node, f"{ns}/mapper/publish_map" if ns else "mapper/publish_map", 10.0)
        if not ok:
            notes.append(f"mapper/publish_map failed: {message}")
        elif not wait_until(
            lambda: recorder.counts()["map"] > before, max(2.0, deadline - time.monotonic()), 0.1
        ):
            notes.append("no map arrived after mapper/publish_map")
    return notes
