"""IRLS Gauss-Newton for one Sim(3)/SE(3) pose (the tracker's solver).

- :func:`solve_damped`: ``H x = g`` by Cholesky, with growing Levenberg damping and finally least squares on
  failure (never a silent zero update).
- :func:`optimize_pose`: Huber-weighted Gauss-Newton with left retraction and an LM safeguard on a
  caller-supplied residual function; returns a :class:`PoseSolveResult`.
- :func:`information_ratios`: how well a normal matrix constrains each pose direction compared with the
  best one (rotation scaled to metres), to find degenerate geometry.

Host syncs: the Gauss-Newton loop keeps its whole state (pose, cost, damping, iteration count, outcome) in
device tensors and freezes it with ``torch.where`` once the solve has stopped, so an iteration never waits
for the device. Only the policy ``sync_every`` reads the outcome on the host, to leave the loop early: every
iteration on the CPU (where reading a tensor costs nothing and early exit saves the remaining iterations;
there the damped retries of a failed Cholesky solve are also only computed when the host saw it fail),
every :data:`CUDA_SYNC_EVERY` iterations on CUDA; 0 never (all ``max_iters`` iterations run, the finished
ones masked). The result's numbers are read once, at the end. Same results under every policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from online3r_ros.geometry.lie import sim3_compose, sim3_exp
from online3r_ros.utils.host_syncs import on_device

Tensor = torch.Tensor

__all__ = [
    "PoseSolveResult",
    "solve_damped",
    "optimize_pose",
    "resolve_sync_every",
    "information_ratios",
    "CUDA_SYNC_EVERY",
]

#: Default ``sync_every`` of :func:`optimize_pose` on CUDA: the host reads the solve's state (one sync)
#: after every this many iterations; at most ``CUDA_SYNC_EVERY - 1`` masked iterations run after
#: convergence. Measured on an H200 (``bench_tracking_step.py``, 7-Scenes, 20 frames): with 1 the
#: matching + Gauss-Newton step took 39.6 ms and the ICP step 62.3 ms, with 4 53.4 and 75.2 ms (the masked
#: iterations after convergence cost more than the syncs they save while the loop is launch-bound).
#: 0 (never) is what a CUDA-graph capture of the loop will need.
CUDA_SYNC_EVERY = 1

# Levenberg damping factors of the retries in solve_damped: 1e-6, then x100 per retry (as Python floats, so
# that the batched retries equal the former sequential ones bit for bit).
_RETRY_LAMBDAS = [1e-6]
for _ in range(7):
    _RETRY_LAMBDAS.append(_RETRY_LAMBDAS[-1] * 100.0)
_RETRY_LAMBDAS_T = torch.tensor(_RETRY_LAMBDAS, dtype=torch.float64)

# outcome codes of optimize_pose's device state
_RUNNING, _CONVERGED, _NONFINITE, _SINGULAR, _FEW = 0, 1, 2, 3, 4
_REASONS = {_NONFINITE: "non-finite normal equations", _SINGULAR: "singular normal equations"}


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


def _cholesky_solve(H: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """``(x, good)`` of ``H x = g`` by Cholesky for ``H [..., n, n]``, ``g [..., n]``: ``good [...]`` says the
    factorisation worked and ``x`` is finite (decided on the device). Two triangular solves equal
    ``cholesky_solve`` bit for bit on the CPU; on CUDA ``cholesky_solve`` of a batch reads MAGMA's info on
    the host, ``cholesky_ex`` and triangular solves do not."""
    L, info = torch.linalg.cholesky_ex(H)
    y = torch.linalg.solve_triangular(L, g.unsqueeze(-1), upper=False)
    x = torch.linalg.solve_triangular(L.mT, y, upper=True).squeeze(-1)
    return x, (info == 0) & torch.isfinite(x).all(-1)


def _solve_damped_device(
    H: Tensor, g: Tensor, max_tries: int = 4, lazy: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`solve_damped` without the least-squares fallback, deciding on the device.

    The plain system and its ``max_tries`` damped versions ``H + lambda_i (diag|H| + mean|diag H| I)`` are
    solved in one batch (``[1 + max_tries, n, n]``) and the first finite solution is taken. ``lazy``
    (allowed to read on the host, as :func:`optimize_pose` is when it syncs every iteration): the plain
    system alone first, the batch only if its solution fails (same result, a quarter of the work). Returns
    ``(x [n], failures, ok)``, the last two 0-d device tensors (int64, bool): ``failures`` = factorisations
    tried before it (``1 + max_tries`` if none worked, then ``x`` = 0 and ``ok`` False); a damped solution
    of an all-zero ``H`` is not ``ok``.
    """
    if not 0 <= max_tries <= len(_RETRY_LAMBDAS):
        raise ValueError(f"max_tries must be in [0, {len(_RETRY_LAMBDAS)}], got {max_tries}")
    if lazy:
        x, good = _cholesky_solve(H, g)
        if bool(good):
            return x, torch.zeros((), dtype=torch.int64, device=H.device), good
    n = H.shape[-1]
    d = H.diagonal().abs()
    damp = torch.diag(d) + d.mean().clamp_min(1e-12) * torch.eye(n, dtype=H.dtype, device=H.device)
    lams = on_device(_RETRY_LAMBDAS_T, H.device, H.dtype)[:max_tries, None, None]
    xb, good = _cholesky_solve(torch.cat([H.unsqueeze(0), H + lams * damp]), g.expand(1 + max_tries, n))
    any_good = good.any()
    first = torch.argmax(good.to(torch.uint8))  # the first good one (0 when none)
    x = torch.where(any_good, xb.index_select(0, first.reshape(1))[0], 0.0)
    failures = torch.where(any_good, first, 1 + max_tries)
    ok = any_good & ((first == 0) | (H.abs().sum() > 0))
    return x, failures, ok


def solve_damped(H: Tensor, g: Tensor, max_tries: int = 4) -> tuple[Tensor, int, bool]:
    """Solve ``H x = g`` (``H`` symmetric PSD ``[n, n]``, float64) by Cholesky; on failure retry with
    growing Levenberg damping ``lambda·diag(H)`` and finally least squares.

    Returns ``(x, failures, ok)``; ``ok`` is False only if no finite solution exists (e.g. ``H`` is zero).
    Reads the outcome on the host (:func:`optimize_pose` uses the sync-free part only).
    """
    x, failures, ok = _solve_damped_device(H, g, max_tries)
    if bool(ok) or int(failures) <= max_tries:
        return x, int(failures), bool(ok)
    x = torch.linalg.lstsq(H, g.unsqueeze(-1)).solution.squeeze(-1)
    ok = bool(torch.isfinite(x).all()) and bool(H.abs().sum() > 0)
    return (x if ok else torch.zeros_like(g)), max_tries + 1, ok


def _huber_rho(a: Tensor, k: float) -> Tensor:
    return torch.where(a <= k, 0.5 * a * a, k * (a - 0.5 * k))


def _linearize(residual_fn, T: Tensor, sqrt_w: Tensor, dof: int, huber: float):
    """Huber cost (0-d float64), normal equations ``(H, g)`` (float64) and number of active residual rows
    (0-d int64) at ``T``; no host sync."""
    r, J, valid = residual_fn(T)
    if valid is not None:
        valid = valid.unsqueeze(-1) if valid.dim() == sqrt_w.dim() - 1 else valid
    s = sqrt_w if valid is None else sqrt_w * valid.to(sqrt_w.dtype)
    a = (s * r).abs()
    hub = torch.where(a < huber, 1.0, huber / a.clamp_min(1e-30))
    cost = _huber_rho(a, huber).sum().to(torch.float64)
    s2 = s * hub.sqrt()
    A = (s2.unsqueeze(-1) * J[..., :dof]).reshape(-1, dof).to(torch.float64)
    b = (s2 * r).reshape(-1).to(torch.float64)
    n_active = (s > 0).any(-1).sum()
    return cost, A.T @ A, -(A.T @ b), n_active


def resolve_sync_every(sync_every: int | None, device: torch.device) -> int:
    """The host-check period of :func:`optimize_pose`: ``sync_every`` if given, else 1 on the CPU and
    :data:`CUDA_SYNC_EVERY` on other devices."""
    if sync_every is not None:
        if sync_every < 0:
            raise ValueError(f"sync_every must be >= 0, got {sync_every}")
        return int(sync_every)
    return 1 if device.type == "cpu" else CUDA_SYNC_EVERY


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
    sync_every: int | None = None,
) -> PoseSolveResult:
    """IRLS Gauss-Newton with per-component Huber weights and left retraction ``T <- Exp(delta)·T``.

    Pure Gauss-Newton steps as in the reference while the (Huber) cost decreases; a step that increases the
    cost is rejected and retried with Levenberg damping ``lambda·diag(H)`` (lambda x10 per rejection, /10
    per accepted step), so the cost never goes up.

    Args:
        residual_fn: ``T -> (r[N, m], J[N, m, 7], valid[N] or None)`` with ``J = dr/dxi``; it must not
            sync with the host for the loop to stay sync-free, and must accept any finite ``T``.
        T_init: Sim(3) ``[8]``.
        sqrt_w: ``[N, m]`` square-root information weights (0 = unused residual).
        dof: 7 (Sim(3)) or 6 (SE(3): the scale is kept).
        min_residuals: fewer active residual points than this is a failure (``ok=False``).
        sync_every: read the stop state on the host after every this many iterations to leave early (0:
            never, the loop runs ``max_iters`` iterations and none syncs); default
            :func:`resolve_sync_every`. Does not change the result.
    Stops when ``|Δcost / cost| < rel_error`` or ``|delta| < delta_norm``.
    """
    dev = T_init.device
    every = resolve_sync_every(sync_every, dev)
    T = T_init
    cost, Hm, g, n_active0 = _linearize(residual_fn, T, sqrt_w, dof, huber)
    status = torch.where(n_active0 < min_residuals, _FEW, _RUNNING)  # int64 0-d, as are iters and failures
    iters = failures = torch.zeros((), dtype=torch.int64, device=dev)
    lam = torch.zeros((), dtype=torch.float64, device=dev)
    if every == 1 and bool(status != _RUNNING):
        max_iters = 0
    for it in range(1, max_iters + 1):
        run = status == _RUNNING
        iters = iters + run
        finite = torch.isfinite(Hm).all() & torch.isfinite(g).all()
        Hd = torch.where(lam > 0, Hm + lam * torch.diag(Hm.diagonal()), Hm)
        delta, f, solved = _solve_damped_device(Hd, g, lazy=every == 1)
        d7 = torch.cat([delta, delta.new_zeros(1)]) if dof == 6 else delta
        T_new = sim3_compose(sim3_exp(d7.to(T.dtype)), T)
        finite_T = torch.isfinite(T_new).all()
        # a non-finite step is evaluated at the current pose (residual functions index with the pose) and
        # counts as a cost increase
        cost_new, H_new, g_new, n_new = _linearize(
            residual_fn, torch.where(finite_T, T_new, T), sqrt_w, dof, huber
        )
        step = run & finite & solved  # a step was computed
        accept = step & finite_T & (n_new >= min_residuals) & (cost_new <= cost)
        small = torch.linalg.vector_norm(delta) < delta_norm
        lam_up = torch.clamp_min(lam * 10.0, 1e-4)
        rel = (cost - cost_new) / cost.clamp_min(1e-30)
        stop = torch.where(accept, (rel < rel_error) | small, small | (lam_up > 1e8))
        code = torch.where(solved, torch.where(stop, _CONVERGED, _RUNNING), _SINGULAR)
        status = torch.where(run, torch.where(finite, code, _NONFINITE), status)
        failures = failures + torch.where(run & finite, f, 0)
        T = torch.where(accept, T_new, T)
        cost = torch.where(accept, cost_new, cost)
        Hm = torch.where(accept, H_new, Hm)
        g = torch.where(accept, g_new, g)
        lam_down = torch.where(lam > 1e-6, lam / 10.0, 0.0)
        lam = torch.where(accept, lam_down, torch.where(step & ~small, lam_up, lam))
        if every and it % every == 0 and it < max_iters and bool(status != _RUNNING):
            break
    it_, st, fails, cost_f, n0 = torch.stack(
        [
            iters.to(torch.float64),
            status.to(torch.float64),
            failures.to(torch.float64),
            cost,
            n_active0.double(),
        ]
    ).tolist()
    st = int(st)
    ok = st in (_RUNNING, _CONVERGED)
    if st == _FEW:
        reason = f"only {int(n0)} usable residuals"
    else:
        reason = _REASONS.get(st, "")
    return PoseSolveResult(T, int(it_), cost_f, st == _CONVERGED, int(fails), ok, reason)


def information_ratios(H: Tensor, length: float | Tensor) -> Tensor:
    """Eigenvalues ``[dof]`` (ascending, float64) of the normal matrix ``H [dof, dof]`` (update
    ``[t, ω(, log s)]``) over its largest, with rotation (and scale) first put in metres, ``ω' = length·ω``
    (how far they move points ``length`` metres from the rotation centre): ``H' = D H D``,
    ``D = diag(1, 1, 1, 1/length, ...)``. A small ratio is a pose direction the residuals barely constrain
    compared with the best one (all zeros for an all-zero ``H``)."""
    dof = H.shape[-1]
    d = torch.ones(dof, dtype=torch.float64, device=H.device)
    d[3:] = 1.0 / torch.as_tensor(length, dtype=torch.float64, device=H.device).clamp_min(1e-6)
    lam = torch.linalg.eigvalsh(d[:, None] * H.to(torch.float64) * d[None])
    return torch.where(lam[-1] > 0, lam / lam[-1], torch.zeros_like(lam))
