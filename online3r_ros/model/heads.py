"""MASt3R ``catmlp+dpt`` head (``Cat_MLP_LocalFeatures_DPT_Pts3d``): DPT (points, conf) + MLP (descriptors).

One independent copy per view (``downstream_head1`` / ``downstream_head2``). The DPT (points, confidences)
always runs in float32: tokens are cast to float and autocast is disabled inside (as the reference's
``_downstream_head`` callers do). The descriptor MLP runs in the dtype of its weights (float32 unless
``MASt3R.set_precision`` cast it) and its output is upcast before post-processing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Mlp
from .dpt import DPTHead
from .postprocess import postprocess


class CatMLPDPTHead(nn.Module):
    """Decoder list -> ``{pts3d, conf, desc, desc_conf}`` at full image resolution.

    Args:
        enc_dim, dec_dim: token widths of the encoder output (hook 0) and the decoder outputs.
        dec_depth: number of decoder blocks L (hooks ``[0, L*2//4, L*3//4, L]``).
        desc_dim: local descriptor size (24).
        two_confs: separate descriptor confidence channel.
        depth_mode, conf_mode, desc_conf_mode: validated reference mode tuples.
        patch_size: 16.
    """

    def __init__(
        self,
        enc_dim: int,
        dec_dim: int,
        dec_depth: int,
        desc_dim: int,
        two_confs: bool,
        depth_mode: tuple,
        conf_mode: tuple,
        desc_conf_mode: tuple,
        patch_size: int = 16,
    ) -> None:
        super().__init__()
        hooks = [0, dec_depth * 2 // 4, dec_depth * 3 // 4, dec_depth]
        self.dpt = DPTHead([enc_dim, dec_dim, dec_dim, dec_dim], hooks, num_channels=4, patch_size=patch_size)
        cat_dim = enc_dim + dec_dim
        self.head_local_features = Mlp(cat_dim, 4 * cat_dim, (desc_dim + int(two_confs)) * patch_size**2)
        self.patch_size = patch_size
        self.desc_dim = desc_dim
        self.two_confs = two_confs
        self.depth_mode, self.conf_mode, self.desc_conf_mode = depth_mode, conf_mode, desc_conf_mode
        self.impl = "fast"

    def forward(self, dec: Sequence[torch.Tensor], image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """dec: the L+1 decoder tensors [B, N, C]; image_size: (H, W) -> dict of [B, H, W, ...] float32."""
        h, w = int(image_size[0]), int(image_size[1])
        p = self.patch_size
        with torch.autocast(device_type=dec[0].device.type, enabled=False):
            tokens = [t.float() for t in dec]
            dpt_out = self.dpt(tokens, (h, w))  # [B, 4, H, W]
            mlp_dtype = self.head_local_features.fc1.weight.dtype
            cat = torch.cat([dec[0].to(mlp_dtype), dec[-1].to(mlp_dtype)], dim=-1)
            local = self.head_local_features(cat).float()  # [B, N, c*p*p]
            b = local.shape[0]
            if self.impl == "naive":
                local = local.transpose(-1, -2).view(b, -1, h // p, w // p)
                local = F.pixel_shuffle(local, p)  # [B, c, H, W]
                fmap = torch.cat([dpt_out, local], dim=1).permute(0, 2, 3, 1)
            else:
                # channel c*p*p + a*p + b of token (i, j) -> pixel (p*i + a, p*j + b), channels last
                local = local.view(b, h // p, w // p, -1, p, p).permute(0, 1, 4, 2, 5, 3).reshape(b, h, w, -1)
                fmap = torch.cat([dpt_out.permute(0, 2, 3, 1), local], dim=-1)
            return postprocess(
                fmap, self.depth_mode, self.conf_mode, self.desc_dim, self.two_confs, self.desc_conf_mode
            )
