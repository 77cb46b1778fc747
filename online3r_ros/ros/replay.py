"""Stream RGB-D frames over DDS like a camera driver, and record what the tracker and mapper publish.

- :class:`FrameStreamer` publishes ``sensor_msgs/Image`` (``rgb8``), an aligned depth ``Image`` (``32FC1``
  metres) and ``CameraInfo`` with one stamp per frame (reliable, keep-last 5: what drivers do under
  REP-2003; the tracker subscribes best effort and takes the newest frame). :func:`stream_frames` paces the
  frames at a fixed rate (or as fast as a ``ready`` callback allows) and returns when each was sent.
- :class:`OutputRecorder` subscribes to the nodes' outputs (:mod:`online3r_ros.ros.topics`): odometry,
  camera pose, both paths, the map (full and incremental), markers, statuses and ``/tf``, keyed by stamp,
  with the monotonic arrival time of each message (latency = arrival - send time of the image with that
  stamp; both clocks are this process's).
- :func:`call_trigger` calls a ``std_srvs/Trigger`` service with a bounded wait.

Used by ``online3r demo`` and ``benchmarks/bench_ros_vs_offline.py``. Callbacks run on an executor thread
(:class:`SpinThread`); the recorder's getters copy under a lock.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from online3r_ros.ros import topics as T
from online3r_ros.ros.camera_info import Intrinsics, intrinsics_to_camera_info
from online3r_ros.ros.image import metres_to_depth_image, numpy_to_image
from online3r_ros.ros.pointcloud import pointcloud2_to_numpy
from online3r_ros.ros.pose import pose_to_matrix
from online3r_ros.ros.qos import reliable_qos, tf_qos
from online3r_ros.ros.time import stamp_to_ns

__all__ = [
    "FrameStreamer",
    "OutputRecorder",
    "SentFrame",
    "SessionResult",
    "SpinThread",
    "call_trigger",
    "run_session",
    "stream_frames",
    "wait_until",
]


def wait_until(predicate: Callable[[], bool], timeout: float, period: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(period)


class SpinThread:
    """Spin ``node`` on a single-threaded executor in a daemon thread until :meth:`stop`."""

    def __init__(self, node: Any) -> None:
        from rclpy.executors import SingleThreadedExecutor

        self.executor = SingleThreadedExecutor(context=node.context)
        self.executor.add_node(node)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="online3r-spin", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and self.executor.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - context shut down under us: stop spinning
                if not self.executor.context.ok():
                    break
                raise

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5.0)
        self.executor.shutdown(timeout_sec=1.0)


# --------------------------------------------------------------------------------------------- publishing
@dataclass(frozen=True)
class SentFrame:
    """A published frame: its index in the sequence, the header stamp (ns) and the monotonic send time."""

    index: int
    stamp_ns: int
    sent: float


class FrameStreamer:
    """Publishers of one RGB-D camera: colour ``Image``, depth ``Image`` (optional) and ``CameraInfo``.

    Args:
        node: the rclpy node owning the publishers.
        image_topic, depth_topic, camera_info_topic: topic names ('' for depth / camera_info: not published).
        frame_id: ``header.frame_id`` of every message (the camera's optical frame).
        depth: history depth of the publishers.
    """

    def __init__(
        self,
        node: Any,
        image_topic: str,
        depth_topic: str = "",
        camera_info_topic: str = "",
        frame_id: str = "camera_optical_frame",
        depth: int = 5,
    ) -> None:
        from sensor_msgs.msg import CameraInfo, Image

        if not image_topic:
            raise ValueError("image_topic must not be empty")
        qos = reliable_qos(depth)
        self.frame_id = frame_id
        self.image_pub = node.create_publisher(Image, image_topic, qos)
        self.depth_pub = node.create_publisher(Image, depth_topic, qos) if depth_topic else None
        self.info_pub = (
            node.create_publisher(CameraInfo, camera_info_topic, qos) if camera_info_topic else None
        )

    def subscriber_count(self) -> int:
        """Smallest subscription count over the streamer's topics (0 until the tracker listens to all)."""
        pubs = [p for p in (self.image_pub, self.depth_pub, self.info_pub) if p is not None]
        return min(p.get_subscription_count() for p in pubs)

    def publish(
        self, rgb: np.ndarray, depth_m: np.ndarray | None, K: np.ndarray | None, stamp_ns: int
    ) -> None:
        """Publish one frame (depth and camera info first, so the image finds its partners waiting).

        Args:
            rgb: ``uint8 [H, W, 3]``; depth_m: ``float32 [H, W]`` metres (0 = no measurement) or ``None``;
            K: ``[3, 3]`` pinhole intrinsics or ``None``; stamp_ns: header stamp, integer nanoseconds.
        """
        h, w = rgb.shape[:2]
        if self.depth_pub is not None and depth_m is not None:
            self.depth_pub.publish(
                metres_to_depth_image(
                    depth_m, "32FC1", invalid="zero", frame_id=self.frame_id, stamp=stamp_ns
                )
            )
        if self.info_pub is not None and K is not None:
            intr = Intrinsics(width=w, height=h, K=np.asarray(K, np.float64), frame_id=self.frame_id)
            self.info_pub.publish(intrinsics_to_camera_info(intr, stamp=stamp_ns))
        self.image_pub.publish(numpy_to_image(rgb, "rgb8", frame_id=self.frame_id, stamp=stamp_ns))


def stream_frames(
    streamer: FrameStreamer,
    frames: Iterable[Any],
    rate_hz: float | None,
    *,
    start_ns: int | None = None,
    ready: Callable[[int], bool] | None = None,
    ready_timeout: float = 30.0,
    stop: threading.Event | None = None,
) -> list[SentFrame]:
    """Publish ``frames`` (objects with ``rgb``, ``depth``, ``K``) and return what was sent.

    Args:
        rate_hz: publishing rate (frame ``i`` leaves at ``t0 + i / rate``; a late frame is sent at once and
            the schedule is kept, so a slow publisher never bunches frames up). ``None``: as fast as
            ``ready`` allows.
        start_ns: stamp of frame 0 (default: the wall clock at the start); frame ``i`` is stamped
            ``start_ns + i / rate`` (``rate`` 30 Hz when ``rate_hz`` is ``None``), so stamps are unique,
            increasing and on the camera's schedule whatever the publishing jitter.
        ready: ``ready(i) -> bool`` polled before frame ``i`` is sent (e.g. "the tracker answered frame
            i - 1"); waits at most ``ready_timeout`` seconds per frame, then sends anyway.
        stop: set it to end the stream early.
    """
    period_ns = int(round(1e9 / (rate_hz if rate_hz else 30.0)))
    start_ns = time.time_ns() if start_ns is None else int(start_ns)
    sent: list[SentFrame] = []
    t0 = time.monotonic()
    for i, frame in enumerate(frames):
        if stop is not None and stop.is_set():
            break
        if ready is not None:
            wait_until(lambda i=i: ready(i) or (stop is not None and stop.is_set()), ready_timeout, 0.002)
        if rate_hz:
            delay = t0 + i / rate_hz - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        stamp = start_ns + i * period_ns
        streamer.publish(frame.rgb, frame.depth, frame.K, stamp)
        sent.append(SentFrame(i, stamp, time.monotonic()))
    return sent


# --------------------------------------------------------------------------------------------- recording
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

        def sub(msg_type: Any, spec: T.TopicSpec, callback: Callable[[Any], None]) -> None:
            node.create_subscription(msg_type, name(spec), callback, T.qos_for(spec))

        sub(Odometry, T.ODOMETRY, self._on_odometry)
        sub(PoseStamped, T.CAMERA_POSE, self._on_camera_pose)
        sub(Path, T.PATH, self._on_path)
        sub(Path, T.KEYFRAME_PATH, self._on_keyframe_path)
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
    def _path_poses(msg: Any) -> list[tuple[int, np.ndarray]]:
        return [(stamp_to_ns(p.header.stamp), pose_to_matrix(p.pose)) for p in msg.poses]

    def _on_path(self, msg: Any) -> None:
        poses = self._path_poses(msg)
        with self._lock:
            self._s.path = poses
            self._s.frame_ids["path"] = msg.header.frame_id
            self._s.path_count += 1

    def _on_keyframe_path(self, msg: Any) -> None:
        poses = self._path_poses(msg)
        with self._lock:
            self._s.keyframe_path = poses
            self._s.frame_ids["keyframe_path"] = msg.header.frame_id
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
        with self._lock:
            self._s.markers += 1

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


def call_trigger(node: Any, service: str, timeout: float = 10.0) -> tuple[bool, str]:
    """Call a ``std_srvs/Trigger`` service; ``(success, message)``, or ``(False, reason)`` on time-out.
    The node must be spinning elsewhere (e.g. :class:`SpinThread`)."""
    from std_srvs.srv import Trigger

    client = node.create_client(Trigger, service)
    try:
        if not client.wait_for_service(timeout_sec=timeout):
            return False, f"service {service} not available after {timeout:.0f} s"
        future = client.call_async(Trigger.Request())
        if not wait_until(future.done, timeout):
            return False, f"service {service} did not answer within {timeout:.0f} s"
        result = future.result()
        return bool(result.success), str(result.message)
    finally:
        node.destroy_client(client)


# ----------------------------------------------------------------------------------------------- session
@dataclass
class SessionResult:
    """What one streaming session produced (see :func:`run_session`).

    ``sent``: the frames published; ``camera_poses``, ``odometry``, ``path``, ``keyframe_path``,
    ``map_cloud``, ``map_updates``, ``tracker_status``, ``mapper_status``, ``tf_edges``, ``counts``,
    ``frame_ids``: the
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

        # 1. the tracker: the last frame's pose, or its status shows every received frame handled
        #    (processed, dropped as stale or rejected) and no pose arrived for a while
        n_sent = len(result.sent)

        def tracker_done() -> bool:
            poses = recorder.camera_poses
            if not nodes_ok():
                return True
            if poses and poses[-1].stamp_ns >= last_sent.stamp_ns:
                return True
            st = recorder.tracker_status or {}
            handled = sum(int(st.get(k) or 0) for k in ("processed", "dropped", "rejected"))
            received = int(st.get("received") or 0)
            last_arrival = max(poses[-1].received if poses else 0.0, last_sent.sent)
            return received >= n_sent and handled >= received and time.monotonic() - last_arrival > 2.0

        deadline = time.monotonic() + settle_timeout
        wait_until(tracker_done, settle_timeout, 0.05)
        poses = recorder.camera_poses
        if poses and poses[-1].stamp_ns < last_sent.stamp_ns:
            result.notes.append("the tracker published no pose for the last frame (dropped or lost)")
        # 2. the mapper: a path that reaches the last pose (it is re-published every path_period)
        if poses:
            target = poses[-1].stamp_ns
            if not wait_until(
                lambda: not nodes_ok() or (recorder.path and recorder.path[-1][0] >= target),
                max(0.0, deadline - time.monotonic()),
                0.1,
            ):
                result.notes.append("the all-frames path did not reach the last pose before the time-out")
        # 3. the full map, on request
        if nodes_ok():
            before = recorder.counts()["map"]
            ok, message = call_trigger(node, f"{ns}/mapper/publish_map" if ns else "mapper/publish_map", 10.0)
            if not ok:
                result.notes.append(f"mapper/publish_map failed: {message}")
            elif not wait_until(
                lambda: recorder.counts()["map"] > before, max(2.0, deadline - time.monotonic()), 0.1
            ):
                result.notes.append("no map arrived after mapper/publish_map")
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
            result.tracker_status = recorder.tracker_status
            result.mapper_status = recorder.mapper_status
            result.tf_edges = recorder.tf_edges
            result.counts = recorder.counts()
            result.frame_ids = recorder.frame_ids
        spin.stop()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
