"""Evaluation helpers: TUM I/O, ATE with evo (vs a NumPy Umeyama), PLY, timing, progress, JSON reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from online3r_ros.datasets.base import SkippedFrame
from online3r_ros.eval import (
    EvaluationError,
    PlyError,
    StageTimer,
    TrajectoryFileError,
    build_metrics,
    compute_ate,
    evaluate_trajectory,
    interpolate_poses,
    matrix_to_tum,
    peak_memory,
    poses_to_matrix,
    progress,
    read_ply,
    read_tum,
    umeyama_alignment,
    write_metrics_json,
    write_ply,
    write_timing_json,
    write_tum,
)
from online3r_ros.eval.umeyama import ate_rmse

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def _random_traj(n=50, seed=0):
    rng = np.random.default_rng(seed)
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, :3] = Rotation.from_rotvec(rng.normal(scale=0.5, size=(n, 3))).as_matrix()
    T[:, :3, 3] = np.cumsum(rng.normal(scale=0.1, size=(n, 3)), axis=0)
    t = 1341841278.8427 + np.arange(n) / 30.0
    return t, T


def _apply_sim3(T, s, R, t):
    out = T.copy()
    out[:, :3, :3] = R @ T[:, :3, :3]
    out[:, :3, 3] = s * (R @ T[:, :3, 3].T).T + t
    return out


# ---------------------------------------------------------------- TUM I/O
def test_tum_round_trip(tmp_path):
    t, T = _random_traj()
    p = write_tum(tmp_path / "a" / "traj.tum", t, T)
    text = p.read_text().splitlines()
    assert text[0].startswith("#") and len(text) == 51 and len(text[1].split()) == 8
    t2, T2 = read_tum(p)
    np.testing.assert_allclose(t2, t, atol=1e-6, rtol=0)
    np.testing.assert_allclose(T2, T, atol=1e-8)


def test_tum_formats_and_scale_dropping(tmp_path):
    t, T = _random_traj(5)
    tq = matrix_to_tum(T)
    sim3 = np.concatenate([tq, np.full((5, 1), 2.5)], axis=1)  # lietorch Sim(3) layout, scale dropped
    write_tum(tmp_path / "v.tum", torch.from_numpy(t), torch.from_numpy(sim3))
    np.testing.assert_allclose(read_tum(tmp_path / "v.tum")[1], T, atol=1e-8)
    Ts = T.copy()
    Ts[:, :3, :3] *= 3.0  # Sim(3) matrices
    np.testing.assert_allclose(poses_to_matrix(Ts), T, atol=1e-12)
    ns = np.array([1_700_000_000_123_456_789, 1_700_000_000_223_456_789, 1_700_000_001_000_000_001])
    write_tum(tmp_path / "ns.tum", ns, T[:3])
    first = [line.split()[0] for line in (tmp_path / "ns.tum").read_text().splitlines()[1:]]
    assert first == ["1700000000.123456789", "1700000000.223456789", "1700000001.000000001"]


def test_tum_write_rejects_bad_input(tmp_path):
    t, T = _random_traj(4)
    with pytest.raises(TrajectoryFileError, match="strictly increasing"):
        write_tum(tmp_path / "x.tum", t[::-1], T)
    bad = T.copy()
    bad[2, 0, 3] = np.nan
    with pytest.raises(TrajectoryFileError, match="non-finite poses at rows \\[2\\]"):
        write_tum(tmp_path / "x.tum", t, bad)
    with pytest.raises(TrajectoryFileError, match="3 timestamps but 4 poses"):
        write_tum(tmp_path / "x.tum", t[:3], T)
    assert not (tmp_path / "x.tum").exists()
    (tmp_path / "bad.tum").write_text("0 1 2 3 0 0 0 1\n1 1 2 3 0 0\n")
    with pytest.raises(TrajectoryFileError, match="bad.tum:2"):
        read_tum(tmp_path / "bad.tum")


def test_read_evo_reference_files():
    p = SHARED / "evo_bags_and_trajectories" / "freiburg1_xyz-groundtruth.txt"
    if not p.exists():
        pytest.skip(f"shared data not found: {p}")
    t, T = read_tum(p)
    assert t.shape[0] > 1000 and np.all(np.diff(t) > 0)
    np.testing.assert_allclose(np.linalg.det(T[:, :3, :3]), 1.0, atol=1e-6)


def test_interpolate_poses():
    t, T = _random_traj(3)
    q = np.array([t[0], (t[0] + t[1]) / 2, t[2] + 0.5])
    out, ok = interpolate_poses(t, T, q, 0.02)
    assert ok.tolist() == [True, True, False] and np.isnan(out[2]).all()
    np.testing.assert_allclose(out[0], T[0], atol=1e-12)
    np.testing.assert_allclose(out[1, :3, 3], (T[0, :3, 3] + T[1, :3, 3]) / 2)
    rel = Rotation.from_matrix(T[0, :3, :3].T @ out[1, :3, :3]).magnitude()
    full = Rotation.from_matrix(T[0, :3, :3].T @ T[1, :3, :3]).magnitude()
    assert rel == pytest.approx(full / 2, rel=1e-6)


# ---------------------------------------------------------------- ATE
def test_ate_zero_after_sim3_alignment_only():
    t, T = _random_traj(60)
    R = Rotation.from_rotvec([0.3, -0.2, 1.0]).as_matrix()
    est = _apply_sim3(T, 1.7, R, np.array([1.0, -2.0, 0.5]))
    sim3 = compute_ate(t, est, t, T, "sim3")
    se3 = compute_ate(t, est, t, T, "se3")
    none = compute_ate(t, est, t, T, "none")
    assert sim3.rmse < 1e-9 and sim3.scale == pytest.approx(1 / 1.7)
    assert se3.rmse > 0.05 and se3.scale == 1.0
    assert none.rmse > se3.rmse
    assert sim3.n_matched == 60
    # rigid transform: both alignments give zero
    rigid = _apply_sim3(T, 1.0, R, np.array([3.0, 0.0, 0.0]))
    assert compute_ate(t, rigid, t, T, "se3").rmse < 1e-9


def test_ate_matches_numpy_umeyama():
    t, T = _random_traj(40, seed=2)
    rng = np.random.default_rng(5)
    est = _apply_sim3(T, 0.8, Rotation.from_rotvec([0, 0, 0.4]).as_matrix(), np.ones(3))
    est[:, :3, 3] += rng.normal(scale=0.02, size=(40, 3))
    for alignment, with_scale in (("se3", False), ("sim3", True)):
        evo_rmse = compute_ate(t, est, t, T, alignment).rmse
        assert evo_rmse == pytest.approx(ate_rmse(est[:, :3, 3], T[:, :3, 3], with_scale), rel=1e-9)
    R, tt, s = umeyama_alignment(est[:, :3, 3], T[:, :3, 3], True)
    assert np.linalg.det(R) == pytest.approx(1.0) and s == pytest.approx(1 / 0.8, rel=0.05)


def test_ate_association_by_time():
    t, T = _random_traj(30)
    est_t = t[::3] + 0.004  # keyframe-like subset, small clock offset
    res = compute_ate(est_t, T[::3], t, T, "se3", max_diff=0.01)
    assert res.n_matched == 10 and res.n_reference == 30 and res.rmse < 1e-9
    with pytest.raises(EvaluationError, match="associate"):
        compute_ate(t + 100.0, T, t, T, "se3")
    with pytest.raises(EvaluationError, match="only 2 poses"):
        compute_ate(t[:2], T[:2], t, T, "se3")
    with pytest.raises(EvaluationError, match="alignment must be"):
        compute_ate(t, T, t, T, "affine")
    out = evaluate_trajectory(t[:2], T[:2], t, T)
    assert "error" in out["se3"] and "error" in out["sim3"]


# ---------------------------------------------------------------- PLY
def test_ply_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    P = rng.normal(size=(1000, 3)).astype(np.float32)
    C = rng.integers(0, 256, size=(1000, 3), dtype=np.uint8)
    Q = rng.random(1000).astype(np.float32)
    P[7] = np.nan
    n = write_ply(tmp_path / "m.ply", P, C, Q)
    assert n == 999
    header_len = (tmp_path / "m.ply").read_bytes().index(b"end_header\n") + len(b"end_header\n")
    assert (tmp_path / "m.ply").stat().st_size == header_len + 999 * (12 + 3 + 4)
    d = read_ply(tmp_path / "m.ply")
    keep = np.ones(1000, bool)
    keep[7] = False
    np.testing.assert_array_equal(d["points"], P[keep])
    np.testing.assert_array_equal(d["colors"], C[keep])
    np.testing.assert_array_equal(d["confidence"], Q[keep])


def test_ply_torch_float_colours_and_errors(tmp_path):
    P = torch.zeros(3, 3)
    write_ply(tmp_path / "t.ply", P, torch.tensor([[1.0, 0.5, 0.0]] * 3))
    d = read_ply(tmp_path / "t.ply")
    assert d["colors"].tolist() == [[255, 128, 0]] * 3 and "confidence" not in d
    with pytest.raises(PlyError, match="colors must be"):
        write_ply(tmp_path / "e.ply", P, np.zeros((2, 3), np.uint8))
    with pytest.raises(PlyError, match="points must be"):
        write_ply(tmp_path / "e.ply", np.zeros((3, 2)))
    (tmp_path / "a.ply").write_text(
        "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
        "end_header\n1 2 3\n4 5 6\n"
    )
    np.testing.assert_array_equal(read_ply(tmp_path / "a.ply")["points"], [[1, 2, 3], [4, 5, 6]])
    (tmp_path / "n.ply").write_text("not a ply")
    with pytest.raises(PlyError):
        read_ply(tmp_path / "n.ply")


# ---------------------------------------------------------------- timing, progress, reports
def test_stage_timer_accumulates():
    timer = StageTimer()
    timer.add("track", 2.0)
    timer.add("track", 4.0)
    with timer.stage("fuse"):
        sum(range(1000))
    s = timer.summary()
    assert s["track"] == {"total_ms": 6.0, "mean_ms": 3.0, "max_ms": 4.0, "count": 2}
    assert s["fuse"]["count"] == 1 and s["fuse"]["total_ms"] >= 0
    mem = peak_memory()
    assert mem["cpu_max_rss_mb"] > 10 and "cuda_max_allocated_mb" in mem


def test_progress_quiet_when_disabled(capsys):
    assert list(progress(range(5), enabled=False)) == list(range(5))
    assert capsys.readouterr().err == ""
    assert list(progress(iter(range(3)))) == [0, 1, 2]  # pytest's stderr is not a TTY: quiet
    assert capsys.readouterr().err == ""
    assert list(progress(range(3), enabled=True, desc="demo")) == [0, 1, 2]
    assert "demo" in capsys.readouterr().err


def test_metrics_and_timing_json(tmp_path):
    t, T = _random_traj(20)
    est = _apply_sim3(T, 2.0, np.eye(3), np.zeros(3))
    m = build_metrics(
        frames=(t, est),
        keyframes=(t[::5], est[::5]),
        reference=(t, T),
        skipped=[SkippedFrame(3, "/x/frame-3.png", "depth has no valid pixel")],
        dataset="synthetic",
        bad_value=float("nan"),
    )
    write_metrics_json(tmp_path / "metrics.json", m)
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["schema"] == "online3r_ros.metrics/1" and data["n_frames"] == 20 and data["n_keyframes"] == 4
    assert data["ate"]["frames"]["sim3"]["rmse"] < 1e-9 and data["ate"]["frames"]["se3"]["rmse"] > 0.01
    assert data["ate"]["keyframes"]["sim3"]["n_matched"] == 4
    assert data["skipped"][0]["reason"] == "depth has no valid pixel" and data["bad_value"] is None
    timer = StageTimer()
    timer.add("track", 10.0)
    write_timing_json(tmp_path / "timing.json", timer, n_frames=5, wall_s=2.0, device="cpu")
    tj = json.loads((tmp_path / "timing.json").read_text())
    assert tj["fps"] == 2.5 and tj["stages"]["track"]["count"] == 1 and tj["device"] == "cpu"
    assert tj["peak_memory"]["cpu_max_rss_mb"] > 0


def test_empty_outputs_are_valid_files(tmp_path):
    for poses in (np.zeros((0, 4, 4)), np.zeros((0, 8)), torch.zeros(0, 7)):
        write_tum(tmp_path / "e.tum", np.zeros(0), poses)
        t, T = read_tum(tmp_path / "e.tum")
        assert t.shape == (0,) and T.shape == (0, 4, 4)
    assert write_ply(tmp_path / "e.ply", np.zeros((0, 3)), np.zeros((0, 3), np.uint8)) == 0
    assert read_ply(tmp_path / "e.ply")["points"].shape == (0, 3)
