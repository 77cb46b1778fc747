"""Online3R's self-supervised consistency losses (pure functions over batched pointmaps).

Both compare pointmaps of the same view in the same camera frame, so they need no pose:

- :func:`local_consistency_loss`: a keyframe's fresh prediction vs its fused canonical pointmap (the pseudo
  ground truth that MASt3R-SLAM's confidence-weighted fusion built from every frame tracked against it);
- :func:`global_consistency_loss`: one keyframe's pointmap predicted with two different partner keyframes
  must agree (the geometry of a view must not depend on which past view it is paired with).

Each is the mean over valid pixels of the per-pixel ℓ1 distance ``|dx| + |dy| + |dz|`` (the paper sums over
pixels; the mean keeps the learning rate independent of the image size), optionally weighted.

Example:
    >>> import torch
    >>> pred = torch.zeros(1, 2, 2, 3)
    >>> target = torch.ones(1, 2, 2, 3)
    >>> float(local_consistency_loss(pred, target))
    3.0
    >>> valid = torch.tensor([[[True, False], [False, False]]])
    >>> float(local_consistency_loss(pred, target, valid=valid))
    3.0
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor

__all__ = ["pointmap_l1", "local_consistency_loss", "global_consistency_loss", "valid_pixels"]


def valid_pixels(X: Tensor, C: Tensor | None = None, min_conf: float = 0.0) -> Tensor:
    """``[B, H, W]`` bool: finite points (``X [B, H, W, 3]``) with confidence ``C [B, H, W]`` above
    ``min_conf`` when given."""
    valid = torch.isfinite(X).all(dim=-1)
    if C is not None:
        valid &= torch.isfinite(C) & (C > min_conf)
    return valid


def pointmap_l1(
    pred: Tensor, target: Tensor, valid: Tensor | None = None, weight: Tensor | None = None
) -> Tensor:
    """Weighted mean over valid pixels of ``‖pred - target‖₁``: ``pred, target [B, H, W, 3]``, ``valid
    [B, H, W]`` bool (default: every pixel where both are finite), ``weight [B, H, W]`` >= 0 (default 1).
    Returns a scalar (0 with gradient when no pixel is valid)."""
    if pred.shape != target.shape or pred.shape[-1] != 3:
        raise ValueError(f"pred and target must be [B, H, W, 3] alike, got {pred.shape} and {target.shape}")
    ok = valid_pixels(pred) & valid_pixels(target)
    if valid is not None:
        ok &= valid
    w = ok.to(pred.dtype) if weight is None else torch.where(ok, weight.to(pred.dtype), 0.0)
    dist = torch.where(ok[..., None], pred - target, 0.0).abs().sum(dim=-1)
    return (w * dist).sum() / w.sum().clamp_min(torch.finfo(pred.dtype).tiny)


def local_consistency_loss(
    pred: Tensor, fused: Tensor, valid: Tensor | None = None, conf: Tensor | None = None
) -> Tensor:
    """Local loss: ``pred [B, H, W, 3]`` (a keyframe's prediction in its own frame) vs ``fused`` (its fused
    canonical pointmap, the pseudo ground truth); ``conf [B, H, W]`` weights pixels (the confidence-weighted
    variant), ``None``: plain ℓ1 as the paper."""
    return pointmap_l1(pred, fused.detach(), valid, None if conf is None else conf.detach())


def global_consistency_loss(pred_a: Tensor, pred_b: Tensor, valid: Tensor | None = None) -> Tensor:
    """Global loss: one keyframe's pointmaps ``[B, H, W, 3]`` predicted with two different partners agree
    (gradients reach both predictions)."""
    return pointmap_l1(pred_a, pred_b, valid)
