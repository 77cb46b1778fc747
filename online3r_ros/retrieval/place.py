"""Place recognition over the keyframes: what relocalisation, loop closure and the tracking guard ask.

:class:`PlaceRecognizer` owns the keyframes' :class:`~online3r_ros.retrieval.features.LocalFeatures` and their
ASMK :class:`~online3r_ros.retrieval.database.ImageDatabase`. It answers three questions:

- :meth:`~PlaceRecognizer.candidates`: which keyframes look like this image (ranked ASMK scores), each with
  its prior-free relative pose when the features carry depth (verified by RANSAC; unverified ones dropped);
- :meth:`~PlaceRecognizer.loop_candidates`: the same for a new keyframe, excluding its recent predecessors,
  and then the keyframe joins the database (MASt3R-SLAM's ``update(add_after_query=True)``);
- :meth:`~PlaceRecognizer.relative_pose`: the prior-free pose of an image in one given keyframe.

The tracker (relocalisation, guard), the in-process loop closer and the retrieval node each hold one; the map
file keeps the features, and the database is rebuilt from them on load (same ids, same scores).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

import torch

from .database import ImageDatabase
from .features import LocalFeatures
from .relpose import RelPose, RelPoseConfig, estimate_relative_pose

Tensor = torch.Tensor

__all__ = ["PlaceCandidate", "PlaceRecognizer"]


@dataclass(frozen=True)
class PlaceCandidate:
    """A keyframe that looks like the query: ``kf_id``, ASMK ``score`` and, for features with depth, the
    verified prior-free pose ``T_kf_query`` (query camera -> keyframe camera, Sim(3) ``[8]`` float64;
    ``None`` without depth) with its RANSAC report ``pose`` (``None`` once sent over a topic)."""

    kf_id: int
    score: float
    T_kf_query: Tensor | None = None
    pose: RelPose | None = None


class PlaceRecognizer:
    """Keyframe features + ASMK database + prior-free pose (see the module docstring).

    Args:
        database_factory: makes an empty :class:`ImageDatabase` (called again by :meth:`reset`).
        relpose: RANSAC and verification parameters of the prior-free pose.
        k: keyframes retrieved per query; ``min_score``: ASMK score they need.
    """

    def __init__(
        self,
        database_factory: Callable[[], ImageDatabase],
        relpose: RelPoseConfig,
        k: int = 3,
        min_score: float = 5e-3,
    ) -> None:
        self._make_database = database_factory
        self.relpose_config = relpose
        self.k, self.min_score = int(k), float(min_score)
        self.reset()

    def reset(self) -> None:
        """Forget every keyframe."""
        self.database = self._make_database()
        self.features: dict[int, LocalFeatures] = {}

    def __len__(self) -> int:
        return len(self.features)

    def __contains__(self, kf_id: int) -> bool:
        return int(kf_id) in self.features

    def add(self, kf_id: int, feats: LocalFeatures) -> None:
        """Index keyframe ``kf_id`` (a second add of the same id is ignored)."""
        if int(kf_id) in self.features:
            return
        self.database.add(int(kf_id), feats)  # first: it refuses features of another kind or size
        self.features[int(kf_id)] = feats

    def relative_pose(self, feats: LocalFeatures, kf_id: int) -> RelPose | None:
        """Prior-free pose of the image of ``feats`` in keyframe ``kf_id``; ``None`` when either side has no
        depth (nothing to verify with) or the keyframe is not indexed."""
        ref = self.features.get(int(kf_id))
        if ref is None or ref.points is None or feats.points is None:
            return None
        return estimate_relative_pose(feats, ref, self.relpose_config)

    def candidates(
        self, feats: LocalFeatures, k: int | None = None, exclude: Collection[int] = (), verified: bool = True
    ) -> list[PlaceCandidate]:
        """Keyframes that look like ``feats``, best score first. With depth and ``verified``, only those whose
        prior-free pose passes verification; otherwise all retrieved ones, each with its RANSAC report (the
        caller verifies, e.g. by tracking)."""
        if len(self.features) == 0:
            return []
        hits = self.database.query(
            feats, k=self.k if k is None else int(k), min_score=self.min_score, exclude=exclude
        )
        out = []
        for kf_id, score in hits:
            pose = self.relative_pose(feats, kf_id)
            if verified and pose is not None and not pose.ok:
                continue
            T = None if pose is None or not pose.ok else pose.T_ref_query.detach().to("cpu", torch.float64)
            out.append(PlaceCandidate(int(kf_id), float(score), T, pose))
        return out

    def loop_candidates(self, kf_id: int, feats: LocalFeatures, exclude_recent: int) -> list[PlaceCandidate]:
        """Verified loop candidates of new keyframe ``kf_id`` among keyframes older than its
        ``exclude_recent`` predecessors; then ``kf_id`` joins the database."""
        newest = int(kf_id) - int(exclude_recent)
        exclude = [i for i in self.features if i >= newest]
        out = self.candidates(feats, exclude=exclude) if newest > 0 else []
        self.add(kf_id, feats)
        return out

    def state_dict(self) -> dict:
        """The indexed features (the database is rebuilt from them by :meth:`load_state_dict`)."""
        return {"features": {i: f.state_dict() for i, f in self.features.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.reset()
        for kf_id, f in sorted(state.get("features", {}).items()):
            self.add(int(kf_id), LocalFeatures.from_state_dict(f))
