"""Patch embedding of MASt3R (``PatchEmbedDust3R``): 16x16 conv, row-major tokens, (y, x) positions."""

from __future__ import annotations

import torch
from torch import nn


def patch_positions(batch: int, grid_h: int, grid_w: int, device: torch.device | None = None) -> torch.Tensor:
    """Row-major token positions [B, h*w, 2] int64 with ``[..., 0] = y`` (row) and ``[..., 1] = x``."""
    ys = torch.arange(grid_h, device=device)
    xs = torch.arange(grid_w, device=device)
    pos = torch.cartesian_prod(ys, xs)  # [h*w, 2]
    return pos.unsqueeze(0).expand(batch, -1, -1).clone()


class PatchEmbed(nn.Module):
    """``Conv2d(3, dim, p, stride=p)`` then flatten: img [B,3,H,W] -> tokens [B,N,dim], pos [B,N,2].

    H and W must be multiples of the patch size; N = (H/p)(W/p), token n = y*(W/p) + x.
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if img.ndim != 4 or img.shape[1] != self.proj.in_channels:
            raise ValueError(f"img must be [B, {self.proj.in_channels}, H, W], got {tuple(img.shape)}")
        b, _, h, w = img.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"image height and width must be multiples of {p}, got H={h}, W={w}")
        tokens = self.proj(img).flatten(2).transpose(1, 2)
        return tokens, patch_positions(b, h // p, w // p, img.device)
