"""The readers are duck-typed: messages from ``rosbags`` (pure Python, no ROS install) convert too, and the
reading modules import without rclpy or any ROS message package (for bag replay / evaluation tools)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

rosbags_typesys = pytest.importorskip("rosbags.typesys", reason="rosbags is not installed")


@pytest.fixture(scope="module")
def types():
    return rosbags_typesys.get_typestore(rosbags_typesys.Stores.ROS2_HUMBLE).types


def _header(types, frame_id: str = "cam"):
    stamp = types["builtin_interfaces/msg/Time"](sec=12, nanosec=345)
    return types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def test_rosbags_image_and_depth(types) -> None:
    from online3r_ros.ros.image import depth_image_to_metres, image_to_numpy
    from online3r_ros.ros.time import stamp_to_ns

    pixels = np.arange(3 * 5, dtype=np.uint16).reshape(3, 5) * 1000
    raw = pixels.astype(">u2").view(np.uint8).reshape(3, 10)
    data = np.concatenate([raw, np.zeros((3, 2), np.uint8)], axis=1).reshape(-1)
    msg = types["sensor_msgs/msg/Image"](
        header=_header(types), height=3, width=5, encoding="16UC1", is_bigendian=1, step=12, data=data
    )
    np.testing.assert_array_equal(image_to_numpy(msg), pixels)
    np.testing.assert_allclose(depth_image_to_metres(msg), pixels / 1000.0, rtol=1e-6)
    assert stamp_to_ns(msg.header.stamp) == 12_000_000_345


def test_rosbags_camera_info_pointcloud_and_pose(types) -> None:
    from online3r_ros.ros.camera_info import camera_info_to_intrinsics
    from online3r_ros.ros.pointcloud import pack_rgb, pointcloud2_to_numpy
    from online3r_ros.ros.pose import pose_to_matrix

    roi = types["sensor_msgs/msg/RegionOfInterest"](
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
    )
    info = types["sensor_msgs/msg/CameraInfo"](
        header=_header(types),
        height=480,
        width=640,
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=np.array([500.0, 0, 320, 0, 500, 240, 0, 0, 1]),
        r=np.eye(3).reshape(-1),
        p=np.array([500.0, 0, 320, 0, 0, 500, 240, 0, 0, 0, 1, 0]),
        binning_x=0,
        binning_y=0,
        roi=roi,
    )
    intr = camera_info_to_intrinsics(info, image_size=(640, 480))
    assert (intr.fx, intr.cy, intr.frame_id) == (500.0, 240.0, "cam")

    field = types["sensor_msgs/msg/PointField"]
    xyz = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    rgb = np.array([[1, 2, 3], [250, 128, 0]], np.uint8)
    points = np.zeros((2, 4), np.float32)
    points[:, :3] = xyz
    points.view(np.uint32)[:, 3] = pack_rgb(rgb)
    cloud = types["sensor_msgs/msg/PointCloud2"](
        header=_header(types, "map"),
        height=1,
        width=2,
        fields=[field(name=n, offset=4 * i, datatype=7, count=1) for i, n in enumerate("xyz")]
        + [field(name="rgb", offset=12, datatype=7, count=1)],
        is_bigendian=False,
        point_step=16,
        row_step=32,
        data=points.view(np.uint8).reshape(-1),
        is_dense=True,
    )
    out = pointcloud2_to_numpy(cloud)
    np.testing.assert_array_equal(out.xyz, xyz)
    np.testing.assert_array_equal(out.rgb, rgb)

    vec = types["geometry_msgs/msg/Vector3"](x=1.0, y=2.0, z=3.0)
    quat = types["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=1.0, w=0.0)
    tr = types["geometry_msgs/msg/TransformStamped"](
        header=_header(types, "map"),
        child_frame_id="odom",
        transform=types["geometry_msgs/msg/Transform"](translation=vec, rotation=quat),
    )
    np.testing.assert_allclose(pose_to_matrix(tr), [[-1, 0, 0, 1], [0, -1, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]])


def test_readers_import_without_rclpy_or_message_packages() -> None:
    script = textwrap.dedent(
        """
        import sys
        for name in ("rclpy", "sensor_msgs", "sensor_msgs.msg", "geometry_msgs", "geometry_msgs.msg",
                     "std_msgs", "std_msgs.msg", "builtin_interfaces", "builtin_interfaces.msg",
                     "nav_msgs", "nav_msgs.msg", "tf2_msgs", "tf2_msgs.msg"):
            sys.modules[name] = None  # any import of these now fails
        import numpy as np
        import online3r_ros
        import online3r_ros.ros
        from online3r_ros.ros import camera_info, compressed, errors, image, pointcloud, pose, time
        class Img:
            height, width, encoding, is_bigendian, step = 1, 2, "mono8", 0, 2
            data = np.array([7, 9], np.uint8)
        assert image.image_to_numpy(Img()).tolist() == [[7, 9]]
        assert pose.quat_to_matrix([0, 0, 0, 1]).tolist() == np.eye(3).tolist()
        try:
            image.numpy_to_image(np.zeros((1, 1), np.uint8), "mono8")
        except ImportError:
            pass
        else:
            raise AssertionError("building a message must need sensor_msgs")
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
