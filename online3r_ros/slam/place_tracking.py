"""The tracker's use of place recognition: keyframe features, the tracking guard and relocalisation.

- **Keyframes**: every keyframe's :class:`~online3r_ros.retrieval.features.LocalFeatures` (from the input
  image, before any resizing) joins the tracker's :class:`~online3r_ros.retrieval.place.PlaceRecognizer` and
  travels with its packet (loop closure in the mapper or the retrieval node).
- **Support** (features with depth): a pose is *supported* when it explains at least half as many feature
  matches as the best RANSAC hypothesis does, and at least a minimum number
  (:func:`~online3r_ros.retrieval.relpose.pose_support`). The right pose explains the matches RANSAC found;
  a wrong ICP minimum, or the right pose of another place, explains about none of them.
- **Guard**: projective ICP from a motion guess converges to a wrong minimum when the camera moves fast or
  jumps, and its statistics alone do not tell. A frame whose match fraction is below
  ``retrieval.guard_match_frac`` must be supported. If it is not and the matches agree on a pose of their
  own (RANSAC's best has at least half ``retrieval.min_inliers``), the frame is tracked again from that pose
  and the result must be supported, else the frame is LOST. If the matches agree on nothing (a poor match
  set), they cannot judge: the ICP result stands when its match fraction reaches ``reloc.min_match_frac``.
  A relocalisation on a recent keyframe is always checked, and between textured images (at least
  :data:`TEXTURED` keypoints with depth each) it must be supported. So "tracking" is only reported for a pose
  the features do not contradict.
- **Relocalisation**: the whole map is queried (ASMK), and the best candidates are tracked from RANSAC's
  best hypothesis (or from the keyframe's pose without depth, as MASt3R-SLAM does); the first result with
  ``reloc.min_match_frac`` that is supported by at least ``retrieval.min_inliers`` matches wins.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..geometry.lie import sim3_compose
from ..retrieval.features import LocalFeatures
from ..retrieval.place import PlaceRecognizer
from ..retrieval.relpose import RelPose, pose_support
from ..sources.base import SourceFrame
from .config import SlamConfig
from .flow_prior import FlowImage
from .places import Describer
from .tracking import TrackingState, TrackResult

Tensor = torch.Tensor

__all__ = ["FrameInput", "PlaceTracking"]

#: support counts matches within this many RANSAC inlier thresholds: the tracked pose fits the depth images,
#: RANSAC fits the keypoints' 3D points, which carry their own error (depth at an edge, colour-depth offset)
SUPPORT_TOLERANCE = 2.0
#: images with at least this many features with depth are textured enough to judge a pose: few matches
#: between two of them mean different places (or a wrong pose), not a blank wall
TEXTURED = 100

TrackFn = Callable[[SourceFrame, int, Tensor], TrackResult]  # (frame, keyframe id, T_WC guess) -> result
PoseOf = Callable[[int], Tensor]  # keyframe id -> current T_WC [8] float64


@dataclass
class FrameInput:
    """One input image as the tracker got it (``rgb``, ``depth``, ``K``) and prepared (``sf``); its local
    features and its flow image (:class:`~online3r_ros.slam.flow_prior.FlowImage`) are computed at most
    once, when first needed."""

    sf: SourceFrame
    rgb: object
    depth: object = None
    K: object = None
    features: LocalFeatures | None = None
    flow: FlowImage | None = None


def _lost(res: TrackResult, reason: str) -> TrackResult:
    return dataclasses.replace(res, state=TrackingState.LOST, reason=reason, X_kk=None, C_kf=None)


class PlaceTracking:
    """Keyframe features + guard + relocalisation for :class:`~online3r_ros.slam.frontend.TrackerFrontend`."""

    def __init__(self, config: SlamConfig, describe: Describer, places: PlaceRecognizer) -> None:
        self.config, self.describe, self.places = config, describe, places
        self.n_guard_checks = 0
        self.n_guard_recovered = 0
        self.n_guard_rejected = 0

    def reset(self) -> None:
        self.places.reset()

    def features(self, inp: FrameInput) -> LocalFeatures:
        if inp.features is None:
            inp.features = self.describe(inp.sf, inp.rgb, inp.depth, inp.K)
        return inp.features

    def add_keyframe(self, kf_id: int, inp: FrameInput) -> LocalFeatures:
        """Index keyframe ``kf_id`` made from ``inp``; returns its features (for the packet)."""
        feats = self.features(inp)
        self.places.add(kf_id, feats)
        return feats

    def _support(self, feats: LocalFeatures, kf_id: int, rp: RelPose, T_kf_frame: Tensor) -> tuple[int, int]:
        ref = self.places.features[kf_id]
        return pose_support(feats, ref, rp, T_kf_frame, self.places.relpose_config, SUPPORT_TOLERANCE)

    def _needed(self, rp: RelPose, floor: int) -> int:
        """Matches a pose must explain: half of RANSAC's best consensus, at least ``floor``."""
        return max(floor, math.ceil(0.5 * rp.n_inliers))

    def _points(self, feats: LocalFeatures) -> int:
        """Features with a 3D point (0 without depth)."""
        return 0 if feats.points is None else int(torch.isfinite(feats.points).all(dim=1).sum())

    def guard(
        self,
        inp: FrameInput,
        kf_id: int,
        res: TrackResult,
        track: TrackFn,
        kf_pose: PoseOf,
        always: bool = False,
    ) -> TrackResult:
        """``res`` (``inp`` tracked against keyframe ``kf_id``) checked against the local features (see the
        module docstring; ``always``: whatever its match fraction, as for a relocalisation); returns the
        result to use (LOST with the reason when rejected)."""
        rc = self.config.retrieval
        if res.lost or (res.match_frac >= rc.guard_match_frac and not always) or kf_id not in self.places:
            return res
        feats = self.features(inp)
        rp = self.places.relative_pose(feats, kf_id)
        if rp is None:  # no depth on one side: nothing independent to check with
            return res
        self.n_guard_checks += 1
        floor = max(3, rc.min_inliers // 2)
        need = self._needed(rp, floor)
        support, n_valid = self._support(feats, kf_id, rp, res.T_CkCf)
        if support >= need:
            return res
        if rp.T_best is not None and rp.n_inliers >= floor:  # the matches agree on a pose, and not on ICP's
            again = track(inp.sf, kf_id, sim3_compose(kf_pose(kf_id), rp.T_best.to(torch.float64)))
            if not again.lost and self._support(feats, kf_id, rp, again.T_CkCf)[0] >= need:
                self.n_guard_recovered += 1
                return dataclasses.replace(
                    again, stats={**again.stats, "guard": "recovered from RANSAC's pose"}
                )
            why = f"the matches agree on another pose ({rp.n_inliers} inliers, {support} for this one)"
        elif always and min(self._points(feats), self._points(self.places.features[kf_id])) >= TEXTURED:
            why = f"no feature support for a relocalisation ({n_valid} matches, {rp.n_inliers} agree)"
        elif res.match_frac >= self.config.reloc.min_match_frac:
            return res  # the matches agree on nothing: they cannot judge, the overlap decides
        else:
            why = f"match fraction {res.match_frac:.2f} and no feature support"
        self.n_guard_rejected += 1
        return _lost(res, f"tracking unverified: {why}")

    def relocalise(self, inp: FrameInput, track: TrackFn, kf_pose: PoseOf) -> tuple[int, TrackResult] | None:
        """Query the whole map and track from the best candidates; ``(keyframe id, result)`` of the first
        accepted one, else ``None``."""
        rc, min_frac = self.config.retrieval, self.config.reloc.min_match_frac
        feats = self.features(inp)
        for cand in self.places.candidates(feats, k=rc.reloc_candidates, verified=False):
            rp = cand.pose
            if rp is None:  # no depth: the network's tracking is prior-free, start at the keyframe
                res = track(inp.sf, cand.kf_id, kf_pose(cand.kf_id))
                if not res.lost and res.match_frac >= min_frac:
                    return cand.kf_id, res
                continue
            if rp.T_best is None or rp.n_inliers < rc.min_inliers:
                continue
            res = track(inp.sf, cand.kf_id, sim3_compose(kf_pose(cand.kf_id), rp.T_best.to(torch.float64)))
            if res.lost or res.match_frac < min_frac:
                continue
            if self._support(feats, cand.kf_id, rp, res.T_CkCf)[0] >= self._needed(rp, rc.min_inliers):
                return cand.kf_id, res
        return None

    def stats(self) -> dict:
        return {
            "keyframes_indexed": len(self.places),
            "guard_checks": self.n_guard_checks,
            "guard_recovered": self.n_guard_recovered,
            "guard_rejected": self.n_guard_rejected,
        }
