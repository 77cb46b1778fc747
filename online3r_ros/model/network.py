"""MASt3R network (``AsymmetricMASt3R``) with the reference's state_dict key names.

See the package docstring (``online3r_ros.model``) for the API. Shapes: B batch, H, W image size (multiples of
16), N = (H/16)(W/16) tokens, Denc / Ddec encoder / decoder widths.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.utils.checkpoint
from torch import nn

from .blocks import IMPLS, Block, DecoderBlock, layer_norm, make_rope_positions
from .config import MASt3RConfig, parse_mast3r_kwargs
from .heads import CatMLPDPTHead
from .patch_embed import PatchEmbed

ResultDict = dict[str, torch.Tensor]


class MASt3R(nn.Module):
    """Siamese ViT encoder, two cross-attending decoders and two ``catmlp+dpt`` heads.

    Build it with :func:`build_mast3r` (reference keyword arguments) or from a :class:`MASt3RConfig`.
    """

    def __init__(self, cfg: MASt3RConfig) -> None:
        super().__init__()
        self.cfg = cfg
        #: recompute encoder/decoder block activations in backward passes (prompt tuning's memory bound)
        self.grad_checkpointing = False
        self.patch_embed = PatchEmbed(cfg.patch_size, 3, cfg.enc_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.dec_embed_dim))  # unused at inference
        self.enc_blocks = nn.ModuleList(
            Block(cfg.enc_embed_dim, cfg.enc_num_heads, cfg.mlp_ratio) for _ in range(cfg.enc_depth)
        )
        self.enc_norm = layer_norm(cfg.enc_embed_dim)
        self.decoder_embed = nn.Linear(cfg.enc_embed_dim, cfg.dec_embed_dim)
        self.dec_blocks = nn.ModuleList(self._decoder_block() for _ in range(cfg.dec_depth))
        self.dec_blocks2 = nn.ModuleList(self._decoder_block() for _ in range(cfg.dec_depth))
        self.dec_norm = layer_norm(cfg.dec_embed_dim)
        self.downstream_head1 = self._head()
        self.downstream_head2 = self._head()
        self._init_weights()
        self._apply_freeze(cfg.freeze)

    # ----------------------------------------------------------------------------------------- construction
    def _decoder_block(self) -> DecoderBlock:
        c = self.cfg
        return DecoderBlock(c.dec_embed_dim, c.dec_num_heads, c.mlp_ratio, norm_mem=c.norm_im2_in_dec)

    def _head(self) -> CatMLPDPTHead:
        c = self.cfg
        return CatMLPDPTHead(
            c.enc_embed_dim,
            c.dec_embed_dim,
            c.dec_depth,
            c.desc_dim,
            c.two_confs,
            c.depth_mode,
            c.conf_mode,
            c.desc_conf_mode,
            patch_size=c.patch_size,
        )

    @torch.no_grad()
    def _init_weights(self) -> None:
        """CroCo-style init of the transformer (xavier-uniform Linear, zero bias); heads: torch defaults."""
        if self.mask_token.is_meta:
            return
        nn.init.normal_(self.mask_token, std=0.02)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        for part in (self.enc_blocks, self.decoder_embed, self.dec_blocks, self.dec_blocks2):
            for m in part.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)

    def _apply_freeze(self, freeze: str) -> None:
        frozen: list[nn.Module | nn.Parameter] = []
        if freeze in ("mask", "encoder"):
            frozen.append(self.mask_token)
        if freeze == "encoder":
            frozen += [self.patch_embed, self.enc_blocks]
        for item in frozen:
            for p in [item] if isinstance(item, nn.Parameter) else item.parameters():
                p.requires_grad_(False)

    def set_impl(self, impl: str) -> None:
        """Switch the implementation; all compute the same function (fixture parity holds for each):

        - ``'fast'`` (default): fused SDPA, table RoPE, oneDNN matmuls and NNPACK Winograd 3x3 convolutions
          in the DPT heads on CPU at inference (Winograd rounds differently: ~1e-5 relative per conv).
        - ``'exact'``: as fast, but direct convolutions (float32 rounding like the reference).
        - ``'naive'``: reference-style code (explicit softmax(QK^T)V, croco RoPE2D, MKL linears), for the
          benchmark's side-by-side comparison only.
        """
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        for m in self.modules():
            if hasattr(m, "impl"):
                m.impl = impl

    # -------------------------------------------------------------------------------------------- precision
    def body_modules(self) -> list[nn.Module]:
        """The modules that :meth:`set_precision` casts: patch embedding, encoder, decoders and both heads'
        descriptor MLPs. The DPT parts of the heads (points, confidences) are not in the list."""
        return [
            self.patch_embed,
            self.enc_blocks,
            self.enc_norm,
            self.decoder_embed,
            self.dec_blocks,
            self.dec_blocks2,
            self.dec_norm,
            self.downstream_head1.head_local_features,
            self.downstream_head2.head_local_features,
        ]

    def set_precision(self, dtype: torch.dtype) -> None:
        """Store the weights of :meth:`body_modules` in ``dtype`` (in place); the DPT heads stay float32.

        With ``bfloat16`` / ``float16`` the encoder, the decoders and the descriptor MLPs compute in that
        dtype natively (no autocast casts per call); the points and confidences come from float32 DPT heads
        on the (upcast) decoder tokens, and the descriptors are normalised in float32.
        """
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"precision must be float32, bfloat16 or float16, got {dtype}")
        for m in self.body_modules():
            m.to(dtype)

    @property
    def body_dtype(self) -> torch.dtype:
        """dtype of the encoder weights (see :meth:`set_precision`)."""
        return self.patch_embed.proj.weight.dtype

    def _run_block(self, blk: nn.Module, *args: Any) -> torch.Tensor:
        """``blk(*args)``; with :attr:`grad_checkpointing` and autograd recording, its activations are not
        kept but recomputed in the backward pass (memory O(one block) instead of O(depth))."""
        if self.grad_checkpointing and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(blk, *args, use_reentrant=False)
        return blk(*args)

    # ---------------------------------------------------------------------------------------------- prompts
    def new_prompts(
        self, num_tokens: int = 32, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Zero deep prompts [enc_depth, num_tokens, enc_embed_dim] on the model's device/dtype by default."""
        if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens <= 0:
            raise ValueError(f"num_tokens must be a positive int, got {num_tokens!r}")
        ref = self.enc_norm.weight
        return torch.zeros(
            self.cfg.enc_depth,
            num_tokens,
            self.cfg.enc_embed_dim,
            dtype=dtype or ref.dtype,
            device=device if device is not None else ref.device,
        )

    def check_prompts(self, prompts: torch.Tensor) -> None:
        """``ValueError`` unless ``prompts`` is a ``[enc_depth, T, enc_embed_dim]`` tensor (any ``T``)."""
        c = self.cfg
        if not isinstance(prompts, torch.Tensor) or prompts.ndim != 3:
            got = tuple(prompts.shape) if isinstance(prompts, torch.Tensor) else type(prompts).__name__
            raise ValueError(f"prompts must be a [layers, tokens, dim] tensor, got {got}")
        if prompts.shape[0] != c.enc_depth or prompts.shape[2] != c.enc_embed_dim:
            raise ValueError(
                f"prompts must have shape [{c.enc_depth}, T, {c.enc_embed_dim}] "
                f"(enc_depth, tokens, enc_embed_dim), "
                f"got {tuple(prompts.shape)}"
            )

    # --------------------------------------------------------------------------------------------- stages
    def encode(
        self,
        img: torch.Tensor,
        true_shape: torch.Tensor | None = None,
        prompts: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode images: img [B,3,H,W] in [-1,1] -> (feat [B,N,Denc] after enc_norm, pos [B,N,2] int64).

        ``true_shape`` [B,2] (H, W), optional, must equal the image size (the patch embedding ignores it).
        ``prompts`` [enc_depth, T, Denc], optional deep prompts (VPT-deep): layer l gets ``prompts[l]``
        prepended to its input tokens and its prompt outputs are dropped. Prompt tokens get RoPE position
        (0, 0) and the patch tokens positions (y+1, x+1) (Test3R's convention; a common shift leaves
        patch-patch attention unchanged, so prompts act like tokens at (-1, -1)).
        ``prompts=None`` is the plain reference encoder.
        """
        _check_true_shape(true_shape, img)
        x, pos = self.patch_embed(img.to(self.body_dtype))
        c = self.cfg
        if prompts is None:
            rope = make_rope_positions(pos, c.enc_head_dim, c.rope_base)
            for blk in self.enc_blocks:
                x = blk(x, rope)
        else:
            self.check_prompts(prompts)
            b, num_prompts = x.shape[0], prompts.shape[1]
            prompt_pos = torch.zeros(b, num_prompts, 2, dtype=pos.dtype, device=pos.device)
            rope = make_rope_positions(torch.cat([prompt_pos, pos + 1], dim=1), c.enc_head_dim, c.rope_base)
            prompts = prompts.to(device=x.device)
            for layer, blk in enumerate(self.enc_blocks):
                p = prompts[layer].to(x.dtype).unsqueeze(0).expand(b, -1, -1)
                x = self._run_block(blk, torch.cat([p, x], dim=1), rope)[:, num_prompts:]
        return self.enc_norm(x), pos

    def decode(
        self, feat1: torch.Tensor, pos1: torch.Tensor, feat2: torch.Tensor, pos2: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Run both decoders in lock-step.

        feat1 [B,N1,Denc], pos1 [B,N1,2], feat2 [B,N2,Denc], pos2 [B,N2,2] ->
        (dec1, dec2): lists of L+1 tensors ``[feat_k, out_1 .. out_{L-1} (raw), dec_norm(out_L)]``; the
        first is [B,N,Denc], the others [B,N,Ddec].
        """
        c = self.cfg
        if feat1.shape[0] != feat2.shape[0]:
            raise ValueError(f"feat1 and feat2 batch sizes differ: {feat1.shape[0]} vs {feat2.shape[0]}")
        for name, f, p in (("1", feat1, pos1), ("2", feat2, pos2)):
            if f.ndim != 3 or f.shape[-1] != c.enc_embed_dim or p.shape != (*f.shape[:2], 2):
                raise ValueError(
                    f"feat{name} must be [B, N, {c.enc_embed_dim}] with pos{name} [B, N, 2], "
                    f"got {tuple(f.shape)} and {tuple(p.shape)}"
                )
        rope1 = make_rope_positions(pos1, c.dec_head_dim, c.rope_base)
        rope2 = rope1 if pos2 is pos1 else make_rope_positions(pos2, c.dec_head_dim, c.rope_base)
        dtype = self.body_dtype  # features computed at another precision (e.g. a shared cache) are cast
        f1, f2 = self.decoder_embed(feat1.to(dtype)), self.decoder_embed(feat2.to(dtype))
        out1, out2 = [feat1], [feat2]
        for blk1, blk2 in zip(self.dec_blocks, self.dec_blocks2, strict=True):
            f1, f2 = self._run_block(blk1, f1, f2, rope1, rope2), self._run_block(blk2, f2, f1, rope2, rope1)
            out1.append(f1)
            out2.append(f2)
        out1[-1] = self.dec_norm(out1[-1])
        out2[-1] = self.dec_norm(out2[-1])
        return out1, out2

    def heads(
        self,
        dec1: Sequence[torch.Tensor],
        dec2: Sequence[torch.Tensor],
        shape1: tuple[int, int],
        shape2: tuple[int, int],
    ) -> tuple[ResultDict, ResultDict]:
        """Both heads in float32 (autocast disabled inside): -> (res1, res2), each with ``pts3d [B,H,W,3]``,
        ``conf [B,H,W]``, ``desc [B,H,W,desc_dim]``, ``desc_conf [B,H,W]`` (res2's points are in view 1's
        frame; its key stays ``pts3d`` here, only :meth:`forward` renames it)."""
        for name, dec in (("dec1", dec1), ("dec2", dec2)):
            if len(dec) != self.cfg.dec_depth + 1:
                raise ValueError(
                    f"{name} must hold dec_depth+1={self.cfg.dec_depth + 1} tensors, got {len(dec)}"
                )
        return self.downstream_head1(dec1, _hw(shape1)), self.downstream_head2(dec2, _hw(shape2))

    def forward(
        self, view1: Mapping[str, Any], view2: Mapping[str, Any], prompts: torch.Tensor | None = None
    ) -> tuple[ResultDict, ResultDict]:
        """Reference ``forward``: views ``{'img': [B,3,H,W], 'true_shape': [B,2] (optional), ...}`` ->
        (res1, res2) with res2's points under ``pts3d_in_other_view``."""
        img1, img2 = _view_img(view1, "view1"), _view_img(view2, "view2")
        _check_true_shape(view1.get("true_shape"), img1)
        _check_true_shape(view2.get("true_shape"), img2)
        if img1.shape == img2.shape:
            feat, pos = self.encode(torch.cat([img1, img2], dim=0), prompts=prompts)
            (feat1, feat2), (pos1, pos2) = feat.chunk(2, dim=0), pos.chunk(2, dim=0)
        else:
            feat1, pos1 = self.encode(img1, prompts=prompts)
            feat2, pos2 = self.encode(img2, prompts=prompts)
        dec1, dec2 = self.decode(feat1, pos1, feat2, pos2)
        res1, res2 = self.heads(dec1, dec2, tuple(img1.shape[-2:]), tuple(img2.shape[-2:]))
        res2["pts3d_in_other_view"] = res2.pop("pts3d")
        return res1, res2


def _hw(shape: Sequence[int] | torch.Tensor) -> tuple[int, int]:
    vals = shape.tolist() if isinstance(shape, torch.Tensor) else list(shape)
    if len(vals) != 2:
        raise ValueError(f"image shape must be (H, W), got {shape!r}")
    return int(vals[0]), int(vals[1])


def _view_img(view: Mapping[str, Any], name: str) -> torch.Tensor:
    if not isinstance(view, Mapping) or "img" not in view:
        raise ValueError(f"{name} must be a mapping with an 'img' tensor [B,3,H,W]")
    img = view["img"]
    if not isinstance(img, torch.Tensor) or img.ndim != 4 or not img.is_floating_point():
        got = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
        raise ValueError(f"{name}['img'] must be a float tensor [B,3,H,W], got {got}")
    return img


def _check_true_shape(true_shape: torch.Tensor | None, img: torch.Tensor) -> None:
    if true_shape is None:
        return
    ts = torch.as_tensor(true_shape)
    h, w = img.shape[-2:]
    if ts.shape != (img.shape[0], 2) or bool((ts[:, 0] != h).any()) or bool((ts[:, 1] != w).any()):
        raise ValueError(
            f"true_shape must be [B, 2] rows equal to the image size (H={h}, W={w}) for every batch item; "
            f"got {ts.tolist()}"
        )


def build_mast3r(**kwargs: Any) -> MASt3R:
    """Build MASt3R from the reference ``AsymmetricMASt3R`` keyword arguments (see :mod:`.config`)."""
    return MASt3R(parse_mast3r_kwargs(**kwargs))
