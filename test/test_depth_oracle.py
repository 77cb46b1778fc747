"""DepthOracleSource: depth pointmaps with ground-truth poses, presented as an uncalibrated network source."""

from __future__ import annotations

import pytest
import torch

from online3r_ros.geometry import lie
from online3r_ros.sources.base import SourceError
from online3r_ros.sources.depth_oracle import DepthOracleSource
from online3r_ros.synthetic import make_synthetic_sequence


def test_keyframe_points_are_moved_into_the_frame_with_the_true_pose():
    f0, f1 = list(make_synthetic_sequence(width=64, height=48, seed=0, max_frames=6))[::5]
    src = DepthOracleSource(width=64, height=48)
    assert not (src.metric or src.calibrated or src.pose_dependent) and src.has_descriptors
    a = src.prepare(f0.rgb, index=0, depth=f0.depth, K=f0.K, T_WC=f0.pose_gt)
    b = src.prepare(f1.rgb, index=1, depth=f1.depth, K=f1.K, T_WC=f1.pose_gt)
    assert a.K is None and a.cache["D"].shape == (48, 64, 25)
    pred = src.predict_asymmetric(b, a)
    assert pred.frame.X is b.cache["X"]
    ok = a.cache["C"] > 0
    # the moved keyframe points, seen from the world, are where the keyframe saw them
    Xw_k = lie.sim3_act(lie.sim3_from_matrix(torch.as_tensor(f0.pose_gt)).float(), a.cache["X"])
    Xw_f = lie.sim3_act(lie.sim3_from_matrix(torch.as_tensor(f1.pose_gt)).float(), pred.keyframe.X)
    torch.testing.assert_close(Xw_f[ok], Xw_k[ok], atol=1e-4, rtol=0)
    assert torch.equal(pred.keyframe.C, a.cache["C"])
    with pytest.raises(SourceError, match="T_WC"):
        src.prepare(f0.rgb, depth=f0.depth, K=f0.K)
