"""sensor_msgs/PointCloud2 <-> numpy: round trips, the field layout rviz reads, foreign layouts, bad input."""

from __future__ import annotations

import struct

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed (run scripts/setup.sh)")
sensor_msgs = pytest.importorskip("sensor_msgs.msg", reason="sensor_msgs is not installed")

from online3r_ros.ros.errors import PointCloudError  # noqa: E402
from online3r_ros.ros.pointcloud import (  # noqa: E402
    numpy_to_pointcloud2,
    pack_rgb,
    pointcloud2_to_numpy,
    read_points,
    unpack_rgb,
)

pytestmark = pytest.mark.ros
PF = sensor_msgs.PointField


def _cloud(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xyz = rng.normal(size=(n, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, size=(n, 3), dtype=np.uint8)
    conf = rng.uniform(0, 10, size=n).astype(np.float32)
    return xyz, rgb, conf


def test_round_trip_xyz_rgb_confidence_bit_exact() -> None:
    xyz, rgb, conf = _cloud(np.random.default_rng(0), 1001)
    msg = numpy_to_pointcloud2(xyz, rgb, conf, frame_id="map", stamp=3_500_000_000)
    out = pointcloud2_to_numpy(msg)
    assert out.xyz.dtype == np.float32 and out.rgb.dtype == np.uint8 and out.confidence.dtype == np.float32
    np.testing.assert_array_equal(out.xyz, xyz)
    np.testing.assert_array_equal(out.rgb, rgb)
    np.testing.assert_array_equal(out.confidence, conf)
    assert (msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec) == ("map", 3, 500_000_000)


def test_field_layout_as_rviz_reads_it() -> None:
    xyz = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32)
    rgb = np.array([[255, 128, 1], [0, 10, 200]], np.uint8)
    conf = np.array([0.5, 2.0], np.float32)
    msg = numpy_to_pointcloud2(xyz, rgb, conf)
    layout = [(f.name, f.offset, f.datatype, f.count) for f in msg.fields]
    assert layout == [
        ("x", 0, PF.FLOAT32, 1),
        ("y", 4, PF.FLOAT32, 1),
        ("z", 8, PF.FLOAT32, 1),
        ("rgb", 12, PF.FLOAT32, 1),
        ("confidence", 16, PF.FLOAT32, 1),
    ]
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 2, 20, 40)
    assert msg.is_bigendian is False and msg.is_dense is True
    data = bytes(msg.data)
    assert len(data) == 40
    # decode the first point with struct exactly as rviz does: rgb float reinterpreted as uint32 0x00RRGGBB
    x, y, z, rgb_bits, c = struct.unpack_from("<fffIf", data, 0)
    assert (x, y, z, c) == (1.0, 2.0, 3.0, 0.5)
    assert rgb_bits == 0x00FF8001
    assert data[12:16] == bytes([0x01, 0x80, 0xFF, 0x00])  # little endian: B, G, R, 0
    assert struct.unpack_from("<I", data, 20 + 12)[0] == 0x00000AC8


def test_layout_without_optional_fields() -> None:
    xyz = np.zeros((3, 3), np.float32)
    only_xyz = numpy_to_pointcloud2(xyz)
    assert [f.name for f in only_xyz.fields] == ["x", "y", "z"] and only_xyz.point_step == 12
    out = pointcloud2_to_numpy(only_xyz)
    assert out.rgb is None and out.confidence is None
    with_conf = numpy_to_pointcloud2(xyz, confidence=np.ones(3))
    assert [(f.name, f.offset) for f in with_conf.fields][-1] == ("confidence", 12)
    assert with_conf.point_step == 16
    np.testing.assert_array_equal(pointcloud2_to_numpy(with_conf).confidence, np.ones(3, np.float32))


def test_organised_cloud_keeps_height_width_and_nans() -> None:
    rng = np.random.default_rng(1)
    xyz = rng.normal(size=(4, 5, 3)).astype(np.float32)
    xyz[1, 2] = np.nan
    rgb = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    msg = numpy_to_pointcloud2(xyz, rgb, frame_id="camera_optical_frame")
    assert (msg.height, msg.width, msg.row_step) == (4, 5, 5 * 16)
    assert msg.is_dense is False
    organised = pointcloud2_to_numpy(msg, keep_organised=True)
    assert organised.xyz.shape == (4, 5, 3) and organised.rgb.shape == (4, 5, 3)
    np.testing.assert_array_equal(organised.xyz, xyz)  # NaN positions equal too
    np.testing.assert_array_equal(organised.rgb, rgb)
    flat = pointcloud2_to_numpy(msg, skip_nans=True)
    assert flat.xyz.shape == (19, 3)
    np.testing.assert_array_equal(flat.rgb, np.delete(rgb.reshape(-1, 3), 7, axis=0))
    with pytest.raises(ValueError):
        pointcloud2_to_numpy(msg, keep_organised=True, skip_nans=True)


def test_float64_input_is_cast_and_empty_cloud_works() -> None:
    xyz64 = np.array([[0.1, 0.2, 0.3]])
    out = pointcloud2_to_numpy(numpy_to_pointcloud2(xyz64))
    np.testing.assert_array_equal(out.xyz, xyz64.astype(np.float32))
    empty = numpy_to_pointcloud2(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8))
    assert (empty.width, len(empty.data), empty.is_dense) == (0, 0, True)
    back = pointcloud2_to_numpy(empty)
    assert back.xyz.shape == (0, 3) and back.rgb.shape == (0, 3)


def test_pack_unpack_rgb_inverse() -> None:
    rgb = np.random.default_rng(2).integers(0, 256, size=(64, 3), dtype=np.uint8)
    packed = pack_rgb(rgb)
    assert packed.dtype == np.uint32 and (packed >> 24 == 0).all()
    np.testing.assert_array_equal(unpack_rgb(packed), rgb)
    np.testing.assert_array_equal(unpack_rgb(packed.view(np.float32)), rgb)


def _foreign_cloud(
    big: bool, row_pad: int
) -> tuple[sensor_msgs.PointCloud2, np.ndarray, np.ndarray, np.ndarray]:
    """A cloud as another driver might write it: intensity first, float64 z, uint32 rgba, padding."""
    rng = np.random.default_rng(3)
    height, width = 2, 3
    order = ">" if big else "<"
    dtype = np.dtype(
        {
            "names": ["intensity", "x", "y", "z", "rgba", "confidence"],
            "formats": [order + "f4", order + "f4", order + "f4", order + "f8", order + "u4", order + "f4"],
            "offsets": [0, 4, 8, 16, 24, 28],
            "itemsize": 36,
        }
    )
    points = np.zeros((height, width), dtype)
    xyz = rng.normal(size=(height, width, 3))
    rgb = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    conf = rng.uniform(size=(height, width)).astype(np.float32)
    points["x"], points["y"], points["z"] = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    points["rgba"] = pack_rgb(rgb) | np.uint32(0xFF000000)
    points["confidence"] = conf
    rows = points.view(np.uint8).reshape(height, width * 36)
    data = np.concatenate([rows, np.zeros((height, row_pad), np.uint8)], axis=1)
    msg = sensor_msgs.PointCloud2()
    msg.height, msg.width = height, width
    msg.fields = [
        PF(name="intensity", offset=0, datatype=PF.FLOAT32, count=1),
        PF(name="x", offset=4, datatype=PF.FLOAT32, count=1),
        PF(name="y", offset=8, datatype=PF.FLOAT32, count=1),
        PF(name="z", offset=16, datatype=PF.FLOAT64, count=1),
        PF(name="rgba", offset=24, datatype=PF.UINT32, count=1),
        PF(name="confidence", offset=28, datatype=PF.FLOAT32, count=1),
    ]
    msg.is_bigendian = big
    msg.point_step = 36
    msg.row_step = width * 36 + row_pad
    msg.data = data.tobytes()
    expected_xyz = np.stack(
        [xyz[..., 0].astype(np.float32), xyz[..., 1].astype(np.float32), xyz[..., 2].astype(np.float32)], -1
    )
    return msg, expected_xyz, rgb, conf


@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize("row_pad", [0, 5])
def test_reads_foreign_layouts(big: bool, row_pad: int) -> None:
    msg, xyz, rgb, conf = _foreign_cloud(big, row_pad)
    out = pointcloud2_to_numpy(msg, keep_organised=True)
    np.testing.assert_array_equal(out.xyz, xyz)
    np.testing.assert_array_equal(out.rgb, rgb)
    np.testing.assert_array_equal(out.confidence, conf)
    view = read_points(msg)
    assert view.shape == (2, 3) and set(view.dtype.names) >= {"intensity", "rgba"}
    assert not view.flags.writeable


def test_reads_separate_rgb_fields_and_count() -> None:
    msg = sensor_msgs.PointCloud2()
    msg.height, msg.width = 1, 2
    msg.fields = [
        PF(name="x", offset=0, datatype=PF.FLOAT32, count=1),
        PF(name="y", offset=4, datatype=PF.FLOAT32, count=1),
        PF(name="z", offset=8, datatype=PF.FLOAT32, count=1),
        PF(name="r", offset=12, datatype=PF.UINT8, count=1),
        PF(name="g", offset=13, datatype=PF.UINT8, count=1),
        PF(name="b", offset=14, datatype=PF.UINT8, count=1),
        PF(name="normal", offset=16, datatype=PF.FLOAT32, count=3),
    ]
    msg.point_step, msg.row_step = 28, 56
    msg.data = struct.pack("<fffBBBx3f", 1, 2, 3, 10, 20, 30, 0, 0, 1) + struct.pack(
        "<fffBBBx3f", 4, 5, 6, 40, 50, 60, 1, 0, 0
    )
    out = pointcloud2_to_numpy(msg)
    np.testing.assert_array_equal(out.xyz, [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(out.rgb, [[10, 20, 30], [40, 50, 60]])
    assert read_points(msg)["normal"].shape == (1, 2, 3)


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_input_arrays_raise() -> None:
    xyz = np.zeros((4, 3), np.float32)
    with pytest.raises(PointCloudError, match="xyz"):
        numpy_to_pointcloud2(np.zeros((4, 2), np.float32))
    with pytest.raises(PointCloudError, match="xyz"):
        numpy_to_pointcloud2(np.zeros((4, 3), bool))
    with pytest.raises(PointCloudError, match="rgb") as err:
        numpy_to_pointcloud2(
            xyz, rgb=np.zeros((4, 3), np.float32)
        )  # floats in [0, 1] would be silently wrong
    assert err.value.fields["rgb_dtype"] == "float32"
    with pytest.raises(PointCloudError, match="rgb"):
        numpy_to_pointcloud2(xyz, rgb=np.zeros((5, 3), np.uint8))
    with pytest.raises(PointCloudError, match="confidence"):
        numpy_to_pointcloud2(xyz, confidence=np.zeros(3))
    with pytest.raises(PointCloudError):
        pack_rgb(np.zeros((2, 4), np.uint8))


def test_bad_message_layout_raises() -> None:
    good = numpy_to_pointcloud2(np.zeros((4, 3), np.float32), np.zeros((4, 3), np.uint8))

    def broken(**changes):
        msg = numpy_to_pointcloud2(np.zeros((4, 3), np.float32), np.zeros((4, 3), np.uint8))
        for key, value in changes.items():
            setattr(msg, key, value)
        return msg

    with pytest.raises(PointCloudError, match="data length") as err:
        pointcloud2_to_numpy(broken(data=bytes(good.data)[:-1]))
    assert err.value.fields["expected"] == 64
    with pytest.raises(PointCloudError, match="row_step"):
        pointcloud2_to_numpy(broken(row_step=60))
    with pytest.raises(PointCloudError, match="point_step"):
        pointcloud2_to_numpy(broken(point_step=0))
    with pytest.raises(PointCloudError, match="fit inside point_step"):
        pointcloud2_to_numpy(broken(point_step=12, row_step=48, data=bytes(48)))
    fields = list(good.fields)
    fields[1] = PF(name="y", offset=4, datatype=42, count=1)
    with pytest.raises(PointCloudError, match="datatype") as err:
        pointcloud2_to_numpy(broken(fields=fields))
    assert err.value.fields == {"field": "y", "datatype": 42}
    with pytest.raises(PointCloudError, match="lacks coordinate"):
        pointcloud2_to_numpy(broken(fields=[good.fields[0], good.fields[1], good.fields[3]]))
    dup = [
        good.fields[0],
        good.fields[1],
        good.fields[2],
        PF(name="x", offset=12, datatype=PF.FLOAT32, count=1),
    ]
    with pytest.raises(PointCloudError, match="duplicate"):
        pointcloud2_to_numpy(broken(fields=dup))
    rgb16 = list(good.fields)
    rgb16[3] = PF(name="rgb", offset=12, datatype=PF.UINT16, count=1)
    with pytest.raises(PointCloudError, match="rgb field"):
        pointcloud2_to_numpy(broken(fields=rgb16))
