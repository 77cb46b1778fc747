"""Local fusion of a keyframe's canonical pointmap (MASt3R-SLAM ``Frame.update_pointmap``).

Each keyframe keeps a canonical pointmap ``X̃`` (camera frame of the keyframe), an accumulated confidence
``C̃``, the number of fused predictions ``N`` (so ``C̃ / N`` is the *average* confidence used by thresholds,
the optimisers and the map export) and the number of update calls ``N_updates``. Every new prediction
``(X, C)`` of the keyframe, already expressed in the keyframe's frame (tracking passes ``T_CkCf · X_kf``),
is merged by one of the rules below (``tracking.filtering_mode`` in the reference):

==================== ======================================================================================
``first``            keep the first prediction; it is replaced only while ``N_updates == 1`` (reference rule)
``recent``           always replace with the newest prediction
``best_score``       replace when ``score(C) > stored score``; score = median (default) or mean of ``C``
``indep_conf``       per pixel, take the new ``X, C`` where ``C_new > C̃``
``weighted_pointmap`` (default) ``X̃ ← (C̃·X̃ + C·X) / (C̃ + C)``, ``C̃ ← C̃ + C``, ``N ← N + 1``
``weighted_spherical`` the same weighted average on (r, φ, θ) spherical coordinates, converted back
==================== ======================================================================================

Shapes: ``X[..., 3]`` and ``C[...]`` with ``C.shape == X.shape[:-1]``. The leading ``batch_ndim`` dims of
``C`` are independent keyframes (``N``, ``N_updates`` and ``score`` have that batch shape); the remaining
dims (``[H, W]`` or ``[H*W]``) are pixels. All functions are pure: they return new tensors.

Fix of a reference quirk: ``weighted_spherical`` averages the azimuth φ on the circle (the reference averages
raw ``atan2`` values, so two points just either side of the ±π cut average to the opposite direction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

FILTERING_MODES = (
    "first",
    "recent",
    "best_score",
    "indep_conf",
    "weighted_pointmap",
    "weighted_spherical",
)
SCORE_KINDS = ("median", "mean")


@dataclass(frozen=True)
class FusionState:
    """Fused pointmap of one keyframe (or a batch of keyframes).

    X: canonical pointmap ``[..., 3]`` (keyframe camera frame, pointmap units).
    C: accumulated confidence ``[...]`` (>= 0).
    N: number of predictions averaged into ``X`` (int64, batch shape).
    N_updates: number of update calls, including the first (int64, batch shape).
    score: stored score for ``best_score`` (float, batch shape; NaN when unused).
    """

    X: Tensor
    C: Tensor
    N: Tensor
    N_updates: Tensor
    score: Tensor

    @property
    def batch_ndim(self) -> int:
        return self.N.ndim

    def average_confidence(self) -> Tensor:
        """``C̃ / N`` broadcast over the pixel dims: ``[...]``."""
        return average_confidence(self.C, self.N)


def average_confidence(C: Tensor, N: Tensor | int) -> Tensor:
    """Average confidence ``C / N`` where ``N`` has the batch shape (leading dims of ``C``) or is an int."""
    if not isinstance(N, Tensor):
        return C / float(N)
    n = N.to(C.dtype).reshape(N.shape + (1,) * (C.ndim - N.ndim))
    return C / n.clamp_min(1)


def _check_inputs(X: Tensor, C: Tensor, batch_ndim: int) -> None:
    if X.ndim < 2 or X.shape[-1] != 3:
        raise ValueError(f"X must have shape [..., 3], got {tuple(X.shape)}")
    if tuple(C.shape) != tuple(X.shape[:-1]):
        raise ValueError(f"C must have shape X.shape[:-1]={tuple(X.shape[:-1])}, got {tuple(C.shape)}")
    if not 0 <= batch_ndim < C.ndim:
        raise ValueError(
            f"batch_ndim={batch_ndim} must be in [0, {C.ndim - 1}] for C of shape {tuple(C.shape)}"
        )


def pointmap_score(C: Tensor, kind: str = "median", batch_ndim: int = 0) -> Tensor:
    """Score of a confidence map for ``best_score``: median or mean over the pixel dims -> batch shape."""
    if kind not in SCORE_KINDS:
        raise ValueError(f"filtering_score must be one of {SCORE_KINDS}, got {kind!r}")
    flat = C.reshape(C.shape[:batch_ndim] + (-1,))
    if kind == "median":
        return flat.median(dim=-1).values
    return flat.mean(dim=-1)


def _batch_mask(mask: Tensor, like: Tensor) -> Tensor:
    """Reshape a batch-shaped bool mask so that it broadcasts against ``like`` (pixel dims appended)."""
    return mask.reshape(mask.shape + (1,) * (like.ndim - mask.ndim))


def init_fusion_state(
    X: Tensor, C: Tensor, mode: str = "weighted_pointmap", score_kind: str = "median", batch_ndim: int = 0
) -> FusionState:
    """State after the first prediction: copies ``X, C``; ``N = N_updates = 1``."""
    _check_mode(mode, score_kind)
    _check_inputs(X, C, batch_ndim)
    batch = C.shape[:batch_ndim]
    ones = torch.ones(batch, dtype=torch.int64, device=C.device)
    if mode == "best_score":
        score = pointmap_score(C, score_kind, batch_ndim)
    else:
        score = torch.full(batch, float("nan"), dtype=C.dtype, device=C.device)
    return FusionState(X=X.clone(), C=C.clone(), N=ones, N_updates=ones.clone(), score=score)


def _check_mode(mode: str, score_kind: str) -> None:
    if mode not in FILTERING_MODES:
        raise ValueError(f"filtering_mode must be one of {FILTERING_MODES}, got {mode!r}")
    if score_kind not in SCORE_KINDS:
        raise ValueError(f"filtering_score must be one of {SCORE_KINDS}, got {score_kind!r}")


def weighted_average(X_acc: Tensor, C_acc: Tensor, X: Tensor, C: Tensor) -> tuple[Tensor, Tensor]:
    """Confidence-weighted running average: ``((C̃X̃ + CX)/(C̃+C), C̃+C)``; keeps ``X̃`` where both are 0."""
    C_sum = C_acc + C
    safe = C_sum > 0
    denom = torch.where(safe, C_sum, torch.ones_like(C_sum)).unsqueeze(-1)
    X_new = (C_acc.unsqueeze(-1) * X_acc + C.unsqueeze(-1) * X) / denom
    X_new = torch.where(safe.unsqueeze(-1), X_new, X_acc)
    return X_new, C_sum


def cartesian_to_spherical(X: Tensor) -> Tensor:
    """``[..., 3]`` xyz -> ``[..., 3]`` (r, φ = atan2(y, x), θ = acos(z / r)); θ = 0 at r = 0."""
    r = X.norm(dim=-1)
    phi = torch.atan2(X[..., 1], X[..., 0])
    cos_theta = torch.where(r > 0, X[..., 2] / r.clamp_min(torch.finfo(X.dtype).tiny), torch.ones_like(r))
    theta = torch.acos(cos_theta.clamp(-1.0, 1.0))
    return torch.stack((r, phi, theta), dim=-1)


def spherical_to_cartesian(S: Tensor) -> Tensor:
    """Inverse of :func:`cartesian_to_spherical`."""
    r, phi, theta = S.unbind(-1)
    sin_t = torch.sin(theta)
    return torch.stack((r * sin_t * torch.cos(phi), r * sin_t * torch.sin(phi), r * torch.cos(theta)), dim=-1)


def weighted_spherical_average(X_acc: Tensor, C_acc: Tensor, X: Tensor, C: Tensor) -> tuple[Tensor, Tensor]:
    """Weighted average in spherical coordinates; φ is averaged on the circle (no ±π wrap error)."""
    S_acc = cartesian_to_spherical(X_acc)
    S_new = cartesian_to_spherical(X)
    C_sum = C_acc + C
    safe = C_sum > 0
    w = torch.where(safe, C / torch.where(safe, C_sum, torch.ones_like(C_sum)), torch.zeros_like(C_sum))
    r = S_acc[..., 0] + w * (S_new[..., 0] - S_acc[..., 0])
    theta = S_acc[..., 2] + w * (S_new[..., 2] - S_acc[..., 2])
    dphi = torch.remainder(S_new[..., 1] - S_acc[..., 1] + math.pi, 2 * math.pi) - math.pi
    phi = S_acc[..., 1] + w * dphi
    return spherical_to_cartesian(torch.stack((r, phi, theta), dim=-1)), C_sum


def fuse_pointmap(
    state: FusionState | None,
    X: Tensor,
    C: Tensor,
    mode: str = "weighted_pointmap",
    score_kind: str = "median",
    batch_ndim: int | None = None,
) -> FusionState:
    """Merge a new prediction ``(X[..., 3], C[...])`` into ``state`` with the rule ``mode``.

    ``state=None`` starts a new state (``batch_ndim`` defaults to 0 then). Returns a new state; the input is
    not modified. ``N_updates`` counts every call; ``N`` counts the predictions in the current average.
    """
    _check_mode(mode, score_kind)
    if state is None:
        return init_fusion_state(X, C, mode, score_kind, batch_ndim or 0)
    bnd = state.batch_ndim
    if batch_ndim is not None and batch_ndim != bnd:
        raise ValueError(f"batch_ndim={batch_ndim} does not match the state's batch_ndim={bnd}")
    _check_inputs(X, C, bnd)
    if X.shape != state.X.shape:
        raise ValueError(f"X shape {tuple(X.shape)} differs from the fused pointmap {tuple(state.X.shape)}")
    X = X.to(state.X.dtype)
    C = C.to(state.C.dtype)
    ones = torch.ones_like(state.N)
    N, score = state.N, state.score

    if mode in ("first", "recent", "best_score"):
        if mode == "first":
            take = state.N_updates == 1
        elif mode == "recent":
            take = torch.ones_like(state.N, dtype=torch.bool)
        else:
            new_score = pointmap_score(C, score_kind, bnd)
            old = torch.where(torch.isnan(state.score), torch.full_like(new_score, -math.inf), state.score)
            take = new_score > old
            score = torch.where(take, new_score, old)
        X_new = torch.where(_batch_mask(take, X), X, state.X)
        C_new = torch.where(_batch_mask(take, C), C, state.C)
        N = torch.where(take, ones, N)
    elif mode == "indep_conf":
        better = C > state.C
        X_new = torch.where(better.unsqueeze(-1), X, state.X)
        C_new = torch.where(better, C, state.C)
        N = ones
    elif mode == "weighted_pointmap":
        X_new, C_new = weighted_average(state.X, state.C, X, C)
        N = N + 1
    else:  # weighted_spherical
        X_new, C_new = weighted_spherical_average(state.X, state.C, X, C)
        N = N + 1
    return replace(state, X=X_new, C=C_new, N=N, N_updates=state.N_updates + 1, score=score)
