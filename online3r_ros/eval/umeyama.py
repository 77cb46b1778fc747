"""Closed-form Umeyama alignment (NumPy), used to cross-check evo in tests."""

from __future__ import annotations

import numpy as np


def umeyama_alignment(
    src: np.ndarray, dst: np.ndarray, with_scale: bool = True
) -> tuple[np.ndarray, np.ndarray, float]:
    """Least-squares ``(R, t, s)`` with ``dst ≈ s·R·src + t`` for ``src, dst [N, 3]`` (Umeyama 1991).

    Raises ``ValueError`` for fewer than 3 points or degenerate (zero-variance) ``src``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3:
        raise ValueError(f"src and dst must both be [N, 3], got {src.shape} and {dst.shape}")
    if src.shape[0] < 3:
        raise ValueError(f"need at least 3 points, got {src.shape[0]}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    var_s = (xs**2).sum() / src.shape[0]
    if var_s < 1e-18:
        raise ValueError("source points are degenerate (zero variance)")
    cov = xd.T @ xs / src.shape[0]
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1.0
    R = U @ S @ Vt
    s = float(np.trace(np.diag(D) @ S) / var_s) if with_scale else 1.0
    t = mu_d - s * R @ mu_s
    return R, t, s


def ate_rmse(src: np.ndarray, dst: np.ndarray, with_scale: bool) -> float:
    """RMSE of ``|s·R·src + t - dst|`` after Umeyama alignment."""
    R, t, s = umeyama_alignment(src, dst, with_scale)
    err = (s * (R @ np.asarray(src, dtype=np.float64).T)).T + t - dst
    return float(np.sqrt((err**2).sum(1).mean()))
