"""2-D rotary position embedding (RoPE2D, "RoPE100") as used by CroCo / DUSt3R / MASt3R.

For a head vector of size ``d`` the first half (``d/2``) is rotated by the token's row index ``y`` and the
second half by its column index ``x``. Inside each half of size ``D = d/2`` the "rotate-half" pairing is
used: element ``j`` pairs with element ``j + D/2`` and both are rotated by the angle
``pos * inv_freq[j]`` with ``inv_freq[j] = 1 / base**(2j/D)``.

Two implementations:

- :func:`rope_tables` + :func:`apply_rope` (fast path): the cos / sign-folded sin tables of a position
  tensor are computed once per encoder/decoder call (``[B, N, 1, d]``, a few hundred KB) and applied to q
  and k with one multiply and one fused multiply-add; the rotate-half is a ``flip`` of a ``[.., 2, 2, d/4]``
  view, so no ``chunk``/``cat``/``embedding`` temporaries are made.
- :func:`rope2d_naive`: a literal pure-PyTorch transcription of croco's ``RoPE2D`` (embedding lookups of a
  cached 1-D table, chunk, rotate-half with ``cat``), used only by the benchmark's reference mode.

Angles are formed in float32 from the integer positions exactly as the reference does; the tables are cast
to the tokens' dtype when applied (so autocast half precision behaves like the reference).
"""

from __future__ import annotations

import torch


def inverse_frequencies(half_dim: int, base: float, device: torch.device | None = None) -> torch.Tensor:
    """Inverse frequencies ``1 / base**(arange(0, D, 2) / D)`` [D/2] in float32 (the reference's formula)."""
    exponent = torch.arange(0, half_dim, 2, device=device).float() / half_dim
    return 1.0 / (base**exponent)


def rope_tables(pos: torch.Tensor, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Cos and sign-folded sin tables for 2-D RoPE.

    Args:
        pos: [B, N, 2] integer positions (``[..., 0]`` = row y, ``[..., 1]`` = column x).
        head_dim: per-head dimension ``d`` (multiple of 4).
        base: frequency base (100 for ``RoPE100``).

    Returns:
        ``(cos, sin)``, each [B, N, 1, d] float32 (broadcast over heads), such that for a head vector ``t``
        ``rope(t) = t * cos + flip_pairs(t) * sin`` where ``flip_pairs`` swaps the two quarters of each half
        (see :func:`apply_rope`); the minus sign of rotate-half is folded into ``sin``.
    """
    if head_dim % 4 != 0:
        raise ValueError(f"RoPE2D needs a head dimension divisible by 4, got head_dim={head_dim}")
    if pos.ndim != 3 or pos.shape[-1] != 2:
        raise ValueError(f"pos must have shape [B, N, 2], got {tuple(pos.shape)}")
    inv_freq = inverse_frequencies(head_dim // 2, base, pos.device)  # [d/4]
    angles = pos.to(torch.float32).unsqueeze(-1) * inv_freq  # [B, N, 2(y,x), d/4]
    cos, sin = angles.cos(), angles.sin()
    # layout per half: [first quarter | second quarter] -> cos: [c, c], sin: [-s, s]
    cos = torch.stack((cos, cos), dim=-2)  # [B, N, 2, 2, d/4]
    sin = torch.stack((-sin, sin), dim=-2)
    return cos.flatten(-3).unsqueeze(2), sin.flatten(-3).unsqueeze(2)


def apply_rope(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``t`` [..., d] with tables from :func:`rope_tables` (broadcastable to ``t``).

    ``out = t * cos + t[[q2, q1, q4, q3]] * sin`` (q_i = quarters of the head vector). Returns a new
    contiguous tensor of ``t``'s dtype; ``t`` is not modified.
    """
    cos = cos.to(t.dtype)
    sin = sin.to(t.dtype)
    swapped = t.unflatten(-1, (2, 2, -1)).flip(-2).flatten(-3)
    return torch.addcmul(t * cos, swapped, sin)


# ---------------------------------------------------------------------------------------------------------
# Reference-mode implementation (benchmark comparison only)
# ---------------------------------------------------------------------------------------------------------
_NAIVE_CACHE: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _naive_cos_sin(half_dim: int, seq_len: int, base: float, device: torch.device, dtype: torch.dtype):
    key = (half_dim, seq_len, base, device, dtype)
    if key not in _NAIVE_CACHE:
        inv_freq = inverse_frequencies(half_dim, base, device)
        t = torch.arange(seq_len, device=device, dtype=inv_freq.dtype)
        freqs = torch.einsum("i,j->ij", t, inv_freq).to(dtype)
        freqs = torch.cat((freqs, freqs), dim=-1)
        _NAIVE_CACHE[key] = (freqs.cos(), freqs.sin())
    return _NAIVE_CACHE[key]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def _naive_rope1d(tokens: torch.Tensor, pos1d: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    cos = torch.nn.functional.embedding(pos1d, cos)[:, None, :, :]
    sin = torch.nn.functional.embedding(pos1d, sin)[:, None, :, :]
    return (tokens * cos) + (_rotate_half(tokens) * sin)


def rope2d_naive(tokens: torch.Tensor, pos: torch.Tensor, base: float) -> torch.Tensor:
    """croco-style pure-PyTorch RoPE2D: tokens [B, heads, N, d], pos [B, N, 2] -> [B, heads, N, d]."""
    half = tokens.size(3) // 2
    cos, sin = _naive_cos_sin(half, int(pos.max()) + 1, base, tokens.device, tokens.dtype)
    y, x = tokens.chunk(2, dim=-1)
    y = _naive_rope1d(y, pos[:, :, 0], cos, sin)
    x = _naive_rope1d(x, pos[:, :, 1], cos, sin)
    return torch.cat((y, x), dim=-1)
