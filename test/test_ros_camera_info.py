"""sensor_msgs/CameraInfo <-> Intrinsics, rectification maps, edge cases."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed (run scripts/setup.sh)")
sensor_msgs = pytest.importorskip("sensor_msgs.msg", reason="sensor_msgs is not installed")
cv2 = pytest.importorskip("cv2")

from online3r_ros.ros.camera_info import (  # noqa: E402
    Intrinsics,
    camera_info_to_intrinsics,
    check_image_size,
    intrinsics_to_camera_info,
    rectify_image,
    rectify_maps,
)
from online3r_ros.ros.errors import CameraInfoError  # noqa: E402

pytestmark = pytest.mark.ros

K = [[525.0, 0.0, 319.5], [0.0, 524.0, 239.5], [0.0, 0.0, 1.0]]


def _info(**overrides) -> sensor_msgs.CameraInfo:
    msg = sensor_msgs.CameraInfo()
    msg.header.frame_id = "camera_optical_frame"
    msg.width, msg.height = 640, 480
    msg.distortion_model = "plumb_bob"
    msg.d = [0.1, -0.2, 0.001, 0.002, 0.05]
    msg.k = [v for row in K for v in row]
    msg.r = [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
    msg.p = [525.0, 0, 319.5, 0, 0, 524.0, 239.5, 0, 0, 0, 1.0, 0]
    for key, value in overrides.items():
        setattr(msg, key, value)
    return msg


def test_camera_info_to_intrinsics_fields() -> None:
    intr = camera_info_to_intrinsics(_info())
    assert (intr.width, intr.height, intr.frame_id) == (640, 480, "camera_optical_frame")
    np.testing.assert_array_equal(intr.K, K)
    assert (intr.fx, intr.fy, intr.cx, intr.cy) == (525.0, 524.0, 319.5, 239.5)
    np.testing.assert_array_equal(intr.D, [0.1, -0.2, 0.001, 0.002, 0.05])
    assert intr.distortion_model == "plumb_bob" and intr.is_distorted
    np.testing.assert_array_equal(intr.P[:, :3], K)


def test_round_trip_through_camera_info_message() -> None:
    intr = Intrinsics(
        width=752, height=480, K=np.array(K), distortion_model="equidistant", D=[0.01, -0.02, 0.003, -0.001]
    )
    msg = intrinsics_to_camera_info(intr, frame_id="cam", stamp=5_000_000_001)
    assert (msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec) == ("cam", 5, 1)
    back = camera_info_to_intrinsics(msg)
    for name in ("K", "D", "R", "P"):
        np.testing.assert_array_equal(getattr(back, name), getattr(intr, name))
    assert (back.width, back.height, back.distortion_model) == (752, 480, "equidistant")


def test_unset_r_and_p_default_to_identity_and_k() -> None:
    intr = camera_info_to_intrinsics(_info(r=[0.0] * 9, p=[0.0] * 12))
    np.testing.assert_array_equal(intr.R, np.eye(3))
    np.testing.assert_array_equal(intr.P, np.hstack([np.array(K), np.zeros((3, 1))]))


def test_binning_and_roi_adjust_intrinsics() -> None:
    msg = _info(binning_x=2, binning_y=2)
    msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height = 100, 40, 320, 240
    intr = camera_info_to_intrinsics(msg)
    assert (intr.width, intr.height) == (160, 120)
    np.testing.assert_allclose(intr.K, [[262.5, 0, 109.75], [0, 262.0, 99.75], [0, 0, 1]])
    msg.roi.x_offset = 400  # 400 + 320 > 640
    with pytest.raises(CameraInfoError, match="ROI"):
        camera_info_to_intrinsics(msg)


def test_scaled_intrinsics_pixel_centre_convention() -> None:
    intr = Intrinsics.from_pinhole(500.0, 500.0, 319.5, 239.5, 640, 480)
    half = intr.scaled(320, 240)
    assert (half.fx, half.fy, half.cx, half.cy) == (250.0, 250.0, 159.5, 119.5)


@pytest.mark.parametrize(("fx", "fy"), [(0.0, 524.0), (525.0, 0.0), (-1.0, 524.0), (np.nan, 524.0)])
def test_non_positive_focal_length_raises_naming_values(fx: float, fy: float) -> None:
    k = [fx, 0, 319.5, 0, fy, 239.5, 0, 0, 1]
    with pytest.raises(CameraInfoError) as err:
        camera_info_to_intrinsics(_info(k=k))
    text = str(err.value)
    assert ("fx=" in text and "fy=" in text) or "NaN" in text


def test_all_zero_k_means_uncalibrated_and_raises() -> None:
    with pytest.raises(CameraInfoError, match="uncalibrated"):
        camera_info_to_intrinsics(_info(k=[0.0] * 9))


@pytest.mark.parametrize("model", ["fisheye", "Plumb_Bob", "kannala_brandt", "double_sphere"])
def test_unknown_distortion_model_raises(model: str) -> None:
    with pytest.raises(CameraInfoError) as err:
        camera_info_to_intrinsics(_info(distortion_model=model))
    assert err.value.fields["distortion_model"] == model


@pytest.mark.parametrize(
    ("model", "count"), [("plumb_bob", 3), ("plumb_bob", 6), ("equidistant", 5), ("rational_polynomial", 5)]
)
def test_wrong_coefficient_count_raises(model: str, count: int) -> None:
    with pytest.raises(CameraInfoError) as err:
        camera_info_to_intrinsics(_info(distortion_model=model, d=[0.01] * count))
    assert err.value.fields["D_length"] == count


def test_no_distortion_model_accepts_empty_or_zero_d() -> None:
    assert not camera_info_to_intrinsics(_info(distortion_model="", d=[])).is_distorted
    assert not camera_info_to_intrinsics(_info(distortion_model="none", d=[0.0] * 5)).is_distorted
    with pytest.raises(CameraInfoError):
        camera_info_to_intrinsics(_info(distortion_model="", d=[0.1]))


@pytest.mark.parametrize(("width", "height"), [(0, 480), (640, 0)])
def test_zero_size_raises(width: int, height: int) -> None:
    with pytest.raises(CameraInfoError, match="positive"):
        camera_info_to_intrinsics(_info(width=width, height=height))


def test_image_size_mismatch_raises() -> None:
    intr = camera_info_to_intrinsics(_info(), image_size=(640, 480))
    with pytest.raises(CameraInfoError) as err:
        check_image_size(intr, 320, 240)
    assert err.value.fields == {
        "image_width": 320,
        "image_height": 240,
        "camera_info_width": 640,
        "camera_info_height": 480,
    }
    with pytest.raises(CameraInfoError, match="disagrees"):
        camera_info_to_intrinsics(_info(), image_size=(641, 480))


def test_nan_distortion_and_bad_k_shape_raise() -> None:
    with pytest.raises(CameraInfoError, match="D holds"):
        camera_info_to_intrinsics(_info(d=[0.1, np.nan, 0, 0, 0]))
    with pytest.raises(CameraInfoError, match="upper triangular"):
        camera_info_to_intrinsics(_info(k=[525.0, 0, 319.5, 0, 524.0, 239.5, 0, 0, 2.0]))


def _project(points: np.ndarray, intr: Intrinsics) -> np.ndarray:
    rvec = tvec = np.zeros(3)
    if intr.distortion_model == "equidistant":
        pix, _ = cv2.fisheye.projectPoints(points[None], rvec, tvec, intr.K, intr.D)
        return pix[0]
    pix, _ = cv2.projectPoints(points, rvec, tvec, intr.K, intr.D)
    return pix[:, 0]


@pytest.mark.parametrize(
    ("model", "coeffs"),
    [("plumb_bob", [-0.25, 0.08, 0.001, -0.002, 0.0]), ("equidistant", [0.05, -0.01, 0.002, -0.0005])],
)
def test_rectify_maps_undo_distortion(model: str, coeffs: list[float]) -> None:
    """A map pixel (u, v) must sample the distorted image where the undistorted ray through (u, v) lands."""
    intr = Intrinsics(width=320, height=240, K=[[200.0, 0, 159.5], [0, 200.0, 119.5], [0, 0, 1]],
                      distortion_model=model, D=coeffs)  # fmt: skip
    maps = rectify_maps(intr)
    assert maps.map_x.shape == (240, 320) and maps.map_x.dtype == np.float32
    rng = np.random.default_rng(0)
    u = rng.uniform(40, 280, 50)
    v = rng.uniform(30, 210, 50)
    ui, vi = np.round(u).astype(int), np.round(v).astype(int)
    rays_int = np.stack([(ui - 159.5) / 200.0, (vi - 119.5) / 200.0, np.ones_like(u)], axis=1)
    expected = _project(rays_int, intr)
    got = np.stack([maps.map_x[vi, ui], maps.map_y[vi, ui]], axis=1)
    np.testing.assert_allclose(got, expected, atol=1e-2)
    # undistorting a synthetic image of a distorted point lands it back at its ideal position
    image = np.zeros((240, 320), np.float32)
    px = _project(np.array([[0.3, -0.2, 1.0]]), intr)[0]
    image[int(round(px[1])), int(round(px[0]))] = 1.0
    rectified = rectify_image(image, maps)
    peak = np.unravel_index(np.argmax(rectified), rectified.shape)
    assert abs(peak[1] - (159.5 + 0.3 * 200)) <= 1.5 and abs(peak[0] - (119.5 - 0.2 * 200)) <= 1.5


def test_rectify_maps_identity_without_distortion() -> None:
    intr = Intrinsics.from_pinhole(100.0, 100.0, 31.5, 23.5, 64, 48)
    maps = rectify_maps(intr)
    xs, ys = np.meshgrid(np.arange(64), np.arange(48))
    np.testing.assert_allclose(maps.map_x, xs, atol=1e-3)
    np.testing.assert_allclose(maps.map_y, ys, atol=1e-3)
    np.testing.assert_array_equal(maps.new_K, intr.K)
