"""Point-to-plane ICP term of the keyframe graph for metric, calibrated sources (RGB-D backend).

For every directed factor ``(a, b)`` of the graph, a subsampled set of keyframe ``a``'s canonical points
``X_a`` (with their normals ``n_a`` from :func:`~online3r_ros.geometry.icp.pointmap_normals`) is associated,
at every linearisation, with keyframe ``b``'s canonical pointmap by projecting ``T_ab⁻¹ · X_a`` into ``b``
with ``K_b`` (nearest pixel; ``T_ab = T_WCa⁻¹ · T_WCb``). The residual, in metres, is

    r = n_a · (T_ab · X_b[pix] - X_a)        (whitened by 1/σ, IRLS Huber),

so, unlike the pixel residuals of matches fixed when the edge was made, the associations follow the poses and
the term measures the geometric misalignment of the two surfaces. Its Jacobian w.r.t. a left perturbation of
``T_ab`` (``P = T_ab · X_b[pix]``) is ``[n_a, P × n_a, n_a · P]`` (Sim(3) layout; the scale entry is unused
in SE(3) mode). The per-factor 7×7 normal-equation blocks are what
:func:`online3r_ros.slam.global_opt.gauss_newton` adds to its own (same factor order as the graph batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from online3r_ros.geometry.icp import pointmap_normals
from online3r_ros.geometry.lie import sim3_compose, sim3_inverse, sim3_to_matrix
from online3r_ros.slam.edge_residuals import huber_cost, huber_weight

__all__ = ["IcpTerm", "build_icp_term", "point_to_plane_factor_terms"]


def point_to_plane_factor_terms(
    M_ab: Tensor, X_a: Tensor, n_a: Tensor, X_b: Tensor, valid_b: Tensor, K_b: Tensor, dist_thresh: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Point-to-plane residuals of points ``X_a [M, 3]`` (normals ``n_a [M, 3]``) against pointmaps.

    ``M_ab [M, 3, 4]`` = ``[sR | t]`` of ``T_ab`` per point; ``X_b [M?]``: flat lookup table ``[N, 3]`` of
    b's points with ``valid_b [N]``; ``K_b [M, 4]`` = ``(fx, fy, cx, cy, )`` plus ``(W, H, offset)`` packed as
    ``[M, 7]`` (offset of b's first pixel in the table). Returns ``r [M]`` (metres), ``J [M, 7]`` (left
    perturbation of ``T_ab``), ``valid [M]`` (projection inside b, b's point valid, 3D distance between
    ``T_ab⁻¹ X_a`` and ``X_b[pix]`` below ``dist_thresh``).
    """
    R, t = M_ab[:, :, :3], M_ab[:, :, 3]
    s2 = (R * R).sum(dim=(1, 2)) / 3.0  # s² of sR
    # T⁻¹ X = (sR)ᵀ (X - t) / s²
    Q = torch.einsum("mji,mj->mi", R, X_a - t) / s2.unsqueeze(-1)
    fx, fy, cx, cy, W, H, off = K_b.unbind(-1)
    z = Q[:, 2]
    zs = z.clamp_min(1e-6)
    u = torch.round(fx * Q[:, 0] / zs + cx)
    v = torch.round(fy * Q[:, 1] / zs + cy)
    ok = (z > 1e-6) & (u >= 0) & (u <= W - 1) & (v >= 0) & (v <= H - 1)
    lin = (off + u.clamp_min(0).minimum(W - 1) + W * v.clamp_min(0).minimum(H - 1)).long()
    Xb = X_b[lin]
    ok = ok & valid_b[lin] & ((Xb - Q).norm(dim=-1) < dist_thresh)
    P = torch.einsum("mij,mj->mi", R, Xb) + t
    r = (n_a * (P - X_a)).sum(-1)
    J = torch.cat([n_a, torch.linalg.cross(P, n_a, dim=-1), (n_a * P).sum(-1, keepdim=True)], dim=-1)
    return r, J, ok


@dataclass
class IcpTerm:
    """Static data of the ICP term: the sampled points of every factor's keyframe ``a`` and the lookup table
    of all keyframes' points (see the module docstring). ``linearize`` gives the per-factor blocks."""

    fa: Tensor  # [F] pose index of a
    fb: Tensor  # [F] pose index of b
    point_factor: Tensor  # [M]
    X_a: Tensor  # [M, 3]
    n_a: Tensor  # [M, 3]
    K_b: Tensor  # [M, 7]
    X_tab: Tensor  # [N, 3] all graph keyframes' points, flattened
    valid_tab: Tensor  # [N]
    sigma: float
    huber: float
    dist_thresh: float

    def linearize(
        self, T: Tensor, with_jac: bool = True
    ) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor]:
        """Robust cost (0-d), local Hessians ``[F, 7, 7]``, gradients ``[F, 7]`` and the number of used
        points (0-d) at poses ``T [n, 8]``; no host sync (cost and count stay on the device)."""
        F = self.fa.numel()
        T_ab = sim3_compose(sim3_inverse(T[self.fa]), T[self.fb])
        M_ab = sim3_to_matrix(T_ab)[:, :3, :][self.point_factor]
        r, J, ok = point_to_plane_factor_terms(
            M_ab, self.X_a, self.n_a, self.X_tab, self.valid_tab, self.K_b, self.dist_thresh
        )
        wr = torch.where(ok, r / self.sigma, torch.zeros_like(r))
        cost = huber_cost(wr, self.huber).sum()
        n_used = ok.sum()
        if not with_jac:
            return cost, None, None, n_used
        sw = ok.to(r.dtype) * torch.sqrt(huber_weight(wr, self.huber)) / self.sigma
        A = J * sw.unsqueeze(-1)
        b = r * sw
        H = T.new_zeros(F, 7, 7).index_add_(0, self.point_factor, A.unsqueeze(-1) * A.unsqueeze(-2))
        g = T.new_zeros(F, 7).index_add_(0, self.point_factor, A * b.unsqueeze(-1))
        return cost, H, g, n_used


def build_icp_term(
    store,
    fa_kf: Tensor,
    fb_kf: Tensor,
    fa: Tensor,
    fb: Tensor,
    cfg,
    device: torch.device,
    dtype: torch.dtype,
) -> IcpTerm | None:
    """ICP term for the directed factors ``(fa_kf[f], fb_kf[f])`` (keyframe ids; ``fa``/``fb`` their pose
    indices). ``cfg``: a ``GlobalOptConfig`` (``icp_sigma``, ``icp_stride``, ``icp_dist_thresh``,
    ``icp_normal_step``, ``C_conf``, ``huber``).

    None when a keyframe has no intrinsics or no point is usable."""
    kf_ids = sorted(set(fa_kf.tolist()) | set(fb_kf.tolist()))
    if not kf_ids:
        return None
    offsets: dict[int, int] = {}
    tab_X, tab_valid, normals, intr = [], [], {}, {}
    n = 0
    for k in kf_ids:
        K = store.intrinsics(k, "cpu")
        if K is None:
            return None
        X = store.get(k, device, fields=("X", "C")).X.to(dtype)
        C = store.average_confidence(k, device)
        H, W = X.shape[:2]
        valid = (X[..., 2] > 1e-6) & (C > cfg.C_conf) & torch.isfinite(X).all(-1)
        X = torch.nan_to_num(X)
        nrm, nok = pointmap_normals(X, valid, max_step=cfg.icp_normal_step)
        normals[k] = (X, nrm, nok & valid)
        intr[k] = torch.tensor(
            [float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), W, H, n], dtype=dtype
        )
        offsets[k] = n
        tab_X.append(X.reshape(-1, 3))
        tab_valid.append(valid.reshape(-1))
        n += H * W
    s = max(int(cfg.icp_stride), 1)
    pts, nrms, pfs, kbs = [], [], [], []
    for f, (a, b) in enumerate(zip(fa_kf.tolist(), fb_kf.tolist(), strict=True)):
        X, nrm, ok = normals[a]
        Xs, ns, oks = X[::s, ::s].reshape(-1, 3), nrm[::s, ::s].reshape(-1, 3), ok[::s, ::s].reshape(-1)
        pts.append(Xs[oks])
        nrms.append(ns[oks])
        m = int(oks.sum())
        pfs.append(torch.full((m,), f, dtype=torch.long))
        kbs.append(intr[b].expand(m, 7))
    if sum(p.shape[0] for p in pts) == 0:
        return None
    return IcpTerm(
        fa=fa.to(device),
        fb=fb.to(device),
        point_factor=torch.cat(pfs).to(device),
        X_a=torch.cat(pts).to(device),
        n_a=torch.cat(nrms).to(device),
        K_b=torch.cat(kbs).to(device),
        X_tab=torch.cat(tab_X).to(device),
        valid_tab=torch.cat(tab_valid).to(device),
        sigma=float(cfg.icp_sigma),
        huber=float(cfg.huber),
        dist_thresh=float(cfg.icp_dist_thresh),
    )
