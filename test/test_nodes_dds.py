"""Multi-process tests of the tracker and mapper nodes over real DDS (Fast DDS, isolated domain).

The nodes run as separate processes (``python -m online3r_ros.ros.nodes.tracker|mapper`` with a params
file); this process publishes a synthetic 160x120 RGB-D sequence (image, depth, CameraInfo; wall-clock
stamps) and collects the outputs. Isolation: each test reserves a ``ROS_DOMAIN_ID`` no other cooperating
process on the machine uses (:func:`~online3r_ros.ros.replay.domain.reserve_domain_id`; a pid-derived id
once collided with a concurrent run, whose keyframes then replaced this run's map) and
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``; every wait is bounded (generously: the machine may be busy)
and polls its condition; children are always killed.

The nodes get an explicit SLAM config (:data:`SLAM_CONFIG`) suited to the synthetic scene, so the tests do
not depend on the tuning of the library's defaults: its colour and depth are registered, so the ICP's
photometric term is on (pure point-to-plane ICP can slide along the room's flat walls).

Checks: odometry / camera pose / TF / path / map / markers arrive with the right frame ids and the input
stamps, the REP-105 chain holds with the camera mount read from /tf_static, the ATE of the published camera
poses and of the saved trajectory is small, the services work; the tracker keeps publishing when the mapper
is killed, and a restarted mapper recovers from its autosaved map (and the tracker's re-sent keyframes); bad
input (wrong encoding, zero size, size change, disagreeing CameraInfo) gives diagnostics errors while the
node keeps going; time going backwards starts a new session; an invalid parameter stops the node with its
name; compressed images; external odometry; use_sim_time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed (run scripts/setup.sh)")
pytest.importorskip("nav_msgs.msg", reason="nav_msgs is not installed")
pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs is not built (scripts/setup.sh)")
pytest.importorskip("diagnostic_msgs.msg", reason="diagnostic_msgs is not installed")
pytest.importorskip("visualization_msgs.msg", reason="visualization_msgs is not installed")

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]
FPS = 10.0
W, H = 160, 120
N_FRAMES = 40


#: SLAM config of the nodes (written to a YAML file, ``slam_config`` parameter); tests may override keys.
SLAM_CONFIG = {
    "source": {"kind": "depth"},
}


@pytest.fixture
def dds_domain():
    """A DDS domain id reserved for this test (released after it)."""
    from online3r_ros.ros.replay.domain import reserve_domain_id

    with reserve_domain_id() as lease:
        yield lease.domain_id


def _sequence(n: int = N_FRAMES):
    from online3r_ros.synthetic import make_synthetic_sequence

    # 480 frames per lap: ~0.9 cm and 0.75 deg per frame
    return make_synthetic_sequence(n_frames=480, width=W, height=H, max_frames=n)


class NodeProcs:
    """Tracker, mapper and retrieval child processes with their params file and logs (always killed)."""

    def __init__(
        self,
        tmp: Path,
        domain: int,
        tracker: dict | None = None,
        mapper: dict | None = None,
        slam: dict | None = None,
        retrieval: dict | None = None,
    ) -> None:
        self.tmp = tmp
        self.env = dict(
            os.environ,
            ROS_DOMAIN_ID=str(domain),
            ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
            PYTHONUNBUFFERED="1",
            OMP_NUM_THREADS="1",
        )
        self.slam_file = tmp / "slam.yaml"
        self._write_slam_config(slam or {})
        self.params = {
            "tracker": {
                "slam_config": str(self.slam_file),
                "torch_threads": 1,
                "tf_static_wait": 0.0,
                "sync_wait": 1.0,
                "error_hold": 30.0,
                **(tracker or {}),
            },
            "mapper": {
                "slam_config": str(self.slam_file),
                "torch_threads": 1,
                "map_path": str(tmp / "map.pt"),
                "trajectory_path": str(tmp / "traj.txt"),
                "map_period": 1.0,
                "path_period": 0.5,
                **(mapper or {}),
            },
            "retrieval": {
                "slam_config": str(self.slam_file),
                "torch_threads": 1,
                "database_path": str(tmp / "retrieval.pt"),
                "autosave_period": 0.0,
                **(retrieval or {}),
            },
        }
        self.params_file = tmp / "params.yaml"
        self._write_params()
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Any] = {}

    def _write_slam_config(self, overrides: dict) -> None:
        import yaml

        doc = {section: dict(values) for section, values in SLAM_CONFIG.items()}
        for section, values in overrides.items():
            doc.setdefault(section, {}).update(values)
        self.slam_file.write_text(yaml.safe_dump(doc))

    def _write_params(self) -> None:
        import yaml

        doc = {name: {"ros__parameters": values} for name, values in self.params.items()}
        self.params_file.write_text(yaml.safe_dump(doc))

    def start(self, name: str) -> None:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        cmd = [
            sys.executable,
            "-m",
            f"online3r_ros.ros.nodes.{name}",
            "--ros-args",
            "--params-file",
            str(self.params_file),
        ]
        self.procs[name] = subprocess.Popen(
            cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.tmp
        )
        self.logs[name] = log

    def stop(self, name: str, sig: int = signal.SIGINT) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        log = self.logs.pop(name, None)
        if log is not None:
            log.close()

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name, signal.SIGKILL)


class Harness:
    """An rclpy node in this process: publishes camera input, records every output message."""

    def __init__(self, domain: int) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped
        from nav_msgs.msg import Odometry
        from nav_msgs.msg import Path as PathMsg
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2
        from std_msgs.msg import String
        from tf2_msgs.msg import TFMessage
        from visualization_msgs.msg import MarkerArray

        from online3r_ros.ros import topics as T
        from online3r_ros.ros.qos import reliable_qos, tf_qos

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node("online3r_test_harness", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.lock = threading.Lock()
        self.got: dict[str, list] = {}
        qos = reliable_qos(50)
        self.pub_image = self.node.create_publisher(Image, "image", qos)
        self.pub_depth = self.node.create_publisher(Image, "depth", qos)
        self.pub_info = self.node.create_publisher(CameraInfo, "camera_info", qos)

        def keep(key):
            def cb(msg):
                with self.lock:
                    self.got.setdefault(key, []).append(msg)

            return cb

        for key, typ, spec in (
            ("odom", Odometry, T.ODOMETRY),
            ("pose", PoseStamped, T.CAMERA_POSE),
            ("tracker_status", String, T.TRACKER_STATUS),
            ("path", PathMsg, T.PATH),
            ("kf_path", PathMsg, T.KEYFRAME_PATH),
            ("map", PointCloud2, T.MAP),
            ("map_updates", PointCloud2, T.MAP_UPDATES),
            ("markers", MarkerArray, T.MARKERS),
            ("mapper_status", String, T.MAPPER_STATUS),
            ("retrieval_status", String, T.RETRIEVAL_STATUS),
            ("diagnostics", DiagnosticArray, T.DIAGNOSTICS),
        ):
            self.node.create_subscription(typ, spec.name, keep(key), T.qos_for(spec))
        self.node.create_subscription(TFMessage, "/tf", keep("tf"), tf_qos())
        self._spin = True
        self._thread = threading.Thread(target=self._spin_loop, daemon=True)
        self._thread.start()

    def _spin_loop(self) -> None:
        while self._spin:
            try:
                self.executor.spin_once(timeout_sec=0.02)
            except Exception:  # noqa: BLE001 - shutting down
                return

    def messages(self, key: str) -> list:
        with self.lock:
            return list(self.got.get(key, []))

    def clear(self, key: str) -> None:
        with self.lock:
            self.got.pop(key, None)

    def wait_for(self, predicate, timeout: float, what: str, procs: NodeProcs | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        logs = (
            ""
            if procs is None
            else "\n".join(f"--- {n}:\n{procs.log(n)[-3000:]}" for n in ("tracker", "mapper"))
        )
        pytest.fail(f"timed out after {timeout} s waiting for {what}\n{logs}")

    def publish_frame(
        self, frame, stamp_ns: int, *, rgb=None, info_size=None, image_msg=None, info_fx=None
    ) -> None:
        """CameraInfo (focal length ``info_fx`` if given), depth (32FC1) and image (rgb8, or ``image_msg``) of
        ``frame`` with one stamp."""
        from online3r_ros.ros.camera_info import Intrinsics, intrinsics_to_camera_info
        from online3r_ros.ros.image import metres_to_depth_image, numpy_to_image

        rgb = frame.rgb if rgb is None else rgb
        h, w = rgb.shape[:2]
        iw, ih = info_size or (w, h)
        K = frame.K.copy()
        info = intrinsics_to_camera_info(
            Intrinsics.from_pinhole(K[0, 0], K[1, 1], K[0, 2], K[1, 2], int(iw), int(ih)),
            frame_id="camera_optical_frame",
            stamp=stamp_ns,
        )
        if info_fx is not None:
            info.k[0] = info_fx  # Intrinsics validates; a bad CameraInfo is made by hand
        self.pub_info.publish(info)
        depth = frame.depth if frame.depth.shape == (h, w) else frame.depth[::2, ::2].copy()
        self.pub_depth.publish(
            metres_to_depth_image(depth, "32FC1", frame_id="camera_optical_frame", stamp=stamp_ns)
        )
        if image_msg is None:
            image_msg = numpy_to_image(rgb, "rgb8", frame_id="camera_optical_frame", stamp=stamp_ns)
        self.pub_image.publish(image_msg)

    def wait_subscribers(self, timeout: float = 20.0, procs: NodeProcs | None = None) -> None:
        self.wait_for(
            lambda: (
                self.pub_image.get_subscription_count() > 0 and self.pub_depth.get_subscription_count() > 0
            ),
            timeout,
            "the tracker's subscriptions",
            procs,
        )

    def close(self) -> None:
        import rclpy

        self._spin = False
        self._thread.join(timeout=2)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def _call(h: Harness, service: str, timeout: float = 20.0):
    """Call a std_srvs/Trigger service; returns the response (fails the test on timeout)."""
    from std_srvs.srv import Trigger

    client = h.node.create_client(Trigger, service)
    try:
        if not client.wait_for_service(timeout_sec=timeout):
            pytest.fail(f"service {service} is not available")
        future = client.call_async(Trigger.Request())
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not future.done():
            pytest.fail(f"service {service} did not answer within {timeout} s")
        return future.result()
    finally:
        h.node.destroy_client(client)


def _stamp_ns(msg) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def _status(h: Harness, key: str) -> dict:
    msgs = h.messages(key)
    return json.loads(msgs[-1].data) if msgs else {}


def _stream(h: Harness, frames, t0_ns: int, period: float = 1.0 / FPS, **kw) -> list[int]:
    """Publish ``frames`` every ``period`` s with stamps ``t0_ns + frame.timestamp`` (ns)."""
    stamps = []
    for f in frames:
        stamp = t0_ns + int(round(f.timestamp * 1e9))
        h.publish_frame(f, stamp, **kw)
        stamps.append(stamp)
        time.sleep(period)
    return stamps


@pytest.fixture
def session(tmp_path, dds_domain):
    made: list = []

    def make(**kw):
        domain = dds_domain
        procs = NodeProcs(tmp_path, domain, **kw)
        made.append(procs)
        h = Harness(domain)
        made.append(h)
        return procs, h

    yield make
    for obj in reversed(made):
        obj.close()


# ------------------------------------------------------------------------------------------------------ tests
def test_pipeline_over_dds_frames_stamps_and_ate(session) -> None:
    from tf2_msgs.msg import TFMessage

    from online3r_ros.eval import compute_ate
    from online3r_ros.ros.pointcloud import pointcloud2_to_numpy
    from online3r_ros.ros.pose import T_LINK_OPTICAL, invert, pose_to_matrix, tqs_to_matrix, transform_stamped
    from online3r_ros.ros.qos import tf_static_qos

    procs, h = session(tracker={"tf_static_wait": 10.0})
    # the robot's static camera mount: base_link -> camera_link -> camera_optical_frame
    T_base_link = tqs_to_matrix([0.1, 0.02, 0.3], [0.0, np.sin(0.1), 0.0, np.cos(0.1)])
    static = h.node.create_publisher(TFMessage, "/tf_static", tf_static_qos())
    static.publish(
        TFMessage(
            transforms=[
                transform_stamped(T_base_link, "base_link", "camera_link"),
                transform_stamped(T_LINK_OPTICAL, "camera_link", "camera_optical_frame"),
            ]
        )
    )
    T_bc = T_base_link @ T_LINK_OPTICAL
    procs.start("mapper")
    procs.start("tracker")
    seq = _sequence()
    frames = list(seq)
    h.wait_subscribers(procs=procs)
    t0 = time.time_ns()  # wall-clock stamps: the latency figures are meaningful
    stamps = _stream(h, frames, t0, period=0.25)
    h.wait_for(lambda: len(h.messages("pose")) >= 0.5 * len(frames), 20, "camera poses", procs)
    time.sleep(1.0)
    # frame ids and stamps
    odoms, poses = h.messages("odom"), h.messages("pose")
    assert all(m.header.frame_id == "odom" and m.child_frame_id == "base_link" for m in odoms)
    assert all(m.header.frame_id == "map" for m in poses)
    assert {_stamp_ns(m) for m in poses} <= set(stamps)
    assert {_stamp_ns(m) for m in odoms} == {_stamp_ns(m) for m in poses}
    tf = [t for m in h.messages("tf") for t in m.transforms]
    pairs = {(t.header.frame_id, t.child_frame_id) for t in tf}
    assert {("odom", "base_link"), ("map", "odom")} <= pairs
    assert {_stamp_ns(t) for t in tf} <= set(stamps)
    # REP-105 chain with the mount from /tf_static: T_map_cam = T_map_odom · T_odom_base · T_base_cam
    assert "from /tf_static" in procs.log("tracker")
    by_stamp = {(t.header.frame_id, _stamp_ns(t)): pose_to_matrix(t) for t in tf}
    for pose, odom in zip(poses, odoms, strict=True):
        T_map_odom = by_stamp[("map", _stamp_ns(pose))]
        chained = T_map_odom @ pose_to_matrix(odom) @ T_bc
        np.testing.assert_allclose(chained, pose_to_matrix(pose), atol=1e-6)
    np.testing.assert_allclose(
        pose_to_matrix(poses[0]) @ invert(T_bc), np.eye(4), atol=0.05
    )  # map = first base
    # ATE of the published camera poses against the ground truth
    t_est = np.array([_stamp_ns(m) - t0 for m in poses]) * 1e-9
    T_est = np.stack([pose_to_matrix(m) for m in poses])
    gt_t, gt_T = seq.gt_trajectory()
    ate = compute_ate(t_est, T_est, gt_t, gt_T, alignment="se3")
    assert ate.n_matched == len(poses)
    assert ate.rmse < 0.01, ate
    # mapper outputs
    h.wait_for(
        lambda: h.messages("path") and h.messages("map") and h.messages("markers"),
        15,
        "path/map/markers",
        procs,
    )
    path = h.messages("path")[-1]
    assert path.header.frame_id == "map" and len(path.poses) >= 2
    assert {_stamp_ns(p) for p in path.poses} <= set(stamps)
    cloud = pointcloud2_to_numpy(h.messages("map")[-1])
    assert h.messages("map")[-1].header.frame_id == "map" and len(cloud.xyz) > 100
    assert np.isfinite(cloud.xyz).all() and cloud.rgb is not None
    markers = h.messages("markers")[-1].markers
    assert {m.ns for m in markers} == {"keyframes", "edges", "loops"} and all(
        m.header.frame_id == "map" for m in markers
    )

    def accounted(status: dict) -> bool:  # every frame received was processed, dropped or rejected
        done = status.get("processed", 0) + status.get("dropped", 0) + status.get("rejected", 0)
        return status.get("received", -1) == done

    h.wait_for(lambda: accounted(_status(h, "tracker_status")), 10, "the tracker to finish its frames", procs)
    status = _status(h, "tracker_status")
    assert status["state"] == "tracking" and status["processed"] >= 1 and "latency_ms" in status
    h.wait_for(
        lambda: _status(h, "mapper_status").get("optimisations", 0) >= 1,
        20,
        "an optimisation in the mapper",
        procs,
    )
    assert _status(h, "mapper_status")["keyframes"] >= 2
    # services: TUM trajectories and the map, written atomically to the paths given as parameters
    from online3r_ros.eval import read_tum

    deadline = time.monotonic() + 20.0  # under load the mapper may still be fusing the last observations
    while True:
        res = _call(h, "/mapper/save_trajectory")
        assert res.success, res.message
        ts, T_WC = read_tum(procs.tmp / "traj.txt")
        if len(ts) >= len(poses) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    kts, _ = read_tum(procs.tmp / "traj_keyframes.txt")
    assert len(ts) >= len(poses) and len(kts) >= 2 and set(np.round(kts, 6)) <= set(np.round(ts, 6))
    ate_map = compute_ate(ts - t0 * 1e-9, T_WC, gt_t, gt_T, alignment="se3")
    assert ate_map.rmse < 0.01, ate_map
    assert _call(h, "/mapper/save_map").success
    assert (procs.tmp / "map.pt").is_file()
    res = _call(h, "/tracker/save_trajectory")
    assert res.success and (procs.tmp / "online3r_tracker_trajectory.txt").is_file(), res.message
    assert _call(h, "/mapper/publish_map").success
    # a clean shutdown saves what the autosave period held back
    n_kf = _status(h, "mapper_status")["keyframes"]
    procs.stop("mapper")
    from online3r_ros.slam.backend import MapperBackend
    from online3r_ros.slam.config import load_config
    from online3r_ros.slam.runner import build_source

    saved = MapperBackend(load_config(), build_source(load_config()))
    saved.load(procs.tmp / "map.pt")
    assert saved.num_keyframes >= n_kf


def test_a_mapper_started_late_holds_every_frame_with_its_exact_stamp(session) -> None:
    """The mapper starts after the tracker has tracked frames: it never saw their observations, the tracker
    re-sends its keyframes' working copies with those frames' poses and input stamps, and the mapper's
    trajectory holds every frame the tracker posed (CI once saw 32 of 40 when the mapper matched late)."""
    from online3r_ros.eval import read_tum

    procs, h = session()
    procs.start("tracker")
    h.wait_subscribers(timeout=60, procs=procs)
    t0 = time.time_ns()
    frames = list(_sequence(24))
    stamps = _stream(h, frames[:16], t0, period=0.2)
    h.wait_for(lambda: len(h.messages("pose")) >= 12, 30, "camera poses without a mapper", procs)
    procs.start("mapper")
    h.wait_for(lambda: "re-sent keyframes 0.." in procs.log("tracker"), 60, "the tracker to re-send", procs)
    stamps += _stream(h, frames[16:], t0, period=0.2)
    h.wait_for(lambda: len(h.messages("pose")) >= 20, 30, "poses after the mapper started", procs)
    time.sleep(1.0)  # the tracker may drop frames while the mapper starts beside it on a busy machine
    posed = {_stamp_ns(m) for m in h.messages("pose")}

    def mapper_has_every_frame() -> bool:
        time.sleep(0.5)
        res = _call(h, "/mapper/save_trajectory")
        return res.success and len(read_tum(procs.tmp / "traj.txt")[0]) >= len(posed)

    h.wait_for(mapper_has_every_frame, 30, "every posed frame in the mapper's trajectory", procs)
    h.wait_for(
        lambda: h.messages("path") and len(h.messages("path")[-1].poses) >= len(posed),
        30,
        "a path of every frame",
        procs,
    )
    assert {_stamp_ns(p) for p in h.messages("path")[-1].poses} == posed <= set(stamps)


def test_mapper_killed_tracker_continues_and_restarted_mapper_recovers(session) -> None:
    """Kill -9 the mapper after an autosave: the tracker keeps publishing and making keyframes; a restarted
    mapper loads the autosave, the tracker re-sends the keyframes it made meanwhile (with their stamps), and
    the map holds the frames before, during and after the outage in the tracker's session."""
    import re

    # a keyframe every ~8 frames, so that the tracker makes keyframes while the mapper is down
    procs, h = session(slam={"tracking": {"match_frac_thresh": 0.85}})
    procs.start("mapper")
    procs.start("tracker")
    frames = list(_sequence(36))
    h.wait_subscribers(timeout=60, procs=procs)
    t0 = time.time_ns()
    before = _stream(h, frames[:12], t0, period=0.2)
    h.wait_for(
        lambda: _status(h, "mapper_status").get("autosaved_keyframes", 0) >= 1, 60, "an autosaved map", procs
    )
    assert (procs.tmp / "map.pt").is_file()
    procs.stop("mapper", signal.SIGKILL)
    h.clear("odom")
    during = _stream(h, frames[12:24], t0, period=0.2)
    h.wait_for(lambda: len(h.messages("odom")) >= 3, 60, "odometry while the mapper is down", procs)
    assert {_stamp_ns(m) for m in h.messages("odom")} <= set(during)
    seen = len(procs.log("tracker"))  # (a first mapper state may also have made the tracker re-send)
    procs.start("mapper")
    h.wait_for(lambda: "recovered map" in procs.log("mapper"), 60, "the mapper to load its autosave", procs)
    n_loaded = int(re.search(r"recovered map \S+: (\d+) keyframes", procs.log("mapper")).group(1))
    h.wait_for(lambda: "re-sent" in procs.log("tracker")[seen:], 60, "the tracker to re-send", procs)
    assert f"re-sent keyframes {n_loaded}.." in procs.log("tracker")[seen:], procs.log("tracker")[-3000:]
    h.clear("path")
    after = _stream(h, frames[24:], t0, period=0.2)

    def same_map() -> bool:
        tracker, mapper = _status(h, "tracker_status"), _status(h, "mapper_status")
        return (
            tracker.get("processed", 0) >= 30
            and mapper.get("keyframes", -1) == tracker.get("keyframes")
            and mapper.get("session") == tracker.get("session")
        )

    h.wait_for(same_map, 60, "the mapper to hold the tracker's keyframes", procs)
    h.wait_for(
        lambda: h.messages("path") and {_stamp_ns(p) for p in h.messages("path")[-1].poses} & set(after),
        60,
        "a path with frames after the restart",
        procs,
    )
    path_stamps = {_stamp_ns(p) for p in h.messages("path")[-1].poses}
    logs = "\n".join(f"--- {n}:\n{procs.log(n)[-3000:]}" for n in ("tracker", "mapper"))
    assert path_stamps & set(before), "the recovered map lost the frames before the kill\n" + logs
    assert path_stamps & set(during), "the re-sent keyframes are missing (or lost their stamps)\n" + logs
    assert path_stamps <= set(before) | set(during) | set(after), logs
    assert "starting a new map" not in procs.log("mapper"), logs
    assert _status(h, "mapper_status")["session"] == _status(h, "tracker_status")["session"]


def _random_retrieval_files(folder: Path, backbone_dim: int) -> tuple[Path, Path]:
    """A random MASt3R retrieval head over ``backbone_dim`` tokens (the released file's layout) and a
    16-word codebook of its descriptor space: ``(checkpoint, codebook)``."""
    import torch
    from test_retrieval_head import _args, _save_ckpt

    from online3r_ros.retrieval.codebook import train_codebook
    from online3r_ros.retrieval.mast3r_head import RetrievalHead

    torch.manual_seed(0)
    head = RetrievalHead(backbone_dim, hdims=str(backbone_dim), nfeat=50)
    ckpt = _save_ckpt(
        folder / "twin_retrieval_trainingfree.pth", head, _args(hdims=str(backbone_dim), nfeat=50)
    )
    desc = torch.nn.functional.normalize(torch.randn(2000, backbone_dim), dim=1).numpy()
    codebook = folder / "twin_codebook.npz"
    train_codebook(desc, 16, seed=0, kind="mast3r").save(codebook)
    return ckpt, codebook


@pytest.mark.slow
def test_tuned_prompts_reach_the_tracker_and_outlive_the_mapper(session, tmp_path) -> None:
    """MASt3R source (a small random network whose two decoders are one, so a static camera tracks) with
    prompt tuning, a keyframe per frame, and the retrieval node on MASt3R retrieval features (a random head
    over the tuned encoder's tokens): the mapper tunes, saves the prompts with the map and sends them; the
    tracker uses them from its next frame (its status says which version) and keeps them, and keeps
    tracking, after the mapper is killed; the retrieval node indexes every keyframe throughout."""
    import torch
    from helpers_mast3r import P1_KWARGS

    from online3r_ros.model import build_mast3r
    from online3r_ros.model.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = build_mast3r(**P1_KWARGS).eval()
    with torch.no_grad():
        model.dec_blocks2.load_state_dict(model.dec_blocks.state_dict())
        model.downstream_head2.load_state_dict(model.downstream_head1.state_dict())
    ckpt = tmp_path / "twin.pth"
    save_checkpoint(ckpt, model.state_dict(), P1_KWARGS, layout="pth")
    head, codebook = _random_retrieval_files(tmp_path, P1_KWARGS["enc_embed_dim"])
    slam = {
        "source": {"kind": "mast3r", "checkpoint": str(ckpt), "img_size": 224},
        "tuning": {"enabled": True},
        "tracking": {"Q_conf": 0.0, "match_frac_thresh": 1.0},
        "local_opt": {"Q_conf": 0.0},
        "retrieval": {"features": "mast3r", "checkpoint": str(head), "codebook": str(codebook)},
    }
    procs, h = session(slam=slam, mapper={"prompts_path": str(tmp_path / "prompts.pt"), "autosave": False})
    for name in ("mapper", "retrieval", "tracker"):
        procs.start(name)
    frame = next(iter(_sequence(1)))
    h.wait_subscribers(timeout=120, procs=procs)
    t0 = time.time_ns()
    sent = 0

    def send(n: int) -> None:
        nonlocal sent
        for _ in range(n):
            h.publish_frame(frame, t0 + sent * 200_000_000)  # a static camera
            sent += 1
            time.sleep(0.2)

    send(3)
    h.wait_for(
        lambda: ((_status(h, "mapper_status").get("prompts") or {}).get("version") or 0) >= 1,
        180,
        "a tuned prompt version in the mapper",
        procs,
    )
    version = _status(h, "mapper_status")["prompts"]["version"]
    assert version >= 1 and _status(h, "mapper_status")["prompts"]["steps"] >= 1
    h.wait_for(
        lambda: _status(h, "tracker_status").get("prompt_version_received", 0) >= 1, 60, "prompts", procs
    )
    send(1)
    h.wait_for(
        lambda: _status(h, "tracker_status").get("prompt_version", 0) >= 1,
        60,
        "the tracker to use them",
        procs,
    )
    assert _call(h, "/mapper/save_prompts").success and (tmp_path / "prompts.pt").is_file()
    assert _call(h, "/mapper/save_map").success
    saved = torch.load(tmp_path / "map.pt", map_location="cpu", weights_only=False)["prompts"]
    assert saved is not None and saved["tensor"].shape == (2, 32, 64) and saved["version"] >= 1
    procs.stop("mapper", signal.SIGKILL)
    in_use = _status(h, "tracker_status")["prompt_version"]
    processed = _status(h, "tracker_status")["processed"]
    h.clear("pose")
    send(2)
    h.wait_for(lambda: len(h.messages("pose")) >= 2, 60, "poses with the mapper down", procs)
    h.wait_for(lambda: _status(h, "tracker_status").get("processed", 0) >= processed + 2, 30, "status", procs)
    assert _status(h, "tracker_status")["prompt_version"] == in_use >= 1
    keyframes = _status(h, "tracker_status")["keyframes"]
    h.wait_for(
        lambda: _status(h, "retrieval_status").get("keyframes_indexed", 0) >= keyframes,
        60,
        "the retrieval node to index every keyframe",
        procs,
    )
    assert _status(h, "retrieval_status").get("rejected", 0) == 0  # its vocabulary is MASt3R's: so were they
    for name in ("tracker", "retrieval"):
        assert "Traceback" not in procs.log(name), procs.log(name)[-3000:]


def _raw_image(height: int, width: int, encoding: str, stamp_ns: int, bytes_per_pixel: int = 3):
    from sensor_msgs.msg import Image

    from online3r_ros.ros.time import ns_to_stamp

    msg = Image()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = "camera_optical_frame"
    msg.height, msg.width, msg.encoding = height, width, encoding
    msg.step = width * bytes_per_pixel
    msg.data = bytes(height * width * bytes_per_pixel)
    return msg


def test_bad_input_gives_diagnostics_errors_and_the_node_keeps_running(session) -> None:
    procs, h = session()
    procs.start("tracker")
    frames = list(_sequence(10))
    h.wait_subscribers(procs=procs)
    t0 = time.time_ns()
    _stream(h, frames[:3], t0, period=0.3)
    h.wait_for(lambda: len(h.messages("pose")) >= 1, 20, "a first pose", procs)

    def stamp(i: int) -> int:
        return t0 + int(round(frames[i].timestamp * 1e9))

    def expect_error(text: str, n_before: int) -> None:
        h.wait_for(
            lambda: _status(h, "tracker_status").get("errors", 0) > n_before, 10, f"error '{text}'", procs
        )
        status = _status(h, "tracker_status")
        assert text in status["last_error"], status["last_error"]
        assert status["level"] == "ERROR"

    errors = _status(h, "tracker_status").get("errors", 0)
    # wrong encoding (YUV is not a colour encoding the conversion layer reads)
    h.publish_frame(frames[3], stamp(3), image_msg=_raw_image(H, W, "yuv422", stamp(3), 2))
    expect_error("encoding", errors)
    errors = _status(h, "tracker_status")["errors"]
    # zero size
    h.publish_frame(frames[4], stamp(4), image_msg=_raw_image(0, 0, "rgb8", stamp(4)))
    expect_error("ImageLayoutError", errors)
    errors = _status(h, "tracker_status")["errors"]
    # CameraInfo disagreeing with the image
    h.publish_frame(frames[5], stamp(5), info_size=(2 * W, 2 * H))
    expect_error("CameraInfo", errors)
    errors = _status(h, "tracker_status")["errors"]
    # the image size changes within the session
    small = frames[6].rgb[::2, ::2].copy()
    h.publish_frame(frames[6], stamp(6), rgb=small)
    expect_error("size changed", errors)
    errors = _status(h, "tracker_status")["errors"]
    # a row step that disagrees with the width
    bad_step = _raw_image(H, W, "rgb8", stamp(7))
    bad_step.step = 3 * W - 3
    h.publish_frame(frames[7], stamp(7), image_msg=bad_step)
    expect_error("step", errors)
    errors = _status(h, "tracker_status")["errors"]
    # a CameraInfo with fx < 0: reported when it arrives, and its frame gets no pose
    h.clear("pose")
    h.publish_frame(frames[8], stamp(8), info_fx=-100.0)
    expect_error("fx", errors)
    diag = h.messages("diagnostics")[-1].status[0]
    assert diag.level == b"\x02" and diag.name == "tracker: slam"
    log = procs.log("tracker")
    assert "encoding" in log and "CameraInfo" in log and "size changed" in log and "step" in log
    # still alive: a good frame is tracked
    h.publish_frame(frames[9], stamp(9))
    h.wait_for(lambda: h.messages("pose"), 15, "a pose after the bad input", procs)
    assert [_stamp_ns(m) for m in h.messages("pose")] == [stamp(9)]  # none for the bad CameraInfo's frame
    status = _status(h, "tracker_status")
    assert status["rejected_ImageLayoutError"] >= 2 and status["rejected_CameraInfoError"] >= 2, status
    assert procs.procs["tracker"].poll() is None


def test_time_going_backwards_starts_a_new_session(session) -> None:
    procs, h = session()
    procs.start("mapper")
    procs.start("tracker")
    frames = list(_sequence(10))
    h.wait_subscribers(procs=procs)
    t0 = time.time_ns()
    _stream(h, frames, t0, period=0.25)
    h.wait_for(lambda: _status(h, "tracker_status").get("processed", 0) >= 3, 20, "processed frames", procs)
    first = _status(h, "tracker_status")["session"]
    h.clear("pose")
    second = _stream(h, frames, t0, period=0.25)  # the bag loops: the same stamps again
    h.wait_for(lambda: _status(h, "tracker_status").get("resets", 0) >= 1, 15, "a reset", procs)
    h.wait_for(lambda: len(h.messages("pose")) >= 3, 15, "poses after the loop", procs)
    status = _status(h, "tracker_status")
    assert status["session"] != first and status["state"] == "tracking"
    assert {_stamp_ns(m) for m in h.messages("pose")} <= set(second)
    assert "time went backwards" in procs.log("tracker")
    h.wait_for(
        lambda: _status(h, "mapper_status").get("session") == status["session"],
        20,
        "the mapper's new map",
        procs,
    )
    # ~/reset of the mapper: the map is cleared and the tracker starts a new session
    assert _call(h, "/mapper/reset").success
    h.wait_for(lambda: _status(h, "tracker_status").get("resets", 0) >= 2, 15, "the tracker to follow", procs)
    assert _status(h, "tracker_status")["session"] != status["session"]


def test_invalid_parameter_is_rejected_at_start_naming_it(tmp_path, dds_domain) -> None:
    env = dict(os.environ, ROS_DOMAIN_ID=str(dds_domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    cmd = [
        sys.executable,
        "-m",
        "online3r_ros.ros.nodes.tracker",
        "--ros-args",
        "-p",
        "image_transport:=theora",
    ]
    try:
        res = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the tracker did not refuse to start")
    assert res.returncode == 2
    assert "parameter 'image_transport'" in res.stderr


def test_compressed_images_are_tracked(session) -> None:
    from sensor_msgs.msg import CompressedImage

    from online3r_ros.ros.compressed import numpy_to_compressed_image
    from online3r_ros.ros.qos import reliable_qos

    procs, h = session(tracker={"image_transport": "compressed", "image_topic": "image/compressed"})
    pub = h.node.create_publisher(CompressedImage, "image/compressed", reliable_qos(10))
    procs.start("tracker")
    frames = list(_sequence(4))
    h.wait_for(lambda: pub.get_subscription_count() > 0, 20, "the tracker's compressed subscription", procs)
    t0 = time.time_ns()
    sent = []
    for f in frames:
        stamp = t0 + int(round(f.timestamp * 1e9))
        dummy = _raw_image(1, 1, "rgb8", stamp)  # publish_frame sends info + depth; the image goes compressed
        h.publish_frame(f, stamp, image_msg=dummy)
        pub.publish(
            numpy_to_compressed_image(f.rgb, "rgb8", "jpeg", frame_id="camera_optical_frame", stamp=stamp)
        )
        sent.append(stamp)
        time.sleep(0.4)
    h.wait_for(lambda: len(h.messages("pose")) >= 2, 20, "poses from compressed images", procs)
    assert {_stamp_ns(m) for m in h.messages("pose")} <= set(sent)


def test_external_odometry_map_to_odom_is_the_correction(session) -> None:
    """Another node publishes odom -> base_link (offset O from the true motion): the tracker publishes no
    odom -> base_link, and map -> odom = O⁻¹ at every image stamp, also when the odometry of a stamp
    arrives after its image (every other frame here: the tracker waits for it, up to ``odom_wait``,
    instead of holding the previous sample, which is one frame's motion away). The stream waits for the first
    frame's pose: ``map`` is the base at the first processed image; one CI run failed with map -> odom one
    frame's motion off (0.75 deg), as when the second image supersedes the first before the tracker takes it
    (tracking itself is within 0.06 deg on these frames)."""
    from tf2_msgs.msg import TFMessage

    from online3r_ros.ros.pose import T_LINK_OPTICAL, invert, pose_to_matrix, tqs_to_matrix, transform_stamped
    from online3r_ros.ros.qos import tf_qos

    procs, h = session(tracker={"external_odometry": True, "odom_wait": 10.0})
    odom_pub = h.node.create_publisher(TFMessage, "/tf", tf_qos())
    procs.start("tracker")
    seq = _sequence(12)
    frames = list(seq)
    h.wait_subscribers(procs=procs)
    h.wait_for(lambda: odom_pub.get_subscription_count() > 1, 20, "the tracker's /tf subscription", procs)
    O = tqs_to_matrix([0.5, -0.2, 0.0], [0.0, 0.0, np.sin(0.2), np.cos(0.2)])
    T_bc, T_cb = T_LINK_OPTICAL, invert(T_LINK_OPTICAL)
    _, gt = seq.gt_trajectory()
    t0 = time.time_ns()
    stamps = []
    for i, f in enumerate(frames):
        stamp = t0 + int(round(f.timestamp * 1e9))
        T_odom_base = O @ T_bc @ invert(gt[0]) @ gt[i] @ T_cb
        odom = TFMessage(
            transforms=[
                transform_stamped(T_odom_base, "odom", "base_link", stamp=stamp + d)
                for d in (-5_000_000, 5_000_000)
            ]
        )
        late = i % 2 == 1
        if not late:
            odom_pub.publish(odom)
            time.sleep(0.05)
        h.publish_frame(f, stamp)
        if late:
            time.sleep(0.1)
            odom_pub.publish(odom)
        stamps.append(stamp)
        if i == 0:  # map is the base at the first processed image: it must be this one, not the next
            h.wait_for(lambda: h.messages("pose"), 30, "the first frame's pose", procs)
        time.sleep(0.25)

    def map_odom() -> list:
        return [
            t
            for m in h.messages("tf")
            for t in m.transforms
            if _stamp_ns(t) in set(stamps) and t.header.frame_id == "map"
        ]

    h.wait_for(
        lambda: len(h.messages("pose")) >= 6 and len(map_odom()) >= len(h.messages("pose")),
        60,
        "camera poses and their map -> odom",
        procs,
    )
    tfs = [t for m in h.messages("tf") for t in m.transforms if _stamp_ns(t) in set(stamps)]
    ours = map_odom()
    assert len(ours) >= 6 and _stamp_ns(h.messages("pose")[0]) == stamps[0]
    assert {_stamp_ns(t) for t in ours} == {_stamp_ns(m) for m in h.messages("pose")}
    assert not [t for t in tfs if t.header.frame_id == "odom" and _stamp_ns(t) in set(stamps)]
    for t in ours:
        np.testing.assert_allclose(pose_to_matrix(t), invert(O), atol=0.01)


def test_use_sim_time_latency_is_measured_on_the_ros_clock(session) -> None:
    """Bag replay: stamps far from the wall clock; with use_sim_time the latency uses /clock."""
    pytest.importorskip("rosgraph_msgs.msg", reason="rosgraph_msgs is not installed")
    from rosgraph_msgs.msg import Clock

    from online3r_ros.ros.time import ns_to_stamp

    procs, h = session(tracker={"use_sim_time": True, "diagnostics_period": 0.05})
    clock = h.node.create_publisher(Clock, "/clock", 10)
    procs.start("tracker")
    frames = list(_sequence(8))
    h.wait_subscribers(procs=procs)
    t0 = 1_000 * 1_000_000_000  # a bag recorded at t = 1000 s
    sent = []
    for f in frames:
        stamp = t0 + int(round(f.timestamp * 1e9))
        clock.publish(Clock(clock=ns_to_stamp(stamp + 20_000_000)))
        h.publish_frame(f, stamp)
        sent.append(stamp)
        for k in range(1, 6):  # the bag's clock keeps running while the frame is processed
            time.sleep(0.06)
            clock.publish(Clock(clock=ns_to_stamp(stamp + 20_000_000 + k * 5_000_000)))
    h.wait_for(lambda: _status(h, "tracker_status").get("processed", 0) >= 4, 20, "processed frames", procs)
    status = _status(h, "tracker_status")
    assert 0 < status["latency_ms"]["max"] < 500, status["latency_ms"]  # wall clock would give ~1.8e12 ms
    assert {_stamp_ns(m) for m in h.messages("pose")} <= set(sent)


def test_sigint_mid_stream_stops_both_nodes_cleanly(session) -> None:
    """Ctrl-C (or ``ros2 launch`` stopping) while frames are being processed: exit code 0, no
    'frame failed' / 'step failed' line (the workers stop before the rclpy context is torn down)."""
    procs, h = session()
    procs.start("mapper")
    procs.start("tracker")
    frames = list(_sequence(90))  # the tracker's second keyframe comes near frame 37
    h.wait_subscribers(procs=procs)
    t0 = time.time_ns()
    stamps = [t0 + int(round(f.timestamp * 1e9)) for f in frames]
    # first frame by frame (a loaded machine's busy tracker would take only the newest frames, and
    # relocalise on them instead of making keyframes), until the mapper has a keyframe edge to publish
    for f, stamp in zip(frames[:50], stamps[:50], strict=True):
        h.publish_frame(f, stamp)
        h.wait_for(lambda s=stamp: s in {_stamp_ns(m) for m in h.messages("pose")}, 30, "a pose", procs)
    h.wait_for(lambda: h.messages("map_updates"), 30, "the mapper's first map update", procs)
    stop_streaming = threading.Event()

    def keep_streaming() -> None:  # faster than the tracker: its worker is always busy with a frame
        for f, stamp in zip(frames[50:], stamps[50:], strict=True):
            if stop_streaming.is_set():
                return
            h.publish_frame(f, stamp)
            time.sleep(0.05)

    n_posed = len(h.messages("pose"))
    streamer = threading.Thread(target=keep_streaming, daemon=True)
    streamer.start()
    try:
        h.wait_for(lambda: len(h.messages("pose")) > n_posed, 30, "poses while streaming", procs)
        running = dict(procs.procs)
        for name in ("tracker", "mapper"):
            running[name].send_signal(signal.SIGINT)
        codes = {}
        for name, proc in running.items():
            try:
                codes[name] = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{name} did not stop within 20 s of SIGINT\n{procs.log(name)[-3000:]}")
    finally:
        stop_streaming.set()
        streamer.join(timeout=5)
    for name in ("tracker", "mapper"):
        log = procs.log(name)
        assert codes[name] == 0, f"{name} exit code {codes[name]}\n{log[-3000:]}"
        for bad in ("frame failed", "step failed", "Traceback", "RCLError", "context is invalid"):
            assert bad not in log, f"{name} logged {bad!r} when stopped:\n{log[-3000:]}"


@pytest.mark.parametrize(
    ("node", "problem"),
    [("tracker", "corrupt"), ("tracker", "missing"), ("mapper", "corrupt"), ("mapper", "missing")],
)
def test_bad_checkpoint_is_one_fatal_line_and_exit_code_1(tmp_path, dds_domain, node, problem) -> None:
    checkpoint = tmp_path / "model.pth"
    if problem == "corrupt":
        checkpoint.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)  # a zip header, then garbage
    env = dict(os.environ, ROS_DOMAIN_ID=str(dds_domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    cmd = [sys.executable, "-m", f"online3r_ros.ros.nodes.{node}", "--ros-args"]
    cmd += ["-p", "source:=mast3r", "-p", f"checkpoint:={checkpoint}"]
    try:
        res = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the {node} did not refuse to start")
    lines = [line for line in (res.stdout + res.stderr).splitlines() if line.strip()]
    assert res.returncode == 1, (res.returncode, lines)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"[{node}] FATAL: cannot load the MASt3R checkpoint: "), lines[0]
    assert str(checkpoint) in lines[0]
    assert ("not found" in lines[0]) == (problem == "missing"), lines[0]


@pytest.mark.slow
def test_a_mapper_killed_under_online3r_launch_respawns_while_odometry_keeps_flowing(tmp_path, dds_domain):
    """Issue 12: ``online3r launch`` (the real launcher and launch description), the mapper killed with
    SIGKILL mid-run: every frame streamed while it is down (within its 2 s respawn delay) gets odometry, the
    launcher starts it again, and the respawned mapper ends up holding the tracker's keyframes of the same
    session (its autosaved map reloaded, the rest re-sent)."""
    from test_launch import _children, _cmdline, _stop_launcher

    env = dict(os.environ, ROS_DOMAIN_ID=str(dds_domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    cmd = [sys.executable, "-m", "online3r_ros.cli.main", "launch", "--log-dir", str(tmp_path),
           "--grace", "15", "image:=image", "depth:=depth", "camera_info:=camera_info"]  # fmt: skip
    launcher = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    h = Harness(dds_domain)
    try:
        h.wait_subscribers(timeout=90)
        from online3r_ros.synthetic import make_synthetic_sequence

        frames = list(make_synthetic_sequence(n_frames=160, width=W, height=H, max_frames=60))  # 2.25 deg
        t0 = time.time_ns()
        _stream(h, frames[:25], t0, period=0.2)
        h.wait_for(
            lambda: _status(h, "mapper_status").get("keyframes", 0) >= 2,
            60,
            f"a map in the mapper (tracker: {_status(h, 'tracker_status')})",
        )
        h.wait_for(lambda: (tmp_path / "online3r_map.pt").is_file(), 30, "the mapper's autosave")
        mapper = [p for p in _children(launcher.pid) if "online3r_ros.ros.nodes.mapper" in _cmdline(p)]
        assert len(mapper) == 1
        os.kill(mapper[0], signal.SIGKILL)
        h.clear("odom")
        during = _stream(h, frames[25:33], t0, period=0.2)  # 1.6 s: within the respawn delay

        def odometry_while_down() -> bool:  # a loaded machine's tracker may drop a frame (takes the newest)
            return len({_stamp_ns(m) for m in h.messages("odom")} & set(during)) >= len(during) - 2

        h.wait_for(odometry_while_down, 30, "odometry while the mapper is down")
        mapper_log = tmp_path / "mapper.log"
        h.wait_for(lambda: mapper_log.read_text().count("ready") >= 2, 90, "the mapper to be started again")
        _stream(h, frames[33:], t0, period=0.2)

        def same_map() -> bool:
            tracker, mapper_st = _status(h, "tracker_status"), _status(h, "mapper_status")
            return (
                tracker.get("processed", 0) + tracker.get("dropped", 0) >= len(frames) - 2
                and mapper_st.get("keyframes", -1) == tracker.get("keyframes")
                and mapper_st.get("session") == tracker.get("session")
            )

        h.wait_for(same_map, 60, "the respawned mapper to hold the tracker's keyframes")
        assert launcher.poll() is None
        assert "recovered map online3r_map.pt" in mapper_log.read_text()  # autosave; the rest re-sent
        assert "starting a new map" not in mapper_log.read_text()
        os.killpg(launcher.pid, signal.SIGINT)
        out, _ = launcher.communicate(timeout=60)
    finally:
        h.close()
        _stop_launcher(launcher)
    text = out.decode(errors="replace")
    assert launcher.returncode == 0 and "respawning mapper in 2 s" in text, text[-3000:]
