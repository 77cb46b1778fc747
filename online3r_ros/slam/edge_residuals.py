"""Dense residual models of the global optimisation's edges, and the Huber IRLS weights.

For an edge point ``P = T_ab · X_b`` matched with ``X_a`` (both ``[N, 3]``, keyframe ``a``'s coordinates):

- rays + distance (uncalibrated): ``e = [P/|P| - X_a/|X_a| ; |P| - |X_a|]`` (4 rows);
- calibrated: ``e = [u(P) - u_a, v(P) - v_a, log z_P - log z_a]`` with intrinsics ``K`` (3 rows).

Each returns the residual rows, their Jacobians w.r.t. a left perturbation of ``T_ab`` (``[N, m, 7]``) when
asked, and a validity mask; :mod:`online3r_ros.slam.global_opt` whitens, weights and assembles them.
"""

from __future__ import annotations

import torch
from torch import Tensor


def huber_weight(wr: Tensor, k: float) -> Tensor:
    """IRLS weight of whitened residuals: 1 inside ``|wr| < k``, ``k/|wr|`` outside (``k <= 0``: all ones)."""
    if k <= 0:
        return torch.ones_like(wr)
    a = wr.abs()
    return torch.where(a < k, torch.ones_like(a), k / a.clamp_min(1e-30))


def huber_cost(wr: Tensor, k: float) -> Tensor:
    """Huber loss of whitened residuals: ``wr²/2`` inside, ``k(|wr| - k/2)`` outside."""
    if k <= 0:
        return 0.5 * wr * wr
    a = wr.abs()
    return torch.where(a < k, 0.5 * a * a, k * (a - 0.5 * k))


def ray_dist_terms(P: tuple, Xa: tuple, with_jac: bool) -> tuple[list, list | None, Tensor]:
    """Structure-of-arrays ray + distance residual: ``e`` (4 tensors), ``J`` (4 rows of 7 tensors), valid.

    ``P`` and ``Xa`` are tuples of 3 same-shape tensors (x, y, z); see :func:`ray_dist_residual`.
    """
    x, y, z = P
    d = torch.sqrt(x * x + y * y + z * z)
    da = torch.sqrt(Xa[0] * Xa[0] + Xa[1] * Xa[1] + Xa[2] * Xa[2])
    tiny = torch.finfo(x.dtype).tiny ** 0.5
    valid = (d > tiny) & (da > tiny)
    inv_d = 1.0 / d.clamp_min(tiny)
    inv_da = 1.0 / da.clamp_min(tiny)
    r = (x * inv_d, y * inv_d, z * inv_d)
    e = [r[k] - Xa[k] * inv_da for k in range(3)] + [d - da]
    if not with_jac:
        return e, None, valid
    rows = []  # None marks a structural zero
    neg_skew = ((None, r[2], -r[1]), (-r[2], None, r[0]), (r[1], -r[0], None))
    for k in range(3):
        proj = [((1.0 if k == c else 0.0) - r[k] * r[c]) * inv_d for c in range(3)]
        rows.append(proj + list(neg_skew[k]) + [None])
    rows.append([r[0], r[1], r[2], None, None, None, d])
    return e, rows, valid


def calib_terms(
    P: tuple, target: tuple, Kp: tuple, size_hw: tuple, border: float, depth_eps: float, with_jac: bool
) -> tuple[list, list | None, Tensor]:
    """Structure-of-arrays pixel + log-depth residual (see :func:`calib_residual`)."""
    x, y, z = P
    fx, fy, cx, cy = Kp
    zs = z.clamp_min(depth_eps)
    inv_z = 1.0 / zs
    u = fx * x * inv_z + cx
    v = fy * y * inv_z + cy
    H, W = size_hw[0].to(x.dtype), size_hw[1].to(x.dtype)
    valid = (z > depth_eps) & (u > border) & (u < W - 1 - border) & (v > border) & (v < H - 1 - border)
    e = [u - target[0], v - target[1], torch.log(zs) - target[2]]
    if not with_jac:
        return e, None, valid
    inv_z2 = inv_z * inv_z
    # rows a_k = d(u, v, log z)/dP; a_k · [I | -[P]x | P] = [a_k, P x a_k, a_k · P]; the pixel rows are
    # scale-invariant (a_u · P = a_v · P = 0) and the log-depth row's scale entry is z / z = 1
    rows = [
        [
            fx * inv_z,
            None,
            -fx * x * inv_z2,
            -fx * y * x * inv_z2,
            fx * (z * inv_z + x * x * inv_z2),
            -fx * y * inv_z,
            None,
        ],
        [
            None,
            fy * inv_z,
            -fy * y * inv_z2,
            -fy * (z * inv_z + y * y * inv_z2),
            fy * x * y * inv_z2,
            fy * x * inv_z,
            None,
        ],
        [None, None, inv_z, y * inv_z, -x * inv_z, None, torch.ones_like(x)],
    ]
    return e, rows, valid


def stack_terms(e: list, rows: list | None) -> tuple[Tensor, Tensor | None]:
    e_t = torch.stack(e, dim=-1)
    if rows is None:
        return e_t, None
    z = torch.zeros_like(e[0])
    return e_t, torch.stack(
        [torch.stack([z if v is None else v for v in row], dim=-1) for row in rows], dim=-2
    )


def ray_dist_residual(P: Tensor, Xa: Tensor, with_jac: bool = True) -> tuple[Tensor, Tensor | None, Tensor]:
    """Ray + distance residual and its Jacobian w.r.t. a left Sim(3) perturbation of ``P``.

    P, Xa ``[M, 3]`` -> e ``[M, 4]`` (``[r - r_a, d - d_a]``), J ``[M, 4, 7]``
    (``[[(I - r rᵀ)/d, -[r]x, 0], [rᵀ, 0, d]]``), valid ``[M]`` (non-degenerate norms).
    """
    e, rows, valid = ray_dist_terms(P.unbind(-1), Xa.unbind(-1), with_jac)
    return (*stack_terms(e, rows), valid)


def calib_residual(
    P: Tensor,
    target: Tensor,
    Kp: Tensor,
    size_hw: Tensor,
    border: float,
    depth_eps: float,
    with_jac: bool = True,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """Pixel + log-depth residual of projected points and its Jacobian (left Sim(3) perturbation of ``P``).

    P ``[M, 3]``; target ``[M, 3]`` = ``(u_a, v_a, log z_a)``; Kp ``[M, 4]`` = ``(fx, fy, cx, cy)`` of
    frame a; size_hw ``[M, 2]`` image size of frame a. -> e ``[M, 3]``, J ``[M, 3, 7]``, valid ``[M]``
    (``z > depth_eps`` and ``u ∈ (border, W-1-border)``, ``v ∈ (border, H-1-border)``).
    """
    e, rows, valid = calib_terms(
        P.unbind(-1), target.unbind(-1), Kp.unbind(-1), size_hw.unbind(-1), border, depth_eps, with_jac
    )
    return (*stack_terms(e, rows), valid)
