"""DPT dense head of MASt3R (``DPTOutputAdapter_fix`` with ``layer_dims = [96, 192, 384, 768]``).

Module names reproduce the reference keys: ``act_postprocess.{0..3}``, ``scratch.layer{1..4}_rn`` (also
registered a second time as ``scratch.layer_rn.{0..3}``, exactly like the reference, so the state_dict
holds both alias names), ``scratch.refinenet{1..4}.{resConfUnit1,resConfUnit2,out_conv}`` and
``head.{0,2,4}``.

Speed (``impl == "fast"``, the default; ``"exact"`` is the same without Winograd): the 3x3 stride-1
convolutions dominate the heads (~90 GMAC per head at 512x384). On CPU, in float32, when no gradient is
needed, they run through NNPACK's Winograd kernels (~2.5x faster than oneDNN's direct convolution; error
~1e-5 relative per conv, end-to-end the parity fixtures stay ~15x inside their 1e-4 tolerance), in row bands
that keep NNPACK's workspace small. The 1x1 ``out_conv`` of each fusion block is applied
before the bilinear upsampling instead of after it (both are linear and the interpolation weights sum to one,
so they commute; 4x fewer MACs), ReLU/residual adds are done in place on fresh tensors.
With gradients (prompt tuning), on CUDA, or with ``impl`` "exact" / "naive", ``nn.Conv2d`` is used.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

DPT_LAYER_DIMS = (96, 192, 384, 768)
WINOGRAD_BAND_PIXELS = 1 << 14  # row bands of at most this many output pixels bound NNPACK's workspace
_NNPACK_OK: bool | None = None


def _nnpack_available() -> bool:
    global _NNPACK_OK
    if _NNPACK_OK is None:
        probe = getattr(torch, "_nnpack_available", None)
        _NNPACK_OK = bool(probe()) if probe is not None else False
    return _NNPACK_OK


def conv3x3(conv: nn.Conv2d, x: torch.Tensor, winograd: bool) -> torch.Tensor:
    """Apply a 3x3 / stride 1 / padding 1 ``conv`` to x [B,C,H,W]; Winograd (NNPACK) when allowed."""
    if (
        winograd
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and conv.weight.dtype == torch.float32
        and x.numel() > 0
        and not (torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad))
        and _nnpack_available()
    ):
        return _winograd3x3(x.contiguous(), conv.weight.contiguous(), conv.bias)
    return conv(x)


def _winograd3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """NNPACK 3x3 conv (padding 1) in row bands with a one-row halo, so the Winograd transform buffers stay
    small (one 512x384 full-resolution conv would otherwise take ~400 MB of workspace)."""
    h, w = x.shape[-2:]
    rows = max(1, WINOGRAD_BAND_PIXELS // w)
    if h <= rows:
        return torch._nnpack_spatial_convolution(x, weight, bias, [1, 1], [1, 1])
    out = x.new_empty(x.shape[0], weight.shape[0], h, w)
    for start in range(0, h, rows):
        stop = min(start + rows, h)
        lo, hi = max(start - 1, 0), min(stop + 1, h)  # halo rows; zero padding only at the image border
        band = torch._nnpack_spatial_convolution(x[:, :, lo:hi].contiguous(), weight, bias, [1, 1], [1, 1])
        out[:, :, start:stop] = band[:, :, start - lo : start - lo + stop - start]
    return out


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 upsampling with ``align_corners=True`` (as every DPT upsampling in the reference)."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class Interpolate(nn.Module):
    """Parameter-free x2 bilinear upsampling module (keeps ``head.{0,2,4}`` index names)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample2x(x)


class ResidualConvUnit(nn.Module):
    """``conv2(relu(conv1(relu(x)))) + x`` with 3x3 convolutions (bias, no BatchNorm)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, padding=1)
        self.impl = "fast"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast, winograd = self.impl != "naive", self.impl == "fast"
        out = conv3x3(self.conv1, F.relu(x), winograd)
        out = conv3x3(self.conv2, F.relu(out, inplace=fast), winograd)
        return out.add_(x) if fast else out + x


class FeatureFusionBlock(nn.Module):
    """``out = x0 (+ RCU1(x1))``, ``RCU2``, bilinear x2 (align_corners), 1x1 ``out_conv``.

    [B,C,h,w] (+ [B,C,h,w]) -> [B,C,2h,2w].
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, kernel_size=1)
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)
        self.impl = "fast"

    def forward(self, x0: torch.Tensor, x1: torch.Tensor | None = None) -> torch.Tensor:
        if self.impl == "naive":
            out = x0 if x1 is None else x0 + self.resConfUnit1(x1)
            return self.out_conv(upsample2x(self.resConfUnit2(out)))
        out = x0 if x1 is None else self.resConfUnit1(x1).add_(x0)
        return upsample2x(self.out_conv(self.resConfUnit2(out)))


class Scratch(nn.Module):
    """Per-level 3x3 projections to ``features`` channels (no bias) and the four fusion blocks."""

    def __init__(self, in_dims: Sequence[int], features: int) -> None:
        super().__init__()
        convs = [nn.Conv2d(c, features, kernel_size=3, padding=1, bias=False) for c in in_dims]
        self.layer1_rn, self.layer2_rn, self.layer3_rn, self.layer4_rn = convs
        self.layer_rn = nn.ModuleList(convs)  # alias names, same modules (reference state_dict has both)
        self.refinenet1 = FeatureFusionBlock(features)
        self.refinenet2 = FeatureFusionBlock(features)
        self.refinenet3 = FeatureFusionBlock(features)
        self.refinenet4 = FeatureFusionBlock(features)


def _act_postprocess(dim_in: int, dim_out: int, level: int) -> nn.Sequential:
    """Level-specific resampling: x4 / x2 transposed conv, identity, or stride-2 3x3 conv after a 1x1 conv."""
    layers: list[nn.Module] = [nn.Conv2d(dim_in, dim_out, kernel_size=1)]
    if level == 0:
        layers.append(nn.ConvTranspose2d(dim_out, dim_out, kernel_size=4, stride=4))
    elif level == 1:
        layers.append(nn.ConvTranspose2d(dim_out, dim_out, kernel_size=2, stride=2))
    elif level == 3:
        layers.append(nn.Conv2d(dim_out, dim_out, kernel_size=3, stride=2, padding=1))
    return nn.Sequential(*layers)


class DPTHead(nn.Module):
    """DPT adapter: four token maps -> dense [B, num_channels, H, W] (``H = h*patch``, ``W = w*patch``).

    Args:
        dim_tokens: channel count of each of the 4 hooked token maps (e.g. ``[1024, 768, 768, 768]``).
        hooks: indices into the decoder list of the 4 maps (``[0, L/2, 3L/4, L]``).
        num_channels: output channels (3 + conf = 4).
        feature_dim, last_dim: 256 and 128 in MASt3R.
        patch_size: token patch size (16).
    """

    def __init__(
        self,
        dim_tokens: Sequence[int],
        hooks: Sequence[int],
        num_channels: int = 4,
        feature_dim: int = 256,
        last_dim: int = 128,
        patch_size: int = 16,
        layer_dims: Sequence[int] = DPT_LAYER_DIMS,
    ) -> None:
        super().__init__()
        if len(dim_tokens) != 4 or len(hooks) != 4 or len(layer_dims) != 4:
            raise ValueError("DPTHead needs exactly 4 hooks, token dims and layer dims")
        self.hooks = tuple(int(h) for h in hooks)
        self.patch_size = patch_size
        self.scratch = Scratch(layer_dims, feature_dim)
        self.head = nn.Sequential(
            nn.Conv2d(feature_dim, feature_dim // 2, kernel_size=3, padding=1),
            Interpolate(),
            nn.Conv2d(feature_dim // 2, last_dim, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(last_dim, num_channels, kernel_size=1),
        )
        self.act_postprocess = nn.ModuleList(
            _act_postprocess(d, c, i) for i, (d, c) in enumerate(zip(dim_tokens, layer_dims, strict=True))
        )
        self.impl = "fast"

    def forward(self, tokens: Sequence[torch.Tensor], image_size: tuple[int, int]) -> torch.Tensor:
        """tokens: decoder list (each [B, N, C_i]); image_size (H, W) -> [B, num_channels, H, W]."""
        gh, gw = image_size[0] // self.patch_size, image_size[1] // self.patch_size
        fast, winograd = self.impl != "naive", self.impl == "fast"
        maps = []
        for level, hook in enumerate(self.hooks):
            t = tokens[hook]
            if t.shape[1] != gh * gw:
                raise ValueError(f"hook {hook}: {t.shape[1]} tokens do not match the {gh}x{gw} patch grid")
            x = t.transpose(1, 2).unflatten(2, (gh, gw))  # [B, C, h, w]
            x = self.act_postprocess[level](x)
            maps.append(conv3x3(self.scratch.layer_rn[level], x, winograd))
        s = self.scratch
        path4 = s.refinenet4(maps[3])[:, :, : maps[2].shape[2], : maps[2].shape[3]]
        path3 = s.refinenet3(path4, maps[2])
        path2 = s.refinenet2(path3, maps[1])
        path1 = s.refinenet1(path2, maps[0])
        if not fast:
            return self.head(path1)
        conv0, _, conv2, _, conv4 = self.head
        out = upsample2x(conv3x3(conv0, path1, winograd))
        return conv4(F.relu(conv3x3(conv2, out, winograd), inplace=True))
