"""Can a downstream filter trust the label? Errors of the poses as they were output, per state.

The final trajectory follows the optimised keyframes; a robot's EKF saw each pose once, when it was
published, with its state (``tracking`` / ``reloc``). :func:`online_pose_errors` aligns those online poses to
the ground truth (one SE(3) or Sim(3) Umeyama fit over all of them) and reports the largest error per state
and how many poses labelled ``tracking`` were more than ``threshold`` off.
"""

from __future__ import annotations

import numpy as np

from .ate import compute_ate
from .poses import poses_to_matrix

__all__ = ["online_pose_errors"]


def online_pose_errors(
    timestamps: np.ndarray,
    poses,
    states: list[str],
    gt_timestamps: np.ndarray,
    gt_poses,
    threshold: float = 0.10,
    alignment: str = "se3",
    max_diff: float = 0.02,
) -> dict:
    """``{"alignment", "threshold", "max_error": {state: m}, "n_over": {state: count}, "n": {state: count}}``
    for online poses ``poses [N, ...]`` (any format of :func:`poses_to_matrix`) at ``timestamps [N]`` s with
    their ``states``; poses without a ground-truth stamp within ``max_diff`` s are left out."""
    ts = np.asarray(timestamps, dtype=np.float64)
    est = poses_to_matrix(poses)
    gt_t = np.asarray(gt_timestamps, dtype=np.float64)
    gt = poses_to_matrix(gt_poses)
    fit = compute_ate(ts, est, gt_t, gt, alignment, max_diff)
    order = np.argsort(gt_t)
    pos = np.clip(np.searchsorted(gt_t[order], ts), 1, len(gt_t) - 1)
    near = np.where(np.abs(gt_t[order][pos - 1] - ts) <= np.abs(gt_t[order][pos] - ts), pos - 1, pos)
    idx = order[near]
    ok = np.abs(gt_t[idx] - ts) <= max_diff
    R, t = np.asarray(fit.rotation), np.asarray(fit.translation)
    aligned = fit.scale * est[:, :3, 3] @ R.T + t
    err = np.linalg.norm(aligned - gt[idx, :3, 3], axis=1)
    out: dict = {"alignment": alignment, "threshold": threshold, "max_error": {}, "n_over": {}, "n": {}}
    labels = np.asarray(states)
    for state in sorted(set(states)):
        sel = ok & (labels == state)
        out["n"][state] = int(sel.sum())
        out["max_error"][state] = float(err[sel].max()) if sel.any() else None
        out["n_over"][state] = int((err[sel] > threshold).sum())
    return out
