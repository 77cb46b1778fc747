"""Scoring library: RPE against analytic values, the extended metrics dict, thresholds and verdicts, and the
trajectory-file readers (TUM, EuRoC, KITTI) behind ``online3r evaluate --groundtruth``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from online3r_ros.eval import read_tum, write_tum
from online3r_ros.eval.ate import EvaluationError, compute_ate
from online3r_ros.eval.reports import build_metrics, latency_stats, write_metrics_json
from online3r_ros.eval.rpe import compute_rpe, evaluate_rpe, time_segment_ids
from online3r_ros.eval.trajectory_files import detect_trajectory_format, read_trajectory_file
from online3r_ros.eval.trajectory_io import TrajectoryFileError
from online3r_ros.eval.verdicts import METRICS, ThresholdError, metric_value, parse_thresholds, verdicts

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "evo_bags_and_trajectories"
DT = 0.125  # s, exact in binary: segment lengths of 1 m / 1 s are hit exactly


def _line(n: int = 161, speed: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A camera moving along x at ``speed`` m/s, sampled every ``DT`` s."""
    t = np.arange(n) * DT
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, 0, 3] = speed * t
    return t, T


def _wiggly(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(n) * 0.1
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, 3] = np.stack(
        [np.sin(0.3 * t), 0.5 * np.cos(0.2 * t), 0.1 * t], 1
    ) + 0.001 * rng.standard_normal((n, 3))
    T[:, :3, :3] = Rotation.from_rotvec(0.2 * rng.standard_normal((n, 3))).as_matrix()
    return t, T


# ------------------------------------------------------------------------------------------------------ RPE
def test_rpe_of_a_scaled_trajectory_is_the_scale_error_per_segment():
    t, T = _line()
    est = T.copy()
    est[:, :3, 3] *= 1.02  # 2 % too long: 2 cm per metre, 2 cm per second at 1 m/s
    for unit in ("m", "s"):
        res = compute_rpe(t, est, t, T, 1.0, unit)
        assert res.n_pairs == 20  # 20 s, 20 m: consecutive 1 m / 1 s segments
        assert res.translation["rmse"] == pytest.approx(0.02, abs=1e-12)
        assert res.translation["max"] == pytest.approx(0.02, abs=1e-12)
        assert res.rotation["max"] == pytest.approx(0.0, abs=1e-9)
    # Sim(3) alignment removes a pure scale error (on a path that is not a line: Umeyama needs rank 2)
    t, T = _wiggly()
    est = T.copy()
    est[:, :3, 3] *= 1.02
    assert compute_rpe(t, est, t, T, 1.0, "m").translation["rmse"] > 0.01
    assert compute_rpe(t, est, t, T, 1.0, "m", "sim3").translation["max"] < 1e-9


def test_rpe_rotation_drift_per_second_is_the_drift_rate():
    t, T = _line()
    est = T.copy()
    rate = np.deg2rad(3.0)  # the estimate yaws at 3 deg/s
    est[:, :3, :3] = Rotation.from_rotvec(np.outer(rate * t, [0.0, 0.0, 1.0])).as_matrix()
    res = compute_rpe(t, est, t, T, 1.0, "s")
    assert res.rotation["rmse"] == pytest.approx(3.0, abs=1e-9)
    # and over 2 s segments twice as much
    assert compute_rpe(t, est, t, T, 2.0, "s").rotation["mean"] == pytest.approx(6.0, abs=1e-9)


def test_rpe_and_ate_of_identical_trajectories_are_zero():
    t, T = _wiggly()
    for alignment in ("se3", "sim3"):
        assert compute_ate(t, T, t, T, alignment).rmse < 1e-9
        for unit in ("m", "s"):
            res = compute_rpe(t, T, t, T, 1.0, unit, alignment)
            assert res.n_pairs > 3 and res.translation["max"] < 1e-9 and res.rotation["max"] < 1e-6


def test_rpe_is_invariant_to_a_rigid_motion_of_the_estimate():
    t, T = _wiggly(seed=1)
    G = np.eye(4)
    G[:3, :3] = Rotation.from_rotvec([0.3, -0.2, 1.0]).as_matrix()
    G[:3, 3] = [5.0, -2.0, 1.0]
    noisy = T.copy()
    noisy[:, :3, 3] += 0.01 * np.random.default_rng(3).standard_normal((len(t), 3))
    a = compute_rpe(t, noisy, t, T, 1.0, "s")
    b = compute_rpe(t, G @ noisy, t, T, 1.0, "s")
    assert a.translation["rmse"] > 0.005
    assert b.translation["rmse"] == pytest.approx(a.translation["rmse"], rel=1e-9)


def test_time_segments_skip_gaps():
    t = np.concatenate([np.arange(0, 4.01, 0.1), np.arange(8.0, 12.01, 0.1)])
    pairs = time_segment_ids(t, 1.0)
    dt = t[pairs[:, 1]] - t[pairs[:, 0]]
    assert len(pairs) == 8 and np.all(np.abs(dt - 1.0) < 1e-6)  # the 4 s gap is not a segment


def test_rpe_errors_are_reported_not_raised():
    t, T = _line(n=5)  # 0.5 m, 0.5 s: no 1 m / 1 s segment
    out = evaluate_rpe(t, T, t, T)
    assert (
        set(out) == {"se3", "sim3"}
        and "error" in out["se3"]["per_metre"]
        and "error" in out["se3"]["per_second"]
    )
    with pytest.raises(EvaluationError, match="delta unit"):
        compute_rpe(t, T, t, T, 1.0, "deg")


# ------------------------------------------------------------------------------------- metrics + verdicts
def test_build_metrics_extended_keeps_the_schema(tmp_path):
    t, T = _wiggly()
    plain = build_metrics(frames=(t, T), keyframes=(t[::10], T[::10]), reference=(t, T))
    ext = build_metrics(
        frames=(t, T),
        keyframes=(t[::10], T[::10]),
        reference=(t, T),
        rpe=True,
        posed=200,
        lost=3,
        relocalised=2,
        drops=4,
        latency_ms=[10.0, 20.0, 30.0, np.nan],
        loop_edges=[(0, 5), (2, 7)],
        reconstruction={"accuracy_mean": 0.01, "completeness_mean": 0.02, "chamfer": 0.015, "fscore": 0.9},
        dataset="synthetic",
    )
    assert set(plain) <= set(ext) and ext["ate"] == plain["ate"] and ext["schema"] == "online3r_ros.metrics/1"
    assert ext["frames_with_pose"] == 200 and ext["frames_without_pose"] == 3 and ext["frames_dropped"] == 4
    assert ext["n_loop_closures"] == 2 and ext["loop_edges"] == [[0, 5], [2, 7]]
    assert (
        ext["latency_ms"]["count"] == 3
        and ext["latency_ms"]["p50"] == 20.0
        and ext["latency_ms"]["max"] == 30.0
    )
    assert ext["rpe"]["frames"]["se3"]["per_second"]["translation"]["rmse"] < 1e-9
    data = json.loads(write_metrics_json(tmp_path / "m.json", ext).read_text())
    assert data["rpe"]["frames"]["sim3"]["per_metre"]["delta_unit"] == "m"
    assert latency_stats([]) == {}


def test_parse_thresholds():
    assert parse_thresholds("ate=0.05, rpe_t=2e-2,") == {"ate": 0.05, "rpe_t": 0.02}
    assert parse_thresholds(None) == {} and parse_thresholds("") == {}
    for bad, match in (
        ("atee=0.05", "unknown metric 'atee'"),
        ("ate", "METRIC=VALUE"),
        ("ate=x", "not a number"),
    ):
        with pytest.raises(ThresholdError, match=match):
            parse_thresholds(bad)
    with pytest.raises(ThresholdError, match="known: ate, ate_sim3"):
        parse_thresholds("nope=1")


def test_verdicts_fail_exactly_above_the_threshold_and_when_unmeasured():
    m = {
        "ate": {"frames": {"se3": {"rmse": 0.04}, "sim3": {"error": "degenerate"}}},
        "frames_without_pose": 0,
    }
    assert metric_value(m, "ate") == 0.04 and metric_value(m, "ate_sim3") is None
    by = {v.name: v for v in verdicts(m, {"ate": 0.05, "lost": 0})}
    assert by["ate"].status == "pass" and by["lost"].status == "pass"  # equal to the limit passes
    assert "ate_sim3" not in by  # not measured, no threshold: not listed
    assert verdicts(m, {"ate": 0.03})[0].failed
    assert verdicts(m, {"ate": 0.04})[0].status == "pass"
    unmeasured = {v.name: v for v in verdicts(m, {"chamfer": 1.0})}["chamfer"]
    assert unmeasured.failed and "not measured" in unmeasured.line()
    low = {v.name: v for v in verdicts({"reconstruction": {"fscore": 0.7}}, fail_below={"fscore": 0.8})}
    assert low["fscore"].failed and ">= 0.8" in low["fscore"].line()
    assert set(METRICS) >= {"ate", "rpe_t", "rpe_r", "latency_p90", "accuracy", "completeness", "chamfer"}


# ------------------------------------------------------------------------------------------- trajectory files
def test_read_trajectory_file_tum_roundtrip_and_errors(tmp_path):
    t, T = _wiggly(50)
    write_tum(tmp_path / "a.tum", t, T)
    t2, T2 = read_trajectory_file(tmp_path / "a.tum")
    assert np.allclose(t2, t) and np.allclose(T2, T, atol=1e-8)
    (tmp_path / "bad.txt").write_text("1 2 3\n")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    (tmp_path / "bin.bag").write_bytes(b"\x89PNG\x00\xff\xfe" * 10)
    cases = {
        tmp_path / "missing.txt": "does not exist",
        tmp_path: "is a folder",
        tmp_path / "bad.txt": "unknown trajectory format",
        tmp_path / "empty.txt": "holds no pose",
        tmp_path / "bin.bag": "not a text trajectory file",
    }
    for path, match in cases.items():
        with pytest.raises(TrajectoryFileError, match=match):
            read_trajectory_file(path)


def test_read_kitti_with_and_without_times(tmp_path):
    t, T = _wiggly(20)
    np.savetxt(tmp_path / "poses.txt", T[:, :3, :].reshape(-1, 12))
    with pytest.raises(TrajectoryFileError, match="no times file"):
        read_trajectory_file(tmp_path / "poses.txt")
    np.savetxt(tmp_path / "poses_times.txt", t)
    assert detect_trajectory_format(tmp_path / "poses.txt") == "kitti"
    t2, T2 = read_trajectory_file(tmp_path / "poses.txt")
    assert np.allclose(t2, t) and np.allclose(T2, T)
    np.savetxt(tmp_path / "short.txt", t[:5])
    with pytest.raises(TrajectoryFileError, match="5 times for 20"):
        read_trajectory_file(tmp_path / "poses.txt", times=tmp_path / "short.txt")


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared trajectories {SHARED} not present")
def test_read_the_shared_ground_truths():
    t, T = read_trajectory_file(SHARED / "V102_groundtruth.csv")  # EuRoC, ns -> s, qw first
    assert (
        len(t) == 16702 and 1.4e9 < t[0] < 1.5e9 and np.allclose(T[0, :3, 3], [0.515356, 1.996773, 0.971104])
    )
    t, T = read_trajectory_file(SHARED / "KITTI_00_gt.txt")  # times from KITTI_00_gt_times.txt
    assert len(t) == 4541 and t[0] == 0.0 and np.all(np.diff(t) > 0)
    t, T = read_trajectory_file(SHARED / "freiburg1_xyz-groundtruth.txt")
    t_ref, T_ref = read_tum(SHARED / "freiburg1_xyz-groundtruth.txt")
    assert np.array_equal(t, t_ref) and np.allclose(T, T_ref)
    with pytest.raises(TrajectoryFileError):
        read_trajectory_file(SHARED / "ROS_example.bag")


def test_rpe_accepts_slightly_non_orthonormal_rotations():
    """7-Scenes' pose files (7 digits) have rotation blocks 2e-4 off orthonormal: evo's SO(3) check refused
    them inside the RPE; the poses are projected to the nearest rotation first."""
    t, T = _wiggly()
    off = T.copy()
    off[:, :3, :3] *= 1.0 + 2e-4 * np.random.default_rng(5).standard_normal((len(t), 3, 3))
    res = compute_rpe(t, T, t, off, 1.0, "s")
    assert res.rotation["max"] < 0.1 and res.translation["max"] < 1e-3
    assert compute_ate(t, T, t, off).rmse < 1e-9
