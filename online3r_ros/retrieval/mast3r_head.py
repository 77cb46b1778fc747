"""MASt3R's image-retrieval head (naver/mast3r ``RetrievalModel`` minus its backbone), checkpoint-compatible.

MASt3R-SLAM runs it on the encoder tokens the tracker already has (``frame.feat``, ``[1, T, 1024]``):

    prewhiten (Whitener) -> projector (MLP, + the prewhitened input if ``residual``)
    -> attention = L2 norm of the projected tokens -> postwhiten (Whitener)
    -> the ``nfeat`` tokens of largest attention (``torch.topk`` order): the ASMK input.

State-dict keys are the official checkpoint's (``prewhiten.m [1,D]``, ``prewhiten.p [D,D]``,
``projector.{i}.weight/bias``, ``postwhiten.m/p``), so ``..._retrieval_trainingfree.pth`` loads strictly
(:func:`online3r_ros.retrieval.mast3r_files.load_retrieval_checkpoint`).

Example (random weights; whiteners start as the identity):

>>> import torch
>>> head = RetrievalHead(8, hdims=[16, 8], nfeat=3)
>>> sorted(head.state_dict())[:4]
['postwhiten.m', 'postwhiten.p', 'prewhiten.m', 'prewhiten.p']
>>> feat, attn = head(torch.randn(2, 5, 8))
>>> tuple(feat.shape), tuple(attn.shape)
((2, 5, 8), (2, 5))
>>> f, a, i = select_topk(feat, attn, 3)
>>> tuple(f.shape), tuple(a.shape), tuple(i.shape)
((2, 3, 8), (2, 3), (2, 3))
>>> bool((a[:, :-1] >= a[:, 1:]).all())
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

Tensor = torch.Tensor

__all__ = ["RetrievalHead", "Whitener", "parse_hdims", "select_topk"]


class Whitener(nn.Module):
    """PCA whitening ``(x - m) @ p`` computed in float64 with autocast off; output in the input's dtype.

    Parameters (frozen, float64): ``m [1, D]`` mean, ``p [D, D]`` projection. Identity at construction.
    Keep them float64: do not call ``.half()`` / ``.float()`` on a module holding a Whitener.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.m = nn.Parameter(torch.zeros(1, dim, dtype=torch.float64), requires_grad=False)
        self.p = nn.Parameter(torch.eye(dim, dtype=torch.float64), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        """``x [..., D]`` -> ``[..., D]`` (same dtype as ``x``)."""
        with torch.autocast(self.m.device.type, enabled=False):
            flat = x.reshape(-1, x.shape[-1]).to(self.m.dtype)
            out = torch.matmul(flat - self.m, self.p)
        return out.view(x.shape).to(x.dtype)


def parse_hdims(hdims: str | Sequence[int]) -> list[int]:
    """Projector widths from ``args.hdims`` (``'1024'``, ``'512_1024'``, ``''``) or a list."""
    if isinstance(hdims, str):
        return [int(h) for h in hdims.split("_")] if hdims else []
    return [int(h) for h in hdims]


def _projector(backbone_dim: int, hdims: Sequence[int]) -> nn.Module:
    """``Linear`` layers of widths ``hdims`` with ``LayerNorm + GELU`` between them (identity if empty)."""
    if not hdims:
        return nn.Identity()
    layers: list[nn.Module] = []
    d = backbone_dim
    for h in hdims[:-1]:
        layers += [nn.Linear(d, h), nn.LayerNorm(h), nn.GELU()]
        d = h
    layers.append(nn.Linear(d, hdims[-1]))
    return nn.Sequential(*layers)


def select_topk(feat: Tensor, attention: Tensor, nfeat: float) -> tuple[Tensor, Tensor, Tensor]:
    """The ``nfeat`` tokens of largest attention per image, in ``torch.topk`` order (descending).

    Args:
        feat: ``[B, T, D]`` token features.
        attention: ``[B, T]`` token weights.
        nfeat: number of tokens kept (at most ``T``); a value in ``[-1, 0)`` keeps ``int(-nfeat * T)``.

    Returns:
        ``(topk_feat [B, k, D], topk_attention [B, k], topk_indices [B, k] int64)``.
    """
    if nfeat < 0:
        if nfeat < -1:
            raise ValueError(f"nfeat must be >= -1 (negative: a fraction of the tokens), got {nfeat}")
        n = int(-nfeat * feat.shape[1])
    else:
        n = int(nfeat)
    topk_attention, topk_indices = torch.topk(attention, min(n, attention.shape[1]), dim=1)
    index = topk_indices.unsqueeze(-1).expand(-1, -1, feat.shape[2])
    return torch.gather(feat, 1, index), topk_attention, topk_indices


class RetrievalHead(nn.Module):
    """MASt3R retrieval head on encoder tokens (the reference ``RetrievalModel`` minus the backbone).

    Args:
        backbone_dim: encoder width ``D`` (1024 for the released ViT-L).
        prewhiten: with a ``prewhiten`` Whitener (checkpoint ``args.prewhiten is not None``).
        hdims: projector widths (``args.hdims``, e.g. ``'1024'``); empty: no projector.
        residual: add the prewhitened tokens to the projector output (needs ``hdims[-1] == backbone_dim``).
        postwhiten: with a ``postwhiten`` Whitener (``args.postwhiten is not None``).
        nfeat: tokens kept by :meth:`local_features` (``args.nfeat``).
    """

    def __init__(
        self,
        backbone_dim: int,
        *,
        prewhiten: bool = True,
        hdims: str | Sequence[int] = (1024,),
        residual: bool = False,
        postwhiten: bool = True,
        nfeat: float = 300,
    ) -> None:
        super().__init__()
        dims = parse_hdims(hdims)
        if residual and (not dims or dims[-1] != backbone_dim):
            raise ValueError(f"residual needs hdims[-1] == backbone_dim ({backbone_dim}), got hdims={dims}")
        self.backbone_dim = int(backbone_dim)
        self.hdims = dims
        self.residual = bool(residual)
        self.nfeat = nfeat
        self.dim = dims[-1] if dims else self.backbone_dim
        self.prewhiten = Whitener(self.backbone_dim) if prewhiten else nn.Identity()
        self.projector = _projector(self.backbone_dim, dims)
        self.postwhiten = Whitener(self.dim) if postwhiten else nn.Identity()

    @classmethod
    def from_args(cls, args: Mapping[str, Any], backbone_dim: int) -> RetrievalHead:
        """From the checkpoint's ``args`` (as a dict): ``prewhiten``/``postwhiten`` (``None``: absent),
        ``hdims``, ``residual`` (default False), ``featweights`` (only ``'l2norm'``), ``nfeat``."""
        featweights = args.get("featweights", "l2norm")
        if featweights != "l2norm":
            raise ValueError(
                f"featweights={featweights!r} is not supported (only 'l2norm', as the reference)"
            )
        return cls(
            backbone_dim,
            prewhiten=args.get("prewhiten") is not None,
            hdims=args.get("hdims", ""),
            residual=bool(args.get("residual", False) or False),
            postwhiten=args.get("postwhiten") is not None,
            nfeat=args.get("nfeat", 300),
        )

    def forward(self, enc_tokens: Tensor) -> tuple[Tensor, Tensor]:
        """``enc_tokens [B, T, backbone_dim]`` -> ``(feat [B, T, dim] postwhitened, attention [B, T])``.

        ``attention`` is the L2 norm of the projected tokens before the postwhitening.
        """
        if enc_tokens.ndim != 3 or enc_tokens.shape[-1] != self.backbone_dim:
            raise ValueError(f"enc_tokens must be [B, T, {self.backbone_dim}], got {tuple(enc_tokens.shape)}")
        pre = self.prewhiten(enc_tokens)
        proj = self.projector(pre)
        if self.residual:
            proj = proj + pre
        attention = proj.norm(dim=-1)
        return self.postwhiten(proj), attention

    def local_features(self, enc_tokens: Tensor, nfeat: float | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`forward` then :func:`select_topk` with ``nfeat`` (default ``self.nfeat``):
        ``(topk_feat [B, k, dim], topk_attention [B, k], topk_indices [B, k])``."""
        feat, attention = self(enc_tokens)
        return select_topk(feat, attention, self.nfeat if nfeat is None else nfeat)

    def extra_repr(self) -> str:
        return f"{self.backbone_dim}, hdims={self.hdims}, residual={self.residual}, nfeat={self.nfeat}"
