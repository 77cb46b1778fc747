"""The tracking guard's decision (:meth:`PlaceTracking.guard`), the feature matching replaced by fixed
answers: a frame tracked with a low match fraction whose matches agree on another pose is tracked again
from it; the new result replaces it only when the features support it and it explains the depth at least
as well."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from online3r_ros.slam import place_tracking as PT
from online3r_ros.slam.config import load_config
from online3r_ros.slam.tracking import TrackingState, TrackResult

IDENTITY = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1], dtype=torch.float64)
RANSAC_POSE = torch.tensor([2.0, 0, 0, 0, 0, 0, 1, 1], dtype=torch.float64)


class _Places:
    """Stands in for the place database: keyframe 0 is indexed, RANSAC agrees on ``RANSAC_POSE``."""

    relpose_config = None
    features = {0: None}

    def __contains__(self, kf_id: int) -> bool:
        return kf_id == 0

    def relative_pose(self, feats, kf_id):
        return SimpleNamespace(T_best=RANSAC_POSE, n_inliers=40)


def _result(match_frac: float, T: torch.Tensor) -> TrackResult:
    return TrackResult(TrackingState.TRACKING, T_WC=T, T_CkCf=T, match_frac=match_frac)


@pytest.fixture
def guard(monkeypatch):
    # the features support a pose exactly when it is RANSAC's (20 of the 40 inliers needed)
    def support(feats, ref, rp, T_kf_frame, cfg, tol):
        return (40 if torch.equal(T_kf_frame, RANSAC_POSE) else 0), 50

    monkeypatch.setattr(PT, "pose_support", support)
    tracker = PT.PlaceTracking(load_config(), describe=lambda *a: None, places=_Places())
    inp = PT.FrameInput(sf=None, rgb=None, features=object())
    return tracker, inp


@pytest.mark.parametrize(("again_frac", "recovered"), [(0.5, True), (0.45, True), (0.3, False)])
def test_recovery_must_explain_the_depth_at_least_as_well(guard, again_frac, recovered) -> None:
    tracker, inp = guard
    res = _result(0.45, IDENTITY)  # below retrieval.guard_match_frac: checked; unsupported
    again = _result(again_frac, RANSAC_POSE)
    out = tracker.guard(inp, 0, res, track=lambda sf, kf, guess: again, kf_pose=lambda k: IDENTITY)
    if recovered:
        assert out is not res and torch.equal(out.T_CkCf, RANSAC_POSE) and not out.lost
        assert tracker.n_guard_recovered == 1
    else:
        assert out.lost and "another pose" in out.reason and tracker.n_guard_rejected == 1


def test_a_supported_or_confident_result_is_kept(guard) -> None:
    tracker, inp = guard
    confident = _result(0.9, IDENTITY)
    assert tracker.guard(inp, 0, confident, track=None, kf_pose=None) is confident
    supported = _result(0.3, RANSAC_POSE)
    assert tracker.guard(inp, 0, supported, track=None, kf_pose=None) is supported
