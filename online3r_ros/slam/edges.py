"""Backend edge construction for a new keyframe (MASt3R-SLAM ``FactorGraph.add_factors``, notes §6.1).

For each candidate keyframe ``i`` of the new keyframe ``j``: one symmetric source prediction of the pair
(``X_ii, X_ji`` in i's frame; ``X_jj, X_ij`` in j's frame), matching in both directions (pixels of j -> i from
``X_ii`` vs ``X_ji``; pixels of i -> j from ``X_jj`` vs ``X_ij``), the combined match confidences
``q = sqrt(Q_ref[idx] · Q_src)``, then :meth:`FactorGraph.add_edges` (consecutive edges always kept, the
others need ``local_opt.min_match_frac`` both ways). Pose-dependent sources (RGB-D) get the current relative
pose ``T_CiCj`` as their guess; calibrated sources are matched by projection with ``K``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..geometry.lie import sim3_compose, sim3_inverse
from ..sources.base import Pointmap, PointmapSource, SourceFrame
from .config import SlamConfig
from .graph import FactorGraph, combined_match_confidence
from .matching import match, match_by_projection

Tensor = torch.Tensor

__all__ = ["match_pointmaps", "build_edges"]


def _confidence(pm: Pointmap) -> Tensor:
    """Descriptor confidence, or the pointmap confidence when the source has none (``[H, W]``)."""
    return pm.Q if pm.Q is not None else pm.C


def match_pointmaps(
    ref: Pointmap,
    src_in_ref: Pointmap,
    K: Tensor | None,
    cfg: SlamConfig,
    use_projection: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Match every pixel of the source image (points ``src_in_ref.X`` in the reference frame) to the
    reference image (``cfg.matching``). Returns ``(idx [P] long into ref, valid [P] bool, q [P] combined
    confidence)``."""
    m = cfg.matching
    radius, dilation_max = m.radius, m.dilation_max
    D1 = ref.D if (ref.D is not None and src_in_ref.D is not None) else None
    D2 = src_in_ref.D if D1 is not None else None
    X1 = torch.nan_to_num(ref.X)
    X2 = torch.nan_to_num(src_in_ref.X)
    if use_projection and K is not None:
        res = match_by_projection(
            X1,
            X2,
            K,
            D1,
            D2,
            dist_thresh=m.dist_thresh,
            radius=radius,
            dilation_max=dilation_max,
            depth_eps=cfg.tracking.depth_eps,
        )
    else:
        res = match(
            X1,
            X2,
            D1,
            D2,
            max_iter=m.max_iter,
            lambda_init=m.lambda_init,
            convergence_thresh=m.convergence_thresh,
            dist_thresh=m.dist_thresh,
            radius=radius,
            dilation_max=dilation_max,
        )
    valid = res.valid & (src_in_ref.C.reshape(-1) > 0) & (ref.C.reshape(-1)[res.idx] > 0)
    q = combined_match_confidence(_confidence(ref)[None], res.idx[None], _confidence(src_in_ref)[None])[0]
    return res.idx, valid, q


def build_edges(
    source: PointmapSource,
    graph: FactorGraph,
    frames: Sequence[SourceFrame],
    T_WC: Tensor,
    candidates: Sequence[int],
    new_id: int,
    cfg: SlamConfig,
    calibrated: bool = False,
    guesses: Mapping[int, Tensor] | None = None,
    consecutive_exemption: bool = True,
) -> list[tuple[int, int]]:
    """Predict, match and add the edges ``(i, new_id)`` for ``i`` in ``candidates``; returns those accepted.

    ``frames``: prepared source frames of all keyframes; ``T_WC [K, 8]``: their current poses;
    ``guesses``: relative poses ``T_CiCj [8]`` to use instead of the current poses' (a loop's prior-free pose:
    after drift the current poses do not bring a pose-dependent source's points together);
    ``consecutive_exemption``: keep ``(new_id - 1, new_id)`` whatever its match fraction.
    """
    cands = [int(c) for c in candidates if 0 <= int(c) < new_id and not graph.has_edge(int(c), new_id)]
    if not cands:
        return []
    T = T_WC.detach().to(torch.float32)
    pairs = [(frames[i], frames[new_id]) for i in cands]
    given = guesses or {}
    rel = [
        (given[i].to(T.dtype) if i in given else sim3_compose(sim3_inverse(T[i]), T[new_id])).to(
            frames[i].image.device
        )
        for i in cands
    ]
    preds = source.predict_symmetric(pairs, rel if source.pose_dependent else None)
    use_proj = bool(source.pose_dependent or calibrated)
    idx_j, val_j, q_j, idx_i, val_i, q_i = [], [], [], [], [], []
    for i, pred in zip(cands, preds, strict=True):
        a, b, c = match_pointmaps(pred.ii, pred.ji, frames[i].K, cfg, use_proj)  # pixels of j -> i
        d, e, f = match_pointmaps(pred.jj, pred.ij, frames[new_id].K, cfg, use_proj)  # pixels of i -> j
        idx_j.append(a)
        val_j.append(b)
        q_j.append(c)
        idx_i.append(d)
        val_i.append(e)
        q_i.append(f)
    res = graph.add_edges(
        cands,
        [new_id] * len(cands),
        torch.stack(idx_j),
        torch.stack(val_j),
        torch.stack(q_j),
        torch.stack(idx_i),
        torch.stack(val_i),
        torch.stack(q_i),
        consecutive_exemption=consecutive_exemption,
    )
    return [(i, new_id) for i, ok in zip(cands, res.accepted.tolist(), strict=True) if ok]
