"""Dataset readers: real shared folders (skipped if absent), generated folders, and every bad-input case."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from online3r_ros.datasets import (
    TUM_INTRINSICS,
    DatasetError,
    ImageFolderReader,
    IntrinsicsError,
    SevenScenesReader,
    TumKeyframesReader,
    TumReader,
    associate_timestamps,
    detect_layout,
    open_dataset,
    parse_intrinsics,
    validate_intrinsics,
)
from online3r_ros.datasets.imageio import read_depth_png, sanitize_depth
from online3r_ros.datasets.intrinsics import scale_K, tum_intrinsics_for
from online3r_ros.eval.poses import is_valid_pose
from online3r_ros.synthetic import make_synthetic_sequence, save_seven_scenes, save_tum

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SEVEN = SHARED / "7scenes_redkitchen_0000_0499"
CABINET = SHARED / "tum_fr3_cabinet_keyframes"


def _seq(n=6, w=32, h=24, seed=3):
    return make_synthetic_sequence(n_frames=n, width=w, height=h, seed=seed)


@pytest.fixture()
def seven_dir(tmp_path):
    seq = _seq()
    return save_seven_scenes(seq, tmp_path / "seq-01"), seq


@pytest.fixture()
def tum_dir(tmp_path):
    seq = _seq()
    return save_tum(seq, tmp_path / "tum_synthetic"), seq


# ---------------------------------------------------------------- real data
@pytest.mark.realdata
def test_real_7scenes_folder():
    if not SEVEN.exists():
        pytest.skip(f"shared data not found: {SEVEN}")
    r = open_dataset(SEVEN, stride=3, max_frames=4)
    assert isinstance(r, SevenScenesReader) and r.has_depth and r.has_gt
    np.testing.assert_allclose(r.K, [[585, 0, 320], [0, 585, 240], [0, 0, 1]])
    frames = list(r)
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert [f.source_index for f in frames] == [0, 3, 6, 9]
    np.testing.assert_allclose([f.timestamp for f in frames], [0, 0.1, 0.2, 0.3])
    f = frames[0]
    assert f.rgb.shape == (480, 640, 3) and f.rgb.dtype == np.uint8
    assert f.depth.shape == (480, 640) and f.depth.dtype == np.float32
    assert 0.5 < float((f.depth > 0).mean()) <= 1.0 and float(f.depth.max()) < 10.0
    assert f.K.dtype == np.float64 and bool(is_valid_pose(f.pose_gt)[0])
    np.testing.assert_allclose(f.pose_gt, np.loadtxt(SEVEN / "frame-000000.pose.txt"))
    t, T = r.gt_trajectory()
    assert t.shape == (500,) and T.shape == (500, 4, 4)
    assert r.skipped == []


@pytest.mark.realdata
def test_real_tum_keyframes_folder():
    if not CABINET.exists():
        pytest.skip(f"shared data not found: {CABINET}")
    assert detect_layout(CABINET) == "tum_keyframes"
    r = open_dataset(CABINET)
    assert isinstance(r, TumKeyframesReader) and len(r) == 58
    np.testing.assert_allclose(r.K[[0, 1, 0, 1], [0, 1, 2, 2]], TUM_INTRINSICS["fr3"])
    frames = list(r)
    assert len(frames) == 58
    ts = np.array([f.timestamp for f in frames])
    assert np.all(np.diff(ts) > 0)
    row0 = np.loadtxt(CABINET / "truth_cam_poses.txt")[0]
    assert ts[0] == pytest.approx(row0[0])
    np.testing.assert_allclose(frames[0].pose_gt[:3, 3], row0[1:4])
    assert frames[0].depth is not None and 0.5 < float((frames[0].depth > 0).mean())


# ---------------------------------------------------------------- generated 7-Scenes folders
def test_seven_scenes_round_trip(seven_dir):
    folder, seq = seven_dir
    assert detect_layout(folder) == "7scenes"
    r = open_dataset(folder)
    frames = list(r)
    assert len(frames) == len(seq) and r.skipped == []
    for f, g in zip(frames, seq, strict=True):
        np.testing.assert_array_equal(f.rgb, g.rgb)
        np.testing.assert_allclose(f.depth, g.depth, atol=0.0006)  # mm quantisation
        np.testing.assert_allclose(f.pose_gt, g.pose_gt, atol=1e-12)
        np.testing.assert_allclose(f.K, g.K)
        assert f.timestamp == pytest.approx(g.source_index / 30.0)


def test_seven_scenes_bad_inputs_are_skipped_with_reasons(seven_dir):
    folder, _ = seven_dir
    (folder / "frame-000001.depth.png").unlink()  # missing depth
    (folder / "frame-000002.color.png").write_bytes(b"not a png at all")  # corrupt colour
    cv2.imwrite(str(folder / "frame-000003.depth.png"), np.zeros((24, 32), np.uint16))  # all invalid
    cv2.imwrite(str(folder / "frame-000004.color.png"), np.zeros((12, 16, 3), np.uint8))  # wrong size
    np.savetxt(folder / "frame-000005.pose.txt", np.full((4, 4), -np.inf))  # bad pose (7-Scenes has some)
    r = open_dataset(folder)
    frames = list(r)
    assert [f.source_index for f in frames] == [0, 5]
    reasons = {Path(s.path).name: s.reason for s in r.skipped}
    assert "missing" in reasons["frame-000001.depth.png"]
    assert "cannot be decoded" in reasons["frame-000002.color.png"]
    assert "no valid pixel" in reasons["frame-000003.color.png"]
    assert "16x12" in reasons["frame-000004.color.png"]
    assert frames[1].pose_gt is None and any("pose invalid" in w for w in frames[1].warnings)
    assert [f.index for f in frames] == [0, 1]
    with pytest.raises(DatasetError, match="missing"):
        list(open_dataset(folder, strict=True))


def test_bad_depth_policies_and_invalid_codes(seven_dir):
    folder, _ = seven_dir
    raw = cv2.imread(str(folder / "frame-000000.depth.png"), cv2.IMREAD_UNCHANGED)
    raw[:, :16] = 65535  # 7-Scenes "no data" code
    cv2.imwrite(str(folder / "frame-000000.depth.png"), raw)
    cv2.imwrite(str(folder / "frame-000001.depth.png"), np.zeros_like(raw))
    f0 = next(iter(open_dataset(folder)))
    assert np.all(f0.depth[:, :16] == 0) and np.all(f0.depth[:, 16:] > 0)
    kept = list(open_dataset(folder, bad_depth="keep", max_frames=2))
    assert kept[1].depth is not None and not kept[1].depth.any() and "no valid pixel" in kept[1].warnings[0]
    dropped = list(open_dataset(folder, bad_depth="drop", max_frames=2))
    assert dropped[1].depth is None
    # half the pixels invalid is below a 60 % requirement
    r = open_dataset(folder, min_valid_depth_fraction=0.6, max_frames=1)
    assert [f.source_index for f in r] == [2]  # max_frames counts yielded frames
    assert "50.00% valid" in r.skipped[0].reason and r.skipped[0].source_index == 0
    with pytest.raises(DatasetError):
        open_dataset(folder, bad_depth="ignore")


def test_seven_scenes_numbering_gap_keeps_time_spacing(seven_dir):
    folder, _ = seven_dir
    for suffix in ("color.png", "depth.png", "pose.txt"):
        (folder / f"frame-000002.{suffix}").unlink()
    frames = list(open_dataset(folder))
    assert [round(f.timestamp * 30) for f in frames] == [0, 1, 3, 4, 5]


def test_intrinsics_override_and_size_check(seven_dir):
    folder, seq = seven_dir
    r = open_dataset(folder, intrinsics="30,30,15.5,11.5")
    np.testing.assert_allclose(r.K, [[30, 0, 15.5], [0, 30, 11.5], [0, 0, 1]])
    assert next(iter(r)).K[0, 0] == 30
    with pytest.raises(IntrinsicsError, match="outside the 32x24 image"):
        open_dataset(folder, intrinsics="585,585,320,240")  # 640x480 intrinsics on 32x24 images


# ---------------------------------------------------------------- TUM RGB-D
def test_tum_round_trip_and_gt_interpolation(tum_dir):
    folder, seq = tum_dir
    r = open_dataset(folder)
    assert isinstance(r, TumReader) and r.has_depth and r.has_gt
    frames = list(r)
    assert len(frames) == len(seq) and r.skipped == []
    for f, g in zip(frames, seq, strict=True):
        np.testing.assert_array_equal(f.rgb, g.rgb)
        np.testing.assert_allclose(f.depth, g.depth, atol=1.1e-4)  # 0.2 mm quantisation
        np.testing.assert_allclose(f.pose_gt, g.pose_gt, atol=1e-8)
    t_gt, T_gt = r.gt_trajectory()
    assert t_gt.shape == (len(seq),)


def test_tum_association_and_bad_rows(tum_dir):
    folder, seq = tum_dir
    rgb = (folder / "rgb.txt").read_text().splitlines()
    depth = (folder / "depth.txt").read_text().splitlines()
    # row order: header, 6 frames. Make frame 3 non-monotonic, remove the depth of frame 2, add junk.
    t2 = rgb[3].split()[0]
    rgb.insert(5, rgb[2])  # duplicate an older timestamp after frame 3
    rgb.append("garbage-line")
    depth = [line for line in depth if not line.startswith(t2)]
    (folder / "rgb.txt").write_text("\n".join(rgb) + "\n")
    (folder / "depth.txt").write_text("\n".join(depth) + "\n")
    r = open_dataset(folder)
    frames = list(r)
    assert len(frames) == len(seq) - 1
    reasons = " | ".join(s.reason for s in r.skipped)
    assert "non-monotonic timestamp" in reasons
    assert "no depth image within 0.02 s" in reasons
    assert "is not a number" in reasons


def test_tum_gt_missing_for_some_frames(tum_dir):
    folder, _ = tum_dir
    lines = (folder / "groundtruth.txt").read_text().splitlines()
    (folder / "groundtruth.txt").write_text("\n".join(lines[:3]) + "\n")  # header + first 2 poses
    frames = list(open_dataset(folder))
    assert frames[0].pose_gt is not None and frames[1].pose_gt is not None
    assert frames[3].pose_gt is None and "no ground truth" in frames[3].warnings[0]


def test_tum_intrinsics_from_folder_name(tmp_path, tum_dir):
    folder, _ = tum_dir
    assert tum_intrinsics_for("/data/rgbd_dataset_freiburg2_desk")[0] == "fr2"
    assert tum_intrinsics_for("/data/tum_fr1_xyz")[0] == "fr1"
    assert tum_intrinsics_for("/data/my_sequence") is None
    np.testing.assert_allclose(tum_intrinsics_for("freiburg3_long_office")[1][0, 0], 535.4)
    (folder / "calibration.txt").unlink()
    with pytest.raises(IntrinsicsError, match="--intrinsics"):
        open_dataset(folder)
    r = open_dataset(folder, intrinsics="29,29,15.5,11.5")
    assert r.K[0, 0] == 29


def test_associate_timestamps_matches_bruteforce_greedy():
    rng = np.random.default_rng(0)
    a = np.sort(rng.uniform(0, 3, 90))
    b = np.sort(rng.uniform(0, 3, 80))
    pairs = associate_timestamps(a, b, 0.02)
    cands = sorted((abs(x - y), i, j) for i, x in enumerate(a) for j, y in enumerate(b) if abs(x - y) < 0.02)
    used_a, used_b, ref = set(), set(), []
    for _, i, j in cands:
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            ref.append((i, j))
    assert sorted(map(tuple, pairs.tolist())) == sorted(ref)
    assert len(ref) > 10
    assert associate_timestamps(a, [], 0.02).shape == (0, 2)


# ---------------------------------------------------------------- image folder, layouts, intrinsics
def test_image_folder_natural_order_and_optional_K(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for k, name in enumerate(["img10.png", "img2.png", "img1.jpg"]):
        cv2.imwrite(str(d / name), np.full((20, 30, 3), 40 * k, np.uint8))
    r = open_dataset(d)
    assert isinstance(r, ImageFolderReader) and not r.calibrated
    frames = list(r)
    assert [Path(f.source).name for f in frames] == ["img1.jpg", "img2.png", "img10.png"]
    assert frames[0].K is None and frames[0].depth is None and frames[2].timestamp == pytest.approx(2 / 30)
    r2 = open_dataset(d, intrinsics="25 25 14.5 9.5", stride=2)
    assert [f.K[0, 0] for f in r2] == [25, 25]


def test_detect_layout_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(tmp_path / "nope")
    with pytest.raises(DatasetError, match="unknown dataset layout"):
        open_dataset(tmp_path)
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(DatasetError, match="got a file"):
        open_dataset(tmp_path / "f.txt")
    seq = save_seven_scenes(_seq(n=2), tmp_path / "scene" / "seq-01")
    with pytest.raises(DatasetError, match="seq-01"):
        open_dataset(seq.parent)
    with pytest.raises(DatasetError, match="stride"):
        open_dataset(seq, stride=0)


@pytest.mark.parametrize(
    "text, match",
    [
        ("1,2,3", "4 numbers"),
        ("a,2,3,4", "fx='a'"),
        ("500,-1,3,4", "positive"),
        ("500,500,nan,4", "cx='nan' is not finite"),
    ],
)
def test_parse_intrinsics_errors(text, match):
    with pytest.raises(IntrinsicsError, match=match):
        parse_intrinsics(text)


def test_parse_and_validate_intrinsics():
    K = parse_intrinsics(" 525.0, 526 ,319.5,239.5")
    np.testing.assert_allclose(K, [[525, 0, 319.5], [0, 526, 239.5], [0, 0, 1]])
    validate_intrinsics(K, 640, 480)
    with pytest.raises(IntrinsicsError, match="another image size"):
        validate_intrinsics(K, 320, 240)
    K2 = scale_K(K, 0.5, 0.5)
    np.testing.assert_allclose(K2[:2, 2], [159.5, 119.5])


def test_depth_nan_and_float_images(tmp_path):
    d, n_bad = sanitize_depth(np.array([[1.0, np.nan], [-2.0, np.inf]], np.float32))
    np.testing.assert_array_equal(d, [[1.0, 0.0], [0.0, 0.0]])
    assert n_bad == 2
    arr = np.full((4, 5), 2.5, np.float32)
    arr[1, 2] = np.nan
    p = tmp_path / "d.tiff"
    assert cv2.imwrite(str(p), arr)
    depth, n = read_depth_png(p, scale=1.0)
    assert n == 1 and depth[1, 2] == 0 and depth[0, 0] == 2.5


def test_missing_colour_file_after_open(seven_dir):
    folder, _ = seven_dir
    r = open_dataset(folder)
    shutil.move(folder / "frame-000002.color.png", folder / "moved.bin")
    frames = list(r)
    assert len(frames) == 5 and "missing" in r.skipped[0].reason
    # re-iterating resets the skip list (no duplicates)
    list(r)
    assert len(r.skipped) == 1


def test_tum_keyframes_layout_with_bad_rows(tmp_path):
    seq = _seq(n=4)
    folder = tmp_path / "tum_fr3_test_keyframes"
    (folder / "raw_imgs").mkdir(parents=True)
    (folder / "depth_imgs").mkdir()
    rows = []
    for f in seq:
        cv2.imwrite(str(folder / "raw_imgs" / f"{f.source_index:04d}_rgb_raw.jpg"), f.rgb[..., ::-1])
        raw = np.rint(f.depth * 5000).astype(np.uint16)
        cv2.imwrite(str(folder / "depth_imgs" / f"{f.source_index:04d}_depth_raw.png"), raw)
        t_q = np.concatenate([[100 + f.timestamp], f.pose_gt[:3, 3], [0, 0, 0, 1]])
        rows.append(" ".join(f"{v:.6f}" for v in t_q))
    rows[1] = "100.0 1 2"  # malformed row 1; row 3 missing
    (folder / "truth_cam_poses.txt").write_text("\n".join(rows[:3]) + "\n")
    assert detect_layout(folder) == "tum_keyframes"
    with pytest.raises(IntrinsicsError, match="outside the 32x24 image"):
        open_dataset(folder)  # fr3 (from the folder name) 640x480 intrinsics on 32x24 images
    r = open_dataset(folder, intrinsics="29,29,15.5,11.5")
    frames = list(r)
    assert [f.source_index for f in frames] == [0, 2]
    assert frames[1].timestamp == pytest.approx(100 + 2 / 30, abs=1e-6)
    reasons = [s.reason for s in r.skipped]
    assert "row 1 is malformed" in reasons[0] and "has no row 3" in reasons[1]
    np.testing.assert_allclose(frames[1].pose_gt[:3, 3], seq[2].pose_gt[:3, 3], atol=1e-6)


def test_malformed_intrinsics_files(seven_dir, tum_dir):
    folder, _ = seven_dir
    (folder / "camera-intrinsics.txt").write_text("585 0 320\n0 585\n")
    with pytest.raises(IntrinsicsError, match="camera-intrinsics.txt"):
        open_dataset(folder)
    assert open_dataset(folder, intrinsics="30,30,15.5,11.5").K[0, 0] == 30  # the override wins
    tfolder, _ = tum_dir
    (tfolder / "calibration.txt").write_text("fx fy cx cy\n")
    with pytest.raises(IntrinsicsError, match="calibration.txt"):
        open_dataset(tfolder)


def test_tum_fr1_frames_are_undistorted(tmp_path):
    seq = make_synthetic_sequence(n_frames=2, width=640, height=480, seed=1)
    folder = save_tum(seq, tmp_path / "rgbd_dataset_freiburg1_synthetic", fx_fy_cx_cy_file=False)
    raw = open_dataset(folder, undistort=False)
    assert raw.intrinsics_name == "fr1" and raw.distortion is None
    np.testing.assert_allclose(raw.K[[0, 1, 0, 1], [0, 1, 2, 2]], TUM_INTRINSICS["fr1"])
    f_raw = next(iter(raw))
    np.testing.assert_array_equal(f_raw.rgb, seq[0].rgb)
    r = open_dataset(folder)
    f = next(iter(r))
    assert r.distortion is not None and f.rgb.shape == (480, 640, 3) and f.depth.shape == (480, 640)
    assert not np.allclose(f.K, r.K_raw) and np.allclose(f.K, r.K)
    validate_intrinsics(f.K, 640, 480)
    # pixel (u, v) of the undistorted image shows the raw image at the distorted projection of its ray
    uv = np.array([[10.0, 12.0], [320.0, 240.0], [600.0, 450.0]])
    rays = np.c_[(uv - r.K[:2, 2]) / r.K[[0, 1], [0, 1]], np.ones(3)]
    proj, _ = cv2.projectPoints(rays, np.zeros(3), np.zeros(3), r.K_raw, r.distortion)
    mx, my = r._undistort_maps
    got = np.stack(
        [mx[uv[:, 1].astype(int), uv[:, 0].astype(int)], my[uv[:, 1].astype(int), uv[:, 0].astype(int)]], 1
    )
    np.testing.assert_allclose(got, proj[:, 0], atol=0.05)
    # depth is resampled with nearest neighbour: every value exists in the raw depth
    assert np.isin(np.unique(f.depth), np.unique(f_raw.depth)).all()


def _reprojected_depth_error(f0, f1, T_10):
    K = f0.K
    v, u = np.nonzero(f0.depth > 0)
    z = f0.depth[v, u].astype(np.float64)
    X0 = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], 1)
    X1 = X0 @ T_10[:3, :3].T + T_10[:3, 3]
    front = X1[:, 2] > 0.1
    X1 = X1[front]
    u1 = np.rint(K[0, 0] * X1[:, 0] / X1[:, 2] + K[0, 2]).astype(int)
    v1 = np.rint(K[1, 1] * X1[:, 1] / X1[:, 2] + K[1, 2]).astype(int)
    ok = (u1 >= 0) & (u1 < f1.width) & (v1 >= 0) & (v1 < f1.height)
    d1 = f1.depth[v1[ok], u1[ok]]
    valid = d1 > 0
    return int(valid.sum()), float(np.median(np.abs(d1[valid] - X1[ok, 2][valid])))


@pytest.mark.realdata
def test_real_7scenes_depth_and_poses_are_consistent():
    """Frame 0's depth moved with the ground-truth poses predicts frame 30's depth (c2w poses, metres)."""
    if not SEVEN.exists():
        pytest.skip(f"shared data not found: {SEVEN}")
    f0, f1 = list(open_dataset(SEVEN, stride=30, max_frames=2))
    n, err = _reprojected_depth_error(f0, f1, np.linalg.inv(f1.pose_gt) @ f0.pose_gt)
    assert n > 100_000 and err < 0.02
    _, err_w2c = _reprojected_depth_error(f0, f1, f1.pose_gt @ np.linalg.inv(f0.pose_gt))  # wrong convention
    _, err_static = _reprojected_depth_error(f0, f1, np.eye(4))
    assert err < 0.25 * min(err_w2c, err_static)  # measured: 7 mm vs 109 mm and 48 mm


@pytest.mark.skipif(not SEVEN.is_dir(), reason=f"real data folder {SEVEN} not present")
def test_seven_scenes_colour_is_registered_to_the_depth_camera() -> None:
    """The Kinect recordings (depth K 585 at 640x480) get their colour resampled into the depth camera
    (colour focal 525 px): pixel (u, v) of the registered image is the colour pixel
    ((u - 325) * 525/585 + 320, ...); other 7-Scenes-layout folders are read as stored."""
    from online3r_ros.datasets.seven_scenes import SevenScenesReader

    reg, raw = SevenScenesReader(SEVEN), SevenScenesReader(SEVEN, register_colour=False)
    assert reg.register_colour and not raw.register_colour
    a, b = reg._load(0), raw._load(0)
    np.testing.assert_array_equal(a.depth, b.depth)
    k = 525.0 / 585.0
    for u, v in ((325, 245), (100, 60), (600, 400)):
        us, vs = (u - 325) * k + 320, (v - 245) * k + 240
        expected = b.rgb[int(round(vs)), int(round(us))].astype(int)
        assert np.abs(a.rgb[v, u].astype(int) - expected).max() <= 40, (u, v)
    assert np.abs(a.rgb.astype(int) - b.rgb.astype(int)).mean() > 5  # a real resampling, not a copy


def test_frame_ranges_parse_in_order_and_refuse_garbage() -> None:
    from online3r_ros.datasets.views import parse_frame_ranges

    assert parse_frame_ranges("0-2, 10,5-4") == [0, 1, 2, 10, 5, 4]
    for bad in ("", "a-b", "3-", "-1"):
        with pytest.raises(DatasetError):
            parse_frame_ranges(bad)
