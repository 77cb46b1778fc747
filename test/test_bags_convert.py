"""Dataset -> rosbag2 -> numpy round trips (MCAP and sqlite3): colour, depth, intrinsics, ground truth and
stamps come back exactly as the dataset reader gives them. Skipped without ../shared/data."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("rosbags", reason="rosbags is not installed")

from online3r_ros.bags import find_rgbd_topics, iter_rgbd_frames, list_topics, read_trajectory  # noqa: E402
from online3r_ros.bags.convert import convert_dataset, depth_to_millimetres  # noqa: E402
from online3r_ros.cli.main import main  # noqa: E402
from online3r_ros.datasets import open_dataset  # noqa: E402
from online3r_ros.ros.time import sec_to_ns  # noqa: E402

pytestmark = pytest.mark.realdata

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SEVEN = SHARED / "7scenes_redkitchen_0000_0499"
CABINET = SHARED / "tum_fr3_cabinet_keyframes"
N = 10


def _need(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")


@pytest.fixture(scope="module")
def seven_frames():
    _need(SEVEN)
    return list(open_dataset(SEVEN, max_frames=N))


@pytest.fixture(scope="module", params=["mcap", "sqlite3"])
def seven_bag(request, tmp_path_factory, seven_frames):
    out = tmp_path_factory.mktemp(f"bag_{request.param}") / "seven"
    result = convert_dataset(SEVEN, out, storage=request.param, max_frames=N, show_progress=False)
    assert result.n_frames == N and result.storage == request.param
    return out


def test_topics_and_counts(seven_bag) -> None:
    topics = {t.name: (t.msgtype, t.count) for t in list_topics(seven_bag)}
    assert topics == {
        "/image": ("sensor_msgs/msg/Image", N),
        "/depth": ("sensor_msgs/msg/Image", N),
        "/camera_info": ("sensor_msgs/msg/CameraInfo", N),
        "/groundtruth/pose": ("geometry_msgs/msg/PoseStamped", N),
        "/tf": ("tf2_msgs/msg/TFMessage", N),
    }
    found = find_rgbd_topics(seven_bag)
    assert (found.image, found.depth, found.camera_info, found.compressed) == (
        "/image",
        "/depth",
        "/camera_info",
        False,
    )


def test_frames_bit_exact(seven_bag, seven_frames) -> None:
    frames = list(iter_rgbd_frames(seven_bag))
    assert len(frames) == N
    for got, ref in zip(frames, seven_frames, strict=True):
        assert got.stamp_ns == sec_to_ns(ref.timestamp) and got.depth_stamp_ns == got.stamp_ns
        np.testing.assert_array_equal(got.rgb, ref.rgb)
        assert got.depth_raw.dtype == np.uint16
        # the millimetres of the PNG (7-Scenes' 65535 = no measurement, as the reader maps it to 0)
        png = cv2.imread(ref.source.replace(".color.jpg", ".depth.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(got.depth_raw, np.where(png == 65535, 0, png))
        np.testing.assert_array_equal(got.depth_raw, depth_to_millimetres(ref.depth))
        np.testing.assert_allclose(got.depth, ref.depth, rtol=1e-6, atol=0)
        np.testing.assert_array_equal(got.K, ref.K)
        assert (got.intrinsics.width, got.intrinsics.height) == (640, 480)
        assert got.frame_id == "camera_optical_frame"


def test_groundtruth_topic_and_tf(seven_bag, seven_frames) -> None:
    stamps = np.array([f.timestamp for f in seven_frames])
    poses = np.stack([f.pose_gt for f in seven_frames])
    for t, T in (read_trajectory(seven_bag), read_trajectory(seven_bag, frames=("gt_world", "gt_camera"))):
        np.testing.assert_array_equal(np.round(t * 1e9), np.round(stamps * 1e9))
        np.testing.assert_array_equal(T[:, :3, 3], poses[:, :3, 3])  # float64 translations travel exactly
        # a ROS pose is rigid (unit quaternion); 7-Scenes' rotations are orthonormal to ~1e-4 only
        np.testing.assert_allclose(T[:, :3, :3], poses[:, :3, :3], atol=2e-4)
        np.testing.assert_allclose(
            T[:, :3, :3] @ T[:, :3, :3].transpose(0, 2, 1), np.broadcast_to(np.eye(3), (N, 3, 3)), atol=1e-12
        )


def test_compressed_png_is_lossless_and_jpeg_close(tmp_path, seven_frames) -> None:
    for fmt, tol in (("png", 0), ("jpeg", 12.0)):
        out = tmp_path / fmt
        convert_dataset(SEVEN, out, compressed=fmt, max_frames=3, show_progress=False)
        assert find_rgbd_topics(out).image == "/image/compressed"
        frames = list(iter_rgbd_frames(out))
        assert len(frames) == 3
        for got, ref in zip(frames, seven_frames, strict=False):
            err = np.abs(got.rgb.astype(int) - ref.rgb.astype(int))
            assert err.mean() <= tol, (fmt, err.mean())
            np.testing.assert_array_equal(got.depth_raw, depth_to_millimetres(ref.depth))


def test_rate_and_start_retime_frames_and_groundtruth(tmp_path, seven_frames) -> None:
    out = tmp_path / "rate"
    convert_dataset(SEVEN, out, rate_hz=10.0, start_s=1000.0, max_frames=4, show_progress=False)
    stamps = [f.stamp_ns for f in iter_rgbd_frames(out)]
    assert stamps == [1000_000_000_000 + k * 100_000_000 for k in range(4)]
    t, T = read_trajectory(out, "/groundtruth/pose")
    np.testing.assert_allclose(t, [1000.0, 1000.1, 1000.2, 1000.3], rtol=0, atol=1e-9)
    t_tf, _ = read_trajectory(out, frames=("gt_world", "gt_camera"))
    np.testing.assert_array_equal(t_tf, t)
    np.testing.assert_array_equal(T[:, :3, 3], np.stack([f.pose_gt for f in seven_frames[:4]])[:, :3, 3])


def test_tum_real_stamps_and_cli(tmp_path, capsys) -> None:
    _need(CABINET)
    out = tmp_path / "cabinet"
    code = main(
        ["bag", "convert", str(CABINET), "--out", str(out), "--storage", "sqlite3", "--max-frames", "5"]
    )
    assert code == 0
    assert "5 frames" in capsys.readouterr().err
    ref = list(open_dataset(CABINET, max_frames=5))
    frames = list(iter_rgbd_frames(out))
    assert [f.stamp_ns for f in frames] == [sec_to_ns(f.timestamp) for f in ref]
    for got, want in zip(frames, ref, strict=True):
        np.testing.assert_array_equal(got.rgb, want.rgb)
        np.testing.assert_array_equal(got.K, want.K)
        # TUM depth is 1/5 mm; the bag stores whole millimetres (16UC1)
        np.testing.assert_allclose(got.depth, want.depth, atol=0.0005 + 1e-6)
    t, _ = read_trajectory(out)
    assert t[0] == pytest.approx(ref[0].timestamp) and t[-1] <= ref[-1].timestamp + 1e-9
    # the start shift moves the reference stream with the frames
    shifted = tmp_path / "shifted"
    assert (
        main(["bag", "convert", str(CABINET), "--out", str(shifted), "--max-frames", "5", "--start", "5"])
        == 0
    )
    t_shift, _ = read_trajectory(shifted)
    np.testing.assert_allclose(t_shift - 5.0, t - t[0], atol=1e-6)
    assert main(["bag", "convert", str(CABINET), "--out", str(out)]) == 3  # exists: refused
    assert "exists already" in capsys.readouterr().err
