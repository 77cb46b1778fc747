"""Sim(3) and SE(3) Lie groups on plain torch tensors (batched, float32/float64, any device).

Layouts (lietorch compatible):

- Sim(3): ``[..., 8] = [tx, ty, tz, qx, qy, qz, qw, s]``, acting as ``T·X = s·R·X + t``.
- SE(3):  ``[..., 7] = [tx, ty, tz, qx, qy, qz, qw]``.
- Quaternions are Hamilton, ``xyzw``, unit norm.

Tangent vectors use the *left* perturbation ``T <- Exp(xi)·T``:

- Sim(3): ``xi = [tau(3), omega(3), sigma(1)]`` (sigma = log-scale),
- SE(3):  ``xi = [tau(3), omega(3)]``.

All functions broadcast over leading dimensions.  Scalar coefficients of the exponential and logarithm are
evaluated in float64 with series expansions near zero rotation / unit scale, so the results and their
autograd gradients stay finite at the identity.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor

__all__ = [
    "skew",
    "quat_multiply",
    "quat_conjugate",
    "quat_rotate",
    "quat_to_matrix",
    "matrix_to_quat",
    "so3_exp",
    "so3_log",
    "sim3_identity",
    "sim3_compose",
    "sim3_inverse",
    "sim3_act",
    "sim3_exp",
    "sim3_log",
    "sim3_retract",
    "sim3_adjoint",
    "sim3_to_matrix",
    "sim3_from_matrix",
    "sim3_act_jacobian",
    "se3_identity",
    "se3_compose",
    "se3_inverse",
    "se3_act",
    "se3_exp",
    "se3_log",
    "se3_retract",
    "se3_adjoint",
    "se3_to_matrix",
    "se3_from_matrix",
    "se3_act_jacobian",
    "sim3_from_se3",
    "sim3_to_se3",
]

# Below these magnitudes the closed forms are replaced by Taylor series (evaluated in float64).
_THETA_SERIES = 1e-2  # rotation angle (rad) for the V/W-matrix coefficients
_QUAT_SERIES = 1e-3  # |q_xyz| (= sin(theta/2)) for so3_log and theta for so3_exp
_SIGMA_SERIES = 2.0  # |log-scale| below which f_n(sigma) uses its (entire) power series
_SERIES_TERMS = 32


def _check_last(x: Tensor, n: int, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.shape[-1:] != (n,):
        raise ValueError(f"{name} must have shape [..., {n}], got {tuple(x.shape)}")


# ---------------------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------------------


def skew(v: Tensor) -> Tensor:
    """Cross-product matrix ``[v]x`` of ``v[..., 3]`` -> ``[..., 3, 3]`` (``[v]x @ u = v x u``)."""
    _check_last(v, 3, "v")
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(*v.shape[:-1], 3, 3)


def _cross(a: Tensor, b: Tensor) -> Tensor:
    a, b = torch.broadcast_tensors(a, b)
    return torch.linalg.cross(a, b, dim=-1)


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product ``a ⊗ b`` of xyzw quaternions ``[..., 4]``."""
    ax, ay, az, aw = a.unbind(-1)
    bx, by, bz, bw = b.unbind(-1)
    return torch.stack(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ],
        dim=-1,
    )


def _unit(q: Tensor) -> Tensor:
    """Renormalise quaternions ``[..., 4]``: products of float32 quaternions drift off the unit sphere, and
    repeated composition (motion models, re-anchoring) would otherwise compound the error until the rotation
    collapses."""
    return q / torch.linalg.vector_norm(q, dim=-1, keepdim=True).clamp_min(torch.finfo(q.dtype).tiny)


def quat_conjugate(q: Tensor) -> Tensor:
    """Conjugate (= inverse for unit quaternions) of ``q[..., 4]`` (xyzw)."""
    return torch.cat([-q[..., :3], q[..., 3:]], dim=-1)


def quat_rotate(q: Tensor, v: Tensor) -> Tensor:
    """Rotate ``v[..., 3]`` by unit quaternion ``q[..., 4]`` (broadcasting)."""
    u = q[..., :3]
    w = q[..., 3:]
    uv = _cross(u, v)
    return v + 2.0 * (w * uv + _cross(u, uv))


def quat_to_matrix(q: Tensor) -> Tensor:
    """Rotation matrix ``[..., 3, 3]`` of unit quaternion ``q[..., 4]`` (xyzw)."""
    _check_last(q, 4, "q")
    x, y, z, w = q.unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = w * x, w * y, w * z
    m = torch.stack(
        [
            1 - 2 * (yy + zz),
            2 * (xy - wz),
            2 * (xz + wy),
            2 * (xy + wz),
            1 - 2 * (xx + zz),
            2 * (yz - wx),
            2 * (xz - wy),
            2 * (yz + wx),
            1 - 2 * (xx + yy),
        ],
        dim=-1,
    )
    return m.reshape(*q.shape[:-1], 3, 3)


def matrix_to_quat(R: Tensor) -> Tensor:
    """Unit quaternion ``[..., 4]`` (xyzw, ``qw >= 0``) of rotation matrix ``R[..., 3, 3]``.

    Shepperd's method: the best-conditioned of the four candidate formulas is picked per element.
    """
    if not isinstance(R, torch.Tensor) or R.shape[-2:] != (3, 3):
        raise ValueError(f"R must have shape [..., 3, 3], got {tuple(getattr(R, 'shape', ()))}")
    r00, r01, r02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    r10, r11, r12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    r20, r21, r22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    d = torch.stack(
        [1 + r00 + r11 + r22, 1 + r00 - r11 - r22, 1 - r00 + r11 - r22, 1 - r00 - r11 + r22], dim=-1
    )
    h = 0.5 * torch.sqrt(d.clamp_min(1e-12))  # [..., 4]; the chosen one is >= 0.5
    inv4 = 0.25 / h
    hw, hx, hy, hz = h.unbind(-1)
    iw, ix, iy, iz = inv4.unbind(-1)
    cands = torch.stack(
        [
            torch.stack([(r21 - r12) * iw, (r02 - r20) * iw, (r10 - r01) * iw, hw], dim=-1),
            torch.stack([hx, (r01 + r10) * ix, (r02 + r20) * ix, (r21 - r12) * ix], dim=-1),
            torch.stack([(r01 + r10) * iy, hy, (r12 + r21) * iy, (r02 - r20) * iy], dim=-1),
            torch.stack([(r02 + r20) * iz, (r12 + r21) * iz, hz, (r10 - r01) * iz], dim=-1),
        ],
        dim=-2,
    )  # [..., 4 candidates, 4]
    best = d.argmax(dim=-1, keepdim=True)[..., None].expand(*d.shape[:-1], 1, 4)
    q = torch.gather(cands, -2, best).squeeze(-2)
    q = q * torch.where(q[..., 3:] < 0, -1.0, 1.0).to(q.dtype)
    return q / q.norm(dim=-1, keepdim=True)


# ---------------------------------------------------------------------------------------------------------
# SO(3) exp / log
# ---------------------------------------------------------------------------------------------------------


def so3_exp(w: Tensor) -> Tensor:
    """Quaternion ``[..., 4]`` (xyzw) of the rotation vector ``w[..., 3]`` (axis·angle, rad)."""
    _check_last(w, 3, "w")
    w64 = w.to(torch.float64)
    t2 = (w64 * w64).sum(-1, keepdim=True)
    small = t2 < _QUAT_SERIES**2
    t = torch.sqrt(torch.where(small, 1.0, t2))
    k = torch.where(small, 0.5 - t2 / 48.0 + t2 * t2 / 3840.0, torch.sin(0.5 * t) / t)
    c = torch.where(small, 1.0 - t2 / 8.0 + t2 * t2 / 384.0, torch.cos(0.5 * t))
    return torch.cat([w64 * k, c], dim=-1).to(w.dtype)


def so3_log(q: Tensor) -> Tensor:
    """Rotation vector ``[..., 3]`` (angle in ``[0, pi]``) of unit quaternion ``q[..., 4]`` (xyzw)."""
    _check_last(q, 4, "q")
    q64 = q.to(torch.float64)
    q64 = q64 * torch.where(q64[..., 3:] < 0, -1.0, 1.0).to(torch.float64)
    v = q64[..., :3]
    qw = q64[..., 3:]
    n2 = (v * v).sum(-1, keepdim=True)
    small = n2 < _QUAT_SERIES**2
    n = torch.sqrt(torch.where(small, 1.0, n2))
    qw_safe = torch.where(small, qw, 1.0)
    x2 = n2 / (qw_safe * qw_safe)
    # 2·atan(n/w)/n = (2/w)(1 - x²/3 + x⁴/5 - ...), x = n/w (w ≈ 1 in the series branch)
    f_small = (2.0 / qw_safe) * (1.0 - x2 / 3.0 + x2 * x2 / 5.0)
    f = torch.where(small, f_small, 2.0 * torch.atan2(n, qw) / n)
    return (v * f).to(q.dtype)


# ---------------------------------------------------------------------------------------------------------
# V / W matrix coefficients (float64)
# ---------------------------------------------------------------------------------------------------------


_SERIES_CONSTANTS: dict[tuple[torch.device, int], tuple[Tensor, Tensor, Tensor]] = {}


def _series_constants(device: torch.device, n_max: int) -> tuple[Tensor, Tensor, Tensor]:
    """``k [K]``, ``1/k! [K]`` and ``n + k + 1 [n_max+1, K]`` (float64) of :func:`_f_moments`' power
    series, made once per device (as ordinary tensors, also when first asked under inference mode)."""
    key = (device, n_max)
    hit = _SERIES_CONSTANTS.get(key)
    if hit is None:
        with torch.inference_mode(False):
            k = torch.arange(_SERIES_TERMS, dtype=torch.float64, device=device)
            inv_fact = torch.exp(-torch.lgamma(k + 1.0))
            ns = torch.arange(n_max + 1, dtype=torch.float64, device=device)
            hit = _SERIES_CONSTANTS[key] = (k, inv_fact, ns[:, None] + k[None, :] + 1.0)
    return hit


def _f_moments(sigma: Tensor, n_max: int) -> Tensor:
    """``f_n(sigma) = ∫_0^1 t^n e^{sigma t} dt`` for n = 0..n_max -> ``[..., n_max+1]`` (float64)."""
    small = sigma.abs() < _SIGMA_SERIES
    # power series: sum_k sigma^k / (k! (n+k+1))
    k, inv_fact, denom = _series_constants(sigma.device, n_max)
    s_small = torch.where(small, sigma, 0.0)
    powers = s_small[..., None] ** k  # [..., K]
    terms = powers * inv_fact
    series = (terms[..., None, :] / denom).sum(-1)  # [..., n]
    # closed form by upward recursion, stable for |sigma| >= _SIGMA_SERIES
    s_big = torch.where(small, _SIGMA_SERIES, sigma)
    es = torch.exp(s_big)
    vals = [torch.expm1(s_big) / s_big]
    for m in range(1, n_max + 1):
        vals.append((es - m * vals[-1]) / s_big)
    closed = torch.stack(vals, dim=-1)
    return torch.where(small[..., None], series, closed)


def _w_coeffs(theta2: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Coefficients of ``W = a·I + b·K + c·K²`` (K = [omega]x) of the Sim(3) exponential (float64).

    ``W = ∫_0^1 e^{sigma t} R(t omega) dt``; for sigma = 0 it is SE(3)'s V matrix.
    """
    f = _f_moments(sigma, 6)
    a = f[..., 0]
    small = theta2 < _THETA_SERIES**2
    t2s = torch.where(small, theta2, 0.0)
    b_small = f[..., 1] - t2s / 6.0 * f[..., 3] + t2s * t2s / 120.0 * f[..., 5]
    c_small = f[..., 2] / 2.0 - t2s / 24.0 * f[..., 4] + t2s * t2s / 720.0 * f[..., 6]
    th = torch.sqrt(torch.where(small, 1.0, theta2))
    es = torch.exp(sigma)
    den = sigma * sigma + th * th
    sin_t, cos_t = torch.sin(th), torch.cos(th)
    i_sin = (es * (sigma * sin_t - th * cos_t) + th) / den
    i_cos = (es * (sigma * cos_t + th * sin_t) - sigma) / den
    b_big = i_sin / th
    c_big = (a - i_cos) / (th * th)
    return a, torch.where(small, b_small, b_big), torch.where(small, c_small, c_big)


def _w_matrix(omega64: Tensor, sigma64: Tensor) -> Tensor:
    theta2 = (omega64 * omega64).sum(-1)
    a, b, c = _w_coeffs(theta2, sigma64)
    K = skew(omega64)
    eye = torch.eye(3, dtype=torch.float64, device=omega64.device)
    return a[..., None, None] * eye + b[..., None, None] * K + c[..., None, None] * (K @ K)


# ---------------------------------------------------------------------------------------------------------
# Sim(3)
# ---------------------------------------------------------------------------------------------------------


def sim3_identity(*batch_shape: int, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """Identity Sim(3) ``[*batch_shape, 8]``."""
    T = torch.zeros(*batch_shape, 8, dtype=dtype, device=device)
    T[..., 6] = 1.0
    T[..., 7] = 1.0
    return T


def sim3_compose(a: Tensor, b: Tensor) -> Tensor:
    """Product ``a·b`` of Sim(3) elements ``[..., 8]`` (apply b first)."""
    _check_last(a, 8, "a")
    _check_last(b, 8, "b")
    qa, sa = a[..., 3:7], a[..., 7:]
    t = sa * quat_rotate(qa, b[..., :3]) + a[..., :3]
    q = _unit(quat_multiply(qa, b[..., 3:7]))
    s = sa * b[..., 7:]
    if t.shape[:-1] == q.shape[:-1] == s.shape[:-1]:
        return torch.cat([t, q, s], dim=-1)
    shape = torch.broadcast_shapes(t.shape[:-1], q.shape[:-1], s.shape[:-1])
    return torch.cat([t.expand(*shape, 3), q.expand(*shape, 4), s.expand(*shape, 1)], dim=-1)


def sim3_inverse(a: Tensor) -> Tensor:
    """Inverse of Sim(3) ``[..., 8]``: ``(s, R, t)^-1 = (1/s, R^T, -R^T t / s)``."""
    _check_last(a, 8, "a")
    qi = quat_conjugate(a[..., 3:7])
    si = 1.0 / a[..., 7:]
    t = -si * quat_rotate(qi, a[..., :3])
    return torch.cat([t, qi, si], dim=-1)


def _rotation_scale_matrix(T: Tensor) -> Tensor:
    R = quat_to_matrix(T[..., 3:7])
    if T.shape[-1] == 8:
        R = R * T[..., 7:8, None]
    return R


def _act_linear(T: Tensor, X: Tensor) -> Tensor:
    M = _rotation_scale_matrix(T)
    t = T[..., :3]
    if T.dim() == 1:  # one transform for many points: a single GEMM
        return X @ M.transpose(-1, -2) + t
    return (M @ X.unsqueeze(-1)).squeeze(-1) + t


def sim3_act(T: Tensor, X: Tensor) -> Tensor:
    """Transform points: ``T·X = s·R·X + t``; ``T[..., 8]``, ``X[..., 3]`` broadcast -> ``[..., 3]``.

    An unbatched ``T[8]`` acting on ``X[N, 3]`` (or ``[H, W, 3]``) runs as one matrix product.
    """
    _check_last(T, 8, "T")
    _check_last(X, 3, "X")
    return _act_linear(T, X)


def sim3_exp(xi: Tensor) -> Tensor:
    """Exponential of ``xi[..., 7] = [tau, omega, sigma]`` -> Sim(3) ``[..., 8]``."""
    _check_last(xi, 7, "xi")
    x64 = xi.to(torch.float64)
    tau, omega, sigma = x64[..., :3], x64[..., 3:6], x64[..., 6]
    W = _w_matrix(omega, sigma)
    t = (W @ tau.unsqueeze(-1)).squeeze(-1)
    q = so3_exp(omega)
    s = torch.exp(sigma)[..., None]
    return torch.cat([t, q, s], dim=-1).to(xi.dtype)


def sim3_log(T: Tensor) -> Tensor:
    """Logarithm of Sim(3) ``T[..., 8]`` -> ``xi[..., 7] = [tau, omega, sigma]`` (rotation angle <= pi)."""
    _check_last(T, 8, "T")
    T64 = T.to(torch.float64)
    omega = so3_log(T64[..., 3:7])
    sigma = torch.log(T64[..., 7])
    W = _w_matrix(omega, sigma)
    tau = torch.linalg.solve(W, T64[..., :3].unsqueeze(-1)).squeeze(-1)
    return torch.cat([tau, omega, sigma[..., None]], dim=-1).to(T.dtype)


def sim3_retract(T: Tensor, xi: Tensor) -> Tensor:
    """Left retraction ``Exp(xi)·T``."""
    return sim3_compose(sim3_exp(xi), T)


def sim3_adjoint(T: Tensor) -> Tensor:
    """Adjoint ``[..., 7, 7]`` with ``T·Exp(xi) = Exp(Adj(T) xi)·T``.

    ``Adj = [[s R, [t]x R, -t], [0, R, 0], [0, 0, 1]]``.
    """
    _check_last(T, 8, "T")
    R = quat_to_matrix(T[..., 3:7])
    s = T[..., 7, None, None]
    t = T[..., :3]
    Adj = T.new_zeros(*T.shape[:-1], 7, 7)
    Adj[..., :3, :3] = s * R
    Adj[..., :3, 3:6] = skew(t) @ R
    Adj[..., :3, 6] = -t
    Adj[..., 3:6, 3:6] = R
    Adj[..., 6, 6] = 1.0
    return Adj


def sim3_to_matrix(T: Tensor) -> Tensor:
    """Homogeneous ``[..., 4, 4]`` matrix ``[[s R, t], [0, 1]]`` of Sim(3) ``T[..., 8]``."""
    _check_last(T, 8, "T")
    M = T.new_zeros(*T.shape[:-1], 4, 4)
    M[..., :3, :3] = _rotation_scale_matrix(T)
    M[..., :3, 3] = T[..., :3]
    M[..., 3, 3] = 1.0
    return M


def sim3_from_matrix(M: Tensor) -> Tensor:
    """Sim(3) ``[..., 8]`` from ``[..., 4, 4]`` (top-left block ``s·R``, ``s = det^(1/3) > 0``)."""
    if not isinstance(M, torch.Tensor) or M.shape[-2:] != (4, 4):
        raise ValueError(f"M must have shape [..., 4, 4], got {tuple(getattr(M, 'shape', ()))}")
    A = M[..., :3, :3]
    det = torch.linalg.det(A)
    if bool((det <= 0).any()):
        raise ValueError("sim3_from_matrix: top-left block must have positive determinant (s > 0, det R = 1)")
    s = det.pow(1.0 / 3.0)
    q = matrix_to_quat(A / s[..., None, None])
    return torch.cat([M[..., :3, 3], q, s[..., None]], dim=-1)


def sim3_act_jacobian(P: Tensor) -> Tensor:
    """``d(Exp(xi)·P)/dxi`` at ``xi = 0`` for already-transformed points ``P[..., 3]`` -> ``[..., 3, 7]``.

    Equals ``[I | -[P]x | P]``.
    """
    _check_last(P, 3, "P")
    J = P.new_zeros(*P.shape[:-1], 3, 7)
    J[..., 0, 0] = 1.0
    J[..., 1, 1] = 1.0
    J[..., 2, 2] = 1.0
    J[..., 3:6] = -skew(P)
    J[..., 6] = P
    return J


# ---------------------------------------------------------------------------------------------------------
# SE(3)
# ---------------------------------------------------------------------------------------------------------


def se3_identity(*batch_shape: int, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """Identity SE(3) ``[*batch_shape, 7]``."""
    T = torch.zeros(*batch_shape, 7, dtype=dtype, device=device)
    T[..., 6] = 1.0
    return T


def se3_compose(a: Tensor, b: Tensor) -> Tensor:
    """Product ``a·b`` of SE(3) elements ``[..., 7]``."""
    _check_last(a, 7, "a")
    _check_last(b, 7, "b")
    qa = a[..., 3:7]
    t = quat_rotate(qa, b[..., :3]) + a[..., :3]
    q = _unit(quat_multiply(qa, b[..., 3:7]))
    shape = torch.broadcast_shapes(t.shape[:-1], q.shape[:-1])
    return torch.cat([t.expand(*shape, 3), q.expand(*shape, 4)], dim=-1)


def se3_inverse(a: Tensor) -> Tensor:
    """Inverse of SE(3) ``[..., 7]``."""
    _check_last(a, 7, "a")
    qi = quat_conjugate(a[..., 3:7])
    return torch.cat([-quat_rotate(qi, a[..., :3]), qi], dim=-1)


def se3_act(T: Tensor, X: Tensor) -> Tensor:
    """``R·X + t`` for ``T[..., 7]``, ``X[..., 3]`` (broadcasting)."""
    _check_last(T, 7, "T")
    _check_last(X, 3, "X")
    return _act_linear(T, X)


def se3_exp(xi: Tensor) -> Tensor:
    """Exponential of ``xi[..., 6] = [tau, omega]`` -> SE(3) ``[..., 7]``."""
    _check_last(xi, 6, "xi")
    x64 = xi.to(torch.float64)
    tau, omega = x64[..., :3], x64[..., 3:6]
    V = _w_matrix(omega, torch.zeros_like(omega[..., 0]))
    t = (V @ tau.unsqueeze(-1)).squeeze(-1)
    return torch.cat([t, so3_exp(omega)], dim=-1).to(xi.dtype)


def se3_log(T: Tensor) -> Tensor:
    """Logarithm of SE(3) ``T[..., 7]`` -> ``[..., 6] = [tau, omega]``."""
    _check_last(T, 7, "T")
    T64 = T.to(torch.float64)
    omega = so3_log(T64[..., 3:7])
    V = _w_matrix(omega, torch.zeros_like(omega[..., 0]))
    tau = torch.linalg.solve(V, T64[..., :3].unsqueeze(-1)).squeeze(-1)
    return torch.cat([tau, omega], dim=-1).to(T.dtype)


def se3_retract(T: Tensor, xi: Tensor) -> Tensor:
    """Left retraction ``Exp(xi)·T``."""
    return se3_compose(se3_exp(xi), T)


def se3_adjoint(T: Tensor) -> Tensor:
    """Adjoint ``[..., 6, 6] = [[R, [t]x R], [0, R]]`` with ``T·Exp(xi) = Exp(Adj xi)·T``."""
    _check_last(T, 7, "T")
    R = quat_to_matrix(T[..., 3:7])
    Adj = T.new_zeros(*T.shape[:-1], 6, 6)
    Adj[..., :3, :3] = R
    Adj[..., :3, 3:6] = skew(T[..., :3]) @ R
    Adj[..., 3:6, 3:6] = R
    return Adj


def se3_to_matrix(T: Tensor) -> Tensor:
    """Homogeneous ``[..., 4, 4]`` matrix of SE(3) ``T[..., 7]``."""
    _check_last(T, 7, "T")
    M = T.new_zeros(*T.shape[:-1], 4, 4)
    M[..., :3, :3] = quat_to_matrix(T[..., 3:7])
    M[..., :3, 3] = T[..., :3]
    M[..., 3, 3] = 1.0
    return M


def se3_from_matrix(M: Tensor) -> Tensor:
    """SE(3) ``[..., 7]`` from a rigid ``[..., 4, 4]`` matrix."""
    if not isinstance(M, torch.Tensor) or M.shape[-2:] != (4, 4):
        raise ValueError(f"M must have shape [..., 4, 4], got {tuple(getattr(M, 'shape', ()))}")
    return torch.cat([M[..., :3, 3], matrix_to_quat(M[..., :3, :3])], dim=-1)


def se3_act_jacobian(P: Tensor) -> Tensor:
    """``d(Exp(xi)·P)/dxi`` at 0 for transformed points ``P[..., 3]`` -> ``[..., 3, 6] = [I | -[P]x]``."""
    _check_last(P, 3, "P")
    J = P.new_zeros(*P.shape[:-1], 3, 6)
    J[..., 0, 0] = 1.0
    J[..., 1, 1] = 1.0
    J[..., 2, 2] = 1.0
    J[..., 3:6] = -skew(P)
    return J


def sim3_from_se3(T: Tensor, scale: float | Tensor = 1.0) -> Tensor:
    """Sim(3) ``[..., 8]`` from SE(3) ``[..., 7]`` with scale ``scale`` (float or tensor ``[...]``)."""
    _check_last(T, 7, "T")
    s = torch.as_tensor(scale, dtype=T.dtype, device=T.device)
    s = s.expand(T.shape[:-1]).unsqueeze(-1)
    return torch.cat([T, s], dim=-1)


def sim3_to_se3(T: Tensor) -> Tensor:
    """SE(3) ``[..., 7]`` from Sim(3) ``[..., 8]`` by dropping the scale."""
    _check_last(T, 8, "T")
    return T[..., :7]
