"""Global Gauss-Newton over all keyframe Sim(3) (or SE(3)) poses with dense pointmap residuals.

MASt3R-SLAM's backend (``global_opt.py`` + ``gn_kernels.cu``) in vectorised torch + a sparse solve:

- every directed factor ``(a, b)`` of the :class:`~online3r_ros.slam.graph.FactorGraph` contributes, for each
  stored match, ``P = T_ab · X_b[pix_b]`` (``T_ab = T_WCa⁻¹ T_WCb``) compared with ``X_a[pix_a]``:
  *rays* (uncalibrated) ``e = [P/|P| - X_a/|X_a| ; |P| - |X_a|]`` with ``σ_ray = 0.003``, ``σ_dist = 10``, or
  *calibrated* ``e = [u(P) - u_a, v(P) - v_a, log z_P - log z_a]`` with ``σ_pixel = 1``, ``σ_depth = 10`` on
  ray-constrained points (``X = z K⁻¹ [u, v, 1]``); square-root weights ``√q / σ``, IRLS Huber (1.345);
- a match is used when ``q > Q_conf`` and both average confidences ``> C_conf`` (calibrated: depths
  ``> depth_eps`` and the projection inside the image ± ``pixel_border``);
- local Jacobians w.r.t. a left perturbation of ``T_ab`` are accumulated per factor into 7×7 blocks with
  ``index_add_`` over one concatenated batch of all factors' points (no Python loop over edges), then mapped
  to the world poses by ``J_b = J · Adj(T_a⁻¹)``, ``J_a = -J_b``;
- the normal equations (7 DoF per free keyframe; 6 in SE(3) mode, scale held) are assembled and solved by
  :mod:`online3r_ros.slam.normal_equations`: on the CPU as COO triplets solved with SuperLU (symmetric
  minimum-degree ordering; cost about linear in keyframes for chain-plus-loops graphs), on an accelerator
  as one dense matrix on the device solved by Cholesky (``solver`` option, rule in that module), with one
  host sync per iteration (the cost check);
- the first ``pin`` keyframes of the graph are fixed (gauge); updates ``T <- Exp(δ)·T``.

Fixes of reference quirks: a failed factorisation (or a non-finite step) is detected, reported and retried
with Levenberg-Marquardt damping ``H + λ·diag(H)`` instead of silently applying a zero update; a step that
increases the robust cost is rejected and retried with more damping (pure Gauss-Newton, ``λ = 0``, whenever it
works, as the reference); early stop on ``|δ| < delta_norm`` or a relative cost decrease ``< rel_error``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from online3r_ros.geometry.lie import sim3_compose, sim3_inverse, sim3_retract, sim3_to_matrix
from online3r_ros.slam.config import LocalOptConfig, SlamConfig
from online3r_ros.slam.edge_residuals import calib_terms, huber_cost, huber_weight, ray_dist_terms
from online3r_ros.slam.graph import FactorBatch, FactorGraph
from online3r_ros.slam.normal_equations import (
    SOLVERS,
    assemble_dense,
    assemble_sparse,
    damp_sparse,
    factor_blocks,
    select_solver,
    solve_dense,
    solve_sparse,
)

CHUNK_POINTS_CPU = 1 << 17  # chunk_points = 0 (auto) on the CPU: bounds temporaries, cache friendly
CHUNK_POINTS_DEVICE = 1 << 20  # ... on an accelerator (~1 GiB of temporaries): fewer kernel launches


class GlobalOptError(ValueError):
    """Bad optimiser input or configuration (names the field/value)."""


@dataclass
class GlobalOptConfig(LocalOptConfig):
    """Options of :class:`GlobalOptimizer`: the ``local_opt`` section of the configuration (inherited,
    declared once in :class:`~online3r_ros.slam.config.LocalOptConfig`) plus the solver's own settings."""

    calibrated: bool = False  # pixel + log-depth residuals (needs K per keyframe or on the store)
    pose_model: str = "sim3"  # "sim3" (7 DoF) or "se3" (6 DoF, scale held, for metric sources)
    rel_error: float = 1e-6  # stop when the relative robust-cost decrease is below this (0: off)
    huber: float = 1.345  # Huber threshold on whitened residuals (<= 0: no robust weighting)
    lm_init: float = 0.0  # initial damping λ (0: pure Gauss-Newton first)
    lm_min: float = 1e-6  # first non-zero λ after a failed/rejected step; λ below it falls back to 0
    lm_factor: float = 10.0  # λ multiplier on failure, divisor on success
    lm_max: float = 1e8  # give up (status 'no_progress') beyond this λ
    dtype: str = "float64"  # compute dtype of residuals/Jacobians ("float32" is faster, less accurate)
    chunk_points: int = 0  # points per vectorised chunk (bounds temporary memory; 0: auto by device type)
    block_points: int = 128  # points per block of the batched Hessian products (factors padded to it)
    device: str | None = None  # compute device (default: the keyframe store's device)
    solver: str = "auto"  # normal equations: "sparse" (host SuperLU), "dense" (device Cholesky), "auto"

    def __post_init__(self) -> None:
        if self.pose_model not in ("sim3", "se3"):
            raise GlobalOptError(f"pose_model must be 'sim3' or 'se3', got {self.pose_model!r}")
        if self.dtype not in ("float32", "float64"):
            raise GlobalOptError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        for name in ("sigma_ray", "sigma_dist", "sigma_pixel", "sigma_depth", "depth_eps", "lm_factor"):
            if not getattr(self, name) > 0:
                raise GlobalOptError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.icp_sigma < 0 or self.icp_stride < 1 or not self.icp_dist_thresh > 0:
            raise GlobalOptError(
                f"icp_sigma must be >= 0, icp_stride >= 1 and icp_dist_thresh > 0, got {self.icp_sigma}, "
                f"{self.icp_stride}, {self.icp_dist_thresh}"
            )
        if self.max_points_per_edge < 0:
            raise GlobalOptError(f"max_points_per_edge must be >= 0, got {self.max_points_per_edge}")
        if self.pin < 1 or self.max_iters < 1 or self.chunk_points < 0 or self.block_points < 1:
            raise GlobalOptError("pin, max_iters and block_points must be >= 1, chunk_points >= 0")
        if self.solver not in SOLVERS:
            raise GlobalOptError(f"solver must be one of {SOLVERS}, got {self.solver!r}")

    @classmethod
    def from_config(cls, cfg: SlamConfig, **overrides) -> GlobalOptConfig:
        """The ``local_opt`` section of ``cfg`` plus solver ``overrides`` (e.g. ``calibrated``,
        ``pose_model``)."""
        return cls(**dataclasses.asdict(cfg.local_opt), **overrides)


@dataclass
class OptResult:
    """Outcome of one optimisation.

    kf_ids ``[n]`` keyframes of the graph; poses ``[n, 8]`` their final Sim(3) ``T_WC`` (store dtype);
    cost_history: robust cost at each accepted linearisation point, the last entry the final cost;
    status: 'converged' | 'max_iters' | 'no_progress' (damping exhausted) | 'nothing_to_optimize' (no
    free pose or no usable residual); iterations: linear solves, rejected and failed ones included;
    solver: the normal-equation solver used ('sparse' | 'dense').
    """

    kf_ids: Tensor
    poses: Tensor
    cost_history: list[float]
    iterations: int
    converged: bool
    status: str
    n_rejected_steps: int = 0
    n_factorization_failures: int = 0
    damping_history: list[float] = field(default_factory=list)
    n_residual_points: int = 0
    timings: dict = field(default_factory=dict)
    solver: str = ""


# ------------------------------------------------------------------------------------------------ problem
@dataclass
class _Problem:
    """Static data of one optimisation: factors and their points in a blocked structure-of-arrays layout.

    Every factor's points are padded to a multiple of ``B`` and cut into blocks of ``B`` points that belong
    to one factor; per-point quantities are stored component-first (``[3, nb, B]``) so that the transform,
    residuals and Jacobian entries are plain elementwise operations and the Hessian sums batched products.
    """

    fa: Tensor  # [F] pose index (into the optimised poses) of a
    fb: Tensor  # [F] pose index of b
    block_factor: Tensor  # [nb] factor of each block
    Xb: Tensor  # [3, nb, B] source points (ray-constrained in calibrated mode)
    Xa: Tensor  # [3, nb, B] rays: target points; calibrated: (u_a, v_a, log z_a)
    sqrt_info: Tensor  # [R, nb, B] √q/σ, 0 for statically invalid and padding points
    Kp: Tensor | None = None  # [4, nb, B] calibrated intrinsics of frame a
    size_hw: Tensor | None = None  # [2, nb, B]
    buffers: dict = field(default_factory=dict)  # reusable work buffers (structural zeros filled once)

    @property
    def n_points(self) -> int:
        return int((self.sqrt_info[0] > 0).sum())


def _gather(store, batch: FactorBatch, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, ...]:
    """Points and average confidences of both ends of every match: Xa, Ca, Xb, Cb (one call per keyframe).

    The requests are grouped by keyframe with a stable sort on ``device`` (on a GPU a 12M-entry sort takes
    milliseconds; on the host it took ~1.4 s of every call at 200 keyframes) and one host read of the groups.
    """
    M = batch.n_points
    pf = batch.point_factor.to(device)
    req_kf = torch.cat((batch.a.to(device)[pf], batch.b.to(device)[pf]))
    req_pix = torch.cat((batch.pix_a, batch.pix_b)).to(device)
    order = torch.argsort(req_kf, stable=True)
    kfs, counts = torch.unique_consecutive(req_kf[order], return_counts=True)
    groups = req_pix[order].split(counts.tolist())
    parts = [store.gather_points(k, pix, device) for k, pix in zip(kfs.tolist(), groups, strict=True)]
    X = torch.empty(2 * M, 3, dtype=dtype, device=device)
    C = torch.empty(2 * M, dtype=dtype, device=device)
    X[order] = torch.cat([x for x, _ in parts]).to(dtype)
    C[order] = torch.cat([c for _, c in parts]).to(dtype)
    return X[:M], C[:M], X[M:], C[M:]


def _blocked(counts: Tensor, B: int) -> tuple[Tensor, Tensor, int]:
    """Slot of every point in the padded layout ``[M]``, factor of every block ``[nb]``, ``nb``."""
    dev = counts.device
    n_blocks = (counts + B - 1) // B
    nb = int(n_blocks.sum())
    block_factor = torch.repeat_interleave(torch.arange(counts.numel(), device=dev), n_blocks)
    pad_start = (torch.cumsum(n_blocks, 0) - n_blocks) * B
    start = torch.cumsum(counts, 0) - counts
    pf = torch.repeat_interleave(torch.arange(counts.numel(), device=dev), counts)
    slot = pad_start[pf] + torch.arange(pf.numel(), device=dev) - start[pf]
    return slot, block_factor, nb


def _pad_soa(x: Tensor, slot: Tensor, nb: int, B: int, fill: float | Tensor) -> Tensor:
    """``x [M, k]`` -> component-first padded ``[k, nb, B]`` (padding rows = ``fill``)."""
    out = torch.empty(nb * B, x.shape[1], dtype=x.dtype, device=x.device)
    out[...] = fill
    out[slot] = x
    return out.T.reshape(x.shape[1], nb, B).contiguous()


def thin_factor_batch(batch: FactorBatch, max_points: int) -> FactorBatch:
    """Keep at most ``max_points`` matches per factor, evenly spread over its stored (pixel-ordered) list,
    so the kept matches still cover the whole image. Deterministic; ``max_points <= 0`` keeps all."""
    if max_points <= 0 or batch.n_points == 0 or int(batch.counts.max()) <= max_points:
        return batch
    pf = batch.point_factor
    counts = batch.counts
    start = torch.cumsum(counts, 0) - counts
    pos = torch.arange(pf.numel(), device=pf.device) - start[pf]
    c = counts[pf]
    # point pos is kept when floor(pos * K / c) steps up (exactly K points of a factor with c > K)
    keep = (c <= max_points) | (pos == 0) | ((pos * max_points) // c != ((pos - 1) * max_points) // c)
    return FactorBatch(
        a=batch.a,
        b=batch.b,
        counts=torch.clamp(counts, max=max_points),
        point_factor=pf[keep],
        pix_a=batch.pix_a[keep],
        pix_b=batch.pix_b[keep],
        q=batch.q[keep],
    )


def _build_problem(
    store, batch: FactorBatch, var_of_kf: Tensor, cfg: GlobalOptConfig, device, dtype
) -> _Problem:
    batch = thin_factor_batch(batch, cfg.max_points_per_edge)
    Xa, Ca, Xb, Cb = _gather(store, batch, device, dtype)
    pf = batch.point_factor.to(device)
    q = batch.q.to(device, dtype)
    ok = (q > cfg.Q_conf) & (Ca > cfg.C_conf) & (Cb > cfg.C_conf)
    ok &= torch.isfinite(Xa).all(-1) & torch.isfinite(Xb).all(-1)
    fa = var_of_kf[batch.a.cpu()].to(device)
    fb = var_of_kf[batch.b.cpu()].to(device)
    sq = torch.sqrt(q.clamp_min(0))
    B = cfg.block_points
    slot, block_factor, nb = _blocked(batch.counts.to(device), B)
    unit_z = torch.tensor([0.0, 0.0, 1.0], dtype=dtype, device=device)
    if not cfg.calibrated:
        sig = torch.tensor([cfg.sigma_ray] * 3 + [cfg.sigma_dist], dtype=dtype, device=device)
        sqrt_info = (sq * ok).unsqueeze(-1) / sig
        Xa = torch.where(ok.unsqueeze(-1), Xa, unit_z)
        Xb = torch.where(ok.unsqueeze(-1), Xb, unit_z)
        return _Problem(
            fa,
            fb,
            block_factor,
            _pad_soa(Xb, slot, nb, B, unit_z),
            _pad_soa(Xa, slot, nb, B, unit_z),
            _pad_soa(sqrt_info, slot, nb, B, 0.0),
        )
    # calibrated: per-keyframe intrinsics and image sizes, ray-constrained points
    kf_ids = sorted(set(batch.a.tolist()) | set(batch.b.tolist()))
    Kt = torch.zeros(max(kf_ids) + 1, 4, dtype=dtype)
    hw = torch.zeros(max(kf_ids) + 1, 2, dtype=torch.long)
    for k in kf_ids:
        K = store.intrinsics(k, "cpu")
        if K is None:
            raise GlobalOptError(f"calibrated optimisation needs intrinsics K for keyframe {k} (none stored)")
        Kt[k] = torch.stack((K[0, 0], K[1, 1], K[0, 2], K[1, 2])).to(dtype)
        hw[k] = torch.tensor(store.image_size(k))
    Kt, hw = Kt.to(device), hw.to(device)
    kf_a = batch.a.to(device)[pf]
    kf_b = batch.b.to(device)[pf]
    pix_a, pix_b = batch.pix_a.to(device), batch.pix_b.to(device)
    ok &= (Xa[:, 2] > cfg.depth_eps) & (Xb[:, 2] > cfg.depth_eps)
    zb = torch.where(ok, Xb[:, 2], torch.ones_like(q))
    za = torch.where(ok, Xa[:, 2], torch.ones_like(q))
    Wb, Kb = hw[kf_b, 1], Kt[kf_b]
    ub = (pix_b % Wb).to(dtype)
    vb = torch.div(pix_b, Wb, rounding_mode="floor").to(dtype)
    Xb_rc = torch.stack(((ub - Kb[:, 2]) / Kb[:, 0] * zb, (vb - Kb[:, 3]) / Kb[:, 1] * zb, zb), dim=-1)
    Wa = hw[kf_a, 1]
    ua = (pix_a % Wa).to(dtype)
    va = torch.div(pix_a, Wa, rounding_mode="floor").to(dtype)
    target = torch.stack((ua, va, torch.log(za)), dim=-1)
    sig = torch.tensor([cfg.sigma_pixel] * 2 + [cfg.sigma_depth], dtype=dtype, device=device)
    sqrt_info = (sq * ok).unsqueeze(-1) / sig
    return _Problem(
        fa,
        fb,
        block_factor,
        _pad_soa(Xb_rc, slot, nb, B, unit_z),
        _pad_soa(target, slot, nb, B, 0.0),
        _pad_soa(sqrt_info, slot, nb, B, 0.0),
        _pad_soa(Kt[kf_a], slot, nb, B, 1.0),
        _pad_soa(hw[kf_a].to(dtype), slot, nb, B, 1.0),
    )


def _work_buffer(prob: _Problem, shape: tuple, like: Tensor) -> Tensor:
    """A zero-initialised buffer kept on the problem; entries that are always written are overwritten each
    call, structural zeros of the Jacobian stay zero."""
    key = (shape, like.dtype, like.device)
    buf = prob.buffers.get(key)
    if buf is None:
        buf = prob.buffers[key] = like.new_zeros(shape)
    return buf


def _chunk_points(cfg: GlobalOptConfig, device: torch.device) -> int:
    """Points per linearisation chunk: ``cfg.chunk_points``, or by device type when it is 0."""
    if cfg.chunk_points > 0:
        return cfg.chunk_points
    return CHUNK_POINTS_CPU if device.type == "cpu" else CHUNK_POINTS_DEVICE


def _linearize(
    T: Tensor, prob: _Problem, cfg: GlobalOptConfig, with_jac: bool = True
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor]:
    """Robust cost (0-d), per-factor local Hessians ``[F, 7, 7]``, gradients ``[F, 7]``, used points (0-d).

    No host sync: the cost and count stay on ``T``'s device.

    Per chunk of blocks: ``P = sR_ab X_b + t_ab`` (elementwise, pose broadcast per block), residuals, IRLS
    weights, and ``[A | b][A | b]ᵀ`` of the whitened rows (``A = √w J``, ``b = √w e``) of each block as one
    batched matrix product; the block sums are added to their factor with ``index_add_``.
    """
    F = prob.fa.numel()
    T_ab = sim3_compose(sim3_inverse(T[prob.fa]), T[prob.fb])
    Mab = sim3_to_matrix(T_ab)[:, :3, :]  # [F, 3, 4] = [sR | t]
    HH = T.new_zeros(F, 8, 8) if with_jac else None
    cost = T.new_zeros(())
    n_used = T.new_zeros((), dtype=torch.long)
    R, nb, B = prob.sqrt_info.shape
    step = max(_chunk_points(cfg, T.device) // B, 1)
    for s in range(0, nb, step):
        sl = slice(s, min(s + step, nb))
        m = Mab[prob.block_factor[sl]].unsqueeze(-1)  # [n, 3, 4, 1]
        Xb = prob.Xb[:, sl]
        P = tuple(m[:, k, 0] * Xb[0] + m[:, k, 1] * Xb[1] + m[:, k, 2] * Xb[2] + m[:, k, 3] for k in range(3))
        if cfg.calibrated:
            e, rows, valid = calib_terms(
                P,
                tuple(prob.Xa[:, sl]),
                tuple(prob.Kp[:, sl]),
                tuple(prob.size_hw[:, sl]),
                cfg.pixel_border,
                cfg.depth_eps,
                with_jac,
            )
        else:
            e, rows, valid = ray_dist_terms(P, tuple(prob.Xa[:, sl]), with_jac)
        s_info = prob.sqrt_info[:, sl] * valid  # [R, n, B]
        e_t = torch.where(s_info > 0, torch.stack(e), torch.zeros_like(s_info))
        wr = s_info * e_t
        cost = cost + huber_cost(wr, cfg.huber).sum()
        n_used = n_used + (s_info[0] > 0).sum()
        if with_jac:
            sw = s_info * torch.sqrt(huber_weight(wr, cfg.huber))  # [R, n, B]
            n = sw.shape[1]
            A = _work_buffer(prob, (step, 8, R, B), T)[:n]  # whitened [J | e] rows of each block
            for r in range(R):
                for c in range(7):
                    if rows[r][c] is not None:
                        A[:, c, r] = rows[r][c] * sw[r]
                A[:, 7, r] = e_t[r] * sw[r]
            A = A.reshape(n, 8, R * B)
            HH.index_add_(0, prob.block_factor[sl], torch.bmm(A, A.transpose(1, 2)))
    if not with_jac:
        return cost, None, None, n_used
    return cost, HH[:, :7, :7], HH[:, :7, 7], n_used


def _assemble(
    T: Tensor,
    prob: _Problem,
    var: Tensor,
    H_loc: Tensor,
    g_loc: Tensor,
    n_free: int,
    D: int,
    solver: str = "sparse",
) -> tuple:
    """Normal equations of the free variables (``var[pose] < 0`` = fixed): a host CSC matrix and numpy
    gradient (``solver="sparse"``) or dense float64 tensors on ``T``'s device (``"dense"``)."""
    Hbb, gb = factor_blocks(T, prob.fa, H_loc, g_loc, D)
    assemble = assemble_dense if solver == "dense" else assemble_sparse
    return assemble(var[prob.fa], var[prob.fb], Hbb, gb, n_free)


def _linearize_all(T: Tensor, prob: _Problem, cfg: GlobalOptConfig, extra) -> tuple:
    """:func:`_linearize` plus the ``extra`` term's blocks (same factor order), if any."""
    cost, H, g, n_used = _linearize(T, prob, cfg)
    if extra is not None:
        c2, H2, g2, n2 = extra.linearize(T)
        cost, H, g, n_used = cost + c2, H + H2, g + g2, n_used + n2
    return cost, H, g, n_used


def _to_host(*values) -> list:
    """``values`` with every tensor among them replaced by its Python float, all fetched in ONE device to
    host copy (the only host sync of a Gauss-Newton iteration); non-tensors pass through."""
    out = list(values)
    idx = [i for i, v in enumerate(values) if isinstance(v, Tensor)]
    if idx:
        fetched = torch.stack([values[i].detach().reshape(()).to(torch.float64) for i in idx]).tolist()
        for i, v in zip(idx, fetched, strict=True):
            out[i] = v
    return out


def gauss_newton(
    T_init: Tensor, fixed: Tensor, prob: _Problem, cfg: GlobalOptConfig, extra=None
) -> tuple[Tensor, dict]:
    """Damped Gauss-Newton on poses ``T_init [n, 8]`` (compute dtype) with ``fixed [n]`` bool.

    ``extra``: an optional additional term over the same factors with ``linearize(T) -> (cost, H [F, 7, 7],
    g [F, 7], n_used)`` (the ICP term of :mod:`online3r_ros.slam.icp_edges`; cost and n_used may be 0-d
    tensors). The solver is chosen by :func:`~online3r_ros.slam.normal_equations.select_solver`.
    Host syncs: one at the start (initial cost) and ONE per iteration (new cost, used points, step norm and,
    on the dense path, the solve's success flag, fetched together); the sparse path also moves the blocks
    to the host for SuperLU. Stage timings are host times: on an accelerator the kernels run
    asynchronously, so time spent waiting for them lands in the stage that syncs (the cost check, counted
    as linearisation). Returns the final poses and a dict of diagnostics (cost_history, iterations,
    status, solver, ...).
    """
    D = 7 if cfg.pose_model == "sim3" else 6
    n = T_init.shape[0]
    dev = T_init.device
    free_idx = torch.nonzero(~fixed.cpu()).flatten()
    n_free = int(free_idx.numel())
    free_idx = free_idx.to(dev)
    var = torch.full((n,), -1, dtype=torch.long, device=dev)
    var[free_idx] = torch.arange(n_free, device=dev)
    solver = select_solver(cfg.solver, dev, n_free * D)
    T = T_init.clone()
    info = {"cost_history": [], "damping_history": [], "iterations": 0, "status": "max_iters"}
    info["solver"] = solver
    info.update(n_rejected_steps=0, n_factorization_failures=0, t_linearize=0.0, t_assemble=0.0, t_solve=0.0)
    t0 = time.perf_counter()
    cost, H_loc, g_loc, n_used = _linearize_all(T, prob, cfg, extra)
    cost, n_used = _to_host(cost, n_used)
    info["t_linearize"] += time.perf_counter() - t0
    info["n_used"] = int(n_used)
    info["cost_history"].append(cost)
    if n_used == 0:
        info["status"] = "nothing_to_optimize"  # no usable residual: leave the poses alone
        return T, info
    lam = cfg.lm_init

    def failed() -> bool:
        """Count a failed solve and raise the damping; True when it is exhausted."""
        nonlocal lam
        info["n_factorization_failures"] += 1
        lam = max(lam * cfg.lm_factor, cfg.lm_min)
        return lam > cfg.lm_max

    while info["iterations"] < cfg.max_iters:
        info["iterations"] += 1
        t0 = time.perf_counter()
        H, g = _assemble(T, prob, var, H_loc, g_loc, n_free, D, solver)
        t1 = time.perf_counter()
        if solver == "dense":
            x, solved = solve_dense(H, -g, lam)  # solved: a device flag, fetched with the new cost
            step_norm = torch.linalg.vector_norm(x)
        else:
            x = solve_sparse(damp_sparse(H, lam), -g)
            solved = x is not None
            if solved:
                step_norm = float(np.linalg.norm(x))
                x = torch.from_numpy(x)
        info["t_assemble"] += t1 - t0
        info["t_solve"] += time.perf_counter() - t1
        info["damping_history"].append(lam)
        if solved is False:  # known on the host (sparse path): no need to evaluate a step
            if failed():
                info["status"] = "no_progress"
                break
            continue
        delta = x.to(dev, T.dtype).reshape(n_free, D)
        if D == 6:
            delta = torch.cat((delta, delta.new_zeros(n_free, 1)), dim=1)
        T_new = T.clone()
        T_new[free_idx] = sim3_retract(T[free_idx], delta)  # dense failure: x = 0, T_new = T (discarded)
        t0 = time.perf_counter()
        new_cost, H_new, g_new, n_used = _linearize_all(T_new, prob, cfg, extra)
        new_cost, n_used, step_norm, solved = _to_host(new_cost, n_used, step_norm, solved)
        info["t_linearize"] += time.perf_counter() - t0
        if not solved:
            if failed():
                info["status"] = "no_progress"
                break
            continue
        if not math.isfinite(new_cost) or new_cost > cost:
            if math.isfinite(new_cost) and (new_cost - cost) <= cfg.rel_error * cost:
                info["status"] = "converged"  # at the noise floor: no further decrease possible
                break
            info["n_rejected_steps"] += 1
            lam = max(lam * cfg.lm_factor, cfg.lm_min)
            if lam > cfg.lm_max:
                info["status"] = "no_progress"
                break
            continue
        rel = (cost - new_cost) / cost if cost > 0 else 0.0
        T, cost, H_loc, g_loc = T_new, new_cost, H_new, g_new
        info["n_used"] = int(n_used)
        info["cost_history"].append(cost)
        lam = lam / cfg.lm_factor
        if lam < cfg.lm_min:
            lam = 0.0
        if step_norm < cfg.delta_norm or rel < cfg.rel_error or cost == 0.0:
            info["status"] = "converged"
            break
    return T, info


def window_keyframes(kf_ids: list[int], window: int, focus: tuple[int, ...] = ()) -> set[int] | None:
    """The keyframes a windowed optimisation moves: the ``window`` newest of ``kf_ids`` (sorted graph ids) and
    the ``window`` up to each ``focus`` id (a late loop closure's keyframe); ``None`` (all) when ``window`` is
    0 or covers the graph.

    >>> sorted(window_keyframes(list(range(10)), 3, focus=(4,)))
    [2, 3, 4, 7, 8, 9]
    >>> window_keyframes(list(range(10)), 0) is None
    True
    """
    if window <= 0 or window >= len(kf_ids):
        return None
    free = set(kf_ids[-window:])
    for f in focus:
        free.update(k for k in kf_ids if f - window < k <= f)
    return free


class GlobalOptimizer:
    """``GlobalOptimizer(config).optimize(keyframes, graph) -> OptResult`` (writes the poses back)."""

    def __init__(self, config: GlobalOptConfig | None = None, **overrides) -> None:
        config = GlobalOptConfig() if config is None else config
        self.config = dataclasses.replace(config, **overrides) if overrides else config

    def optimize(
        self,
        keyframes,
        graph: FactorGraph,
        fixed_ids: list[int] | None = None,
        write_back: bool = True,
        free_ids: set[int] | None = None,
        focus: tuple[int, ...] = (),
    ) -> OptResult:
        """Optimise the poses of all keyframes of ``graph`` (a :class:`KeyframeStore`-like ``keyframes``), or
        only ``free_ids`` (default: :func:`window_keyframes` of the config's ``window`` and ``focus``, the
        keyframe of a late loop closure): then the factors with an end among them take part and their other
        ends are held fixed.

        The first ``pin`` graph keyframes (lowest ids) and ``fixed_ids`` are held fixed. With ``write_back``
        the optimised poses are stored with ``keyframes.set_poses``.
        """
        cfg = self.config
        t_start = time.perf_counter()
        graph_ids = graph.keyframe_ids()
        if free_ids is None:
            free_ids = window_keyframes(graph_ids, cfg.window, focus)
        batch = graph.factor_batch(free_ids)
        kf_ids = graph_ids if free_ids is None else sorted(set(batch.a.tolist()) | set(batch.b.tolist()))
        store_dtype = getattr(keyframes, "pose_dtype", torch.float32)
        if not kf_ids or batch.n_factors == 0:
            ids = torch.tensor(kf_ids, dtype=torch.long)
            poses = keyframes.get_poses(ids) if kf_ids else torch.zeros(0, 8, dtype=store_dtype)
            return OptResult(ids, poses, [], 0, True, "nothing_to_optimize")
        device = torch.device(cfg.device) if cfg.device else getattr(keyframes, "device", torch.device("cpu"))
        dtype = getattr(torch, cfg.dtype)
        ids = torch.tensor(kf_ids, dtype=torch.long)
        var_of_kf = torch.full((max(kf_ids) + 1,), -1, dtype=torch.long)
        var_of_kf[ids] = torch.arange(len(kf_ids))
        fixed = torch.zeros(len(kf_ids), dtype=torch.bool)
        held = [*graph_ids[: cfg.pin], *(fixed_ids or [])]
        if free_ids is not None:
            held += [k for k in kf_ids if k not in free_ids]
        for k in held:
            if 0 <= k < var_of_kf.numel() and var_of_kf[k] >= 0:
                fixed[var_of_kf[k]] = True
        t0 = time.perf_counter()
        prob = _build_problem(keyframes, batch, var_of_kf, cfg, device, dtype)
        extra = None
        if cfg.icp_sigma > 0 and cfg.calibrated:
            from online3r_ros.slam.icp_edges import build_icp_term

            extra = build_icp_term(
                keyframes, batch.a.cpu(), batch.b.cpu(), prob.fa, prob.fb, cfg, device, dtype
            )
        t_gather = time.perf_counter() - t0
        T0 = keyframes.get_poses(ids).to(device, dtype)
        if bool(fixed.all()):
            return OptResult(ids, T0.to(store_dtype), [], 0, True, "nothing_to_optimize")
        T, info = gauss_newton(T0, fixed, prob, cfg, extra)
        poses = T.to(store_dtype)
        if write_back:
            keyframes.set_poses(ids, poses)
        timings = {
            "gather_s": t_gather,
            "linearize_s": info["t_linearize"],
            "assemble_s": info["t_assemble"],
            "solve_s": info["t_solve"],
            "total_s": time.perf_counter() - t_start,
        }
        return OptResult(
            kf_ids=ids,
            poses=poses,
            cost_history=info["cost_history"],
            iterations=info["iterations"],
            converged=info["status"] in ("converged", "nothing_to_optimize"),
            status=info["status"],
            n_rejected_steps=info["n_rejected_steps"],
            n_factorization_failures=info["n_factorization_failures"],
            damping_history=info["damping_history"],
            n_residual_points=info["n_used"],
            timings=timings,
            solver=info["solver"],
        )
