"""Output post-processing of the MASt3R head (``mast3r.catmlp_dpt_head.postprocess``).

Modes are the reference's ``(name, vmin, vmax)`` tuples, e.g. ``depth_mode=('exp', -inf, inf)``,
``conf_mode=('exp', 1, inf)``, ``desc_conf_mode=('exp', 0, inf)``.
"""

from __future__ import annotations

import math

import torch

DEPTH_MODES = ("linear", "square", "exp")
CONF_MODES = ("exp", "sigmoid")


def check_mode(name: str, mode: object, allowed: tuple[str, ...], unbounded: bool = False) -> tuple:
    """Validate a ``(name, vmin, vmax)`` mode tuple; returns it as a tuple of (str, float, float)."""
    if not isinstance(mode, (tuple, list)) or len(mode) != 3 or not isinstance(mode[0], str):
        raise ValueError(f"{name} must be a (mode, vmin, vmax) tuple, got {mode!r}")
    kind, vmin, vmax = mode[0], float(mode[1]), float(mode[2])
    if kind not in allowed:
        raise ValueError(f"{name}={mode!r}: unsupported mode {kind!r} (supported: {', '.join(allowed)})")
    if unbounded and not (vmin == -math.inf and vmax == math.inf):
        raise ValueError(
            f"{name}={mode!r}: bounded depth modes are not supported (the reference asserts ±inf)"
        )
    if not vmin < vmax:
        raise ValueError(f"{name}={mode!r}: vmin must be < vmax")
    return (kind, vmin, vmax)


def reg_dense_depth(xyz: torch.Tensor, mode: tuple) -> torch.Tensor:
    """[..., 3] raw -> 3-D points. ``exp``: ``xyz / max(|xyz|, 1e-8) * expm1(|xyz|)``."""
    kind = mode[0]
    if kind == "linear":
        return xyz
    d = xyz.norm(dim=-1, keepdim=True)
    xyz = xyz / d.clip(min=1e-8)
    if kind == "square":
        return xyz * d.square()
    return xyz * torch.expm1(d)


def reg_dense_conf(x: torch.Tensor, mode: tuple) -> torch.Tensor:
    """Raw logit -> confidence. ``exp``: ``vmin + exp(x).clip(max=vmax - vmin)``."""
    kind, vmin, vmax = mode
    if kind == "exp":
        return vmin + x.exp().clip(max=vmax - vmin)
    return (vmax - vmin) * torch.sigmoid(x) + vmin


def reg_desc(desc: torch.Tensor) -> torch.Tensor:
    """L2-normalise descriptors over the last dim (no epsilon, as the reference)."""
    return desc / desc.norm(dim=-1, keepdim=True)


def postprocess(
    fmap: torch.Tensor,
    depth_mode: tuple,
    conf_mode: tuple,
    desc_dim: int,
    two_confs: bool,
    desc_conf_mode: tuple,
) -> dict[str, torch.Tensor]:
    """Channels-last head output [B, H, W, 4 + desc_dim (+1)] -> result dict.

    Returns ``pts3d [B,H,W,3]``, ``conf [B,H,W]``, ``desc [B,H,W,desc_dim]``, ``desc_conf [B,H,W]``.
    """
    res = {
        "pts3d": reg_dense_depth(fmap[..., 0:3], depth_mode),
        "conf": reg_dense_conf(fmap[..., 3], conf_mode),
        "desc": reg_desc(fmap[..., 4 : 4 + desc_dim]),
    }
    if two_confs:
        res["desc_conf"] = reg_dense_conf(fmap[..., 4 + desc_dim], desc_conf_mode)
    else:
        res["desc_conf"] = res["conf"].clone()
    return res
