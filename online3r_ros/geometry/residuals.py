"""Residuals and left-perturbation Jacobians of the MASt3R-SLAM pose costs (tracking and global GN).

For a pose ``T`` (Sim(3) ``[8]``) acting on points ``X[N, 3]``, ``P = T·X``, and a left perturbation
``T <- Exp(xi)·T`` (``xi = [tau, omega, sigma]``), ``dP/dxi = [I | -[P]x | P]``. Every function returns the
residual ``r = target - prediction(P)`` and ``J = dr/dxi`` (``[N, m, 7]``; take ``[..., :6]`` for SE(3)), so
that Gauss-Newton solves ``(J^T W J) delta = -J^T W r``.

- Rays + distance (uncalibrated): ``rd(X) = [X/|X|, |X|]`` (m = 4).
- Calibrated: ``(u, v, log z)`` with intrinsics ``K`` (m = 3).
- Points: ``X_target - P`` (m = 3).
"""

from __future__ import annotations

import torch

from online3r_ros.geometry.camera import project_with_jacobian
from online3r_ros.geometry.lie import sim3_act, sim3_act_jacobian

Tensor = torch.Tensor

__all__ = ["ray_dist", "ray_dist_residuals", "calib_residuals", "point_residuals"]


def ray_dist(X: Tensor, eps: float = 1e-12) -> Tensor:
    """``[..., 4]`` = unit ray and distance of ``X[..., 3]``."""
    d = X.norm(dim=-1, keepdim=True)
    return torch.cat([X / d.clamp_min(eps), d], dim=-1)


def ray_dist_residuals(T: Tensor, X: Tensor, target_rd: Tensor, eps: float = 1e-12) -> tuple[Tensor, Tensor]:
    """``r = target_rd - rd(T·X)`` ``[N, 4]`` and ``J = dr/dxi`` ``[N, 4, 7]``.

    ``d ray/dP = (I - r r^T)/|P|``, ``d dist/dP = r^T``.
    """
    P = sim3_act(T, X)
    d = P.norm(dim=-1, keepdim=True).clamp_min(eps)
    ray = P / d
    r = target_rd - torch.cat([ray, d], dim=-1)
    eye = torch.eye(3, dtype=P.dtype, device=P.device)
    d_ray = (eye - ray.unsqueeze(-1) * ray.unsqueeze(-2)) / d.unsqueeze(-1)  # [N, 3, 3]
    d_rd = torch.cat([d_ray, ray.unsqueeze(-2)], dim=-2)  # [N, 4, 3]
    J = -(d_rd @ sim3_act_jacobian(P))
    return r, J


def calib_residuals(
    T: Tensor, X: Tensor, target_uvlogz: Tensor, K: Tensor, depth_eps: float = 1e-6
) -> tuple[Tensor, Tensor, Tensor]:
    """``r = target - (u, v, log z)(T·X)`` ``[N, 3]``, ``J`` ``[N, 3, 7]`` and projection validity ``[N]``
    (``z > depth_eps``; image-border tests are the caller's, they depend on the image size)."""
    P = sim3_act(T, X)
    meas, Jp, valid = project_with_jacobian(P, K, depth_eps)
    r = target_uvlogz - meas
    J = -(Jp @ sim3_act_jacobian(P))
    return r, J, valid


def point_residuals(T: Tensor, X: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """``r = target - T·X`` ``[N, 3]`` and ``J = -[I | -[P]x | P]`` ``[N, 3, 7]``."""
    P = sim3_act(T, X)
    return target - P, -sim3_act_jacobian(P)
