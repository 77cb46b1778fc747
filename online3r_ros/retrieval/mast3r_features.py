"""MASt3R retrieval features of a source frame, from the encoder tokens the frame already carries.

The MASt3R source encodes a frame once (lazily) and keeps the result attached to the frame's ``NetImage``;
:class:`Mast3rRetrievalFeatures` reads those tokens through the source's engine (which encodes only if no
call has done it yet) and runs the retrieval head on them, as MASt3R-SLAM's ``prep_features`` does on
``frame.feat``. The descriptors are the head's postwhitened top-``nfeat`` tokens as they are (not
re-normalised): that is what MASt3R-SLAM hands to ASMK, and what the codebook was trained on.
"""

from __future__ import annotations

import torch

from online3r_ros.retrieval.features import LocalFeatures
from online3r_ros.retrieval.mast3r_head import RetrievalHead, select_topk
from online3r_ros.sources.base import SourceFrame
from online3r_ros.sources.mast3r import MASt3RSource

Tensor = torch.Tensor

__all__ = ["Mast3rRetrievalFeatures", "patch_centres"]


def patch_centres(pos: Tensor, patch_size: int) -> Tensor:
    """Pixel centres ``[N, 2]`` (x, y) float32 of patches at token positions ``pos [N, 2]`` (y, x) in
    patch units (pixel ``i`` covers ``[i - 0.5, i + 0.5]``, so patch ``j`` spans ``16 j .. 16 j + 15``)."""
    half = (patch_size - 1) / 2.0
    return pos.flip(-1).to(torch.float32) * patch_size + half


class Mast3rRetrievalFeatures:
    """Retrieval features (``LocalFeatures(kind="mast3r")``) of frames prepared by a :class:`MASt3RSource`.

    Args:
        head: the retrieval head (``load_retrieval_checkpoint``); moved to the encoder's device on first use.
        source: the MASt3R source that prepared the frames (its engine holds/caches the encoder tokens).
        nfeat: tokens kept per image (default ``head.nfeat``).
    """

    kind = "mast3r"

    def __init__(self, head: RetrievalHead, source: MASt3RSource, nfeat: float | None = None) -> None:
        enc_dim = int(source.engine.model.cfg.enc_embed_dim)
        if head.backbone_dim != enc_dim:
            raise ValueError(
                f"retrieval head expects {head.backbone_dim}-d tokens, the encoder gives {enc_dim}-d"
            )
        self.head = head.eval()
        self.source = source
        self.nfeat = head.nfeat if nfeat is None else nfeat
        self.patch_size = int(source.engine.model.cfg.patch_size)

    def tokens(self, frame: SourceFrame) -> tuple[Tensor, Tensor]:
        """Encoder output of ``frame``: ``(tokens [1, T, D], pos [1, T, 2] (y, x) patch units)``, reused
        from the frame / engine cache; the encoder runs only if nothing has encoded the frame yet."""
        enc = self.source.engine.features(self.source._nets([frame])[0])
        return enc.feat, enc.pos

    def __call__(self, frame: SourceFrame) -> LocalFeatures:
        """``LocalFeatures``: ``desc [k, dim]`` float32 (postwhitened tokens, attention order), ``xy [k, 2]``
        patch centres at working resolution, ``points=None``, ``image_size=(H, W)``; CPU tensors."""
        feat, pos = self.tokens(frame)
        return self.from_tokens(feat, pos, self.source._nets([frame])[0].shape)

    def from_tokens(self, tokens: Tensor, pos: Tensor, image_size: tuple[int, int]) -> LocalFeatures:
        """Features of one image from its encoder ``tokens [1, T, D]`` and ``pos [1, T, 2]`` (y, x)."""
        if tokens.ndim != 3 or tokens.shape[0] != 1 or pos.shape != (*tokens.shape[:2], 2):
            raise ValueError(
                f"expected tokens [1, T, D] and pos [1, T, 2], got {tuple(tokens.shape)}, {tuple(pos.shape)}"
            )
        head_param = next(self.head.parameters(), None)
        if head_param is not None and head_param.device != tokens.device:
            self.head.to(tokens.device)
        with torch.inference_mode():
            feat, attention = self.head(tokens.to(torch.float32))
            topk_feat, _, idx = select_topk(feat, attention, self.nfeat)
            xy = patch_centres(pos[0, idx[0]], self.patch_size)
        # clone outside inference mode: normal CPU tensors the database may keep and modify
        desc = topk_feat[0].to("cpu", torch.float32).clone()
        return LocalFeatures(
            kind=self.kind,
            desc=desc,
            xy=xy.to("cpu").clone(),
            points=None,
            image_size=(int(image_size[0]), int(image_size[1])),
        )
