"""Pinhole camera helpers on batched tensors: rays/distances, projection with Jacobians, back-projection,
intrinsics for resized/cropped images.

Pixel convention: ``(u, v)`` = (column, row); integer pixel centres, i.e. pixel ``(0, 0)`` covers
``[-0.5, 0.5]^2``. Camera optical frame: x right, y down, z forward. Intrinsics ``K[..., 3, 3]``.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor

__all__ = [
    "pixel_grid",
    "rays_and_distances",
    "backproject_depth",
    "constrain_to_rays",
    "project",
    "project_with_jacobian",
    "scale_intrinsics",
    "crop_intrinsics",
    "resize_intrinsics",
    "intrinsics_params",
]


def _check_K(K: Tensor) -> None:
    if not isinstance(K, torch.Tensor) or K.shape[-2:] != (3, 3):
        raise ValueError(f"K must be a [..., 3, 3] tensor, got {tuple(getattr(K, 'shape', ()))}")


def intrinsics_params(K: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(fx, fy, cx, cy)`` each ``[...]`` from ``K[..., 3, 3]``."""
    _check_K(K)
    return K[..., 0, 0], K[..., 1, 1], K[..., 0, 2], K[..., 1, 2]


def pixel_grid(height: int, width: int, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """``[H, W, 2]`` pixel coordinates ``(u, v)`` of every pixel centre."""
    v, u = torch.meshgrid(
        torch.arange(height, dtype=dtype, device=device),
        torch.arange(width, dtype=dtype, device=device),
        indexing="ij",
    )
    return torch.stack([u, v], dim=-1)


def rays_and_distances(X: Tensor, eps: float = 1e-12) -> tuple[Tensor, Tensor]:
    """Unit rays ``[..., 3]`` and distances ``[..., 1]`` of points ``X[..., 3]`` (zero points -> zero ray)."""
    d = X.norm(dim=-1, keepdim=True)
    return X / d.clamp_min(eps), d


def backproject_depth(depth: Tensor, K: Tensor) -> Tensor:
    """Pointmap ``[..., H, W, 3]`` of ``depth[..., H, W]`` (z, metres) with intrinsics ``K[..., 3, 3]``.

    Invalid depth (<= 0, NaN or inf) gives the zero point.
    """
    _check_K(K)
    if depth.dim() < 2:
        raise ValueError(f"depth must be [..., H, W], got {tuple(depth.shape)}")
    H, W = depth.shape[-2:]
    fx, fy, cx, cy = (p[..., None, None] for p in intrinsics_params(K.to(depth.dtype)))
    uv = pixel_grid(H, W, depth.dtype, depth.device)
    valid = torch.isfinite(depth) & (depth > 0)
    z = torch.where(valid, depth, torch.zeros_like(depth))
    x = (uv[..., 0] - cx) / fx * z
    y = (uv[..., 1] - cy) / fy * z
    return torch.stack([x, y, z], dim=-1)


def constrain_to_rays(X: Tensor, K: Tensor) -> Tensor:
    """Keep only the predicted depth of a pointmap ``X[..., H, W, 3]``: ``z · K^-1 [u, v, 1]`` per pixel."""
    return backproject_depth(X[..., 2], K)


def project(P: Tensor, K: Tensor, depth_eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Pixel coordinates ``[..., 2]`` of points ``P[..., 3]`` and validity ``[...]`` (``z > depth_eps``).

    ``K`` broadcasts against the leading dimensions of ``P`` (``K[3, 3]`` for all points is typical).
    """
    _check_K(K)
    fx, fy, cx, cy = intrinsics_params(K.to(P.dtype))
    z = P[..., 2]
    valid = z > depth_eps
    zs = torch.where(valid, z, 1.0)
    u = fx * P[..., 0] / zs + cx
    v = fy * P[..., 1] / zs + cy
    return torch.stack([u, v], dim=-1), valid


def project_with_jacobian(P: Tensor, K: Tensor, depth_eps: float = 1e-6) -> tuple[Tensor, Tensor, Tensor]:
    """Calibrated measurement ``(u, v, log z)`` ``[..., 3]`` of ``P[..., 3]``, its Jacobian ``[..., 3, 3]``
    w.r.t. ``P`` and validity ``[...]`` (``z > depth_eps``; invalid rows are finite but meaningless).

    ``du/dP = (fx/z, 0, -fx x/z²)``, ``dv/dP = (0, fy/z, -fy y/z²)``, ``dlog z/dP = (0, 0, 1/z)``.
    """
    _check_K(K)
    fx, fy, cx, cy = intrinsics_params(K.to(P.dtype))
    x, y, z = P.unbind(-1)
    valid = z > depth_eps
    zs = torch.where(valid, z, 1.0)
    iz = 1.0 / zs
    xz, yz = x * iz, y * iz
    meas = torch.stack([fx * xz + cx, fy * yz + cy, torch.log(zs)], dim=-1)
    o = torch.zeros_like(z)
    J = torch.stack(
        [fx * iz, o, -fx * xz * iz, o, fy * iz, -fy * yz * iz, o, o, iz],
        dim=-1,
    ).reshape(*P.shape[:-1], 3, 3)
    return meas, J, valid


def scale_intrinsics(K: Tensor, sx: float, sy: float) -> Tensor:
    """Intrinsics after resizing the image by ``(sx, sy)`` (new = old · s), pixel-centre convention:
    ``f' = f·s``, ``c' = (c + 0.5)·s - 0.5``."""
    _check_K(K)
    K2 = K.clone()
    K2[..., 0, 0] = K[..., 0, 0] * sx
    K2[..., 0, 1] = K[..., 0, 1] * sx
    K2[..., 1, 1] = K[..., 1, 1] * sy
    K2[..., 0, 2] = (K[..., 0, 2] + 0.5) * sx - 0.5
    K2[..., 1, 2] = (K[..., 1, 2] + 0.5) * sy - 0.5
    return K2


def crop_intrinsics(K: Tensor, left: float, top: float) -> Tensor:
    """Intrinsics after cropping ``left`` columns and ``top`` rows off the image."""
    _check_K(K)
    K2 = K.clone()
    K2[..., 0, 2] = K[..., 0, 2] - left
    K2[..., 1, 2] = K[..., 1, 2] - top
    return K2


def resize_intrinsics(K: Tensor, old_hw: tuple[int, int], new_hw: tuple[int, int]) -> Tensor:
    """Intrinsics for an image resized from ``old_hw = (H0, W0)`` to ``new_hw = (H, W)`` (no crop)."""
    (h0, w0), (h1, w1) = old_hw, new_hw
    if min(h0, w0, h1, w1) <= 0:
        raise ValueError(f"image sizes must be positive, got old_hw={old_hw}, new_hw={new_hw}")
    return scale_intrinsics(K, w1 / w0, h1 / h0)
