"""Geometric consistency of a relative pose with two depth images (no ground truth needed).

Used to ask how well a trajectory — an estimate or a dataset's ground truth — agrees with the depth data
itself: the points of depth image ``b`` are moved into camera ``a`` by the relative pose, associated with
``a``'s pixel by projection, and scored by their point-to-plane distance to ``a``'s surface. A pose that
explains the depth better gives a smaller truncated RMS and a larger inlier fraction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from online3r_ros.geometry.camera import backproject_depth, project
from online3r_ros.geometry.icp import pointmap_normals

Tensor = torch.Tensor

__all__ = ["DepthConsistency", "depth_pair_consistency"]


@dataclass(frozen=True)
class DepthConsistency:
    """Score of one relative pose against a depth pair.

    ``truncated_rms``: ``sqrt(mean(min(r², tau²)))`` over the associated points (m), ``r`` the point-to-plane
    distance; ``inlier_fraction``: share of associated points with ``|r| < tau``; ``n_associated``: points of
    ``b`` that landed on a valid pixel (and normal) of ``a`` within the occlusion gate.
    """

    truncated_rms: float
    inlier_fraction: float
    n_associated: int


def depth_pair_consistency(
    depth_a: Tensor,
    depth_b: Tensor,
    K: Tensor,
    T_ab: Tensor,
    *,
    stride: int = 4,
    tau: float = 0.02,
    gate: float = 0.1,
) -> DepthConsistency:
    """Point-to-plane agreement of ``depth_b`` moved into camera ``a`` by ``T_ab`` with ``depth_a``.

    Args:
        depth_a, depth_b: ``[H, W]`` depth (m), invalid pixels <= 0 or non-finite; same size.
        K: ``[3, 3]`` intrinsics of both images (pixels).
        T_ab: ``[4, 4]`` rigid transform taking camera-``b`` coordinates to camera-``a`` coordinates
            (``T_WCa^-1 · T_WCb``).
        stride: pixel stride of the sampled points of ``b`` (>= 1).
        tau: residual truncation and inlier threshold (m, > 0).
        gate: associations farther apart than this in 3D are treated as occlusions and ignored (m, > 0).

    Raises:
        ValueError: mismatched shapes, a non-[4, 4] pose, non-positive ``stride``/``tau``/``gate``, or no
            associated point at all (the views do not overlap under ``T_ab``).
    """
    if depth_a.dim() != 2 or depth_a.shape != depth_b.shape:
        raise ValueError(
            "depth_a and depth_b must be [H, W] of one size, "
            f"got {tuple(depth_a.shape)}, {tuple(depth_b.shape)}"
        )
    if tuple(T_ab.shape) != (4, 4):
        raise ValueError(f"T_ab must be [4, 4], got {tuple(T_ab.shape)}")
    if stride < 1 or tau <= 0 or gate <= 0:
        raise ValueError(f"need stride >= 1, tau > 0, gate > 0; got {stride}, {tau}, {gate}")
    dtype = torch.float64
    da = torch.nan_to_num(depth_a.to(dtype), nan=0.0, posinf=0.0, neginf=0.0)
    db = torch.nan_to_num(depth_b.to(dtype), nan=0.0, posinf=0.0, neginf=0.0)
    K = K.to(da)
    T = T_ab.to(da)
    H, W = da.shape
    Xa = backproject_depth(da, K)
    na, na_ok = pointmap_normals(Xa, da > 0)
    Xb = backproject_depth(db, K)[::stride, ::stride].reshape(-1, 3)
    Xb = Xb[Xb[:, 2] > 0]
    Q = Xb @ T[:3, :3].T + T[:3, 3]
    uv, ok = project(Q, K)
    u, v = torch.round(uv[:, 0]), torch.round(uv[:, 1])
    ok = ok & (u >= 0) & (u <= W - 1) & (v >= 0) & (v <= H - 1)
    lin = (u.clamp(0, W - 1) + W * v.clamp(0, H - 1)).long()
    target = Xa.reshape(-1, 3)[lin]
    normal = na.reshape(-1, 3)[lin]
    ok = ok & na_ok.reshape(-1)[lin] & ((Q - target).norm(dim=-1) < gate)
    n = int(ok.sum())
    if n == 0:
        raise ValueError("no point of depth_b lands on valid depth of depth_a under T_ab")
    r = ((Q - target) * normal).sum(-1)[ok]
    return DepthConsistency(
        truncated_rms=float(r.square().clamp_max(tau * tau).mean().sqrt()),
        inlier_fraction=float((r.abs() < tau).double().mean()),
        n_associated=n,
    )
