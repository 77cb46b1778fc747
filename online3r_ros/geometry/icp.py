"""Projective point-to-plane ICP pieces for metric, calibrated pointmaps (RGB-D tracking).

The keyframe's points ``X_k`` (its own frame) are associated with the frame's pointmap by projecting
``T_CkCf^-1 · X_k`` into the frame with ``K`` (nearest pixel) every time the residual is evaluated, and the
residual is the point-to-plane distance ``n_k · (X_k - T_CkCf · X_f[p])`` in keyframe coordinates.
"""

from __future__ import annotations

import torch

from online3r_ros.geometry.camera import project
from online3r_ros.geometry.lie import sim3_act, sim3_act_jacobian, sim3_inverse

Tensor = torch.Tensor

__all__ = ["pointmap_normals", "projective_association", "point_to_plane_residuals"]


def pointmap_normals(X: Tensor, valid: Tensor, max_step: float = 0.05) -> tuple[Tensor, Tensor]:
    """Unit normals ``[H, W, 3]`` (facing the camera) of an organised pointmap ``X[H, W, 3]`` from central
    differences, and their validity ``[H, W]`` (all four neighbours valid, neighbour steps < ``max_step``
    plus 5% of the depth: no normals across depth discontinuities; border pixels invalid)."""
    H, W = X.shape[:2]
    n = torch.zeros_like(X)
    ok = torch.zeros(H, W, dtype=torch.bool, device=X.device)
    if H < 3 or W < 3:
        return n, ok
    dx = X[1:-1, 2:] - X[1:-1, :-2]
    dy = X[2:, 1:-1] - X[:-2, 1:-1]
    c = torch.linalg.cross(dx, dy, dim=-1)
    norm = c.norm(dim=-1, keepdim=True)
    nc = c / norm.clamp_min(1e-12)
    Xc = X[1:-1, 1:-1]
    nc = torch.where((nc * Xc).sum(-1, keepdim=True) > 0, -nc, nc)
    lim = 2 * (max_step + 0.05 * Xc[..., 2])
    v = (
        valid[1:-1, 1:-1]
        & valid[1:-1, 2:]
        & valid[1:-1, :-2]
        & valid[2:, 1:-1]
        & valid[:-2, 1:-1]
        & (dx.norm(dim=-1) < lim)
        & (dy.norm(dim=-1) < lim)
        & (norm.squeeze(-1) > 0)
    )
    n[1:-1, 1:-1] = nc
    ok[1:-1, 1:-1] = v
    return n, ok


def projective_association(
    T_CkCf: Tensor, X_k: Tensor, X_f: Tensor, valid_f: Tensor, K: Tensor, dist_thresh: float
) -> tuple[Tensor, Tensor]:
    """For keyframe points ``X_k[N, 3]`` (keyframe frame) the frame pixel they project to (linear index
    ``[N]``) under ``T_CkCf`` and validity ``[N]`` (inside the image, frame depth valid, 3D distance between
    the frame's point moved to the keyframe and ``X_k`` below ``dist_thresh``)."""
    H, W = X_f.shape[:2]
    P = sim3_act(sim3_inverse(T_CkCf), X_k)
    uv, ok = project(P, K)
    u = torch.round(uv[..., 0])
    v = torch.round(uv[..., 1])
    ok = ok & (u >= 0) & (u <= W - 1) & (v >= 0) & (v <= H - 1)
    lin = (u.clamp(0, W - 1) + W * v.clamp(0, H - 1)).long()
    ok = ok & valid_f.reshape(-1)[lin]
    Xf = X_f.reshape(-1, 3)[lin]
    ok = ok & ((Xf - P).norm(dim=-1) < dist_thresh)
    return lin, ok


def point_to_plane_residuals(T_CkCf: Tensor, X_f: Tensor, X_k: Tensor, n_k: Tensor) -> tuple[Tensor, Tensor]:
    """``r = n_k · (X_k - T·X_f)`` ``[N, 1]`` and ``J = dr/dxi`` ``[N, 1, 7]`` (left perturbation)."""
    P = sim3_act(T_CkCf, X_f)
    r = (n_k * (X_k - P)).sum(-1, keepdim=True)
    J = -(n_k.unsqueeze(-2) @ sim3_act_jacobian(P))
    return r, J
