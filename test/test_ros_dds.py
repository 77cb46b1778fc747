"""Cross-process test over real Fast DDS: a child process publishes Image (colour, padded rows), Image (depth,
big endian), CameraInfo, an organised PointCloud2 and TF (``/tf`` + latched ``/tf_static``) with the project's
QoS profiles; this process subscribes with the same profiles and checks every message bit for bit (every
field, payload bytes included) and after conversion back to numpy.

Isolation: both processes get ``ROS_DOMAIN_ID`` derived from this process id (1..100) and
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``. Every wait is bounded and the child is always terminated.

The file doubles as the child: ``python test/test_ros_dds.py --publisher-child``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed (run scripts/setup.sh)")
pytest.importorskip("sensor_msgs.msg", reason="sensor_msgs is not installed")
pytest.importorskip("geometry_msgs.msg", reason="geometry_msgs is not installed")

from online3r_ros.ros.camera_info import Intrinsics, camera_info_to_intrinsics, intrinsics_to_camera_info  # noqa: E402
from online3r_ros.ros.image import image_to_numpy, numpy_to_image  # noqa: E402
from online3r_ros.ros.pointcloud import numpy_to_pointcloud2, pointcloud2_to_numpy  # noqa: E402
from online3r_ros.ros.pose import T_LINK_OPTICAL, pose_to_matrix, tqs_to_matrix, transform_stamped  # noqa: E402
from online3r_ros.ros.tf import tf2_msgs_available  # noqa: E402

pytestmark = pytest.mark.ros

CHILD_FLAG = "--publisher-child"
CHILD_LIFETIME_S = 25.0  # the child exits on its own even if the parent dies
READY_TIMEOUT_S = 10.0
RECEIVE_TIMEOUT_S = 12.0
STAMP_NS = 1_700_000_000_123_456_789
TOPICS = {
    "image": "dds_test/image",
    "depth": "dds_test/depth",
    "info": "dds_test/camera_info",
    "cloud": "dds_test/cloud",
}


def payload() -> dict[str, Any]:
    """Deterministic messages both processes build identically."""
    rng = np.random.default_rng(1234)
    rgb = rng.integers(0, 256, size=(17, 31, 3), dtype=np.uint8)  # odd width
    depth = rng.uniform(0.2, 8.0, size=(17, 31)).astype(np.float32)
    depth[3, 4] = np.nan
    xyz = rng.normal(size=(12, 20, 3)).astype(np.float32)
    xyz[0, :5] = np.nan
    colours = rng.integers(0, 256, size=(12, 20, 3), dtype=np.uint8)
    conf = rng.uniform(1.0, 5.0, size=(12, 20)).astype(np.float32)
    intr = Intrinsics(
        width=31,
        height=17,
        K=[[20.5, 0, 15.0], [0, 20.25, 8.0], [0, 0, 1]],
        distortion_model="plumb_bob",
        D=[0.1, -0.05, 0.001, 0.0, 0.01],
        frame_id="camera_optical_frame",
    )
    T_base_link = tqs_to_matrix([0.2, 0.0, 0.5], [0.0, 0.0, 0.0, 1.0])
    T_link_optical = T_LINK_OPTICAL
    T_odom_base = tqs_to_matrix([1.5, -0.25, 0.0], [0.0, 0.0, np.sin(0.35), np.cos(0.35)])
    optical = "camera_optical_frame"
    return {
        "arrays": {"rgb": rgb, "depth": depth, "xyz": xyz, "colours": colours, "conf": conf},
        "intrinsics": intr,
        "image": numpy_to_image(rgb, "rgb8", frame_id=optical, stamp=STAMP_NS, step=31 * 3 + 5),
        "depth": numpy_to_image(depth, "32FC1", frame_id=optical, stamp=STAMP_NS, is_bigendian=True),
        "info": intrinsics_to_camera_info(intr, stamp=STAMP_NS),
        "cloud": numpy_to_pointcloud2(xyz, colours, conf, frame_id="map", stamp=STAMP_NS),
        "static": [
            transform_stamped(T_base_link, "base_link", "camera_link", stamp=STAMP_NS),
            transform_stamped(T_link_optical, "camera_link", "camera_optical_frame", stamp=STAMP_NS),
        ],
        "dynamic": transform_stamped(T_odom_base, "odom", "base_link", stamp=STAMP_NS),
    }


def run_publisher_child() -> None:
    """Child process: publish everything until killed (or CHILD_LIFETIME_S)."""
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from online3r_ros.ros.qos import map_qos, sensor_data_qos

    msgs = payload()
    rclpy.init(domain_id=int(os.environ["ROS_DOMAIN_ID"]))  # set by the parent
    node = rclpy.create_node("online3r_dds_test_publisher")
    pubs = {
        "image": node.create_publisher(Image, TOPICS["image"], sensor_data_qos()),
        "depth": node.create_publisher(Image, TOPICS["depth"], sensor_data_qos()),
        "info": node.create_publisher(CameraInfo, TOPICS["info"], sensor_data_qos()),
        "cloud": node.create_publisher(PointCloud2, TOPICS["cloud"], map_qos()),
    }
    broadcaster = None
    if tf2_msgs_available():
        from online3r_ros.ros.tf import TfBroadcaster

        broadcaster = TfBroadcaster(node)
        for static in msgs["static"]:  # two calls: the latched message must accumulate both
            broadcaster.send_static_transform(static)
    pubs["cloud"].publish(msgs["cloud"])  # latched once, never repeated
    print("publisher ready", flush=True)
    deadline = time.monotonic() + CHILD_LIFETIME_S
    try:
        while time.monotonic() < deadline:
            for key in ("image", "depth", "info"):
                pubs[key].publish(msgs[key])
            if broadcaster is not None:
                broadcaster.send_transform(msgs["dynamic"])
            rclpy.spin_once(node, timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # terminated by the parent
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


@pytest.fixture(scope="module")
def received(dds_domain_module: int) -> dict[str, Any]:
    """Start the child; once it published the latched messages, subscribe here and collect one of each."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from online3r_ros.ros.qos import map_qos, sensor_data_qos, tf_qos, tf_static_qos

    env = dict(os.environ, ROS_DOMAIN_ID=str(dds_domain_module), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    with_tf = tf2_msgs_available()
    log = tempfile.TemporaryFile()
    command = [sys.executable, str(Path(__file__).resolve()), CHILD_FLAG]
    child = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    got: dict[str, Any] = {}
    mp = pytest.MonkeyPatch()
    context = rclpy.Context()
    try:
        # subscribe only once the child has published its latched messages: exercises transient-local
        ready_deadline = time.monotonic() + READY_TIMEOUT_S
        while b"publisher ready" not in os.pread(log.fileno(), 1 << 16, 0):
            if time.monotonic() > ready_deadline or child.poll() is not None:
                break
            time.sleep(0.05)
        mp.setenv("ROS_DOMAIN_ID", env["ROS_DOMAIN_ID"])
        mp.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        rclpy.init(context=context, domain_id=dds_domain_module)
        node = rclpy.create_node("online3r_dds_test_subscriber", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)

        def keep(key: str):
            return lambda msg: got.setdefault(key, msg)

        subs = [
            node.create_subscription(Image, TOPICS["image"], keep("image"), sensor_data_qos()),
            node.create_subscription(Image, TOPICS["depth"], keep("depth"), sensor_data_qos()),
            node.create_subscription(CameraInfo, TOPICS["info"], keep("info"), sensor_data_qos()),
            node.create_subscription(PointCloud2, TOPICS["cloud"], keep("cloud"), map_qos()),
        ]
        expected_keys = {"image", "depth", "info", "cloud"}
        if with_tf:
            from tf2_msgs.msg import TFMessage

            subs.append(node.create_subscription(TFMessage, "/tf", keep("tf"), tf_qos()))
            subs.append(node.create_subscription(TFMessage, "/tf_static", keep("tf_static"), tf_static_qos()))
            expected_keys |= {"tf", "tf_static"}
        deadline = time.monotonic() + RECEIVE_TIMEOUT_S
        while not expected_keys <= got.keys() and time.monotonic() < deadline and child.poll() is None:
            executor.spin_once(timeout_sec=0.05)
        executor.shutdown()
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
        mp.undo()
        child.terminate()
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=5)
        log.seek(0)
        got["_child_log"] = log.read().decode(errors="replace")[-4000:]
        log.close()
    got["_with_tf"] = with_tf
    return got


def _assert_identical(got: Any, sent: Any) -> None:
    """Field-by-field equality (generated ``__eq__``), with ``uint8[]`` payloads compared as raw bytes.

    (Comparing re-serialised CDR bytes is not reliable: CDR alignment padding is not zero-filled.)
    """
    assert type(got) is type(sent)
    if hasattr(sent, "data"):
        assert bytes(got.data) == bytes(sent.data)
    assert got == sent


def _require(received: dict[str, Any], key: str) -> Any:
    if key not in received:
        log = received["_child_log"]
        pytest.fail(f"no {key!r} message arrived within {RECEIVE_TIMEOUT_S} s; child log:\n{log}")
    return received[key]


@pytest.mark.parametrize("key", ["image", "depth", "info", "cloud"])
def test_message_arrives_bit_for_bit(received: dict[str, Any], key: str) -> None:
    _assert_identical(_require(received, key), payload()[key])


def test_images_decode_to_the_published_arrays(received: dict[str, Any]) -> None:
    arrays = payload()["arrays"]
    image = _require(received, "image")
    assert image.step == 31 * 3 + 5
    np.testing.assert_array_equal(image_to_numpy(image), arrays["rgb"])
    depth = _require(received, "depth")
    assert depth.is_bigendian == 1
    decoded = image_to_numpy(depth)
    assert decoded.tobytes() == arrays["depth"].tobytes()  # NaN bits included


def test_camera_info_decodes_to_the_published_intrinsics(received: dict[str, Any]) -> None:
    intr = camera_info_to_intrinsics(_require(received, "info"), image_size=(31, 17))
    expected = payload()["intrinsics"]
    for name in ("K", "D", "R", "P"):
        np.testing.assert_array_equal(getattr(intr, name), getattr(expected, name))
    assert intr.frame_id == "camera_optical_frame"


def test_latched_cloud_decodes_to_the_published_arrays(received: dict[str, Any]) -> None:
    arrays = payload()["arrays"]
    cloud = pointcloud2_to_numpy(_require(received, "cloud"), keep_organised=True)
    assert cloud.xyz.tobytes() == arrays["xyz"].tobytes()
    np.testing.assert_array_equal(cloud.rgb, arrays["colours"])
    np.testing.assert_array_equal(cloud.confidence, arrays["conf"])


def test_tf_and_latched_tf_static(received: dict[str, Any]) -> None:
    if not received["_with_tf"]:
        pytest.skip(
            "tf2_msgs is not importable: it is built into .venv by the setup step (scripts/setup.sh) "
            "and needs the environment set by .venv/bin/activate"
        )
    expected = payload()
    tf = _require(received, "tf")
    assert len(tf.transforms) == 1
    _assert_identical(tf.transforms[0], expected["dynamic"])
    np.testing.assert_allclose(pose_to_matrix(tf.transforms[0]), pose_to_matrix(expected["dynamic"]), atol=0)
    static = _require(received, "tf_static")
    by_child = {t.child_frame_id: t for t in static.transforms}
    assert set(by_child) == {"camera_link", "camera_optical_frame"}  # accumulated in one latched message
    for sent in expected["static"]:
        _assert_identical(by_child[sent.child_frame_id], sent)


if __name__ == "__main__" and CHILD_FLAG in sys.argv:
    run_publisher_child()
