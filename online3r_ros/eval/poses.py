"""NumPy pose helpers for I/O and evaluation: TUM vectors <-> 4x4 matrices, scale stripping, interpolation.

All poses are camera-to-world ``T_WC`` 4x4 ``float64`` matrices; quaternions are ``[qx, qy, qz, qw]`` (the TUM
and lietorch order). These helpers are batched over a leading ``N`` and never loop per pose in Python.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


def to_numpy(x) -> np.ndarray:
    """Torch tensor (any device) or array-like -> ``float64`` NumPy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def tum_to_matrix(tq: np.ndarray) -> np.ndarray:
    """``[N, 7] = [tx, ty, tz, qx, qy, qz, qw]`` -> ``[N, 4, 4]``. Quaternions are normalised first.

    Raises ``ValueError`` for zero-norm or non-finite quaternions.
    """
    tq = np.atleast_2d(to_numpy(tq))
    if tq.shape[-1] != 7:
        raise ValueError(f"expected [N, 7] translation+quaternion rows, got shape {tq.shape}")
    q = tq[:, 3:7]
    norm = np.linalg.norm(q, axis=1)
    bad = ~np.isfinite(norm) | (norm < 1e-12) | ~np.all(np.isfinite(tq[:, :3]), axis=1)
    if bad.any():
        raise ValueError(
            f"invalid pose rows (non-finite or zero quaternion) at indices {np.flatnonzero(bad)[:10]}"
        )
    T = np.tile(np.eye(4), (tq.shape[0], 1, 1))
    T[:, :3, :3] = Rotation.from_quat(q / norm[:, None]).as_matrix()
    T[:, :3, 3] = tq[:, :3]
    return T


def strip_scale(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split ``[N, 4, 4]`` similarity matrices (top-left ``s·R``) into SE(3) matrices and scales ``[N]``."""
    T = np.array(to_numpy(T), copy=True)
    if T.ndim == 2:
        T = T[None]
    A = T[:, :3, :3]
    s = np.cbrt(np.linalg.det(A))
    if np.any(~np.isfinite(s) | (s <= 0)):
        raise ValueError("pose matrices must have a positive-determinant rotation block")
    T[:, :3, :3] = A / s[:, None, None]
    return T, s


def matrix_to_tum(T: np.ndarray) -> np.ndarray:
    """``[N, 4, 4]`` (SE(3) or Sim(3); scale dropped) -> ``[N, 7] = [t, qx, qy, qz, qw]`` with ``qw >= 0``."""
    T, _ = strip_scale(T)
    q = Rotation.from_matrix(T[:, :3, :3]).as_quat()  # xyzw, re-orthonormalised
    q = np.where(q[:, 3:4] < 0, -q, q)
    return np.concatenate([T[:, :3, 3], q], axis=1)


def poses_to_matrix(poses) -> np.ndarray:
    """Accept ``[N, 4, 4]``, ``[N, 3, 4]``, ``[N, 7]`` (SE(3) vector) or ``[N, 8]`` (Sim(3), scale dropped).

    Returns ``[N, 4, 4]`` SE(3) matrices (Sim(3) scale removed from the rotation block).
    """
    P = to_numpy(poses)
    if P.ndim == 2 and P.shape in ((4, 4), (3, 4)):
        P = P[None]
    if P.ndim == 3 and P.shape[1:] == (3, 4):
        P = np.concatenate([P, np.broadcast_to([[[0.0, 0.0, 0.0, 1.0]]], (P.shape[0], 1, 4))], axis=1)
    if P.ndim == 3 and P.shape[1:] == (4, 4):
        return strip_scale(P)[0]
    if P.ndim == 1:
        P = P[None]
    if P.ndim == 2 and P.shape[1] in (7, 8):
        return tum_to_matrix(P[:, :7])
    raise ValueError(f"poses must be [N,4,4], [N,3,4], [N,7] or [N,8], got shape {P.shape}")


def is_valid_pose(T: np.ndarray, tol: float = 1e-3) -> np.ndarray:
    """``[N]`` bool: finite, bottom row ``[0,0,0,1]`` and an orthonormal rotation block with det +1."""
    T = to_numpy(T)
    if T.ndim == 2:
        T = T[None]
    finite = np.all(np.isfinite(T.reshape(T.shape[0], -1)), axis=1)
    Tf = np.where(finite[:, None, None], T, np.eye(4))
    R = Tf[:, :3, :3]
    ortho = np.abs(np.einsum("nji,njk->nik", R, R) - np.eye(3)).max(axis=(1, 2)) < tol
    det = np.abs(np.linalg.det(R) - 1.0) < tol
    bottom = np.abs(Tf[:, 3] - np.array([0.0, 0.0, 0.0, 1.0])).max(axis=1) < tol
    return finite & ortho & det & bottom


def interpolate_poses(
    t_src: np.ndarray, T_src: np.ndarray, t_query: np.ndarray, max_difference: float = 0.02
) -> tuple[np.ndarray, np.ndarray]:
    """Interpolate poses (lerp translation, slerp rotation) at ``t_query`` from a sorted stream.

    A query lying between two source samples that are each at most ``max_difference`` seconds away gets the
    interpolated pose; otherwise it takes the nearest sample if that is within ``max_difference`` (the TUM
    association rule), else it gets none. Returns ``(T [M, 4, 4], valid [M] bool)``; invalid rows are NaN.
    """
    t_src = np.asarray(t_src, dtype=np.float64)
    t_query = np.asarray(t_query, dtype=np.float64)
    T_src = to_numpy(T_src)
    out = np.full((t_query.shape[0], 4, 4), np.nan)
    valid = np.zeros(t_query.shape[0], dtype=bool)
    if t_src.size == 0 or t_query.size == 0:
        return out, valid
    hi = np.clip(np.searchsorted(t_src, t_query, side="left"), 0, t_src.size - 1)
    lo = np.clip(hi - 1, 0, t_src.size - 1)
    exact = np.abs(t_src[hi] - t_query) <= 1e-9
    lo = np.where(exact, hi, lo)
    inside = (t_src[lo] <= t_query + 1e-9) & (t_src[hi] >= t_query - 1e-9)
    near = (t_query - t_src[lo] <= max_difference) & (t_src[hi] - t_query <= max_difference)
    valid = inside & near
    # fallback: nearest sample within max_difference (sparse reference streams, query outside the range)
    nearest = np.where(np.abs(t_src[lo] - t_query) <= np.abs(t_src[hi] - t_query), lo, hi)
    snap = ~valid & (np.abs(t_src[nearest] - t_query) <= max_difference)
    lo = np.where(snap, nearest, lo)
    hi = np.where(snap, nearest, hi)
    valid = valid | snap
    if not valid.any():
        return out, valid
    qi = np.flatnonzero(valid)
    lo_v, hi_v = lo[qi], hi[qi]
    span = t_src[hi_v] - t_src[lo_v]
    alpha = np.where(span > 0, (t_query[qi] - t_src[lo_v]) / np.where(span > 0, span, 1.0), 0.0)
    alpha = np.clip(alpha, 0.0, 1.0)
    R_lo = Rotation.from_matrix(T_src[lo_v, :3, :3])
    R_hi = Rotation.from_matrix(T_src[hi_v, :3, :3])
    rel = (R_lo.inv() * R_hi).as_rotvec()
    R = R_lo * Rotation.from_rotvec(rel * alpha[:, None])
    res = np.tile(np.eye(4), (qi.size, 1, 1))
    res[:, :3, :3] = R.as_matrix()
    res[:, :3, 3] = (1 - alpha)[:, None] * T_src[lo_v, :3, 3] + alpha[:, None] * T_src[hi_v, :3, 3]
    out[qi] = res
    return out, valid


__all__ = [
    "interpolate_poses",
    "is_valid_pose",
    "matrix_to_tum",
    "poses_to_matrix",
    "strip_scale",
    "to_numpy",
    "tum_to_matrix",
]
