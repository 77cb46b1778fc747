"""Reconstruction metrics: voxel downsampling, accuracy / completeness / Chamfer / F-score on synthetic clouds
with known answers, the pose-based map alignment, and the ground-truth cloud fused from 7-Scenes depth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from online3r_ros.datasets import open_dataset
from online3r_ros.eval.reconstruction import (
    ReconstructionError,
    backproject_depth,
    dataset_cloud,
    fuse_depth_frames,
    map_alignment,
    reconstruction_metrics,
    voxel_downsample,
)

SEVEN = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "7scenes_redkitchen_0000_0499"


def _plane(size: float = 1.0, step: float = 0.01, z: float = 0.0) -> np.ndarray:
    """A square of side ``size`` in the z = ``z`` plane, ``step`` apart."""
    g = np.arange(0.0, size + 1e-9, step)
    x, y = np.meshgrid(g, g, indexing="ij")
    return np.stack([x.ravel(), y.ravel(), np.full(x.size, z)], axis=1)


def test_voxel_downsample_keeps_one_centroid_per_voxel():
    rng = np.random.default_rng(0)
    centres = np.array([[0.5, 0.5, 0.5], [2.5, 0.5, 0.5], [0.5, 3.5, 0.5]])
    pts = np.repeat(centres, 100, axis=0) + rng.uniform(-0.4, 0.4, (300, 3))
    out = voxel_downsample(pts, 1.0)
    assert out.shape == (3, 3)
    assert np.allclose(
        np.sort(out, axis=0), np.sort([pts[k * 100 : (k + 1) * 100].mean(0) for k in range(3)], axis=0)
    )
    assert np.allclose(voxel_downsample(pts[::-1], 1.0), out, atol=1e-12)  # order-independent
    with_nan = np.vstack([pts, [[np.nan, 0, 0]]])
    assert len(voxel_downsample(with_nan, 1.0)) == 3 and len(voxel_downsample(with_nan, 0.0)) == 300


def test_identical_clouds_score_perfectly():
    p = _plane()
    r = reconstruction_metrics(p, p, voxel=0.02, threshold=0.05)
    assert r.accuracy_mean < 1e-12 and r.completeness_mean < 1e-12 and r.chamfer < 1e-12
    assert r.precision == r.recall == r.fscore == 1.0


def test_shifted_plane_accuracy_and_completeness_equal_the_shift():
    gt = _plane(z=0.0)
    for shift, (precision, recall) in ((0.03, (1.0, 1.0)), (0.08, (0.0, 0.0))):
        r = reconstruction_metrics(_plane(z=shift), gt, voxel=0.02, threshold=0.05)
        assert r.accuracy_mean == pytest.approx(shift, abs=1e-9)
        assert r.accuracy_median == pytest.approx(shift, abs=1e-9)
        assert r.completeness_mean == pytest.approx(shift, abs=1e-9)
        assert r.chamfer == pytest.approx(shift, abs=1e-9)
        assert (r.precision, r.recall) == (precision, recall)


def test_missing_half_lowers_completeness_not_accuracy():
    gt = _plane(size=1.0)
    half = gt[gt[:, 0] < 0.5 - 1e-9]  # x in [0, 0.5): half of the surface is not mapped
    r = reconstruction_metrics(half, gt, voxel=0.02, threshold=0.05)
    assert r.accuracy_mean < 1e-9 and r.precision == 1.0
    # ground-truth points at x >= 0.5 are (x - 0.49) metres from the estimate: a known mean
    vox, vox_half = voxel_downsample(gt, 0.02), voxel_downsample(half, 0.02)
    d = np.maximum(vox[:, 0] - vox_half[:, 0].max(), 0.0)
    dv, _ = cKDTree(vox_half).query(vox)
    assert np.allclose(dv, d, atol=1e-9)
    assert r.completeness_mean == pytest.approx(d.mean(), rel=1e-9) and r.completeness_mean > 0.1
    assert r.recall == pytest.approx(np.mean(d < 0.05)) and 0.5 < r.recall < 0.6
    assert r.fscore == pytest.approx(2 * r.recall / (1 + r.recall))


def test_alignment_is_applied_to_the_estimate():
    gt = _plane() + 0.005  # off the voxel boundaries: rounding cannot move a point to another voxel
    R = Rotation.from_rotvec([0.1, 0.4, -0.2]).as_matrix()
    t = np.array([1.0, -2.0, 0.5])
    moved = (gt - t) @ R  # R.T @ (p - t): the estimate's world
    assert reconstruction_metrics(moved, gt).accuracy_mean > 0.1
    assert reconstruction_metrics(moved, gt, rotation=R, translation=t).accuracy_mean < 1e-9
    with pytest.raises(ReconstructionError, match="empty cloud"):
        reconstruction_metrics(np.zeros((0, 3)), gt)
    with pytest.raises(ReconstructionError, match=r"\[N, 3\]"):
        reconstruction_metrics(np.zeros((5, 2)), gt)


def test_map_alignment_uses_orientations_on_a_straight_trajectory():
    """A camera moving along a line: positions alone leave the roll about the line free; the poses fix it."""
    n = 30
    t = np.arange(n) / 30.0
    ref = np.tile(np.eye(4), (n, 1, 1))
    ref[:, 0, 3] = 0.2 * t
    ref[:, :3, :3] = Rotation.from_rotvec(np.outer(np.linspace(0, 0.05, n), [0, 1, 0])).as_matrix()
    G = np.eye(4)
    G[:3, :3] = Rotation.from_rotvec([0.7, 0.1, -0.3]).as_matrix()
    G[:3, 3] = [0.4, 1.0, -2.0]
    est = np.linalg.inv(G) @ ref  # the same cameras in another world frame
    R, tr, s = map_alignment(t, est, t, ref)
    assert s == 1.0 and np.allclose(R, G[:3, :3], atol=1e-9) and np.allclose(tr, G[:3, 3], atol=1e-9)


def test_backprojection_of_a_flat_wall():
    K = np.array([[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]])
    depth = np.full((48, 64), 2.0, dtype=np.float32)
    depth[:, :8] = 0.0  # invalid
    depth[:, -8:] = 9.0  # beyond depth_max
    T = np.eye(4)
    T[:3, 3] = [1.0, 2.0, 3.0]
    pts = backproject_depth(depth, K, T, pixel_stride=2, depth_max=4.0)
    assert pts.shape == (24 * 24, 3) and np.allclose(pts[:, 2], 5.0)
    assert np.allclose(pts[:, 0].min(), 1.0 + (8 - 32) * 2.0 / 100.0)


@pytest.mark.skipif(not SEVEN.is_dir(), reason=f"shared data folder {SEVEN} not present")
def test_ground_truth_cloud_from_7scenes_frames_is_consistent():
    frames = list(open_dataset(SEVEN, stride=10, max_frames=3))
    cloud = fuse_depth_frames(frames, voxel=0.02)
    assert 5_000 < len(cloud) < 200_000
    # every frame's own back-projection lies on the fused cloud (the poses and depths agree)
    for f in frames:
        own = voxel_downsample(backproject_depth(f.depth, f.K, f.pose_gt), 0.02)
        d, _ = cKDTree(cloud).query(own)
        assert np.median(d) < 0.01
    # and the cloud is in front of the cameras, within the depth range
    cam = frames[0].pose_gt
    local = (cloud - cam[:3, 3]) @ cam[:3, :3]
    assert np.median(local[:, 2]) > 0.5
    # dataset_cloud picks frames within the time span given: the first 10 frames only here
    sub, n = dataset_cloud(SEVEN, np.arange(10) / 30.0, max_frames=5)
    assert n == 5 and 1_000 < len(sub) < len(cloud) * 2
    with pytest.raises(ReconstructionError, match="no frame"):
        dataset_cloud(SEVEN, np.array([1e6, 1e6 + 1]))
