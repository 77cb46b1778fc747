"""Prior-free relative pose of two RGB-D images from local feature matches (no motion guess).

Relocalisation and loop-closure candidates come with no initial pose, so ICP cannot start: instead the
descriptors are matched (mutual nearest neighbours + Lowe's ratio), each match carries a 3D point in both
cameras (from depth), and a 3-point RANSAC finds the rigid (or similarity) transform that most matches agree
on. A wrong pose corrupts the map far more than a missed one costs, so the result is then *verified*: enough
inliers, a large enough inlier fraction, a small residual, and inliers spread over the images and not along a
line in 3D. Everything is vectorised (all hypotheses are fitted and scored in a few tensor ops), seeded, and
runs on the device of the features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from online3r_ros.geometry.lie import matrix_to_quat, sim3_act, sim3_act_jacobian
from online3r_ros.retrieval.features import LocalFeatures

Tensor = torch.Tensor

__all__ = [
    "RelPose",
    "RelPoseConfig",
    "estimate_relative_pose",
    "fit_relative_pose",
    "match_features",
    "pose_support",
]


def match_features(a: LocalFeatures, b: LocalFeatures, ratio: float = 0.8) -> tuple[Tensor, Tensor, Tensor]:
    """Mutual nearest neighbours of ``a.desc`` and ``b.desc`` that pass Lowe's ratio test (in ``a -> b``).

    Returns ``ia [M]``, ``ib [M]`` (int64 indices) and ``score [M]`` (cosine similarity), sorted by ``ia``.

    >>> d = torch.nn.functional.normalize(torch.eye(4)[:, :3] + 0.1, dim=1)
    >>> ia, ib, s = match_features(LocalFeatures("x", d), LocalFeatures("x", d[[2, 0, 1]]))
    >>> ia.tolist(), ib.tolist()
    ([0, 1, 2], [1, 2, 0])
    """
    da, db = a.desc, b.desc.to(a.desc)
    empty = torch.zeros(0, dtype=torch.long, device=da.device)
    if da.shape[0] == 0 or db.shape[0] == 0:
        return empty, empty.clone(), da.new_zeros(0)
    sim = da @ db.T  # [Na, Nb]
    k = min(2, db.shape[0])
    top, nn_ab = sim.topk(k, dim=1)  # [Na, k]
    nn_ba = sim.argmax(dim=0)  # [Nb]
    ia = torch.arange(da.shape[0], device=da.device)
    keep = nn_ba[nn_ab[:, 0]] == ia
    if k == 2:  # unit vectors: |x - y|^2 = 2 - 2 cos
        d1 = (2.0 - 2.0 * top[:, 0]).clamp_min(0).sqrt()
        d2 = (2.0 - 2.0 * top[:, 1]).clamp_min(0).sqrt()
        keep &= d1 < ratio * d2
    return ia[keep], nn_ab[keep, 0], top[keep, 0]


@dataclass
class RelPoseConfig:
    """Matching, RANSAC and verification settings of :func:`estimate_relative_pose`.

    The inlier threshold grows with depth, ``tau = inlier_thresh_m + inlier_thresh_rel * z_ref``: structured-
    light depth noise is ~1.5 mm at 1 m and ~1 cm at 4 m, a 1-pixel keypoint error is ``z / f`` (~0.2 % of z)
    and keypoints sit on edges where depth jumps; 2 cm + 1 % of z keeps true matches at 3 m (5 cm) while a
    random 3D coincidence stays unlikely. The verification limits are deliberately strict (a wrong pose is
    far worse than a missed one).
    """

    ratio: float = 0.8  # Lowe's ratio (descriptor distances, best / second best)
    inlier_thresh_m: float = 0.02  # fixed part of the 3D inlier threshold (m, in the ref camera)
    inlier_thresh_rel: float = 0.01  # depth-proportional part (fraction of the ref point's depth)
    iterations: int = 512  # RANSAC hypotheses, all fitted and scored at once
    refine_rounds: int = 2  # refit on the inliers, then re-score, this many times
    min_inliers: int = 15  # with the pose-std check below; wrong places give <= 3 inliers on real data
    min_inlier_frac: float = 0.3  # of the matches with valid depth in both images
    max_rmse_m: float = 0.03  # RMSE of the inliers' 3D residuals (m)
    min_image_spread: float = 0.06  # inliers' minor-axis std (pixels) / min(H, W), in both images
    min_spread_m: float = 0.05  # inliers' second principal std in 3D (m): rejects near-collinear sets
    max_pose_std_m: float = 0.02  # predicted std of the query camera position (noise = max(rmse, 1 cm))
    max_pose_std_deg: float = 1.0  # predicted std of the rotation (deg)
    min_sample_side_m: float = 0.03  # shortest side of a minimal sample's triangle (m)
    min_sample_sin: float = 0.1  # |sin| of the sample triangle's smallest angle, proxy: 2*area / longest^2
    with_scale: bool = False  # Sim(3) (scale estimated) instead of rigid SE(3) with s = 1
    seed: int = 0


@dataclass
class RelPose:
    """Outcome of :func:`estimate_relative_pose`.

    ``T_ref_query``: Sim(3) ``[8]`` float64 (``[t, q_xyzw, s]``, :mod:`online3r_ros.geometry.lie`) mapping
    query-camera points into the ref camera, or ``None`` when rejected (``ok`` False, ``reason`` says why).
    ``ia``/``ib`` ``[M]``: the matches (query / ref indices); ``inlier_mask [M]``: inliers of the final fit.
    ``inlier_frac`` is over the ``n_valid`` matches with depth in both images; ``rmse_m`` over the inliers.
    ``T_best``: RANSAC's best hypothesis (refitted) even when verification rejected it, or ``None`` when there
    was none: a starting point for another method that verifies on its own (tracking + :func:`pose_support`).
    """

    T_ref_query: Tensor | None
    ok: bool
    reason: str
    n_matches: int = 0
    n_valid: int = 0
    n_inliers: int = 0
    inlier_frac: float = 0.0
    rmse_m: float = float("nan")
    ia: Tensor | None = None
    ib: Tensor | None = None
    inlier_mask: Tensor | None = None
    pose_std: tuple[float, float] = (float("nan"), float("nan"))
    T_best: Tensor | None = None


def _umeyama(src: Tensor, dst: Tensor, w: Tensor, with_scale: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Batched weighted Umeyama: ``src, dst [B, n, 3]``, ``w [B, n] >= 0`` -> ``R [B,3,3], t [B,3], s [B]``
    minimising ``sum w |s R src + t - dst|^2`` (``s = 1`` unless ``with_scale``)."""
    wn = w / w.sum(-1, keepdim=True).clamp_min(1e-12)
    mu_s = torch.einsum("bn,bni->bi", wn, src)
    mu_d = torch.einsum("bn,bni->bi", wn, dst)
    xs, xd = src - mu_s[:, None], dst - mu_d[:, None]
    cov = torch.einsum("bn,bni,bnj->bij", wn, xd, xs)
    U, D, Vh = torch.linalg.svd(cov)
    S = torch.ones_like(D)
    S[:, 2] = torch.where(torch.det(U) * torch.det(Vh) < 0, -1.0, 1.0).to(D)
    R = U @ (S[:, :, None] * Vh)
    if with_scale:
        var_s = torch.einsum("bn,bn->b", wn, (xs * xs).sum(-1))
        s = (D * S).sum(-1) / var_s.clamp_min(1e-12)
    else:
        s = torch.ones_like(D[:, 0])
    t = mu_d - s[:, None] * torch.einsum("bij,bj->bi", R, mu_s)
    return R, t, s


def _residual2(R: Tensor, t: Tensor, s: Tensor, P: Tensor, Q: Tensor) -> Tensor:
    """Squared 3D residuals ``[B, M]`` of ``B`` transforms applied to ``P [M, 3]`` against ``Q [M, 3]``.

    One matrix product of per-transform coefficients ``[B, 18]`` and per-point terms ``[M, 18]`` (no
    ``[B, M, 3]`` temporary): ``|s R p + t - q|^2 = s^2 |p|^2 + |t|^2 + |q|^2 + 2 s (R^T t).p - 2 t.q
    - 2 s vec(R).vec(q p^T)``.
    """
    B, M = R.shape[0], P.shape[0]
    coef = torch.cat(
        [
            (s * s)[:, None],
            (t * t).sum(-1, keepdim=True),
            R.new_ones(B, 1),
            2.0 * s[:, None] * torch.einsum("bji,bj->bi", R, t),
            -2.0 * t,
            -2.0 * s[:, None] * R.reshape(B, 9),
        ],
        dim=1,
    )
    terms = torch.cat(
        [
            (P * P).sum(-1, keepdim=True),
            P.new_ones(M, 1),
            (Q * Q).sum(-1, keepdim=True),
            P,
            Q,
            (Q[:, :, None] * P[:, None, :]).reshape(M, 9),
        ],
        dim=1,
    )
    return (coef @ terms.T).clamp_min(0.0)


def _minor_std(x: Tensor, k: int) -> float:
    """Std of ``x [n, d]`` along its ``k``-th largest principal axis (0 = largest)."""
    xc = x - x.mean(0)
    ev = torch.linalg.eigvalsh(xc.T @ xc / x.shape[0])  # ascending
    return float(ev[-1 - k].clamp_min(0).sqrt())


def _pose_std(pred: Tensor, c: Tensor, sigma: float, with_scale: bool) -> tuple[float, float]:
    """Predicted 1-sigma error of a least-squares fit to ``pred [n, 3]`` (fitted points, ref frame) with
    isotropic noise ``sigma`` (m): ``(std of the query camera centre c [3] (m), rotation std (deg))``.
    Large when the inliers constrain the pose badly (few, clustered, far away)."""
    k = 7 if with_scale else 6
    J = sim3_act_jacobian(pred)[..., :k].reshape(-1, k)  # [3n, k], left perturbation in the ref frame
    cov = torch.linalg.pinv(J.T @ J) * sigma**2
    Jc = sim3_act_jacobian(c)[:, :k]
    pos = torch.linalg.eigvalsh(Jc @ cov @ Jc.T)[-1].clamp_min(0).sqrt()
    rot = torch.linalg.eigvalsh(cov[3:6, 3:6])[-1].clamp_min(0).sqrt()
    return float(pos), float(rot) * 57.29577951308232


def _sample(m: int, n: int, seed: int, device: torch.device) -> Tensor:
    """``[n, 3]`` random index triples into ``range(m)`` (seeded on the CPU: the same on every device)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, m, (n, 3), generator=g).to(device)


def estimate_relative_pose(
    query: LocalFeatures, ref: LocalFeatures, cfg: RelPoseConfig | None = None
) -> RelPose:
    """``T_ref_query`` from the matches of ``query`` and ``ref`` (both with ``points``): RANSAC, verification.

    Never raises on degenerate data (no depth, < 3 matches, collinear points): it returns ``ok=False`` with
    a ``reason``. Raises ``ValueError`` only for features of different ``kind``.
    """
    cfg = cfg or RelPoseConfig()
    if query.kind != ref.kind:
        raise ValueError(f"cannot match {query.kind!r} features against {ref.kind!r} features")
    ia, ib, _ = match_features(query, ref, cfg.ratio)
    if query.points is None or ref.points is None:
        out = RelPose(None, False, "no depth (points is None)", n_matches=int(ia.numel()), ia=ia, ib=ib)
        out.inlier_mask = torch.zeros_like(ia, dtype=torch.bool)
        return out
    dev = query.desc.device
    spread = [
        (f.xy.to(dev, torch.float64)[ii], min(f.image_size))
        for f, ii in ((query, ia), (ref, ib))
        if f.xy is not None and min(f.image_size) > 0
    ]
    out = fit_relative_pose(query.points.to(dev)[ia], ref.points.to(dev)[ib], cfg, spread)
    out.ia, out.ib = ia, ib
    return out


def fit_relative_pose(
    P_all: Tensor, Q_all: Tensor, cfg: RelPoseConfig | None = None, spread: Sequence[tuple[Tensor, int]] = ()
) -> RelPose:
    """``T_ref_query`` from ``M`` 3D correspondences: RANSAC (all hypotheses at once), refit, verification.

    Args:
        P_all: ``[M, 3]`` points in the query camera (m; NaN or ``z <= 0``: no depth, ignored).
        Q_all: ``[M, 3]`` the same points in the ref camera.
        spread: for the image-coverage check, per image the correspondences' pixels ``[M, 2]`` and the
            image's shorter side (px); empty: no such check.

    Returns a :class:`RelPose` whose ``inlier_mask [M]`` is over the correspondences (``ia``/``ib`` unset).
    Never raises on degenerate data.

    >>> P = torch.rand(200, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 1.0
    >>> rp = fit_relative_pose(P, P + torch.tensor([0.1, 0.0, 0.0], dtype=torch.float64))
    >>> rp.ok, [round(v, 6) for v in rp.T_ref_query[:3].tolist()]
    (True, [0.1, 0.0, 0.0])
    """
    cfg = cfg or RelPoseConfig()
    dev = P_all.device
    out = RelPose(None, False, "", n_matches=int(P_all.shape[0]))
    out.inlier_mask = torch.zeros(P_all.shape[0], dtype=torch.bool, device=dev)
    P_all = P_all.to(torch.float64)
    Q_all = Q_all.to(dev, torch.float64)
    valid = torch.isfinite(P_all).all(-1) & torch.isfinite(Q_all).all(-1)
    valid &= (Q_all[:, 2] > 0) & (P_all[:, 2] > 0)
    vidx = valid.nonzero().squeeze(1)
    P, Q = P_all[vidx], Q_all[vidx]
    m = out.n_valid = int(vidx.numel())
    if m < max(3, cfg.min_inliers):
        out.reason = f"too few matches with depth ({m} < {max(3, cfg.min_inliers)})"
        return out
    tau2 = (cfg.inlier_thresh_m + cfg.inlier_thresh_rel * Q[:, 2]) ** 2  # [m]

    # --- hypotheses: all minimal samples at once, degenerate ones (short sides, near-collinear) masked
    idx = _sample(m, cfg.iterations, cfg.seed, dev)
    Ps, Qs = P[idx], Q[idx]  # [I, 3, 3]
    good = torch.ones(cfg.iterations, dtype=torch.bool, device=dev)
    for X in (Ps, Qs):
        e = X[:, [1, 2, 0]] - X  # triangle sides [I, 3, 3]
        side = e.norm(dim=-1)
        area2 = torch.linalg.cross(e[:, 0], e[:, 1], dim=-1).norm(dim=-1)
        good &= (side.min(-1).values > cfg.min_sample_side_m) & (
            area2 > cfg.min_sample_sin * side.max(-1).values ** 2
        )
    if not bool(good.any()):
        out.reason = "all RANSAC samples degenerate (points near-collinear or clustered)"
        return out
    R, t, s = _umeyama(Ps, Qs, torch.ones(Ps.shape[:2], dtype=P.dtype, device=dev), cfg.with_scale)
    good &= torch.isfinite(s) & (s > 1e-3) & (s < 1e3) & torch.isfinite(t).all(-1)
    cost = (_residual2(R, t, s, P, Q) / tau2).clamp_max(1.0).sum(-1)  # MSAC [I]
    best = int(torch.where(good, cost, torch.full_like(cost, float("inf"))).argmin())
    R, t, s = R[best : best + 1], t[best : best + 1], s[best : best + 1]
    inl = (_residual2(R, t, s, P, Q) < tau2)[0]

    # --- refit on the inliers, re-score
    for _ in range(cfg.refine_rounds):
        if int(inl.sum()) < 3:
            break
        R, t, s = _umeyama(P[None], Q[None], inl[None].to(P.dtype), cfg.with_scale)
        inl = (_residual2(R, t, s, P, Q) < tau2)[0]
    r2 = _residual2(R, t, s, P, Q)[0]
    n = out.n_inliers = int(inl.sum())
    out.inlier_frac = n / m
    out.rmse_m = float(r2[inl].mean().sqrt()) if n else float("nan")
    out.inlier_mask[vidx[inl]] = True
    if n >= 3:
        pred = s[0] * P[inl] @ R[0].T + t[0]
        out.pose_std = _pose_std(pred, t[0], max(out.rmse_m, 0.01), cfg.with_scale)
        out.T_best = torch.cat([t[0], matrix_to_quat(R[0]), s]).to(torch.float64)
    std_m, std_deg = out.pose_std

    # --- verification (conservative)
    if n < cfg.min_inliers:
        out.reason = f"too few inliers ({n} < {cfg.min_inliers})"
    elif out.inlier_frac < cfg.min_inlier_frac:
        out.reason = f"inlier fraction {out.inlier_frac:.2f} < {cfg.min_inlier_frac}"
    elif not out.rmse_m <= cfg.max_rmse_m:
        out.reason = f"inlier RMSE {out.rmse_m:.3f} m > {cfg.max_rmse_m} m"
    elif not (std_m <= cfg.max_pose_std_m and std_deg <= cfg.max_pose_std_deg):
        out.reason = f"pose poorly constrained by the inliers (std {std_m:.3f} m, {std_deg:.2f} deg)"
    elif (spread_m := _minor_std(Q[inl], 1)) < cfg.min_spread_m:
        out.reason = f"inliers near-collinear in 3D (second std {spread_m:.3f} m < {cfg.min_spread_m} m)"
    else:
        for xy, side in spread:
            sp = _minor_std(xy.to(dev, torch.float64)[vidx[inl]], 1) / side
            if sp < cfg.min_image_spread:
                out.reason = f"inliers cover too small an image region ({sp:.3f} < {cfg.min_image_spread})"
                return out
        out.ok, out.reason = True, "ok"
        out.T_ref_query = out.T_best
    return out


def pose_support(
    query: LocalFeatures,
    ref: LocalFeatures,
    rel: RelPose,
    T_ref_query: Tensor,
    cfg: RelPoseConfig | None = None,
    tolerance: float = 1.0,
) -> tuple[int, int]:
    """How many of ``rel``'s matches (with depth in both images) a given pose ``T_ref_query`` (Sim(3) ``[8]``,
    e.g. a tracker's) explains within ``tolerance`` times the RANSAC inlier threshold: ``(n_support,
    n_valid)``. An independent check of a pose found another way: the right pose explains a share of the
    matches like RANSAC's best; a wrong one explains about none of them."""
    cfg = cfg or RelPoseConfig()
    if rel.ia is None or rel.ib is None or query.points is None or ref.points is None or rel.ia.numel() == 0:
        return 0, 0
    P = query.points.to(torch.float64)[rel.ia.cpu()]
    Q = ref.points.to(torch.float64)[rel.ib.cpu()]
    valid = torch.isfinite(P).all(-1) & torch.isfinite(Q).all(-1) & (P[:, 2] > 0) & (Q[:, 2] > 0)
    P, Q = P[valid], Q[valid]
    pred = sim3_act(T_ref_query.detach().to("cpu", torch.float64).expand(P.shape[0], 8), P)
    tau = tolerance * (cfg.inlier_thresh_m + cfg.inlier_thresh_rel * Q[:, 2])
    return int(((pred - Q).norm(dim=-1) < tau).sum()), int(P.shape[0])
