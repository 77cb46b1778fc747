"""Transformer building blocks of the MASt3R encoder and decoders (CroCo ``Block`` / ``DecoderBlock``).

Attribute names reproduce the reference state_dict keys (``norm1``, ``attn.qkv``, ``attn.proj``,
``cross_attn.projq/projk/projv/proj``, ``norm2``, ``norm3``, ``norm_y``, ``mlp.fc1``, ``mlp.fc2``).

Every attention module has an ``impl`` attribute (``"exact"`` behaves like ``"fast"`` here; it only turns
off the Winograd convolutions of the DPT head):

- ``"fast"`` (default): RoPE via precomputed tables (:func:`rope.apply_rope`), fused
  ``F.scaled_dot_product_attention`` on strided q/k/v views (no transposed copies), and, on CPU in float32
  when no gradient is needed, oneDNN matmuls (:func:`linear`, ~15% faster than MKL sgemm on AVX-512 CPUs)
  with the GELU and the residual additions fused into them.
- ``"naive"``: the reference's explicit ``softmax(q k^T * scale) v`` with croco's pure-PyTorch RoPE2D. Used
  only by the benchmark for a side-by-side comparison (``MASt3R.set_impl``).

Both compute the same function; ``fast`` differs from the reference only by float summation order.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .rope import apply_rope, rope2d_naive, rope_tables

LAYER_NORM_EPS = 1e-6
IMPLS = ("fast", "exact", "naive")
_ONEDNN_LINEAR: bool | None = None


def _onednn_linear_available() -> bool:
    """Whether torch's oneDNN linear op (``mkldnn._linear_pointwise``) exists and works (probed once)."""
    global _ONEDNN_LINEAR
    if _ONEDNN_LINEAR is None:
        try:
            op = torch.ops.mkldnn._linear_pointwise
            x, w = torch.ones(2, 4), torch.ones(3, 4)
            _ONEDNN_LINEAR = bool(torch.equal(op(x, w, None, "none", [], ""), F.linear(x, w)))
        except (AttributeError, RuntimeError):
            _ONEDNN_LINEAR = False
    return _ONEDNN_LINEAR


def _use_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        and _onednn_linear_available()
    )


def linear(
    lin: nn.Linear,
    x: torch.Tensor,
    fast: bool,
    gelu: bool = False,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[gelu](lin(x)) (+ residual)``: x [..., in] -> [..., out].

    ``fast`` on CPU/float32 without autograd: one oneDNN matmul with the GELU (exact erf) or the residual
    addition as a fused post-op. Otherwise plain ``F.linear`` + ``F.gelu`` / ``+ residual`` (autocast
    applies).
    """
    if fast and _use_onednn(x, lin.weight):
        op = torch.ops.mkldnn._linear_pointwise
        if residual is not None and not gelu:
            return op.binary(x, residual, lin.weight, lin.bias, "add")
        out = op(x, lin.weight, lin.bias, "gelu" if gelu else "none", [], "none" if gelu else "")
        return out if residual is None else out + residual
    out = lin(x)
    if gelu:
        out = F.gelu(out)
    return out if residual is None else residual + out


class RopePositions(NamedTuple):
    """Token positions plus their RoPE tables, computed once per encoder/decoder call.

    pos: [B, N, 2] int64 (y, x); cos, sin: [B, N, 1, d] float32 (see :func:`rope.rope_tables`).
    """

    pos: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    base: float


def make_rope_positions(pos: torch.Tensor, head_dim: int, base: float) -> RopePositions:
    """Compute the RoPE tables of ``pos`` [B, N, 2] for heads of size ``head_dim``."""
    cos, sin = rope_tables(pos, head_dim, base)
    return RopePositions(pos, cos, sin, base)


def layer_norm(dim: int) -> nn.LayerNorm:
    """The reference's ``partial(nn.LayerNorm, eps=1e-6)``."""
    return nn.LayerNorm(dim, eps=LAYER_NORM_EPS)


class Mlp(nn.Module):
    """``fc1 -> GELU (exact erf) -> fc2``: [..., in_dim] -> [..., out_dim]."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, out_dim if out_dim is not None else in_dim)
        self.impl = "fast"

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """x [..., in] -> [..., out] (``+ residual`` if given)."""
        fast = self.impl != "naive"
        return linear(self.fc2, linear(self.fc1, x, fast, gelu=True), fast, residual=residual)


def _naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    attn = (q @ k.transpose(-2, -1)) * scale
    return attn.softmax(dim=-1) @ v


class Attention(nn.Module):
    """Multi-head self-attention with 2-D RoPE on q and k: [B, N, C] -> [B, N, C]."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"embedding dim {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.impl = "fast"

    def forward(
        self, x: torch.Tensor, rope: RopePositions, residual: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x [B,N,C] -> [B,N,C] (``+ residual`` if given)."""
        b, n, c = x.shape
        fast = self.impl != "naive"
        qkv = linear(self.qkv, x, fast).view(b, n, 3, self.num_heads, self.head_dim)
        if not fast:
            qkv = qkv.transpose(1, 3)  # [B, heads, 3, N, d]
            q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
            q = rope2d_naive(q, rope.pos, rope.base)
            k = rope2d_naive(k, rope.pos, rope.base)
            out = _naive_attention(q, k, v, self.scale).transpose(1, 2).reshape(b, n, c)
        else:
            qk = apply_rope(qkv[:, :, :2], rope.cos.unsqueeze(2), rope.sin.unsqueeze(2))  # [B,N,2,H,d]
            q, k = qk[:, :, 0].transpose(1, 2), qk[:, :, 1].transpose(1, 2)
            v = qkv[:, :, 2].transpose(1, 2)
            out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
        return linear(self.proj, out, fast, residual=residual)


class CrossAttention(nn.Module):
    """Multi-head cross-attention of ``query`` [B, Nq, C] on ``memory`` [B, Nk, C] (keys = values source).

    q is rotated with the query's positions, k with the memory's positions (as the reference does).
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"embedding dim {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.projq = nn.Linear(dim, dim)
        self.projk = nn.Linear(dim, dim)
        self.projv = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.impl = "fast"

    def forward(
        self,
        query: torch.Tensor,
        memory: torch.Tensor,
        qrope: RopePositions,
        krope: RopePositions,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """query [B,Nq,C], memory [B,Nk,C] -> [B,Nq,C] (``+ residual`` if given)."""
        b, nq, c = query.shape
        nk = memory.shape[1]
        fast = self.impl != "naive"
        q = linear(self.projq, query, fast).view(b, nq, self.num_heads, self.head_dim)
        k = linear(self.projk, memory, fast).view(b, nk, self.num_heads, self.head_dim)
        v = linear(self.projv, memory, fast).view(b, nk, self.num_heads, self.head_dim).transpose(1, 2)
        if not fast:
            q = rope2d_naive(q.transpose(1, 2), qrope.pos, qrope.base)
            k = rope2d_naive(k.transpose(1, 2), krope.pos, krope.base)
            out = _naive_attention(q, k, v, self.scale)
        else:
            q = apply_rope(q, qrope.cos, qrope.sin).transpose(1, 2)
            k = apply_rope(k, krope.cos, krope.sin).transpose(1, 2)
            out = F.scaled_dot_product_attention(q, k, v)
        return linear(self.proj, out.transpose(1, 2).reshape(b, nq, c), fast, residual=residual)


class Block(nn.Module):
    """Pre-norm ViT encoder block: ``x + Attn(LN(x))`` then ``x + MLP(LN(x))``; [B, N, C] -> [B, N, C]."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = layer_norm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = layer_norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, rope: RopePositions) -> torch.Tensor:
        x = self.attn(self.norm1(x), rope, residual=x)
        return self.mlp(self.norm2(x), residual=x)


class DecoderBlock(nn.Module):
    """CroCo decoder block: self-attention, cross-attention on the other view (``norm_y``), MLP.

    ``forward(x [B,N,C], y [B,M,C], xrope, yrope) -> x' [B,N,C]`` (``y`` is only read).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, norm_mem: bool = True) -> None:
        super().__init__()
        self.norm1 = layer_norm(dim)
        self.attn = Attention(dim, num_heads)
        self.cross_attn = CrossAttention(dim, num_heads)
        self.norm2 = layer_norm(dim)
        self.norm3 = layer_norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_y = layer_norm(dim) if norm_mem else nn.Identity()

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, xrope: RopePositions, yrope: RopePositions
    ) -> torch.Tensor:
        x = self.attn(self.norm1(x), xrope, residual=x)
        y_normed = self.norm_y(y)
        x = self.cross_attn(self.norm2(x), y_normed, xrope, yrope, residual=x)
        return self.mlp(self.norm3(x), residual=x)
