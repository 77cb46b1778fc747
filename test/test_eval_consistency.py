"""Depth-pair consistency score: the true relative pose explains two rendered depth images best."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from online3r_ros.eval import depth_pair_consistency
from online3r_ros.synthetic import make_synthetic_sequence


@pytest.fixture(scope="module")
def pair():
    seq = make_synthetic_sequence(n_frames=240, width=160, height=120, seed=0)
    frames = list(seq)
    a, b = frames[0], frames[4]
    T_ab = np.linalg.inv(a.pose_gt) @ b.pose_gt
    return (
        torch.as_tensor(a.depth),
        torch.as_tensor(b.depth),
        torch.as_tensor(a.K),
        torch.as_tensor(T_ab),
    )


def test_true_pose_is_consistent(pair):
    da, db, K, T = pair
    res = depth_pair_consistency(da, db, K, T, stride=2)
    assert res.n_associated > 1000
    assert res.truncated_rms < 1e-3
    assert res.inlier_fraction > 0.99


def test_perturbed_pose_scores_worse_and_monotone(pair):
    da, db, K, T = pair
    scores = []
    for step in (0.0, 0.01, 0.03):
        moved = T.clone()
        moved[:3, 3] += torch.tensor([step, -step, step / 2], dtype=T.dtype)
        scores.append(depth_pair_consistency(da, db, K, moved, stride=2).truncated_rms)
    assert scores[0] < scores[1] < scores[2]
    assert scores[2] > 0.005


def test_bad_input_is_rejected(pair):
    da, db, K, T = pair
    with pytest.raises(ValueError, match="one size"):
        depth_pair_consistency(da, db[:-1], K, T)
    with pytest.raises(ValueError, match=r"\[4, 4\]"):
        depth_pair_consistency(da, db, K, T[:3])
    with pytest.raises(ValueError, match="stride"):
        depth_pair_consistency(da, db, K, T, stride=0)
    away = T.clone()
    away[:3, 3] += torch.tensor([0.0, 0.0, -100.0], dtype=T.dtype)  # points end up behind camera a
    with pytest.raises(ValueError, match="no point"):
        depth_pair_consistency(da, db, K, away)


def test_nan_depth_is_ignored(pair):
    da, db, K, T = pair
    db = db.clone()
    db[:10] = float("nan")
    res = depth_pair_consistency(da, db, K, T, stride=2)
    assert np.isfinite(res.truncated_rms) and res.truncated_rms < 1e-3
