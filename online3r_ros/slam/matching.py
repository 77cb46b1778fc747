"""Dense pointmap matching (MASt3R-SLAM §3), vectorised over all points with torch ops (CPU and CUDA).

``match(X11, X21, ...)`` finds, for every queried pixel n of image 2, the pixel of image 1 whose ray (the
direction of ``X11``) equals the ray of ``X21_n`` (image 2's points expressed in image 1's frame):

1. **Iterative projective matching**: Levenberg–Marquardt over continuous pixel coordinates on the ray
   image of ``X11`` (bilinear ray + gradient sampling, 3x3 derivative kernel), ``max_iter`` iterations.
2. **Occlusion / outlier check**: ``||X11[p] - X21_n|| < dist_thresh``.
3. **Descriptor refinement** (when descriptors are given and ``radius > 0``): for dilation d = dmax..1 the
   ``(2r+1)^2`` window around the current best pixel (stride d) is scored by descriptor dot products and
   re-centred on the argmax.
4. Validity is **re-checked** at the refined pixel (the reference kept the pre-refinement mask).

Pixel positions are rounded to the nearest pixel (the reference truncated). For calibrated pointmaps whose
rays are exactly ``K^-1 [u, v, 1]`` (e.g. RGB-D back-projection), :func:`match_by_projection` replaces step 1
by a direct projection with ``K``.

Shapes: pointmaps ``[B, H, W, 3]`` or ``[H, W, 3]``; descriptors ``[B, H, W, d]``; a linear pixel index is
``u + W·v``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from online3r_ros.geometry.camera import project
from online3r_ros.utils.host_syncs import on_device

Tensor = torch.Tensor

__all__ = [
    "MatchResult",
    "ray_image",
    "bilinear_sample",
    "iterative_projective_matching",
    "refine_matches_with_descriptors",
    "match",
    "match_by_projection",
]

_DERIV_KERNEL = torch.tensor([[-3.0, 0.0, 3.0], [-10.0, 0.0, 10.0], [-3.0, 0.0, 3.0]]) / 32.0


@dataclass
class MatchResult:
    """Matches for the queried pixels of image 2 (``N`` = all ``H·W`` pixels unless a subset was asked).

    Attributes:
        idx: ``[B, N]`` long, linear index ``u + W·v`` into image 1.
        valid: ``[B, N]`` bool, converged ∧ 3D distance check (re-checked after refinement).
        pixels: ``[B, N, 2]`` float ``(u, v)`` in image 1 (continuous before refinement, integer after).
        query: ``[N]`` long linear indices of the queried image-2 pixels.
    """

    idx: Tensor
    valid: Tensor
    pixels: Tensor
    query: Tensor


def _batched(X: Tensor, name: str, last: int | None = 3) -> tuple[Tensor, bool]:
    if not isinstance(X, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(X).__name__}")
    if X.dim() == 3:
        X = X.unsqueeze(0)
        squeezed = True
    elif X.dim() == 4:
        squeezed = False
    else:
        raise ValueError(f"{name} must be [H, W, C] or [B, H, W, C], got {tuple(X.shape)}")
    if last is not None and X.shape[-1] != last:
        raise ValueError(f"{name} must have {last} channels, got {tuple(X.shape)}")
    return X, squeezed


def ray_image(X: Tensor, eps: float = 1e-12) -> Tensor:
    """``[B, H, W, 9]`` = unit rays of ``X[B, H, W, 3]`` and their u- and v-derivatives.

    Derivatives use the 3x3 kernel ``(1/32)[[-3,0,3],[-10,0,10],[-3,0,3]]`` (transposed for v) with
    reflect padding.
    """
    B, H, W, _ = X.shape
    r = X / X.norm(dim=-1, keepdim=True).clamp_min(eps)
    img = r.permute(0, 3, 1, 2).reshape(B * 3, 1, H, W)
    pad = F.pad(img, (1, 1, 1, 1), mode="reflect") if min(H, W) > 1 else F.pad(img, (1, 1, 1, 1), "replicate")
    k = on_device(_DERIV_KERNEL, X.device, X.dtype)
    kernels = torch.stack([k, k.t()]).unsqueeze(1)  # [2, 1, 3, 3]: d/du, d/dv
    g = F.conv2d(pad, kernels)  # [B*3, 2, H, W]
    g = g.reshape(B, 3, 2, H, W).permute(0, 3, 4, 2, 1).reshape(B, H, W, 6)  # [gu(3), gv(3)]
    return torch.cat([r, g], dim=-1)


def bilinear_sample(img_flat: Tensor, H: int, W: int, p: Tensor) -> Tensor:
    """Bilinear samples ``[B, N, C]`` of ``img_flat[B, H·W, C]`` at pixels ``p[B, N, 2]`` (``(u, v)``,
    assumed inside ``[0, W-1] x [0, H-1]``)."""
    u, v = p[..., 0], p[..., 1]
    u0 = u.floor().clamp(0, W - 2) if W > 1 else torch.zeros_like(u)
    v0 = v.floor().clamp(0, H - 2) if H > 1 else torch.zeros_like(v)
    a = (u - u0).unsqueeze(-1)
    b = (v - v0).unsqueeze(-1)
    i00 = (u0 + v0 * W).long()
    i10 = i00 + (1 if W > 1 else 0)
    i01 = i00 + (W if H > 1 else 0)
    i11 = i01 + (1 if W > 1 else 0)
    idx = torch.stack([i00, i10, i01, i11], dim=-1)  # [B, N, 4]
    B, N = idx.shape[:2]
    C = img_flat.shape[-1]
    vals = torch.gather(img_flat, 1, idx.reshape(B, N * 4, 1).expand(B, N * 4, C)).reshape(B, N, 4, C)
    return (
        vals[:, :, 0] * (1 - a) * (1 - b)
        + vals[:, :, 1] * a * (1 - b)
        + vals[:, :, 2] * (1 - a) * b
        + vals[:, :, 3] * a * b
    )


def _ray_cost(rimg_flat: Tensor, H: int, W: int, p: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Ray error ``e[B, N, 3]``, sampled gradients ``G[B, N, 6]`` (d/du, d/dv) and cost ``|e|^2`` at ``p``."""
    s = bilinear_sample(rimg_flat, H, W, p)
    r = s[..., :3]
    r = r / r.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    e = r - target
    return e, s[..., 3:9], (e * e).sum(-1)


def iterative_projective_matching(
    X11: Tensor,
    targets: Tensor,
    p_init: Tensor,
    max_iter: int = 10,
    lambda_init: float = 1e-8,
    convergence_thresh: float = 1e-6,
) -> tuple[Tensor, Tensor]:
    """LM over pixel coordinates so that the ray of ``X11[B, H, W, 3]`` at ``p`` equals ``targets[B, N, 3]``
    (unit rays). ``p_init[B, N, 2]`` float ``(u, v)``. Returns ``(p[B, N, 2], converged[B, N])`` where
    converged = final squared ray error below ``convergence_thresh``.
    """
    B, H, W, _ = X11.shape
    rimg = ray_image(X11).reshape(B, H * W, 9)
    m = 1 if min(H, W) > 2 else 0  # keep a pixel off the border when the image allows it
    lo = p_init.new_full((2,), float(m))
    hi = p_init.new_full((2,), float(W - 1 - m))
    hi[1] = H - 1 - m  # (filled on the device: a tensor from a Python list would copy and sync)
    p = torch.minimum(torch.maximum(p_init, lo), hi)
    lam = torch.full(p.shape[:2], lambda_init, dtype=p.dtype, device=p.device)
    e, G, cost = _ray_cost(rimg, H, W, p, targets)
    for _ in range(max_iter):
        gu, gv = G[..., :3], G[..., 3:]
        # 2x2 normal equations (J^T J + lam I) dp = -J^T e, J = [gu, gv], in closed form
        a = (gu * gu).sum(-1) + lam
        d = (gv * gv).sum(-1) + lam
        b = (gu * gv).sum(-1)
        g0 = (gu * e).sum(-1)
        g1 = (gv * e).sum(-1)
        det = a * d - b * b
        det = torch.where(det.abs() > 1e-30, det, torch.full_like(det, 1e-30))
        du = -(d * g0 - b * g1) / det
        dv = -(a * g1 - b * g0) / det
        p_new = torch.minimum(torch.maximum(p + torch.stack([du, dv], dim=-1), lo), hi)
        e_new, G_new, cost_new = _ray_cost(rimg, H, W, p_new, targets)
        better = cost_new < cost
        bm = better.unsqueeze(-1)
        p = torch.where(bm, p_new, p)
        e = torch.where(bm, e_new, e)
        G = torch.where(bm, G_new, G)
        cost = torch.where(better, cost_new, cost)
        lam = torch.where(better, lam * 0.1, lam * 10.0).clamp(1e-12, 1e12)
    return p, cost < convergence_thresh


def _round_pixels(p: Tensor, H: int, W: int) -> Tensor:
    u = torch.round(p[..., 0]).clamp(0, W - 1)
    v = torch.round(p[..., 1]).clamp(0, H - 1)
    return torch.stack([u, v], dim=-1)


def _linear(p_int: Tensor, W: int) -> Tensor:
    return (p_int[..., 0] + W * p_int[..., 1]).long()


def _gather_points(X_flat: Tensor, idx: Tensor) -> Tensor:
    C = X_flat.shape[-1]
    return torch.gather(X_flat, 1, idx.unsqueeze(-1).expand(*idx.shape, C))


def refine_matches_with_descriptors(
    D11: Tensor,
    D21_q: Tensor,
    p_int: Tensor,
    radius: int = 3,
    dilation_max: int = 5,
    chunk_elems: int | None = None,
) -> Tensor:
    """Move integer pixels ``p_int[B, N, 2]`` in image 1 to the best descriptor match of ``D21_q[B, N, d]``.

    For dilation d = ``dilation_max``..1 the window of ``(2·radius+1)^2`` pixels with stride d around the
    current best (clamped to the image) is scored by ``<D21_q, D11>`` and re-centred on the argmax.
    ``D11[B, H, W, d]``. Processed in chunks of about ``chunk_elems`` gathered values (bounded memory;
    default 2^24 on the CPU, 2^27 on other devices, where each chunk costs a dozen kernel launches per
    dilation: 512x384 pixels with 24-d descriptors take 2 chunks instead of 14). The result does not depend
    on the chunk size.
    """
    B, H, W, dd = D11.shape
    N = p_int.shape[1]
    D_flat = D11.reshape(B, H * W, dd)
    off = torch.arange(-radius, radius + 1, device=p_int.device, dtype=p_int.dtype)
    ov, ou = torch.meshgrid(off, off, indexing="ij")
    offsets = torch.stack([ou.reshape(-1), ov.reshape(-1)], dim=-1)  # [K, 2]
    Kw = offsets.shape[0]
    if chunk_elems is None:
        chunk_elems = 1 << 24 if p_int.device.type == "cpu" else 1 << 27
    chunk = max(1, chunk_elems // max(1, Kw * dd * B))
    out = p_int.clone()
    Dq = D21_q.to(D11.dtype)
    bidx = torch.arange(B, device=p_int.device)[:, None, None]
    for start in range(0, N, chunk):
        p = out[:, start : start + chunk]
        q = Dq[:, start : start + chunk]
        for dil in range(dilation_max, 0, -1):
            cand = p.unsqueeze(2) + dil * offsets  # [B, n, K, 2]
            cu = cand[..., 0].clamp(0, W - 1)
            cv = cand[..., 1].clamp(0, H - 1)
            lin = (cu + W * cv).long()
            desc = D_flat[bidx, lin]  # [B, n, K, d]
            score = (desc * q.unsqueeze(2)).sum(-1)  # [B, n, K]
            best = score.argmax(dim=-1, keepdim=True)
            p = torch.stack([cu.gather(2, best).squeeze(2), cv.gather(2, best).squeeze(2)], dim=-1)
        out[:, start : start + chunk] = p
    return out


def _prepare_query(H: int, W: int, query: Tensor | None, device) -> Tensor:
    if query is None:
        return torch.arange(H * W, device=device)
    query = torch.as_tensor(query, device=device).long().reshape(-1)
    if query.numel() and bool(((query < 0) | (query >= H * W)).any()):  # one host sync
        raise ValueError(
            f"query indices must lie in [0, {H * W}), got [{int(query.min())}, {int(query.max())}]"
        )
    return query


def _finish(
    X11: Tensor,
    X21_q: Tensor,
    p: Tensor,
    ok: Tensor,
    D11: Tensor | None,
    D21_q: Tensor | None,
    dist_thresh: float,
    radius: int,
    dilation_max: int,
    query: Tensor,
    squeeze: bool,
) -> MatchResult:
    B, H, W, _ = X11.shape
    p_int = _round_pixels(p, H, W)
    if D11 is not None and D21_q is not None and radius > 0:
        p_int = refine_matches_with_descriptors(D11, D21_q, p_int, radius, dilation_max)
    idx = _linear(p_int, W)
    X_at = _gather_points(X11.reshape(B, H * W, 3), idx)
    valid = ok & ((X_at - X21_q).norm(dim=-1) < dist_thresh)
    if squeeze:
        return MatchResult(idx[0], valid[0], p_int[0], query)
    return MatchResult(idx, valid, p_int, query)


def match(
    X11: Tensor,
    X21: Tensor,
    D11: Tensor | None = None,
    D21: Tensor | None = None,
    idx_init: Tensor | None = None,
    query: Tensor | None = None,
    max_iter: int = 10,
    lambda_init: float = 1e-8,
    convergence_thresh: float = 1e-6,
    dist_thresh: float = 0.1,
    radius: int = 3,
    dilation_max: int = 5,
) -> MatchResult:
    """Match image 2's pixels to image 1 (reference defaults).

    Args:
        X11: ``[B, H, W, 3]`` (or ``[H, W, 3]``) image 1's pointmap in its own frame.
        X21: ``[B, H2, W2, 3]`` image 2's pointmap in image 1's frame.
        D11, D21: optional descriptors ``[B, H, W, d]`` / ``[B, H2, W2, d]`` (refinement when both given).
        idx_init: optional ``[B, N]`` linear indices into image 1 (warm start, e.g. the previous frame's
            matches); default: the same pixel (requires equal image sizes).
        query: optional ``[N]`` linear indices of the image-2 pixels to match (default all).
    Returns:
        :class:`MatchResult` (unbatched if the inputs were).
    """
    X11, sq = _batched(X11, "X11")
    X21, _ = _batched(X21, "X21")
    B, H, W, _ = X11.shape
    H2, W2 = X21.shape[1:3]
    if X21.shape[0] != B:
        raise ValueError(f"X11 and X21 batch sizes differ: {B} vs {X21.shape[0]}")
    q = _prepare_query(H2, W2, query, X11.device)
    X21_q = X21.reshape(B, H2 * W2, 3)[:, q]
    if idx_init is None:
        if (H2, W2) != (H, W):
            raise ValueError("idx_init is required when the two images have different sizes")
        lin0 = q.unsqueeze(0).expand(B, -1)
    else:
        lin0 = torch.as_tensor(idx_init, device=X11.device).long().reshape(B, -1)
        if lin0.shape[1] != q.numel():
            raise ValueError(f"idx_init must have {q.numel()} entries per batch, got {lin0.shape[1]}")
    p0 = torch.stack([(lin0 % W), (lin0 // W)], dim=-1).to(X11.dtype)
    targets = X21_q / X21_q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    p, conv = iterative_projective_matching(X11, targets, p0, max_iter, lambda_init, convergence_thresh)
    D11b = _batched(D11, "D11", None)[0] if D11 is not None else None
    D21_q = _batched(D21, "D21", None)[0].reshape(B, H2 * W2, -1)[:, q] if D21 is not None else None
    return _finish(X11, X21_q, p, conv, D11b, D21_q, dist_thresh, radius, dilation_max, q, sq)


def match_by_projection(
    X11: Tensor,
    X21: Tensor,
    K: Tensor,
    D11: Tensor | None = None,
    D21: Tensor | None = None,
    query: Tensor | None = None,
    dist_thresh: float = 0.1,
    radius: int = 3,
    dilation_max: int = 5,
    depth_eps: float = 1e-6,
) -> MatchResult:
    """Calibrated matching: image-2 points ``X21`` projected into image 1 with ``K[3, 3]`` (exact when
    image 1's rays are ``K^-1 [u, v, 1]``), rounded, refined with descriptors, distance-checked.

    A match is invalid if its projection falls outside image 1 (before rounding) or ``z <= depth_eps``.
    """
    X11, sq = _batched(X11, "X11")
    X21, _ = _batched(X21, "X21")
    B, H, W, _ = X11.shape
    H2, W2 = X21.shape[1:3]
    q = _prepare_query(H2, W2, query, X11.device)
    X21_q = X21.reshape(B, H2 * W2, 3)[:, q]
    uv, ok = project(X21_q, K)
    ok = ok & (X21_q[..., 2] > depth_eps)
    ok = ok & (uv[..., 0] > -0.5) & (uv[..., 0] < W - 0.5) & (uv[..., 1] > -0.5) & (uv[..., 1] < H - 0.5)
    D11b = _batched(D11, "D11", None)[0] if D11 is not None else None
    D21_q = _batched(D21, "D21", None)[0].reshape(B, H2 * W2, -1)[:, q] if D21 is not None else None
    return _finish(X11, X21_q, uv, ok, D11b, D21_q, dist_thresh, radius, dilation_max, q, sq)
