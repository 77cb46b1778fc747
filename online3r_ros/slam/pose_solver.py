"""IRLS Gauss-Newton for one Sim(3)/SE(3) pose (the tracker's solver).

- :func:`solve_damped`: ``H x = g`` by Cholesky, with growing Levenberg damping and finally least squares on
  failure (never a silent zero update).
- :func:`optimize_pose`: Huber-weighted Gauss-Newton with left retraction and an LM safeguard on a
  caller-supplied residual function; returns a :class:`PoseSolveResult`.
- :func:`information_ratios`: how well a normal matrix constrains each pose direction compared with the
  best one (rotation scaled to metres), to find degenerate geometry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from online3r_ros.geometry.lie import sim3_compose, sim3_exp

Tensor = torch.Tensor

__all__ = ["PoseSolveResult", "solve_damped", "optimize_pose", "information_ratios"]


@dataclass
class PoseSolveResult:
    """Result of :func:`optimize_pose`."""

    T: Tensor
    iterations: int
    cost: float
    converged: bool
    solver_failures: int
    ok: bool
    reason: str = ""


def solve_damped(H: Tensor, g: Tensor, max_tries: int = 4) -> tuple[Tensor, int, bool]:
    """Solve ``H x = g`` (``H`` symmetric PSD ``[n, n]``, float64) by Cholesky; on failure retry with
    growing Levenberg damping ``lambda·diag(H)`` and finally least squares.

    Returns ``(x, failures, ok)``; ``ok`` is False only if no finite solution exists (e.g. ``H`` is zero).
    """
    n = H.shape[-1]
    eye = torch.eye(n, dtype=H.dtype, device=H.device)
    L, info = torch.linalg.cholesky_ex(H)
    if int(info) == 0:
        x = torch.cholesky_solve(g.unsqueeze(-1), L).squeeze(-1)
        if bool(torch.isfinite(x).all()):
            return x, 0, True
    failures = 1
    scale = H.diagonal().abs().mean().clamp_min(1e-12)
    lam = 1e-6
    for _ in range(max_tries):
        Hd = H + lam * (torch.diag(H.diagonal().abs()) + scale * eye)
        L, info = torch.linalg.cholesky_ex(Hd)
        if int(info) == 0:
            x = torch.cholesky_solve(g.unsqueeze(-1), L).squeeze(-1)
            if bool(torch.isfinite(x).all()):
                return x, failures, bool(H.abs().sum() > 0)
        failures += 1
        lam *= 100.0
    x = torch.linalg.lstsq(H, g.unsqueeze(-1)).solution.squeeze(-1)
    ok = bool(torch.isfinite(x).all()) and bool(H.abs().sum() > 0)
    return (x if ok else torch.zeros_like(g)), failures, ok


def _huber_rho(a: Tensor, k: float) -> Tensor:
    return torch.where(a <= k, 0.5 * a * a, k * (a - 0.5 * k))


def _linearize(residual_fn, T: Tensor, sqrt_w: Tensor, dof: int, huber: float):
    """Huber cost, normal equations ``(H, g)`` (float64) and number of active residual rows at ``T``."""
    r, J, valid = residual_fn(T)
    if valid is not None:
        valid = valid.unsqueeze(-1) if valid.dim() == sqrt_w.dim() - 1 else valid
    s = sqrt_w if valid is None else sqrt_w * valid.to(sqrt_w.dtype)
    a = (s * r).abs()
    hub = torch.where(a < huber, torch.ones_like(a), huber / a.clamp_min(1e-30))
    cost = float(_huber_rho(a, huber).sum())
    s2 = s * hub.sqrt()
    A = (s2.unsqueeze(-1) * J[..., :dof]).reshape(-1, dof).to(torch.float64)
    b = (s2 * r).reshape(-1).to(torch.float64)
    n_active = int((s > 0).any(-1).sum())
    return cost, A.T @ A, -(A.T @ b), n_active


def optimize_pose(
    residual_fn,
    T_init: Tensor,
    sqrt_w: Tensor,
    dof: int = 7,
    max_iters: int = 50,
    rel_error: float = 1e-3,
    delta_norm: float = 1e-3,
    huber: float = 1.345,
    min_residuals: int = 3,
) -> PoseSolveResult:
    """IRLS Gauss-Newton with per-component Huber weights and left retraction ``T <- Exp(delta)·T``.

    Pure Gauss-Newton steps as in the reference while the (Huber) cost decreases; a step that increases the
    cost is rejected and retried with Levenberg damping ``lambda·diag(H)`` (lambda x10 per rejection, /10
    per accepted step), so the cost never goes up.

    Args:
        residual_fn: ``T -> (r[N, m], J[N, m, 7], valid[N] or None)`` with ``J = dr/dxi``.
        T_init: Sim(3) ``[8]``.
        sqrt_w: ``[N, m]`` square-root information weights (0 = unused residual).
        dof: 7 (Sim(3)) or 6 (SE(3): the scale is kept).
        min_residuals: fewer active residual points than this is a failure (``ok=False``).
    Stops when ``|Δcost / cost| < rel_error`` or ``|delta| < delta_norm``.
    """
    T = T_init
    failures = 0
    cost, Hm, g, n_active = _linearize(residual_fn, T, sqrt_w, dof, huber)
    if n_active < min_residuals:
        return PoseSolveResult(T, 0, cost, False, 0, False, f"only {n_active} usable residuals")
    lam = 0.0
    it = 0
    for it in range(1, max_iters + 1):
        if not bool(torch.isfinite(Hm).all()) or not bool(torch.isfinite(g).all()):
            return PoseSolveResult(T, it, cost, False, failures, False, "non-finite normal equations")
        Hd = Hm + lam * torch.diag(Hm.diagonal()) if lam > 0 else Hm
        delta, f, ok = solve_damped(Hd, g)
        failures += f
        if not ok:
            return PoseSolveResult(T, it, cost, False, failures, False, "singular normal equations")
        d7 = torch.cat([delta, delta.new_zeros(1)]) if dof == 6 else delta
        T_new = sim3_compose(sim3_exp(d7.to(T.dtype)), T)
        dn = float(delta.norm())
        if not bool(torch.isfinite(T_new).all()):
            cost_new, n_new = math.inf, 0
        else:
            cost_new, H_new, g_new, n_new = _linearize(residual_fn, T_new, sqrt_w, dof, huber)
        if n_new >= min_residuals and cost_new <= cost:
            rel = (cost - cost_new) / max(cost, 1e-30)
            T, cost, Hm, g = T_new, cost_new, H_new, g_new
            lam = lam / 10.0 if lam > 1e-6 else 0.0
            if rel < rel_error or dn < delta_norm:
                return PoseSolveResult(T, it, cost, True, failures, True)
        else:
            if dn < delta_norm:  # tiny step that does not decrease the cost: at the minimum
                return PoseSolveResult(T, it, cost, True, failures, True)
            lam = max(lam * 10.0, 1e-4)
            if lam > 1e8:
                return PoseSolveResult(T, it, cost, True, failures, True)
    return PoseSolveResult(T, it, cost, False, failures, True)


def information_ratios(H: Tensor, length: float) -> Tensor:
    """Eigenvalues ``[dof]`` (ascending, float64) of the normal matrix ``H [dof, dof]`` (update
    ``[t, ω(, log s)]``) over its largest, with rotation (and scale) first put in metres, ``ω' = length·ω``
    (how far they move points ``length`` metres from the rotation centre): ``H' = D H D``,
    ``D = diag(1, 1, 1, 1/length, ...)``. A small ratio is a pose direction the residuals barely constrain
    compared with the best one (all zeros for an all-zero ``H``)."""
    dof = H.shape[-1]
    d = torch.ones(dof, dtype=torch.float64, device=H.device)
    d[3:] = 1.0 / max(float(length), 1e-6)
    lam = torch.linalg.eigvalsh(d[:, None] * H.to(torch.float64) * d[None])
    return lam / lam[-1] if float(lam[-1]) > 0 else torch.zeros_like(lam)
