"""Projective point-to-plane ICP pieces for metric, calibrated pointmaps (RGB-D tracking).

The keyframe's points ``X_k`` (its own frame) are associated with the frame's pointmap by projecting
``T_CkCf^-1 · X_k`` into the frame with ``K`` (nearest pixel) every time the residual is evaluated, and the
residual is the point-to-plane distance ``n_k · (X_k - T_CkCf · X_f[p])`` in keyframe coordinates.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from online3r_ros.geometry.camera import project
from online3r_ros.geometry.lie import quat_to_matrix, sim3_act, sim3_inverse
from online3r_ros.utils.host_syncs import on_device

Tensor = torch.Tensor

#: RGB -> grey weights (ITU-R BT.601)
GREY_WEIGHTS = torch.tensor([0.299, 0.587, 0.114])

__all__ = [
    "pointmap_normals",
    "smoothed_normals",
    "point_to_plane_information",
    "ModelView",
    "view_model",
    "associate",
    "projective_association",
    "point_to_plane_residuals",
    "grey_and_gradients",
    "photometric",
    "photometric_residuals",
]


def _central_normals(X: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Of the interior pixels of ``X [H, W, 3]`` (``H, W >= 3``): unit normals ``[H-2, W-2, 3]`` from central
    differences, facing the camera, valid where the pixel and its four neighbours are ``valid`` and the
    cross product is non-zero; also the differences ``dx``, ``dy``."""
    dx = X[1:-1, 2:] - X[1:-1, :-2]
    dy = X[2:, 1:-1] - X[:-2, 1:-1]
    c = torch.linalg.cross(dx, dy, dim=-1)
    norm = c.norm(dim=-1, keepdim=True)
    n = c / norm.clamp_min(1e-12)
    n = torch.where((n * X[1:-1, 1:-1]).sum(-1, keepdim=True) > 0, -n, n)
    ok = valid[1:-1, 1:-1] & valid[1:-1, 2:] & valid[1:-1, :-2] & valid[2:, 1:-1] & valid[:-2, 1:-1]
    return n, ok & (norm.squeeze(-1) > 0), dx, dy


def pointmap_normals(X: Tensor, valid: Tensor, max_step: float = 0.05) -> tuple[Tensor, Tensor]:
    """Unit normals ``[H, W, 3]`` (facing the camera) of an organised pointmap ``X[H, W, 3]`` from central
    differences, and their validity ``[H, W]`` (all four neighbours valid, neighbour steps < ``max_step``
    plus 5% of the depth: no normals across depth discontinuities; border pixels invalid)."""
    H, W = X.shape[:2]
    n = torch.zeros_like(X)
    ok = torch.zeros(H, W, dtype=torch.bool, device=X.device)
    if H < 3 or W < 3:
        return n, ok
    nc, v, dx, dy = _central_normals(X, valid)
    lim = 2 * (max_step + 0.05 * X[1:-1, 1:-1, 2])
    v = v & (dx.norm(dim=-1) < lim) & (dy.norm(dim=-1) < lim)
    n[1:-1, 1:-1] = nc
    ok[1:-1, 1:-1] = v
    return n, ok


def smoothed_normals(
    X: Tensor, valid: Tensor, size: int = 5, max_step: float = 0.05
) -> tuple[Tensor, Tensor]:
    """Unit normals ``[H, W, 3]`` (facing the camera) of the ``size x size`` box-filtered pointmap
    ``X[H, W, 3]`` (central differences of window means) and their validity ``[H, W]``.

    For judging how well point-to-plane ICP constrains a pose: per-pixel depth noise scatters raw
    central-difference normals, and the scatter reads as information along a plane's tangents (a noisy flat
    wall looks like a weakly curved surface); averaging the points first removes most of it. Window means
    come from an integral image (float64; cost independent of ``size``). Valid where the pixel's window and
    its four neighbours' hold only valid points and the pixel's depth is within ``max_step`` + 5% of its
    window mean (not on a depth edge); pixels closer than ``size // 2 + 1`` to the border are invalid.
    """
    H, W = X.shape[:2]
    k, r = size, size // 2
    n = torch.zeros_like(X)
    ok = torch.zeros(H, W, dtype=torch.bool, device=X.device)
    if H < k + 2 or W < k + 2:
        return n, ok
    v = valid.to(torch.float64).unsqueeze(-1)
    S = F.pad(torch.cat([X.to(torch.float64) * v, v], dim=-1).cumsum(0).cumsum(1), (0, 0, 1, 0, 1, 0))
    B = S[k:, k:] - S[:-k, k:] - S[k:, :-k] + S[:-k, :-k]  # window sums, centre (i + r, j + r)
    full = B[..., 3] > k * k - 0.5
    M = (B[..., :3] / (k * k)).to(X.dtype)
    nc, inner, _, _ = _central_normals(M, full)
    z = X[r + 1 : H - r - 1, r + 1 : W - r - 1, 2]
    inner = inner & ((z - M[1:-1, 1:-1, 2]).abs() < max_step + 0.05 * z)
    n[r + 1 : H - r - 1, r + 1 : W - r - 1] = nc
    ok[r + 1 : H - r - 1, r + 1 : W - r - 1] = inner
    return n, ok


class ModelView(NamedTuple):
    """Keyframe points seen from the frame under ``T_CkCf`` (:func:`view_model`): ``Q [N, 3]`` =
    ``T_CkCf^-1 · X_k`` in the frame's camera, their pixels ``uv [N, 2]``, ``in_front [N]`` (``z > 0``) and
    ``A [3, 3]``, the linear part ``s·R`` of ``T_CkCf^-1``. Computed once per pose, shared by
    :func:`associate` and :func:`photometric`."""

    Q: Tensor
    uv: Tensor
    in_front: Tensor
    A: Tensor


def view_model(T_CkCf: Tensor, X_k: Tensor, K: Tensor) -> ModelView:
    """Keyframe points ``X_k [N, 3]`` (keyframe frame) moved into the frame by ``T_CkCf^-1`` (Sim(3)
    ``[8]``) and projected with the frame's ``K [3, 3]``."""
    Ti = sim3_inverse(T_CkCf)
    A = quat_to_matrix(Ti[3:7]) * Ti[7]
    Q = X_k @ A.T + Ti[:3]
    uv, in_front = project(Q, K)
    return ModelView(Q, uv, in_front, A)


def associate(view: ModelView, X_f: Tensor, valid_f: Tensor, dist_thresh: float) -> tuple[Tensor, Tensor]:
    """For the viewed keyframe points the frame pixel nearest their projection (linear index ``[N]``) and
    validity ``[N]`` (inside the image, frame depth valid (``valid_f [H, W]``), 3D distance between the
    frame's point ``X_f [H, W, 3]`` there and the moved keyframe point below ``dist_thresh``, m)."""
    H, W = X_f.shape[:2]
    u = torch.round(view.uv[..., 0])
    v = torch.round(view.uv[..., 1])
    ok = view.in_front & (u >= 0) & (u <= W - 1) & (v >= 0) & (v <= H - 1)
    lin = (u.clamp(0, W - 1) + W * v.clamp(0, H - 1)).long()
    ok = ok & valid_f.reshape(-1).index_select(0, lin)  # index_select: ~3x faster than [lin] on the CPU
    Xf = X_f.reshape(-1, 3).index_select(0, lin)
    ok = ok & ((Xf - view.Q).norm(dim=-1) < dist_thresh)
    return lin, ok


def projective_association(
    T_CkCf: Tensor, X_k: Tensor, X_f: Tensor, valid_f: Tensor, K: Tensor, dist_thresh: float
) -> tuple[Tensor, Tensor]:
    """For keyframe points ``X_k[N, 3]`` (keyframe frame) the frame pixel they project to (linear index
    ``[N]``) under ``T_CkCf`` and validity ``[N]`` (:func:`associate` of :func:`view_model`)."""
    return associate(view_model(T_CkCf, X_k, K), X_f, valid_f, dist_thresh)


def point_to_plane_residuals(T_CkCf: Tensor, X_f: Tensor, X_k: Tensor, n_k: Tensor) -> tuple[Tensor, Tensor]:
    """``r = n_k · (X_k - T·X_f)`` ``[N, 1]`` and ``J = dr/dxi`` ``[N, 1, 7]`` (left perturbation)."""
    P = sim3_act(T_CkCf, X_f)
    r = (n_k * (X_k - P)).sum(-1, keepdim=True)
    # n^T [I | -[P]x | P] = [n, P x n, n.P]
    J = -torch.cat([n_k, torch.linalg.cross(P, n_k, dim=-1), (n_k * P).sum(-1, keepdim=True)], dim=-1)
    return r, J.unsqueeze(-2)


def point_to_plane_information(
    T_CkCf: Tensor,
    X_k: Tensor,
    w: Tensor,
    X_f: Tensor,
    valid_f: Tensor,
    K: Tensor,
    dist_thresh: float,
    dof: int = 6,
    stride: int = 2,
    size: int = 5,
) -> tuple[Tensor, Tensor]:
    """How well point-to-plane ICP at ``T_CkCf`` constrains each pose direction, after Gelfand et al.
    ("Geometrically stable sampling for the ICP algorithm", 3DIM 2003): ``(H [dof, dof] float64, length)``.

    ``H = Σ w JᵀJ`` over the keyframe points ``X_k [N, 3]`` (weights ``w [N]``, squared square-root weights)
    that associate with the frame (:func:`projective_association`), ``J = [n, (X - c) × n (, n·(X - c))]``:
    rotation (and scale) about the centroid ``c`` of those points, whose RMS distance from it is ``length``
    (m); the normals ``n`` come from the frame's smoothed pointmap (:func:`smoothed_normals`, window
    ``size``, of every ``stride``-th frame pixel) rotated into the keyframe, not from the keyframe's raw
    ones: depth noise would fake information along flat surfaces. ``(zeros, 1.0)`` without points.
    ``length`` is a 0-d tensor (no host sync for it; the selection of associated points syncs once).
    """
    lin, ok = projective_association(T_CkCf, X_k, X_f, valid_f, K, dist_thresh)
    W = X_f.shape[1]
    Xs = X_f[::stride, ::stride]
    n_s, ok_s = smoothed_normals(Xs, valid_f[::stride, ::stride], size)
    lin_s = (lin // W // stride) * Xs.shape[1] + (lin % W) // stride
    i = (ok & ok_s.reshape(-1)[lin_s]).nonzero().squeeze(-1)
    if i.numel() == 0:
        return torch.zeros(dof, dof, dtype=torch.float64, device=X_k.device), X_k.new_ones(())
    n = n_s.reshape(-1, 3)[lin_s[i]] @ quat_to_matrix(T_CkCf[3:7]).T
    X = X_k[i] - X_k[i].mean(0)
    J = torch.cat([n, torch.linalg.cross(X, n, dim=-1), (n * X).sum(-1, keepdim=True)], dim=-1)[:, :dof]
    length = X.square().sum(-1).mean().sqrt()
    return ((J * w[i].unsqueeze(-1)).T @ J).to(torch.float64), length


def grey_and_gradients(image: Tensor) -> Tensor:
    """``[H, W, 3]`` grey level and its u/v derivatives (central differences, replicate border) of an RGB
    image ``[H, W, 3]`` in ``[0, 1]``."""
    g = (image * on_device(GREY_WEIGHTS, image.device, image.dtype)).sum(-1)
    gp = torch.nn.functional.pad(g[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
    gu = 0.5 * (gp[1:-1, 2:] - gp[1:-1, :-2])
    gv = 0.5 * (gp[2:, 1:-1] - gp[:-2, 1:-1])
    return torch.stack([g, gu, gv], dim=-1)


def photometric(
    view: ModelView, X_k: Tensor, I_k: Tensor, grey_f: Tensor, K: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """``r = I_k - I_f(uv)`` ``[N, 1]`` of the viewed keyframe points ``X_k [N, 3]`` with grey levels
    ``I_k [N]`` (the frame's grey level bilinear at their pixels: one gather of the four neighbours), its
    Jacobian ``[N, 1, 7]`` for the left perturbation of ``T_CkCf``, and validity ``[N]`` (projection at least
    one pixel inside the image). ``grey_f [H, W, 3]``: the frame's grey level and its u/v gradients
    (:func:`grey_and_gradients`)."""
    H, W = grey_f.shape[:2]
    u, v = view.uv[..., 0], view.uv[..., 1]
    ok = view.in_front & (u >= 1) & (u <= W - 2) & (v >= 1) & (v <= H - 2)
    uc = u.clamp(0, W - 1.001)
    vc = v.clamp(0, H - 1.001)
    u0, v0 = uc.floor(), vc.floor()
    a, b = uc - u0, vc - v0
    step = torch.arange(2, device=grey_f.device)
    corners = (step + W * step[:, None]).reshape(4, 1)  # offsets 0, 1, W, W + 1
    # corner-major [4, N]: one gather, then a sum over the leading dimension (contiguous slabs)
    idx = (corners + (u0 + W * v0).long()).reshape(-1)
    w = torch.stack([(1 - a) * (1 - b), a * (1 - b), (1 - a) * b, a * b]).unsqueeze(-1)
    s = (grey_f.reshape(-1, 3).index_select(0, idx).reshape(4, -1, 3) * w).sum(0)
    r = I_k.unsqueeze(-1) - s[:, :1]
    Q = view.Q
    fx, fy = K[0, 0].to(Q.dtype), K[1, 1].to(Q.dtype)
    z = Q[:, 2].clamp_min(1e-6)
    gu, gv = s[:, 1], s[:, 2]
    # dI/dQ = grad · dpi/dQ
    dIdQ = torch.stack([gu * fx / z, gv * fy / z, -(gu * fx * Q[:, 0] + gv * fy * Q[:, 1]) / (z * z)], dim=-1)
    # dQ/dxi = -A G(X_k) with A the linear part of T^-1; dr/dxi = -dI/dQ · dQ/dxi
    g = dIdQ @ view.A  # [N, 3]
    # g^T [I | -[X]x | X] = [g, X x g, g.X]
    J = torch.cat([g, torch.linalg.cross(X_k, g, dim=-1), (g * X_k).sum(-1, keepdim=True)], dim=-1)
    return r, J.unsqueeze(-2), ok


def photometric_residuals(
    T_CkCf: Tensor, X_k: Tensor, I_k: Tensor, grey_f: Tensor, K: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """``r = I_k - I_f(pi(T^-1 X_k))`` ``[N, 1]`` (bilinear), ``J = dr/dxi`` ``[N, 1, 7]`` for the left
    perturbation of ``T_CkCf``, and validity ``[N]`` (:func:`photometric` of :func:`view_model`).

    ``grey_f[H, W, 3]`` = frame grey level and its u/v gradients (:func:`grey_and_gradients`).
    """
    return photometric(view_model(T_CkCf, X_k, K), X_k, I_k, grey_f, K)
