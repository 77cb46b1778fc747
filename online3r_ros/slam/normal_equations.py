"""Normal equations of the keyframe-pose graph: block assembly and the linear solve of one Gauss-Newton step.

:func:`factor_blocks` maps every factor's local 7×7 Hessian and gradient (w.r.t. a left perturbation of
``T_ab``) to the world-frame block of pose ``b`` (``J_b = J · Adj(T_a⁻¹)``, ``J_a = -J_b``); two solvers
then assemble and solve the ``[n_free·D, n_free·D]`` system (``D`` = 7 in Sim(3), 6 in SE(3)):

- ``"sparse"``: COO triplets to a scipy CSC matrix on the host, SuperLU with a symmetric minimum-degree
  ordering (:func:`solve_sparse`); the cost grows about linearly with keyframes for chain-plus-loops graphs,
  but every solve copies the blocks to the host and back (a device sync on an accelerator);
- ``"dense"``: a float64 ``[n_free·D, n_free·D]`` matrix on the compute device (``index_put_`` of the
  blocks), Cholesky (``cholesky_ex``) and two triangular solves (:func:`solve_dense`); the failure flag stays
  on the device, so a step needs no host sync. ``O((n·D)³)`` work: 200 Sim(3) keyframes are a 1400×1400
  system (~1 GFLOP), trivial for a GPU.

:func:`select_solver` picks one (``"auto"``): dense on a non-CPU device while ``n_free·D <= DENSE_MAX_DIM``
(8192, a 512 MiB matrix), else sparse. The CPU always takes SuperLU: its LAPACK Cholesky is slower beyond a
few dozen keyframes on a small machine, and the CPU results stay bit-identical to the sparse solver's.

Both solvers report a failure the same way (non-finite step, failed factorisation, or a residual
``|H x - rhs| > 1e-3 |rhs|`` that reveals a numerically singular factorisation), and damp identically:
``H + λ·diag(max(diag(H), 1e-6·mean(diag(H))))``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch
from torch import Tensor

from online3r_ros.geometry.lie import sim3_adjoint, sim3_inverse

__all__ = [
    "DENSE_MAX_DIM",
    "SOLVERS",
    "assemble_dense",
    "assemble_sparse",
    "damp_sparse",
    "factor_blocks",
    "select_solver",
    "solve_dense",
    "solve_sparse",
]

SOLVERS = ("auto", "sparse", "dense")
DENSE_MAX_DIM = 8192  # "auto": largest dense system (n_free * D) on an accelerator (float64: 512 MiB)
_RES_TOL = 1e-3  # relative residual |H x - rhs| / |rhs| above which a solve counts as failed
_DAMP_FLOOR = 1e-6  # damping uses max(diag(H), _DAMP_FLOOR * mean(diag(H)))


def select_solver(solver: str, device: torch.device, dim: int) -> str:
    """``"sparse"`` or ``"dense"`` for ``solver`` (``"auto"`` resolved by device type and system size)."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if solver != "auto":
        return solver
    return "dense" if torch.device(device).type != "cpu" and dim <= DENSE_MAX_DIM else "sparse"


def factor_blocks(T: Tensor, fa: Tensor, H_loc: Tensor, g_loc: Tensor, D: int) -> tuple[Tensor, Tensor]:
    """World-frame blocks of pose ``b`` of every factor: ``Hbb [F, D, D]``, ``gb [F, D]`` (compute dtype).

    ``T [n, 8]`` poses, ``fa [F]`` pose index of each factor's ``a``, ``H_loc [F, 7, 7]`` and ``g_loc [F, 7]``
    local blocks; the blocks of ``a`` are ``Hbb`` / ``-Hbb`` / ``-gb`` (``J_a = -J_b``).
    """
    A = sim3_adjoint(sim3_inverse(T[fa]))[:, :, :D]  # [F, 7, D]
    return A.transpose(1, 2) @ H_loc @ A, torch.einsum("fid,fi->fd", A, g_loc)


def _block_triplets(va: Tensor, vb: Tensor, Hbb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Block rows, columns and values ``[4F]``, ``[4F]``, ``[4F, D, D]`` of (a,a)+, (b,b)+, (a,b)-, (b,a)-."""
    rows = torch.cat((va, vb, va, vb))
    cols = torch.cat((va, vb, vb, va))
    return rows, cols, torch.cat((Hbb, Hbb, -Hbb, -Hbb)).double()


def _gradient(va: Tensor, vb: Tensor, gb: Tensor, n_free: int) -> Tensor:
    """Assembled gradient ``[n_free + 1, D]`` float64 (row ``n_free`` collects the fixed poses' terms)."""
    g = torch.zeros(n_free + 1, gb.shape[1], dtype=torch.float64, device=gb.device)
    g.index_add_(0, torch.where(vb >= 0, vb, n_free), gb.double())
    g.index_add_(0, torch.where(va >= 0, va, n_free), -gb.double())
    return g


def assemble_sparse(
    va: Tensor, vb: Tensor, Hbb: Tensor, gb: Tensor, n_free: int
) -> tuple[scipy.sparse.csc_matrix, np.ndarray]:
    """Host CSC matrix ``[n_free·D]²`` and gradient ``[n_free·D]`` (float64) of the blocks.

    ``va, vb [F]``: variable index of each factor's ``a`` and ``b`` (``< 0``: fixed pose, dropped).
    """
    D = Hbb.shape[-1]
    g = _gradient(va, vb, gb, n_free)
    rows_v, cols_v, blocks = _block_triplets(va, vb, Hbb)
    keep = (rows_v >= 0) & (cols_v >= 0)
    rows_v, cols_v, blocks = rows_v[keep], cols_v[keep], blocks[keep]
    ar = torch.arange(D, device=Hbb.device)
    rows = (rows_v[:, None, None] * D + ar[None, :, None]).expand(-1, D, D)
    cols = (cols_v[:, None, None] * D + ar[None, None, :]).expand(-1, D, D)
    n = n_free * D
    Hs = scipy.sparse.coo_matrix(
        (blocks.reshape(-1).cpu().numpy(), (rows.reshape(-1).cpu().numpy(), cols.reshape(-1).cpu().numpy())),
        shape=(n, n),
    ).tocsc()
    return Hs, g[:n_free].reshape(-1).cpu().numpy()


def assemble_dense(va: Tensor, vb: Tensor, Hbb: Tensor, gb: Tensor, n_free: int) -> tuple[Tensor, Tensor]:
    """Dense ``H [n_free·D, n_free·D]`` and gradient ``g [n_free·D]`` (float64, on the blocks' device).

    Same inputs as :func:`assemble_sparse`; the blocks of fixed poses go to a spare block row/column
    ``n_free`` that is cut off, so nothing is filtered (no data-dependent shapes, no host sync).
    """
    D = Hbb.shape[-1]
    g = _gradient(va, vb, gb, n_free)
    ia, ib = torch.where(va >= 0, va, n_free), torch.where(vb >= 0, vb, n_free)
    rows, cols, blocks = _block_triplets(ia, ib, Hbb)
    Hb = torch.zeros(n_free + 1, n_free + 1, D, D, dtype=torch.float64, device=Hbb.device)
    Hb.index_put_((rows, cols), blocks, accumulate=True)
    n = n_free * D
    return Hb[:n_free, :n_free].permute(0, 2, 1, 3).reshape(n, n), g[:n_free].reshape(-1)


def damp_sparse(Hs: scipy.sparse.csc_matrix, lam: float) -> scipy.sparse.csc_matrix:
    """``Hs + λ·diag(max(diag, floor))`` (``Hs`` itself for ``λ <= 0``)."""
    if lam <= 0:
        return Hs
    diag = Hs.diagonal()
    floor = _DAMP_FLOOR * max(float(diag.mean()), 1e-12)
    return Hs + scipy.sparse.diags(lam * np.maximum(diag, floor), format="csc")


def solve_sparse(Hs: scipy.sparse.csc_matrix, rhs: np.ndarray) -> np.ndarray | None:
    """Solve ``Hs x = rhs`` (SPD) with SuperLU; None when the factorisation fails or x is not finite."""
    try:
        lu = scipy.sparse.linalg.splu(
            Hs, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True}
        )
        x = lu.solve(rhs)
    except (RuntimeError, ValueError):
        return None
    if not np.all(np.isfinite(x)):
        return None
    # a numerically singular factorisation shows up as a large residual (a poor but finite step is caught
    # later by the cost check)
    res = np.linalg.norm(Hs @ x - rhs)
    if res > _RES_TOL * np.linalg.norm(rhs) + 1e-12:
        return None
    return x


def solve_dense(H: Tensor, rhs: Tensor, lam: float = 0.0) -> tuple[Tensor, Tensor]:
    """Solve ``(H + damping) x = rhs`` on ``H``'s device without a host sync.

    ``H [m, m]`` SPD (modified in place when ``λ > 0``), ``rhs [m]``. Returns ``x [m]`` (zeros when the
    solve failed) and ``ok``, a 0-d bool tensor on the device: Cholesky succeeded, ``x`` is finite and
    ``|H x - rhs| <= 1e-3 |rhs|``. Triangular solves rather than ``cholesky_solve``: no info check there.
    """
    if lam > 0:
        d = H.diagonal()
        floor = _DAMP_FLOOR * d.mean().clamp_min(1e-12)
        H.diagonal().add_(lam * torch.maximum(d, floor))
    L, info = torch.linalg.cholesky_ex(H)
    b = rhs.unsqueeze(-1)
    y = torch.linalg.solve_triangular(L, b, upper=False)
    x = torch.linalg.solve_triangular(L.mT, y, upper=True).squeeze(-1)
    res = torch.linalg.vector_norm(H @ x - rhs)
    ok = (info == 0) & torch.isfinite(x).all() & (res <= _RES_TOL * torch.linalg.vector_norm(rhs) + 1e-12)
    return torch.where(ok, x, torch.zeros_like(x)), ok
