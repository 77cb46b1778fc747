"""Keyframes near a pose: the one geometric ranking behind proximity edges and the tracking model.

- :func:`nearby_keyframes`: keyframes whose camera is within a distance and whose optical axis is within an
  angle of a reference pose, nearest first (score = distance / max_dist + angle / max_angle).
- :func:`proximity_candidates`: the backend's cheap loop-candidate search for a new keyframe (metric
  sources only: distances need a known scale).
- :func:`model_keyframe_ids`: the keyframes whose fused pointmaps join the current keyframe's in the RGB-D
  tracking model (the previous keyframe first, then the nearest others).
- :func:`tracking_keyframe`: the :class:`~online3r_ros.slam.tracking.TrackingKeyframe` (with those model
  neighbours) that :class:`~online3r_ros.slam.frontend.TrackerFrontend` hands to
  the :class:`~online3r_ros.slam.tracking.FrameTracker`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from ..geometry.lie import sim3_compose, sim3_inverse
from ..sources.base import SourceFrame
from .config import SlamConfig
from .keyframes import KeyframeStore
from .tracking import TrackingKeyframe

Tensor = torch.Tensor

__all__ = ["nearby_keyframes", "proximity_candidates", "model_keyframe_ids", "tracking_keyframe"]


def nearby_keyframes(
    T_WC: Tensor,
    T_ref: Tensor,
    n: int,
    max_dist: float,
    max_angle_deg: float,
    exclude: Iterable[int] = (),
) -> list[int]:
    """Up to ``n`` indices of the poses ``T_WC [K, 8]`` (Sim(3), world units) within ``max_dist`` of the
    reference camera ``T_ref [8]`` and with their optical axis within ``max_angle_deg`` of its, nearest
    first (score = distance / max_dist + angle / max_angle; ties keep index order); ``exclude`` is skipped."""
    if n <= 0 or T_WC.shape[0] == 0:
        return []
    T = T_WC.detach().to("cpu", torch.float64)
    ref = T_ref.detach().to("cpu", torch.float64).reshape(8)
    rel = sim3_compose(sim3_inverse(T), ref.expand_as(T))  # the reference camera in each keyframe
    dist = rel[:, :3].norm(dim=-1)
    qx, qy = rel[:, 3], rel[:, 4]
    angle = torch.rad2deg(torch.acos((1.0 - 2.0 * (qx * qx + qy * qy)).clamp(-1.0, 1.0)))
    ok = (dist < max_dist) & (angle < max_angle_deg)
    skip = [int(i) for i in exclude if 0 <= int(i) < T.shape[0]]
    if skip:
        ok[skip] = False
    score = dist / max_dist + angle / max_angle_deg
    ids = torch.nonzero(ok).flatten()
    order = ids[torch.argsort(score[ids], stable=True)]
    return [int(i) for i in order[:n]]


def proximity_candidates(
    T_WC: Tensor, new_id: int, n: int, max_dist: float, max_angle_deg: float, metric: bool
) -> list[int]:
    """Up to ``n`` keyframes before ``new_id - 1`` whose pose (``T_WC [K, 8]``) is within ``max_dist`` and
    whose optical axis is within ``max_angle_deg`` of keyframe ``new_id``'s, nearest first (see
    :func:`nearby_keyframes`); metric sources only (distances need a known scale)."""
    if n <= 0 or new_id < 2 or not metric:
        return []
    return nearby_keyframes(T_WC[: new_id - 1], T_WC[new_id], n, max_dist, max_angle_deg)


def model_keyframe_ids(T_WC: Tensor, kf_id: int, n: int, max_dist: float, max_angle_deg: float) -> list[int]:
    """Keyframes (besides ``kf_id``) whose pointmaps join keyframe ``kf_id``'s in the tracking model: the
    previous keyframe ``kf_id - 1`` first (always, when it exists: it shares the most recent view), then the
    keyframes nearest to ``kf_id``'s pose (:func:`nearby_keyframes`), at most ``n`` in all (0: none)."""
    if n <= 0 or T_WC.shape[0] < 2:
        return []
    first = [kf_id - 1] if kf_id >= 1 else []
    rest = nearby_keyframes(T_WC, T_WC[kf_id], n - len(first), max_dist, max_angle_deg, [kf_id, *first])
    return (first + rest)[:n]


def tracking_keyframe(
    store: KeyframeStore, frames: Sequence[SourceFrame], kf_id: int, cfg: SlamConfig | None = None
) -> TrackingKeyframe:
    """Keyframe ``kf_id`` of ``store`` as a tracking target (``frames[kf_id]`` its prepared frame), with the
    model neighbours of :func:`model_keyframe_ids` from ``cfg.tracking`` (``model_keyframes``,
    ``model_max_dist``, ``model_max_angle``; ``cfg=None``: none) at their current poses."""

    def one(k: int, neighbours: list[TrackingKeyframe]) -> TrackingKeyframe:
        kf = store.get(k, fields=())
        return TrackingKeyframe(
            frame=frames[k], T_WC=kf.T_WC, X=kf.X, C=kf.average_confidence(), kf_id=k, neighbours=neighbours
        )

    ids: list[int] = []
    if cfg is not None and cfg.tracking.model_keyframes > 0 and len(store) > 1:
        tc = cfg.tracking
        ids = model_keyframe_ids(
            store.get_poses(), kf_id, tc.model_keyframes, tc.model_max_dist, tc.model_max_angle
        )
    return one(kf_id, [one(k, []) for k in ids])
